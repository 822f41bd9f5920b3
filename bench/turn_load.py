"""The load generator of bench/turns.py, run as its own process so that its work never
shares a core's time slice accounting with the server it measures.

    python -m bench.turn_load URL SCRIPT --conversations 16 --prefix run3

Each conversation sends the script's messages one after another through Rasa's REST
channel (POST {"sender", "message"}), each once the reply to the one before has come;
`--conversations` of them run at once. Prints one JSON line: every turn's latency in
milliseconds, the wall time, and the turns that failed (not 200, or no reply at all).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import aiohttp

# Messages each bot was trained for. Stock: the `rasa init` (moodbot) project. Parley:
# the session start and greeting with the backend's lookup and remembering a name (custom
# actions), and the catalog's price and comparison (custom actions until 2026-12-06, now
# read in Rasa's process: bot/product_questions.py). The same messages in every run.
SCRIPTS = {
    "stock": ["hello", "I am sad", "yes", "great", "bye"],
    "parley": [
        "hi",
        "my name is Dana",
        "how much does the Team plan cost",
        "compare Starter and Team",
        "bye",
    ],
}


async def conversation(
    http: aiohttp.ClientSession,
    url: str,
    sender: str,
    messages: list[str],
    out: dict[str, list[Any]],
) -> None:
    for message in messages:
        started = time.perf_counter()
        try:
            async with http.post(url, json={"sender": sender, "message": message}) as response:
                body = await response.json(content_type=None) if response.status == 200 else None
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as error:
            out["failed"].append(f"{sender}: {message!r}: {error!r}")
            continue
        elapsed = (time.perf_counter() - started) * 1000
        if not isinstance(body, list) or not body:
            out["failed"].append(f"{sender}: {message!r}: status {response.status}, {body!r}")
            continue
        out["latencies_ms"].append(elapsed)


async def load(url: str, script: str, conversations: int, prefix: str) -> dict[str, object]:
    out: dict[str, list[Any]] = {"latencies_ms": [], "failed": []}
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=conversations)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
        started = time.perf_counter()
        await asyncio.gather(
            *(
                conversation(http, url, f"{prefix}-{n}", SCRIPTS[script], out)
                for n in range(conversations)
            )
        )
        elapsed = time.perf_counter() - started
    return {**out, "seconds": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.turn_load")
    parser.add_argument("url", help="Rasa's REST webhook")
    parser.add_argument("script", choices=sorted(SCRIPTS))
    parser.add_argument("--conversations", type=int, default=1)
    parser.add_argument("--sequential", type=int, default=1, help="conversations one after another")
    parser.add_argument("--prefix", default="bench")
    args = parser.parse_args()

    async def run() -> dict[str, object]:
        merged: dict[str, object] = {"latencies_ms": [], "failed": [], "seconds": 0.0}
        for n in range(args.sequential):
            one = await load(args.url, args.script, args.conversations, f"{args.prefix}-{n}")
            merged["latencies_ms"] += one["latencies_ms"]  # type: ignore[operator]
            merged["failed"] += one["failed"]  # type: ignore[operator]
            merged["seconds"] += one["seconds"]  # type: ignore[operator]
        return merged

    print(json.dumps(asyncio.run(run())))


if __name__ == "__main__":
    main()
