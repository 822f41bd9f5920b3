"""Checks of a sequence beyond its file format, each reported with where it is: the
flow (every target exists, no step unreachable, no loop without a wait), the names it
uses (intents, forms, segments, events the project knows) and its templates."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from jinja2 import TemplateSyntaxError, meta
from jinja2.exceptions import SecurityError, UndefinedError

from backend.consent.ledger import Purpose
from backend.messaging.email_door import MAX_SUBJECT
from backend.messaging.email_message import UNSUBSCRIBE_URL
from backend.sequences.definition import (
    EXIT,
    MAX_SMS_SEGMENTS,
    BranchStep,
    FormCompletedTrigger,
    HandoffStep,
    IntentTrigger,
    RepliedCondition,
    SegmentCondition,
    SegmentEnteredTrigger,
    SendChannel,
    SendStep,
    SequenceDefinition,
    StepMessage,
    WaitStep,
)
from backend.sequences.templates import (
    EMAIL_NAMES,
    ENVIRONMENT,
    TEMPLATE_NAMES,
    RenderedEmail,
    render,
    render_email,
    render_subject,
    sample_context,
)
from message_rules.sms import is_gsm7
from message_rules.sms import segments as sms_segments


@dataclass(frozen=True)
class SequenceProblem:
    """A mistake found after the file was read: where (a path of keys and indexes in the
    file), what, and for templates the line inside the template."""

    where: tuple[int | str, ...]
    message: str
    template_line: int | None = None


@dataclass(frozen=True)
class Vocabulary:
    """What sequence files may name: file segments, the bot's intents and forms (None when
    the Rasa domain was not found), and the business."""

    segments: frozenset[str]
    intents: frozenset[str] | None = None
    forms: frozenset[str] | None = None
    business: Mapping[str, Any] = field(default_factory=dict)
    # The questions a follow-up may ask: the values of the bot's `follow_up` slot.
    questions: frozenset[str] | None = None


def check(sequence: SequenceDefinition, vocabulary: Vocabulary) -> list[SequenceProblem]:
    """Every mistake the model alone cannot see, in file order where possible."""
    return [
        *_check_flow(sequence),
        *_check_names(sequence, vocabulary),
        *_check_templates(sequence, vocabulary),
    ]


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _targets(sequence: SequenceDefinition) -> Iterator[tuple[int, tuple[int | str, ...], str]]:
    """Every explicit jump: (step index, where it is written, target)."""
    for index, step in enumerate(sequence.steps):
        if isinstance(step, BranchStep):
            for number, case in enumerate(step.branch):
                yield index, ("steps", index, "branch", number, "goto"), case.goto
            if step.otherwise:
                yield index, ("steps", index, "otherwise"), step.otherwise
        elif not isinstance(step, HandoffStep) and step.then:
            yield index, ("steps", index, "then"), step.then


def _check_flow(sequence: SequenceDefinition) -> list[SequenceProblem]:
    problems: list[SequenceProblem] = []
    steps = sequence.steps
    position: dict[str, int] = {}
    for index, step in enumerate(steps):
        if step.id in position:
            problems.append(
                SequenceProblem(
                    ("steps", index, "id"),
                    f"step {position[step.id] + 1} already has the id {step.id!r}: "
                    "step ids must be unique",
                )
            )
        else:
            position[step.id] = index
        if isinstance(step, SendStep) and step.send.variants:
            seen: set[str] = set()
            for number, variant in enumerate(step.send.variants):
                if variant.name in seen:
                    problems.append(
                        SequenceProblem(
                            ("steps", index, "send", "variants", number, "name"),
                            f"two variants are named {variant.name!r}: names must be unique",
                        )
                    )
                seen.add(variant.name)
    for _, where, target in _targets(sequence):
        if target != EXIT and target not in position:
            problems.append(
                SequenceProblem(
                    where,
                    f"no step has the id {target!r}{_did_you_mean(target, list(position))}",
                )
            )
    if problems:
        return problems

    reached = {0}
    todo = [0]
    while todo:
        for target in sequence.successors(todo.pop()):
            if target != EXIT and position[target] not in reached:
                reached.add(position[target])
                todo.append(position[target])
    for index, step in enumerate(steps):
        if index not in reached:
            problems.append(
                SequenceProblem(
                    ("steps", index, "id"),
                    f"step {step.id!r} is never reached: the step before it goes elsewhere "
                    "and no goto, then or otherwise names it",
                )
            )

    # A jump back without a wait in the loop would run the same steps over and over.
    def loops_back(start: int, goal: int) -> bool:
        seen, todo = {start}, [start]
        while todo:
            index = todo.pop()
            if index == goal:
                return True
            if isinstance(steps[index], WaitStep):
                continue
            for target in sequence.successors(index):
                if target != EXIT and position[target] not in seen:
                    seen.add(position[target])
                    todo.append(position[target])
        return False

    for index, where, target in _targets(sequence):
        if (
            target != EXIT
            and position[target] <= index
            and not isinstance(steps[index], WaitStep)
            and loops_back(position[target], index)
        ):
            problems.append(
                SequenceProblem(
                    where,
                    f"going back to {target!r} makes a loop with no wait in it: add a wait "
                    "step inside the loop",
                )
            )

    if sequence.exit_when.replied:
        for index, step in enumerate(steps):
            if isinstance(step, BranchStep):
                for number, case in enumerate(step.branch):
                    if isinstance(case.when, RepliedCondition):
                        problems.append(
                            SequenceProblem(
                                ("steps", index, "branch", number, "when"),
                                "this branch never sees a reply: people who reply leave the "
                                "sequence (exit_when: replied is true unless set to false)",
                            )
                        )
    return problems


def _check_names(sequence: SequenceDefinition, vocabulary: Vocabulary) -> list[SequenceProblem]:
    problems: list[SequenceProblem] = []

    def segment(where: tuple[int | str, ...], name: str) -> None:
        if name not in vocabulary.segments:
            problems.append(
                SequenceProblem(
                    where,
                    f"there is no segment {name!r} in data/segments/"
                    f"{_did_you_mean(name, vocabulary.segments)}; sequences can use segments "
                    "defined as files only",
                )
            )

    def bot(
        where: tuple[int | str, ...], what: str, name: str, known: frozenset[str] | None
    ) -> None:
        if known is None:
            problems.append(
                SequenceProblem(
                    where, f"cannot check the {what}: the bot's domain (bot/domain) was not found"
                )
            )
        elif name not in known:
            problems.append(
                SequenceProblem(
                    where,
                    f"the bot has no {what} {name!r}{_did_you_mean(name, known)}; its {what}s "
                    "are listed in bot/domain/*.yml",
                )
            )

    match sequence.trigger:
        case SegmentEnteredTrigger(segment_entered=name):
            segment(("trigger", "segment_entered"), name)
        case IntentTrigger(intent=name):
            bot(("trigger", "intent"), "intent", name, vocabulary.intents)
        case FormCompletedTrigger(form_completed=name):
            bot(("trigger", "form_completed"), "form", name, vocabulary.forms)
    for key in ("segments", "not_segments"):
        for number, name in enumerate(getattr(sequence.entry, key)):
            segment(("entry", key, number), name)
    for index, step in enumerate(sequence.steps):
        if isinstance(step, BranchStep):
            for number, case in enumerate(step.branch):
                if isinstance(case.when, SegmentCondition):
                    segment(
                        ("steps", index, "branch", number, "when", "segment"), case.when.segment
                    )
        if isinstance(step, SendStep) and step.send.asks is not None:
            where = ("steps", index, "send", "asks")
            bot(where, "follow-up question", step.send.asks, vocabulary.questions)
    return problems


def _check_templates(sequence: SequenceDefinition, vocabulary: Vocabulary) -> list[SequenceProblem]:
    problems: list[SequenceProblem] = []
    context = sample_context(sequence.trigger, vocabulary.business)
    for index, step in enumerate(sequence.steps):
        if not isinstance(step, SendStep):
            continue
        message = step.send
        base: tuple[int | str, ...] = ("steps", index, "send")
        for number, variant in enumerate(message.choices):
            where = (*base, "variants", number) if message.variants else base
            problems += [
                SequenceProblem((*where, "template"), text, line)
                for line, text in template_problems(variant.template, message, context)
            ]
            subject = message.subject_of(variant)
            if subject is not None:
                written = (*where, "subject") if variant.subject else (*base, "subject")
                problems += [
                    SequenceProblem(written if key == "subject" else (*where, "template"), t, n)
                    for key, n, t in email_problems(subject, variant.template, message, context)
                ]
    return problems


_NO_ATTRIBUTE = re.compile(r"has no attribute '([^']+)'")


def _line_of(source: str, name: str) -> int | None:
    word = re.compile(rf"\b{re.escape(name)}\b")
    return next((n for n, line in enumerate(source.splitlines(), 1) if word.search(line)), None)


def _names_problems(
    source: str, names: Iterable[str], what: str
) -> list[tuple[int | None, str]] | None:
    """Syntax and unknown names of one template; None when it can be tried."""
    try:
        parsed = ENVIRONMENT.parse(source)
    except TemplateSyntaxError as error:
        return [(error.lineno, f"{what} syntax: {error.message}")]
    known = list(names)
    unknown = sorted(meta.find_undeclared_variables(parsed) - set(known))
    listed = ", ".join(known[:-1]) + " and " + known[-1]
    if unknown:
        return [
            (
                _line_of(source, name),
                f"the {what} uses {name!r}, which does not exist: {what}s can use {listed}",
            )
            for name in unknown
        ]
    return None


def template_problems(
    source: str, message: StepMessage, context: Mapping[str, Any]
) -> list[tuple[int | None, str]]:
    """What is wrong with one template: (line in the template or None, message). An
    e-mail's HTML is tried by `email_problems`."""
    email = message.channel is SendChannel.EMAIL
    names = (*TEMPLATE_NAMES, *EMAIL_NAMES) if email else TEMPLATE_NAMES
    found = _names_problems(source, names, "template")
    if found is not None:
        return found
    if email:
        return []
    try:
        text = render(source, context)
    except Exception as error:  # any mistake in a marketer's template is theirs to fix
        return [_tried(source, error)]
    return _text_problems(text, message)


