"""Who may call what: the one table that decides every API route.

Keys are route names (see `backend.api.route_table`). A route missing here is denied to
everyone; `PUBLIC` routes need no token.
"""

from __future__ import annotations

from backend.api.tokens import Role

ADMIN, MARKETER, SERVICE, ANALYST, AGENT = (
    Role.ADMIN, Role.MARKETER, Role.SERVICE, Role.ANALYST, Role.AGENT
)  # fmt: skip
EVERYONE = frozenset(Role)
WRITERS = frozenset({ADMIN, MARKETER, SERVICE})  # analysts only read
MACHINES = frozenset({ADMIN, SERVICE})  # the bot, channels and integrations
PEOPLE_WHO_EDIT = frozenset({ADMIN, MARKETER})
# Who answers customers in hand-offs: agents, and the people who run the business.
ANSWERERS = frozenset({ADMIN, MARKETER, AGENT})

# Twilio's callbacks carry no token: they are checked against Twilio's signature instead.
PUBLIC: frozenset[str] = frozenset(
    {"health", "openapi", "docs", "twilio_status", "twilio_call_status", "twilio_sms"}
)
# The web chat: visitors' browsers call these; a chat session token (not an API token)
# guards the history.
PUBLIC |= {"webchat_widget", "webchat_demo", "start_chat_session", "chat_history"}
# Unsubscribing from e-mail needs no sign-in: the signed token in the link is the proof.
# Mailgun's webhook carries no token: it is checked against Mailgun's signature.
PUBLIC |= {"mailgun_events", "mailgun_inbound"}
PUBLIC |= {
    "email_unsubscribe_page",
    "email_unsubscribe",
    "email_confirmation_page",
    "email_confirm",
}

# The console's pages and buttons (backend.console.routes) are named "console.…": they
# check the console's sign-in, and each names the route of this table whose permission
# it needs.
CONSOLE_ROUTES = "console."

PERMISSIONS: dict[str, frozenset[Role]] = {
    "identify": MACHINES,
    "get_profile": EVERYONE,
    "search_profiles": EVERYONE,
    "update_profile": WRITERS,
    "add_identity": MACHINES,
    "merge_profiles": MACHINES,
    # GDPR requests are handled by an administrator.
    "export_profile": frozenset({ADMIN}),
    "erase_profile": frozenset({ADMIN}),
    "get_consent": EVERYONE,
    "record_consent": WRITERS,
    "check_consent": EVERYONE,
    "record_events": MACHINES,
    "list_events": EVERYONE,
    "get_score": EVERYONE,
    "list_segments": EVERYONE,
    "get_segment": EVERYONE,
    "count_segment": EVERYONE,
    "segment_members": EVERYONE,
    "segment_membership": EVERYONE,
    "preview_rule": EVERYONE,  # a POST, but it only reads
    "create_segment": PEOPLE_WHO_EDIT,
    "replace_segment": PEOPLE_WHO_EDIT,
    "delete_segment": PEOPLE_WHO_EDIT,
    "list_sequences": EVERYONE,
    "hold_sequence": PEOPLE_WHO_EDIT,
    "resume_sequence": PEOPLE_WHO_EDIT,
    "enrol_profile": WRITERS,
    "sequence_stats": EVERYONE,
    "list_demos": EVERYONE,
    "profile_demos": EVERYONE,
    "book_demo": MACHINES,
    "move_demo": MACHINES,
    "cancel_demo": MACHINES,
    "open_handoff": MACHINES,
    "list_handoffs": WRITERS | ANSWERERS,
    "get_handoff": WRITERS | ANSWERERS,
    "claim_handoff": ANSWERERS,
    "release_handoff": ANSWERERS,
    "reply_handoff": ANSWERERS,
    "close_handoff": WRITERS | ANSWERERS,  # the people who answered hand it back
    "conversation_transcript": ANSWERERS | {ANALYST},
    "list_conversations": ANSWERERS | {ANALYST},
    "get_overview": frozenset({ADMIN, MARKETER, ANALYST}),
    "list_audit": frozenset({ADMIN}),
    "get_retention": frozenset({ADMIN, ANALYST}),
    "run_retention": frozenset({ADMIN}),
    "send_text": WRITERS,
    "record_email_events": MACHINES,
    "receive_email": MACHINES,
    "get_message": EVERYONE,
    "list_held": EVERYONE,
    "get_held": EVERYONE,
    "cancel_held": WRITERS,
    "receive_text": MACHINES,
    "profile_messages": EVERYONE,
}


def allowed(route_name: str, role: Role) -> bool:
    return role in PERMISSIONS.get(route_name, frozenset())
