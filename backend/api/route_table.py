"""The route table: every route the backend serves, in one list.

The app registers these, the auth middleware looks up their names in the permission
table, and the OpenAPI document is generated from them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from backend.api import audit_log, health, openapi
from backend.api.schemas import AuditPage, Health
from backend.consent import routes as consent
from backend.consent.schemas import ConsentCheck, ConsentIn, ConsentOut, ConsentRecorded
from backend.conversations import routes as conversations
from backend.conversations.schemas import ConversationList, OverviewOut, Transcript
from backend.demos import routes as demos
from backend.demos.schemas import DemoIn, DemoList, DemoMove, DemoOut
from backend.events import routes as events
from backend.events.schemas import EventPage, EventsAccepted
from backend.handoffs import routes as handoffs
from backend.handoffs.schemas import (
    ClaimIn,
    EmailIn,
    EmailReceivedOut,
    HandoffIn,
    HandoffList,
    HandoffOut,
    ReplyIn,
    ReplySent,
)
from backend.messaging import routes as messages
from backend.messaging.schemas import (
    EmailEventsIn,
    EmailEventsRecorded,
    HeldOut,
    HeldPage,
    MessageOut,
    MessagePage,
    TextIn,
    TextReceipt,
    TextReceived,
    TextSent,
)
from backend.people import routes as profiles
from backend.people.schemas import (
    IdentifyRequest,
    IdentifyResult,
    IdentityAdded,
    IdentityIn,
    MergedPointer,
    MergeRequest,
    ProfileOut,
    ProfilePage,
    ProfileUpdate,
    RetentionOut,
    RetentionRunOut,
)
from backend.scoring import routes as scores
from backend.scoring.schemas import ScoreOut
from backend.segments import routes as segments
from backend.segments.schemas import (
    MemberPage,
    Membership,
    RulePreview,
    SegmentCount,
    SegmentIn,
    SegmentList,
    SegmentOut,
    SegmentUpdate,
)
from backend.sequences import routes as sequences
from backend.sequences.schemas import (
    EnrolmentIn,
    EnrolmentOut,
    SequenceList,
    SequenceOut,
    SequenceStats,
)
from backend.webchat import routes as webchat


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    name: str
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    summary: str
    tag: str
    body: Any = None  # a model, or a union of models
    responses: dict[int, type[BaseModel] | None] = field(default_factory=dict)
    query: tuple[tuple[str, dict[str, Any], str], ...] = ()  # (name, JSON schema, description)
    media_type: str = "application/json"


PROFILE = "/api/v1/profiles/{id}"
SEGMENT = "/api/v1/segments/{name}"
ID = {"type": "integer", "minimum": 1, "maximum": 2**62}


def page(most: int) -> tuple[str, dict[str, Any], str]:
    return ("limit", {"type": "integer", "minimum": 1, "maximum": most}, "page size")


ROUTES: list[Route] = [
    Route("GET", "/health", "health", health.health,
          "Is the backend up, and can it reach its database?", "operations",
          responses={200: Health}),
    Route("GET", "/api/v1/openapi.json", "openapi", openapi.serve,
          "This API's OpenAPI 3.1 document.", "operations", responses={200: None}),
    Route("GET", "/api/v1/docs", "docs", openapi.docs_page,
          "This API's documentation, as a web page.", "operations", responses={200: None},
          media_type="text/html"),

    Route("POST", "/api/v1/identify", "identify", profiles.identify,
          "Find or create the profile behind a channel identity, and update it.", "profiles",
          body=IdentifyRequest, responses={200: IdentifyResult, 201: IdentifyResult}),
    Route("GET", "/api/v1/profiles", "search_profiles", profiles.search_profiles,
          "Find people by name, e-mail address or phone number (matched by prefix, any "
          "case; a number written any way).", "profiles", responses={200: ProfilePage},
          query=(("query", {"type": "string", "minLength": 1, "maxLength": 200},
                  "a name (each word starts a name, the company or the e-mail), an e-mail "
                  "address, or a phone number"),
                 page(100), ("after", {"type": "string", "format": "uuid"},
                             "the last id of the page before"))),
    Route("GET", PROFILE, "get_profile", profiles.get_profile,
          "Read one profile with its identities and score (a merged profile answers 308).",
          "profiles", responses={200: ProfileOut, 308: MergedPointer}),
    Route("PATCH", PROFILE, "update_profile", profiles.update_profile,
          "Change a profile's core fields and attributes.", "profiles",
          body=ProfileUpdate, responses={200: ProfileOut}),
    Route("POST", PROFILE + "/identities", "add_identity", profiles.add_identity,
          "Add an identity; if it is another profile's, the two are merged.", "profiles",
          body=IdentityIn, responses={200: IdentityAdded}),
    Route("POST", PROFILE + "/merge", "merge_profiles", profiles.merge_profiles,
          "Merge another profile of the same person into this one.", "profiles",
          body=MergeRequest, responses={200: IdentityAdded}),
    Route("GET", PROFILE + "/export", "export_profile", profiles.export_profile,
          "Everything held about the person, as JSON (GDPR access).", "privacy",
          responses={200: None}),
    Route("DELETE", PROFILE, "erase_profile", profiles.erase_profile,
          "Erase the person, keeping only keyed hashes of their identities (GDPR erasure).",
          "privacy", responses={204: None}),

    Route("GET", PROFILE + "/consent", "get_consent", consent.get_consent,
          "Current consent per channel and purpose, and the ledger behind it.", "consent",
          responses={200: ConsentOut}),
    Route("POST", PROFILE + "/consent", "record_consent", consent.record_consent,
          "Append a grant, withdrawal or confirmation to the consent ledger.", "consent",
          body=ConsentIn, responses={201: ConsentRecorded}),
    Route("GET", PROFILE + "/consent/{channel}/{purpose}", "check_consent",
          consent.check_consent,
          "May a message of this purpose go to this person on this channel now?", "consent",
          responses={200: ConsentCheck}),

    Route("POST", "/api/v1/events", "record_events", events.record_events,
          "Report one event or a batch of up to 1,000 (stored once per idempotency key).",
          "events", body=events.EventsBody, responses={200: EventsAccepted}),
    Route("GET", PROFILE + "/events", "list_events", events.list_events,
          "A profile's events, newest first.", "events", responses={200: EventPage},
          query=(page(500), ("before", ID, "only events older than this id"))),
    Route("GET", PROFILE + "/score", "get_score", scores.get_score,
          "A profile's lead score today and the rules behind it.", "scoring",
          responses={200: ScoreOut}),

    Route("GET", "/api/v1/segments", "list_segments", segments.list_segments,
          "Every segment, from data/segments/ and from the API.", "segments",
          responses={200: SegmentList}),
    Route("POST", "/api/v1/segments", "create_segment", segments.create_segment,
          "Define a segment.", "segments", body=SegmentIn, responses={201: SegmentOut}),
    Route("POST", "/api/v1/segment-previews", "preview_rule", segments.preview_rule,
          "Count the profiles a rule selects, without saving it.", "segments",
          body=RulePreview, responses={200: SegmentCount}),
    Route("GET", SEGMENT, "get_segment", segments.get_segment,
          "One segment's definition.", "segments", responses={200: SegmentOut}),
    Route("PUT", SEGMENT, "replace_segment", segments.replace_segment,
          "Change an API-defined segment.", "segments",
          body=SegmentUpdate, responses={200: SegmentOut}),
    Route("DELETE", SEGMENT, "delete_segment", segments.delete_segment,
          "Delete an API-defined segment.", "segments", responses={204: None}),
    Route("GET", SEGMENT + "/count", "count_segment", segments.count_segment,
          "How many profiles are in the segment now.", "segments",
          responses={200: SegmentCount}),
    Route("GET", SEGMENT + "/members", "segment_members", segments.segment_members,
          "The segment's members, a page at a time.", "segments",
          responses={200: MemberPage},
          query=(page(1000), ("after", {"type": "string", "format": "uuid"},
                                  "only profiles after this id"))),
    Route("GET", SEGMENT + "/members/{id}", "segment_membership", segments.segment_membership,
          "Is this profile in the segment now?", "segments", responses={200: Membership}),

    Route("GET", "/api/v1/sequences", "list_sequences", sequences.list_sequences,
          "The follow-up sequences loaded from data/sequences/.", "sequences",
          responses={200: SequenceList}),
    Route("POST", "/api/v1/sequences/{id}/hold", "hold_sequence", sequences.hold_sequence,
          "Put a sequence on hold: its due steps wait and nothing is sent until it is "
          "resumed (people still enter it).", "sequences", responses={200: SequenceOut}),
    Route("POST", "/api/v1/sequences/{id}/resume", "resume_sequence",
          sequences.resume_sequence, "Let a sequence on hold send again.", "sequences",
          responses={200: SequenceOut}),
    Route("POST", "/api/v1/sequences/{id}/enrolments", "enrol_profile",
          sequences.enrol_profile,
          "Enrol a person into a sequence (entry conditions apply; 409 says why not).",
          "sequences", body=EnrolmentIn, responses={201: EnrolmentOut}),
    Route("GET", "/api/v1/sequences/{id}/stats", "sequence_stats", sequences.sequence_stats,
          "A sequence's results: people enrolled, sent, delivered, replied, reaching the "
          "goal and opting out, per send step and variant, with each variant's lift over "
          "the holdout.", "sequences", responses={200: SequenceStats},
          query=(("since", {"type": "string", "format": "date-time"},
                  "only people enrolled at or after this time"),)),

    Route("GET", "/api/v1/demos", "list_demos", demos.list_demos,
          "Demo bookings starting in a time range (to offer the free slots).", "demos",
          responses={200: DemoList},
          query=(("from", {"type": "string", "format": "date-time"}, "range start (default now)"),
                 ("to", {"type": "string", "format": "date-time"},
                  "range end (default 14 days after from)"))),
    Route("POST", "/api/v1/demos", "book_demo", demos.book_demo,
          "Book a demo (records a demo_booked event).", "demos",
          body=DemoIn, responses={201: DemoOut}),
    Route("PATCH", "/api/v1/demos/{id}", "move_demo", demos.move_demo,
          "Move a demo to another time (records demo_rescheduled).", "demos",
          body=DemoMove, responses={200: DemoOut}),
    Route("DELETE", "/api/v1/demos/{id}", "cancel_demo", demos.cancel_demo,
          "Cancel a demo (records demo_cancelled).", "demos", responses={200: DemoOut}),
    Route("GET", PROFILE + "/demos", "profile_demos", demos.profile_demos,
          "A person's upcoming demos.", "demos", responses={200: DemoList}),

    Route("POST", "/api/v1/handoffs", "open_handoff", handoffs.open_handoff,
          "Mark a conversation for a person to take over (the bot pauses itself).",
          "handoffs", body=HandoffIn, responses={200: HandoffOut, 201: HandoffOut}),
    Route("GET", "/api/v1/handoffs", "list_handoffs", handoffs.list_handoffs,
          "Hand-offs, oldest first.", "handoffs", responses={200: HandoffList},
          query=(("status", {"type": "string", "enum": ["open", "closed"]}, "only these"),)),
    Route("GET", "/api/v1/handoffs/{id}", "get_handoff", handoffs.get_handoff,
          "One hand-off: who is answering it, and whether it is a call-back task.",
          "handoffs", responses={200: HandoffOut}),
    Route("POST", "/api/v1/handoffs/{id}/claim", "claim_handoff", handoffs.claim_handoff,
          "Claim a hand-off, so no one else answers the customer (409 if another agent "
          "holds it; an admin may take it over).", "handoffs", body=ClaimIn,
          responses={200: HandoffOut}),
    Route("POST", "/api/v1/handoffs/{id}/release", "release_handoff", handoffs.release_handoff,
          "Leave a claimed hand-off for another agent.", "handoffs",
          responses={200: HandoffOut}),
    Route("POST", "/api/v1/handoffs/{id}/messages", "reply_handoff", handoffs.reply_handoff,
          "Answer the customer on their channel (web chat or text) through its one door, "
          "and put the words in their conversation for the bot; claims the hand-off if no "
          "one has. Calls and voice assistants are call-back tasks (409).", "handoffs",
          body=ReplyIn, responses={201: ReplySent}),
    Route("POST", "/api/v1/handoffs/{id}/close", "close_handoff", handoffs.close_handoff,
          "Hand the conversation back to the bot (a call-back task: the call is done).",
          "handoffs", responses={200: HandoffOut}),
    Route("GET", "/api/v1/conversations", "list_conversations",
          conversations.list_conversations,
          "Conversations with a message in the period, latest first, from the backend's "
          "record of them: channel, intents, whether the bot fell back or handed off.",
          "conversations", responses={200: ConversationList},
          query=(("since", {"type": "string"}, "a date, or a date and time with a zone"),
                 ("until", {"type": "string"}, "exclusive; default now"),
                 ("channel", {"type": "string"}, "sms, webchat, voice, alexa or rest"),
                 ("intent", {"type": "string"}, "only conversations where it was understood"),
                 ("handed_off", {"type": "boolean"}, "only those handed to a person"),
                 ("fell_back", {"type": "boolean"}, "only those where the bot fell back"),
                 page(500))),
    Route("GET", "/api/v1/overview", "get_overview", conversations.get_overview,
          "The period's figures: conversations per day by channel, top intents, fallback "
          "and hand-off rates, opt-ins and opt-outs, qualified leads and demos booked.",
          "conversations", responses={200: OverviewOut},
          query=(("since", {"type": "string"}, "a date, or a date and time with a zone"),
                 ("until", {"type": "string"}, "exclusive; default now"))),
    Route("GET", "/api/v1/conversations/{conversation_id}/transcript",
          "conversation_transcript", conversations.conversation_transcript,
          "A conversation as Rasa holds it: who said what, with intents, entities and the "
          "slots set.", "conversations", responses={200: Transcript}),

    Route("POST", "/api/v1/messages", "send_text", messages.send_text,
          "Send a text (or, with channel web, a web chat message) through the one door: "
          "consent and, for marketing, quiet hours and the frequency cap checked now; "
          "split, paced, sent, recorded (202: held until it may go).", "messages", body=TextIn,
          responses={200: TextSent, 201: TextSent, 202: TextSent}),
    Route("GET", "/api/v1/held-messages", "list_held", messages.list_held,
          "Marketing messages the doors held for quiet hours or the frequency cap, oldest "
          "first.", "messages", responses={200: HeldPage},
          query=(page(500), ("after", ID, "only held messages newer than this id"),
                 ("status", {"type": "string",
                             "enum": ["held", "sent", "refused", "cancelled"]}, "only these"),
                 ("profile_id", {"type": "string", "format": "uuid"}, "only this person's"))),
    Route("GET", "/api/v1/held-messages/{id}", "get_held", messages.get_held,
          "One held message, and what became of it.", "messages",
          responses={200: HeldOut}),
    Route("DELETE", "/api/v1/held-messages/{id}", "cancel_held", messages.cancel_held,
          "Cancel a message still held.", "messages", responses={200: HeldOut}),
    Route("GET", "/api/v1/messages/{id}", "get_message", messages.get_message,
          "One text, in or out, with its delivery status.", "messages",
          responses={200: MessageOut}),
    Route("POST", "/api/v1/inbound-texts", "receive_text", messages.receive_text,
          "Record a text a person sent (once per Twilio MessageSid) and answer STOP, START "
          "and HELP.", "messages", body=TextReceived,
          responses={200: TextReceipt, 201: TextReceipt}),
    Route("GET", PROFILE + "/messages", "profile_messages", messages.profile_messages,
          "A person's texts, in and out, newest first.", "messages",
          responses={200: MessagePage},
          query=(page(500), ("before", ID, "only texts older than this id"))),
    Route("POST", "/twilio/sms", "twilio_sms", messages.twilio_sms,
          "Twilio's \"A message comes in\" webhook: records a text a person sent and applies "
          "STOP, START and HELP before answering Twilio; the bot answers the text after "
          "(checked against X-Twilio-Signature).", "messages", responses={200: None},
          media_type="text/xml"),
    Route("POST", "/twilio/status", "twilio_status", messages.twilio_status,
          "Twilio's delivery status callback (checked against X-Twilio-Signature).",
          "messages", responses={204: None}),
    Route("POST", "/twilio/call-status", "twilio_call_status", messages.twilio_call_status,
          "Twilio's progress callback for a call Parley placed (checked against "
          "X-Twilio-Signature).", "messages", responses={204: None}),

    Route("POST", "/api/v1/email/events", "record_email_events", messages.record_email_events,
          "A mail provider's bounces and complaints (generic form): a hard bounce "
          "suppresses the address, a complaint withdraws e-mail marketing consent.",
          "messages", body=EmailEventsIn, responses={200: EmailEventsRecorded}),
    Route("POST", "/webhooks/mailgun", "mailgun_events", messages.mailgun_events,
          "Mailgun's event webhook (checked against Mailgun's signature): bounces and "
          "complaints.", "messages", responses={200: EmailEventsRecorded}),
    Route("POST", "/api/v1/email/inbound", "receive_email", handoffs.receive_email,
          "An e-mail a person sent the business (from any provider's inbound hook or an "
          "IMAP reader): recorded once per Message-ID; a reply ends their sequences at the "
          "next step and waits in a hand-off for a person to answer by e-mail; the subject "
          "\"unsubscribe\" withdraws e-mail marketing instead.", "handoffs", body=EmailIn,
          responses={200: EmailReceivedOut, 201: EmailReceivedOut}),
    Route("POST", "/webhooks/mailgun/inbound", "mailgun_inbound", handoffs.mailgun_inbound,
          "Mailgun's inbound route (forward(), fully parsed; checked against Mailgun's "
          "signature): as POST /api/v1/email/inbound.", "handoffs",
          responses={200: EmailReceivedOut, 201: EmailReceivedOut}),
    Route("GET", "/email/unsubscribe/{token}", "email_unsubscribe_page",
          consent.unsubscribe_page,
          "The page a marketing e-mail's unsubscribe link opens (the token is the only "
          "credential): one button.", "consent", responses={200: None, 404: None},
          media_type="text/html"),
    Route("POST", "/email/unsubscribe/{token}", "email_unsubscribe", consent.unsubscribe_now,
          "Unsubscribe from marketing e-mail at once: the page's button, or a mail app's "
          "one-click POST (RFC 8058, body List-Unsubscribe=One-Click).", "consent",
          responses={200: None, 404: None}, media_type="text/html"),

    Route("GET", "/email/confirm/{token}", "email_confirmation_page",
          consent.confirmation_page,
          "The page the double opt-in e-mail's link opens (the token is the only "
          "credential): one button.", "consent", responses={200: None, 404: None},
          media_type="text/html"),
    Route("POST", "/email/confirm/{token}", "email_confirm", consent.confirm_now,
          "Confirm a pending e-mail marketing grant (the page's button).", "consent",
          responses={200: None, 404: None, 409: None}, media_type="text/html"),

    Route("GET", "/api/v1/retention", "get_retention", profiles.get_retention,
          "How long each kind of data is kept, and the latest runs of the job that "
          "deletes what is older (in the backend and Rasa's tracker store).", "privacy",
          responses={200: RetentionOut}),
    Route("POST", "/api/v1/retention/runs", "run_retention", profiles.run_retention,
          "Run the retention job now.", "privacy", responses={201: RetentionRunOut}),

    Route("GET", "/api/v1/audit", "list_audit", audit_log.list_audit,
          "Who changed what, newest first.", "operations", responses={200: AuditPage},
          query=(page(1000), ("before", ID, "only entries older than this id"),
                 ("target", {"type": "string"}, "only entries about this profile or segment"))),

    Route("GET", "/chat", "webchat_widget", webchat.widget,
          "The web chat widget: embed it with <script src=\".../chat\" async></script>.",
          "web chat", responses={200: None}, media_type="text/javascript"),
    Route("GET", "/chat/demo", "webchat_demo", webchat.demo_page,
          "A page with the web chat widget on it, to try the bot in a browser.", "web chat",
          responses={200: None}, media_type="text/html"),
    Route("POST", "/chat/sessions", "start_chat_session", webchat.start_session,
          "Start a web chat session (201), or renew the one a still-valid token names (200).",
          "web chat", body=webchat.ChatSessionRequest,
          responses={200: webchat.ChatSessionOut, 201: webchat.ChatSessionOut}),
    Route("GET", "/chat/history", "chat_history", webchat.history,
          "The conversation of the session named by 'Authorization: Bearer <chat token>'.",
          "web chat", responses={200: webchat.ChatHistory}),
]  # fmt: skip


def register(app: web.Application) -> None:
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler, name=route.name)
