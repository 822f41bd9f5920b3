"""Sequence files (data/sequences/*.yml): the shipped samples are valid, every mistake is
reported at its file and line with words a marketer can act on, and templates render in
a sandbox that keeps Python's insides out of reach."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from jinja2.exceptions import SecurityError, UndefinedError

from backend.core.settings import PROJECT_ROOT
from backend.data_files import load_sequences, validate
from backend.messaging.email_message import UNSUBSCRIBE_URL
from backend.sequences.definition import (
    BranchStep,
    EventCondition,
    HandoffStep,
    RepliedCondition,
    SendStep,
    StepMessage,
    UpdateStep,
    WaitStep,
    parse_duration,
)
from backend.sequences.templates import render, render_email, template_context
from message_rules.sms import segments

SHIPPED = PROJECT_ROOT / "data"
BUSINESS = {"name": "Brightdesk", "website": "https://brightdesk.example"}

# A valid sequence; each case below changes one thing in it.
BASE = """\
description: Say hello after a trial starts.
trigger:
  event: trial_started
steps:
  - id: a-day-later
    wait: 1d
  - id: hello
    send:
      channel: sms
      template: Hi {{ profile.first_name or "there" }}! Reply STOP to opt out.
"""


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data/ folder with the shipped business and segments, and no sequences yet."""
    folder = tmp_path / "data"
    shutil.copytree(SHIPPED / "segments", folder / "segments")
    shutil.copy(SHIPPED / "business.yml", folder / "business.yml")
    shutil.copy(SHIPPED / "catalog.yml", folder / "catalog.yml")
    (folder / "sequences").mkdir()
    return folder


def mistakes_in(data: Path, text: str, name: str = "hello.yml") -> list[tuple[int, str]]:
    """(line, message) of every mistake `parley validate` finds, all of them in this file."""
    (data / "sequences" / name).write_text(text)
    found = validate(data)
    assert {m.file for m in found} <= {data / "sequences" / name}, found
    return [(m.line, m.message) for m in found]


def marked_line(text: str) -> int:
    """The line holding the `# <-` mark in a case's YAML."""
    return next(n for n, line in enumerate(text.splitlines(), 1) if "# <-" in line)


# -------------------------------------------------------------------- the shipped samples


def test_the_shipped_sequences_are_valid() -> None:
    assert validate(SHIPPED) == []
    sequences = {s.name: s for s in load_sequences(SHIPPED)}
    assert set(sequences) == {
        "trial-nurture",
        "abandoned-checkout",
        "webinar-reminder",
        "re-engagement",
    }


def test_the_samples_show_every_kind_of_step() -> None:
    steps = [step for s in load_sequences(SHIPPED) for step in s.steps]
    sends = [s.send for s in steps if isinstance(s, SendStep)]
    assert any(isinstance(s, WaitStep) and s.plan.until and s.plan.on for s in steps)
    assert any(m.variants and m.holdout > 0 for m in sends)
    assert any(
        isinstance(s, BranchStep) and any(isinstance(c.when, RepliedCondition) for c in s.branch)
        for s in steps
    )
    assert any(isinstance(s, UpdateStep) for s in steps)
    assert any(isinstance(s, HandoffStep) for s in steps)
    assert {m.channel.value for m in sends} >= {"sms", "best"}


def test_every_marketing_text_in_the_samples_says_how_to_opt_out() -> None:
    for sequence in load_sequences(SHIPPED):
        for step in sequence.steps:
            if isinstance(step, SendStep) and step.send.purpose == "marketing":
                for variant in step.send.choices:
                    words = " ".join(variant.template.split())
                    assert words.endswith("Reply STOP to opt out."), (sequence.name, step.id)


