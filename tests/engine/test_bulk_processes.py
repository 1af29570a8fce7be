"""send_many(processes=N): messages built in child processes, claimed, sent and recorded here."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import AsyncIterator, Iterator
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest

from fluxmail import ConfigurationError
from fluxmail.engine.builders import child_config
from tests.support.mailing import mailer_for


def _messages(n: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        yield {"subject": f"n{i}", "recipients": [f"u{i}@example.com"], "body": f"body {i}"}


def test_built_in_processes_each_message_sent_once_and_audited(
    smtp_server: Any, tmp_path: Path
) -> None:
    """Two builder processes, audit on: every message arrives once, as built, with its record."""
    server = smtp_server()
    mailer = mailer_for(server, audit_dir=tmp_path / "audit")
    run = mailer.send_many(_messages(150), concurrency=4, progress=False, processes=2)
    outcomes = list(run)
    assert sorted(o.index for o in outcomes) == list(range(150))
    assert all(o.ok and o.status == "sent" for o in outcomes)
    arrived = {m.rcpt_tos[0]: message_from_bytes(m.data) for m in server.messages}
    assert len(server.messages) == 150 and len(arrived) == 150
    for o in outcomes:  # the bytes built in a child are the ones sent, under the same id
        assert o.result is not None
        received = arrived[f"u{o.index}@example.com"]
        assert received["Subject"] == f"n{o.index}"
        assert received["Message-ID"] == o.result.message_id
    records = mailer.audit.list(limit=200)
    assert len(records) == 150 and {r.status for r in records} == {"sent"}
    assert not multiprocessing.active_children()  # the builders were joined


def test_a_bad_item_fails_alone_as_without_processes(smtp_server: Any) -> None:
    """An item create() refuses in a child is that item's MessageError, with the same code."""
    server = smtp_server()
    items = list(_messages(6))
    items[2] = {**items[2], "recipients": ["not an address"]}
    items[4] = {"subject": "x", "body": "y"}  # no recipients: refused before create()
    by_processes = list(mailer_for(server).send_many(items, progress=False, processes=2))
    alone = list(mailer_for(server).send_many(items, progress=False))
    for outcomes in (by_processes, alone):
        failed = {o.index: o.error for o in outcomes if not o.ok}
        assert sorted(failed) == [2, 4]
    codes = [{o.index: getattr(o.error, "code", None) for o in r} for r in (by_processes, alone)]
    assert codes[0] == codes[1]
    assert server.deliveries == 8  # four good ones, twice


def test_drafts_and_unpicklable_items_are_built_here_in_order(smtp_server: Any) -> None:
    """A Draft is built already and never leaves; an item that cannot be pickled (a generator
    of headers) is built in this process; the order of indices holds throughout."""
    server = smtp_server()
    mailer = mailer_for(server)
    items: list[Any] = list(_messages(5))
    items[1] = mailer.create(subject="draft", recipients=["d@example.com"], body="x")
    items[3] = {**items[3], "headers": (pair for pair in [("X-Kind", "generator")])}
    outcomes = list(mailer.send_many(items, progress=False, processes=2))
    assert sorted(o.index for o in outcomes) == [0, 1, 2, 3, 4]
    assert all(o.status == "sent" for o in outcomes)
    kinds = {m.rcpt_tos[0]: message_from_bytes(m.data) for m in server.messages}
    assert kinds["d@example.com"]["Subject"] == "draft"
    assert kinds["u3@example.com"]["X-Kind"] == "generator"


@pytest.mark.parametrize("value", [0, -1, True, "2", 2.0, 65])
def test_bad_processes_values_are_refused_before_sending(smtp_server: Any, value: Any) -> None:
    server = smtp_server()
    with pytest.raises(ConfigurationError) as caught:
        mailer_for(server).send_many(_messages(3), processes=value)
    assert caught.value.code == "invalid_option" and "processes" in str(caught.value)
    assert server.connections == 0


def test_processes_need_a_plain_iterable(smtp_server: Any) -> None:
    server = smtp_server()

    async def source() -> AsyncIterator[dict[str, Any]]:
        for item in _messages(2):
            yield item

    async def main() -> None:
        mailer_for(server).send_many_async(source(), processes=2)

    with pytest.raises(ConfigurationError) as caught:
        asyncio.run(main())
    assert caught.value.code == "invalid_option"


def test_children_get_no_login_secrets(tmp_path: Path) -> None:
    """The configuration a builder process receives keeps what building needs, no logins."""
    from fluxmail import FluxMail

    mailer = FluxMail(
        host="smtp.example.com", username="u@example.com", password="pw-secret-1",
        sender="u@example.com", audit=False,
    )  # fmt: skip
    config = child_config(mailer.config)
    assert config.password is None and config.audit_password is None
    assert config.oauth_client_secret is None and config.oauth_refresh_token is None
    assert config.token_provider is None
    assert "pw-secret-1" not in repr(config.__dict__)
    assert config.default_sender() == mailer.config.default_sender()
