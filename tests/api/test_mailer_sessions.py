"""Connection reuse, concurrency and the sync face from odd places, against real servers."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from fluxmail import FluxMail
from tests.support.mailing import mailer_for


def test_with_mailer_keeps_one_connection(smtp_server: Any) -> None:
    """`with mailer:` sends three messages over one connection; without it, one each."""
    server = smtp_server(tls="starttls", auth=("user", "pw"))
    mailer = mailer_for(server, username="user", password="pw")
    with mailer:
        for i in range(3):
            mailer.create(f"m{i}", "a@example.com", "x").send()
    assert server.connections == 1 and server.commands.count("AUTH") == 1
    mailer.create("after", "a@example.com", "x").send()
    assert server.connections == 2 and len(server.messages) == 4


def test_async_with_mailer_keeps_one_connection(smtp_server: Any) -> None:
    """`async with mailer:` does the same on the caller's event loop."""
    server = smtp_server()
    mailer = mailer_for(server)

    async def main() -> None:
        async with mailer:
            for i in range(3):
                await mailer.create(f"m{i}", "a@example.com", "x").send_async()

    asyncio.run(main())
    assert server.connections == 1 and len(server.messages) == 3


def test_idle_connection_closed_by_server_is_reopened(smtp_server: Any) -> None:
    """The server drops the idle connection: the next send reconnects transparently, once."""
    server = smtp_server()
    mailer = mailer_for(server)
    with mailer:
        mailer.create("one", "a@example.com", "x").send()
        server.drop_connections()
        result = mailer.create("two", "a@example.com", "x").send()
    assert result.status == "sent" and len(result.attempts) == 1
    assert server.deliveries == 2 and server.connections == 2


def test_sync_send_works_inside_a_running_event_loop(smtp_server: Any) -> None:
    """draft.send() called from a coroutine (e.g. a Jupyter cell) still delivers."""
    server = smtp_server()
    mailer = mailer_for(server)

    async def main() -> str:
        return mailer.create("Hi", "a@example.com", "x").send().status

    assert asyncio.run(main()) == "sent" and server.deliveries == 1


def test_one_mailer_shared_by_threads_and_tasks(smtp_server: Any) -> None:
    """50 threads and 50 tasks share one mailer: each recipient gets its own message, once."""
    server = smtp_server()
    mailer = mailer_for(server)

    def by_thread(i: int) -> None:
        mailer.create(f"subject t{i}", f"t{i}@example.com", f"body t{i}").send()

    async def by_tasks() -> None:
        drafts = [
            mailer.create(f"subject a{i}", f"a{i}@example.com", f"body a{i}") for i in range(50)
        ]
        await asyncio.gather(*(d.send_async() for d in drafts))

    threads = [threading.Thread(target=by_thread, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    asyncio.run(by_tasks())
    for t in threads:
        t.join(timeout=60)
    got = {m.rcpt_tos[0]: m.data for m in server.messages}
    assert len(server.messages) == 100 and len(got) == 100
    for rcpt, data in got.items():
        tag = rcpt.split("@")[0]
        assert f"subject {tag}".encode() in data and f"body {tag}".encode() in data


def test_create_returns_independent_immutable_drafts(smtp_server: Any) -> None:
    """Two drafts from one mailer never share state (0.3.3's double-send bug)."""
    server = smtp_server()
    mailer = mailer_for(server)
    first = mailer.create("first", "a@example.com", "x")
    second = mailer.create("second", "b@example.com", "y")
    first.send()
    second.send()
    assert [m.rcpt_tos for m in server.messages] == [["a@example.com"], ["b@example.com"]]
    assert first.message_id != second.message_id


def test_memory_backend_outbox() -> None:
    """FLUXMAIL_TYPE=memory keeps messages in fluxmail.testing.outbox, parsed on demand."""
    from fluxmail.testing import outbox

    outbox.clear()
    mailer = FluxMail(object_type="memory", sender="app@example.com")
    mailer.create("Welcome", "ada@example.com", "Hello Ada").send()
    (sent,) = outbox.find(to="ada@example.com")
    assert sent.subject == "Welcome" and sent.parsed()["To"] == "ada@example.com"
    assert sent.parsed().get_content().strip() == "Hello Ada"
    assert sent.sender == "app@example.com"
    assert sent.recipients == sent.to == ("ada@example.com",)
    assert b"Hello Ada" in sent.data
    with pytest.raises(AttributeError):  # what a test asserts on cannot be changed behind it
        sent.data = b"changed"  # type: ignore[misc]


def test_file_backend_writes_eml(tmp_path: Any) -> None:
    """FLUXMAIL_TYPE=file writes each message whole as an .eml file."""
    mailer = FluxMail(object_type="file", file_dir=tmp_path / "out", sender="app@example.com")
    draft = mailer.create("Hi", "a@example.com", "x")
    assert draft.send().status == "sent"
    [eml] = (tmp_path / "out").glob("*.eml")
    assert eml.read_bytes() == draft.as_bytes()


def test_console_backend_prints(capsys: Any) -> None:
    """FLUXMAIL_TYPE=console prints the message to standard output."""
    FluxMail(object_type="console", sender="app@example.com", audit=False).create(
        "Printed", "a@example.com", "visible body"
    ).send()
    out = capsys.readouterr().out
    assert "Subject: Printed" in out and "visible body" in out


def test_memory_backend_does_not_audit_by_default(tmp_path: Any) -> None:
    """Users' unit tests on the memory backend leave no .fluxmail/ folder unless asked."""
    FluxMail(object_type="memory", sender="app@example.com").create(
        "Hi", "a@example.com", "x"
    ).send()
    assert not (Path.cwd() / ".fluxmail").exists()
    audited = FluxMail(object_type="memory", sender="app@example.com", audit=True)
    assert audited.create("Hi", "a@example.com", "x").send().audit_id is not None
