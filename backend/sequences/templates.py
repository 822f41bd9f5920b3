"""Follow-up templates: Jinja2 in a sandbox (no attribute access beyond the context,
bounded repetition), the context a step renders with (profile, event, business), and
a sample context for checking templates before any person is enrolled.

Texts render as they are written. An e-mail's HTML renders in a twin of the sandbox that
escapes what it puts in (a first name with a `<` stays text), its CSS is then inlined
(css-inline: mail clients drop `<style>` and stylesheets), and its text part is read out
of the HTML (inscriptis); its subject renders as text, on one line. A marketing e-mail's
template may place the unsubscribe link where its design wants it (`unsubscribe_url`,
filled in by the e-mail door for each message); the footer has one either way."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import css_inline
from jinja2 import StrictUndefined
from jinja2 import Template as JinjaTemplate
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context as JinjaContext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from backend.messaging.email_message import UNSUBSCRIBE_URL, text_of_html
from backend.sequences.definition import (
    ApiTrigger,
    EventTrigger,
    FormCompletedTrigger,
    IntentTrigger,
    SegmentEnteredTrigger,
    Trigger,
)

TEMPLATE_NAMES = ("profile", "event", "business")
# What an e-mail's templates may use besides: the unsubscribe link (marketing only).
EMAIL_NAMES = ("unsubscribe_url",)
PROFILE_FIELDS = ("first_name", "last_name", "email", "phone", "company", "timezone")
_MAX_REPEAT = 1000


class _TemplateEnvironment(ImmutableSandboxedEnvironment):
    """Jinja2's sandbox (no attributes starting with _, no mutating lists or dicts),
    no globals (range, lipsum, …), and no `"x" * 10**9`."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: JinjaContext, operator: str, left: Any, right: Any) -> Any:
        numbers = all(isinstance(v, int | float) for v in (left, right))
        if operator == "**" and (not numbers or abs(right) > 64):
            raise SecurityError("the template raises to a power too large")
        if (
            operator == "*"
            and not numbers
            and max((abs(v) for v in (left, right) if isinstance(v, int)), default=0) > _MAX_REPEAT
        ):
            raise SecurityError("the template repeats text too many times")
        return super().call_binop(context, operator, left, right)


def _blank_none(value: Any) -> Any:
    # A profile without a first name prints nothing, not "None".
    return "" if value is None else value


def _environment(html: bool) -> _TemplateEnvironment:
    environment = _TemplateEnvironment(
        undefined=StrictUndefined, autoescape=html, finalize=_blank_none
    )
    environment.globals.clear()
    return environment


# Texts (SMS, speech, the web chat shows them as text): nothing escaped.
ENVIRONMENT = _environment(html=False)
# An e-mail's HTML body: what the context puts in is escaped.
HTML_ENVIRONMENT = _environment(html=True)


@lru_cache(maxsize=512)
def compile_template(source: str, html: bool = False) -> JinjaTemplate:
    return (HTML_ENVIRONMENT if html else ENVIRONMENT).from_string(source)


def render(source: str, context: Mapping[str, Any]) -> str:
    """The message: `source` rendered in the sandbox, StrictUndefined (a name that is not
    there is an error, not an empty string), trimmed. Raises jinja2 errors."""
    return compile_template(source).render(dict(context)).strip()


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str | None  # None: the e-mail is the text (a `best` step's text template)
    text: str


_INLINER = css_inline.CSSInliner(load_remote_stylesheets=False)


def render_subject(source: str, context: Mapping[str, Any]) -> str:
    """A subject: rendered as text, its lines and spaces run together."""
    return " ".join(render(source, context).split())


