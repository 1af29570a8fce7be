"""A bulk run's outcome commits: slow, failing or broken ones, on both audit stores.

With PostgreSQL a commit is a round trip, and the run commits outcomes from a thread of its
own while the loop goes on sending; with SQLite it commits them on the loop. Either way a
failed commit leaves its records to the next opener's recovery, and an error that is not the
store's ends the run with it.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fluxmail import AuditError, FluxMail
from fluxmail.audit import open_store
from fluxmail.audit.postgres import PostgresStore
from fluxmail.audit.sqlite import SQLiteStore
from fluxmail.engine import pipeline_books
from fluxmail.engine.pipeline import CLAIM_BATCH
from fluxmail.engine.pipeline_books import FINISH_BATCH
from tests.support.servers import SMTPTestServer

MESSAGES = FINISH_BATCH + 150  # a first batch of outcomes, then more while it is committed


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def audit(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """The mailer's audit option and the store class it opens."""
    if request.param == "sqlite":
        return {"option": {"audit_dir": tmp_path / "audit"}, "store": SQLiteStore}
    return {"option": {"audit_url": request.getfixturevalue("pg_database")}, "store": PostgresStore}


@pytest.fixture
def server(smtp_server: Callable[..., SMTPTestServer]) -> SMTPTestServer:
    return smtp_server()


def _mailer(server: SMTPTestServer, audit: dict[str, Any]) -> FluxMail:
    return FluxMail(
        host=server.host, port=server.port, use_tls=False, sender="s@example.com",
        **audit["option"],
    )  # fmt: skip


def _items() -> Iterator[dict[str, Any]]:
    for n in range(MESSAGES):
        yield {"subject": f"n{n}", "recipients": [f"u{n}@example.com"], "body": "hello"}


def _reopened(audit: dict[str, Any]) -> Any:
    option = audit["option"]
    if "audit_url" in option:
        return open_store(url=option["audit_url"])
    return open_store(directory=option["audit_dir"], explicit=True)


def _on_first_commit(
    monkeypatch: pytest.MonkeyPatch, store: type, first: Callable[[list[Any]], None]
) -> list[list[Any]]:
    """``first(items)`` runs before the run's first finish_many; every batch is kept."""
    return _before_call(monkeypatch, store, "finish_many", 1, first)


def _before_call(
    monkeypatch: pytest.MonkeyPatch,
    store: type,
    name: str,
    number: int,
    action: Callable[[list[Any]], None],
) -> list[list[Any]]:
    """``action(items)`` runs before the ``number``-th call of the store's ``name`` (a batch
    method: claim_many or finish_many); every call's items are kept."""
    real = getattr(store, name)
    calls: list[list[Any]] = []

    def batch_method(self: Any, items: Any, **options: Any) -> Any:
        calls.append(list(items))
        if len(calls) == number:
            action(calls[-1])
        return real(self, items, **options)

    monkeypatch.setattr(store, name, batch_method)
    return calls


def _until_delivered(
    server: SMTPTestServer, count: int, seconds: float, reached: list[int]
) -> Callable[[list[Any]], None]:
    """A first commit that waits (bounded) until the server has ``count`` messages, then
    notes how many it had."""

    def wait(items: list[Any]) -> None:
        deadline = time.monotonic() + seconds
        while server.deliveries < count and time.monotonic() < deadline:
            time.sleep(0.01)
        reached.append(server.deliveries)

    return wait


def _all_sent(url: str, count: int) -> None:
    store = open_store(url=url)
    records = store.list(limit=count + 1)
    store.close()
    assert len(records) == count and {r.status for r in records} == {"sent"}


@pytest.mark.postgres
def test_a_slow_outcome_commit_to_postgresql_never_stops_the_sending(
    monkeypatch: pytest.MonkeyPatch, server: SMTPTestServer, pg_database: str
) -> None:
    """The first commit of outcomes waits until the server has every message: it only
    ends if the run goes on sending meanwhile (on the loop, it would wait out its bound)."""
    reached: list[int] = []
    _on_first_commit(monkeypatch, PostgresStore, _until_delivered(server, MESSAGES, 30, reached))
    with _mailer(server, {"option": {"audit_url": pg_database}}) as mailer:
        summary = mailer.send_many(_items(), concurrency=4, progress=False).wait()
    assert summary.sent == MESSAGES
    assert reached == [MESSAGES]
    _all_sent(pg_database, MESSAGES)


