"""Many-row inserts and updates for the worker's hot paths, one statement per table.

On PostgreSQL the rows travel as one array per column and are expanded by `unnest` on the server:
one statement, one plan and one round trip for a whole batch, and no per-row parameter work in
Python (an executemany of 500 UPDATEs costs several times as much on both sides). Elsewhere
(SQLite, one writer, no network) a plain executemany is already the cheap way.

Every row of a call must have the same keys. Values go through each column type's own bind
processing (UTC datetimes, JSON), so the database receives exactly what the ORM would send.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import Row, Table, TextClause, bindparam, insert, text, update
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

Processor = Callable[[Any], Any] | None


async def insert_rows(
    session: AsyncSession,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    returning: Sequence[str] = (),
    ordered: bool = False,
) -> list[Row[Any]]:
    """INSERT every row; answer the `returning` columns of each: in no particular order, or with
    `ordered` in the order of `rows` (the table's `id` must be among `returning`)."""
    if not rows:
        return []
    _check_columns(table, [*rows[0], *returning])
    dialect = session.get_bind().dialect
    if dialect.name != "postgresql":
        if not returning:
            await session.execute(insert(table), list(rows))
            return []
        query = insert(table).returning(
            *(table.c[name] for name in returning), sort_by_parameter_order=ordered
        )
        return list(await session.execute(query, list(rows)))
    columns = tuple(rows[0])
    statement, processors = _insert_from_arrays(table, columns, tuple(returning), ordered, dialect)
    result = await session.execute(statement, _arrays(columns, processors, rows))
    if not returning:
        return []
    answer = list(result)
    if ordered:
        answer.sort(key=lambda row: row.id)
    return answer


@functools.lru_cache(maxsize=256)
def _insert_from_arrays(
    table: Table, columns: tuple[str, ...], returning: tuple[str, ...], ordered: bool,
    dialect: Dialect,
) -> tuple[TextClause, tuple[Processor, ...]]:  # fmt: skip
    """The INSERT of one array per column, and each column's bind processor: built once for each
    shape (table, columns, returning), not for each batch."""
    casts, processors = _casts(table, columns, dialect)
    # Every name was checked against the table's own columns (`_check_columns`). The statement's
    # text is the same for any number of rows, so the server prepares it once.
    names = ", ".join(columns)
    statement = f"INSERT INTO {table.name} ({names}) SELECT * FROM unnest({casts})"  # noqa: S608
    if ordered:
        # Inserted in the order of the rows, so the ids the sequence gives them rise in that
        # order (what SQLAlchemy's own sort_by_parameter_order relies on): sorted by id, the
        # answer lines up with `rows`.
        if "id" not in returning:
            raise ValueError("an ordered insert must return the id")
        aliases = ", ".join(f"c{index}" for index in range(len(columns)))
        statement = (
            f"INSERT INTO {table.name} ({names}) SELECT {aliases} "  # noqa: S608
            f"FROM unnest({casts}) WITH ORDINALITY AS u({aliases}, n) ORDER BY n"
        )
    if returning:
        statement += f" RETURNING {', '.join(returning)}"
    return text(statement), processors


async def update_rows(session: AsyncSession, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """UPDATE … WHERE id = row["id"] for every row, setting its other keys."""
    if not rows:
        return
    _check_columns(table, rows[0])
    columns = [name for name in rows[0] if name != "id"]
    dialect = session.get_bind().dialect
    if dialect.name != "postgresql":
        by_id = (
            update(table)
            .where(table.c.id == bindparam("row_id"))
            .values({name: bindparam(name) for name in columns})
        )
        await session.execute(
            by_id,
            [{"row_id": row["id"], **{name: row[name] for name in columns}} for row in rows],
        )
        return
    every = ("id", *columns)
    statement, processors = _update_from_arrays(table, every, dialect)
    await session.execute(statement, _arrays(every, processors, rows))


@functools.lru_cache(maxsize=64)
def _update_from_arrays(
    table: Table, columns: tuple[str, ...], dialect: Dialect
) -> tuple[TextClause, tuple[Processor, ...]]:
    """The UPDATE by id from one array per column (`columns` starts with `id`), built once."""
    casts, processors = _casts(table, columns, dialect)
    assignments = ", ".join(f"{name} = v.{name}" for name in columns[1:])
    statement = (
        f"UPDATE {table.name} SET {assignments} "  # noqa: S608
        f"FROM unnest({casts}) AS v({', '.join(columns)}) WHERE {table.name}.id = v.id"
    )
    return text(statement), processors


def _check_columns(table: Table, names: Iterable[str]) -> None:
    unknown = [name for name in names if name not in table.c]
    if unknown:
        raise KeyError(f"{table.name} has no column {', '.join(unknown)}")


def _casts(
    table: Table, columns: tuple[str, ...], dialect: Dialect
) -> tuple[str, tuple[Processor, ...]]:
    """`CAST(:a0 AS type[]), …` for the columns, and each one's bind processor (None: as is)."""
    casts: list[str] = []
    processors: list[Processor] = []
    for index, name in enumerate(columns):
        column_type = table.c[name].type
        processors.append(column_type.dialect_impl(dialect).bind_processor(dialect))
        casts.append(f"CAST(:a{index} AS {column_type.compile(dialect=dialect)}[])")
    return ", ".join(casts), tuple(processors)


def _arrays(
    columns: tuple[str, ...], processors: tuple[Processor, ...], rows: Sequence[dict[str, Any]]
) -> dict[str, list[Any]]:
    """One array a column, each value through its column's bind processing."""
    arrays: dict[str, list[Any]] = {}
    for index, (name, process) in enumerate(zip(columns, processors, strict=True)):
        values = [row[name] for row in rows]
        arrays[f"a{index}"] = [process(v) for v in values] if process else values
    return arrays
