"""docs/benchmarks.md: one section per benchmark, each replaced when it runs again."""

from __future__ import annotations

import os
import platform
import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from backend.core.settings import PROJECT_ROOT

REPORT = PROJECT_ROOT / "docs" / "benchmarks.md"
HEADER = """# Benchmarks

Run with `make bench`. Each section below is rewritten by the benchmark that made it,
with the machine it ran on. Tests never assert on time; these numbers are where speed
and memory targets are checked.
"""


def machine(extra: dict[str, str] | None = None) -> str:
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M)
        cpu = found.group(1) if found else cpu
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        found = re.search(r"^MemTotal:\s*(\d+) kB", meminfo.read_text(), re.M)
        memory = f", {int(found.group(1)) / 1024 / 1024:.0f} GiB RAM" if found else ""
    parts = [
        f"{os.cpu_count()} × {cpu}{memory}",
        f"{platform.system()} {platform.release()}",
        f"Python {platform.python_version()}",
        f"SQLite {sqlite3.sqlite_version}",
        *(f"{k} {v}" for k, v in (extra or {}).items()),
    ]
    return "; ".join(parts)


def write_section(name: str, body: str) -> None:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = f"{start}\n{body.rstrip()}\n\n_Measured {stamp}._\n{end}"
    text = REPORT.read_text() if REPORT.exists() else HEADER
    if start in text:
        text = re.sub(
            re.escape(start) + r".*?" + re.escape(end), lambda _: section, text, flags=re.S
        )
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(text)
