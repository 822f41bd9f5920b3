"""Tests on the trained model (`parley test serving`, after `parley train`): the model
file comes as `--model`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from rasa.core.agent import Agent
from rasa.core.test import _create_data_generator
from rasa.shared.core.events import ActionExecuted
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.utils.tensorflow.models import RasaModel

from bot import model_loading

ROOT = Path(__file__).resolve().parents[2]


def pytest_configure(config: pytest.Config) -> None:
    # Rasa logs every parse and prediction at debug level through structlog: hundreds
    # of lines per test here, none of them a finding.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--model", help="the trained model (models/parley-*.tar.gz)")


@pytest.fixture(scope="session")
def model_path(request: pytest.FixtureRequest) -> Path:
    given = request.config.getoption("--model")
    if not given or not Path(given).is_file():
        raise pytest.UsageError("give the trained model: --model models/parley-<hash>.tar.gz")
    return Path(given)


@pytest.fixture(scope="session")
def agents(model_path: Path) -> Iterator[tuple[Agent, Agent]]:
    """The model loaded by Rasa's own loader, and as Parley serves it."""
    rasas = Agent.load(str(model_path))
    model_loading.install()
    try:
        parleys = Agent.load(str(model_path))
    finally:
        RasaModel.load = classmethod(model_loading.RASAS_LOAD)
    yield rasas, parleys


def story_steps(
    agent: Agent, stories: Path = ROOT / "tests" / "stories"
) -> Iterator[tuple[str, DialogueStateTracker]]:
    """Every point of every story in `stories` (default: the test stories) where the
    bot acts next: the conversation so far, as `rasa test core` replays it."""
    generator = _create_data_generator(str(stories), agent)
    slots = agent.domain.slots if agent.domain else []
    for story in generator.generate_story_trackers():
        events = list(story.events)
        for index, event in enumerate(events[1:], start=1):
            if isinstance(event, ActionExecuted):
                yield (
                    f"{story.sender_id} step {index}",
                    DialogueStateTracker.from_events(story.sender_id, events[:index], slots),
                )


def parse_all(agent: Agent, messages: list[str]) -> list[dict[str, Any]]:
    """Each message as `agent` parses it, one after another."""

    async def go() -> list[dict[str, Any]]:
        return [await agent.parse_message(message) for message in messages]

    return asyncio.run(go())
