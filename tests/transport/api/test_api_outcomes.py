"""The outcome rules every HTTP API transport shares (fluxmail/transport/api/base.py), against
a real HTTPS server on 127.0.0.1: 2xx, 401/403, 4xx, 429 with Retry-After, 5xx, drops and
stalls after the body was sent (SendGrid: no idempotency key; Resend: the same key again)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fluxmail.errors import AuthenticationFailed, DeliveryError, OutcomeUnknown, Refused, TLSFailure
from tests.support.api_mailing import KEY, api_mailer
from tests.support.http_api import HttpApiServer, Reply

Server = Callable[..., HttpApiServer]
ACCEPTED = Reply(202, headers={"X-Message-Id": "sg-msg-1"}, times=None)


def _draft(mailer: Any, **fields: Any) -> Any:
    return mailer.create("Hi", "bob@example.com", "Hello Bob", **fields)


def test_2xx_is_queued_with_the_provider_id_in_result_and_audit(
    http_api: Server, send: Any, tmp_path: Path
) -> None:
    """202: queued (accepted, final delivery unknown), the X-Message-Id kept everywhere."""
    server = http_api(default=ACCEPTED)
    mailer = api_mailer(server, "sendgrid", audit_dir=tmp_path)
    result = send(_draft(mailer))
    assert result.status == "queued" and result.ok
    assert result.provider_message_id == "sg-msg-1"
    assert result.recipients["bob@example.com"].status == "sent"
    assert result.transport == f"sendgrid+api://127.0.0.1:{server.port}"
    record = mailer.audit.get(result.audit_id)
    assert record.status == "queued" and record.provider_message_id == "sg-msg-1"
    assert record.transport == result.transport
    [seen] = server.requests
    assert seen.method == "POST" and seen.path == "/v3/mail/send"
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    mailer.close()


@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_are_authentication_failures_never_retried(
    http_api: Server, send: Any, status: int
) -> None:
    """A refused key stays refused: AuthenticationFailed after one request."""
    body = {"errors": [{"message": "The provided authorization grant is invalid"}]}
    server = http_api(default=Reply(status, body=body, times=None))
    mailer = api_mailer(server, "sendgrid", max_retries=3)
    with pytest.raises(AuthenticationFailed) as info:
        send(_draft(mailer))
    assert info.value.code == "auth_failed" and info.value.details["http_status"] == status
    assert "authorization grant is invalid" in info.value.message
    assert info.value.result is not None and info.value.result.status == "failed"
    assert server.count == 1
    mailer.close()


@pytest.mark.parametrize("status", [400, 422])
def test_validation_errors_fail_with_the_apis_text(
    http_api: Server, send: Any, status: int
) -> None:
    """400/422: failed with the API's own words, every recipient rejected, not retried."""
    body = {"statusCode": status, "name": "validation_error", "message": "Invalid `to` field."}
    server = http_api(default=Reply(status, body=body, times=None))
    mailer = api_mailer(server, "resend", max_retries=3)
    with pytest.raises(Refused) as info:
        send(_draft(mailer))
    assert info.value.code == "api_rejected"
    assert "validation_error: Invalid `to` field." in info.value.message
    result = info.value.result
    assert result is not None and result.status == "failed"
    bob = result.recipients["bob@example.com"]
    assert bob.status == "rejected" and bob.code == status and "Invalid `to`" in bob.text
    assert server.count == 1
    mailer.close()


def test_429_with_retry_after_is_retried_then_sent(http_api: Server, send: Any) -> None:
    """Retry-After: 1 is honoured (the backoff alone would be 10 ms), then the send succeeds."""
    server = http_api(default=ACCEPTED)
    server.script(Reply(429, headers={"Retry-After": "1"}, body={"errors": [{"message": "slow"}]}))
    mailer = api_mailer(server, "sendgrid", max_retries=2)
    started = time.monotonic()
    result = send(_draft(mailer))
    assert time.monotonic() - started >= 0.9
    assert result.status == "queued" and server.count == 2
    assert [a.error_code for a in result.attempts] == ["rate_limited", None]
    mailer.close()


