"""`fluxmail check` and `fluxmail send` with an OAuth 2.0 login, end to end: a real token
endpoint (client credentials), a real SMTP server that verifies the token, and output that
shows the mechanism and the token's timing and expiry but never a secret."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fluxmail.transport.smtp import sasl
from tests.support.cli import cli
from tests.support.oauth_server import OAuthServer
from tests.support.oauth_smtp import TokenVerifier

MAILBOX = "box@example.com"
SECRET = "Cl1ent-S3cret/with+chars="


def _setup(
    monkeypatch: pytest.MonkeyPatch, oauth_server: Callable[..., OAuthServer], smtp_server: Any
) -> tuple[OAuthServer, Any]:
    endpoint = oauth_server(lifetime=3600)
    endpoint.client("app-id", SECRET)

    def valid() -> set[str]:
        return {t for t in endpoint.tokens if endpoint.valid(t) is not None}

    verifier = TokenVerifier(MAILBOX, valid, echo=True)
    server = smtp_server(tls="starttls", auth_mechanisms=("XOAUTH2",), oauth=verifier)
    server.verifier = verifier
    env = {
        "HOST": "127.0.0.1",
        "PORT": str(server.port),
        "TLS": "true",
        "CA_FILE": server.ca_path,
        "USERNAME": MAILBOX,
        "SENDER": MAILBOX,
        "TIMEOUT": "10",
        "AUDIT": "false",
        "OAUTH_PROVIDER": "microsoft",
        "OAUTH_TENANT_ID": "contoso.onmicrosoft.com",
        "OAUTH_CLIENT_ID": "app-id",
        "OAUTH_CLIENT_SECRET": SECRET,
        "OAUTH_TOKEN_URL": endpoint.url,
    }
    for name, value in env.items():
        monkeypatch.setenv(f"FLUXMAIL_{name}", value)
    return endpoint, server


def _secrets(endpoint: OAuthServer) -> list[str]:
    found = [SECRET, base64.b64encode(f"app-id:{SECRET}".encode()).decode()]
    for token in endpoint.tokens:
        found.append(token)
        for mechanism in sasl.MECHANISMS:
            raw, b64 = sasl.initial_response(mechanism, MAILBOX, token)
            found += [raw.decode(), b64.decode()]
    return found


def test_check_shows_mechanism_and_token_timing_never_the_token(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    oauth_server: Callable[..., OAuthServer],
    smtp_server: Any,
) -> None:
    """`fluxmail check` (text and --json) logs in with XOAUTH2 and says how long the token took
    and when it expires; neither output holds the token, its base64 form or the client secret."""
    endpoint, server = _setup(monkeypatch, oauth_server, smtp_server)
    text = cli(capsys, monkeypatch, "check")
    assert text.code == 0, text.both
    assert "XOAUTH2" in text.out and "token" in text.out and "expires" in text.out
    as_json = cli(capsys, monkeypatch, "check", "--json")
    data = json.loads(as_json.out)
    assert data["ok"] and data["authenticated"] and data["auth"] == "xoauth2"
    assert data["token_ms"] is not None and data["token_expires"] is not None
    assert server.verifier.logins == 2 and endpoint.count == 2  # one per command
    for secret in _secrets(endpoint):
        assert secret not in text.both and secret not in as_json.both


def test_send_and_refusal_never_print_a_secret(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    oauth_server: Callable[..., OAuthServer],
    smtp_server: Any,
    tmp_path: Path,
) -> None:
    """`fluxmail send` delivers with a token login; when every token is refused (a server that
    echoes the initial response), the error output and the audit store hold no secret."""
    endpoint, server = _setup(monkeypatch, oauth_server, smtp_server)
    args = ("send", "--to", "bob@example.com", "--subject", "Hi", "--text", "x")
    sent = cli(capsys, monkeypatch, *args)
    assert sent.code == 0, sent.both
    assert server.deliveries == 1 and server.messages[0].login == MAILBOX
    server.verifier.tokens = set()  # from now on every token is refused
    monkeypatch.setenv("FLUXMAIL_AUDIT", "true")
    monkeypatch.setenv("FLUXMAIL_AUDIT_DIR", str(tmp_path / "audit"))
    refused = cli(capsys, monkeypatch, *args, "--json")
    assert refused.code != 0 and "oauth_token_refused" in refused.both
    assert endpoint.count == 3  # the first send's token, then one token and one refresh
    audit = b"".join(p.read_bytes() for p in (tmp_path / "audit").rglob("*") if p.is_file())
    for secret in _secrets(endpoint):
        assert secret not in sent.both and secret not in refused.both
        assert secret.encode() not in audit


def test_fifty_concurrent_sends_share_one_token_request(
    monkeypatch: pytest.MonkeyPatch, oauth_server: Callable[..., OAuthServer], smtp_server: Any
) -> None:
    """The built-in Microsoft token source under load: 50 sends at once (the endpoint slowed
    down so they all wait for it) make exactly one POST to the token endpoint, and the SMTP
    server accepts every login with the token it issued."""
    import asyncio

    from fluxmail import FluxMail

    endpoint, server = _setup(monkeypatch, oauth_server, smtp_server)
    endpoint.fail(status=200, delay=0.3)  # a stall, then the normal answer
    mailer = FluxMail.from_env()

    async def main() -> list[str]:
        drafts = [mailer.create(f"m{i}", f"u{i}@example.com", "x") for i in range(50)]
        return [r.status for r in await asyncio.gather(*(d.send_async() for d in drafts))]

    try:
        assert asyncio.run(main()) == ["sent"] * 50
    finally:
        mailer.close()
    assert endpoint.count == 1 and server.deliveries == 50
    assert all(a.accepted for a in server.verifier.attempts)
