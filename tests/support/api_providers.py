"""Helpers for the provider tests of the HTTP API transports (``tests/transport/api/``): a mailer
aimed at a recording server, a message with every kind of recipient, an exact multipart reader,
the outcome table every provider runs through, and the secrets scan.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from fluxmail import AuthenticationFailed, DeliveryError, Draft, FluxMail, OutcomeUnknown, Refused
from fluxmail.config.resolve import resolve_config
from fluxmail.transport.registry import make_transport
from tests.support.http_api import HttpApiServer, Reply, Seen

SENDER = "sender@example.com"
TO, CC, BCC = "ann@example.com", "cy@example.com", "hidden@example.com"


def mailer_at(url: str, server: HttpApiServer, tmp_path: Path, **options: Any) -> FluxMail:
    """A mailer for ``url`` with ``?endpoint=`` the server, trusting the test CA, audited."""
    joiner = "&" if "?" in url else "?"
    settings: dict[str, Any] = {
        "ca_file": server.ca_path,
        "sender": SENDER,
        "audit_dir": tmp_path / "audit",
        "retry_delay": 0.01,
        "max_retries": 2,
    }
    settings.update(options)
    return FluxMail.from_url(f"{url}{joiner}endpoint={quote(server.url, safe='')}", **settings)


def transport_for(url: str, **options: Any) -> Any:
    """The transport a URL resolves to (no network: building one never connects)."""
    return make_transport(resolve_config(url=url, **options))


def probe(transport: Any) -> str:
    return str(asyncio.run(transport.probe()))


def eml_of(mailer: FluxMail, result: Any) -> bytes:
    """The audited snapshot of a sent message (exactly the bytes the audit recorded)."""
    assert result.audit_id is not None
    return mailer.audit.get_eml(result.audit_id)


def everyone(mailer: FluxMail, **options: Any) -> Draft:
    """To, Cc and Bcc, a text and an HTML body: the envelope has three recipients."""
    return mailer.create(
        "Quarterly report", [TO], "<p>Hello</p>", cc=[CC], bcc=[BCC], html_body=True,
        plain_body="Hello", **options,
    )  # fmt: skip


@dataclass(frozen=True)
class FormPart:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes


def multipart(seen: Seen) -> list[FormPart]:
    """The parts of a multipart/form-data body, byte for byte (no MIME parser in between)."""
    kind = seen.headers["content-type"]
    match = re.search(r'boundary="?([^";]+)"?', kind)
    assert kind.startswith("multipart/form-data") and match, kind
    delimiter = b"--" + match.group(1).encode()
    chunks = seen.body.split(delimiter)
    assert chunks[-1].strip() == b"--", "the body ends with the close delimiter"
    parts = []
    for chunk in chunks[1:-1]:
        assert chunk.startswith(b"\r\n") and chunk.endswith(b"\r\n")
        head, _, data = chunk[2:-2].partition(b"\r\n\r\n")
        headers = dict(
            (k.strip().lower(), v.strip())
            for k, _, v in (line.decode().partition(":") for line in head.split(b"\r\n"))
        )
        disposition = headers["content-disposition"]
        name = re.search(r'\bname="([^"]*)"', disposition)
        filename = re.search(r'\bfilename="([^"]*)"', disposition)
        parts.append(
            FormPart(
                name.group(1) if name else "",
                filename.group(1) if filename else None,
                headers.get("content-type"),
                data,
            )
        )
    return parts


@dataclass(frozen=True)
class Outcome:
    """One row of the outcome table: what the server answers, what the caller gets."""

    id: str
    replies: tuple[Reply, ...]
    expected: str | type[Exception]
    requests: int


def outcomes(ok: Any, error: Any, *, unauthorized: int = 1) -> list[Any]:
    """The table every provider runs through (``ok``/``error``: the API's own reply bodies;
    ``unauthorized``: requests a 401 gets, 2 where a fresh token is tried once)."""
    refused = Reply(401, error, times=unauthorized)
    rows = [
        Outcome("2xx-queued", (Reply(200, ok),), "queued", 1),
        Outcome("401", (refused,), AuthenticationFailed, unauthorized),
        Outcome("403", (Reply(403, error),), AuthenticationFailed, 1),
        Outcome("4xx", (Reply(400, error),), Refused, 1),
        Outcome("429-then-2xx", (Reply(429, error, {"Retry-After": "0"}), Reply(200, ok)),
                "queued", 2),
        Outcome("5xx-exhausted", (Reply(503, error, times=None),), DeliveryError, 3),
        Outcome("drop-after-body", (Reply(200, ok, drop=True),), OutcomeUnknown, 1),
    ]  # fmt: skip
    return [pytest.param(row, id=row.id) for row in rows]


def run_outcome(
    send: Callable[..., Any], mailer: FluxMail, server: HttpApiServer, row: Outcome, words: str
) -> Any:
    """Send through ``row``'s replies; check the outcome, the request count and, for a refusal,
    that the error carries the API's own ``words``. Returns the result or the error."""
    server.script(*(replace(r) for r in row.replies))  # a server uses a reply up: copies
    draft = everyone(mailer)
    if isinstance(row.expected, str):
        result = send(draft)
        assert result.status == row.expected
        assert server.count == row.requests
        return result
    with pytest.raises(row.expected) as info:
        send(draft)
    assert server.count == row.requests, "never resent after a drop; retried only when allowed"
    error = info.value
    if row.id in ("401", "403", "4xx", "5xx-exhausted"):
        assert words in str(error), str(error)
    if row.id == "drop-after-body":
        result = error.result  # type: ignore[attr-defined]
        assert result is not None and result.status == "unknown"
    return error


def assert_nowhere(secrets: Sequence[str], *texts: str, folders: Sequence[Path] = ()) -> None:
    """No secret in any text (errors, reprs, logs, CLI output) nor in any file under folders."""
    for secret in secrets:
        assert secret
        for text in texts:
            assert secret not in text
        for folder in folders:
            for file in folder.rglob("*"):
                if file.is_file():
                    assert secret.encode() not in file.read_bytes(), file


def cli_outputs(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    server: HttpApiServer | None = None,
) -> str:
    """Everything ``fluxmail check`` and ``fluxmail config`` (text and --json) print for
    ``FLUXMAIL_URL=url`` (aimed at ``server`` when given)."""
    from tests.support.cli import cli

    if server is not None:
        joiner = "&" if "?" in url else "?"
        url = f"{url}{joiner}endpoint={quote(server.url, safe='')}"
        monkeypatch.setenv("FLUXMAIL_CA_FILE", str(server.ca_path))
    monkeypatch.setenv("FLUXMAIL_URL", url)
    monkeypatch.setenv("FLUXMAIL_SENDER", SENDER)
    printed = []
    for args in (("check",), ("check", "--json"), ("config",), ("config", "--json")):
        printed.append(cli(capsys, monkeypatch, *args).both)
    return "\n".join(printed)
