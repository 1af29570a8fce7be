"""The FastAPI recipe (docs/recipes/fastapi.md), executed: its code blocks are read from the
page, so the test and the docs cannot drift apart.

The app runs under FastAPI's TestClient (its lifespan builds the mailer from FLUXMAIL_* and
closes it) against a real SMTP server with STARTTLS and the test CA; the enqueueing endpoint
writes to a SQLite audit store in tmp_path and a Worker delivers from it. Then the page's own
tests (memory backend) run as pytest would run them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fluxmail import FluxMail
from fluxmail.testing import outbox
from fluxmail.worker import Worker
from tests.project.test_docs_examples import extract_blocks
from tests.support import ROOT

pytest.importorskip("fastapi")
pytestmark = pytest.mark.timeout(60)

PAGE = ROOT / "docs" / "recipes" / "fastapi.md"
FORM = {"name": "Ada", "email": "ada@example.com", "text": "Hello!"}


def _run_page(upto: int | None = None) -> dict[str, Any]:
    """Every ```python block of the page (compile-only ones too), in order, in one namespace;
    ``upto``: only the first blocks."""
    namespace: dict[str, Any] = {"__name__": "fastapi_recipe"}
    for block in extract_blocks(PAGE)[:upto]:
        exec(compile(block.code, f"{block.page}:{block.line}", "exec"), namespace)
    return namespace


def test_the_page_has_the_blocks_this_test_expects() -> None:
    blocks = extract_blocks(PAGE)
    assert [b.compile_only for b in blocks] == [False, True, False, True]
    assert "async def lifespan" in blocks[1].code and "enqueue_async" in blocks[1].code


def test_the_app_sends_and_enqueues_through_a_real_server(
    smtp_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    server = smtp_server(tls="starttls", auth=("app", "secret"))
    env = {
        "FLUXMAIL_HOST": server.host, "FLUXMAIL_PORT": str(server.port),
        "FLUXMAIL_TLS": "true", "FLUXMAIL_CA_FILE": str(server.ca_path),
        "FLUXMAIL_USERNAME": "app", "FLUXMAIL_PASSWORD": "secret",
        "FLUXMAIL_SENDER": "Shop <shop@example.com>",
        "FLUXMAIL_AUDIT": "true", "FLUXMAIL_AUDIT_DIR": str(tmp_path / "audit"),
    }  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    page = _run_page(upto=2)  # the mail code and the app

    with TestClient(page["app"]) as client:
        first = client.post("/contact", json=FORM)
        second = client.post("/contact", json=dict(FORM, name="Bob"))
        injected = client.post("/contact", json=dict(FORM, email="e@example.com\r\nBcc: x@y.z"))
        queued = client.post("/contact/later", json=dict(FORM, name="Later"))
        assert server.connections == 1  # the lifespan's `async with mailer` kept it open
    assert first.status_code == 201 and first.json()["status"] == "sent"
    assert second.status_code == 201
    assert injected.status_code == 422
    assert injected.json()["detail"]["code"] == "header_injection"
    assert [m.rcpt_tos for m in server.messages] == [["support@example.com"]] * 2
    assert all(m.tls and m.login == "app" for m in server.messages)
    assert server.commands[-1] == "QUIT"  # shutdown closed the held connection

    # The queued message waits in the audit store until a worker delivers it.
    assert queued.status_code == 202
    audit_id = queued.json()["audit_id"]
    worker_mailer = FluxMail.from_env()
    try:
        assert worker_mailer.audit.get(audit_id).status == "pending"
        report = Worker(worker_mailer).run(once=True)
        assert report.sent == 1
        assert worker_mailer.audit.get(audit_id).status == "sent"
    finally:
        worker_mailer.close()
    assert len(server.messages) == 3
    assert b"Contact form: Later" in server.messages[2].data


def test_the_pages_own_tests_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole page, as the docs say to test it: the memory backend, the audit on."""
    monkeypatch.setenv("FLUXMAIL_TYPE", "memory")
    monkeypatch.setenv("FLUXMAIL_SENDER", "Shop <shop@example.com>")
    monkeypatch.setenv("FLUXMAIL_AUDIT", "true")
    monkeypatch.setenv("FLUXMAIL_AUDIT_DIR", str(tmp_path / "audit"))
    outbox.clear()
    page = _run_page()
    try:
        tests = [f for name, f in page.items() if name.startswith("test_") and callable(f)]
        assert len(tests) == 2
        for test in tests:
            test()
    finally:
        page["mailer"].close()
        outbox.clear()
