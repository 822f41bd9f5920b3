"""The backend contract the dialogue actions rely on, run against both the in-memory
`FakeBackend` (tests/bot/fakes.py) and the real backend, so that the fake the actions'
tests use cannot drift from the backend the bot talks to. Where they disagree, the real
backend is right and the fake is fixed.

The real backend's database is shared by the whole test session: every scenario uses
fresh web ids, e-mail addresses, phone numbers and demo start times.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from bot.backend_client import BackendClient, BackendRejected, ChannelConsent, Identity
from bot.business import load_business
from bot.clock import system_clock
from tests.bot.conftest import RunningBackend
from tests.bot.fakes import FakeBackend

URN = "urn:parley:problem:"
INVALID = (422, URN + "invalid-body")
MINUTE = timedelta(minutes=1)
CHANNELS = ("email", "sms", "voice", "web")  # in the order consent states are listed
PURPOSES = ("marketing", "transactional")

# Fresh numbers: 555 lines (valid for the phone library) in area codes the other tests
# leave alone; and demo start times on whole minutes in 2030, far from anyone's bookings.
AREAS = ("628", "650", "510", "707", "925", "408")
_numbers = iter(random.sample(range(len(AREAS) * 10_000), 1_000))
_minutes = iter(random.sample(range(365 * 24 * 60), 1_000))
FAR = datetime(2030, 1, 1, tzinfo=timezone.utc)

Call = Callable[[BackendClient, str], Awaitable[object]]


@pytest.fixture(params=["fake", "real"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[BackendClient]:
    """The fake (with the real clock, so that the past is the past), or a client of the
    real backend this session runs."""
    if request.param == "fake":
        client: BackendClient = FakeBackend(clock=system_clock)
    else:
        backend: RunningBackend = request.getfixturevalue("backend")
        client = BackendClient(backend.url, backend.token, timeout=10)
    yield client
    await client.close()


def web_id() -> str:
    return f"web-{uuid.uuid4()}"


def email() -> str:
    return f"ada.{uuid.uuid4().hex[:12]}@acme.io"


def phone() -> str:
    """A mobile number in E.164 no other scenario of the session has."""
    number = next(_numbers)
    return f"+1{AREAS[number // 10_000]}555{number % 10_000:04d}"


def start_time() -> datetime:
    """A demo start time no other scenario of the session books."""
    return FAR + next(_minutes) * MINUTE


async def person(client: BackendClient, **attributes: object) -> str:
    """A new web visitor's profile id."""
    return (await client.identify("web", web_id(), attributes)).profile.id


async def refusal(call: Awaitable[object]) -> tuple[int, str]:
    """The status and problem type the backend refused `call` with."""
    with pytest.raises(BackendRejected) as refused:
        await call
    return refused.value.status, str(refused.value.problem.get("type"))


# -- profiles -----------------------------------------------------------------------------


async def test_identify_finds_or_creates_the_persons_profile(client: BackendClient) -> None:
    sender = web_id()
    # What action_submit_lead sends: core fields, free attributes, and nulls for blanks.
    lead = {"first_name": "Ada", "email": "ada@acme.io", "company": "Acme", "team_size": 12,
            "use_case": None, "timeline": "now"}  # fmt: skip
    first = await client.identify("web", sender, lead)
    again = await client.identify("web", sender)  # a greeting
    assert (first.created, again.created) == (True, False)
    assert again.profile.id == first.profile.id
    assert again.profile.identities == [Identity("web", sender)]
    assert (again.profile.first_name, again.profile.email, again.profile.company) == (
        "Ada",
        "ada@acme.io",
        "Acme",
    )
    assert again.profile.attributes == {"team_size": 12, "timeline": "now"}
    cleared = await client.identify("web", sender, {"team_size": None, "company": None})
    assert (cleared.profile.attributes, cleared.profile.company) == ({"timeline": "now"}, None)


