"""Rasa's model runs beside the event loop, so the server keeps answering (webhooks
included) while the model thinks."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace
from typing import Any

from rasa.core.channels.channel import UserMessage
from rasa.core.processor import MessageProcessor
from rasa.shared.nlu.training_data.message import Message

from bot import model_thread


class SlowModel:
    """A graph runner that thinks until told to stop, noting the thread it ran on."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.thread: threading.Thread | None = None

    def run(self, inputs: dict[str, Any], targets: list[str]) -> dict[str, Any]:
        self.thread = threading.current_thread()
        assert self.release.wait(10), "the test never released the model"
        parsed = Message(data={"text": "hi"})
        parsed.set("intent", {"name": "greet", "confidence": 0.9}, add_to_output=True)
        return {targets[0]: [parsed]}


async def test_the_event_loop_keeps_serving_while_the_model_parses() -> None:
    model_thread.install()
    processor = object.__new__(MessageProcessor)
    model = SlowModel()
    processor.http_interpreter = None
    processor.graph_runner = model
    processor.model_metadata = SimpleNamespace(nlu_target="nlu")
    processor.domain = None

    parsing = asyncio.create_task(processor.parse_message(UserMessage("hi", sender_id="s")))
    # While the model is busy, other work on the loop (a webhook's answer) still runs.
    answered = await asyncio.wait_for(asyncio.sleep(0.05, result="answered"), timeout=1)
    assert answered == "answered" and not parsing.done()

    model.release.set()
    parse_data = await parsing
    assert parse_data["intent"]["name"] == "greet"
    assert model.thread is not None and model.thread is not threading.main_thread()