def test_the_events_the_samples_rely_on_are_documented_for_marketers() -> None:
    guide = (PROJECT_ROOT / "docs" / "sequences.md").read_text()
    for sequence in load_sequences(SHIPPED):
        events = [g.event for g in sequence.exit_when.goal]
        trigger = sequence.trigger.model_dump()
        events += [trigger["event"]] if "event" in trigger else []
        events += [
            case.when.event
            for step in sequence.steps
            if isinstance(step, BranchStep)
            for case in step.branch
            if isinstance(case.when, EventCondition)
        ]
        for event in events:
            assert f"`{event}`" in guide, (sequence.name, event)


def test_the_guides_annotated_example_is_valid(data: Path) -> None:
    guide = (PROJECT_ROOT / "docs" / "sequences.md").read_text()
    example = guide.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert mistakes_in(data, example, "example.yml") == []


# ----------------------------------------------------------------- mistakes, file and line


CASES = {
    "unknown key": (
        BASE.replace("channel: sms", "chanel: sms  # <-"),
        "steps.1.send.chanel: unknown key",
    ),
    "bad duration": (
        BASE.replace("wait: 1d", "wait: 2 fortnights  # <-"),
        "steps.0.wait: '2 fortnights' is not a duration: write a number and a unit, like 30m",
    ),
    "duration without a unit": (BASE.replace("wait: 1d", "wait: 2  # <-"), "2 has no unit"),
    "zero duration": (BASE.replace("wait: 1d", "wait: 0h  # <-"), "no time at all"),
    "unquoted time of day": (
        BASE.replace("wait: 1d", "wait: {until: 10:00}  # <-"),
        'write times of day in quotes, like "10:00"',
    ),
    "not a weekday": (
        BASE.replace("wait: 1d", 'wait: {until: "10:00", on: thursdy}  # <-'),
        "'thursdy' is not a weekday",
    ),
    "weekday without a time": (
        BASE.replace("wait: 1d", "wait: {on: monday}  # <-"),
        'say at what time on that day: until: "10:00"',
    ),
    "goto to a missing step": (
        BASE.replace(
            "  - id: hello\n",
            "  - id: check\n    branch:\n      - when: {score: {gte: 60}}\n"
            "        goto: helo  # <-\n  - id: hello\n",
        ),
        "steps.1.branch.0.goto: no step has the id 'helo' (did you mean 'hello'?)",
    ),
    "then to a missing step": (
        BASE.replace("    wait: 1d\n", "    wait: 1d\n    then: bye  # <-\n"),
        "steps.0.then: no step has the id 'bye'",
    ),
    "duplicate step id": (
        BASE.replace("id: hello", "id: a-day-later  # <-"),
        "steps.1.id: step 1 already has the id 'a-day-later': step ids must be unique",
    ),
    "reserved step id": (
        BASE.replace("id: hello", "id: exit  # <-"),
        "'exit' is reserved",
    ),
    "unknown segment in entry": (
        BASE.replace("steps:\n", "entry:\n  segments: [hot-lead]  # <-\nsteps:\n"),
        "entry.segments.0: there is no segment 'hot-lead' in data/segments/ "
        "(did you mean 'hot-leads'?); sequences can use segments defined as files only",
    ),
    "unknown segment in a branch": (
        BASE.replace(
            "  - id: hello\n",
            "  - id: check\n    branch:\n      - when: {segment: vips}  # <-\n"
            "        goto: exit\n  - id: hello\n",
        ),
        "steps.1.branch.0.when.segment: there is no segment 'vips'",
    ),
    "unknown segment trigger": (
        BASE.replace("  event: trial_started", "  segment_entered: big-team  # <-"),
        "there is no segment 'big-team' in data/segments/ (did you mean 'big-teams'?)",
    ),
    "unknown intent": (
        BASE.replace("  event: trial_started", "  intent: ask_pricing  # <-"),
        "trigger.intent: the bot has no intent 'ask_pricing' (did you mean 'ask_price'?)",
    ),
    "unknown form": (
        BASE.replace("  event: trial_started", "  form_completed: leads_form  # <-"),
        "trigger.form_completed: the bot has no form 'leads_form' (did you mean 'lead_form'?)",
    ),
    "unknown trigger": (
        BASE.replace("  event: trial_started", "  webhook: x  # <-"),
        "a trigger is `api` or has one of the keys: event, intent, form_completed",
    ),
    "a step doing two things": (
        BASE.replace("    wait: 1d\n", "    wait: 1d\n    handoff: {reason: x}\n").replace(
            "  - id: a-day-later", "  - id: a-day-later  # <-"
        ),
        "steps.0: a step has an id and exactly one of: wait, send, branch, update, handoff",
    ),
    "template unknown variable": (
        BASE.replace("{{ profile.first_name", "{{ customer.name }} {{ profile.first_name").replace(
            "opt out.\n", "opt out.  # <-\n"
        ),
        "the template uses 'customer', which does not exist: templates can use profile, "
        "event and business",
    ),
    "template unknown profile field": (
        BASE.replace("profile.first_name", "profile.frist_name").replace(
            "opt out.\n", "opt out.  # <-\n"
        ),
        "the template uses 'frist_name', which is not there",
    ),
    "marketing text without opt-out": (
        BASE.replace(" Reply STOP to opt out.\n", "  # <-\n"),
        'a marketing text must say how to opt out: end it with "Reply STOP to opt out"',
    ),
    "variant weight not positive": (
        BASE.replace(
            '      template: Hi {{ profile.first_name or "there" }}! Reply STOP to opt out.\n',
            "      variants:\n"
            "        - {name: a, weight: 1, template: Hi! Reply STOP to opt out.}\n"
            "        - name: b\n"
            "          weight: 0  # <-\n"
            "          template: Hello! Reply STOP to opt out.\n",
        ),
        "steps.1.send.variants.1.weight: 0 is not a weight: a number above 0",
    ),
    "duplicate variant names": (
        BASE.replace(
            '      template: Hi {{ profile.first_name or "there" }}! Reply STOP to opt out.\n',
            "      variants:\n"
            "        - {name: a, template: Hi! Reply STOP to opt out.}\n"
            "        - {name: a, template: Hello! Reply STOP to opt out.}  # <-\n",
        ),
        "two variants are named 'a'",
    ),
    "one variant only": (
        BASE.replace(
            '      template: Hi {{ profile.first_name or "there" }}! Reply STOP to opt out.\n',
            "      variants:\n        - {name: a, template: Hi! Reply STOP to opt out.}  # <-\n",
        ),
        "an A/B test has 2 to 10 variants; for one text, use `template`",
    ),
    "template and variants": (
        BASE.replace(
            "      template:",
            "      variants:\n        - {name: a, template: x}\n        - {name: b, template: y}\n"
            "      template:",
        ).replace("channel: sms", "channel: sms  # <-"),
        "give either `template` (one text) or `variants` (an A/B test)",
    ),
    "holdout out of range": (
        BASE.replace("      channel: sms", "      channel: sms\n      holdout: 0.6  # <-"),
        "steps.1.send.holdout: 0.6 is not a holdout share: 0 to 0.5",
    ),
    "holdout as a percentage out of range": (
        BASE.replace("      channel: sms", "      channel: sms\n      holdout: 75%  # <-"),
        "0.75 is not a holdout share",
    ),
    "unknown channel": (
        BASE.replace("channel: sms", "channel: fax  # <-"),
        "steps.1.send.channel: Input should be 'sms', 'web', 'voice', 'email' or 'best'",
    ),
    "re-entry nonsense": (
        BASE.replace("steps:\n", "reentry: sometimes  # <-\nsteps:\n"),
        "reentry: 'sometimes' is not a re-entry policy: write never, always, or {after: 30d}",
    ),
    "re-entry after nonsense": (
        BASE.replace("steps:\n", "reentry: {after: soon}  # <-\nsteps:\n"),
        "reentry.after: 'soon' is not a duration",
    ),
    "opt-out exit switched off": (
        BASE.replace("steps:\n", "exit_when:\n  opted_out: false  # <-\nsteps:\n"),
        "exit_when.opted_out: is always on",
    ),
    "branch on a reply that always ends the sequence": (
        BASE.replace(
            "  - id: hello\n",
            "  - id: check\n    branch:\n      - when: {replied: true}  # <-\n"
            "        goto: exit\n  - id: hello\n",
        ),
        "this branch never sees a reply: people who reply leave the sequence",
    ),
    "unreachable step": (
        BASE.replace("    wait: 1d\n", "    wait: 1d\n    then: exit\n").replace(
            "  - id: hello", "  - id: hello  # <-"
        ),
        "steps.1.id: step 'hello' is never reached",
    ),
    "loop without a wait": (
        BASE + "    then: hello  # <-\n",
        "steps.1.then: going back to 'hello' makes a loop with no wait in it",
    ),
    "caps the wrong way round": (
        BASE.replace("steps:\n", "caps:\n  per_24h: 5  # <-\n  per_7d: 2\nsteps:\n"),
        "caps: per_24h cannot be more than per_7d",
    ),
    "empty quiet hours": (
        BASE.replace("steps:\n", 'quiet_hours:\n  from: "21:00"  # <-\n  until: "21:00"\nsteps:\n'),
        "quiet hours from and until are the same time",
    ),
    "an update that does nothing": (
        BASE.replace("    wait: 1d\n", "    update: {}  # <-\n"),
        "say what to update",
    ),
    "bad event type": (
        BASE.replace("event: trial_started", "event: Trial Started  # <-"),
        "'Trial Started' is not a valid event type",
    ),
    "not YAML": (
        BASE.replace("channel: sms", "channel: sms: now  # <-"),
        "not valid YAML: mapping values are not allowed here",
    ),
}


