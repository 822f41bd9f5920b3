"""Statements over many rows at once, in the form each database runs best.

On PostgreSQL a list travels as one array parameter: "is one of these values" becomes
`= ANY(array)`, and the rows to write become one array per column, which `unnest` turns
back into rows for an `INSERT … SELECT` or an `UPDATE … FROM`. The statement stays short
and the same whatever the batch's size, so asyncpg prepares it once and encodes each
array in one go, where SQLAlchemy's expanding `IN` and multi-row `VALUES` render, cast
and encode every value as a parameter of its own (a batch of 1,000 events had 6,000
of them, a statement text of 131 kB). SQLite keeps SQLAlchemy's own forms: it has no
arrays, and its statements stay in the process.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Insert, Table, any_, bindparam, column, func, insert, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql.selectable import TableValuedAlias

AnInsert = TypeVar("AnInsert", bound=Insert)

# The column of `rows` that numbers them from 1, in the order given.
PLACE = "place"


def on_postgresql(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def one_of(
    session: AsyncSession,
    expression: ColumnElement[Any] | QueryableAttribute[Any],
    values: Collection[Any],
) -> ColumnElement[bool]:
    """`expression IN values`: on PostgreSQL, one array parameter."""
    if on_postgresql(session):
        return expression == any_(bindparam(None, list(values), type_=ARRAY(expression.type)))
    return expression.in_(values)


def rows(
    table: Table, names: Sequence[str], values: Sequence[Mapping[str, Any]]
) -> TableValuedAlias:
    """PostgreSQL only: `values` as a table of `table`'s columns `names`, one array
    parameter per column, plus PLACE (1, 2, …) to keep their order.

    Select from it in PLACE order for an INSERT whose RETURNING must follow the rows: a
    sequence numbers rows in the order they are inserted, so ids ascend with PLACE."""
    arrays = [
        bindparam(None, [row[name] for row in values], type_=ARRAY(table.c[name].type))
        for name in names
    ]
    return (
        func.unnest(*arrays)
        .table_valued(*(column(name, table.c[name].type) for name in names), with_ordinality=PLACE)
        .render_derived()
    )


def from_rows(statement: AnInsert, table: Table, values: Sequence[Mapping[str, Any]]) -> AnInsert:
    """PostgreSQL only: `statement`, an INSERT into `table`, taking `values` (each with
    the same keys, at least one) as `rows`, in their order."""
    names = list(values[0])
    source = rows(table, names, values)
    return statement.from_select(
        names, select(*(source.c[name] for name in names)).order_by(source.c[PLACE])
    )


async def insert_returning_ids(
    session: AsyncSession, table: Table, values: Sequence[Mapping[str, Any]]
) -> list[int]:
    """Insert rows (each with the same keys) and return their new ids (the table's
    autoincrement `id`), in the rows' order."""
    if not values:
        return []
    if not on_postgresql(session):
        return list(
            await session.scalars(
                insert(table).returning(table.c.id, sort_by_parameter_order=True), list(values)
            )
        )
    # Inserted in PLACE order, so the sequence gives them ascending ids: what SQLAlchemy's
    # own sort_by_parameter_order assumes of PostgreSQL's autoincrement columns too.
    inserted = await session.scalars(from_rows(insert(table), table, values).returning(table.c.id))
    return sorted(inserted)
