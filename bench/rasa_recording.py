"""Rasa's side of follow-ups: how many a Rasa server records a second. Before each
follow-up is sent, the scheduler appends it to the person's conversation through Rasa's
HTTP API (`RasaClient.record_follow_up`); the sequences benchmark stubs that endpoint, so
this one measures the real thing, on the Rasa server of one `parley run` (SQLite
tracker store, the conversation-events broker on), into conversations that exist.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field

from backend.rasa_client import RasaClient
from bench.backend import p99
from bench.sms import running_parley

RASA_TOKEN = "bench-rasa-token"  # noqa: S105 (a throwaway token for a loopback run)


@dataclass
class RecordingMeasured:
    follow_ups: int
    concurrency: int
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.follow_ups / self.seconds if self.seconds else 0.0


async def bench_rasa_recording(follow_ups: int = 400, concurrency: int = 16) -> RecordingMeasured:
    async with running_parley("parley-bench-rasa-", {"PARLEY_RASA_TOKEN": RASA_TOKEN}) as ports:
        return await _record(f"http://127.0.0.1:{ports['RASA']}", follow_ups, concurrency)


async def _record(rasa: str, follow_ups: int, concurrency: int) -> RecordingMeasured:
    client = RasaClient(rasa, RASA_TOKEN)
    result = RecordingMeasured(follow_ups, concurrency)
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int, latencies: list[float]) -> None:
        async with gate:
            started = time.perf_counter()
            await client.record_follow_up(
                f"+1415555{index:04d}", "Want a 30-minute walkthrough? Reply YES.", "demo", {}
            )
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


def recording_table(result: RecordingMeasured, machine_line: str) -> str:
    latencies = result.latencies_ms
    return "\n".join(
        [
            "## Rasa's side of follow-ups: recording them in the conversation",
            "",
            f"Machine: {machine_line}.",
            "",
            f"Load: {result.follow_ups:,} follow-ups recorded, {result.concurrency} at once, "
            "into existing conversations of one Rasa server (`parley run`: SQLite tracker "
            "store, the conversation-events broker on), each as the scheduler records it "
            "before sending: `action_follow_up`, the text, the `follow_up` slot.",
            "",
            "| Measure | Result |",
            "|---|---|",
            f"| follow-ups recorded per second | {result.per_second:.1f} |",
            f"| latency median / p99 | {statistics.median(latencies):.0f} ms / "
            f"{p99(latencies):.0f} ms |",
            "",
            "Every follow-up is recorded before it is sent, so one Rasa server caps the "
            f"follow-ups a second at about {result.per_second:.0f}, whatever the workers "
            "manage; add Rasa replicas (the scale profile runs two, on PostgreSQL) to "
            "raise it.",
        ]
    )