@pytest.mark.parametrize(("text", "words"), CASES.values(), ids=CASES.keys())
def test_a_mistake_is_reported_at_its_line_with_a_clear_message(
    data: Path, text: str, words: str
) -> None:
    found = mistakes_in(data, text)
    line = marked_line(text)
    assert any(at == line and words in message for at, message in found), found


def test_a_template_syntax_error_is_reported_at_the_line_inside_the_template(
    data: Path,
) -> None:
    text = BASE.replace(
        '      template: Hi {{ profile.first_name or "there" }}! Reply STOP to opt out.\n',
        "      template: |\n"
        "        Hi {{ profile.first_name }}!\n"
        "        {% if profile.company %}How is {{ profile.company }}?{% endfi %}\n"
        "        Reply STOP to opt out.\n",
    )
    [(line, message)] = mistakes_in(data, text)
    assert text.splitlines()[line - 1].strip().startswith("{% if profile.company")
    assert message.startswith("steps.1.send.template: template syntax:")
    assert "endfi" in message


def test_an_unknown_name_is_reported_at_the_template_line_that_uses_it(data: Path) -> None:
    text = BASE.replace(
        '      template: Hi {{ profile.first_name or "there" }}! Reply STOP to opt out.\n',
        "      template: |-\n"
        "        Hi {{ profile.first_name }}!\n"
        "        Your code is {{ coupon }}. Reply STOP to opt out.\n",
    )
    [(line, message)] = mistakes_in(data, text)
    assert "{{ coupon }}" in text.splitlines()[line - 1]
    assert "'coupon'" in message


