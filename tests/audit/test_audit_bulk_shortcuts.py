"""The bulk path's shortcuts (dict-built records, hand-written JSON, multi-row INSERTs) give
exactly what the plain forms give."""

from __future__ import annotations

import json
import math
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict, fields
from typing import Any

import pytest

from fluxmail.audit.log import outbound_record
from fluxmail.audit.records import Claim, Claims, OutboundRecord
from fluxmail.audit.result_json import attempts_json, recipients_json, reply_json
from fluxmail.audit.sqlite_inserts import MAX_PARAMS, MAX_ROWS, insert_rows
from fluxmail.config.resolve import resolve_config
from fluxmail.message.model import build_message
from fluxmail.results import Attempt, RecipientStatus, SendResult, ServerReply


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def test_the_encoders_write_every_field_of_the_result_dataclasses() -> None:
    """A field added to a result dataclass must be added to its encoder (this test fails)."""
    assert [f.name for f in fields(RecipientStatus)] == [
        "address", "status", "code", "enhanced_status", "text",
    ]  # fmt: skip
    assert [f.name for f in fields(Attempt)] == [
        "number", "started_at", "elapsed", "error", "error_code", "smtp_code", "smtp_text",
    ]  # fmt: skip
    assert [f.name for f in fields(ServerReply)] == ["code", "text", "enhanced_status"]


TEXTS = ["", "2.0.0 Ok", 'quote " and \\ back', "tab\tnew\nline\x01", "Zoë ✓ 🎉", None]
NUMBERS: list[Any] = [0, 250, 1796188286.918691, 0.1, 1e-7, 3, None, math.inf, math.nan, True]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("number", NUMBERS)
def test_the_encoders_match_json(text: str | None, number: Any) -> None:
    """Strings with escapes and non-ASCII, ints, floats, NaN and None: json's own text."""
    status = RecipientStatus("zoë@example.com", "sent", number, text, text or "")  # type: ignore[arg-type]
    recipients = {"zoë@example.com": status, "b@example.com": RecipientStatus("b@x", "rejected")}
    expected = _json({a: asdict(r) for a, r in recipients.items()})
    assert recipients_json(recipients) == expected

    attempt = Attempt(7, number, number, text, text, number, text)
    prior = [{"number": 1, "started_at": 1.5, "error": "timed out"}]
    numbered = [*prior, {**asdict(attempt), "number": 2}]
    assert attempts_json(prior, [attempt]) == _json(numbered)
    assert attempts_json((), [attempt, attempt]) == _json(
        [{**asdict(attempt), "number": 1}, {**asdict(attempt), "number": 2}]
    )
    assert attempts_json((), ()) == "[]"

    reply = ServerReply(number, text, text)  # type: ignore[arg-type]
    assert reply_json(reply) == _json(asdict(reply))
    assert reply_json(None) is None


def test_outbound_record_equals_the_dataclass_built_one() -> None:
    """The bulk path's dict-built record is the record the constructor makes."""
    config = resolve_config(host="smtp.example.com", sender="ann@example.com", audit=False)
    message = build_message(
        sender="ann@example.com", recipients=["bob@example.com"], cc=["cy@example.com"],
        subject="Hi", body="body", metadata={"k": [1, 2]},
        attachments=[("a.txt", b"abc", "text/plain")],
    )  # fmt: skip
    record = outbound_record(config, message, b"raw", "sending")
    built = OutboundRecord(**{f.name: getattr(record, f.name) for f in fields(OutboundRecord)})
    assert record == built
    assert asdict(record) == asdict(built)
    assert record.attachments == (("a.txt", "text/plain", b"abc"),)
    assert dict(record.metadata) == {"k": [1, 2]}