def render_email(
    subject: str, source: str, context: Mapping[str, Any], marketing: bool, html: bool = True
) -> RenderedEmail:
    """An e-mail from its templates: the subject, the HTML body rendered with escaping
    and its CSS inlined, and the text part read from it (with `html=False`, the template
    is the e-mail's text). Raises jinja2 errors, and ValueError for unusable CSS."""
    # Not marketing: nothing to unsubscribe from (`parley validate` says so of its use).
    context = {**context, "unsubscribe_url": UNSUBSCRIBE_URL if marketing else ""}
    title = render_subject(subject, context)
    if not html:
        return RenderedEmail(title, None, render(source, context))
    body = compile_template(source, html=True).render(context).strip()
    try:
        inlined = _INLINER.inline(body)
    except css_inline.InlineError as error:
        raise ValueError(f"the e-mail's CSS cannot be inlined: {error}") from error
    return RenderedEmail(title, inlined, text_of_html(inlined))


def business_context(business: Mapping[str, Any]) -> dict[str, Any]:
    """What templates see of data/business.yml."""
    contact = business.get("contact")
    contact = contact if isinstance(contact, Mapping) else {}
    return {
        "name": business.get("name"),
        "tagline": business.get("tagline"),
        "website": business.get("website"),
        "contact": {"email": contact.get("email"), "phone": contact.get("phone")},
        "address": business.get("address"),
        "timezone": business.get("timezone"),
        "privacy_policy": business.get("privacy_policy"),
    }


def template_context(
    profile: Mapping[str, Any], event: Mapping[str, Any], business: Mapping[str, Any]
) -> dict[str, Any]:
    """Everything a template can use, and nothing else: the profile's fields, attributes
    and score (a whole number), the triggering event, and the business."""
    return {
        "profile": {
            **{name: profile.get(name) for name in PROFILE_FIELDS},
            "attributes": dict(profile.get("attributes") or {}),
            "score": round(float(profile.get("score") or 0)),
        },
        "event": {
            "type": event.get("type"),
            "properties": dict(event.get("properties") or {}),
        },
        "business": business_context(business),
    }


class _AnyKey(dict[str, Any]):
    """Free-form data (attributes, event properties) at validation time: every key has a
    sample value, so a template may use any of them."""

    def __missing__(self, key: str) -> str:
        return "sample value"


SAMPLE_PROFILE: dict[str, Any] = {
    "first_name": "Alexandra",
    "last_name": "Fitzgerald",
    "email": "alexandra.fitzgerald@example.com",
    "phone": "+14155550123",
    "company": "Northwind Traders",
    "timezone": "America/Chicago",
    "score": 42,
}
SAMPLE_BUSINESS: dict[str, Any] = {
    "name": "Example Co",
    "tagline": "an example business",
    "website": "https://example.com",
    "contact": {"email": "hello@example.com", "phone": "+1 415 555 0100"},
    "address": "1 Example Street, Springfield",
    "timezone": "UTC",
    "privacy_policy": "https://example.com/privacy",
}


def enrolment_event(trigger: Trigger) -> tuple[str, dict[str, Any]]:
    """The event a trigger enrols people with, as templates see it: its type and the
    properties it always has."""
    match trigger:
        case EventTrigger(event=type_, where=where):
            return type_, dict(where)
        case IntentTrigger(intent=intent):
            return "intent_expressed", {"intent": intent}
        case FormCompletedTrigger(form_completed=form):
            return "form_completed", {"form": form}
        case SegmentEnteredTrigger(segment_entered=segment):
            return "segment_entered", {"segment": segment}
    return "enrolled", {}


def sample_context(trigger: Trigger, business: Mapping[str, Any]) -> dict[str, Any]:
    """The context templates are tried with when files are validated."""
    event_type, known = enrolment_event(trigger)
    context = template_context(
        SAMPLE_PROFILE, {"type": event_type}, {**SAMPLE_BUSINESS, **business}
    )
    context["profile"]["attributes"] = _AnyKey()
    # What an event or the API brings besides is free-form; intents, forms and segments
    # bring only their name.
    free = isinstance(trigger, EventTrigger | ApiTrigger)
    context["event"]["properties"] = _AnyKey(known) if free else known
    return context
