"""Audit store behaviour, written once and run against every backend (SQLite, PostgreSQL)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from fluxmail.audit import AuditStore, open_store
from fluxmail.audit.ids import new_id, new_ids
from fluxmail.errors import AuditError
from tests.support.audit import (
    EML,
    failed_result,
    kill_during_send,
    make_record,
    run_claimers,
    sent_result,
)


@dataclass
class Backend:
    """How to open one backend's store; ``spec`` is picklable for child processes."""

    name: str
    spec: dict[str, Any]

    def open(self, **changes: Any) -> AuditStore:
        return open_store(**{**self.spec, **changes})


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each backend with an empty store of its own."""
    if request.param == "sqlite":
        return Backend("sqlite", {"directory": tmp_path / "audit", "explicit": True})
    database_url: str = request.getfixturevalue("pg_database")
    return Backend("postgres", {"url": database_url})


@pytest.fixture
def store(backend: Backend) -> Iterator[AuditStore]:
    """An open store, closed after the test."""
    opened = backend.open()
    yield opened
    opened.close()


def test_claim_records_every_field_before_sending(store: AuditStore) -> None:
    """A claim without key commits a 'sending' record holding every field that was handed in."""
    claim = store.claim(make_record())
    assert claim.replay is None
    record = store.get(claim.audit_id, include_bcc=True)
    assert record.status == "sending"
    assert record.sent_at is None
    assert (record.backend, record.provider, record.host) == ("smtp", "mailpit", "127.0.0.1")
    assert (record.sender, record.to, record.cc) == (
        "ann@example.com",
        ("bob@example.com",),
        ("cy@example.com",),
    )
    assert record.bcc == ("hidden@example.com",)
    assert record.subject == "Quarterly report"
    assert record.message_id == "<m1@example.com>"
    assert record.metadata == {"campaign": "q3", "note": "héllo"}
    assert record.created_at.tzinfo is not None
    assert abs(record.created_at.timestamp() - time.time()) < 3600
    assert store.get_eml(claim.audit_id) == EML
    [attachment] = record.attachments
    assert attachment["filename"] == "report.pdf"
    assert attachment["size"] == len(b"%PDF-1.4 fake")
    assert len(attachment["sha256"]) == 64


def test_bcc_left_out_unless_asked(store: AuditStore) -> None:
    """Reading hides Bcc addresses (and their per-recipient results) unless include_bcc=True."""
    audit_id = store.claim(make_record()).audit_id
    store.finish(audit_id, sent_result())
    plain = store.get(audit_id)
    assert plain.bcc is None
    assert "hidden@example.com" not in plain.recipients
    assert "hidden@example.com" not in str(plain.to_dict())
    assert "hidden@example.com" not in str([r.to_dict() for r in store.list()])
    full = store.get(audit_id, include_bcc=True)
    assert full.bcc == ("hidden@example.com",)
    assert "hidden@example.com" in full.recipients
    assert [r.bcc for r in store.list(include_bcc=True)] == [("hidden@example.com",)]


def test_finish_records_the_outcome(store: AuditStore) -> None:
    """finish() stores status, per-recipient results, attempts, final reply, duration, sent_at."""
    audit_id = store.claim(make_record()).audit_id
    result = sent_result()
    store.finish(audit_id, result)
    record = store.get(audit_id, include_bcc=True)
    assert record.status == "sent"
    assert record.sent_at is not None
    assert record.duration == pytest.approx(0.05)
    assert record.final_reply == {
        "code": 250,
        "text": "2.0.0 queued as ABC",
        "enhanced_status": "2.0.0",
    }
    assert len(record.attempts) == 1
    assert record.recipients["bob@example.com"]["status"] == "sent"
    rebuilt = record.result()
    assert rebuilt.audit_id == audit_id
    assert rebuilt.to_dict() == {**result.to_dict(), "audit_id": audit_id}


@pytest.mark.parametrize("status", ["sent", "partial", "queued", "unknown"])
def test_same_key_after_possible_acceptance_replays(store: AuditStore, status: str) -> None:
    """A key whose send may have been accepted replays the recorded result and writes nothing."""
    first = store.claim(make_record("order-1"))
    store.finish(first.audit_id, sent_result(status))
    before = store.get(first.audit_id)
    again = store.claim(make_record("order-1", message_id="<m2@example.com>"))
    assert again.audit_id == first.audit_id
    assert again.replay is not None
    assert again.replay.replayed is True
    assert again.replay.audit_id == first.audit_id
    assert again.replay.status == status
    assert again.replay.message_id == "<m1@example.com>"
    assert store.get(first.audit_id) == before
    assert len(store.list()) == 1


def test_same_key_while_sending_replays_as_unknown(store: AuditStore) -> None:
    """A key still 'sending' (in flight elsewhere) replays with status unknown, never resends."""
    first = store.claim(make_record("order-2"))
    again = store.claim(make_record("order-2"))
    assert again.audit_id == first.audit_id
    assert again.replay is not None
    assert again.replay.status == "unknown"
    assert set(again.replay.recipients) == {
        "bob@example.com",
        "cy@example.com",
        "hidden@example.com",
    }
    assert store.get(first.audit_id).status == "sending"


def test_same_key_different_content_is_a_conflict(store: AuditStore) -> None:
    """The same key with another content hash raises idempotency_conflict naming only the key."""
    store.claim(make_record("order-3"))
    with pytest.raises(AuditError) as info:
        store.claim(make_record("order-3", content_hash="hash-2", subject="Other secret subject"))
    assert info.value.code == "idempotency_conflict"
    assert "order-3" in str(info.value)
    assert "secret" not in str(info.value)
    assert "hash-2" not in str(info.value)


def test_failed_send_can_be_retried_on_the_same_record(store: AuditStore) -> None:
    """After 'failed' the same key claims again; attempts accumulate, renumbered, on one record."""
    first = store.claim(make_record("order-4"))
    store.finish(first.audit_id, failed_result())
    retry = store.claim(make_record("order-4", message_id="<m2@example.com>", eml=b"new bytes"))
    assert retry == type(retry)(first.audit_id, None)
    record = store.get(first.audit_id)
    assert (record.status, record.message_id) == ("sending", "<m2@example.com>")
    assert store.get_eml(first.audit_id) == b"new bytes"
    store.finish(first.audit_id, sent_result(message_id="<m2@example.com>"))
    store.finish(first.audit_id, sent_result(message_id="<m2@example.com>"))  # idempotent
    record = store.get(first.audit_id)
    assert record.status == "sent"
    assert [a["number"] for a in record.attempts] == [1, 2]
    assert record.attempts[0]["error_code"] == "connection_failed"
    assert len(store.list()) == 1


def test_dry_run_is_recorded_and_a_later_real_send_may_proceed(store: AuditStore) -> None:
    """A dry run is recorded as dry_run; the same key may then be sent for real."""
    dry = store.claim(make_record("order-5", status="dry_run"))
    assert store.get(dry.audit_id).status == "dry_run"
    store.finish(dry.audit_id, sent_result("dry_run"))
    real = store.claim(make_record("order-5"))
    assert real.audit_id == dry.audit_id and real.replay is None
    assert store.get(dry.audit_id).status == "sending"


def test_claim_many_and_finish_many_keep_per_record_semantics(store: AuditStore) -> None:
    """A batch claims each record as claim() would, including a key repeated inside the batch."""
    store.finish(store.claim(make_record("done")).audit_id, sent_result())
    claims = store.claim_many(
        [make_record("b-1"), make_record(None), make_record("done"), make_record("b-1")]
    )
    assert [c.replay is None for c in claims] == [True, True, False, False]
    assert claims[3].audit_id == claims[0].audit_id
    # The bulk path reads the same answers without a Claim per record.
    assert claims.ids == [c.audit_id for c in claims]
    assert {n: r.status for n, r in claims.replays.items()} == {2: "sent", 3: "unknown"}
    store.finish_many([(claims[0].audit_id, sent_result()), (claims[1].audit_id, failed_result())])
    assert store.get(claims[0].audit_id).status == "sent"
    assert store.get(claims[1].audit_id).status == "failed"


def test_a_conflict_in_a_batch_claims_nothing(store: AuditStore) -> None:
    """claim_many is one transaction: a conflicting record leaves no record of the others."""
    store.claim(make_record("c-1"))
    with pytest.raises(AuditError) as info:
        store.claim_many([make_record("c-2"), make_record("c-1", content_hash="other")])
    assert info.value.code == "idempotency_conflict"
    assert [r.idempotency_key for r in store.list()] == ["c-1"]


def test_unknown_ids_are_not_found(store: AuditStore) -> None:
    """get, get_eml and finish on an unknown id raise AuditError(code='not_found')."""
    for call in (
        lambda: store.get("nope"),
        lambda: store.get_eml("nope"),
        lambda: store.finish("nope", sent_result()),
    ):
        with pytest.raises(AuditError) as info:
            call()
        assert info.value.code == "not_found"


def test_list_filters_by_status_time_and_limit(store: AuditStore) -> None:
    """list() returns newest first and honours status=, since= and limit=."""
    ids = [store.claim(make_record(f"l-{n}")).audit_id for n in range(5)]
    store.finish(ids[1], sent_result())
    store.finish(ids[3], failed_result())
    assert [r.id for r in store.list()] == ids[::-1]
    assert [r.id for r in store.list(status="sent")] == [ids[1]]
    assert [r.id for r in store.list(status="sending")] == [ids[4], ids[2], ids[0]]
    assert [r.id for r in store.list(limit=2)] == [ids[4], ids[3]]
    future = datetime.now(timezone.utc) + timedelta(hours=1)
    assert store.list(since=future) == []
    assert len(store.list(since=datetime.now(timezone.utc) - timedelta(hours=1))) == 5


def test_prune_deletes_old_records_but_not_in_flight_ones(store: AuditStore) -> None:
    """prune() deletes finished records created before the cutoff and keeps 'sending' ones."""
    done = store.claim(make_record("p-1")).audit_id
    store.finish(done, sent_result())
    in_flight = store.claim(make_record("p-2")).audit_id
    assert store.prune(older_than=timedelta(days=1)) == 0
    assert store.prune(older_than=datetime.now(timezone.utc) + timedelta(seconds=5)) == 1
    assert [r.id for r in store.list()] == [in_flight]
    # A pruned key is free again (documented: keep records as long as retries may come).
    assert store.claim(make_record("p-1")).replay is None


def test_recover_stale_marks_sending_unknown_and_never_resends(store: AuditStore) -> None:
    """A stale 'sending' record becomes 'unknown'; the same key then replays instead of sending."""
    audit_id = store.claim(make_record("s-1")).audit_id
    assert store.recover_stale(older_than=3600) == 0
    time.sleep(0.01)
    assert store.recover_stale(older_than=0.001) == 1
    assert store.get(audit_id).status == "unknown"
    claim = store.claim(make_record("s-1"))
    assert claim.replay is not None and claim.replay.status == "unknown"


def test_opening_the_store_recovers_stale_records(backend: Backend) -> None:
    """Opening a store (first use, for PostgreSQL) turns stale 'sending' records into 'unknown'."""
    first = backend.open()
    audit_id = first.claim(make_record("o-1")).audit_id
    first.close()
    time.sleep(0.01)
    second = backend.open(stale_after=0.001)
    try:
        assert second.get(audit_id).status == "unknown"
    finally:
        second.close()


def test_threads_claiming_one_key_get_one_claim(store: AuditStore) -> None:
    """Eight threads claiming the same key at once: exactly one gets to send."""
    barrier = threading.Barrier(8)
    claims: list[Any] = []

    def worker() -> None:
        barrier.wait(timeout=30)
        claims.append(store.claim(make_record("t-1")))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(claims) == 8
    assert sum(c.replay is None for c in claims) == 1
    assert len({c.audit_id for c in claims}) == 1


@pytest.mark.slow
def test_processes_claiming_the_same_keys_get_one_claim_per_key(backend: Backend) -> None:
    """Eight processes claiming the same 50 keys at once: exactly 50 claims may send."""
    backend.open().close()
    keys = [f"proc-{n}" for n in range(50)]
    claims = run_claimers(backend.spec, keys, processes=8)
    assert len(claims) == 8 * 50
    winners = [key for key, _, fresh in claims if fresh]
    assert sorted(winners) == sorted(keys)
    assert len({audit_id for _, audit_id, _ in claims}) == 50


@pytest.mark.slow
def test_killed_sender_leaves_unknown_and_is_never_resent(backend: Backend) -> None:
    """A process killed after its claim leaves 'sending'; later it reads 'unknown' and replays."""
    backend.open().close()
    kill_during_send(backend.spec, "killed-1")
    time.sleep(0.01)
    store = backend.open(stale_after=0.001)
    try:
        [record] = store.list()
        assert record.status == "unknown"
        claim = store.claim(make_record("killed-1"))
        assert claim.replay is not None and claim.replay.status == "unknown"
    finally:
        store.close()


def test_ids_sort_by_creation_time() -> None:
    """Ids are 26 characters and sort in creation order, even within one millisecond."""
    ids = [new_id() for _ in range(1000)]
    assert all(len(i) == 26 for i in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == 1000


def test_ids_carry_the_millisecond_clock_in_crockford_base32() -> None:
    """An id's first 10 characters are its creation time in ms, Crockford base32 (ULID layout)."""
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    now = time.time() + 3600.0  # later than any id made so far, so not a same-ms increment
    prefix = new_id(now)[:10]
    ms = 0
    for char in prefix:
        ms = ms * 32 + alphabet.index(char)
    assert ms == int(now * 1000)


