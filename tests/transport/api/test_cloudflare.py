"""Cloudflare Email Service's send_raw against a recording HTTPS server: the exact request (path
with the account id, Bearer token, envelope and the audited bytes as ``mime_message``), the
per-recipient lists of the reply, every outcome through both faces, the probe, and the token
nowhere."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from fluxmail import ConfigurationError
from tests.support.api_providers import (
    BCC,
    CC,
    SENDER,
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
from tests.support.http_api import Reply

TOKEN = "cf-Rk3vT9pQ2wXy7LmN4bHs8dJf6gA1zE5uC0oI"
ACCOUNT = "023e105f4ecef8ad9ca31a8372d0c353"
URL = f"cloudflare+api://{TOKEN}@{ACCOUNT}"
PATH = f"/client/v4/accounts/{ACCOUNT}/email/sending/send_raw"


def _ok(delivered: list[str], queued: tuple[str, ...] = (), bounced: tuple[str, ...] = ()) -> Any:
    result = {"delivered": delivered, "queued": list(queued), "permanent_bounces": list(bounced)}
    return {"success": True, "errors": [], "messages": [], "result": result}


OK = _ok([TO, CC, BCC])
ERROR = {"success": False, "errors": [{"code": 10000, "message": "Authentication error"}]}


def test_posts_the_audited_bytes_as_mime_message(http_api: Any, tmp_path: Path, send: Any) -> None:
    """One JSON POST: envelope ``from`` / ``recipients`` (Bcc included) and ``mime_message``
    equal to the audited .eml, byte for byte."""
    server = http_api(default=Reply(200, OK, times=None))
    mailer = mailer_at(URL, server, tmp_path)
    result = send(everyone(mailer))
    assert result.status == "queued" and result.provider_message_id is None
    assert result.transport == f"cloudflare+api://127.0.0.1:{server.port}"
    [seen] = server.requests
    assert (seen.method, seen.path) == ("POST", PATH)
    assert seen.headers["authorization"] == f"Bearer {TOKEN}"
    assert seen.headers["content-type"] == "application/json"
    body = seen.json()
    assert set(body) == {"from", "recipients", "mime_message"}
    assert (body["from"], body["recipients"]) == (SENDER, [TO, CC, BCC])
    eml = eml_of(mailer, result)
    assert body["mime_message"].encode("utf-8") == eml
    assert BCC.encode() not in eml


def test_international_message_goes_as_utf8(http_api: Any, tmp_path: Path) -> None:
    """A message that needs SMTPUTF8 (a non-ASCII local part) is still the exact bytes."""
    server = http_api(default=Reply(200, _ok(["josé@example.com"])))
    mailer = mailer_at(URL, server, tmp_path)
    result = mailer.create("Olá", ["josé@example.com"], "Olá, José").send()
    body = server.requests[0].json()
    assert body["recipients"] == ["josé@example.com"]
    assert body["mime_message"].encode("utf-8") == eml_of(mailer, result)


def test_per_recipient_lists(http_api: Any, tmp_path: Path, send: Any) -> None:
    """delivered and queued are accepted; permanent_bounces rejected: the message is partial."""
    server = http_api(default=Reply(200, _ok([TO], (CC,), (BCC,))))
    result = send(everyone(mailer_at(URL, server, tmp_path)))
    assert result.status == "partial"
    outcome = {a: (r.status, r.text) for a, r in result.recipients.items()}
    assert outcome == {
        TO: ("sent", "delivered"), CC: ("sent", "queued"), BCC: ("rejected", "permanent bounce")
    }  # fmt: skip


def test_every_recipient_bounced_is_failed(http_api: Any, tmp_path: Path) -> None:
    """A 200 that bounced everyone is a refusal, not a success."""
    server = http_api(default=Reply(200, _ok([], (), (TO, CC, BCC))))
    with pytest.raises(Exception) as info:
        everyone(mailer_at(URL, server, tmp_path)).send()
    assert info.value.result.status == "failed"  # type: ignore[attr-defined]


@pytest.mark.parametrize("row", outcomes(OK, ERROR))
def test_outcomes(http_api: Any, tmp_path: Path, send: Any, row: Outcome) -> None:
    """2xx queued, 401/403 auth, 4xx refused with Cloudflare's code and text, 429 retried, 5xx
    exhausted, a drop after the body unknown and never resent."""
    server = http_api()
    run_outcome(send, mailer_at(URL, server, tmp_path), server, row, "10000: Authentication error")


def test_account_id_is_checked() -> None:
    """Not 32 hexadecimal characters: refused when the mailer is built, before any traffic."""
    with pytest.raises(ConfigurationError):
        transport_for(f"cloudflare+api://{TOKEN}@my-account")


def test_probe_verifies_the_token(http_api: Any) -> None:
    """A user token verifies at /user/tokens/verify; an account token falls back to the
    account's own verify endpoint."""
    active = {"success": True, "errors": [], "result": {"id": "x", "status": "active"}}
    server = http_api()
    server.script(Reply(200, active), Reply(401, ERROR), Reply(200, active))
    transport = transport_for(f"{URL}?endpoint={server.url}", ca_file=server.ca_path)
    assert probe(transport) == f"Cloudflare API token: active (account {ACCOUNT})"
    assert probe(transport) == f"Cloudflare API token: active (account {ACCOUNT})"
    paths = [(s.method, s.path) for s in server.requests]
    assert paths == [
        ("GET", "/client/v4/user/tokens/verify"),
        ("GET", "/client/v4/user/tokens/verify"),
        ("GET", f"/client/v4/accounts/{ACCOUNT}/tokens/verify"),
    ]
    assert all(s.headers["authorization"] == f"Bearer {TOKEN}" for s in server.requests)


