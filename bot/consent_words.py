"""What a person's words mean for their consent: an opt-out said in their own words, a
request about something else, a clear yes. Read by the consent actions and, before any
policy runs, by the clear-requests guard and the NLU evaluation."""

from __future__ import annotations

import re
import unicodedata

# A request to stop that names nothing to stop: "please stop", "STOP IT NOW!!", "enough
# already", "no more", "quit it", "can you just stop". Outside a form there is nothing
# else to stop, so it is an opt-out; "stop asking", "stop, I meant Team" or "never mind"
# name something else (or nothing to stop at all) and are not.
_STOP_PHRASES = re.compile(
    r"\b(?:st[o0]+p+|stp|stahp|sotp|stpo|enough|quit|halt|cease|desist|no more"
    r"|cut (?:it|that|this) out|knock (?:it|that|this) off|leave me alone|give it a rest"
    r"|make it stop)\b"
)
_STOP_FILLER_WORDS = """
    please pls plz plse pleas thanks thank thx ty now right already just seriously srsly
    really immediately asap ok okay oh i i'm im said say begging beg is it this that
    these those them all everything of it's its that's thats you u ya ye can could would
    will want need to like damn dammit bloody freaking frickin fricking fucking fuckin
    effing ffs omg god jeez ugh man dude guys for sake god's again i'd id
"""
_STOP_FILLER = frozenset(_STOP_FILLER_WORDS.split())


# Besides the stop itself, what a `stop` outside a form may be about: our messages
# ("get me off this list", "stop it already, I'm not interested").
_ABOUT_CONTACT = re.compile(
    r"\b(?:lists?|contact\w*|messages|messaging|msgs?|texts|texting|txt\w*|sms|e-?mails"
    r"|emailing|newsletters?|calls|calling|ringing|spam\w*|marketing|offers|promo\w*"
    r"|subscri\w*|unsub\w*|opt\w*|consent\w*|permission|harass\w*|bother\w*|bugging"
    r"|pester\w*|not interested|never (?:signed|asked|opted|agreed))\b"
)
# ...unless it says not to stop ("I don't want you to stop texting", "keep them coming").
_NOT_STOPPING = re.compile(
    r"\b(?:don'?t|do not|not|never|no need to)\s+"
    r"(?:(?:want|need|mean|wish|asking|trying|going)\s+(?:you\s+|u\s+|them\s+)?(?:to\s+)?)?"
    r"(?:st[o0]p\w*|unsubscrib\w*|remove|opt(?:ing)? out|cancel\w*|leav\w*)\b"
    r"|\bkeep (?:\w+ ){0,3}coming\b"
)


# An opt-out is about the person's own messages from us. These are about something else:
# not stopping ("I'm not unsubscribing"), their customers, team or our product ("can my
# customers unsubscribe from our surveys?", "remove the extra seat from my invoice"), a
# limit rather than a stop ("no more than one a week"), or praise ("can't stop using
# it").
_SOMETHING_ELSE = re.compile(
    r"\b(?:my|our)\s+(?:\w+\s+)?(?:customers|clients|agents|users|team|teammates|staff"
    r"|colleagues?|invoice|plan|account|workspace|tickets|inbox|widget|reports?|help ?desk"
    r"|demo|booking|meeting|appointment)\b"
    r"|\b(?:customers|clients|end users|tickets?|widget|macros?|seats?|licen[cs]es?|invoices?"
    r"|sla|dashboards?|permissions)\b"
    r"|\bno more than\b|\bfewer\b|\bless often\b"
    r"|\bcan'?t stop \w+ing\b|\bcannot stop \w+ing\b"
)


def plain_words(text: str) -> str:
    cleaned = unicodedata.normalize("NFKC", text).lower().replace("\u2019", "'")
    cleaned = re.sub(r"(.)\1{2,}", r"\1", cleaned)  # "stooop", "pleeease"
    cleaned = re.sub(r"\b\S*\*\S*", " ", cleaned)  # "f***ing"
    return " ".join(re.findall(r"[a-z0-9']+", cleaned))


def no_object_stop(text: str) -> bool:
    """Whether `text` only asks to stop, naming no object: the stop words themselves,
    with nothing but politeness, emphasis, swearing or "it"/"this" around them."""
    words = plain_words(text)
    if not _STOP_PHRASES.search(words):
        return False
    rest = _STOP_PHRASES.sub(" ", words).split()
    return all(word in _STOP_FILLER for word in rest)


# A request about the person's own messages, whatever else the sentence says: "stop
# texting me, my team already bought it" is an opt-out, never "something else".
_ABOUT_ME = re.compile(
    r"\b(?:st[o0]p|quit|cease|no more|don'?t|do not|never)\s+(?:\w+\s+){0,2}?"
    r"(?:text\w*|txt\w*|messag\w*|msg\w*|e-?mail\w*|call\w*|ring\w*|contact\w*|spam\w*)"
    r"\s+me\b"
    r"|\b(?:unsubscribe|remove|take|delete|opt)\s+me\b|\bleave me alone\b"
    r"|\bmy (?:number|phone|e-?mail|address)\b"
)


def about_something_else(text: str) -> bool:
    """Whether words that sound like an opt-out are about something else than the
    person's own messages from us: they withdraw nothing (the bot says how to opt out
    instead). A request about the person's own messages is never something else. ("If
    you don't stop" is a threat, not a wish that we go on.)"""
    words = re.sub(r"\b(?:if|unless) (?:you|u) (?:don'?t|do not) st[o0]p\b", " ", plain_words(text))
    if _NOT_STOPPING.search(words):
        return True
    return bool(_SOMETHING_ELSE.search(words)) and not _ABOUT_ME.search(words)


def stop_is_opt_out(text: str) -> bool:
    """Whether a `stop` said outside a form asks us to stop contacting the person: it
    names nothing to stop, or it is about our messages and does not say not to stop."""
    words = plain_words(text)
    about_contact = bool(_ABOUT_CONTACT.search(words)) and not _NOT_STOPPING.search(words)
    return no_object_stop(text) or about_contact


# A yes with a condition, a question, hesitation, sarcasm or a thumbs down is not a
# clear yes, and no consent is recorded on it: "yes but not at that number", "ok, how
# often?", "hmm", "yeah right". The consent question is asked again instead.
_NOT_A_CLEAR_YES = re.compile(
    r"\?|\b(?:but|only|instead|except|unless|if)\b|\by(?:eah?|a)\W+right\b(?!\s*\w)|\bas if\b"
    r"|\bh+m+\b|\bu+m+\b|\berm*\b"
    "|[\U0001f44e\u274c\U0001f6ab\U0001f645]"
)


def clear_yes(text: str) -> bool:
    """Whether a yes to the consent question is unconditional (buttons always are)."""
    return text.startswith("/") or not _NOT_A_CLEAR_YES.search(text.lower())
