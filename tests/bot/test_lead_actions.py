"""The lead form: each answer checked, corrections taken mid-form, and the finished lead
saved to the person's profile with a scored `lead_qualified` event."""

from __future__ import annotations

from typing import Any

import pytest
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.lead import (
    ActionCorrectAnswer,
    ActionSubmitLead,
    ValidateLeadForm,
    email_in,
    team_size,
    timeline,
)
from tests.bot.fakes import FakeBackend, conversation, entity, slots_of

SENDER = "web-lead-1"


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend()


async def validate(slot: str, value: Any) -> dict[str, Any]:
    form = ValidateLeadForm()
    method = getattr(form, f"validate_{slot}")
    tracker = conversation(SENDER, str(value), "inform")
    result: dict[str, Any] = await method(value, CollectingDispatcher(), tracker, {})
    return result


# -- reading answers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("25", 25),
        ("we're about 25 people", 25),
        ("1,200 agents", 1200),
        ("somewhere between 10 and 20", 20),
        ("just me", 1),
        ("only me for now", 1),
        ("a dozen", 12),
        ("twelve of us", 12),
        ("not sure", "unknown"),
        ("no idea honestly", "unknown"),
        ("lots", None),
        ("0", None),
    ],
)
def test_team_size_reads_numbers_words_and_doubt(text: str, expected: int | str | None) -> None:
    assert team_size(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("asap", "now"),
        ("right away please", "now"),
        ("this month", "now"),
        ("in a few weeks", "this_quarter"),
        ("next month", "this_quarter"),
        ("sometime this quarter", "this_quarter"),
        ("next year", "later"),
        ("in a few months", "later"),
        ("haven't decided", "not_sure"),
        ("after our Q3 budget review", "after our Q3 budget review"),
    ],
)
def test_timeline_is_read_into_a_bucket_or_kept_in_the_persons_words(
    text: str, expected: str
) -> None:
    assert timeline(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ada@acme.io", "ada@acme.io"),
        ("it's Ada@ACME.io.", "Ada@acme.io"),
        ("mail me at <grace@navy.example>, thanks", "grace@navy.example"),
        ("ada at acme dot io", None),
        ("ada@", None),
    ],
)
def test_email_in_finds_a_valid_address_in_a_sentence(text: str, expected: str | None) -> None:
    assert email_in(text) == expected


# -- the form's checks -------------------------------------------------------------------


async def test_a_name_is_taken_from_an_introduction() -> None:
    assert await validate("first_name", "I'm ada") == {"first_name": "Ada", "lead_problem": None}


async def test_something_that_is_no_name_is_asked_again() -> None:
    assert await validate("first_name", "12345") == {"first_name": None, "lead_problem": "bad_name"}


async def test_a_work_email_is_normalised() -> None:
    assert await validate("work_email", "sure, ada@Acme.IO") == {
        "work_email": "ada@acme.io",
        "lead_problem": None,
    }


async def test_a_work_email_without_an_address_is_asked_again() -> None:
    assert await validate("work_email", "my work one") == {
        "work_email": None,
        "lead_problem": "bad_email",
    }


async def test_the_team_size_is_kept_as_a_number() -> None:
    assert await validate("team_size", "we're 40 people") == {
        "team_size": "40",
        "lead_problem": None,
    }


async def test_skipping_the_team_size_is_an_answer_not_a_problem() -> None:
    assert await validate("team_size", "skip") == {"team_size": "unknown", "lead_problem": None}


async def test_an_unreadable_team_size_is_asked_again() -> None:
    assert await validate("team_size", "lots") == {"team_size": None, "lead_problem": "bad_number"}


async def test_the_company_is_kept_in_the_persons_words() -> None:
    assert await validate("company", "  Acme Robotics ") == {"company": "Acme Robotics"}