async def test_addresses_and_core_fields_are_stored_normalised(client: BackendClient) -> None:
    number = phone()
    national = f"({number[2:5]}) {number[5:8]}-{number[8:]}"
    fields = {"first_name": "  Ada ", "email": "Ada@ACME.io", "phone": national, "locale": "en_US"}
    texter = (await client.identify("sms", national, fields)).profile
    assert texter.identities == [Identity("sms", number)]
    assert (texter.first_name, texter.email, texter.phone, texter.locale) == (
        "Ada",
        "ada@acme.io",  # one mailbox, whatever the case it was typed in
        number,
        "en-US",
    )
    assert (await client.identify("sms", number)).profile.id == texter.id


async def test_texts_and_calls_from_one_number_are_one_person(client: BackendClient) -> None:
    number = phone()
    texted = await client.identify("sms", number, {"first_name": "Ada"})
    called = await client.identify("voice", number)
    assert (called.created, called.profile.id, called.profile.first_name) == (
        False,
        texted.profile.id,
        "Ada",
    )
    assert set(called.profile.identities) == {Identity("sms", number), Identity("voice", number)}


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda c, p: c.identify("sms", "not a number"), id="not-a-number"),
        pytest.param(lambda c, p: c.identify("sms", "+1 415"), id="too-short-number"),
        pytest.param(lambda c, p: c.identify("email", "ada@"), id="not-an-address"),
        pytest.param(lambda c, p: c.identify("fax", "x"), id="unknown-kind"),
        pytest.param(lambda c, p: c.identify("web", "   "), id="blank-address"),
        pytest.param(lambda c, p: c.identify("web", web_id(), {"email": "ada"}), id="bad-email"),
        pytest.param(
            lambda c, p: c.identify("web", web_id(), {"timezone": "Mars/Olympus"}), id="bad-zone"
        ),
        pytest.param(lambda c, p: c.update_profile(p, {"first_name": " "}), id="blank-name"),
        pytest.param(lambda c, p: c.update_profile(p, {"email": ""}), id="blank-email"),
        pytest.param(lambda c, p: c.update_profile(p, {"locale": "?"}), id="bad-locale"),
        pytest.param(lambda c, p: c.add_identity(p, "sms", "12"), id="identity-bad-number"),
        pytest.param(lambda c, p: c.add_identity(p, "email", "x@"), id="identity-bad-email"),
    ],
)
async def test_invalid_people_data_is_refused(client: BackendClient, call: Call) -> None:
    assert await refusal(call(client, await person(client))) == INVALID


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda c, p: c.get_profile(p), id="get_profile"),
        pytest.param(lambda c, p: c.update_profile(p, {"plan": "team"}), id="update_profile"),
        pytest.param(lambda c, p: c.add_identity(p, "web", web_id()), id="add_identity"),
        pytest.param(lambda c, p: c.consent_states(p), id="consent_states"),
        pytest.param(lambda c, p: c.demos_of(p), id="demos_of"),
        pytest.param(lambda c, p: c.book_demo(p, start_time(), 30, "x"), id="book_demo"),
    ],
)
async def test_an_unknown_profile_is_not_found(client: BackendClient, call: Call) -> None:
    assert await refusal(call(client, str(uuid.uuid4()))) == (404, URN + "profile-not-found")


async def test_preferences_and_time_zone_are_saved_on_the_profile(client: BackendClient) -> None:
    profile_id = await person(client)
    # What action_set_preference saves, and the zone the demo offer reads.
    changes = {"marketing_frequency": "weekly", "marketing_topics": ["offers", "tips"]}
    updated = await client.update_profile(profile_id, {**changes, "timezone": "Europe/Berlin"})
    read = await client.get_profile(profile_id)
    assert updated == read
    assert (read.attributes, read.timezone) == (changes, "Europe/Berlin")


# -- merging ------------------------------------------------------------------------------


