"""Outbox workers on PostgreSQL: several at once deliver exactly once, the fleet-wide rate
limit comes from the store, a SIGKILLed worker's rows are taken over after its lease, and
SIGTERM to `fluxmail worker` drains and exits 0."""

from __future__ import annotations

import collections
import email
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from fluxmail import FluxMail
from fluxmail.worker import Worker
from tests.engine.test_bulk_crash import Gate
from tests.support.mailing import mailer_for
from tests.support.outbox import enqueue
from tests.support.servers import SMTPTestServer

pytestmark = pytest.mark.postgres

LEASE = 5.0
CHILD = """
import sys
from fluxmail import FluxMail
from fluxmail.worker import Worker
host, port, url = sys.argv[1], int(sys.argv[2]), sys.argv[3]
mailer = FluxMail(host=host, port=port, use_tls=False, sender="s@example.com", audit_url=url,
                  outbox_lease=5, outbox_poll_interval=0.2, retry_delay=0.05)
print(Worker(mailer, concurrency=2, batch=8).run().to_dict())
"""


def _mailer(server: SMTPTestServer, url: str, **options: Any) -> FluxMail:
    settings: dict[str, Any] = {
        "audit": True, "audit_url": url, "outbox_lease": LEASE, "outbox_poll_interval": 0.2,
        "retry_delay": 0.05, "retry_max_delay": 0.2,
    }  # fmt: skip
    settings.update(options)
    return mailer_for(server, **settings)


def _rows(url: str) -> dict[str, str]:
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT id, status FROM fluxmail_audit_messages").fetchall()
    return {str(i): str(s) for i, s in rows}


def _subjects(server: SMTPTestServer) -> collections.Counter[str]:
    return collections.Counter(
        str(email.message_from_bytes(m.data)["Subject"]) for m in server.received
    )


