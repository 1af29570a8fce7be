"""Many rows in one SQLite INSERT, each value that every row shares bound once.

Binding is most of what a row costs from Python (a bulk run's claim writes two rows a
message), and a batch's rows share many columns: the timestamps, status, backend, sender,
run, empty lists. ``insert_rows`` sends one multi-row statement per chunk where a shared
column is the same numbered parameter in every row, in place of ``executemany``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite3

__all__ = ["insert_rows"]

MAX_PARAMS = 999  # bound parameters per statement: the limit of SQLite before 3.32
MAX_ROWS = 500  # rows per VALUES list: the compound-SELECT limit of SQLite before 3.8.8
_LONG = 4096  # longer values are never shared: comparing them costs more than binding


def insert_rows(conn: sqlite3.Connection, into: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """``into`` (``INSERT INTO t (a, b, ...)``) the rows, in order, as executemany would."""
    if not rows:
        return
    columns = list(zip(*rows, strict=True))
    shared = tuple(_one_value(column) for column in columns)
    size = min(MAX_ROWS, max(1, (MAX_PARAMS - len(shared)) // max(shared.count(False), 1)))
    for start in range(0, len(rows), size):
        count = min(size, len(rows) - start)
        params = [column[0] for column, one in zip(columns, shared, strict=True) if one]
        for column, one in zip(columns, shared, strict=True):
            if not one:
                params.extend(column[start : start + count])
        conn.execute(_statement(into, shared, count), params)


def _one_value(column: tuple[Any, ...]) -> bool:
    """Whether every row holds the same value, of the same type (1 == 1.0, but SQLite keeps
    an integer and a real apart)."""
    first = column[0]
    kind = type(first)
    if kind in _SAME_WHEN_EQUAL:
        if first is not None and len(first) > _LONG:  # an attachment sent to every row, say
            return False
        return column.count(first) == len(column)
    return column.count(first) == len(column) and len(set(map(type, column))) == 1


_SAME_WHEN_EQUAL = (str, bytes, type(None))


@functools.lru_cache(maxsize=64)
def _statement(into: str, shared: tuple[bool, ...], count: int) -> str:
    """The INSERT of ``count`` rows: first the shared columns' parameters, then the others,
    column by column (the order ``insert_rows`` lays the values out in)."""
    number: dict[int, int] = {}  # column -> its parameter (shared) or its first row's
    for column, one in enumerate(shared):
        if one:
            number[column] = len(number) + 1
    following = len(number) + 1
    for column, one in enumerate(shared):
        if not one:
            number[column], following = following, following + count
    rows = []
    for row in range(count):
        marks = [number[c] if one else number[c] + row for c, one in enumerate(shared)]
        rows.append("(?" + ",?".join(map(str, marks)) + ")")
    return f"{into} VALUES {','.join(rows)}"