async def test_someone_elses_identity_merges_the_two_into_the_older_profile(
    client: BackendClient,
) -> None:
    address, sender = email(), web_id()
    earlier = await client.identify("email", address, {"first_name": "Ada", "plan": "team"})
    visitor = await client.identify("web", sender, {"first_name": "Grace", "team_size": 12})
    added = await client.add_identity(visitor.profile.id, "email", address)
    assert (added.profile.id, added.merged_away) == (earlier.profile.id, visitor.profile.id)
    assert added.profile.first_name == "Grace"  # the values changed last win
    assert added.profile.attributes == {"plan": "team", "team_size": 12}
    assert set(added.profile.identities) == {Identity("email", address), Identity("web", sender)}
    # The merged profile's id, still in a conversation's slot, leads to the survivor.
    assert (await client.get_profile(visitor.profile.id)).id == earlier.profile.id
    assert (await client.identify("web", sender)).profile.id == earlier.profile.id
    again = await client.add_identity(visitor.profile.id, "email", address)
    assert (again.profile.id, again.merged_away) == (earlier.profile.id, None)
    assert set(again.profile.identities) == set(added.profile.identities)


async def test_the_older_profile_survives_whichever_adds_the_identity(
    client: BackendClient,
) -> None:
    sender = web_id()
    earlier = await person(client)
    later = await client.identify("web", sender)
    added = await client.add_identity(earlier, "web", sender)
    assert (added.profile.id, added.merged_away) == (earlier, later.profile.id)


async def test_a_greeting_does_not_make_a_profiles_values_newer(client: BackendClient) -> None:
    old_sender, new_sender = web_id(), web_id()
    old = (await client.identify("web", old_sender, {"first_name": "Old"})).profile
    new = (await client.identify("web", new_sender, {"first_name": "New"})).profile
    await client.identify("web", old_sender)  # found, nothing changed
    added = await client.add_identity(new.id, "web", old_sender)
    assert (added.profile.id, added.profile.first_name) == (old.id, "New")


async def test_a_new_identity_makes_a_profiles_values_newer(client: BackendClient) -> None:
    old_sender, new_sender = web_id(), web_id()
    old = (await client.identify("web", old_sender, {"first_name": "Old"})).profile
    new = (await client.identify("web", new_sender, {"first_name": "New"})).profile
    await client.update_profile(old.id, {"first_name": "Old"})  # old changed last...
    await client.add_identity(new.id, "email", email())  # ...until new got an address
    added = await client.add_identity(new.id, "web", old_sender)
    assert (added.profile.id, added.profile.first_name) == (old.id, "New")


async def test_consent_and_demos_follow_the_person_into_the_merge(client: BackendClient) -> None:
    address = email()
    earlier = (await client.identify("email", address)).profile.id
    await record(client, earlier, "email", "grant")
    await record(client, earlier, "email", "confirm")
    visitor = await person(client)
    demo = await client.book_demo(visitor, start_time(), 30, web_id())
    await client.add_identity(visitor, "email", address)
    assert await client.consent_states(visitor) == [ChannelConsent("email", "marketing", "granted")]
    assert await client.demos_of(earlier) == [demo]


# -- consent ------------------------------------------------------------------------------


async def record(
    client: BackendClient,
    profile_id: str,
    channel: str,
    action: str,
    purpose: str = "marketing",
    wording: str = "Can we send you offers and product news? Yes or no?",
    reply: str = "yes please",
) -> tuple[str, bool]:
    """A line in the ledger, with the dialogue evidence the consent actions give; the
    state it leaves and whether such a message may go now."""
    metadata = {"conversation_id": "contract-tests", "input_channel": "rest"}
    recorded = await client.record_consent(
        profile_id, channel, purpose, action, wording, reply, metadata
    )
    return recorded.state, recorded.allowed


async def subscriber(client: BackendClient) -> str:
    """A web visitor who gave their mobile number (as action_record_consent adds it)."""
    return (await client.add_identity(await person(client), "sms", phone())).profile.id


