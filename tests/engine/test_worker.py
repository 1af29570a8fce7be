"""The outbox worker against a real aiosmtpd server and a SQLite store: exactly once, pipelined,
retries that follow the reply, scheduled messages, stop and once."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fluxmail import FluxMail
from fluxmail.audit.log import outbound_record
from fluxmail.audit.outbox import Queued
from fluxmail.errors import ConfigurationError
from fluxmail.worker import Worker
from tests.support.mailing import mailer_for
from tests.support.outbox import enqueue, statuses
from tests.support.servers import Faults, SMTPTestServer, reply, stall


def _mailer(server: SMTPTestServer, tmp_path: Path, **options: Any) -> FluxMail:
    settings: dict[str, Any] = {
        "audit_dir": str(tmp_path / "audit"),
        "retry_delay": 0.05,
        "retry_max_delay": 0.2,
        "outbox_lease": 5,
        "outbox_poll_interval": 0.2,
    }
    settings.update(options)
    return mailer_for(server, **settings)


def _drain(mailer: FluxMail, **options: Any) -> Any:
    """Run a worker until nothing is due any more (retries included; bounded)."""
    worker = Worker(mailer, **options)
    total = None
    for _ in range(60):
        report = worker.run(once=True)
        total = report if total is None else _add(total, report)
        if mailer.engine.audit.store().outbox().next_due() is None:
            return total
        time.sleep(0.1)
    raise AssertionError("the outbox never drained")


def _add(a: Any, b: Any) -> Any:
    for name, value in b.to_dict().items():
        setattr(a, name, getattr(a, name) + value)
    a.statuses.update(b.statuses)
    return a


def test_drains_every_message_exactly_once_over_few_connections(
    smtp_server: Any, tmp_path: Path
) -> None:
    server = smtp_server()
    mailer = _mailer(server, tmp_path)
    ids = enqueue(mailer, 30)
    report = Worker(mailer, concurrency=2, batch=8).run(once=True)
    assert report.claimed == 30 and report.sent == 30 and report.released == 0
    assert set(statuses(mailer, ids).values()) == {"sent"}
    assert len(server.messages) == 30 == server.deliveries
    assert server.connections <= 2  # the lanes' kept-open connections
    assert sum(server.pipelined) >= 20  # commands rode behind the previous final "."
    mailer.close()


def test_a_4xx_then_success_is_retried_once_and_keeps_both_attempts(
    smtp_server: Any, tmp_path: Path
) -> None:
    server = smtp_server(faults=Faults(mail=reply("451 4.3.0 Try later", times=1)))
    mailer = _mailer(server, tmp_path)
    [audit_id] = enqueue(mailer, 1)
    report = _drain(mailer, concurrency=1)
    assert report.retried == 1 and report.sent == 1
    record = mailer.engine.audit.store().get(audit_id)
    assert record.status == "sent"
    result = record.result()
    assert [a.number for a in result.attempts] == [1, 2]
    assert result.attempts[0].smtp_code == 451 and result.attempts[1].error is None
    assert len(server.messages) == 1
    mailer.close()


def test_a_5xx_fails_and_is_not_retried(smtp_server: Any, tmp_path: Path) -> None:
    server = smtp_server(faults=Faults(rcpt=reply("550 5.1.1 No such user")))
    mailer = _mailer(server, tmp_path)
    [audit_id] = enqueue(mailer, 1)
    report = _drain(mailer)
    assert report.failed == 1 and report.retried == 0
    assert statuses(mailer, [audit_id]) == {audit_id: "failed"}
    assert server.commands.count("MAIL") == 1
    mailer.close()


def test_a_4xx_until_the_deadline_fails(smtp_server: Any, tmp_path: Path) -> None:
    server = smtp_server(faults=Faults(mail=reply("451 4.3.0 Try later")))
    mailer = _mailer(server, tmp_path)
    [audit_id] = enqueue(mailer, 1, deadline=0.6)
    report = _drain(mailer)
    assert report.failed == 1 and report.retried >= 1
    record = mailer.engine.audit.store().get(audit_id)
    assert record.status == "failed"
    assert len(record.result().attempts) == report.retried + 1
    assert server.messages == []
    mailer.close()


def test_a_partial_try_retries_only_the_deferred_recipient(
    smtp_server: Any, tmp_path: Path
) -> None:
    later = "later@example.org"
    server = smtp_server(faults=Faults(rcpt_to={later: reply("450 4.2.1 Mailbox busy", times=1)}))
    mailer = _mailer(server, tmp_path)
    [audit_id] = enqueue(mailer, 1, recipients=["now@example.org", later])
    report = _drain(mailer)
    assert report.retried == 1 and report.sent == 1
    first, second = server.messages
    assert first.rcpt_tos == ["now@example.org"] and second.rcpt_tos == [later]
    result = mailer.engine.audit.store().get(audit_id).result()
    assert result.status == "sent"
    assert {a: r.status for a, r in result.recipients.items()} == {
        "now@example.org": "sent",
        later: "sent",
    }
    mailer.close()


def test_a_refused_connection_is_retried_when_the_server_is_back(
    smtp_server: Any, tmp_path: Path
) -> None:
    server = smtp_server()
    port = server.port
    server.stop()
    mailer = _mailer(server, tmp_path, port=port)
    [audit_id] = enqueue(mailer, 1)
    report = Worker(mailer).run(once=True)
    assert report.retried == 1
    assert statuses(mailer, [audit_id]) == {audit_id: "pending"}
    back = SMTPTestServer(server._ca)
    back._smtp_kwargs = server._smtp_kwargs
    _listen_on(back, port)
    try:
        report = _drain(mailer)
        assert report.sent == 1 and len(back.messages) == 1
        assert mailer.engine.audit.store().get(audit_id).result().attempts[0].error_code
    finally:
        back.stop()
    mailer.close()


def _listen_on(server: SMTPTestServer, port: int) -> None:
    """Start ``server`` on a given port (the refused one, now answering)."""
    import asyncio

    ready = threading.Event()
    server._loop = asyncio.new_event_loop()

    def run() -> None:
        loop = server._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        server._state.stopping = asyncio.Event()
        server._server = loop.run_until_complete(
            loop.create_server(server._factory, server.host, port)
        )
        server.port = port
        ready.set()
        loop.run_forever()

    server._thread = threading.Thread(target=run, daemon=True)
    server._thread.start()
    assert ready.wait(10)


def test_a_421_greeting_is_retried(smtp_server: Any, tmp_path: Path) -> None:
    # Twice: the lane's early connect (before the mark) and the send's own connect.
    server = smtp_server(faults=Faults(greeting=reply("421 4.3.2 Busy", times=2)))
    mailer = _mailer(server, tmp_path)
    [audit_id] = enqueue(mailer, 1)
    report = _drain(mailer, concurrency=1)
    assert report.retried == 1 and report.sent == 1
    assert statuses(mailer, [audit_id]) == {audit_id: "sent"}
    first = mailer.engine.audit.store().get(audit_id).result().attempts[0]
    assert first.smtp_code == 421
    mailer.close()


def test_a_message_due_later_waits(smtp_server: Any, tmp_path: Path) -> None:
    server = smtp_server()
    mailer = _mailer(server, tmp_path)
    [later] = enqueue(mailer, 1, delay=3600)
    [now] = enqueue(mailer, 1, prefix="now")
    report = Worker(mailer).run(once=True)
    assert report.sent == 1 and report.claimed == 1
    assert statuses(mailer, [later, now]) == {later: "pending", now: "sent"}
    mailer.close()


def test_stop_releases_what_waits_and_leaves_nothing_sending(
    smtp_server: Any, tmp_path: Path
) -> None:
    server = smtp_server(faults=Faults(end_of_data=stall(times=1, seconds=1.5)))
    mailer = _mailer(server, tmp_path)
    ids = enqueue(mailer, 20)
    worker = Worker(mailer, concurrency=1, batch=20, grace=10)
    threading.Timer(0.5, worker.stop).start()
    report = worker.run()
    found = statuses(mailer, ids)
    assert "sending" not in found.values()
    assert report.released >= 1 and report.released == list(found.values()).count("pending")
    assert list(found.values()).count("sent") == report.sent == len(server.messages)
    mailer.close()


def test_a_worker_needs_the_audit_store(smtp_server: Any) -> None:
    mailer = mailer_for(smtp_server())
    with pytest.raises(ConfigurationError) as caught:
        Worker(mailer)
    assert caught.value.code == "outbox_needs_audit"
    mailer.close()


def test_a_stored_message_that_cannot_be_rebuilt_fails_without_stopping_the_worker(
    smtp_server: Any, tmp_path: Path
) -> None:
    server = smtp_server()
    mailer = _mailer(server, tmp_path)
    good = enqueue(mailer, 2)
    draft = mailer.create("bad", ["bad@example.org"], "x")
    record = outbound_record(mailer.engine.config, draft.message, draft.as_bytes(), "pending")
    [bad] = (
        mailer.engine.audit.store()
        .outbox()
        .enqueue_many([Queued(record, {"v": 999}, time.time(), time.time() + 60)])
    )
    report = Worker(mailer).run(once=True)
    assert report.sent == 2 and report.failed == 1
    assert statuses(mailer, [*good, bad]) == {good[0]: "sent", good[1]: "sent", bad: "failed"}
    mailer.close()


def test_deliver_sends_only_the_given_rows_once(smtp_server: Any, tmp_path: Path) -> None:
    server = smtp_server()
    mailer = _mailer(server, tmp_path)
    ids = enqueue(mailer, 3)
    worker = Worker(mailer)
    assert worker.deliver([ids[1]]) == {ids[1]: "sent"}
    assert worker.deliver([ids[1]]) == {}  # a duplicate task: the row decides
    assert statuses(mailer, ids) == {ids[0]: "pending", ids[1]: "sent", ids[2]: "pending"}
    assert len(server.messages) == 1
    mailer.close()


def test_the_log_says_what_was_claimed_and_how_it_ended_never_the_body(
    smtp_server: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = smtp_server()
    mailer = _mailer(server, tmp_path)
    [audit_id] = enqueue(mailer, 1)
    with caplog.at_level("INFO", logger="fluxmail.worker"):
        Worker(mailer).run(once=True)
    text = caplog.text
    assert f"claimed 1 rows: {audit_id}" in text and f"outbox {audit_id} sent (reply 250)" in text
    assert "body 0" not in text
    mailer.close()
