"""``failover(...)`` across an HTTP API member and an SMTP member (fluxmail/transport/failover)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fluxmail import FluxMail
from tests.support.api_mailing import KEY
from tests.support.http_api import HttpApiServer, Reply
from tests.support.servers import SMTPTestServer


def _mailer(api: HttpApiServer, smtp: SMTPTestServer, **options: Any) -> FluxMail:
    members = (
        f"resend+api://{KEY}@default?endpoint={api.url}",
        f"smtp+plain://{smtp.host}:{smtp.port}",
    )
    return FluxMail.failover(*members, ca_file=api.ca_path, sender="s@example.com",
                             audit=False, retry_delay=0.01, **options)  # fmt: skip


def test_the_api_member_takes_the_message(
    http_api: Callable[..., HttpApiServer], smtp_server: Callable[..., SMTPTestServer], send: Any
) -> None:
    api = http_api(default=Reply(200, body={"id": "re-9"}, times=None))
    smtp = smtp_server()
    mailer = _mailer(api, smtp)
    result = send(mailer.create("Hi", "bob@example.com", "x"))
    assert result.status == "queued" and result.provider_message_id == "re-9"
    assert result.transport == f"resend+api://127.0.0.1:{api.port}"
    assert api.count == 1 and not smtp.messages
    mailer.close()


def test_an_unavailable_api_fails_over_to_smtp(
    http_api: Callable[..., HttpApiServer], smtp_server: Callable[..., SMTPTestServer], send: Any
) -> None:
    """503 with no retry left: nothing was accepted, so the SMTP member delivers it."""
    api = http_api(default=Reply(503, body={"message": "down"}, times=None))
    smtp = smtp_server()
    mailer = _mailer(api, smtp)
    result = send(mailer.create("Hi", "bob@example.com", "x"))
    assert result.status == "sent" and result.transport == f"smtp+plain://{smtp.host}:{smtp.port}"
    assert api.count == 1 and len(smtp.messages) == 1
    mailer.close()


def test_a_refused_key_fails_over_to_smtp(
    http_api: Callable[..., HttpApiServer], smtp_server: Callable[..., SMTPTestServer]
) -> None:
    api = http_api(default=Reply(401, body={"message": "API key is invalid"}, times=None))
    smtp = smtp_server()
    mailer = _mailer(api, smtp)
    result = mailer.create("Hi", "bob@example.com", "x").send()
    assert result.status == "sent" and len(smtp.messages) == 1
    mailer.close()


def test_an_unknown_outcome_never_fails_over(
    http_api: Callable[..., HttpApiServer], smtp_server: Callable[..., SMTPTestServer]
) -> None:
    """A drop after the body: the API may have it; the SMTP member must not send a copy.
    (Resend retries with its idempotency key; with no retry left the outcome is unknown.)"""
    import pytest

    from fluxmail.errors import OutcomeUnknown

    api = http_api(default=Reply(drop=True, times=None))
    smtp = smtp_server()
    mailer = _mailer(api, smtp)
    with pytest.raises(OutcomeUnknown):
        mailer.create("Hi", "bob@example.com", "x").send()
    assert api.count == 1 and not smtp.messages
    mailer.close()


def test_check_probes_api_members_too(
    http_api: Callable[..., HttpApiServer],
    smtp_server: Callable[..., SMTPTestServer],
    capsys: Any,
    monkeypatch: Any,
) -> None:
    """`fluxmail check` on failover(api smtp): the API member's probe and the SMTP probe."""
    import json

    from tests.support.cli import cli

    api = http_api(default=Reply(200, body={"data": [{"name": "shop.example.com"}]}, times=None))
    smtp = smtp_server()
    url = (
        f"failover(resend+api://{KEY}@default?endpoint={api.url} "
        f"smtp+plain://{smtp.host}:{smtp.port})"
    )
    monkeypatch.setenv("FLUXMAIL_URL", url)
    monkeypatch.setenv("FLUXMAIL_CA_FILE", str(api.ca_path))
    ran = cli(capsys, monkeypatch, "check", "--json")
    assert ran.code == 0, ran.both
    data = json.loads(ran.out)
    first, second = data["members"]
    assert first["transport"] == f"resend+api://127.0.0.1:{api.port}" and first["probed"]
    assert "shop.example.com" in first["probe"] and second["probed"]
    assert KEY not in ran.both and api.requests[0].path == "/domains"
