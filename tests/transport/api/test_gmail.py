"""The Gmail API's users.messages.send against a recording HTTPS server that checks every bearer
token: the delivered copy carries the Bcc header while the audit snapshot has none, a refused
token gets exactly one fresh token and one more request, every outcome through both faces, the
probe, and no token anywhere it could leak."""

from __future__ import annotations

import base64
import itertools
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fluxmail import AuthenticationFailed, ConfigurationError
from fluxmail.errors import DeliveryError
from tests.support.api_providers import (
    BCC,
    CC,
    TO,
    Outcome,
    assert_nowhere,
    cli_outputs,
    eml_of,
    everyone,
    mailer_at,
    outcomes,
    probe,
    run_outcome,
    transport_for,
)
from tests.support.http_api import Reply, Seen

USER = "box@example.com"
URL = f"gmail+api://{USER}"
SEND = f"/gmail/v1/users/{USER}/messages/send"
OK = {"id": "18c2f0a1b2c3d4e5", "threadId": "18c2f0a1b2c3d4e5", "labelIds": ["SENT"]}
ERROR = {
    "error": {
        "code": 400,
        "message": "Invalid To header",
        "status": "INVALID_ARGUMENT",
        "errors": [{"reason": "invalidArgument", "message": "Invalid To header"}],
    }
}
EXPIRED = {
    "error": {
        "code": 401,
        "message": "Request had invalid authentication credentials.",
        "status": "UNAUTHENTICATED",
    }
}


