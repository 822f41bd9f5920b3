"""The two-stage fallback: rephrase, then offer a person."""

from __future__ import annotations

from typing import Any

from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.fallback import ActionFallback
from tests.bot.fakes import bot_said, conversation, person_said

SENDER = "web-fallback-1"


# -- fallback ----------------------------------------------------------------------------


async def fallback(before: list[dict[str, Any]], text: str = "blorp zzz") -> list[Any]:
    tracker = conversation(SENDER, text, "nlu_fallback", before=before)
    return await ActionFallback().run(CollectingDispatcher(), tracker, {})


async def test_a_first_misunderstanding_asks_to_rephrase() -> None:
    assert await fallback([]) == [SlotSet("fallback", "rephrase")]


async def test_a_misunderstanding_after_an_understood_message_asks_to_rephrase() -> None:
    before = [
        person_said("gibberish", "nlu_fallback"),
        bot_said("Sorry, I didn't get that. Could you say it another way?"),
        person_said("how much is the team plan", "ask_price"),
        bot_said("Team is $35 per agent per month."),
    ]
    assert await fallback(before) == [SlotSet("fallback", "rephrase")]


async def test_a_second_misunderstanding_in_a_row_offers_a_person() -> None:
    before = [
        person_said("hi", "greet"),
        bot_said("Hi! I'm the Brightdesk assistant."),
        person_said("qwfp arst", "nlu_fallback"),
        {"event": "action", "name": "action_fallback"},
        {"event": "slot", "name": "fallback", "value": "rephrase"},
        bot_said("Sorry, I didn't get that. Could you say it another way?"),
        {"event": "action", "name": "action_listen"},
    ]
    assert await fallback(before) == [SlotSet("fallback", "offer_person")]


async def test_more_misunderstandings_keep_offering_a_person() -> None:
    before = [
        person_said("?", "nlu_fallback"),
        bot_said("Sorry, could you say it another way?"),
        person_said("??", "nlu_fallback"),
        bot_said("Would you like to talk to a person?"),
    ]
    assert await fallback(before) == [SlotSet("fallback", "offer_person")]
