"""`make bench`: run the benchmarks and write docs/benchmarks.md."""

from __future__ import annotations

import argparse
import asyncio
import subprocess
from pathlib import Path

import asyncpg

from backend.core.settings import PROJECT_ROOT
from bench import backend, console, email, rasa_recording, scale, sequences, sms, turns
from bench.report import machine, write_section


def backend_table(results: list[backend.Measured], postgres_version: str) -> str:
    by = {r.database: r for r in results}
    names = list(results[0].counts)
    columns = [r.database for r in results]

    def row(label: str, cells: list[str], target: str = "") -> str:
        return f"| {label} | " + " | ".join(cells) + f" | {target} |"

    lines = [
        "## Backend: segments and event ingestion over 1,000,000 profiles",
        "",
        f"Machine: {machine({'PostgreSQL': postgres_version})}.",
        "",
        f"Data: {results[0].profiles:,} synthetic profiles (one identity each, plan and team size "
        f"attributes, consent for about a third), {results[0].events_loaded:,} events, loaded in "
        + ", ".join(f"{r.load_seconds:.0f} s ({r.database})" for r in results)
        + ". Segment counts are the median of 5 runs after one warm-up (worst in brackets); "
        "membership is one profile against one segment, 500 profiles; ingestion is "
        f"`POST /api/v1/events` with batches of {backend.BATCH} events, 4 concurrent "
        "clients, against one `parley backend` process (beside the references below, on "
        "PostgreSQL, also against two).",
        "",
        "| Measure | " + " | ".join(columns) + " | Target |",
        "|---|" + "---|" * len(columns) + "---|",
    ]
    for name in names:
        cells = [
            f"{by[c].counts[name][1] * 1000:.0f} ms ({by[c].counts[name][2] * 1000:.0f}) "
            f"→ {by[c].counts[name][0]:,}"
            for c in columns
        ]
        lines.append(row(f"count segment `{name}`", cells, "≤ 1 s on PostgreSQL"))
    for name in results[0].membership_ms:
        cells = [
            f"{by[c].membership_ms[name][0]:.1f} ms median, {by[c].membership_ms[name][1]:.1f} ms p99"
            for c in columns
        ]
        lines.append(row(f"is a profile in `{name}`", cells))
    lines.append(
        row("batch event ingestion", [f"{by[c].ingest_events_per_s:,.0f} events/s" for c in columns],
            "≥ 5,000 events/s on PostgreSQL")
    )  # fmt: skip
    lines.append(
        row(
            f"one batch of {backend.BATCH}",
            [
                f"{by[c].ingest_batch_ms[0]:.0f} ms median, {by[c].ingest_batch_ms[1]:.0f} ms p99"
                for c in columns
            ],
        )
    )
    lines.append(
        row(
            "backend peak memory (RSS) while ingesting",
            [f"{by[c].server_peak_rss_mb:.0f} MB" for c in columns],
        )
    )
    return "\n".join(lines)