def test_a_batch_of_ids_counts_up_like_ids_made_one_by_one() -> None:
    """new_ids(n) in one millisecond: consecutive values (past a 1024 boundary), sorted, and
    still ordered against ids made one by one before and after."""
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    now = time.time() + 7200.0  # a fresh millisecond, later than any id made so far
    batch = [new_id(now), *new_ids(3000, now), new_id(now)]
    values = []
    for audit_id in batch:
        value = 0
        for char in audit_id[10:]:
            value = value * 32 + alphabet.index(char)
        values.append(value)
    assert batch == sorted(batch) and len(set(batch)) == len(batch)
    assert all(b - a == 1 for a, b in itertools.pairwise(values))
    assert {i[:10] for i in batch} == {new_id(now)[:10]}


def test_every_store_can_hold_its_snapshots(store: AuditStore) -> None:
    """hold_snapshots() is part of every store (a no-op where nothing is deferred)."""
    with store.hold_snapshots():
        [claim] = store.claim_many([make_record("held-1")], defer_snapshots=True)
    assert store.materialize_pending() >= 0
    assert store.get_eml(claim.audit_id) == make_record("held-1").eml


def test_a_dedicated_worker_thread_claims_and_finishes(store: AuditStore) -> None:
    """A store opened in one thread serves claim_many/finish_many from another (bulk's worker)."""
    done: list[list[str]] = []

    def worker() -> None:
        claims = store.claim_many([make_record(f"w-{n}") for n in range(8)] + [make_record()])
        store.finish_many([(c.audit_id, sent_result()) for c in claims])
        done.append([c.audit_id for c in claims])

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(timeout=60)
    assert len(done) == 1 and len(set(done[0])) == 9
    assert [store.get(i).status for i in done[0]] == ["sent"] * 9
    assert store.claim(make_record("w-3")).replay is not None