def test_token_never_written(
    http_api: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The token: not in results, errors, reprs, logs or the audit folder, even echoed back."""
    server = http_api()
    echoed = {"success": False, "errors": [{"code": 9109, "message": f"Invalid token {TOKEN}"}]}
    server.script(Reply(200, OK), Reply(400, echoed))
    with caplog.at_level(logging.DEBUG):
        mailer = mailer_at(URL, server, tmp_path)
        sent = everyone(mailer).send()
        with pytest.raises(Exception) as info:
            everyone(mailer).send()
    texts = (repr(sent), str(info.value), repr(info.value), repr(mailer), str(mailer.describe()))
    assert_nowhere((TOKEN,), *texts, caplog.text, folders=[tmp_path / "audit"])


def test_cli_never_prints_the_token(
    http_api: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``fluxmail check`` / ``config``, text and JSON, a token echoed back: no token."""
    active = {"success": True, "errors": [], "result": {"id": TOKEN, "status": "active"}}
    server = http_api(default=Reply(200, active))
    printed = cli_outputs(capsys, monkeypatch, URL, server)
    assert "active" in printed
    assert_nowhere((TOKEN,), printed)


def test_the_catalog_entry_switches_from_smtp_to_the_api(http_api: Any, tmp_path: Path) -> None:
    """FLUXMAIL_PROVIDER=cloudflare with FLUXMAIL_TRANSPORT=api: the SMTP password (the API
    token) is the key, FLUXMAIL_API_ACCOUNT_ID the account; the same send_raw request."""
    from fluxmail import FluxMail

    server = http_api(default=Reply(200, OK, times=None))
    mailer = FluxMail(
        provider="cloudflare", transport="api", password=TOKEN, api_account_id=ACCOUNT,
        api_base_url=server.url, ca_file=server.ca_path, sender=SENDER, audit_dir=tmp_path,
    )  # fmt: skip
    assert mailer.create("Hi", TO, "x").send().status == "queued"
    [seen] = server.requests
    assert seen.path == PATH and seen.headers["authorization"] == f"Bearer {TOKEN}"
    mailer.close()