def tracker_saves_table(machine_line: str) -> str:
    """bench/tracker_saves.py, run where Rasa is (the bot runtime)."""
    measured = subprocess.run(
        [str(PROJECT_ROOT / ".venv-bot" / "bin" / "python"), "-m", "bench.tracker_saves",
         backend.POSTGRES],
        cwd=PROJECT_ROOT, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    return "\n".join(
        [
            "## Rasa's side: reading and saving a conversation",
            "",
            f"Machine: {machine_line}.",
            "",
            "Median time of one turn's storage: the conversation read, a follow-up (four "
            "events) added, the conversation saved, with an event broker configured, as the "
            "bot's batch endpoint records one; the conversation was saved by the turn before "
            "it in the same process, as in a chat. 100 conversations per cell, each measured "
            "once (Rasa 3.6 on Python 3.10, the bot runtime). Rasa's SQL tracker store reads "
            "every event of the session and replays it on each read, and reads it all again "
            "on each save to find the events to hand the broker; Parley's "
            "(bot/tracker_store.py) holds the sessions it served last and reads only a mark "
            "(row count, highest id) to know they are current, and saves the new events in "
            "one statement. Side by side on SQLite (the embedded default) and PostgreSQL (the "
            "scale profile).",
            "",
            measured,
        ]
    )


async def postgres_version() -> str:
    connection = await asyncpg.connect(backend.POSTGRES)
    try:
        return str(await connection.fetchval("SHOW server_version"))
    finally:
        await connection.close()


async def main() -> None:
    parser = argparse.ArgumentParser(prog="make bench")
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--batches", type=int, default=60, help="event batches to ingest")
    parser.add_argument(
        "--only",
        choices=[
            "backend", "postgresql", "sqlite", "turns", "scale", "sms", "sequences",
            "rasa-recording", "tracker-saves", "console", "email",
        ],
        help="one benchmark; `backend` is PostgreSQL and SQLite side by side",
    )  # fmt: skip
    parser.add_argument("--turns-rounds", type=int, default=3)
    parser.add_argument("--scale-rounds", type=int, default=2)
    parser.add_argument(
        "--stock-rasa", type=Path, help="a `rasa init` project to reuse (trained into it if empty)"
    )
    parser.add_argument("--sms-rate", type=float, default=50.0, help="webhooks per second")
    parser.add_argument("--sms-seconds", type=float, default=20.0)
    parser.add_argument(
        "--no-sms-faults", action="store_true", help="skip the SMS run that kills processes"
    )
    parser.add_argument(
        "--sequences-rates", default="200,1000", help="steps falling due per second, side by side"
    )
    parser.add_argument("--sequences-seconds", type=float, default=15.0)
    parser.add_argument("--emails", type=int, default=2000, help="e-mails per round")
    args = parser.parse_args()
    if args.only in (None, "turns"):
        print("Turns: Parley beside stock Rasa…", flush=True)
        measured_turns = await turns.bench_turns(args.turns_rounds, stock_dir=args.stock_rasa)
        table = turns.turns_table(measured_turns, machine())
        print(table)
        write_section("turns", table)
        if args.only == "turns":
            return
    if args.only in (None, "scale"):
        print("Scale profile: one Rasa replica and two…", flush=True)
        measured_scale = await scale.bench_scale(args.scale_rounds)
        table = scale.scale_table(measured_scale, machine({"PostgreSQL": await postgres_version()}))
        print(table)
        write_section("scale", table)
        if args.only == "scale":
            return
    if args.only in (None, "sms"):
        print(f"SMS: {args.sms_rate:g} webhooks/s for {args.sms_seconds:g} s…", flush=True)
        measured = await sms.bench_sms(args.sms_rate, args.sms_seconds, not args.no_sms_faults)
        table = sms.sms_table(measured, machine())
        print(table)
        write_section("sms", table)
        if args.only == "sms":
            return
    if args.only in (None, "rasa-recording"):
        print("Rasa: recording follow-ups in conversations…", flush=True)
        recorded = await rasa_recording.bench_rasa_recording()
        table = rasa_recording.recording_table(recorded, machine())
        print(table)
        write_section("rasa-recording", table)
        if args.only == "rasa-recording":
            return
    if args.only in (None, "tracker-saves"):
        print("Rasa: saving conversations, Rasa's tracker store and Parley's…", flush=True)
        table = tracker_saves_table(machine({"PostgreSQL": await postgres_version()}))
        print(table)
        write_section("tracker-saves", table)
        if args.only == "tracker-saves":
            return
    if args.only in (None, "sequences"):
        measured_runs = []
        rates = [float(r) for r in args.sequences_rates.split(",")]
        # The fastest rate again with an emulator that makes no status callbacks: Twilio's
        # side of the callbacks is not on a deployment's machines, only on this one.
        # Last, as many steps as the fastest rate brings, all due at once: how many the
        # workers can send a second.
        runs = [
            *((rate, True, False) for rate in rates),
            (max(rates), False, False),
            (max(rates), False, True),
        ]
        for rate, callbacks, backlog in runs:
            load = (
                f"{rate * args.sequences_seconds:g} steps due at once"
                if backlog
                else f"{rate:g} steps due/s for {args.sequences_seconds:g} s"
            )
            quiet = "" if callbacks else ", no status callbacks"
            print(f"Sequences: {load}{quiet}…", flush=True)
            measured_runs.append(
                await sequences.bench_sequences(
                    rate, args.sequences_seconds, callbacks=callbacks, backlog=backlog
                )
            )
        version = await postgres_version()
        table = sequences.sequences_table(measured_runs, machine({"PostgreSQL": version}))
        print(table)
        write_section("sequences", table)
        if args.only == "sequences":
            return
    if args.only in (None, "email"):
        print(f"E-mail: {args.emails:,} e-mails through the door and a bare loop…", flush=True)
        measured_email = await email.bench_email(args.emails)
        table = email.email_table(measured_email, machine({"PostgreSQL": await postgres_version()}))
        print(table)
        write_section("email", table)
        if args.only == "email":
            return
    if args.only in (None, "console"):
        print(f"Console: loading {args.profiles:,} profiles on PostgreSQL…", flush=True)
        measured_console = await console.bench_console(args.profiles)
        table = console.console_table(
            measured_console, machine({"PostgreSQL": await postgres_version()})
        )
        print(table)
        write_section("console", table)
        if args.only == "console":
            return
    results = []
    if args.only in (None, "backend", "postgresql"):
        print(f"PostgreSQL: loading {args.profiles:,} profiles…", flush=True)
        results.append(await backend.bench_postgresql(args.profiles, args.batches))
    if args.only in (None, "backend", "sqlite"):
        print(f"SQLite: loading {args.profiles:,} profiles…", flush=True)
        results.append(await backend.bench_sqlite(args.profiles, args.batches))
    table = backend_table(results, await postgres_version())
    # Parley's PostgreSQL figures beside their bare references, measured in the same run.
    table += "".join(f"\n\n{backend.references_table(r)}" for r in results if r.reference_counts)
    print(table)
    write_section("backend", table)


if __name__ == "__main__":
    asyncio.run(main())
