"""Scores the trained model on the held-out NLU test set (tests/nlu), the way the bot
hears people: every entity extractor counts, the EntityRuler's included.

`rasa test nlu` leaves SpacyEntityExtractor (our catalog, e-mail, phone and URL
patterns) out of its entity scores, so this evaluation parses each example with the
model and compares:
- intents: macro-averaged F1 over the intents in the test set (a retrieval intent such
  as faq/pricing counts as its intent, `faq`; the answer is scored separately, as the
  bot gives it: right when the question is read as `faq` and gets its own answer, since
  a question read as anything else gets no FAQ answer at all);
- entities: micro-averaged F1 over exact (entity, start, end) spans of what the person
  named; the products a question is about (`product` entities in a role, added by
  bot/product_questions.py) are a reading of those, tested in
  tests/bot/test_product_questions.py.

It also scores the intents with legal weight on their own held-out sets
(tests/nlu/legal/*.yml: `intent`, `means` and `not`, near misses that must not be taken
for it): per file, the missed rate (`means` the bot does not act on as that intent) and
the false rate (`not` it does act on), each with its maximum (LEGAL_GATES).

Run by `parley test nlu`; exits 1 when a score is below its minimum or a legal rate is
above its maximum.
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


@dataclass(frozen=True)
class LegalGate:
    """The highest missed and false rates allowed for an intent with legal weight.
    `never`: intents the bot must never act on for a `means` sentence, whatever the
    rates (a refusal taken for a yes would record a consent that was refused)."""

    max_missed: float
    max_false: float
    never: tuple[str, ...] = ()


# Opt-outs: the levels (tests/nlu/README.md says why). The others: what protects
# people is strict (nobody is signed up on words that are not a clear yes, no refusal
# is ever taken for one); the rest is set just above what the model reaches, so that a
# change that makes it worse fails.
LEGAL_GATES = {
    "opt_out": LegalGate(max_missed=0.02, max_false=0.0),
    "human_handoff": LegalGate(max_missed=0.05, max_false=0.10),
    "affirm": LegalGate(max_missed=0.15, max_false=0.0),
    "deny": LegalGate(max_missed=0.05, max_false=0.25, never=("affirm",)),
}


@dataclass
class LegalScores:
    """One file of tests/nlu/legal: how often the bot fails to act on the intent
    (`missed`, of the `means` sentences) and acts on it wrongly (`false`, of `not`)."""

    file: str
    intent: str
    means: int = 0
    missed: int = 0
    missed_rate: float = 0.0
    max_missed: float = 0.0
    near_misses: int = 0
    false: int = 0
    false_rate: float = 0.0
    max_false: float = 0.0
    never: list[str] = field(default_factory=list)
    taken_for_never: int = 0
    missed_examples: list[dict[str, str]] = field(default_factory=list)
    false_examples: list[dict[str, str]] = field(default_factory=list)
    passed: bool = False


@dataclass
class Scores:
    examples: int = 0
    intent_macro_f1: float = 0.0
    entity_f1: float = 0.0
    entity_precision: float = 0.0
    entity_recall: float = 0.0
    faq_answer_accuracy: float | None = None
    faq_questions: int = 0
    faq_read_as_faq: int = 0
    faq_answered_right: int = 0
    intent_f1: dict[str, float] = field(default_factory=dict)
    intent_errors: list[dict[str, str]] = field(default_factory=list)
    entity_errors: list[dict[str, Any]] = field(default_factory=list)
    legal: list[LegalScores] = field(default_factory=list)


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
    return {(e["entity"], int(e["start"]), int(e["end"])) for e in entities if not e.get("role")}


def test_examples(data: Path) -> list[Any]:
    """The examples of every YAML file in `data` (its README is not data)."""
    from rasa.shared.nlu.training_data.loading import load_data

    return [e for path in sorted(data.glob("*.yml")) for e in load_data(str(path)).intent_examples]


async def evaluate(agent: Any, examples: list[Any]) -> Scores:
    scores = Scores(examples=len(examples))
    pairs: list[tuple[str, str]] = []
    counts: Counter[str] = Counter()
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
            scores.faq_questions += 1
            scores.faq_read_as_faq += predicted == gold_intent
            selected = (parsed.get("response_selector") or {}).get(gold_intent, {})
            chosen = (selected.get("response") or {}).get("intent_response_key")
            scores.faq_answered_right += predicted == gold_intent and chosen == gold_key
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
    if scores.faq_questions:
        scores.faq_answer_accuracy = scores.faq_answered_right / scores.faq_questions
    return scores


# -- intents with legal weight -------------------------------------------------------------


def acts_as(intent: str, predicted: str, text: str) -> bool:
    """Whether the bot acts on a message parsed as `predicted` as it acts on `intent`,
    where the legal sets are about (data/rules/consent.yml, actions/consent.py):
    - outside a form, a `stop` is an opt-out when it names nothing to stop or is about
      our messages (`stop_is_opt_out`); words about something else than the person's
      own messages withdraw nothing, whatever the intent (`about_something_else`);
    - in reply to the consent question, only a clear yes records consent (`clear_yes`:
      "yes but not at that number" is asked again); an opt-out is a no there too, and so
      is passing on the question (`skip`)."""
    from bot.consent_words import about_something_else, clear_yes, stop_is_opt_out

    withdraws = (
        predicted == "opt_out" or (predicted == "stop" and stop_is_opt_out(text))
    ) and not about_something_else(text)
    if intent == "opt_out":
        return withdraws
    if intent == "affirm":
        return predicted == "affirm" and clear_yes(text)
    if intent == "deny":
        return predicted in ("deny", "skip") or withdraws
    return predicted == intent


@dataclass(frozen=True)
class LegalSet:
    """A file of tests/nlu/legal: the intent, what means it and the near misses."""

    file: str
    intent: str
    means: list[str]
    near_misses: list[str]


def legal_sets(folder: Path) -> list[LegalSet]:
    import yaml

    sets = []
    for path in sorted(folder.glob("*.yml")):
        document = yaml.safe_load(path.read_text())
        sets.append(
            LegalSet(
                file=path.name,
                intent=str(document["intent"]),
                means=[str(text) for text in document.get("means") or []],
                near_misses=[str(text) for text in document.get("not") or []],
            )
        )
    return sets


def score_legal(legal: LegalSet, predicted: dict[str, str]) -> LegalScores:
    """Missed and false rates of one legal set, given each sentence's predicted intent."""
    # An intent without a gate of its own must be perfect.
    gate = LEGAL_GATES.get(legal.intent, LegalGate(max_missed=0.0, max_false=0.0))
    scores = LegalScores(
        file=legal.file,
        intent=legal.intent,
        means=len(legal.means),
        max_missed=gate.max_missed,
        near_misses=len(legal.near_misses),
        max_false=gate.max_false,
        never=list(gate.never),
    )
    for text in legal.means:
        if not acts_as(legal.intent, predicted[text], text):
            scores.missed_examples.append({"text": text, "predicted": predicted[text]})
        if any(acts_as(never, predicted[text], text) for never in gate.never):
            scores.taken_for_never += 1
    for text in legal.near_misses:
        if acts_as(legal.intent, predicted[text], text):
            scores.false_examples.append({"text": text, "predicted": predicted[text]})
    scores.missed, scores.false = len(scores.missed_examples), len(scores.false_examples)
    scores.missed_rate = scores.missed / scores.means if scores.means else 0.0
    scores.false_rate = scores.false / scores.near_misses if scores.near_misses else 0.0
    scores.passed = (
        scores.missed_rate <= gate.max_missed + 1e-9
        and scores.false_rate <= gate.max_false + 1e-9
        and scores.taken_for_never == 0
    )
    return scores