class Issuer:
    """A token provider whose first ``refuse_first`` tokens are revoked; counts its calls."""

    def __init__(self, refuse_first: int = 0) -> None:
        self.refuse_first = refuse_first
        self._serial = itertools.count(1)
        self.issued: list[str] = []
        self.valid: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self) -> tuple[str, float]:
        n = next(self._serial)
        token = f"ya29.a0Gm{n}x{base64.urlsafe_b64encode(bytes([n]) * 15).decode()}"
        with self._lock:
            self.issued.append(token)
            if n > self.refuse_first:
                self.valid.add(token)
        return token, time.time() + 3600

    def emulator(self, seen: Seen) -> Reply:
        """What Gmail answers: 401 for a token it does not know, else the sent Message."""
        bearer = seen.headers.get("authorization", "").removeprefix("Bearer ")
        if bearer not in self.valid:
            return Reply(
                401, EXPIRED, {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'}
            )
        return Reply(200, OK)


def _delivered(seen: Seen) -> bytes:
    return base64.urlsafe_b64decode(seen.json()["raw"])


def test_delivery_copy_adds_bcc_snapshot_stays_clean(
    http_api: Any, tmp_path: Path, send: Any
) -> None:
    """Gmail gets the audited bytes with a Bcc header in front; the .eml keeps no Bcc."""
    issuer = Issuer()
    server = http_api(default=issuer.emulator)
    mailer = mailer_at(URL, server, tmp_path, token_provider=issuer)
    result = send(everyone(mailer))
    assert result.status == "queued" and result.provider_message_id == OK["id"]
    assert result.transport == f"gmail+api://127.0.0.1:{server.port}"
    [seen] = server.requests
    assert (seen.method, seen.path) == ("POST", SEND)
    assert seen.headers["authorization"] == f"Bearer {issuer.issued[0]}"
    assert set(seen.json()) == {"raw"}
    eml = eml_of(mailer, result)
    assert _delivered(seen) == f"Bcc: {BCC}\r\n".encode() + eml
    assert b"\nbcc:" not in eml.lower() and BCC.encode() not in eml
    assert f"To: {TO}".encode() in eml and f"Cc: {CC}".encode() in eml
    assert mailer.audit.get(result.audit_id).provider_message_id == OK["id"]


def test_no_bcc_sends_the_audited_bytes_unchanged(http_api: Any, tmp_path: Path) -> None:
    """Without a hidden recipient (or one also in To) the bytes go exactly as audited."""
    issuer = Issuer()
    server = http_api(default=issuer.emulator)
    mailer = mailer_at(URL, server, tmp_path, token_provider=issuer)
    plain = mailer.create("Hi", [TO], "Hello", cc=[CC]).send()
    shown = mailer.create("Hi", [TO], "Hello", bcc=[TO.upper()]).send()
    first, second = server.requests
    assert _delivered(first) == eml_of(mailer, plain)
    assert _delivered(second) == eml_of(mailer, shown)


def test_many_and_named_bcc_are_folded(http_api: Any, tmp_path: Path) -> None:
    """Display names are encoded as the writer does, each address on its own folded line."""
    issuer = Issuer()
    server = http_api(default=issuer.emulator)
    mailer = mailer_at(URL, server, tmp_path, token_provider=issuer)
    hidden = [("Zoë Q", "z@example.com"), ("", "y@example.com"), ("", "x@bücher.example")]
    result = mailer.create("Hi", [TO], "Hello", bcc=[(n, a) if n else a for n, a in hidden]).send()
    head = _delivered(server.requests[0]).split(b"\r\n\r\n", 1)[0]
    assert head.split(b"\r\n")[:3] == [
        b"Bcc: =?utf-8?b?Wm/DqyBR?= <z@example.com>,",
        b" y@example.com,",
        b" x@xn--bcher-kva.example",
    ]
    assert len(result.recipients) == 4


def test_refused_token_gets_one_fresh_token(http_api: Any, tmp_path: Path, send: Any) -> None:
    """A 401 (revoked or expired token): invalidate, one new token, one more request: sent."""
    issuer = Issuer(refuse_first=1)
    server = http_api(default=issuer.emulator)
    mailer = mailer_at(URL, server, tmp_path, token_provider=issuer)
    result = send(everyone(mailer))
    assert result.status == "queued"
    assert [s.headers["authorization"] for s in server.requests] == [
        f"Bearer {t}" for t in issuer.issued
    ]
    assert len(issuer.issued) == 2 and [a.number for a in result.attempts] == [1, 2]


def test_refused_twice_is_not_a_loop(http_api: Any, tmp_path: Path, send: Any) -> None:
    """Every token refused: exactly two requests, then AuthenticationFailed with Google's text."""
    issuer = Issuer(refuse_first=100)
    server = http_api(default=issuer.emulator)
    mailer = mailer_at(URL, server, tmp_path, token_provider=issuer)
    with pytest.raises(AuthenticationFailed, match="UNAUTHENTICATED"):
        send(everyone(mailer))
    assert server.count == 2 and len(issuer.issued) == 2


@pytest.mark.parametrize("row", outcomes(OK, ERROR, unauthorized=2))
def test_outcomes(http_api: Any, tmp_path: Path, send: Any, row: Outcome) -> None:
    """2xx queued, 401 (twice: one fresh token) / 403 auth, 4xx refused with Google's status
    and text, 429 retried, 5xx exhausted, a drop after the body unknown and never resent."""
    server = http_api()
    mailer = mailer_at(URL, server, tmp_path, token_provider=Issuer())
    run_outcome(send, mailer, server, row, "INVALID_ARGUMENT Invalid To header")


def test_needs_oauth() -> None:
    """No token source: a configuration error naming the OAuth settings, before any traffic."""
    with pytest.raises(ConfigurationError) as info:
        transport_for(URL)
    assert info.value.code == "oauth_not_configured"


def test_probe_names_the_account(http_api: Any) -> None:
    """``fluxmail check``: users.getProfile with a fresh token; a send-only scope is reported."""
    issuer = Issuer()
    server = http_api()
    insufficient = {
        "error": {"code": 403, "message": "Request had insufficient authentication scopes.",
                  "status": "PERMISSION_DENIED"}
    }  # fmt: skip
    server.script(Reply(200, {"emailAddress": USER, "messagesTotal": 3}), Reply(403, insufficient))
    transport = transport_for(f"{URL}?endpoint={server.url}", ca_file=server.ca_path,
                              token_provider=issuer)  # fmt: skip
    assert probe(transport) == f"Gmail API: authorized as {USER}"
    assert "token accepted" in probe(transport)
    seen = server.requests[0]
    assert (seen.method, seen.path) == ("GET", f"/gmail/v1/users/{USER}/profile")
    assert seen.headers["authorization"] == f"Bearer {issuer.issued[0]}"


def test_tokens_never_written(
    http_api: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Access tokens: not in results, errors, reprs, logs or the audit folder, even echoed back."""
    issuer = Issuer(refuse_first=1)
    server = http_api(default=issuer.emulator)
    with caplog.at_level(logging.DEBUG):
        mailer = mailer_at(URL, server, tmp_path, token_provider=issuer)
        sent = everyone(mailer).send()
        echo = {"error": {"code": 400, "message": f"bad {issuer.issued[-1]}", "status": "X"}}
        server.script(Reply(400, echo))
        with pytest.raises(Exception) as info:
            everyone(mailer).send()
    texts = (repr(sent), str(info.value), repr(info.value), repr(mailer), str(mailer.describe()))
    assert_nowhere(issuer.issued, *texts, caplog.text, folders=[tmp_path / "audit"])


def test_cli_never_prints_a_token(
    http_api: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``fluxmail check`` / ``config``, text and JSON, with a refresh-token flow against a
    real token endpoint stand-in: neither the access token nor the refresh token is printed."""
    issuer = Issuer()
    token, _ = issuer()
    server = http_api()
    server.script(
        Reply(200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}, times=None)
    )
    monkeypatch.setenv("FLUXMAIL_OAUTH_PROVIDER", "generic")
    monkeypatch.setenv("FLUXMAIL_OAUTH_TOKEN_URL", f"{server.url}/token")
    monkeypatch.setenv("FLUXMAIL_OAUTH_CLIENT_ID", "client-1")
    monkeypatch.setenv("FLUXMAIL_OAUTH_CLIENT_SECRET", "cs-Very-Secret-1")
    monkeypatch.setenv("FLUXMAIL_OAUTH_REFRESH_TOKEN", "1//rt-Very-Secret-2")
    printed = cli_outputs(capsys, monkeypatch, URL, server)
    assert "gmail" in printed
    assert_nowhere((token, "cs-Very-Secret-1", "1//rt-Very-Secret-2"), printed)


def test_send_many_shares_one_token(http_api: Any, tmp_path: Path) -> None:
    """Bulk through Gmail: one cached token for every message, each with its Gmail id."""
    issuer = Issuer()
    ids = iter(range(100))
    lock = threading.Lock()

    def gmail(seen: Seen) -> Reply:
        refused = issuer.emulator(seen)
        if refused.status != 200:
            return refused
        with lock:
            return Reply(200, {"id": f"gm-{next(ids)}", "threadId": "t"})

    server = http_api(default=gmail)
    mailer = mailer_at(URL, server, tmp_path, token_provider=issuer)
    items = [{"subject": f"n{i}", "recipients": [TO], "body": "x", "bcc": [BCC]} for i in range(6)]
    outcomes = list(mailer.send_many(items, concurrency=3, progress=False))
    assert len(outcomes) == 6 and all(o.ok for o in outcomes)
    assert len(issuer.issued) == 1 and server.count == 6
    assert all(_delivered(s).startswith(f"Bcc: {BCC}\r\n".encode()) for s in server.requests)
    records = mailer.audit.list()
    assert sorted(r.provider_message_id or "" for r in records) == [f"gm-{i}" for i in range(6)]
    mailer.close()


RATE_LIMITED = {
    "error": {
        "code": 403,
        "message": "User-rate limit exceeded.  Retry after 2026-12-02T01:00:01Z",
        "status": "PERMISSION_DENIED",
        "errors": [{"domain": "usageLimits", "reason": "userRateLimitExceeded",
                    "message": "User-rate limit exceeded."}],
    }
}  # fmt: skip


@pytest.mark.parametrize("reason", ["rateLimitExceeded", "userRateLimitExceeded"])
def test_a_403_rate_limit_is_retried_not_an_auth_failure(
    http_api: Any, tmp_path: Path, send: Any, reason: str
) -> None:
    """Gmail's 403 with a rate-limit reason (developers.google.com/gmail/api/guides/
    handle-errors) is a rate limit: retried with backoff, then sent; the token is kept."""
    body = {"error": {**RATE_LIMITED["error"], "errors": [{"reason": reason}]}}
    server = http_api()
    server.script(Reply(403, body), Reply(200, OK))
    issuer = Issuer()
    mailer = mailer_at(URL, server, tmp_path, token_provider=issuer, max_retries=2)
    result = send(everyone(mailer))
    assert result.status == "queued" and server.count == 2
    assert result.attempts[0].error_code == "rate_limited"
    assert len(issuer.issued) == 1  # not treated as a refused token


def test_a_403_rate_limit_past_the_retries_is_rate_limited(http_api: Any, tmp_path: Path) -> None:
    """Retries exhausted: a transient rate_limited error, never AuthenticationFailed."""
    server = http_api(default=Reply(403, RATE_LIMITED, times=None))
    mailer = mailer_at(URL, server, tmp_path, token_provider=Issuer(), max_retries=1)
    with pytest.raises(DeliveryError) as caught:
        everyone(mailer).send()
    assert not isinstance(caught.value, AuthenticationFailed)
    assert caught.value.code == "rate_limited" and caught.value.transient
    assert server.count == 2


def test_classify_reads_googles_reasons(http_api: Any, tmp_path: Path) -> None:
    """The API core's hook: a reason decides; other 403s keep the status rules (None)."""
    from fluxmail.transport.api.base import ApiReply
    from fluxmail.transport.api.gmail import GmailTransport

    def reply(status: int, reasons: list[str]) -> ApiReply:
        body = {"error": {"code": status, "errors": [{"reason": r} for r in reasons]}}
        return ApiReply(status, {}, json.dumps(body).encode())

    mailer = mailer_at(URL, http_api(), tmp_path, token_provider=Issuer())
    transport = mailer.engine.transport
    assert isinstance(transport, GmailTransport)
    classify = transport.classify
    assert classify(reply(403, ["rateLimitExceeded"])) == "rate_limited"
    assert classify(reply(429, ["userRateLimitExceeded"])) == "rate_limited"
    assert classify(reply(403, ["insufficientPermissions"])) is None
    assert classify(ApiReply(403, {}, b"<html>")) is None
