"""Scores the trained model on the held-out NLU test set (tests/nlu), the way the bot
hears people: every entity extractor counts, the EntityRuler's included.

`rasa test nlu` leaves SpacyEntityExtractor (our catalog, e-mail, phone and URL
patterns) out of its entity scores, so this evaluation parses each example with the
model and compares:
- intents: macro-averaged F1 over the intents in the test set (a retrieval intent such
  as faq/pricing counts as its intent, `faq`; the chosen answer is scored separately);
- entities: micro-averaged F1 over exact (entity, start, end) spans.

Run by `parley test nlu`; exits 1 when a score is below its minimum.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

Span = tuple[str, int, int]


@dataclass
class Scores:
    examples: int = 0
    intent_macro_f1: float = 0.0
    entity_f1: float = 0.0
    entity_precision: float = 0.0
    entity_recall: float = 0.0
    faq_answer_accuracy: float | None = None
    intent_f1: dict[str, float] = field(default_factory=dict)
    intent_errors: list[dict[str, str]] = field(default_factory=list)
    entity_errors: list[dict[str, Any]] = field(default_factory=list)


def f1(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    both = precision + recall
    return precision, recall, (2 * precision * recall / both if both else 0.0)


def intent_scores(pairs: list[tuple[str, str]]) -> tuple[float, dict[str, float]]:
    """Macro F1 over the intents that occur in the test set (true labels)."""
    labels = sorted({gold for gold, _ in pairs})
    per_intent = {}
    for label in labels:
        tp = sum(1 for g, p in pairs if g == label and p == label)
        fp = sum(1 for g, p in pairs if g != label and p == label)
        fn = sum(1 for g, p in pairs if g == label and p != label)
        per_intent[label] = f1(tp, fp, fn)[2]
    return sum(per_intent.values()) / len(per_intent), per_intent


def spans(entities: list[dict[str, Any]]) -> set[Span]:
    return {(e["entity"], int(e["start"]), int(e["end"])) for e in entities}


def test_examples(data: Path) -> list[Any]:
    """The examples of every YAML file in `data` (its README is not data)."""
    from rasa.shared.nlu.training_data.loading import load_data

    return [e for path in sorted(data.glob("*.yml")) for e in load_data(str(path)).intent_examples]


async def evaluate(model: str, examples: list[Any]) -> Scores:
    from rasa.core.agent import Agent

    agent = Agent.load(model)
    scores = Scores(examples=len(examples))
    pairs: list[tuple[str, str]] = []
    counts: Counter[str] = Counter()
    faq_right = faq_total = 0
    for example in examples:
        text = example.get("text")
        gold_intent = example.get("intent")
        parsed = await agent.parse_message(text)
        predicted = (parsed.get("intent") or {}).get("name") or ""
        pairs.append((gold_intent, predicted))
        if predicted != gold_intent:
            scores.intent_errors.append({"text": text, "gold": gold_intent, "predicted": predicted})
        gold_key = example.get("intent_response_key")
        if gold_key and "/" in gold_key:
            faq_total += 1
            selected = (parsed.get("response_selector") or {}).get(gold_intent, {})
            chosen = (selected.get("response") or {}).get("intent_response_key")
            faq_right += chosen == gold_key
        gold, found = spans(example.get("entities") or []), spans(parsed.get("entities") or [])
        counts["tp"] += len(gold & found)
        counts["fp"] += len(found - gold)
        counts["fn"] += len(gold - found)
        if gold != found:
            scores.entity_errors.append(
                {"text": text, "missed": sorted(gold - found), "extra": sorted(found - gold)}
            )
    scores.intent_macro_f1, scores.intent_f1 = intent_scores(pairs)
    precision, recall, entity_f1 = f1(counts["tp"], counts["fp"], counts["fn"])
    scores.entity_precision, scores.entity_recall, scores.entity_f1 = precision, recall, entity_f1
    scores.faq_answer_accuracy = faq_right / faq_total if faq_total else None
    return scores


def say(line: str) -> None:
    sys.stdout.write(line + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--min-intent-f1", type=float, default=0.90)
    parser.add_argument("--min-entity-f1", type=float, default=0.90)
    parser.add_argument("--report", type=Path, help="write every score and error here (JSON)")
    args = parser.parse_args(argv)

    scores = asyncio.run(evaluate(args.model, test_examples(Path(args.data))))
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(asdict(scores), indent=2))
    for error in scores.intent_errors:
        say(f"  intent: {error['text']!r}: expected {error['gold']}, got {error['predicted']}")
    for error in scores.entity_errors:
        say(f"  entities: {error['text']!r}: missed {error['missed']}, extra {error['extra']}")
    faq = scores.faq_answer_accuracy
    say(
        f"NLU test set ({scores.examples} examples): "
        f"intent macro-F1 {scores.intent_macro_f1:.3f} (minimum {args.min_intent_f1:.2f}), "
        f"entity F1 {scores.entity_f1:.3f} (minimum {args.min_entity_f1:.2f}; "
        f"precision {scores.entity_precision:.3f}, recall {scores.entity_recall:.3f})"
        + (f", FAQ answer accuracy {faq:.3f}" if faq is not None else "")
    )
    low = [
        name
        for name, value, minimum in (
            ("intent macro-F1", scores.intent_macro_f1, args.min_intent_f1),
            ("entity F1", scores.entity_f1, args.min_entity_f1),
        )
        if value < minimum
    ]
    if low:
        say(f"below the minimum: {', '.join(low)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
