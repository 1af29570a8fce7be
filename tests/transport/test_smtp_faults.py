"""Every row of "What is retried" (docs/delivery.md), against the scripted fault server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import pytest

from fluxmail.errors import (
    ConnectionFailed,
    DeliveryError,
    OutcomeUnknown,
    Refused,
    SendTimeout,
)
from fluxmail.transport.smtp.session import SMTPParams, SMTPSession, TransactionResult
from tests.support.servers import Fault, Faults, SMTPTestServer, drop, reply, stall

Server = Callable[..., SMTPTestServer]
MESSAGE = b"Subject: faults\r\n\r\nbody\r\n"
RECIPIENTS = ["b@example.com", "c@example.com", "d@example.com"]


async def attempt(params: SMTPParams, recipients: list[str] = RECIPIENTS) -> TransactionResult:
    session = SMTPSession(params)
    try:
        await session.connect()
        return await session.send("a@example.com", recipients, MESSAGE)
    finally:
        await session.close()


def fails(params: SMTPParams, recipients: list[str] = RECIPIENTS) -> DeliveryError:
    with pytest.raises(DeliveryError) as info:
        asyncio.run(attempt(params, recipients))
    return info.value


def test_connection_refused_is_transient() -> None:
    """A closed port gives a transient ConnectionFailed at the connect stage."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    error = fails(SMTPParams("127.0.0.1", port, "none", None))
    assert isinstance(error, ConnectionFailed) and not isinstance(error, SendTimeout)
    assert error.transient and error.code == "connection_failed"
    assert error.stage == "connect"


@pytest.mark.parametrize(
    ("stage", "fault", "cls", "code", "transient"),
    [
        ("greeting", reply("421 4.3.2 Service not available"), ConnectionFailed,
         "service_unavailable", True),
        ("greeting", reply("554 5.7.1 Blocked"), Refused, "greeting_refused", False),
        ("greeting", stall(), SendTimeout, "timeout", True),
        ("ehlo", reply("421 4.3.2 Shutting down"), ConnectionFailed, "service_unavailable", True),
        ("ehlo", drop(), ConnectionFailed, "connection_lost", True),
        ("mail", reply("421 4.3.2 Closing"), ConnectionFailed, "service_unavailable", True),
        ("mail", reply("451 4.3.0 Local error"), DeliveryError, "sender_deferred", True),
        ("mail", reply("452 4.3.1 Insufficient storage"), DeliveryError, "sender_deferred", True),
        ("mail", reply("550 5.7.1 Sender not verified"), Refused, "sender_refused", False),
        ("mail", reply("553 5.1.8 Bad sender"), Refused, "sender_refused", False),
        ("mail", reply("554 5.7.1 Rejected"), Refused, "sender_refused", False),
        ("mail", stall(), SendTimeout, "timeout", True),
        ("data", reply("421 4.3.2 Closing"), ConnectionFailed, "service_unavailable", True),
        ("data", reply("451 4.3.0 Try later"), DeliveryError, "data_deferred", True),
        ("data", reply("554 5.5.1 No valid recipients"), Refused, "data_refused", False),
        ("data", drop(), ConnectionFailed, "connection_lost", True),
        ("end_of_data", reply("421 4.3.2 Closing"), ConnectionFailed, "service_unavailable",
         True),
        ("end_of_data", reply("451 4.3.0 Queue trouble"), DeliveryError, "message_deferred",
         True),
        ("end_of_data", reply("452 4.3.1 Disk full"), DeliveryError, "message_deferred", True),
        ("end_of_data", reply("550 5.7.1 Content rejected"), Refused, "message_refused", False),
        ("end_of_data", reply("552 5.3.4 Message too big"), Refused, "message_refused", False),
        ("end_of_data", reply("554 5.7.1 Spam"), Refused, "message_refused", False),
        ("end_of_data", drop(), OutcomeUnknown, "outcome_unknown", False),
        ("end_of_data", stall(), OutcomeUnknown, "outcome_unknown", False),
    ],
)  # fmt: skip
@pytest.mark.parametrize("pipelining", [True, False])
def test_fault_table(
    smtp_server: Server,
    stage: str,
    fault: Fault,
    cls: type[DeliveryError],
    code: str,
    transient: bool,
    pipelining: bool,
) -> None:
    """Each fault row raises the right class, code, transient flag, stage and SMTP reply."""
    server = smtp_server(pipelining=pipelining, faults=Faults(**{stage: fault}))
    params = server.params(command_timeout=0.5, data_timeout=0.5)
    error = fails(params)
    assert type(error) is cls
    assert (error.code, error.transient, error.stage) == (code, transient, stage)
    if fault.action == "reply":
        assert fault.text is not None
        assert error.smtp_code == int(fault.text[:3])
        assert error.enhanced_status == fault.text.split()[1]
    # Only a loss after the final "." may have delivered; nothing is ever delivered twice.
    lost_after_dot = stage == "end_of_data" and fault.action != "reply"
    assert server.deliveries == (1 if lost_after_dot else 0)
    assert len(server.messages) == 0


@pytest.mark.parametrize("stage", ["data", "end_of_data"])
def test_data_failures_carry_recipient_replies(smtp_server: Server, stage: str) -> None:
    """A failure at DATA or end of data tells which recipients had been accepted."""
    faults = Faults(
        rcpt_to={"c@example.com": reply("550 5.1.1 No such user")},
        **{stage: reply("451 4.3.0 Try later")},  # type: ignore[arg-type]
    )
    server = smtp_server(faults=faults)
    error = fails(server.params())
    replies = error.details["recipients"]
    assert [a for a, r in replies.items() if r.code == 250] == ["b@example.com", "d@example.com"]
    assert replies["c@example.com"].code == 550