async def test_sms_marketing_waits_for_the_texted_yes(client: BackendClient) -> None:
    profile_id = await subscriber(client)
    assert await record(client, profile_id, "sms", "grant") == ("pending", False)
    assert await record(client, profile_id, "sms", "grant") == ("pending", False)
    assert (await client.consent(profile_id, "sms", "marketing")).state == "pending"
    assert await client.consent_states(profile_id) == [
        ChannelConsent("sms", "marketing", "pending")
    ]
    confirmed = await record(client, profile_id, "sms", "confirm", wording="Reply YES", reply="YES")
    assert confirmed == ("granted", True)
    assert await refusal(record(client, profile_id, "sms", "confirm")) == (
        409,
        URN + "nothing-to-confirm",
    )
    # Asking again never takes consent away; withdrawing does.
    assert await record(client, profile_id, "sms", "grant") == ("granted", True)
    assert await record(client, profile_id, "sms", "withdraw", reply="STOP") == ("withdrawn", False)


async def test_a_withdrawal_closes_a_pending_opt_in(client: BackendClient) -> None:
    profile_id = await subscriber(client)
    await record(client, profile_id, "sms", "grant")
    assert await record(client, profile_id, "sms", "withdraw", reply="stop") == ("withdrawn", False)
    assert await refusal(record(client, profile_id, "sms", "confirm", reply="YES")) == (
        409,
        URN + "nothing-to-confirm",
    )


async def test_email_marketing_waits_for_its_confirmation(client: BackendClient) -> None:
    profile_id = await person(client)
    assert await record(client, profile_id, "email", "grant") == ("pending", False)
    assert (await client.consent(profile_id, "email", "transactional")).allowed is True
    assert await record(client, profile_id, "email", "confirm") == ("granted", True)
    assert await refusal(record(client, profile_id, "email", "confirm")) == (
        409,
        URN + "nothing-to-confirm",
    )


async def test_an_opt_out_from_everything_withdraws_every_channel(client: BackendClient) -> None:
    profile_id = await subscriber(client)
    await record(client, profile_id, "email", "grant")
    await record(client, profile_id, "sms", "grant")
    # action_opt_out on "don't contact me again": both purposes on channel "all".
    for purpose in PURPOSES:
        withdrawn = await record(
            client, profile_id, "all", "withdraw", purpose, reply="never again"
        )
        assert withdrawn == ("withdrawn", False)
    assert await client.consent_states(profile_id) == [
        ChannelConsent(channel, purpose, "withdrawn")
        for channel in CHANNELS
        for purpose in PURPOSES
    ]


@pytest.mark.parametrize(
    ("line", "refused"),
    [
        pytest.param({"channel": "all"}, (422, URN + "consent-channel-all"), id="all-channels"),
        pytest.param({"action": "confirm", "channel": "all"}, (422, URN + "consent-channel-all"),
                     id="confirm-all-channels"),
        pytest.param({"wording": ""}, INVALID, id="no-wording"),
        pytest.param({"reply": ""}, INVALID, id="no-reply"),
        pytest.param({"wording": "?" * 2001}, INVALID, id="wording-too-long"),
        pytest.param({"action": "maybe"}, INVALID, id="unknown-action"),
        pytest.param({"channel": "fax"}, INVALID, id="unknown-channel"),
        pytest.param({"purpose": "spam"}, INVALID, id="unknown-purpose"),
    ],
)  # fmt: skip
async def test_consent_is_granted_per_channel_with_evidence(
    client: BackendClient, line: dict[str, str], refused: tuple[int, str]
) -> None:
    grant = {"channel": "email", "action": "grant", **line}
    profile_id = await person(client)
    assert await refusal(record(client, profile_id, **grant)) == refused


# -- demos --------------------------------------------------------------------------------


async def test_one_live_booking_per_start_time(client: BackendClient) -> None:
    mine, theirs = await person(client), await person(client)
    at = start_time()
    booked = await client.book_demo(mine, at.astimezone(ZoneInfo("America/Chicago")), 30, "c1")
    assert (booked.starts_at, booked.minutes) == (at, 30)
    assert await refusal(client.book_demo(theirs, at, 30, "c2")) == (409, URN + "slot-taken")
    assert await client.booked_demos(at, at + MINUTE) == [booked]
    assert await client.demos_of(mine) == [booked]
    await client.cancel_demo(booked.id)
    assert await client.booked_demos(at, at + MINUTE) == []
    assert await client.demos_of(mine) == []
    rebooked = await client.book_demo(theirs, at, 30, "c2")  # the slot is free again
    assert await client.demos_of(theirs) == [rebooked]