async def evaluate_legal(agent: Any, sets: list[LegalSet]) -> list[LegalScores]:
    results = []
    for legal in sets:
        predicted = {}
        for text in [*legal.means, *legal.near_misses]:
            parsed = await agent.parse_message(text)
            predicted[text] = (parsed.get("intent") or {}).get("name") or ""
        results.append(score_legal(legal, predicted))
    return results


def legal_summary(scores: LegalScores) -> str:
    def rate(count: int, total: int, value: float, maximum: float) -> str:
        return f"{100 * value:.1f} % ({count}/{total}, max {100 * maximum:.1f} %)"

    missed = rate(scores.missed, scores.means, scores.missed_rate, scores.max_missed)
    false = rate(scores.false, scores.near_misses, scores.false_rate, scores.max_false)
    line = f"{scores.intent:<14} missed {missed}, false {false}"
    if scores.never:
        line += f", taken for {'/'.join(scores.never)}: {scores.taken_for_never} (max 0)"
    return line + ("" if scores.passed else "  FAILED")


# -- the command ---------------------------------------------------------------------------


def say(line: str) -> None:
    sys.stdout.write(line + "\n")


async def evaluate_all(model: str, data: Path, legal: Path) -> Scores:
    from rasa.core.agent import Agent

    agent = Agent.load(model)
    scores = await evaluate(agent, test_examples(data))
    scores.legal = await evaluate_legal(agent, legal_sets(legal))
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--legal", type=Path, help="the legal sets (default: DATA/legal)")
    parser.add_argument("--min-intent-f1", type=float, default=0.90)
    parser.add_argument("--min-entity-f1", type=float, default=0.90)
    parser.add_argument("--report", type=Path, help="write every score and error here (JSON)")
    args = parser.parse_args(argv)

    data = Path(args.data)
    scores = asyncio.run(evaluate_all(args.model, data, args.legal or data / "legal"))
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(asdict(scores), indent=2))
    for error in scores.intent_errors:
        say(f"  intent: {error['text']!r}: expected {error['gold']}, got {error['predicted']}")
    for error in scores.entity_errors:
        say(f"  entities: {error['text']!r}: missed {error['missed']}, extra {error['extra']}")
    for legal in scores.legal:
        for example in legal.missed_examples:
            say(f"  {legal.intent} missed: {example['text']!r}: got {example['predicted']}")
        for example in legal.false_examples:
            say(f"  {legal.intent} false: {example['text']!r}: got {example['predicted']}")
    faq = scores.faq_answer_accuracy
    say(
        f"NLU test set ({scores.examples} examples): "
        f"intent macro-F1 {scores.intent_macro_f1:.3f} (minimum {args.min_intent_f1:.2f}), "
        f"entity F1 {scores.entity_f1:.3f} (minimum {args.min_entity_f1:.2f}; "
        f"precision {scores.entity_precision:.3f}, recall {scores.entity_recall:.3f})"
        + (
            f", FAQ answers right {faq:.3f} ({scores.faq_answered_right} of "
            f"{scores.faq_questions} FAQ questions; of the {scores.faq_read_as_faq} read as faq, "
            f"{scores.faq_answered_right})"
            if faq is not None
            else ""
        )
    )
    if scores.legal:
        say("Intents with legal weight (tests/nlu/legal; as the bot acts outside a form):")
        for legal in scores.legal:
            say(f"  {legal_summary(legal)}")
    low = [
        name
        for name, value, minimum in (
            ("intent macro-F1", scores.intent_macro_f1, args.min_intent_f1),
            ("entity F1", scores.entity_f1, args.min_entity_f1),
        )
        if value < minimum
    ] + [f"{legal.intent} ({legal.file})" for legal in scores.legal if not legal.passed]
    if low:
        say(f"below the minimum or above the maximum: {', '.join(low)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