def _tried(source: str, error: Exception) -> tuple[int | None, str]:
    """A template that failed on the sample profile, said as a marketer can act on it."""
    if isinstance(error, SecurityError):
        return None, f"the template is refused by the sandbox: {error}"
    missing = _NO_ATTRIBUTE.search(str(error)) if isinstance(error, UndefinedError) else None
    if missing:
        return (
            _line_of(source, missing.group(1)),
            f"the template uses {missing.group(1)!r}, which is not there "
            "(docs/sequences.md lists what profile, event and business hold)",
        )
    return None, f"the template fails on a sample profile: {error}"


# Gmail cuts an e-mail's HTML after 102 KB behind "[Message clipped]": the footer with
# the unsubscribe link would be what is lost.
MAX_EMAIL_HTML = 102_000


def email_problems(
    subject: str, source: str, message: StepMessage, context: Mapping[str, Any]
) -> list[tuple[str, int | None, str]]:
    """What is wrong with an e-mail's subject and body, tried together on the sample
    profile: ("subject" or "template", line, message)."""
    problems: list[tuple[str, int | None, str]] = [
        ("subject", line, text)
        for line, text in _names_problems(subject, TEMPLATE_NAMES, "subject") or []
    ]
    html = message.channel is SendChannel.EMAIL
    marketing = message.purpose is Purpose.MARKETING
    if html and not marketing and "unsubscribe_url" in source:
        problems.append(
            ("template", _line_of(source, "unsubscribe_url"),
             "only marketing e-mails have an unsubscribe link; this one is "
             f"{message.purpose.value}: take `unsubscribe_url` out"),
        )  # fmt: skip
    if problems:
        return problems
    try:
        title = render_subject(subject, context)
    except Exception as error:  # the marketer's subject
        line, text = _tried(subject, error)
        return [("subject", line, text.replace("template", "subject"))]
    if not title:
        problems.append(("subject", None, "the subject is empty for a sample profile"))
    elif len(title) > MAX_SUBJECT:
        problems.append(
            ("subject", None, f"the subject is {len(title)} characters for a sample profile "
             f"(at most {MAX_SUBJECT}; inboxes show about 60)"),
        )  # fmt: skip
    try:
        mail: RenderedEmail = render_email(subject, source, context, marketing, html=html)
    except Exception as error:  # the marketer's HTML
        line, text = _tried(source, error)
        return [*problems, ("template", line, text)]
    if not mail.text:
        problems.append(("template", None, "the e-mail is empty for a sample profile"))
    if mail.html is not None:
        size = len(mail.html.encode())
        if size > MAX_EMAIL_HTML:
            problems.append(
                ("template", None, f"the e-mail's HTML is {size // 1000} KB for a sample "
                 f"profile, CSS inlined: Gmail clips anything over {MAX_EMAIL_HTML // 1000} "
                 "KB, footer and unsubscribe link included; shorten it"),
            )  # fmt: skip
        if marketing and UNSUBSCRIBE_URL in mail.html and not _linked(mail.html):
            problems.append(
                ("template", _line_of(source, "unsubscribe_url"),
                 'put `unsubscribe_url` in a link: <a href="{{ unsubscribe_url }}">'
                 "Unsubscribe</a>"),
            )  # fmt: skip
    return problems


def _linked(body: str) -> bool:
    """Whether every place the unsubscribe link goes is a link's href."""
    return body.count(UNSUBSCRIBE_URL) == len(
        re.findall(r"""href\s*=\s*["']?""" + re.escape(UNSUBSCRIBE_URL), body)
    )


def _text_problems(text: str, message: StepMessage) -> list[tuple[int | None, str]]:
    if not text:
        return [(None, "the template gives an empty message for a sample profile")]
    problems: list[tuple[int | None, str]] = []
    if message.channel in (SendChannel.SMS, SendChannel.BEST):
        count = sms_segments(text)
        if count > MAX_SMS_SEGMENTS:
            hint = (
                ""
                if is_gsm7(text)
                else " (it has characters outside the GSM alphabet, like curly quotes or …, "
                "so each segment holds 70 characters, not 160)"
            )
            problems.append(
                (
                    None,
                    f"this text takes {count} SMS segments for a sample profile (at most "
                    f"{MAX_SMS_SEGMENTS}): shorten it{hint}",
                )
            )
        if message.purpose is Purpose.MARKETING and "STOP" not in text:
            problems.append(
                (
                    None,
                    'a marketing text must say how to opt out: end it with "Reply STOP to opt out"',
                )
            )
    return problems