def test_an_sms_longer_than_three_segments_is_a_mistake(data: Path) -> None:
    long = "Brightdesk keeps every customer conversation in one inbox. " * 8
    text = BASE.replace("Reply STOP to opt out.", long + "Reply STOP to opt out.")
    [(line, message)] = mistakes_in(data, text)
    assert line == 10
    assert message.startswith("steps.1.send.template: this text takes 4 SMS segments")
    assert "(at most 3): shorten it" in message


def test_a_text_outside_the_gsm_alphabet_is_measured_in_smaller_segments(data: Path) -> None:
    # 150 characters fit one GSM-7 segment but take three UCS-2 ones; 250 take four.
    text = BASE.replace("Reply STOP", "Don\u2019t wait, " + "x" * 200 + ". Reply STOP")
    [(_, message)] = mistakes_in(data, text)
    assert "4 SMS segments" in message and "outside the GSM alphabet" in message


def test_voice_and_web_texts_have_no_sms_length_or_opt_out_rule(data: Path) -> None:
    long = "Brightdesk keeps every customer conversation in one inbox. " * 8
    text = BASE.replace("channel: sms", "channel: voice").replace("Reply STOP to opt out.", long)
    assert mistakes_in(data, text) == []


def test_a_transactional_text_needs_no_opt_out_hint(data: Path) -> None:
    text = BASE.replace("      channel: sms", "      channel: sms\n      purpose: transactional")
    assert mistakes_in(data, text.replace(" Reply STOP to opt out.", "")) == []


