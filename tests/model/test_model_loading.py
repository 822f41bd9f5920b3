"""The model as Parley serves it (bot/model_loading.py: loaded without a training step)
predicts exactly what Rasa's own loader makes it predict: every message of the held-out
NLU test set parsed the same (intents and their confidences, entities, the FAQ answer),
and every step of every test story given the same action probabilities."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rasa.core.agent import Agent

from tests.model.conftest import parse_all, story_steps

ROOT = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-5


def held_out_messages() -> list[str]:
    messages: list[str] = []
    for path in sorted((ROOT / "tests" / "nlu").rglob("*.yml")):
        for item in yaml.safe_load(path.read_text(encoding="utf-8")).get("nlu", []):
            for line in str(item.get("examples", "")).splitlines():
                if line.strip().startswith("- "):
                    messages.append(line.strip()[2:])
    return messages


def comparable(parsed: dict[str, Any]) -> dict[str, Any]:
    faq = (parsed.get("response_selector") or {}).get("faq", {})
    return {
        "intent": parsed["intent"].get("name"),
        "ranking": [(i["name"], i["confidence"]) for i in parsed.get("intent_ranking", [])],
        "entities": [
            (e["entity"], e.get("value"), e.get("start"), e.get("end"), e.get("extractor"))
            for e in parsed.get("entities", [])
        ],
        "faq": (faq.get("response") or {}).get("intent_response_key"),
        "faq_ranking": [
            (r["intent_response_key"], r["confidence"]) for r in faq.get("ranking", [])
        ],
    }


def assert_same(rasas: dict[str, Any], parleys: dict[str, Any], message: str) -> None:
    assert rasas["intent"] == parleys["intent"], message
    assert rasas["entities"] == parleys["entities"], message
    assert rasas["faq"] == parleys["faq"], message
    for key in ("ranking", "faq_ranking"):
        assert [n for n, _ in rasas[key]] == [n for n, _ in parleys[key]], (message, key)
        np.testing.assert_allclose(
            [c for _, c in rasas[key]], [c for _, c in parleys[key]], atol=TOLERANCE,
            err_msg=f"{message}: {key}",
        )  # fmt: skip


def test_every_held_out_message_is_parsed_the_same(agents: tuple[Agent, Agent]) -> None:
    rasas, parleys = agents
    messages = held_out_messages()
    assert len(messages) > 300

    for message, a, b in zip(
        messages, parse_all(rasas, messages), parse_all(parleys, messages), strict=True
    ):
        assert_same(comparable(a), comparable(b), message)


def test_every_test_story_step_is_predicted_the_same(agents: tuple[Agent, Agent]) -> None:
    rasas, parleys = agents
    steps = 0
    for step, tracker in story_steps(rasas):
        a = rasas.processor._predict_next_with_tracker(tracker)
        b = parleys.processor._predict_next_with_tracker(tracker)
        assert a.policy_name == b.policy_name, step
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=TOLERANCE, err_msg=step)
        steps += 1
    assert steps > 100
