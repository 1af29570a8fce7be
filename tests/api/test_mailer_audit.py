"""send() writes its audit record first and never sends a keyed message twice (real servers)."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fluxmail import AuditError, DeliveryError, OutcomeUnknown, Refused
from fluxmail.audit import open_store
from tests.support.mailing import Send, mailer_for
from tests.support.servers import Faults, reply, stall


def test_sent_message_has_a_complete_record(smtp_server: Any, send: Send, tmp_path: Path) -> None:
    """audit_id points at a record with outcome, attempts, reply and the exact bytes; BCC hidden."""
    server = smtp_server()
    mailer = mailer_for(server, audit_dir=tmp_path / "audit")
    draft = mailer.create(
        "Receipt", "a@example.com", "x", bcc="boss@example.com", metadata={"order": 7}
    )
    result = send(draft)
    record = mailer.audit.get(result.audit_id or "")
    assert record.status == "sent" and record.message_id == draft.message_id
    assert record.bcc is None and mailer.audit.get(record.id, include_bcc=True).bcc == (
        "boss@example.com",
    )
    assert record.metadata == {"order": 7} and record.final_reply is not None
    assert len(record.attempts) == 1 and record.host == server.host
    assert mailer.audit.get_eml(record.id) == draft.as_bytes()
    assert [r.id for r in mailer.audit.list(status="sent")] == [record.id]


def test_record_is_committed_before_the_transaction(smtp_server: Any, tmp_path: Path) -> None:
    """While the server holds the final reply, the record already reads 'sending'."""
    server = smtp_server(faults=Faults(end_of_data=stall(seconds=3)))
    folder = tmp_path / "audit"
    mailer = mailer_for(server, audit_dir=folder, data_timeout=2.0)
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            mailer.create("Hi", "a@example.com", "x").send()
        except BaseException as exc:
            outcome.append(exc)

    sender = threading.Thread(target=run)
    sender.start()
    deadline = time.monotonic() + 10
    while not server.received and time.monotonic() < deadline:
        time.sleep(0.02)
    seen = open_store(directory=folder, explicit=True).list()
    sender.join(timeout=30)
    assert [r.status for r in seen] == ["sending"]
    assert isinstance(outcome[0], OutcomeUnknown)
    assert mailer.audit.get(seen[0].id).status == "unknown"


def test_dry_run_is_recorded(smtp_server: Any, send: Send, tmp_path: Path) -> None:
    """A dry run leaves a 'dry_run' record and contacts nobody."""
    server = smtp_server()
    mailer = mailer_for(server, audit_dir=tmp_path / "audit")
    result = send(mailer.create("Hi", "a@example.com", "x"), dry_run=True)
    assert mailer.audit.get(result.audit_id or "").status == "dry_run"
    assert server.connections == 0


def test_same_key_is_sent_once(smtp_server: Any, send: Send, tmp_path: Path) -> None:
    """A second send with the same key returns the recorded result without contacting the server."""
    server = smtp_server()
    mailer = mailer_for(server, audit_dir=tmp_path / "audit")
    first = send(mailer.create("Hi", "a@example.com", "x", idempotency_key="order-1"))
    again = send(mailer.create("Hi", "a@example.com", "x", idempotency_key="order-1"))
    assert again.replayed and again.audit_id == first.audit_id and again.status == "sent"
    assert server.deliveries == 1 and server.connections == 1


def test_same_key_different_message_is_a_conflict(smtp_server: Any, tmp_path: Path) -> None:
    """The same key with other content is idempotency_conflict, before any traffic."""
    server = smtp_server()
    mailer = mailer_for(server, audit_dir=tmp_path / "audit")
    mailer.create("Hi", "a@example.com", "x", idempotency_key="k").send()
    with pytest.raises(AuditError) as info:
        mailer.create("Hi", "a@example.com", "changed", idempotency_key="k").send()
    assert info.value.code == "idempotency_conflict" and server.connections == 1


def test_failed_key_may_be_sent_again_on_the_same_record(smtp_server: Any, tmp_path: Path) -> None:
    """Refused before anything was accepted: a retry with the key is allowed and recorded."""
    server = smtp_server(faults=Faults(mail=reply("550 5.7.1 Not now", times=1)))
    mailer = mailer_for(server, audit_dir=tmp_path / "audit")
    with pytest.raises(Refused) as info:
        mailer.create("Hi", "a@example.com", "x", idempotency_key="k").send()
    result = mailer.create("Hi", "a@example.com", "x", idempotency_key="k").send()
    assert result.status == "sent" and not result.replayed
    assert info.value.result is not None and result.audit_id == info.value.result.audit_id
    assert len(mailer.audit.get(result.audit_id or "").attempts) == 2
    assert server.deliveries == 1


def test_explicit_unwritable_folder_sends_nothing(smtp_server: Any, tmp_path: Path) -> None:
    """FLUXMAIL_AUDIT_DIR that cannot be written: AuditError and no connection."""
    server = smtp_server()
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    mailer = mailer_for(server, audit_dir=blocker / "audit")
    with pytest.raises(AuditError) as info:
        mailer.create("Hi", "a@example.com", "x").send()
    assert info.value.code == "audit_unwritable" and server.connections == 0


def test_default_folder_unwritable_falls_back_to_temp(
    smtp_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """No folder configured and .fluxmail/ impossible: a temp folder, one warning, message sent."""
    server = smtp_server()
    Path(".fluxmail").write_text("a file where the folder should be")
    mailer = mailer_for(server, audit=True)
    with caplog.at_level(logging.WARNING, logger="fluxmail"):
        result = mailer.create("Hi", "a@example.com", "x").send()
        mailer.create("Hi again", "a@example.com", "x").send()
    assert result.status == "sent" and result.audit_id is not None
    warnings = [r for r in caplog.records if "audit" in r.getMessage().lower()]
    assert len(warnings) <= 1 and server.deliveries == 2


def _send_with_key(host: str, port: int, folder: str, key: str) -> None:
    from fluxmail import FluxMail

    mailer = FluxMail(host=host, port=port, use_tls=False, sender="s@example.com", audit_dir=folder)
    mailer.create("Race", "a@example.com", "same body", idempotency_key=key).send()


def test_two_processes_same_key_deliver_once(smtp_server: Any, tmp_path: Path) -> None:
    """Two processes sending with one idempotency key at the same moment: one delivery."""
    server = smtp_server()
    ctx = multiprocessing.get_context("spawn")
    args = (server.host, server.port, str(tmp_path / "audit"), "race-1")
    procs = [ctx.Process(target=_send_with_key, args=args) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert server.deliveries == 1


def test_sender_killed_after_final_dot_is_unknown_never_resent(
    smtp_server: Any, tmp_path: Path
) -> None:
    """SIGKILL while the server stalls after ".": the record ends unknown and no resend follows."""
    server = smtp_server(faults=Faults(end_of_data=stall(seconds=20)))
    folder = tmp_path / "audit"
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(
        target=_send_with_key, args=(server.host, server.port, str(folder), "kill-1")
    )
    child.start()
    deadline = time.monotonic() + 20
    while not server.received and time.monotonic() < deadline:
        time.sleep(0.02)
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.join(timeout=10)
    [record] = open_store(directory=folder, explicit=True, stale_after=0.0).list()
    assert record.status == "unknown"
    mailer = mailer_for(server, audit_dir=folder, sender="s@example.com")
    again = mailer.create("Race", "a@example.com", "same body", idempotency_key="kill-1")
    result = again.send()
    assert result.replayed and result.status == "unknown"
    assert len(server.received) == 1


def test_message_error_found_at_the_server_records_failed(smtp_server: Any, tmp_path: Path) -> None:
    """No SMTPUTF8 for a UTF-8 local part: the record says failed (nothing sent), not unknown."""
    server = smtp_server(smtputf8=False)
    mailer = mailer_for(server, audit_dir=tmp_path / "audit")
    with pytest.raises(DeliveryError) as info:
        mailer.create("Hi", "josé@example.com", "x", idempotency_key="utf8").send()
    assert info.value.code == "smtputf8_required"
    [record] = mailer.audit.list()
    assert record.status == "failed" and server.deliveries == 0