def test_every_mistake_in_every_file_is_reported(data: Path) -> None:
    (data / "sequences" / "one.yml").write_text(
        BASE.replace("wait: 1d", "wait: 1 fortnight").replace("channel: sms", "channel: fax")
    )
    (data / "sequences" / "two.yml").write_text(BASE.replace("event: trial_started", "intent: x"))
    found = {(m.file.name, m.line) for m in validate(data)}
    assert found == {("one.yml", 6), ("one.yml", 9), ("two.yml", 3)}


def test_a_file_is_named_after_itself_unless_it_says_otherwise(data: Path) -> None:
    (data / "sequences" / "first.yml").write_text(BASE)
    (data / "sequences" / "second.yml").write_text("name: first\n" + BASE)
    [mistake] = validate(data)
    assert (mistake.file.name, mistake.line) == ("second.yml", 1)
    assert "sequence 'first' is also defined in" in mistake.message
    (data / "sequences" / "second.yml").write_text("name: other-name\n" + BASE)
    assert sorted(s.name for s in load_sequences(data)) == ["first", "other-name"]


def test_without_the_bots_domain_intents_cannot_be_checked(data: Path, tmp_path: Path) -> None:
    (data / "sequences" / "x.yml").write_text(BASE.replace("event: trial_started", "intent: greet"))
    assert load_sequences(data)  # the project's domain has `greet`
    with pytest.raises(ValueError, match=r"the bot's domain .* was not found"):
        load_sequences(data, domain_dir=tmp_path / "nowhere")


def test_an_api_only_sequence_is_written_trigger_api(data: Path) -> None:
    assert mistakes_in(data, BASE.replace("trigger:\n  event: trial_started", "trigger: api")) == []
    [(line, message)] = mistakes_in(
        data, BASE.replace("trigger:\n  event: trial_started", "trigger: {api: false}")
    )
    assert (line, message) == (
        2,
        "trigger.api: write `trigger: api` for a sequence people enter only through the API",
    )


def test_a_template_sees_what_its_trigger_brings(data: Path) -> None:
    intent = BASE.replace("event: trial_started", "intent: ask_price")
    uses = intent.replace("STOP to opt out.", "STOP to opt out. {{ event.properties.intent }}")
    assert mistakes_in(data, uses) == []
    [(_, message)] = mistakes_in(
        data, intent.replace("STOP to opt out.", "STOP to opt out. {{ event.properties.plan }}")
    )
    assert "the template uses 'plan', which is not there" in message
    # An event brings whatever properties its sender gave: any name is allowed.
    assert mistakes_in(data, BASE.replace("opt out.", "opt out. {{ event.properties.x }}")) == []


def test_retrieval_intents_from_the_catalog_are_known(data: Path) -> None:
    text = BASE.replace("event: trial_started", "intent: faq/free_trial")
    assert mistakes_in(data, text) == []


