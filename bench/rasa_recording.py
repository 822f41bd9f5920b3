"""Rasa's side of follow-ups: how many a Rasa server records a second. Before a batch
of follow-ups is sent, the scheduler appends them to the people's conversations in one
request to the bot's batch endpoint (channels.conversation_batch); the sequences
benchmark stubs it, so this one measures the real thing on the Rasa server of one
`parley run` (SQLite tracker store, the conversation-events broker on), into
conversations that exist. Side by side: the same follow-ups one request each through
Rasa's own tracker-events endpoint, 16 at once (how web follow-ups are recorded).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field

from backend.conversations.rasa_client import FollowUpRecord, RasaClient
from bench.backend import p99
from bench.sms import running_parley

RASA_TOKEN = "bench-rasa-token"  # noqa: S105 (a throwaway token for a loopback run)
FOLLOW_UP = "Want a 30-minute walkthrough? Reply YES."


@dataclass
class RecordingMeasured:
    how: str
    follow_ups: int
    concurrency: int
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.follow_ups / self.seconds if self.seconds else 0.0


# The scheduler's batch (PARLEY_SCHEDULER_BATCH), and two workers' batches at once.
BATCH = 100
BATCHES_AT_ONCE = 2
BATCHED = 1_000  # follow-ups recorded in batches: ten of them


async def bench_rasa_recording(
    follow_ups: int = 400, concurrency: int = 16
) -> list[RecordingMeasured]:
    async with running_parley("parley-bench-rasa-", {"PARLEY_RASA_TOKEN": RASA_TOKEN}) as ports:
        rasa = f"http://127.0.0.1:{ports['RASA']}"
        one_by_one = await _record(rasa, follow_ups, concurrency)
        batched = await _record_batched(rasa, BATCHED)
    return [batched, one_by_one]


async def _record_batched(rasa: str, follow_ups: int) -> RecordingMeasured:
    """Follow-ups recorded as the scheduler records them: a batch a request."""
    client = RasaClient(rasa, RASA_TOKEN)
    how = f"batches of {BATCH}, {BATCHES_AT_ONCE} at once"
    result = RecordingMeasured(how, follow_ups, BATCHES_AT_ONCE)
    gate = asyncio.Semaphore(BATCHES_AT_ONCE)

    async def batch(first: int, latencies: list[float]) -> None:
        async with gate:
            started = time.perf_counter()
            failed = await client.record_follow_ups(
                [
                    FollowUpRecord(f"+1415555{i:04d}", FOLLOW_UP, "demo", {})
                    for i in range(first, min(first + BATCH, follow_ups))
                ]
            )
            if failed:
                raise RuntimeError(f"Rasa did not record {len(failed)}: {failed}")
            latencies.append((time.perf_counter() - started) * 1000)

    try:
        # Other conversations than the one-by-one run's, created first as well.
        await asyncio.gather(*(batch(i, []) for i in range(0, follow_ups, BATCH)))
        started = time.perf_counter()
        await asyncio.gather(*(batch(i, result.latencies_ms) for i in range(0, follow_ups, BATCH)))
        result.seconds = time.perf_counter() - started
    finally:
        await client.close()
    return result


async def _record(rasa: str, follow_ups: int, concurrency: int) -> RecordingMeasured:
    client = RasaClient(rasa, RASA_TOKEN)
    result = RecordingMeasured(f"one a request, {concurrency} at once", follow_ups, concurrency)
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int, latencies: list[float]) -> None:
        async with gate:
            started = time.perf_counter()
            await client.record_follow_up(f"+1415555{index:04d}", FOLLOW_UP, "demo", {})
            latencies.append((time.perf_counter() - started) * 1000)

    try:
        # The usual case is a person who chatted before: create the conversations first.
        await asyncio.gather(*(one(index, []) for index in range(follow_ups)))
        started = time.perf_counter()
        await asyncio.gather(*(one(index, result.latencies_ms) for index in range(follow_ups)))
        result.seconds = time.perf_counter() - started
    finally:
        await client.close()
    return result


def recording_table(results: list[RecordingMeasured], machine_line: str) -> str:
    columns = [r.how for r in results]
    batched = results[0]

    def row(label: str, cells: list[str]) -> str:
        return f"| {label} | " + " | ".join(cells) + " |"

    return "\n".join(
        [
            "## Rasa's side of follow-ups: recording them in the conversation",
            "",
            f"Machine: {machine_line}.",
            "",
            f"Load: {batched.follow_ups:,} follow-ups (in batches) and "
            f"{results[-1].follow_ups:,} (one a request) recorded into existing conversations "
            "of one Rasa server (`parley run`: the SQL tracker store on SQLite, the conversation-events "
            "broker on), each as the scheduler records it before sending: "
            "`action_follow_up`, the text, the `follow_up` slot. Side by side: a batch a "
            "request through the bot's batch endpoint (how the scheduler records texts and "
            "calls), and one a request through Rasa's tracker-events endpoint (how it "
            "records web follow-ups, which are pushed to an open page).",
            "",
            "| Measure | " + " | ".join(columns) + " |",
            "|---|" + "---|" * len(columns),
            row("follow-ups recorded per second", [f"{r.per_second:.1f}" for r in results]),
            row(
                "latency of a request, median / p99",
                [
                    f"{statistics.median(r.latencies_ms):.0f} ms / {p99(r.latencies_ms):.0f} ms"
                    for r in results
                ],
            ),
            "",
            "Every follow-up is recorded before it is sent, so one Rasa server caps the "
            f"follow-ups a second at about {batched.per_second:.0f}, whatever the workers "
            "manage; add Rasa replicas (the scale profile runs two, on PostgreSQL) to "
            "raise it.",
        ]
    )