@pytest.mark.parametrize("pipelining", [True, False])
def test_rcpt_replies_per_recipient(smtp_server: Server, pipelining: bool) -> None:
    """4xx RCPT replies defer, 5xx reject, and the others still receive the message."""
    rcpt_to = {
        "r450@example.com": reply("450 4.2.0 Mailbox busy"),
        "r451@example.com": reply("451 4.3.0 Local error"),
        "r550@example.com": reply("550 5.1.1 No such user"),
        "r551@example.com": reply("551 5.1.6 User not local"),
        "r553@example.com": reply("553 5.1.3 Bad address"),
    }
    server = smtp_server(pipelining=pipelining, faults=Faults(rcpt_to=rcpt_to))
    recipients = ["ok1@example.com", *rcpt_to, "ok2@example.com"]
    result = asyncio.run(attempt(server.params(), recipients))
    assert result.accepted == ("ok1@example.com", "ok2@example.com")
    assert result.deferred == ("r450@example.com", "r451@example.com")
    assert result.rejected == ("r550@example.com", "r551@example.com", "r553@example.com")
    assert result.recipients["r551@example.com"].enhanced_status == "5.1.6"
    assert result.data_reply is not None and "queued as" in result.data_reply.text
    assert server.messages[0].rcpt_tos == ["ok1@example.com", "ok2@example.com"]


@pytest.mark.parametrize("pipelining", [True, False])
def test_too_many_recipients(smtp_server: Server, pipelining: bool) -> None:
    """After 452 "too many recipients" the rest are deferred for a new transaction."""
    server = smtp_server(pipelining=pipelining, faults=Faults(max_recipients=2))
    recipients = [f"r{i}@example.com" for i in range(5)]
    result = asyncio.run(attempt(server.params(), recipients))
    assert result.accepted == ("r0@example.com", "r1@example.com")
    assert result.deferred == ("r2@example.com", "r3@example.com", "r4@example.com")
    assert all(result.recipients[a].code == 452 for a in result.deferred)
    assert server.messages[0].rcpt_tos == ["r0@example.com", "r1@example.com"]
    if not pipelining:  # one at a time: nothing more is tried after the first 452
        assert server.commands.count("RCPT") == 3


def test_rcpt_552_too_many_counts_as_deferred() -> None:
    """RFC 5321 4.5.3.1.10: a 552 reply to RCPT is treated as temporary."""
    from fluxmail.results import ServerReply

    result = TransactionResult({"a@x": ServerReply(552, "5.5.3 Too many recipients")}, None)
    assert result.deferred == ("a@x",) and result.rejected == ()


@pytest.mark.parametrize("pipelining", [True, False])
def test_421_in_the_middle_of_rcpt(smtp_server: Server, pipelining: bool) -> None:
    """421 during RCPT voids the transaction: transient ConnectionFailed, nothing delivered."""
    faults = Faults(rcpt_to={"c@example.com": reply("421 4.4.2 Closing connection")})
    server = smtp_server(pipelining=pipelining, faults=faults)
    error = fails(server.params())
    assert isinstance(error, ConnectionFailed) and error.transient
    assert error.stage == "rcpt" and error.smtp_code == 421
    assert server.deliveries == 0


def test_fail_first_n_times_then_succeed(smtp_server: Server) -> None:
    """A fault with times=2 fails two attempts, then the third delivers exactly once."""
    server = smtp_server(faults=Faults(mail=reply("451 4.3.0 Try later", times=2)))
    for _ in range(2):
        assert fails(server.params()).transient
    result = asyncio.run(attempt(server.params()))
    assert result.accepted == tuple(RECIPIENTS)
    assert server.deliveries == 1


def test_greeting_fault_counts_across_connections(smtp_server: Server) -> None:
    """A greeting 421 with times=1 refuses the first connection only."""
    server = smtp_server(faults=Faults(greeting=reply("421 4.3.2 Busy", times=1)))
    assert isinstance(fails(server.params()), ConnectionFailed)
    asyncio.run(attempt(server.params()))
    assert server.connections == 2 and server.deliveries == 1


def test_quit_failure_after_250_is_ignored(smtp_server: Server) -> None:
    """A connection dropped at QUIT after a 250 changes nothing: close() does not raise."""
    server = smtp_server(faults=Faults(quit=drop()))
    result = asyncio.run(attempt(server.params()))
    assert result.data_reply is not None and result.data_reply.code == 250
    assert server.deliveries == 1


FAULT_ROWS: list[dict[str, Any]] = [
    {"greeting": reply("421 4.3.2 Busy", times=1)},
    {"ehlo": reply("421 4.3.2 Busy", times=1)},
    {"mail": reply("451 4.3.0 Later", times=1)},
    {"rcpt_to": {"c@example.com": reply("421 4.4.2 Closing", times=1)}},
    {"data": reply("451 4.3.0 Later", times=1)},
    {"data": drop(times=1)},
    {"end_of_data": reply("451 4.3.0 Later", times=1)},
    {"end_of_data": drop(times=1)},
    {"end_of_data": stall(times=1)},
]


@pytest.mark.parametrize("row", FAULT_ROWS)
def test_no_fault_path_delivers_twice(smtp_server: Server, row: dict[str, Any]) -> None:
    """Retrying only what the errors call transient never delivers a message twice."""
    server = smtp_server(faults=Faults(**row))
    params = server.params(command_timeout=0.5, data_timeout=0.5)
    for _ in range(3):  # bounded retries, as a caller following the policy would do
        try:
            asyncio.run(attempt(params))
            break
        except DeliveryError as exc:
            if not exc.transient:
                assert isinstance(exc, OutcomeUnknown)
                break
    assert server.deliveries == 1
