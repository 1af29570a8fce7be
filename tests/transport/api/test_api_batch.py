"""Bulk over HTTP through the batch endpoints: Postmark ``POST /email/batch`` (500 a request)
and Resend ``POST /emails/batch`` (100 a request, Idempotency-Key), against real HTTPS servers
on 127.0.0.1 that answer as the API references document, one result per message."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fluxmail.errors import AuthenticationFailed, MessageError, OutcomeUnknown
from tests.support.api_batch import INACTIVE, bulk_items, postmark_api, resend_api, run_bulk
from tests.support.api_mailing import KEY, PDF, SENDER, api_mailer
from tests.support.http_api import HttpApiServer, Reply

Server = Callable[..., HttpApiServer]
FACES = pytest.mark.parametrize("face", ["sync", "async"])


@FACES
def test_postmark_sends_one_batch_with_per_message_outcomes(
    http_api: Server, tmp_path: Path, face: str
) -> None:
    """Seven messages, one request with the documented array; the inactive one failed, the
    others queued with their MessageID, in the results and in the audit records."""
    server = http_api(default=postmark_api)
    mailer = api_mailer(server, "postmark", audit_dir=tmp_path)
    outcomes = sorted(run_bulk(mailer, bulk_items(7), face), key=lambda o: o.index)
    [seen] = server.requests
    assert (seen.method, seen.path) == ("POST", "/email/batch")
    assert seen.headers["x-postmark-server-token"] == KEY
    assert seen.headers["accept"] == "application/json"
    body = seen.json()
    assert isinstance(body, list) and len(body) == 7
    assert body[2] == {
        "From": SENDER, "To": "u2@example.com", "Subject": "n2", "TextBody": "hello 2",
        "Headers": [{"Name": "Message-ID", "Value": "<m2@shop.example.com>"}],
        "MessageStream": "outbound",
    }  # fmt: skip
    assert [o.status for o in outcomes] == ["queued"] * 3 + ["failed"] + ["queued"] * 3
    assert outcomes[3].result.recipients["u3@example.com"].status == "rejected"
    assert INACTIVE in (outcomes[3].result.recipients["u3@example.com"].text or "")
    assert [o.result.provider_message_id for o in outcomes] == [
        "pm-0", "pm-1", "pm-2", None, "pm-4", "pm-5", "pm-6"
    ]  # fmt: skip
    records = {r.message_id: r for r in mailer.audit.list()}
    assert len(records) == 7
    assert records["<m5@shop.example.com>"].provider_message_id == "pm-5"
    assert records["<m5@shop.example.com>"].status == "queued"
    assert records["<m3@shop.example.com>"].status == "failed"
    mailer.close()


@FACES
def test_resend_sends_ceil_n_over_100_requests_each_with_its_own_key(
    http_api: Server, face: str
) -> None:
    """150 messages: two batch requests (100 + 50), each with an Idempotency-Key of its own."""
    server = http_api(default=resend_api)
    mailer = api_mailer(server, "resend")
    outcomes = run_bulk(mailer, bulk_items(150), face)
    assert len(outcomes) == 150 and all(o.status == "queued" for o in outcomes)
    assert server.count == math.ceil(150 / 100)
    first, second = server.requests
    assert {first.path, second.path} == {"/emails/batch"}
    assert (len(first.json()), len(second.json())) == (100, 50)
    assert first.headers["authorization"] == f"Bearer {KEY}"
    assert first.json()[0] == {
        "from": SENDER, "to": ["u0@example.com"], "subject": "n0", "text": "hello 0",
        "headers": {"Message-ID": "<m0@shop.example.com>"},
    }  # fmt: skip
    keys = {first.headers["idempotency-key"], second.headers["idempotency-key"]}
    assert len(keys) == 2 and all(k.startswith("batch-") and len(k) <= 256 for k in keys)
    ids = sorted(o.result.provider_message_id for o in outcomes)
    assert ids == sorted(f"re-{i}" for i in range(150))
    mailer.close()


@FACES
def test_a_drop_after_the_batch_body_makes_every_message_unknown(
    http_api: Server, tmp_path: Path, face: str
) -> None:
    """Postmark has no idempotency key: a batch whose reply was lost is never resent."""
    server = http_api(default=Reply(drop=True, times=None))
    mailer = api_mailer(server, "postmark", audit_dir=tmp_path, max_retries=3)
    outcomes = run_bulk(mailer, bulk_items(5), face)
    assert server.count == 1
    assert [o.status for o in outcomes] == ["unknown"] * 5
    assert all(isinstance(o.error, OutcomeUnknown) for o in outcomes)
    assert {r.status for r in mailer.audit.list()} == {"unknown"}
    mailer.close()


def test_resend_retries_a_dropped_batch_with_the_same_key(http_api: Server) -> None:
    """Resend's batch endpoint deduplicates by Idempotency-Key: the same request again."""
    server = http_api(default=resend_api)
    server.script(Reply(drop=True))
    mailer = api_mailer(server, "resend", max_retries=2)
    outcomes = run_bulk(mailer, bulk_items(4), "sync")
    assert [o.status for o in outcomes] == ["queued"] * 4
    first, second = server.requests
    assert first.body == second.body and first.path == "/emails/batch"
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    mailer.close()