@pytest.mark.parametrize("answer", ["skip", "rather not say", "n/a", "no idea"])
async def test_a_declined_free_text_answer_is_marked_skipped(answer: str) -> None:
    assert await validate("company", answer) == {"company": "skipped"}
    assert await validate("use_case", answer) == {"use_case": "skipped"}


async def test_a_long_use_case_is_cut_to_500_characters() -> None:
    result = await validate("use_case", "x" * 900)
    assert result == {"use_case": "x" * 500}


async def test_the_timeline_question_can_be_skipped() -> None:
    assert await validate("timeline", "pass") == {"timeline": "not_sure"}


async def test_the_timeline_is_read_into_a_bucket() -> None:
    assert await validate("timeline", "asap") == {"timeline": "now"}


@pytest.mark.parametrize(
    ("answer", "expected"),
    [("next month", "this_quarter"), ("next quarter", "this_quarter"), ("next year", "later")],
)
async def test_a_timeline_starting_with_next_is_not_taken_for_a_skip(
    answer: str, expected: str
) -> None:
    # "next" is in SKIP (for "next question"), but "next month" is an answer.
    assert await validate("timeline", answer) == {"timeline": expected}


async def test_a_company_called_next_something_is_not_taken_for_a_skip() -> None:
    assert await validate("company", "Next Level Support") == {"company": "Next Level Support"}


@pytest.mark.parametrize(
    ("slot", "expected"),
    [("team_size", "unknown"), ("timeline", "not_sure"), ("company", "skipped")],
)
async def test_doubt_typed_with_a_phones_curly_apostrophe_is_still_doubt(
    slot: str, expected: str
) -> None:
    # Phones type "don\u2019t"; actions/names.py straightens it, lead.py does not.
    assert (await validate(slot, "I don\u2019t know"))[slot] == expected


# -- corrections mid-form ----------------------------------------------------------------


async def correct(
    text: str, entities: list[dict[str, Any]] | None = None, asking: str | None = None
) -> dict[str, Any]:
    tracker = conversation(SENDER, text, "correct", entities, slots={"requested_slot": asking})
    events = await ActionCorrectAnswer().run(CollectingDispatcher(), tracker, {})
    return slots_of(events)


async def test_a_bare_answer_taken_for_a_correction_answers_the_question_asked() -> None:
    assert await correct("Acme Corp", asking="company") == {"company": "Acme Corp"}
    assert await correct("about 12", asking="team_size") == {
        "team_size": "12",
        "lead_problem": None,
    }
    assert await correct("no idea", asking="work_email") == {
        "work_email": None,
        "lead_problem": "bad_email",
    }
    assert await correct("Acme Corp") == {}


async def test_a_corrected_email_replaces_the_old_one() -> None:
    assert await correct("sorry, my email is actually ada@acme.io") == {"work_email": "ada@acme.io"}


async def test_a_corrected_email_from_nlu_is_checked_and_normalised() -> None:
    slots = await correct("use ADA@Acme.io instead", [entity("email", "ADA@Acme.io")])
    assert slots == {"work_email": "ADA@acme.io"}


async def test_an_email_nlu_got_wrong_is_not_stored() -> None:
    assert await correct("my email is wrong", [entity("email", "wrong")]) == {}


async def test_a_corrected_team_size_is_a_number() -> None:
    assert await correct("actually we are 40 people") == {"team_size": "40"}
    assert await correct("oh, team size is 1,200") == {"team_size": "1200"}


async def test_a_corrected_company() -> None:
    assert await correct("the company is Acme Robotics") == {"company": "Acme Robotics"}


async def test_a_corrected_name() -> None:
    assert await correct("sorry, my name is Grace") == {"first_name": "Grace"}


async def test_two_corrections_in_one_message_are_both_taken() -> None:
    slots = await correct("my email is grace@navy.example and we're 12 people")
    assert slots == {"work_email": "grace@navy.example", "team_size": "12"}