def _in_threads(workers: list[Worker]) -> list[Any]:
    reports: list[Any] = [None] * len(workers)

    def run(n: int) -> None:
        reports[n] = workers[n].run(once=True)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(workers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return reports


def test_two_workers_deliver_every_message_exactly_once(smtp_server: Any, pg_database: str) -> None:
    server = smtp_server()
    mailers = [_mailer(server, pg_database) for _ in range(2)]
    ids = enqueue(mailers[0], 60)
    reports = _in_threads([Worker(m, concurrency=2, batch=8) for m in mailers])
    assert sum(r.sent for r in reports) == 60 == sum(r.claimed for r in reports)
    rows = _rows(pg_database)
    assert {rows[i] for i in ids} == {"sent"}
    assert len(server.received) == 60 and set(_subjects(server).values()) == {1}
    assert server.connections <= 4
    for mailer in mailers:
        mailer.close()


def test_the_rate_limit_is_reserved_from_the_store_by_the_whole_fleet(
    smtp_server: Any, pg_database: str
) -> None:
    import psycopg

    server = smtp_server()
    rate = 20.0
    mailers = [_mailer(server, pg_database, rate_limit=rate) for _ in range(2)]
    enqueue(mailers[0], 20)
    started = time.time()
    workers = [Worker(m, concurrency=2, batch=8) for m in mailers]
    reports = _in_threads(workers)
    assert sum(r.sent for r in reports) == 20
    chunk = max(1, int(rate * 0.5))
    reserved = [w._core.limiter.reserved for w in workers]  # type: ignore[union-attr]
    assert all(n % chunk == 0 for n in reserved)
    assert sum(reserved) >= 20 and sum(reserved) <= 20 + 2 * chunk
    with psycopg.connect(pg_database) as conn:
        [(next_at,)] = conn.execute("SELECT next_at FROM fluxmail_outbox_rates").fetchall()
    # One schedule for both: every reserved slot is 1/rate after the one before it.
    assert float(next_at) >= started + sum(reserved) / rate - 1e-6
    for mailer in mailers:
        mailer.close()


def _child(server: SMTPTestServer, url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, server.host, str(server.port), url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.mark.slow
def test_a_killed_worker_is_taken_over_after_its_lease(smtp_server: Any, pg_database: str) -> None:
    server = smtp_server()
    gate = Gate(server, 10)
    mailer = _mailer(server, pg_database)
    ids = enqueue(mailer, 40)
    child = _child(server, pg_database)
    deadline = time.monotonic() + 30
    while not gate.tripped.is_set() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gate.tripped.is_set(), child.communicate()[1]
    time.sleep(0.4)  # outcomes already known get settled (SETTLE_DELAY is 0.2 s)
    child.kill()
    child.communicate(timeout=10)
    gate.release()
    time.sleep(LEASE + 0.5)  # the dead worker's leases run out
    report = Worker(mailer, concurrency=2).run(once=True)
    rows = _rows(pg_database)
    got = _subjects(server)
    assert "sending" not in rows.values() and "pending" not in {rows[i] for i in ids}
    unknown = [i for i in ids if rows[i] == "unknown"]
    assert len(unknown) <= 2 * 2  # the child's in-flight window: a message and one primed
    assert all(count == 1 for count in got.values())  # no duplicate at the server
    for n, audit_id in enumerate(ids):  # every message not unknown reached the server once
        assert rows[audit_id] == "unknown" or (rows[audit_id] == "sent" and got[f"m{n}"] == 1)
    assert report.claimed >= 1 and report.unknown == 0
    mailer.close()


@pytest.mark.slow
def test_sigterm_to_the_worker_command_exits_0_and_leaves_nothing_sending(
    smtp_server: Any, pg_database: str
) -> None:
    server = smtp_server()
    gate = Gate(server, 5)
    mailer = _mailer(server, pg_database)
    ids = enqueue(mailer, 30)
    env = {
        **os.environ, "FLUXMAIL_HOST": server.host, "FLUXMAIL_PORT": str(server.port),
        "FLUXMAIL_TLS": "false", "FLUXMAIL_SENDER": "s@example.com",
        "FLUXMAIL_AUDIT_URL": pg_database, "FLUXMAIL_OUTBOX_LEASE": "5",
        "FLUXMAIL_OUTBOX_POLL_INTERVAL": "0.2",
    }  # fmt: skip
    child = subprocess.Popen(
        [sys.executable, "-m", "fluxmail", "worker", "--concurrency", "1", "--grace", "10",
         "--json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not gate.tripped.is_set() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gate.tripped.is_set(), child.communicate()[1]
    child.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    gate.release()  # what is in flight finishes
    out, err = child.communicate(timeout=20)
    assert child.returncode == 0, err
    assert '"released"' in out
    rows = _rows(pg_database)
    found = [rows[i] for i in ids]
    assert "sending" not in found
    assert found.count("sent") == len(server.messages)
    assert found.count("pending") >= 1 and found.count("pending") + found.count("sent") == 30
    mailer.close()


@pytest.mark.slow
def test_a_postgresql_restart_mid_run_is_ridden_out(
    smtp_server: Any, pg_server: Any, pg_database: str
) -> None:
    server = smtp_server()
    gate = Gate(server, 5)
    mailer = _mailer(server, pg_database)
    ids = enqueue(mailer, 30)
    worker = Worker(mailer, concurrency=1, batch=4)
    reports: list[Any] = []
    thread = threading.Thread(target=lambda: reports.append(worker.run()))
    thread.start()
    try:
        assert gate.tripped.wait(30)
        pg_server.stop()  # while a message waits for its reply
        gate.release()
        time.sleep(1.0)
        pg_server.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = _rows(pg_database)
            if all(found[i] in ("sent", "unknown") for i in ids):
                break
            time.sleep(0.2)
    finally:
        worker.stop()
        thread.join(30)
    found = _rows(pg_database)
    assert {found[i] for i in ids} <= {"sent", "unknown"}, found
    got = _subjects(server)
    for n, audit_id in enumerate(ids):  # nothing sent twice; what is not unknown sent once
        assert got[f"m{n}"] <= 1 and (found[audit_id] == "unknown" or got[f"m{n}"] == 1)
    mailer.close()
