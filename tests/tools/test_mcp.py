"""``fluxmail mcp``: an MCP client from the SDK drives the real command over stdio.

The server sends to a real aiosmtpd server (STARTTLS, AUTH with a marker password) and keeps
its audit in tmp_path. Each test runs one server process and many tool calls (the start-up
dominates the time). Every tool result and error text is scanned for the secrets.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.support.api_mailing import KEY
from tests.support.cli import FLUXMAIL, clean_environ, run_script
from tests.support.http_api import HttpApiServer, Reply
from tests.support.servers import SMTPTestServer

mcp = pytest.importorskip("mcp")
from mcp import ClientSession, StdioServerParameters, stdio_client  # noqa: E402

PASSWORD = "Mcp-Marker-Pw-7f3a9c"
READ_TOOLS = {"draft_email", "list_records", "show_record", "preview"}
SEND_TOOLS = {"send_draft", "send_email"}

Call = Callable[[str, dict[str, Any]], Awaitable[Any]]


def _env(server: SMTPTestServer, tmp_path: Path, **mcp_settings: str) -> dict[str, str]:
    env = clean_environ(
        FLUXMAIL_HOST="127.0.0.1", FLUXMAIL_PORT=str(server.port), FLUXMAIL_TLS="true",
        FLUXMAIL_CA_FILE=server.ca_path, FLUXMAIL_USERNAME="agent",
        FLUXMAIL_PASSWORD=PASSWORD, FLUXMAIL_SENDER="Agent <agent@example.com>",
        FLUXMAIL_TIMEOUT="10", FLUXMAIL_AUDIT_DIR=str(tmp_path / "audit"),
    )  # fmt: skip
    env.update({f"FLUXMAIL_MCP_{k.upper()}": v for k, v in mcp_settings.items()})
    return env


class Session:
    """Records every text the agent could read, for the secrets scan."""

    def __init__(self, client: ClientSession, secrets: tuple[str, ...] = (PASSWORD,)) -> None:
        self.client = client
        self.secrets = secrets
        self.seen: list[str] = []

    async def call(self, name: str, arguments: dict[str, Any]) -> Any:
        result = await self.client.call_tool(name, arguments)
        self.seen += [getattr(block, "text", "") for block in result.content]
        self.seen.append(json.dumps(result.structured_content))
        return result

    async def ok(self, name: str, **arguments: Any) -> dict[str, Any]:
        result = await self.call(name, arguments)
        assert not result.is_error, result.content
        data: dict[str, Any] = result.structured_content
        return data

    async def refused(self, name: str, **arguments: Any) -> str:
        result = await self.call(name, arguments)
        assert result.is_error, result.structured_content
        text: str = result.content[0].text
        return text

    def assert_no_secret(self) -> None:
        import base64

        forms = [form for s in self.secrets for form in (s, base64.b64encode(s.encode()).decode())]
        assert self.seen and not [t for t in self.seen for f in forms if f in t]


def _drive(
    env: dict[str, str], cwd: Path, body: Callable[[Session], Awaitable[None]],
    secrets: tuple[str, ...] = (PASSWORD,),
) -> None:  # fmt: skip
    params = StdioServerParameters(command=str(FLUXMAIL), args=["mcp"], env=env, cwd=cwd)

    async def main() -> None:
        with anyio.fail_after(60):
            async with stdio_client(params) as (read, write), ClientSession(read, write) as client:
                await client.initialize()
                session = Session(client, secrets)
                tools = await client.list_tools()
                session.seen.append(json.dumps([t.model_dump() for t in tools.tools]))
                await body(session)
                session.assert_no_secret()

    anyio.run(main)


def _origin(record_id: str, env: dict[str, str], cwd: Path) -> str:
    ran = run_script("audit", "show", record_id, "--json", env=env, cwd=cwd)
    assert ran.returncode == 0, ran.stderr
    assert PASSWORD not in ran.stdout
    data = json.loads(ran.stdout)
    record = data.get("record", data)
    return str(record["origin"])


def test_drafting_only_guard_rails_and_no_secrets(
    smtp_server: Callable[..., SMTPTestServer], tmp_path: Path
) -> None:
    """Without FLUXMAIL_MCP_ALLOW_SEND: four tools, drafts stored and never sent, every
    guard rail refuses with its code, Bcc hidden unless asked for."""
    server = smtp_server(tls="starttls", auth=("agent", PASSWORD))
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "report.txt").write_text("numbers\n")
    outside = tmp_path / "secret.txt"
    outside.write_text("not for agents\n")
    (folder / "link.txt").symlink_to(outside)
    env = _env(
        server, tmp_path, attachment_dir=str(folder), max_recipients="3",
        allowed_domains="example.com, BÜCHER.example",
    )  # fmt: skip
    ids: list[str] = []

    async def body(s: Session) -> None:
        tools = await s.client.list_tools()
        assert {t.name for t in tools.tools} == READ_TOOLS
        assert "Unknown tool" in await s.refused("send_draft", id="x")
        draft = await s.ok(
            "draft_email", to=["Bob <bob@example.com>"], bcc=["audit@xn--bcher-kva.example"],
            subject="Report", text="Hi Bob", html="<p>Hi <b>Bob</b></p>",
            attachments=["report.txt"],
        )  # fmt: skip
        ids.append(draft["id"])
        assert draft["status"] == "draft" and draft["attachments"][0]["filename"] == "report.txt"
        assert f"fluxmail drafts send {draft['id']}" in draft["next"]
        # Shown as the recipient gets it: no Bcc header, both bodies, the attachment.
        seen = await s.ok("preview", id=draft["id"])
        headers = dict(seen["headers"])
        assert headers["Subject"] == "Report" and "Bcc" not in headers
        assert seen["text"].strip() == "Hi Bob" and "<b>Bob</b>" in seen["html"]
        assert seen["attachments"][0]["filename"] == "report.txt"
        shown = await s.ok("show_record", id=draft["id"])
        assert "bcc" not in shown and "audit@xn--bcher-kva.example" not in json.dumps(shown)
        full = await s.ok("show_record", id=draft["id"], include_bcc=True)
        assert full["bcc"] == ["audit@xn--bcher-kva.example"]
        listed = await s.ok("list_records", status="draft")
        assert [r["id"] for r in listed["records"]] == [draft["id"]]
        assert "bcc" not in json.dumps(listed)
        # The guard rails.
        base = {"to": ["bob@example.com"], "subject": "S", "text": "t"}
        for name, why in [
            (str(outside), "outside"), ("../secret.txt", ".."), ("link.txt", "outside"),
        ]:  # fmt: skip
            text = await s.refused("draft_email", **base, attachments=[name])
            assert "[mcp_attachment_refused]" in text and why in text
        text = await s.refused("draft_email", **{**base, "cc": ["eve@evil.example"]})
        assert "[mcp_recipient_refused]" in text and "eve@evil.example" in text
        text = await s.refused("draft_email", **{**base, "bcc": ["x@sub.example.com"]})
        assert "[mcp_recipient_refused]" in text
        many = [f"u{i}@example.com" for i in range(4)]
        assert "[mcp_too_many_recipients]" in await s.refused("draft_email", **{**base, "to": many})
        text = await s.refused("draft_email", **{**base, "subject": "Hi\r\nBcc: eve@evil.example"})
        assert "[header_injection]" in text
        assert "[invalid_address]" in await s.refused("draft_email", **{**base, "to": ["nope"]})
        assert "[not_found]" in await s.refused("preview", id="01J00000000000000000000000")
        listed = await s.ok("list_records")
        assert len(listed["records"]) == 1  # no refusal stored anything

    _drive(env, tmp_path, body)
    assert server.received == []  # drafting never contacts the server
    assert _origin(ids[0], env, tmp_path) == "mcp"


def test_sending_replay_and_the_send_cap(
    smtp_server: Callable[..., SMTPTestServer], tmp_path: Path
) -> None:
    """With FLUXMAIL_MCP_ALLOW_SEND: a draft sent once and replayed (the server has one),
    send_email, then the cap; replays do not count."""
    server = smtp_server(tls="starttls", auth=("agent", PASSWORD))
    env = _env(server, tmp_path, allow_send="true", max_sends="2")
    ids: list[str] = []

    async def body(s: Session) -> None:
        tools = await s.client.list_tools()
        assert {t.name for t in tools.tools} == READ_TOOLS | SEND_TOOLS
        draft = await s.ok("draft_email", to=["bob@example.com"], subject="Hi", text="Hello")
        assert server.received == []
        first = await s.ok("send_draft", id=draft["id"])
        assert first["status"] == "sent" and not first["replayed"]
        assert first["sends_left"] == 1
        again = await s.ok("send_draft", id=draft["id"])
        assert again["replayed"] and again["message_id"] == first["message_id"]
        assert again["sends_left"] == 1  # a replay is free
        direct = await s.ok("send_email", to=["carol@example.com"], subject="Yo", text="Hey")
        assert direct["status"] == "sent" and direct["sends_left"] == 0
        ids.extend([draft["id"], direct["audit_id"]])
        text = await s.refused("send_email", to=["dan@example.com"], subject="No", text="x")
        assert "[mcp_send_limit]" in text
        later = await s.ok("draft_email", to=["bob@example.com"], subject="Later", text="x")
        assert "[mcp_send_limit]" in await s.refused("send_draft", id=later["id"])
        assert "[header_injection]" in await s.refused(
            "send_email", to=["bob@example.com"], subject="a\nb", text="x"
        )

    _drive(env, tmp_path, body)
    assert [list(m.rcpt_tos) for m in server.messages] == [
        ["bob@example.com"],
        ["carol@example.com"],
    ]
    assert all(_origin(i, env, tmp_path) == "mcp" for i in ids)
    assert os.environ.get("FLUXMAIL_PASSWORD") is None


def test_without_the_sdk_the_command_names_the_extra(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No MCP SDK: missing_extra (exit 3) with the pip line, before any mailer is built."""
    import sys

    from tests.support.cli import cli

    monkeypatch.setitem(sys.modules, "mcp", None)  # `import mcp` raises ImportError
    ran = cli(capsys, monkeypatch, "mcp")
    assert ran.code == 3 and "pip install fluxmail[mcp]" in ran.err
    assert "[missing_extra]" in ran.err


