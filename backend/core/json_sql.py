"""Typed reads from JSON columns that never fail on a value of another type.

`attributes.team_size >= 50` must skip a profile whose team_size is "fifty", not abort
the whole query: PostgreSQL's `(x->>'k')::float` raises on such a value. These
expressions yield NULL instead (and NULL compares false), on PostgreSQL and SQLite alike.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, Float, String, literal
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement


class _JsonValue(FunctionElement[Any]):
    inherit_cache = True

    def __init__(self, column: Any, key: str) -> None:
        super().__init__(column, literal(key, String), literal(_sqlite_path(key), String))


def _sqlite_path(key: str) -> str:
    return '$."' + key.replace('"', '""') + '"'


class json_number(_JsonValue):
    inherit_cache = True
    type = Float()


class json_bool(_JsonValue):
    inherit_cache = True
    type = Boolean()


class json_text(_JsonValue):
    inherit_cache = True
    type = String()


def _parts(element: _JsonValue, compiler: SQLCompiler, **kw: Any) -> tuple[str, str]:
    """The column and the key (PostgreSQL) or JSON path (SQLite), compiled. Only the one
    the dialect uses is compiled, so no unused parameter is sent."""
    column, key, path = element.clauses
    wanted = path if compiler.dialect.name == "sqlite" else key
    return compiler.process(column, **kw), compiler.process(wanted, **kw)


@compiles(json_number, "postgresql")
def _number_pg(element: json_number, compiler: SQLCompiler, **kw: Any) -> str:
    column, key = _parts(element, compiler, **kw)
    return (
        f"CASE WHEN jsonb_typeof({column} -> {key}) = 'number' "
        f"THEN CAST({column} ->> {key} AS DOUBLE PRECISION) END"
    )


@compiles(json_bool, "postgresql")
def _bool_pg(element: json_bool, compiler: SQLCompiler, **kw: Any) -> str:
    column, key = _parts(element, compiler, **kw)
    return (
        f"CASE WHEN jsonb_typeof({column} -> {key}) = 'boolean' "
        f"THEN CAST({column} ->> {key} AS BOOLEAN) END"
    )


@compiles(json_text, "postgresql")
def _text_pg(element: json_text, compiler: SQLCompiler, **kw: Any) -> str:
    column, key = _parts(element, compiler, **kw)
    return f"CASE WHEN jsonb_typeof({column} -> {key}) = 'string' THEN {column} ->> {key} END"


@compiles(json_number, "sqlite")
def _number_sqlite(element: json_number, compiler: SQLCompiler, **kw: Any) -> str:
    column, path = _parts(element, compiler, **kw)
    return (
        f"CASE WHEN json_type({column}, {path}) IN ('integer', 'real') "
        f"THEN json_extract({column}, {path}) END"
    )


@compiles(json_bool, "sqlite")
def _bool_sqlite(element: json_bool, compiler: SQLCompiler, **kw: Any) -> str:
    column, path = _parts(element, compiler, **kw)
    return (
        f"CASE WHEN json_type({column}, {path}) IN ('true', 'false') "
        f"THEN json_extract({column}, {path}) END"
    )


@compiles(json_text, "sqlite")
def _text_sqlite(element: json_text, compiler: SQLCompiler, **kw: Any) -> str:
    column, path = _parts(element, compiler, **kw)
    return f"CASE WHEN json_type({column}, {path}) = 'text' THEN json_extract({column}, {path}) END"


class json_present(_JsonValue):
    """True when the key holds a value that is not JSON null."""

    inherit_cache = True
    type = Boolean()


@compiles(json_present, "postgresql")
def _present_pg(element: json_present, compiler: SQLCompiler, **kw: Any) -> str:
    column, key = _parts(element, compiler, **kw)
    return f"(COALESCE(jsonb_typeof({column} -> {key}), 'null') <> 'null')"


@compiles(json_present, "sqlite")
def _present_sqlite(element: json_present, compiler: SQLCompiler, **kw: Any) -> str:
    column, path = _parts(element, compiler, **kw)
    return f"(COALESCE(json_type({column}, {path}), 'null') <> 'null')"


class json_null(_JsonValue):
    """True when the key is there and holds JSON null (false when it is missing)."""

    inherit_cache = True
    type = Boolean()


@compiles(json_null, "postgresql")
def _null_pg(element: json_null, compiler: SQLCompiler, **kw: Any) -> str:
    column, key = _parts(element, compiler, **kw)
    return f"(COALESCE(jsonb_typeof({column} -> {key}), 'missing') = 'null')"


@compiles(json_null, "sqlite")
def _null_sqlite(element: json_null, compiler: SQLCompiler, **kw: Any) -> str:
    column, path = _parts(element, compiler, **kw)
    return f"(COALESCE(json_type({column}, {path}), 'missing') = 'null')"
