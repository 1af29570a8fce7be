"""SMTPSession against a real aiosmtpd server: transactions, pipelining, bytes on the wire."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from fluxmail.errors import ConfigurationError, ConnectionFailed, MessageError, Refused
from fluxmail.transport.smtp.model import default_local_hostname, ehlo_name, is_loopback_host
from fluxmail.transport.smtp.replies import parse_reply
from fluxmail.transport.smtp.session import SMTPParams, SMTPSession, TransactionResult
from tests.support.servers import Faults, SMTPTestServer, reply

T = TypeVar("T")
Server = Callable[..., SMTPTestServer]

MESSAGE = (
    b"From: a@example.com\r\nTo: b@example.com\r\nSubject: dots\r\n\r\n"
    b".starts with a dot\r\n..two dots\r\n.\r\nend\r\n"
)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def send_once(params: SMTPParams, recipients: list[str], data: bytes = MESSAGE) -> Any:
    session = SMTPSession(params)
    await session.connect()
    try:
        return await session.send("a@example.com", recipients, data)
    finally:
        await session.close()


@pytest.mark.parametrize("pipelining", [True, False])
def test_exact_bytes_arrive_dot_stuffing_intact(smtp_server: Server, pipelining: bool) -> None:
    """The server receives exactly the bytes given, lines starting with "." included."""
    server = smtp_server(pipelining=pipelining)
    result = run(send_once(server.params(), ["b@example.com", "c@example.com"]))
    assert result.accepted == ("b@example.com", "c@example.com")
    assert result.data_reply is not None and result.data_reply.code == 250
    [msg] = server.messages
    assert msg.data == MESSAGE
    assert msg.mail_from == "a@example.com"
    assert msg.rcpt_tos == ["b@example.com", "c@example.com"]
    assert server.pipelined == [pipelining]


def test_pipelining_on_and_off_give_the_same_result(smtp_server: Server) -> None:
    """With and without PIPELINING the TransactionResult is identical, refusals included."""
    faults = Faults(rcpt_to={"x@example.com": reply("550 5.1.1 No such user")})
    results = []
    for pipelining in (True, False):
        server = smtp_server(pipelining=pipelining, faults=faults)
        results.append(run(send_once(server.params(), ["b@example.com", "x@example.com"])))
        assert server.messages[0].rcpt_tos == ["b@example.com"]
    assert results[0] == results[1]
    assert results[0].rejected == ("x@example.com",)
    assert results[0].recipients["x@example.com"].enhanced_status == "5.1.1"


def test_message_without_final_crlf_gets_one(smtp_server: Server) -> None:
    """A message not ending in CRLF is terminated properly before the final "."."""
    server = smtp_server()
    run(send_once(server.params(), ["b@example.com"], b"Subject: x\r\n\r\nno newline"))
    assert server.messages[0].data == b"Subject: x\r\n\r\nno newline\r\n"


def test_mail_parameters_size_and_8bitmime(smtp_server: Server) -> None:
    """MAIL FROM carries SIZE=<octets>, and BODY=8BITMIME only for 8-bit data."""
    server = smtp_server()
    eight_bit = "Subject: x\r\n\r\nh\u00e9llo\r\n".encode()
    run(send_once(server.params(), ["b@example.com"], eight_bit))
    run(send_once(server.params(), ["b@example.com"], MESSAGE))
    first, second = server.messages
    assert first.mail_options == [f"SIZE={len(eight_bit)}", "BODY=8BITMIME"]
    assert second.mail_options == [f"SIZE={len(MESSAGE)}"]


def test_no_size_parameter_when_not_offered(smtp_server: Server) -> None:
    """Without the SIZE extension, MAIL FROM carries no SIZE parameter."""
    server = smtp_server(size=None)
    run(send_once(server.params(), ["b@example.com"]))
    assert server.messages[0].mail_options == []


def test_message_over_announced_size_is_refused_before_mail(smtp_server: Server) -> None:
    """RFC 1870: a message larger than the announced SIZE is refused without sending it."""
    server = smtp_server(size=50)
    with pytest.raises(Refused) as info:
        run(send_once(server.params(), ["b@example.com"], b"x" * 100 + b"\r\n"))
    assert info.value.code == "message_too_large" and not info.value.transient
    assert "MAIL" not in server.commands


def test_smtputf8_addresses(smtp_server: Server) -> None:
    """With smtputf8=True, UTF-8 envelope addresses go out with the SMTPUTF8 parameter."""
    server = smtp_server()

    async def go() -> None:
        session = SMTPSession(server.params())
        await session.connect()
        assert session.supports_smtputf8
        await session.send(
            "j\u00f6rg@example.com", ["\u00e9l\u00e8ve@example.com"], MESSAGE, smtputf8=True
        )
        await session.close()

    run(go())
    [msg] = server.messages
    assert msg.mail_from == "j\u00f6rg@example.com"
    assert msg.rcpt_tos == ["\u00e9l\u00e8ve@example.com"]
    assert "SMTPUTF8" in msg.mail_options


def test_smtputf8_refused_when_server_lacks_it(smtp_server: Server) -> None:
    """smtputf8=True against a server without SMTPUTF8 fails before MAIL FROM."""
    server = smtp_server(smtputf8=False)

    async def go() -> None:
        session = SMTPSession(server.params())
        await session.connect()
        try:
            await session.send("a@example.com", ["\u00e9@example.com"], MESSAGE, smtputf8=True)
        finally:
            await session.close()

    with pytest.raises(MessageError) as info:
        run(go())
    assert info.value.code == "smtputf8_unsupported"
    assert "MAIL" not in server.commands


@pytest.mark.parametrize(
    ("recipients", "data", "code"),
    [
        (["\u00e9@example.com"], MESSAGE, "smtputf8_required"),
        (["b@example.com>\r\nRCPT TO:<c@x"], MESSAGE, "invalid_address"),
        ([], MESSAGE, "no_recipients"),
        (["b@example.com"], b"Subject: x\n\nbare LF\r\n", "bare_line_ending"),
        (["b@example.com"], b"x\r\n.\r\nRCPT\rTO\r\n", "bare_line_ending"),
    ],
)
def test_bad_envelope_or_data_fails_before_any_command(
    smtp_server: Server, recipients: list[str], data: bytes, code: str
) -> None:
    """Unsafe addresses or line endings raise MessageError before MAIL FROM is sent."""
    server = smtp_server()
    with pytest.raises(MessageError) as info:
        run(send_once(server.params(), recipients, data))
    assert info.value.code == code
    assert "MAIL" not in server.commands and server.deliveries == 0


def test_session_reused_for_several_transactions(smtp_server: Server) -> None:
    """One connection carries several transactions, including after a refused one."""
    server = smtp_server(faults=Faults(mail=reply("550 5.7.1 Not you", times=1)))

    async def go() -> list[TransactionResult]:
        session = SMTPSession(server.params())
        await session.connect()
        with pytest.raises(Refused):
            await session.send("a@example.com", ["b@example.com"], MESSAGE)
        results = [
            await session.send("a@example.com", [f"r{i}@example.com"], MESSAGE) for i in range(3)
        ]
        await session.reset()
        await session.noop()
        await session.close()
        return results

    results = run(go())
    assert [r.accepted for r in results] == [(f"r{i}@example.com",) for i in range(3)]
    assert server.connections == 1 and len(server.messages) == 3
    assert server.commands.count("RSET") >= 2  # after the refusal, and the explicit reset


def test_all_recipients_refused_returns_result_without_data(smtp_server: Server) -> None:
    """When every RCPT is refused, DATA is not run, RSET is sent, and nothing is delivered."""
    for pipelining in (True, False):
        server = smtp_server(pipelining=pipelining, faults=Faults(rcpt=reply("550 5.1.1 No")))
        result = run(send_once(server.params(), ["b@example.com", "c@example.com"]))
        assert result.data_reply is None
        assert result.rejected == ("b@example.com", "c@example.com")
        assert server.deliveries == 0 and "RSET" in server.commands


def test_duplicate_recipients_get_one_rcpt(smtp_server: Server) -> None:
    """A recipient listed twice is sent one RCPT TO."""
    server = smtp_server()
    result = run(send_once(server.params(), ["b@example.com", "b@example.com"]))
    assert list(result.recipients) == ["b@example.com"]
    assert server.commands.count("RCPT") == 1


def test_connection_state_properties(smtp_server: Server) -> None:
    """extensions are lowercased, timings cover each step, is_connected follows the socket."""
    server = smtp_server()

    async def go() -> None:
        session = SMTPSession(server.params())
        assert not session.is_connected
        await session.connect()
        assert session.is_connected and not session.authenticated
        assert {"size", "pipelining", "smtputf8", "8bitmime"} <= set(session.extensions)
        assert {"connect", "greeting", "ehlo"} <= set(session.timings)
        assert session.tls_info is None
        await session.close()
        assert not session.is_connected
        await session.close()  # idempotent

    run(go())


def test_server_closing_idle_connection_is_detected(smtp_server: Server) -> None:
    """A connection the server closed while idle is seen as closed; send() fails transiently."""
    server = smtp_server()

    async def go() -> None:
        session = SMTPSession(server.params())
        await session.connect()
        server.drop_connections()
        for _ in range(200):  # bounded wait for the EOF to arrive
            if not session.is_connected:
                break
            await asyncio.sleep(0.01)
        assert not session.is_connected
        with pytest.raises(ConnectionFailed) as info:
            await session.send("a@example.com", ["b@example.com"], MESSAGE)
        assert info.value.transient
        await session.close()
        await session.connect()  # a closed session can be connected again
        await session.send("a@example.com", ["b@example.com"], MESSAGE)
        await session.close()

    run(go())
    assert len(server.messages) == 1 and server.connections == 2


def test_ehlo_name_configured_and_default(smtp_server: Server) -> None:
    """EHLO uses local_hostname when given, else a sane default name."""
    server = smtp_server()
    run(send_once(server.params(local_hostname="client.example.org"), ["b@example.com"]))
    run(send_once(server.params(), ["b@example.com"]))
    configured, default = server.ehlo_names
    assert configured == "client.example.org"
    assert default == default_local_hostname() and default


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("mail.example.org.", "mail.example.org"),
        ("10.0.0.1", "[10.0.0.1]"),
        ("::1", "[IPv6:::1]"),
        ("bad name", None),
        ("", None),
        ("h\u00f6st", None),
    ],
)
def test_ehlo_name(raw: str, expected: str | None) -> None:
    """EHLO arguments are domains or address literals (RFC 5321 4.1.3); others are rejected."""
    assert ehlo_name(raw) == expected


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("localhost", True), ("127.0.0.1", True), ("::1", True), ("[::1]", True),
     ("smtp.example.com", False), ("10.1.2.3", False)],
)  # fmt: skip
def test_loopback_hosts(host: str, loopback: bool) -> None:
    """Only localhost and loopback literals count as traffic that stays on the machine."""
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize(
    ("code", "text", "enhanced"),
    [
        (250, "2.0.0 OK: queued as ABC", "2.0.0"),
        (550, "5.1.1 <x@example.com>: Recipient address rejected", "5.1.1"),
        (451, "4.7.1 Try again later\nsecond line", "4.7.1"),
        (550, "4.1.1 class digit does not match", None),
        (250, "OK", None),
        (535, "5.7.8", "5.7.8"),
        (554, "5.7.1234 too long", None),
    ],
)
def test_enhanced_status_parsing(code: int, text: str, enhanced: str | None) -> None:
    """RFC 3463 enhanced status codes are parsed from the start of the reply text."""
    parsed = parse_reply(code, text)
    assert parsed.enhanced_status == enhanced and parsed.text == text


def test_params_hide_password_and_validate() -> None:
    """SMTPParams never shows the password and rejects impossible values."""
    params = SMTPParams("smtp.example.com", 587, "starttls", None, "u", "s3cret-pw")
    assert "s3cret-pw" not in repr(params) and "s3cret-pw" not in str(params)
    for bad in (
        {"port": 0},
        {"port": 65536},
        {"host": "a b"},
        {"host": "x\r\n"},
        {"command_timeout": 0},
        {"data_timeout": float("nan")},
        {"connect_timeout": float("inf")},
        {"security": "tls"},
        {"local_hostname": "bad name"},
    ):
        values: dict[str, Any] = {"host": "h", "port": 25, "security": "none", "ssl_context": None}
        values.update(bad)
        with pytest.raises(ConfigurationError):
            SMTPParams(**values)


def test_importing_the_smtp_stack_loads_no_aiosmtplib() -> None:
    """The session modules import aiosmtplib only when a connection runs (cold start)."""
    probe = (
        "import sys, fluxmail.transport.smtp.session, fluxmail.transport.smtp.pool\n"
        "print('aiosmtplib' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"