def test_an_api_key_never_reaches_the_agent(
    http_api: Callable[..., HttpApiServer], tmp_path: Path
) -> None:
    """An HTTP API transport: the key is used, and neither a result nor an error the agent
    reads holds it, even when the provider echoes it back in a refusal."""
    server = http_api(default=Reply(200, body={"id": "re-1"}, times=None))
    env = clean_environ(
        FLUXMAIL_TRANSPORT="api", FLUXMAIL_PROVIDER="resend", FLUXMAIL_API_KEY=KEY,
        FLUXMAIL_API_BASE_URL=server.url, FLUXMAIL_CA_FILE=str(server.ca_path),
        FLUXMAIL_SENDER="Agent <agent@example.com>", FLUXMAIL_TIMEOUT="10",
        FLUXMAIL_AUDIT_DIR=str(tmp_path / "audit"), FLUXMAIL_MCP_ALLOW_SEND="true",
    )  # fmt: skip

    async def body(s: Session) -> None:
        sent = await s.ok("send_email", to=["bob@example.com"], subject="Hi", text="Hello")
        assert sent["status"] == "queued"
        draft = await s.ok("draft_email", to=["carol@example.com"], subject="Yo", text="x")
        server.script(Reply(422, body={"name": "validation_error", "message": f"bad key {KEY}"}))
        text = await s.refused("send_draft", id=draft["id"])
        assert "422" in text or "refused" in text.lower()
        await s.ok("show_record", id=sent["audit_id"])
        await s.ok("list_records")

    _drive(env, tmp_path, body, secrets=(KEY, f"Bearer {KEY}"))
    assert [r.headers["authorization"] for r in server.requests] == [f"Bearer {KEY}"] * 2