def test_an_unquoted_on_key_means_on_not_true(data: Path) -> None:
    text = BASE.replace("wait: 1d", 'wait: {for: 1d, until: "09:30", on: [tuesday, weekend]}')
    assert mistakes_in(data, text) == []
    [sequence] = load_sequences(data)
    wait = sequence.steps[0]
    assert isinstance(wait, WaitStep)
    assert [d.value for d in wait.plan.on or []] == ["tuesday", "saturday", "sunday"]


@pytest.mark.parametrize(
    ("written", "length"),
    [
        ("30m", timedelta(minutes=30)),
        ("3h", timedelta(hours=3)),
        ("2d", timedelta(days=2)),
        ("1w", timedelta(weeks=1)),
        ("2 days", timedelta(days=2)),
        ("90 minutes", timedelta(minutes=90)),
    ],
)
def test_durations_read_as_marketers_write_them(written: str, length: timedelta) -> None:
    assert parse_duration(written) == length


@pytest.mark.parametrize("written", ["", "2", "d2", "-1d", "1.5h", "2 fortnights", "400d"])
def test_durations_that_make_no_sense_are_refused(written: str) -> None:
    with pytest.raises(ValueError, match=r"duration|unit|too long"):
        parse_duration(written)


# ----------------------------------------------------------------------------- templates


def test_a_template_renders_with_the_profile_the_event_and_the_business() -> None:
    context = template_context(
        {"first_name": "Ada", "company": "Acme", "attributes": {"plan": "team"}, "score": 61.7},
        {"type": "checkout_started", "properties": {"plan": "team", "seats": 5}},
        {**BUSINESS, "contact": {"email": "hello@brightdesk.example"}},
    )
    text = render(
        "Hi {{ profile.first_name }} of {{ profile.company }} ({{ profile.score }} points): "
        "{{ event.properties.seats }} seats of {{ event.properties.plan | title }} at "
        "{{ business.name }}. Mail {{ business.contact.email }}.",
        context,
    )
    assert text == (
        "Hi Ada of Acme (62 points): 5 seats of Team at Brightdesk. Mail hello@brightdesk.example."
    )


def test_a_missing_value_prints_nothing_and_a_fallback_can_be_given() -> None:
    context = template_context({"first_name": None}, {"type": "x"}, BUSINESS)
    assert render('Hi {{ profile.first_name or "there" }}!', context) == "Hi there!"
    assert render("Hi {{ profile.last_name }}!", context) == "Hi !"
    assert render('{{ profile.attributes.plan | default("your plan") }}', context) == "your plan"


def test_a_name_that_is_not_in_the_context_fails_the_render() -> None:
    context = template_context({"first_name": "Ada", "id": "secret-id"}, {"type": "x"}, BUSINESS)
    with pytest.raises(UndefinedError):
        render("{{ profile.id }}", context)  # only the documented fields are there
    with pytest.raises(UndefinedError):
        render("{{ profile.attributes.plan }}", context)


@pytest.mark.parametrize(
    "template",
    [
        "{{ profile.__class__ }}",
        "{{ profile.__class__.__mro__[1].__subclasses__() }}",
        "{{ ''.__class__ }}",
        "{{ event.properties.clear() }}",
        "{{ profile.attributes.update({'plan': 'free'}) }}",
        "{{ 'x' * 100000000 }}",
        "{{ 9 ** 999999 }}",
    ],
)
def test_templates_cannot_reach_python_internals_or_change_data(template: str) -> None:
    context = template_context({"attributes": {"plan": "pro"}}, {"type": "x"}, BUSINESS)
    with pytest.raises(SecurityError):
        render(template, context)
    assert context["profile"]["attributes"] == {"plan": "pro"}


