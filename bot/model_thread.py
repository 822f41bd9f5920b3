"""Rasa's model, run beside the event loop instead of inside it.

Rasa 3.6 calls its NLU pipeline and its dialogue policies synchronously from the event
loop: while the model thinks about one message, the whole server stands still, every
webhook included. On a busy bot that turns a 5 ms webhook answer into seconds, and
Twilio gives up on webhooks after 15 s. `install()` makes the processor's two model
calls (parsing a message, predicting the next action) run in one worker thread, so the
loop keeps answering while the model works. One thread: the model sees one call at a
time, as it did before, and the order of each conversation's steps is unchanged (Rasa's
lock store still serialises a conversation).

This replaces two methods of Rasa 3.6.21's `MessageProcessor` with copies that differ
only in awaiting the model call; `install()` refuses any other Rasa version.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import rasa
from rasa.core.channels.channel import OutputChannel, UserMessage
from rasa.core.processor import MessageProcessor
from rasa.exceptions import ActionLimitReached
from rasa.shared.core.trackers import DialogueStateTracker

logger = logging.getLogger(__name__)

RASA_VERSION = "3.6.21"
_model = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rasa-model")


async def parse_message(
    self: MessageProcessor,
    message: UserMessage,
    tracker: DialogueStateTracker | None = None,
    only_output_properties: bool = True,
) -> dict[str, Any]:
    if self.http_interpreter:
        parse_data = await self.http_interpreter.parse(message)
    else:
        if tracker is None:
            tracker = DialogueStateTracker.from_events(message.sender_id, [])
        parse_data = await asyncio.get_running_loop().run_in_executor(
            _model, self._parse_message_with_graph, message, tracker, only_output_properties
        )
    self._update_full_retrieval_intent(parse_data)
    logger.debug(
        "processor.message.parse text=%r intent=%s entities=%s",
        copy.deepcopy(parse_data["text"]), parse_data["intent"], parse_data["entities"],
    )  # fmt: skip
    self._check_for_unseen_features(parse_data)
    return dict(parse_data)


async def _run_prediction_loop(
    self: MessageProcessor, output_channel: OutputChannel, tracker: DialogueStateTracker
) -> None:
    loop = asyncio.get_running_loop()
    should_predict_another_action = True
    while should_predict_another_action and self._should_handle_message(tracker):
        try:
            action, prediction = await loop.run_in_executor(
                _model, self.predict_next_with_tracker_if_should, tracker
            )
        except ActionLimitReached:
            logger.warning(
                "Circuit breaker tripped. Stopped predicting more actions for sender '%s'.",
                tracker.sender_id,
            )
            if self.on_circuit_break:
                self.on_circuit_break(tracker, output_channel, self.nlg)
            break
        if prediction.is_end_to_end_prediction:
            tracker = await self.run_action_extract_slots(output_channel, tracker)
        should_predict_another_action = await self._run_action(
            action, tracker, output_channel, self.nlg, prediction
        )


def install() -> None:
    if rasa.__version__ != RASA_VERSION:
        raise RuntimeError(
            f"bot/model_thread.py copies parts of Rasa {RASA_VERSION}'s MessageProcessor; "
            f"this is Rasa {rasa.__version__}: compare the two methods and update the copies"
        )
    MessageProcessor.parse_message = parse_message
    MessageProcessor._run_prediction_loop = _run_prediction_loop
