"""Many rows in one SQLite INSERT, each value that every row shares bound once.

Binding is most of what a row costs from Python (a bulk run's claim writes two rows a
message), and a batch's rows share many columns: the timestamps, status, backend, sender,
run, empty lists. ``insert_rows`` sends one statement per chunk, in place of ``executemany``:
``INSERT INTO t (a, b, c) SELECT ?, column1, column2 FROM (VALUES (?,?),(?,?),...)``, where
a shared column is one parameter of the SELECT and the others come from the VALUES rows.

Only nameless ``?`` parameters: a numbered one (``?3``, which could stand in every row) bound
from a sequence warns from Python 3.12 and is refused from 3.14, and binding by name costs
more than the sharing saves.
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
    if all(shared):  # identical rows: a VALUES row needs one column of its own
        shared = (False, *shared[1:])
    own = [n for n, one in enumerate(shared) if not one]
    size = min(MAX_ROWS, max(1, (MAX_PARAMS - len(shared)) // len(own)))
    values = [column[0] for column, one in zip(columns, shared, strict=True) if one]
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        params = values.copy()
        if len(own) == len(shared):
            for row in chunk:
                params.extend(row)
        else:
            for row in chunk:
                params.extend([row[n] for n in own])
        conn.execute(_statement(into, shared, len(chunk)), params)


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
    """The INSERT of ``count`` rows: the shared columns' parameters first (in the SELECT),
    then each row's own values (in the VALUES), the order ``insert_rows`` lays them out in.
    SQLite names the columns of a VALUES list column1, column2, ..."""
    picked, own = [], 0
    for one in shared:
        if one:
            picked.append("?")
        else:
            own += 1
            picked.append(f"column{own}")
    row = "(" + ",".join("?" * own) + ")"
    return f"{into} SELECT {','.join(picked)} FROM (VALUES {','.join([row] * count)})"