def test_retry_after_beyond_the_deadline_stops_the_retries(http_api: Server, send: Any) -> None:
    """Retry-After of an hour and FLUXMAIL_RETRY_DEADLINE=5: one request, rate_limited."""
    server = http_api(default=Reply(429, headers={"Retry-After": "3600"}, times=None))
    mailer = api_mailer(server, "sendgrid", max_retries=5, retry_deadline=5)
    started = time.monotonic()
    with pytest.raises(DeliveryError) as info:
        send(_draft(mailer))
    assert time.monotonic() - started < 3
    assert info.value.code == "rate_limited" and info.value.transient
    assert info.value.result is not None
    assert info.value.result.recipients["bob@example.com"].status == "deferred"
    assert server.count == 1
    mailer.close()


def test_5xx_is_retried_within_max_retries(http_api: Server, send: Any) -> None:
    """Three 500s and max_retries=2: three requests, then api_unavailable."""
    server = http_api(default=Reply(500, body={"errors": [{"message": "boom"}]}, times=None))
    mailer = api_mailer(server, "sendgrid", max_retries=2)
    with pytest.raises(DeliveryError) as info:
        send(_draft(mailer))
    assert info.value.code == "api_unavailable" and "boom" in info.value.message
    assert server.count == 3
    mailer.close()


def test_a_503_then_202_is_sent(http_api: Server, send: Any) -> None:
    server = http_api(default=ACCEPTED)
    server.script(Reply(503, body="upstream unavailable"))
    mailer = api_mailer(server, "sendgrid", max_retries=1)
    assert send(_draft(mailer)).status == "queued" and server.count == 2
    mailer.close()


def test_a_drop_after_the_body_is_unknown_and_never_resent(http_api: Server, send: Any) -> None:
    """SendGrid has no idempotency key: the request may have been taken, so one request only."""
    server = http_api(default=Reply(drop=True, times=None))
    mailer = api_mailer(server, "sendgrid", max_retries=3)
    with pytest.raises(OutcomeUnknown) as info:
        send(_draft(mailer))
    result = info.value.result
    assert result is not None and result.status == "unknown"
    assert result.recipients["bob@example.com"].status == "unknown"
    assert "not resent" in info.value.message
    assert server.count == 1
    mailer.close()


def test_a_stall_past_the_command_timeout_is_unknown(http_api: Server, send: Any) -> None:
    """The reply does not come within FLUXMAIL_COMMAND_TIMEOUT: unknown, one request."""
    server = http_api(default=Reply(202, delay=5, times=None))
    mailer = api_mailer(server, "sendgrid", max_retries=3, command_timeout=0.5)
    with pytest.raises(OutcomeUnknown):
        send(_draft(mailer))
    assert server.count == 1
    mailer.close()


def test_resend_retries_a_drop_with_the_same_idempotency_key(http_api: Server, send: Any) -> None:
    """Resend deduplicates by Idempotency-Key: the drop is retried with the same key, sent."""
    server = http_api(default=Reply(200, body={"id": "re-1"}, times=None))
    server.script(Reply(drop=True))
    mailer = api_mailer(server, "resend", max_retries=2)
    result = send(_draft(mailer, message_id="<order-42@shop.example.com>"))
    assert result.status == "queued" and result.provider_message_id == "re-1"
    first, second = server.requests
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    assert first.headers["idempotency-key"] == "order-42@shop.example.com"
    assert first.body == second.body
    mailer.close()


def test_resend_with_retries_exhausted_after_a_drop_is_unknown(http_api: Server, send: Any) -> None:
    """A drop then a 500 with no retry left: the first may have been taken, so unknown."""
    server = http_api(default=Reply(500, times=None))
    server.script(Reply(drop=True))
    mailer = api_mailer(server, "resend", max_retries=1)
    with pytest.raises(OutcomeUnknown):
        send(_draft(mailer))
    assert server.count == 2
    mailer.close()


def test_a_redirect_is_never_followed(http_api: Server, send: Any) -> None:
    """A 3xx could carry the key elsewhere: api_redirect, and the other host sees nothing."""
    other = http_api()
    server = http_api(default=Reply(307, headers={"Location": other.url + "/v3/mail/send"}))
    mailer = api_mailer(server, "sendgrid", max_retries=2)
    with pytest.raises(DeliveryError) as info:
        send(_draft(mailer))
    assert info.value.code == "api_redirect" and other.count == 0 and server.count == 1
    mailer.close()