def test_finish_many_mixes_first_attempts_and_retries(store: AuditStore) -> None:
    """One finish_many renumbers a retried record's attempts after its earlier ones."""
    retried = store.claim(make_record("mix-1")).audit_id
    store.finish(retried, failed_result())
    assert store.claim(make_record("mix-1")).audit_id == retried
    fresh = store.claim_many([make_record("mix-2"), make_record(None)])
    items = [(fresh[0].audit_id, sent_result()), (retried, sent_result())]
    store.finish_many([*items, (fresh[1].audit_id, failed_result())])
    assert [a["number"] for a in store.get(retried).attempts] == [1, 2]
    assert [a["number"] for a in store.get(fresh[0].audit_id).attempts] == [1]
    assert store.get(fresh[1].audit_id).status == "failed"


def test_finish_many_with_an_unknown_id_records_nothing(store: AuditStore) -> None:
    """finish_many is one transaction: an unknown id raises not_found and no outcome is kept."""
    audit_id = store.claim(make_record()).audit_id
    with pytest.raises(AuditError) as info:
        store.finish_many([(audit_id, sent_result()), ("nope", sent_result())])
    assert info.value.code == "not_found"
    assert store.get(audit_id).status == "sending"


def test_a_failed_key_twice_in_one_batch_is_retried_once(store: AuditStore) -> None:
    """After 'failed', a batch holding the key twice retries it once; the second replays."""
    first = store.claim(make_record("twice")).audit_id
    store.finish(first, failed_result())
    claims = store.claim_many([make_record("twice"), make_record("twice")])
    assert [c.audit_id for c in claims] == [first, first]
    assert claims[0].replay is None
    assert claims[1].replay is not None and claims[1].replay.status == "unknown"