def test_a_refused_key_fails_every_message_of_the_batch(http_api: Server) -> None:
    """A 401 answers for the whole request: every message AuthenticationFailed, not retried."""
    body = {"ErrorCode": 10, "Message": "The Server Token you provided was invalid."}
    server = http_api(default=Reply(401, body=body, times=None))
    mailer = api_mailer(server, "postmark")
    outcomes = run_bulk(mailer, bulk_items(3), "sync")
    assert server.count == 1
    assert all(isinstance(o.error, AuthenticationFailed) for o in outcomes)
    mailer.close()


def test_resend_sends_a_message_with_attachments_alone(http_api: Server) -> None:
    """Resend's batch endpoint takes no attachments: that message goes to /emails."""
    server = http_api(default=resend_api)
    mailer = api_mailer(server, "resend")
    items: list[Any] = bulk_items(4)
    items[1] = mailer.create(
        "n1", "u1@example.com", "x", attachments=[("r.pdf", PDF, "application/pdf")]
    )
    outcomes = run_bulk(mailer, items, "sync")
    assert all(o.status == "queued" for o in outcomes)
    paths = sorted(s.path for s in server.requests)
    assert paths == ["/emails", "/emails/batch"]
    [batch] = [s for s in server.requests if s.path == "/emails/batch"]
    assert [e["subject"] for e in batch.json()] == ["n0", "n2", "n3"]
    mailer.close()


def test_a_rate_limited_run_sends_one_message_per_request(http_api: Server) -> None:
    """The limiter paces messages: no batch can outrun it."""
    server = http_api(default=postmark_api)
    mailer = api_mailer(server, "postmark")
    outcomes = run_bulk(mailer, bulk_items(3), "sync", rate_limit=200)
    assert len(outcomes) == 3 and [s.path for s in server.requests] == ["/email"] * 3
    mailer.close()


def test_a_message_the_api_cannot_carry_fails_alone(http_api: Server) -> None:
    """Postmark needs a To: a Cc-only message is that message's MessageError before any
    request; the others still go in one batch."""
    server = http_api(default=postmark_api)
    mailer = api_mailer(server, "postmark")
    items: list[Any] = bulk_items(3)
    items[1] = mailer.create("n1", [], "x", cc=["cy@example.com"])
    outcomes = sorted(run_bulk(mailer, items, "sync"), key=lambda o: o.index)
    assert [o.status for o in outcomes] == ["queued", "failed", "queued"]
    assert isinstance(outcomes[1].error, MessageError) and outcomes[1].result is None
    [seen] = server.requests
    assert [m["Subject"] for m in seen.json()] == ["n0", "n2"]
    mailer.close()


def test_a_run_cancelled_during_a_batch_leaves_every_message_unknown(
    http_api: Server, tmp_path: Path
) -> None:
    """The interrupt rule covers the whole request: every message of the batch in flight is
    recorded unknown (it may have been accepted), none is left 'sending' or resent."""
    server = http_api(default=Reply(200, body=[], delay=10, times=None))
    mailer = api_mailer(server, "postmark", audit_dir=tmp_path)

    async def main() -> None:
        async def consume() -> None:
            async for _ in mailer.send_many_async(bulk_items(4), concurrency=1, progress=False):
                pass

        task = asyncio.ensure_future(consume())
        for _ in range(200):  # bounded: until the batch request has arrived
            if server.count:
                break
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert server.count == 1
    assert [r.status for r in mailer.audit.list()] == ["unknown"] * 4
    mailer.close()