def test_validation_reports_a_template_the_sandbox_refuses(data: Path) -> None:
    text = BASE.replace("{{ profile.first_name", "{{ profile.__class__ }}{{ profile.first_name")
    [(line, message)] = mistakes_in(data, text)
    assert line == 10
    assert "the template is refused by the sandbox" in message
    assert "__class__" in message


def test_templates_have_no_globals_to_call(data: Path) -> None:
    text = BASE.replace("{{ profile.first_name", "{{ range(10) }}{{ profile.first_name")
    [(_, message)] = mistakes_in(data, text)
    assert "the template uses 'range', which does not exist" in message


def test_the_holdout_gets_nothing_and_the_rest_split_by_weight() -> None:
    message = StepMessage.model_validate(
        {
            "channel": "sms",
            "holdout": "20%",
            "variants": [
                {"name": "a", "weight": 3, "template": "A"},
                {"name": "b", "weight": 1, "template": "B"},
            ],
        }
    )
    rolls = [n / 1000 for n in range(1000)]
    picked = [v.name if (v := message.variant_for(r)) else None for r in rolls]
    assert picked.count(None) == 200
    assert picked.count("a") == 600
    assert picked.count("b") == 200


def test_a_single_template_is_the_default_variant() -> None:
    message = StepMessage.model_validate({"channel": "web", "template": "Hello"})
    variant = message.variant_for(0.99)
    assert variant is not None and (variant.name, variant.template) == ("default", "Hello")


def test_sample_texts_fit_three_segments_with_a_long_name() -> None:
    business = {"name": "Brightdesk", "website": "https://brightdesk.example"}
    context = template_context(
        {"first_name": "Maximiliana-Josefina", "company": "Northwind Traders International"},
        {"type": "x", "properties": {"plan": "business"}},
        business,
    )
    for sequence in load_sequences(SHIPPED):
        for step in sequence.steps:
            if isinstance(step, SendStep) and step.send.channel in ("sms", "best"):
                for variant in step.send.choices:
                    assert segments(render(variant.template, context)) <= 3


def test_a_variant_cannot_be_called_holdout(data: Path) -> None:
    text = """
trigger: {event: trial_started}
steps:
  - id: tip
    send:
      channel: sms
      variants:
        - {name: holdout, template: "A. Reply STOP to opt out."}
        - {name: other, template: "B. Reply STOP to opt out."}
"""
    [(line, message)] = mistakes_in(data, text)
    assert line == 8 and "'holdout' names the people who get nothing" in message


def test_a_follow_up_may_ask_only_a_question_the_bot_knows(data: Path) -> None:
    text = """
trigger: {event: trial_started}
steps:
  - id: offer
    send:
      channel: sms
      asks: dmeo
      template: "Want a demo? Reply YES. Reply STOP to opt out."
"""
    [(line, message)] = mistakes_in(data, text)
    assert line == 7 and "the bot has no follow-up question 'dmeo'" in message
    assert "did you mean 'demo'" in message


# ------------------------------------------------------------------------ e-mail steps

EMAIL = """\
trigger:
  event: trial_started
steps:
  - id: welcome
    send:
      channel: email
      subject: "Welcome to {{ business.name }}, {{ profile.first_name or 'friend' }}"
      template: |
        <style>p { color: #333; }</style>
        <p>Hi {{ profile.first_name or "there" }}, welcome aboard.</p>
        <p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>
"""


def test_an_email_step_with_subject_html_and_unsubscribe_link_is_valid(data: Path) -> None:
    assert mistakes_in(data, EMAIL) == []
    [sequence] = load_sequences(data)
    step = sequence.steps[0]
    assert isinstance(step, SendStep) and step.send.may_email


