"""Requests NLU must not get wrong: to stop being contacted, and to reach a person.

A request to stop is the person's legal right (FCC: revocation "by any reasonable
means"), and a trained classifier misses some of them however it is trained ("dont txt
me" taken for `subscribe`). So after DIET, `ClearRequests` reads each message with a
small grammar of the forms such a request takes (a stop word and what to stop, off a
list, a consent revoked, "leave me alone", "wrong number") and makes it `opt_out`
whatever DIET said; a question about opting out ("how do I unsubscribe?"), a sentence
about not stopping or about something else than the person's own messages
(`about_something_else` in actions/consent.py) is left to DIET. The other way round, a
question that names nothing about messages or lists ("is 10GB enough?") is never an
opt-out, whatever DIET said.

Likewise a request for a person said as a complaint about the bot ("you're a bot, I
want a real person") becomes `human_handoff` where DIET heard only `bot_challenge` or
nothing it was sure of.

The grammar is written from what such requests look like, never from the held-out sets
in tests/nlu/legal, which measure it (`parley test nlu`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.shared.nlu.constants import INTENT, INTENT_RANKING_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message

from bot.consent_words import about_something_else, no_object_stop, plain_words

# What we send, as nouns ("no more texts") and as verbs with their object ("stop
# texting me", "don't call this number", or nothing after: "stop calling").
_SENT = (
    r"(?:texts?|txts?|sms|messages?|msgs?|e-?mails?|newsletters?|calls?|robocalls?"
    r"|marketing|promos?|promotions?|offers|ads|adverts?|spam|notifications|updates"
    r"|reminders|mailings?)"
)
_SEND = (
    r"(?:text|txt|messag|msg|e-?mail|call|ring|phon|contact|spam+|bug+|bother|pester|harass)"
    r"(?:e|es|s|ing|ed)?"
)
_OBJECT = (
    r"(?:\s+(?:me|us|this number|this phone|my (?:number|phone|cell|mobile|e-?mail|inbox))\b"
    r"|$)"
)
# Words that may come between a stop word and what to stop.
_BETWEEN = (
    r"(?:(?:send|sending|sent|want|wanting|need|get|getting|receive|receiving|me|us|any"
    r"|anymore|more|the|these|those|your|ur|ya|all|of|with|such|stupid|damn|fucking"
    r"|freaking|bloody|annoying|promotional|marketing|spammy|daily|weekly|constant|endless"
    r"|ever|again|even|please|pls|kindly|just"
    r"|sms|text|email|e-mail)\s+){0,4}"
)
_STOP_WORD = r"(?:st[o0]p|cease|no more|enough|don'?t|do not|never|no longer)"
_LIST = (
    r"(?:lists?|database|system|records|contacts|mailing|newsletter|marketing|texts|messages"
    r"|emails)"
)
_OPT_OUT = re.compile(
    "|".join(
        [
            # "stop sending me emails", "dont txt me", "enough emails", "no more texts"
            rf"\b{_STOP_WORD}\s+{_BETWEEN}(?:{_SENT}\b|{_SEND}{_OBJECT})",
            # "quit texting me" ("I quit email support" is something else)
            rf"\bquit\s+{_SEND}{_OBJECT}",
            # "take me off your list", "remove my number from the database"
            r"\b(?:take|get|remove|delete|drop|scratch|cross|strike|erase|wipe|pull)\s+"
            r"(?:me|us|it|my (?:number|name|e-?mail|phone|details|info|address)"
            r"|this (?:number|phone|line))\s+(?:off|from|out of)\s+(?:\w+\s+){0,3}?"
            rf"{_LIST}\b",
            # "take me off", "get us off"
            r"\b(?:take|get|remove|delete)\s+(?:me|us)\s+off\s*$",
            # "no marketing please", "no more calls" (at the start: "no calls after 6pm"
            # inside a sentence is something else)
            rf"^no\s+{_BETWEEN}{_SENT}\b",
            # "I want off this list", "off your mailing list"
            r"\boff (?:of )?(?:this|your|the|ur|ya|yer|all|these|that|every|ur) (?:\w+ )?lists?\b",
            # "unsubscribe", "unsubscribe me", "unsub"
            r"(?:^|\b(?:please|pls|plz|just|i want to|i wanna|i'd like to|i would like to)\s+)"
            r"unsub(?:scribe)?\b",
            r"\bunsubscribe (?:me|us|this number)\b",
            # "I'm opting out", "opt me out", "I already opted out"
            r"\bopt(?:ing|ed)?\s+(?:me\s+|us\s+)?out\b",
            # "I revoke my consent", "withdraw my permission"
            r"\b(?:revoke|revoking|withdraw|withdrawing|rescind|retract|take back)\s+"
            r"(?:my\s+|all\s+|any\s+)?(?:consent|permission|opt-?in|authori[sz]ation|agreement)",
            # "cancel the texts" ("cancel the call" is a demo)
            r"\bcancel\s+(?:the\s+|my\s+|these\s+|all\s+|your\s+|those\s+)?(?:\w+\s+)?"
            rf"(?!call\b){_SENT}\b",
            r"\bleave me alone\b|\bwrong (?:number|person)\b",
            r"\b(?:lose|delete|forget|erase) (?:my|this) (?:number|phone number|e-?mail)\b",
            # "don't want these any more", "no longer need them"
            r"\b(?:don'?t|do not|no longer)\s+(?:want|need)\s+(?:these|those|them|this|it"
            r"|any of (?:this|these|it))\s+(?:any ?more|no more)\b",
        ]
    )
)
# "how many times do I have to say stop", "I said stop": a request even as a question.
_SAID_STOP = re.compile(
    r"\b(?:said|say|told you|tell you|asked you|replied|reply|texted|sent|typed|wrote)\s+"
    r"(?:to\s+)?st[o0]p\b"
)
# Words that take the request back: "I never said stop", "don't take me off the list",
# "I don't want the texts to stop".
_TAKEN_BACK = re.compile(
    r"\b(?:never|didn'?t|did not) (?:said|say|asked|told)\b"
    r"|\b(?:don'?t|do not|never|not)\s+(?:\w+\s+)?(?:take|get|remove|delete|drop|unsubscrib\w*)"
    r"\s+(?:me|us|my|this)\b"
    r"|\b(?:don'?t|do not|never) (?:want|need|wish) (?:\w+ ){0,3}to (?:st[o0]p|end|cease)\b"
)
# A question about opting out, not a request: "how do I opt out?", "can agents opt out
# of shifts?"; but "can you stop texting me?" asks us to stop.
_QUESTION = re.compile(
    r"^(?:how|what|when|where|which|who|is|are|am|if|whether)\b"
    r"|^(?:can|could|will|would|do|does|did|should|may|might)\s+(?!you\b|u\b|ya\b|not\b)"
)
# What a question about our messages names; one that names none of it asks no opt-out.
_ABOUT_MESSAGES = re.compile(
    rf"{_SENT}|{_SEND}|\blists?\b|unsub|subscri|\bopt|consent|permission|\bst[o0]p|alone"
    r"|number\b"
)

# A request for a person: "I want a real person", "get me a human", "human being needed".
_PERSON = (
    r"(?:(?:real|actual|live|human|proper)\s+)?(?:person|human|human being|agent|someone|somebody"
    r"|rep|representative|operator|staff|man|woman|people)"
)
_HANDOFF = re.compile(
    r"\b(?:want|need|get me|give me|connect me|put me through|transfer me|let me"
    r"|(?:speak|talk|chat) (?:to|with)|i'd like|i would like|prefer)\s+(?:to\s+)?"
    r"(?:(?:speak|talk|chat) (?:to|with)\s+)?(?:a |an |some |to |with )?"
    + _PERSON
    + r"\b"
    + r"|\b(?:real|actual|live) (?:person|human)\s+(?:please|pls|plz|now|needed|asap)\b"
    r"|\b(?:human being|a human|real person|an agent)\s+(?:needed|required|please|pls|plz|now)\b"
)
# "I'd rather not speak to a person", "no, I don't need a human"; but "I don't want to
# talk to a machine" asks for one.
_NOT_HANDOFF = re.compile(
    r"\b(?:not|don'?t|doesn'?t|won'?t|wouldn'?t|never|no need to|no need for)\s+"
    r"(?:\w+\s+){0,2}?(?:(?:speak|talk|chat)\s+(?:to|with)|want|need|require)\s+"
    r"(?:to\s+(?:speak|talk|chat)\s+(?:to|with)\s+)?(?:a |an |some |the )?(?:real |actual |live )?"
    r"(?:person|human|someone|somebody|agent|rep|representative|people|staff)\b"
)
_NOT_THE_BOT = re.compile(
    r"\b(?:don'?t|do not|not|no more|done|tired of|sick of|fed up with|enough of)\s+"
    r"(?:\w+\s+){0,3}?(?:talk|talking|speak|speaking|chat|chatting)\s+(?:to|with)\s+"
    r"(?:a |this |the |your |some )?(?:stupid |dumb |damn )?(?:bot|robot|machine|computer|ai)\b"
)
# What DIET may have heard instead of a request for a person said as a complaint.
_HANDOFF_NEIGHBOURS = frozenset({"bot_challenge", "nlu_fallback", "out_of_scope", "deny", ""})


def asks_to_opt_out(text: str) -> bool:
    """Whether `text` requests that we stop contacting the person."""
    words = plain_words(text)
    if _TAKEN_BACK.search(words) or about_something_else(text):
        return False
    return bool(_SAID_STOP.search(words)) or (
        bool(_OPT_OUT.search(words)) and not _QUESTION.search(words)
    )


def cannot_be_opt_out(text: str) -> bool:
    """Whether `text` is a question naming nothing about messages, lists or stopping."""
    return text.strip().endswith("?") and not _ABOUT_MESSAGES.search(plain_words(text))


@dataclass(frozen=True)
class Reading:
    """What a message is read as: `intent` ("" for DIET's next best), and whether the
    grammar heard the request itself (`sure`: then whatever DIET's confidence)."""

    intent: str
    sure: bool = False


def reading(text: str, intent: str) -> Reading:
    """How a message DIET read as `intent` is read."""
    if intent == "ask_opt_out" and text.strip().endswith("?"):
        return Reading(intent)
    if asks_to_opt_out(text):
        return Reading("opt_out", sure=True)
    if intent not in ("stop", "opt_out") and no_object_stop(text):
        return Reading("stop", sure=True)  # "stahp": action_opt_out decides (outside a form)
    if intent == "opt_out" and cannot_be_opt_out(text):
        return Reading("")
    words = plain_words(text)
    if _NOT_HANDOFF.search(words):
        return Reading("" if intent == "human_handoff" else intent)  # "rather not speak to…"
    asks = _HANDOFF.search(words) or _NOT_THE_BOT.search(words)
    if intent in _HANDOFF_NEIGHBOURS | {"human_handoff"} and asks:
        return Reading("human_handoff", sure=True)
    return Reading(intent)


def intent_for(text: str, intent: str) -> str:
    """The intent a message DIET read as `intent` is read as."""
    return reading(text, intent).intent


@DefaultV1Recipe.register([DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER], is_trainable=False)
class ClearRequests(GraphComponent):
    """After DIET, before the FallbackClassifier (config.yml): see the module's doc."""

    @classmethod
    def create(
        cls,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> ClearRequests:
        return cls()

    def process(self, messages: list[Message]) -> list[Message]:
        for message in messages:
            predicted = message.get(INTENT) or {}
            said = str(predicted.get("name") or "")
            read = reading(str(message.get(TEXT) or ""), said)
            if read.intent != said or read.sure:
                _reclassify(message, said, read.intent)
        return messages


def _reclassify(message: Message, said: str, meant: str) -> None:
    """Makes `meant` the intent, sure; with no `meant`, DIET's next best instead."""
    ranking = [r for r in message.get(INTENT_RANKING_KEY) or [] if r.get("name") != said]
    if meant:
        ranking = [{"name": meant, "confidence": 1.0}] + [
            r for r in ranking if r.get("name") != meant
        ]
    chosen = ranking[0] if ranking else {"name": None, "confidence": 0.0}
    message.set(INTENT, dict(chosen), add_to_output=True)
    message.set(INTENT_RANKING_KEY, ranking, add_to_output=True)
