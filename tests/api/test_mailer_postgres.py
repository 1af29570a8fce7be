"""A fleet sharing one PostgreSQL audit store: one delivery per key, clean failures when down."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from fluxmail import AuditError
from tests.support.mailing import mailer_for
from tests.support.postgres import PgServer, start_server
from tests.support.servers import Faults, stall

pytestmark = pytest.mark.postgres

KEYS = [f"order-{n}" for n in range(50)]


def _send_keys(host: str, port: int, audit_url: str, seed: int) -> None:
    from fluxmail import FluxMail

    mailer = FluxMail(
        host=host, port=port, use_tls=False, sender="s@example.com", audit_url=audit_url
    )
    keys = list(KEYS)
    random.Random(seed).shuffle(keys)
    for key in keys:
        mailer.create(f"Receipt {key}", f"{key}@example.com", "thanks", idempotency_key=key).send()


@pytest.mark.slow
def test_eight_processes_same_fifty_keys_deliver_fifty(smtp_server: Any, pg_database: str) -> None:
    """8 processes send the same 50 keys at once through one PostgreSQL store: 50 deliveries."""
    server = smtp_server()
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_send_keys, args=(server.host, server.port, pg_database, seed))
        for seed in range(8)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * 8
    assert server.deliveries == 50
    assert sorted(m.rcpt_tos[0] for m in server.messages) == sorted(
        f"{k}@example.com" for k in KEYS
    )


@pytest.fixture
def own_pg() -> Iterator[PgServer]:
    """A PostgreSQL server of this test's own, free to be stopped and started."""
    server = start_server()
    yield server
    server.remove()


def test_store_down_means_nothing_sent_then_recovers(smtp_server: Any, own_pg: PgServer) -> None:
    """PostgreSQL restarted mid-run: sends fail with an audit error and no SMTP traffic, then
    succeed again once it is back."""
    server = smtp_server()
    mailer = mailer_for(server, audit=True, audit_url=own_pg.url())
    assert mailer.create("one", "a@example.com", "x").send().status == "sent"
    own_pg.stop()
    with pytest.raises(AuditError) as info:
        mailer.create("two", "a@example.com", "x").send()
    assert info.value.code == "audit_unavailable" and server.connections == 1
    assert own_pg.password not in str(info.value)
    own_pg.start()
    assert mailer.create("three", "a@example.com", "x").send().status == "sent"
    assert server.deliveries == 2
    assert [r.subject for r in mailer.audit.list()] == ["three", "one"]


def _send_one_key(host: str, port: int, audit_url: str) -> None:
    from fluxmail import FluxMail

    mailer = FluxMail(
        host=host, port=port, use_tls=False, sender="s@example.com", audit_url=audit_url
    )
    mailer.create("Race", "a@example.com", "same body", idempotency_key="kill-1").send()


def test_killed_sender_is_unknown_and_never_resent(smtp_server: Any, pg_database: str) -> None:
    """SIGKILL while the server stalls after ".": another instance replays unknown, no resend."""
    server = smtp_server(faults=Faults(end_of_data=stall(seconds=20)))
    child = multiprocessing.get_context("spawn").Process(
        target=_send_one_key, args=(server.host, server.port, pg_database)
    )
    child.start()
    deadline = time.monotonic() + 30
    while not server.received and time.monotonic() < deadline:
        time.sleep(0.02)
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.join(timeout=10)
    mailer = mailer_for(server, audit=True, audit_url=pg_database, sender="s@example.com")
    result = mailer.create("Race", "a@example.com", "same body", idempotency_key="kill-1").send()
    assert result.replayed and result.status == "unknown" and len(server.received) == 1