class _Recorder:
    """Stands for a sqlite3 connection: keeps every statement and its parameters."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[Any]]] = []

    def execute(self, sql: str, params: list[Any]) -> None:
        self.calls.append((sql, params))


@pytest.fixture
def conn() -> Iterator[sqlite3.Connection]:
    """An in-memory SQLite database, closed after the test."""
    db = sqlite3.connect(":memory:")
    yield db
    db.close()


def test_insert_rows_binds_shared_columns_once_and_keeps_row_order(
    conn: sqlite3.Connection,
) -> None:
    """The multi-row INSERT puts each row's values where the single-row one would."""
    conn.execute("CREATE TABLE t (a, b, c)")
    rows = [(i, "same", None if i % 2 else f"v{i}") for i in range(300)]  # 2 chunks of 9-ish
    insert_rows(conn, "INSERT INTO t (a, b, c)", rows)
    assert conn.execute("SELECT a, b, c FROM t ORDER BY rowid").fetchall() == rows

    recorder = _Recorder()
    insert_rows(recorder, "INSERT INTO t (a, b, c)", rows)  # type: ignore[arg-type]
    assert all(len(params) <= MAX_PARAMS for _, params in recorder.calls)
    assert recorder.calls[0][1][0] == "same"  # the shared column, bound once

    many = [(i, "same", None) for i in range(1200)]  # one column differs: rows cap the chunk
    recorder = _Recorder()
    insert_rows(recorder, "INSERT INTO t (a, b, c)", many)  # type: ignore[arg-type]
    assert [len(params) - 2 for _, params in recorder.calls] == [MAX_ROWS, MAX_ROWS, 200]
    blob = b"x" * 10_000  # a long value is bound per row, not compared across the batch
    recorder = _Recorder()
    insert_rows(recorder, "INSERT INTO t (a, b, c)", [(1, blob, None), (2, blob, None)])  # type: ignore[arg-type]
    assert recorder.calls[0][1] == [None, 1, blob, 2, blob]

    wide = [tuple(range(n, n + 40)) for n in range(100)]  # nothing shared: chunked by the limit
    conn.execute(f"CREATE TABLE w ({', '.join(f'c{i}' for i in range(40))})")
    insert_rows(conn, f"INSERT INTO w ({', '.join(f'c{i}' for i in range(40))})", wide)
    assert conn.execute("SELECT * FROM w ORDER BY rowid").fetchall() == wide


def test_insert_rows_uses_only_nameless_parameters(conn: sqlite3.Connection) -> None:
    """A numbered parameter (?3) bound from a sequence warns from Python 3.12 and is refused
    from 3.14: every statement uses plain ?s, whatever is shared, including identical rows."""
    conn.execute("CREATE TABLE t (a, b, c)")
    shapes = [
        [(i, "same", None) for i in range(700)],  # shared columns, two chunks
        [(1, "x", None)] * 3,  # every column shared
        [(i, f"v{i}", i * 2) for i in range(5)],  # none shared
        [(7, "one", None)],  # a single row
    ]
    recorder = _Recorder()
    for rows in shapes:
        insert_rows(recorder, "INSERT INTO t (a, b, c)", rows)  # type: ignore[arg-type]
        insert_rows(conn, "INSERT INTO t (a, b, c)", rows)
    for sql, params in recorder.calls:
        assert re.search(r"\?\d|[:@$][A-Za-z_]", sql) is None, sql
        assert sql.count("?") == len(params)
    expected = [row for rows in shapes for row in rows]
    assert conn.execute("SELECT a, b, c FROM t ORDER BY rowid").fetchall() == expected


def test_insert_rows_keeps_each_values_type(conn: sqlite3.Connection) -> None:
    """Equal numbers of different types (1, 1.0) are not bound as one shared value."""
    conn.execute("CREATE TABLE t (a, b)")
    insert_rows(conn, "INSERT INTO t (a, b)", [(1, "x"), (1.0, "x"), (True, "x")])
    assert conn.execute("SELECT typeof(a), b FROM t ORDER BY rowid").fetchall() == [
        ("integer", "x"), ("real", "x"), ("integer", "x"),
    ]  # fmt: skip


def test_claims_read_as_the_list_of_claims_they_stand_for() -> None:
    """Claims (ids and replays) index, slice, iterate and unpack as a list of Claim would."""
    replay = SendResult("sent", "<m@example.com>", replayed=True)
    plain = [Claim("a"), Claim("b", replay), Claim("c")]
    claims = Claims.of(plain)
    assert (claims.ids, dict(claims.replays)) == (["a", "b", "c"], {1: replay})
    assert list(claims) == plain and len(claims) == 3
    assert [claims[n] for n in (0, 1, 2, -1, -2, -3)] == [plain[n] for n in (0, 1, 2, -1, -2, -3)]
    assert claims[1:] == plain[1:] and claims[::-1] == plain[::-1] and claims[5:] == []
    for bad in (3, -4):
        with pytest.raises(IndexError):
            claims[bad]
    first, second, third = claims
    assert (first, second, third) == tuple(plain)
    assert plain[1] in claims and claims.index(plain[2]) == 2
    assert Claims() is not None and list(Claims()) == [] and "Claim(" in repr(claims)
