"""enqueue() and a worker, end to end: what is enqueued reaches the server once, recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.mailing import mailer_for

pytest.importorskip("fluxmail.worker")


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_twenty_enqueued_twenty_delivered(
    smtp_server: Any, tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    from fluxmail.worker import Worker

    server = smtp_server()
    if store == "postgres":
        audit: dict[str, Any] = {"audit": True, "audit_url": request.getfixturevalue("pg_database")}
    else:
        audit = {"audit_dir": tmp_path / "audit"}
    mailer = mailer_for(server, **audit)
    ids = mailer.enqueue_many(
        [{"subject": f"n{n}", "recipients": f"u{n}@example.com", "body": "x"} for n in range(19)],
        batch_size=7,
    )
    ids.append(mailer.create("one", "one@example.com", "x", idempotency_key="k").enqueue())
    assert server.connections == 0
    Worker(mailer).run(once=True)
    assert server.deliveries == 20
    assert sorted(m.rcpt_tos[0] for m in server.messages) == sorted(
        [*(f"u{n}@example.com" for n in range(19)), "one@example.com"]
    )
    assert {mailer.audit.get(i).status for i in ids} == {"sent"}
    assert mailer.outbox.stats().pending == 0
    # The key is used: neither enqueue nor send() delivers it again.
    again = mailer.create("one", "one@example.com", "x", idempotency_key="k")
    assert again.enqueue() == ids[-1] and again.send().replayed
    assert server.deliveries == 20
    mailer.close()