def test_an_untrusted_certificate_is_a_tls_failure_not_retried(http_api: Server, send: Any) -> None:
    """fluxmail's TLS policy: the test CA is not trusted unless FLUXMAIL_CA_FILE says so."""
    server = http_api(cert="untrusted")
    mailer = api_mailer(server, "sendgrid", max_retries=2)
    with pytest.raises(TLSFailure) as info:
        send(_draft(mailer))
    assert info.value.code == "certificate_error" and server.count == 0
    mailer.close()


def test_plain_http_to_loopback_is_allowed(http_api: Server, send: Any) -> None:
    server = http_api(tls=False, default=ACCEPTED)
    mailer = api_mailer(server, "sendgrid")
    assert send(_draft(mailer)).status == "queued" and server.count == 1
    mailer.close()


def test_a_held_mailer_reuses_one_connection(http_api: Server) -> None:
    """``with mailer:`` keeps the loop's client: three sends, one TCP connection."""
    server = http_api(default=ACCEPTED)
    with api_mailer(server, "sendgrid") as mailer:
        for _ in range(3):
            assert _draft(mailer).send().status == "queued"
    assert server.count == 3 and server.connections == 1


def test_send_many_goes_through_the_api_with_an_audit_record_each(
    http_api: Server, tmp_path: Path
) -> None:
    """Bulk over HTTP: Resend's batch endpoint, each outcome queued with its provider id
    recorded (tests/transport/api/test_api_batch.py has the batch rules)."""
    ids = iter(range(100))

    def resend(seen: Any) -> Reply:
        return Reply(200, body={"data": [{"id": f"re-{next(ids)}"} for _ in seen.json()]})

    server = http_api(default=resend)
    mailer = api_mailer(server, "resend", audit_dir=tmp_path)
    items = [
        {"subject": f"n{i}", "recipients": [f"u{i}@example.com"], "body": "x"} for i in range(8)
    ]
    outcomes = list(mailer.send_many(items, concurrency=2, progress=False))
    assert len(outcomes) == 8 and all(o.ok for o in outcomes)
    assert server.count <= 2 and server.requests[0].path == "/emails/batch"
    records = mailer.audit.list()
    assert len(records) == 8 and all(r.status == "queued" for r in records)
    assert sorted(r.provider_message_id or "" for r in records) == sorted(
        f"re-{i}" for i in range(8)
    )
    assert server.connections <= 2
    mailer.close()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 3 ", 3.0),
        ("Wed, 02 Dec 2026 01:00:30 GMT", 30.0),
        ("Wed, 02 Dec 2026 00:59:00 GMT", 0.0),  # in the past: no wait
        ("soon", None),
        ("-5", None),
        (None, None),
    ],
)
def test_retry_after_reads_seconds_and_http_dates(
    value: str | None, expected: float | None
) -> None:
    """RFC 9110 section 10.2.3: delay-seconds or an HTTP-date (relative to now)."""
    from datetime import datetime, timezone

    from fluxmail.transport.api.outcomes import retry_after

    now = datetime(2026, 12, 2, 1, 0, 0, tzinfo=timezone.utc).timestamp()
    assert retry_after(value, now) == expected


def test_a_413_is_message_too_large(http_api: Server) -> None:
    server = http_api(default=Reply(413, body={"errors": [{"message": "too big"}]}, times=None))
    mailer = api_mailer(server, "sendgrid", max_retries=2)
    with pytest.raises(Refused) as info:
        _draft(mailer).send()
    assert info.value.code == "message_too_large" and server.count == 1
    mailer.close()


def test_a_refused_connection_is_retried_then_fails(http_api: Server) -> None:
    """Nothing listens: nothing reached the provider, so each retry is safe; then it fails."""
    server = http_api()
    url = server.url
    server.stop()
    mailer = api_mailer(server, "sendgrid", max_retries=2, api_base_url=url)
    with pytest.raises(DeliveryError) as info:
        _draft(mailer).send()
    assert info.value.code == "connection_failed" and info.value.transient
    assert info.value.result is not None and len(info.value.result.attempts) == 3
    assert info.value.result.recipients["bob@example.com"].status == "deferred"
    mailer.close()