async def test_a_company_correction_ends_where_the_next_correction_starts() -> None:
    slots = await correct("the company is Acme and we're 12 people")
    assert slots == {"company": "Acme", "team_size": "12"}


@pytest.mark.parametrize(
    "text", ["my company name is Acme", "change the company name to Acme", "company name: Acme"]
)
async def test_correcting_the_company_name_leaves_the_persons_name_alone(text: str) -> None:
    # "company name is Acme" also matches the first_name pattern (r"\bname(?: is| to|:)").
    assert await correct(text) == {"company": "Acme"}


async def test_nothing_recognisable_changes_nothing() -> None:
    assert await correct("hmm wait") == {}


# -- submitting the lead -----------------------------------------------------------------

LEAD = {
    "first_name": "Ada",
    "work_email": "ada@acme.io",
    "company": "Acme",
    "team_size": "40",
    "use_case": "support e-mail for our shop",
    "timeline": "this_quarter",
}


async def submit(fake: FakeBackend, **slots: Any) -> dict[str, Any]:
    tracker = conversation(SENDER, "next quarter", "inform", slots={**LEAD, **slots})
    events = await ActionSubmitLead(fake).run(CollectingDispatcher(), tracker, {})
    return slots_of(events)


async def test_a_finished_lead_updates_the_profile(fake: FakeBackend) -> None:
    slots = await submit(fake)
    assert slots["lead_saved"] == "saved"
    profile = fake.profile_of("web", SENDER)
    assert profile is not None
    assert slots["profile_id"] == profile.id
    assert profile.fields["first_name"] == "Ada"
    assert profile.fields["email"] == "ada@acme.io"
    assert profile.fields["company"] == "Acme"
    assert profile.attributes == {
        "team_size": 40,
        "use_case": "support e-mail for our shop",
        "timeline": "this_quarter",
    }


async def test_the_work_email_becomes_one_of_the_persons_identities(fake: FakeBackend) -> None:
    await submit(fake)
    profile = fake.profile_of("email", "ada@acme.io")
    assert profile is not None and profile is fake.profile_of("web", SENDER)


async def test_a_lead_qualified_event_carries_the_team_size_as_a_number(
    fake: FakeBackend,
) -> None:
    slots = await submit(fake)
    [event] = fake.events
    assert event.type == "lead_qualified"
    assert event.profile_id == slots["profile_id"]
    assert event.properties == {"team_size": 40, "timeline": "this_quarter"}
    assert isinstance(event.properties["team_size"], int)


async def test_an_unknown_team_size_is_left_out_not_guessed(fake: FakeBackend) -> None:
    await submit(fake, team_size="unknown")
    assert fake.events[0].properties["team_size"] is None
    profile = fake.profile_of("web", SENDER)
    assert profile is not None and "team_size" not in profile.attributes


async def test_skipped_answers_are_not_stored_as_if_they_were_answers(fake: FakeBackend) -> None:
    await submit(fake, company="skipped", use_case="skipped")
    profile = fake.profile_of("web", SENDER)
    assert profile is not None
    assert profile.fields.get("company") is None
    assert "use_case" not in profile.attributes


async def test_a_returning_person_is_merged_into_the_profile_their_email_had(
    fake: FakeBackend,
) -> None:
    earlier = fake.add_person("email", "ada@acme.io", {"first_name": "Ada"})
    slots = await submit(fake)
    assert slots["profile_id"] == earlier
    assert fake.events[0].profile_id == earlier
    assert fake.profile_of("web", SENDER) is fake.profiles[earlier]


async def test_a_lead_is_reported_politely_as_not_saved_when_the_backend_is_down(
    fake: FakeBackend,
) -> None:
    fake.down = True
    tracker = conversation(SENDER, "soon", "inform", slots=LEAD)
    events = await ActionSubmitLead(fake).run(CollectingDispatcher(), tracker, {})
    assert events == [SlotSet("lead_saved", "not_saved")]
    assert fake.events == []
