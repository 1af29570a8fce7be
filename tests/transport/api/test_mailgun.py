"""Mailgun's messages.mime against a recording HTTPS server: the exact request (path, Basic auth,
``to`` with every envelope recipient, the MIME file equal to the audited bytes), US and EU hosts,
every outcome through both faces, the provider id, the probe, and the key nowhere."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import pytest

from fluxmail import ConfigurationError
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
    multipart,
    outcomes,
    probe,
    run_outcome,
    transport_for,
)
from tests.support.http_api import Reply

KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxte0l9"
URL = f"mailgun+api://{KEY}@mg.example.com"
OK = {"id": "<20261202004512.1.ABC@mg.example.com>", "message": "Queued. Thank you."}
ERROR = {"message": "'to' parameter is not a valid address. please check documentation"}


def test_posts_the_audited_bytes_and_every_recipient(
    http_api: Any, tmp_path: Path, send: Any
) -> None:
    """One multipart POST: ``to`` lists To, Cc and Bcc; the file is exactly the audited .eml."""
    server = http_api(default=Reply(200, OK, times=None))
    mailer = mailer_at(URL, server, tmp_path)
    result = send(everyone(mailer))
    assert result.status == "queued"
    assert result.provider_message_id == "20261202004512.1.ABC@mg.example.com"
    assert result.transport == f"mailgun+api://127.0.0.1:{server.port}"
    [seen] = server.requests
    assert (seen.method, seen.path) == ("POST", "/v3/mg.example.com/messages.mime")
    assert (
        seen.headers["authorization"] == "Basic " + base64.b64encode(f"api:{KEY}".encode()).decode()
    )
    to, message = multipart(seen)
    assert (to.name, to.filename, to.data) == ("to", None, f"{TO},{CC},{BCC}".encode())
    eml = eml_of(mailer, result)
    assert (message.name, message.content_type) == ("message", "message/rfc822")
    assert message.data == eml
    assert BCC.encode() not in eml  # Bcc only in the envelope field, never in the bytes
    record = mailer.audit.get(result.audit_id)
    assert record.provider_message_id == "20261202004512.1.ABC@mg.example.com"


@pytest.mark.parametrize("row", outcomes(OK, ERROR))
def test_outcomes(http_api: Any, tmp_path: Path, send: Any, row: Outcome) -> None:
    """2xx queued, 401/403 auth, 4xx refused with Mailgun's text, 429 retried, 5xx exhausted,
    a drop after the body unknown and never resent."""
    server = http_api()
    run_outcome(send, mailer_at(URL, server, tmp_path), server, row, ERROR["message"])


def test_plain_text_error_body(http_api: Any, tmp_path: Path) -> None:
    """Mailgun answers a wrong key with a bare ``Forbidden``: that text is the error's."""
    server = http_api(default=Reply(401, "Forbidden"))
    mailer = mailer_at(URL, server, tmp_path)
    with pytest.raises(Exception, match="Forbidden"):
        everyone(mailer).send()


def test_regions_choose_the_host() -> None:
    """US by default, ``?region=eu`` the EU host; anything else refused before any traffic."""
    assert transport_for(URL).base_url() == "https://api.mailgun.net"
    eu = transport_for(URL + "?region=eu")
    assert eu.base_url() == "https://api.eu.mailgun.net"
    assert eu.endpoint == "mailgun+api://api.eu.mailgun.net"
    with pytest.raises(ConfigurationError) as info:
        transport_for(URL + "?region=asia")
    assert info.value.code == "invalid_region"


def test_domain_is_required() -> None:
    """The sending domain is part of every path: a URL without one is a configuration error."""
    with pytest.raises(ConfigurationError):
        transport_for(f"mailgun+api://{KEY}@default")


def test_probe_reads_the_domain(http_api: Any) -> None:
    """``fluxmail check``: GET /v3/domains/{domain} with the key, reports the domain's state."""
    server = http_api(default=Reply(200, {"domain": {"name": "mg.example.com", "state": "active"}}))
    transport = transport_for(f"{URL}?endpoint={server.url}", ca_file=server.ca_path)
    assert probe(transport) == "Mailgun domain mg.example.com (US): active"
    [seen] = server.requests
    assert (seen.method, seen.path) == ("GET", "/v3/domains/mg.example.com")
    assert seen.headers["authorization"].startswith("Basic ")


def test_key_never_written(http_api: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The key and its Basic form: not in results, errors, reprs, logs or the audit folder,
    even when the API echoes them back in an error."""
    basic = base64.b64encode(f"api:{KEY}".encode()).decode()
    server = http_api()
    server.script(Reply(200, OK), Reply(400, {"message": f"bad key {KEY} / {basic}"}))
    with caplog.at_level(logging.DEBUG):
        mailer = mailer_at(URL, server, tmp_path)
        sent = everyone(mailer).send()
        with pytest.raises(Exception) as info:
            everyone(mailer).send()
    texts = (repr(sent), str(info.value), repr(info.value), repr(mailer), str(mailer.describe()))
    assert_nowhere((KEY, basic), *texts, caplog.text, folders=[tmp_path / "audit"])


def test_cli_never_prints_the_key(
    http_api: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``fluxmail check`` / ``config``, text and JSON, a refused key echoed back: no key."""
    server = http_api(default=Reply(401, {"message": f"Invalid private key {KEY}"}))
    printed = cli_outputs(capsys, monkeypatch, URL, server)
    assert "mailgun" in printed and server.count == 2
    assert_nowhere((KEY, base64.b64encode(f"api:{KEY}".encode()).decode()), printed)
