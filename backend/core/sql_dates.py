"""The UTC day of a timestamp column, on PostgreSQL and SQLite alike.

`date(column)` on PostgreSQL takes the day in the session's time zone, which a server
may set to anything; the overview's days are UTC days, as the roll-ups' are."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import Date
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement


class utc_day(FunctionElement[date]):
    inherit_cache = True
    type = Date()


@compiles(utc_day, "postgresql")
def _utc_day_pg(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(timezone('UTC', {compiler.process(element.clauses, **kw)}) AS DATE)"


@compiles(utc_day, "sqlite")
def _utc_day_sqlite(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite holds UTC times as text without a zone (backend.core.models.UTCDateTime).
    return f"date({compiler.process(element.clauses, **kw)})"