@pytest.mark.parametrize(
    ("change", "where", "expected"),
    [
        # No subject.
        (
            (
                "      subject: \"Welcome to {{ business.name }}, {{ profile.first_name or 'friend' }}\"\n",
                "",
            ),
            "      channel: email",
            "an e-mail needs a `subject`",
        ),
        # A name the subject cannot use, reported on the subject's line.
        (
            ("{{ profile.first_name or 'friend' }}\"", '{{ profile.nickname }}"'),
            "      subject:",
            "the subject uses 'nickname', which is not there",
        ),
        (
            ("{{ business.name }},", "{{ company }},"),
            "      subject:",
            "the subject uses 'company', which does not exist",
        ),
        # A mistake on the template's second line, reported on that line of the file.
        (
            ('Hi {{ profile.first_name or "there" }}', "Hi {{ profile.nickname }}"),
            "        <p>Hi",
            "the template uses 'nickname', which is not there",
        ),
        (
            ('Hi {{ profile.first_name or "there" }}', "Hi {% if %}"),
            "        <p>Hi",
            "template syntax",
        ),
        # The unsubscribe link written as text, not as a link.
        (
            (
                '<a href="{{ unsubscribe_url }}">Unsubscribe</a>',
                "Unsubscribe: {{ unsubscribe_url }}",
            ),
            "        <p>Unsubscribe",
            "put `unsubscribe_url` in a link",
        ),
        # An unsubscribe link in a transactional e-mail: nothing to unsubscribe from.
        (
            ("      channel: email\n", "      channel: email\n      purpose: transactional\n"),
            '        <p><a href="{{ unsubscribe_url }}">',
            "only marketing e-mails have an unsubscribe",
        ),
        # A subject on a text.
        (
            ("      channel: email\n", "      channel: sms\n"),
            "      channel: sms",
            "only e-mails have a subject",
        ),
    ],
)
def test_email_mistakes_are_reported_at_their_line(
    data: Path, change: tuple[str, str], where: str, expected: str
) -> None:
    text = EMAIL.replace(*change)
    assert text != EMAIL
    found = mistakes_in(data, text)
    line = next(n for n, row in enumerate(text.splitlines(), 1) if row.startswith(where))
    assert any(expected in message for _, message in found), found
    assert [n for n, message in found if expected in message] == [line], found


def test_a_subject_too_long_for_a_sample_profile_is_reported(data: Path) -> None:
    text = EMAIL.replace("Welcome to {{ business.name }}", "Welcome " + "very " * 45)
    [(line, message)] = mistakes_in(data, text)
    assert line == 7
    assert "the subject is" in message and "at most 200" in message


def test_an_email_gmail_would_clip_is_reported(data: Path) -> None:
    # 7,000 short paragraphs: 63 KB as written, over 102 KB once each carries its style.
    paragraphs = "<p>Tip</p>" * 7000
    text = EMAIL.replace("<p>Hi {{", paragraphs + "<p>Hi {{")
    [(_, message)] = mistakes_in(data, text)
    assert "Gmail clips anything over 102 KB" in message


def test_a_text_template_stays_within_2000_characters(data: Path) -> None:
    text = BASE.replace("Hi {{", "Hi " + "x" * 2000 + " {{")
    [(_, message)] = mistakes_in(data, text)
    assert "a text template is at most 2000 characters" in message


def test_the_html_escapes_what_it_puts_in_and_the_text_part_is_read_from_it() -> None:
    context = template_context({"first_name": "Ada <script>"}, {"type": "x"}, BUSINESS)
    mail = render_email(
        "Hi {{ profile.first_name }}",
        '<style>b { color: red; }</style><p>Hi <b>{{ profile.first_name }}</b></p>'
        '<p><a href="{{ unsubscribe_url }}">Stop these</a></p>',
        context, marketing=True,
    )  # fmt: skip
    assert mail.subject == "Hi Ada <script>"  # a header, not HTML
    assert mail.html is not None
    assert '<b style="color: red;">Ada &lt;script&gt;</b>' in mail.html
    assert f'<a href="{UNSUBSCRIBE_URL}">' in mail.html
    assert mail.text.splitlines()[0] == "Hi Ada <script>"
    assert f"[Stop these]({UNSUBSCRIBE_URL})" in mail.text