async def test_a_demo_moves_to_a_free_time_only(client: BackendClient) -> None:
    mine = await person(client)
    first, taken, later = start_time(), start_time(), start_time()
    booked = await client.book_demo(mine, first, 30, "c1")
    await client.book_demo(await person(client), taken, 30, "c2")
    assert await refusal(client.move_demo(booked.id, taken)) == (409, URN + "slot-taken")
    moved = await client.move_demo(booked.id, later)
    assert (moved.id, moved.starts_at, moved.minutes) == (booked.id, later, 30)
    assert await client.booked_demos(first, first + MINUTE) == []
    assert await client.demos_of(mine) == [moved]
    await client.cancel_demo(booked.id)
    await client.cancel_demo(booked.id)  # cancelling twice is no error
    assert await refusal(client.move_demo(booked.id, first)) == (409, URN + "demo-cancelled")


@pytest.mark.parametrize(
    ("call", "refused"),
    [
        pytest.param(
            lambda c, p: c.book_demo(p, system_clock() - timedelta(hours=1), 30, "c"),
            INVALID,
            id="in-the-past",
        ),
        pytest.param(lambda c, p: c.book_demo(p, start_time(), 5, "c"), INVALID, id="too-short"),
        pytest.param(
            lambda c, p: c.book_demo(p, start_time().replace(tzinfo=None), 30, "c"),
            INVALID,
            id="no-zone",
        ),
        pytest.param(
            lambda c, p: c.move_demo(str(uuid.uuid4()), start_time()),
            (404, URN + "demo-not-found"),
            id="move-unknown",
        ),
        pytest.param(
            lambda c, p: c.cancel_demo(str(uuid.uuid4())),
            (404, URN + "demo-not-found"),
            id="cancel-unknown",
        ),
        pytest.param(
            lambda c, p: c.booked_demos(FAR, FAR + timedelta(days=93)),
            (400, URN + "invalid-query"),
            id="window-too-long",
        ),
    ],
)
async def test_bookings_the_backend_refuses(
    client: BackendClient, call: Call, refused: tuple[int, str]
) -> None:
    assert await refusal(call(client, await person(client))) == refused


async def test_the_stretch_the_demo_offer_reads_is_accepted(client: BackendClient) -> None:
    now = system_clock()
    ahead = timedelta(days=load_business().demo.book_days_ahead + 1)  # as DemoAction.booked
    assert isinstance(await client.booked_demos(now, now + ahead), list)


# -- hand-offs and events -----------------------------------------------------------------


async def test_a_conversation_has_one_open_handoff(client: BackendClient) -> None:
    conversation = web_id()
    opened = await client.open_handoff(conversation, "rest", "requested", await person(client))
    again = await client.open_handoff(conversation, "socketio", "repeated_failure", None)
    other = await client.open_handoff(web_id(), "sms", "repeated_failure", None)
    assert opened == again != other


@pytest.mark.parametrize(
    ("conversation", "channel", "reason"),
    [("c", "rest", "bored"), ("", "rest", "requested"), ("c", "", "requested")],
    ids=["unknown-reason", "no-conversation", "no-channel"],
)
async def test_a_handoff_needs_a_known_reason_and_its_conversation(
    client: BackendClient, conversation: str, channel: str, reason: str
) -> None:
    call = client.open_handoff(conversation and web_id(), channel, reason, None)
    assert await refusal(call) == INVALID


async def test_a_qualified_lead_is_reported_as_an_event(client: BackendClient) -> None:
    profile_id = await person(client)
    await client.record_event(profile_id, "lead_qualified", {"team_size": 12, "timeline": "now"})
    unknown = client.record_event(str(uuid.uuid4()), "lead_qualified", {})
    assert await refusal(unknown) == INVALID
    assert await refusal(client.record_event(profile_id, "Lead Qualified")) == INVALID
