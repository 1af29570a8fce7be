"""Signed mail through a real SMTP server: what the server receives verifies and is the audit's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fluxmail.errors import MessageError
from tests.support.dkim import ed_pem, rsa_pem, verify_all, zone
from tests.support.mailing import SENDER, mailer_for

DOMAIN = SENDER.rpartition("@")[2]


def _dkim(rsa: str, ed: str) -> dict[str, Any]:
    return {"dkim_domain": DOMAIN, "dkim_selector": "rsa1", "dkim_private_key": rsa,
            "dkim_second_selector": "ed1", "dkim_second_private_key": ed}  # fmt: skip


def test_received_bytes_verify_and_equal_the_audit_snapshot(
    smtp_server: Any, tmp_path: Path
) -> None:
    rsa, ed = rsa_pem(), ed_pem()
    server = smtp_server(tls="starttls")
    mailer = mailer_for(server, audit_dir=tmp_path / "audit", **_dkim(rsa, ed))
    result = mailer.create(
        "Grüße", ["to@example.org"], "<p>hi</p>", html_body=True,
        attachments=[("a.bin", bytes(range(256)) * 64)],
    ).send()  # fmt: skip
    [received] = server.messages
    records = zone({"rsa1": rsa, "ed1": ed}, DOMAIN)
    assert verify_all(received.data, records) == [True, True]
    assert result.audit_id is not None
    assert mailer.audit.get_eml(result.audit_id) == received.data
    mailer.close()


def test_an_unaligned_from_never_reaches_the_server(smtp_server: Any) -> None:
    server = smtp_server()
    mailer = mailer_for(server, **_dkim(rsa_pem(), ed_pem()))
    with pytest.raises(MessageError) as info:
        mailer.create("x", ["to@example.org"], "b", sender="a@elsewhere.example").send()
    assert info.value.code == "dkim_unaligned" and server.connections == 0
    mailer.close()


def test_bulk_messages_all_verify(smtp_server: Any) -> None:
    rsa, ed = rsa_pem(), ed_pem()
    server = smtp_server()
    mailer = mailer_for(server, **_dkim(rsa, ed))
    items = [{"subject": f"n{n}", "recipients": f"u{n}@example.org", "body": f"hello {n}"}
             for n in range(12)]  # fmt: skip
    summary = mailer.send_many(items, concurrency=2).wait()
    assert summary.sent == 12, summary
    records = zone({"rsa1": rsa, "ed1": ed}, DOMAIN)
    assert len(server.messages) == 12
    assert all(verify_all(m.data, records) == [True, True] for m in server.messages)
    mailer.close()


def test_the_worker_sends_the_stored_signed_bytes(smtp_server: Any, tmp_path: Path) -> None:
    pytest.importorskip("fluxmail.worker")
    from fluxmail.worker import Worker

    rsa = rsa_pem()
    server = smtp_server()
    settings = {"dkim_domain": DOMAIN, "dkim_selector": "q1", "dkim_private_key": rsa}
    mailer = mailer_for(server, audit_dir=tmp_path / "audit", **settings)
    audit_id = mailer.create("queued", ["q@example.org"], "later").enqueue()
    stored = mailer.audit.get_eml(audit_id)
    assert server.connections == 0 and stored.startswith(b"DKIM-Signature:")
    # A worker without the key (another host): it signs nothing, it sends the row as stored.
    worker_mailer = mailer_for(server, audit_dir=tmp_path / "audit")
    Worker(worker_mailer).run(once=True)
    [received] = server.messages
    assert received.data == stored
    assert verify_all(received.data, zone({"q1": rsa}, DOMAIN)) == [True]
    mailer.close()
    worker_mailer.close()