def test_oauth_secrets_never_reach_the_agent(
    oauth_server: Callable[..., Any], smtp_server: Callable[..., SMTPTestServer], tmp_path: Path
) -> None:
    """XOAUTH2 with a client secret: neither the secret nor any token (raw, or in its SASL
    forms) is in what the agent reads, also when the server refuses the token and quotes the
    client's initial response back."""
    from fluxmail.transport.smtp import sasl
    from tests.support.oauth_smtp import TokenVerifier

    mailbox, secret = "box@example.com", "Cl1ent-S3cret/mcp+chars="
    endpoint = oauth_server(lifetime=3600)
    endpoint.client("app-id", secret)
    refusing: list[bool] = []

    def valid() -> set[str]:
        return set() if refusing else {t for t in endpoint.tokens if endpoint.valid(t)}

    verifier = TokenVerifier(mailbox, valid, echo=True)
    server = smtp_server(tls="starttls", auth_mechanisms=("XOAUTH2",), oauth=verifier)
    env = clean_environ(
        FLUXMAIL_HOST="127.0.0.1", FLUXMAIL_PORT=str(server.port), FLUXMAIL_TLS="true",
        FLUXMAIL_CA_FILE=str(server.ca_path), FLUXMAIL_USERNAME=mailbox, FLUXMAIL_SENDER=mailbox,
        FLUXMAIL_TIMEOUT="10", FLUXMAIL_AUDIT_DIR=str(tmp_path / "audit"),
        FLUXMAIL_OAUTH_PROVIDER="microsoft", FLUXMAIL_OAUTH_TENANT_ID="contoso.onmicrosoft.com",
        FLUXMAIL_OAUTH_CLIENT_ID="app-id", FLUXMAIL_OAUTH_CLIENT_SECRET=secret,
        FLUXMAIL_OAUTH_TOKEN_URL=endpoint.url, FLUXMAIL_MCP_ALLOW_SEND="true",
    )  # fmt: skip
    seen: list[Session] = []

    async def body(s: Session) -> None:
        seen.append(s)
        sent = await s.ok("send_email", to=["bob@example.com"], subject="Hi", text="Hello")
        assert sent["status"] == "sent"
        refusing.append(True)
        text = await s.refused("send_email", to=["carol@example.com"], subject="No", text="x")
        assert "535" in text
        await s.ok("show_record", id=sent["audit_id"])
        await s.ok("list_records")

    _drive(env, tmp_path, body, secrets=(secret,))
    forms = [secret, base64.b64encode(f"app-id:{secret}".encode()).decode()]
    assert endpoint.tokens  # a token was issued, and used
    for token in endpoint.tokens:
        forms.append(token)
        for mechanism in sasl.MECHANISMS:
            raw, b64 = sasl.initial_response(mechanism, mailbox, token)
            forms += [raw.decode(), b64.decode()]
    texts = seen[0].seen
    assert not [f for f in forms for t in texts if f in t]
    assert len(server.messages) == 1