def test_a_failed_outcome_commit_leaves_its_records_to_recovery(
    monkeypatch: pytest.MonkeyPatch,
    server: SMTPTestServer,
    audit: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The store refuses the first batch of outcomes: the run still reports every message,
    logs the loss, and keeps its lease's trail; the next opener makes those records
    ``unknown`` (they were handed to the wire), never resent. The other batches are kept."""

    def refuse(items: list[Any]) -> None:
        raise AuditError("the database went away", code="audit_unavailable")

    batches = _on_first_commit(monkeypatch, audit["store"], refuse)
    with caplog.at_level(logging.ERROR, logger="fluxmail"), _mailer(server, audit) as mailer:
        summary = mailer.send_many(_items(), concurrency=4, progress=False).wait()
    assert summary.sent == MESSAGES and server.deliveries == MESSAGES
    assert f"could not record {len(batches[0])} outcomes" in caplog.text
    lost = {audit_id for audit_id, _ in batches[0]}
    store = _reopened(audit)
    records = store.list(limit=1000)
    store.close()
    assert len(records) == MESSAGES
    assert {r.id for r in records if r.status == "unknown"} == lost
    assert {r.status for r in records if r.id not in lost} == {"sent"}


def test_an_error_that_is_not_the_stores_ends_the_run_with_it(
    monkeypatch: pytest.MonkeyPatch, server: SMTPTestServer, audit: dict[str, Any]
) -> None:
    """A bug in committing outcomes is raised to the caller, not logged and lost; the run's
    records are left to recovery, none of them ``sending`` once the store is opened again."""

    def broken(items: list[Any]) -> None:
        raise RuntimeError("a bug in recording outcomes")

    _on_first_commit(monkeypatch, audit["store"], broken)
    with (
        _mailer(server, audit) as mailer,
        pytest.raises(RuntimeError, match="a bug in recording outcomes"),
    ):
        mailer.send_many(_items(), concurrency=4, progress=False).wait()
    store = _reopened(audit)
    statuses = {r.status for r in store.list(limit=1000)}
    store.close()
    assert "sending" not in statuses and statuses <= {"sent", "unknown", "failed"}


@pytest.mark.postgres
def test_a_postgresql_store_far_behind_holds_the_run_back(
    monkeypatch: pytest.MonkeyPatch, server: SMTPTestServer, pg_database: str
) -> None:
    """While the first commit of outcomes hangs, the run goes on only until a backlog of
    outcomes waits (memory stays flat); then it waits for the database, and ends once the
    database is back."""
    monkeypatch.setattr(pipeline_books, "FINISH_BACKLOG", FINISH_BATCH)
    total = 3 * FINISH_BATCH
    reached: list[int] = []
    _on_first_commit(monkeypatch, PostgresStore, _until_delivered(server, total, 3, reached))
    items = ({"subject": f"n{n}", "recipients": [f"u{n}@x.org"], "body": "b"} for n in range(total))
    with _mailer(server, {"option": {"audit_url": pg_database}}) as mailer:
        summary = mailer.send_many(items, concurrency=4, progress=False).wait()
    assert summary.sent == total
    # At most the first batch, the backlog and the messages in flight had gone out.
    assert reached and reached[0] <= 2 * FINISH_BATCH + 4 * 2
    _all_sent(pg_database, total)


@pytest.mark.postgres
def test_a_slow_claim_on_postgresql_never_stops_the_sending_of_what_is_claimed(
    monkeypatch: pytest.MonkeyPatch, server: SMTPTestServer, pg_database: str
) -> None:
    """The second batch's claim waits until the server has the whole first batch: it only
    ends if the loop goes on sending meanwhile (a claim on the loop would wait out its bound)."""
    reached: list[int] = []
    claims = _before_call(
        monkeypatch, PostgresStore, "claim_many", 2,
        _until_delivered(server, CLAIM_BATCH, 10, reached),
    )  # fmt: skip
    with _mailer(server, {"option": {"audit_url": pg_database}}) as mailer:
        summary = mailer.send_many(_items(), concurrency=4, progress=False).wait()
    assert summary.sent == MESSAGES
    assert len(claims[0]) == CLAIM_BATCH and reached == [CLAIM_BATCH]
    _all_sent(pg_database, MESSAGES)


@pytest.mark.postgres
def test_a_run_stopped_while_a_claim_is_on_its_way_fails_what_it_claimed(
    monkeypatch: pytest.MonkeyPatch, server: SMTPTestServer, pg_database: str
) -> None:
    """The caller stops the run while the second batch is being claimed: once that claim
    commits, its records fail (never handed on, so never sent), none is left ``sending``."""
    on_its_way = threading.Event()

    def slow(items: list[Any]) -> None:
        on_its_way.set()
        time.sleep(0.5)  # committed after the run has stopped waiting for it

    _before_call(monkeypatch, PostgresStore, "claim_many", 2, slow)
    with _mailer(server, {"option": {"audit_url": pg_database}}) as mailer:
        outcomes = iter(mailer.send_many(_items(), concurrency=4, progress=False))
        next(outcomes)
        assert on_its_way.wait(10)
        outcomes.close()  # as a caller's break out of the loop does
    store = open_store(url=pg_database)
    records = store.list(limit=1000)
    store.close()
    statuses = collections.Counter(r.status for r in records)
    assert len(records) == 2 * CLAIM_BATCH, statuses  # two batches claimed, no third
    assert "sending" not in statuses and server.deliveries <= CLAIM_BATCH
    second = {r.id for r in records if r.created_at == max(x.created_at for x in records)}
    assert len(second) == CLAIM_BATCH
    assert {r.status for r in records if r.id in second} == {"failed"}
