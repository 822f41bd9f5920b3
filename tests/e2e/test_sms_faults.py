"""Nothing Twilio was told arrived is lost, whatever dies: a steady stream of signed
texts while the backend, the action server and Rasa are killed (SIGKILL) and started
again, and PostgreSQL is crashed and restarted, several times each (tests/e2e/
fault_stack.py). Afterwards every acknowledged text is recorded, every one meant for
the bot is in its conversation exactly once, every STOP took effect with one
confirmation, and no reply went out twice. The counts are printed (and `make bench`
reports them in docs/benchmarks.md)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from tests.e2e.fault_stack import PostgresMissing, PrivatePostgres, run_faults
from tests.servers import server_missing

# Each process killed three times, PostgreSQL restarted three times, in turns.
PLAN = ["backend", "actions", "postgres", "rasa"] * 3


def test_every_acknowledged_text_is_answered_once_through_crashes_and_restarts(
    tmp_path: Path,
) -> None:
    try:
        PrivatePostgres.bin_dir()
    except PostgresMissing as missing:
        server_missing(str(missing))
    result = asyncio.run(run_faults(tmp_path, sys.stdout, PLAN))
    sys.stdout.write("\n".join(result.lines()) + "\n")

    assert [f.target for f in result.faults] == PLAN
    assert result.acknowledged > 100
    assert result.acknowledged_not_recorded == 0
    assert (result.answers_failed, result.answers_pending) == (0, 0)
    assert result.for_the_bot > 0
    assert result.in_conversation_once == result.for_the_bot
    assert result.stops > 0
    assert result.stops_applied == result.stop_confirmations == result.stops
    assert (result.sent_without_record, result.sent_twice) == (0, 0)
