"""The one SMTP wire implementation: mail transactions on an ``SMTPConnection``.

``SMTPSession`` runs mail transactions, pipelined when the server offers it (RFC 2920). Replies
become data (``TransactionResult``) or errors with stable codes (``replies``). It never
retries: the retry policy belongs to the caller; a loss after the final "." is
``OutcomeUnknown``. aiosmtplib is imported only by a connection that runs (cold start).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from fluxmail.errors import ConnectionFailed, DeliveryError, MessageError
from fluxmail.results import ServerReply
from fluxmail.transport.smtp.connection import WIRE_FAULTS, SMTPConnection
from fluxmail.transport.smtp.model import (
    Security,
    SMTPParams,
    Staged,
    TLSInfo,
    TransactionResult,
)
from fluxmail.transport.smtp.protocol import (
    ServerDisconnected,
    envelope_path,
    mail_options,
    message_payload,
    transparent,
)
from fluxmail.transport.smtp.replies import reply_error, with_replies

__all__ = ["SMTPParams", "SMTPSession", "Security", "Staged", "TLSInfo", "TransactionResult"]


# Bodies up to this size go out in one write together with the final "." (bulk hot path).
ONE_WRITE = 64 * 1024


class SMTPSession(SMTPConnection):
    """One SMTP connection: ``connect()``, any number of ``send()``, ``close()``.

    One task at a time drives a session (an internal lock serializes transactions).
    """

    def __init__(self, params: SMTPParams) -> None:
        super().__init__(params)
        self._lock = asyncio.Lock()  # binds to a loop on first use (Python >= 3.10)

    def __repr__(self) -> str:
        state = "connected" if self.is_connected else "closed"
        return f"<SMTPSession {self._where} {self._params.security} {state}>"

    async def send(
        self,
        sender: str,
        recipients: Sequence[str],
        data: bytes,
        *,
        smtputf8: bool = False,
        then: Staged | None = None,
    ) -> TransactionResult:
        """One mail transaction; RCPT replies are data, other failures raise DeliveryError.

        ``then`` names the message this session will send next: with PIPELINING its commands
        go out right behind this message's final "." (one write, one round trip saved).
        """
        return await self.send_staged(Staged(sender, recipients, data, smtputf8), then)

    async def send_staged(self, mail: Staged, then: Staged | None = None) -> TransactionResult:
        """``send()`` of a staged message: when it is the one primed behind the last final "."
        (the same object), its commands and wire bytes are the ones computed then."""
        if mail is self._primed_for and self._primed:
            wire = self._primed_wire
            async with self._lock:
                return await self._send_pipelined(self._primed, mail, wire, then)
        rcpts, payload, command, commands = _envelope(mail)
        if not rcpts:
            raise MessageError("A message needs at least one recipient", code="no_recipients")
        async with self._lock:
            self._live("mail")
            command += mail_options(self._extensions, payload, mail.smtputf8, self._where)
            command += b"\r\n"
            if "pipelining" in self._extensions:
                preamble = command + b"".join(commands) + b"DATA\r\n"
                return await self._send_pipelined(preamble, mail, transparent(payload), then)
            if self._primed:
                self._drop_primed()
            return await self._send_stepwise(command, commands, rcpts, transparent(payload))

    def _stage(self, then: Staged | None) -> bytes:
        """The pipelined commands for the next message, or b"" when it cannot be primed; its
        wire bytes are kept for its own turn."""
        self._primed_for, self._primed_wire = None, b""
        if then is None or "pipelining" not in self._extensions:
            return b""
        try:
            rcpts, payload, mail, commands = _envelope(then)
            mail += mail_options(self._extensions, payload, then.smtputf8, self._where)
        except (MessageError, DeliveryError):
            return b""  # it will fail on its own turn, with its own error
        if not rcpts:
            return b""
        self._primed_for, self._primed_wire = then, transparent(payload)
        return mail + b"\r\n" + b"".join(commands) + b"DATA\r\n"

    def _drop_primed(self) -> None:
        """Commands written ahead for another message: drop the connection so they die unsent.

        The server got MAIL/RCPT/DATA but never a final ".", so it delivers nothing (RFC 5321
        4.1.1.4); the caller sees a transient ConnectionFailed and reconnects.
        """
        self._primed = b""
        self._abort()
        raise ConnectionFailed(
            f"The connection to {self._where} carried commands for another message; reconnecting",
            code="pipeline_mismatch",
            stage="mail",
        )

    async def _send_pipelined(
        self, preamble: bytes, mail: Staged, wire: bytes, then: Staged | None
    ) -> TransactionResult:
        """RFC 2920: MAIL, every RCPT and DATA in one write, then the replies in order."""
        proto = self._live("mail")
        if self._primed == preamble:
            self._primed = b""  # already on the wire behind the previous message
        elif self._primed:
            self._drop_primed()
        else:
            with self._wire("mail", self._params.command_timeout):
                proto.write(preamble)
        self._primed_for, self._primed_wire = None, b""
        rcpts = tuple(dict.fromkeys(mail.recipients))
        mail_reply = await self._read("mail")
        replies = {}
        for rcpt in rcpts:
            replies[rcpt] = await self._read("rcpt")
        data_reply = await self._read("data")
        accepted = 200 <= mail_reply.code < 300 and any(
            200 <= r.code < 300 for r in replies.values()
        )
        if data_reply.code == 354 and not accepted:
            self._abort()  # a server that says 354 with no valid recipient: send nothing at all
        if not 200 <= mail_reply.code < 300:
            await self._reset_quietly()
            raise reply_error("mail", mail_reply, self._where, logged_in=self._authenticated)
        if not accepted:
            await self._reset_quietly()
            return TransactionResult(replies, None)
        if data_reply.code != 354:
            await self._reset_quietly()
            raise with_replies(reply_error("data", data_reply, self._where), replies)
        return await self._transfer(wire, replies, self._stage(then))

    async def _send_stepwise(
        self, mail: bytes, commands: list[bytes], rcpts: tuple[str, ...], wire: bytes
    ) -> TransactionResult:
        mail_reply = await self._exchange("mail", mail)
        if not 200 <= mail_reply.code < 300:
            await self._reset_quietly()
            raise reply_error("mail", mail_reply, self._where, logged_in=self._authenticated)
        replies: dict[str, ServerReply] = {}
        for index, (rcpt, command) in enumerate(zip(rcpts, commands, strict=True)):
            replies[rcpt] = reply = await self._exchange("rcpt", command)
            if reply.code in (452, 552):  # RFC 5321 4.5.3.1.10: too many recipients
                replies.update((rest, reply) for rest in rcpts[index + 1 :])
                break
        if not any(200 <= r.code < 300 for r in replies.values()):
            await self._reset_quietly()
            return TransactionResult(replies, None)
        data_reply = await self._exchange("data", b"DATA\r\n")
        if data_reply.code != 354:
            await self._reset_quietly()
            raise with_replies(reply_error("data", data_reply, self._where), replies)
        return await self._transfer(wire, replies)

    async def _transfer(
        self, wire: bytes, replies: dict[str, ServerReply], primed: bytes = b""
    ) -> TransactionResult:
        """Send the message (``wire``: dot-stuffed); once the final "." is written a loss means
        the outcome is unknown."""
        p = self._params
        proto = self._live("data")
        if len(wire) > ONE_WRITE:
            with self._wire("data", p.command_timeout):
                # A large body: make sure it all left before committing to the final ".".
                proto.write(wire)
                await asyncio.wait_for(proto.drain(), p.command_timeout)
                await asyncio.sleep(0)  # let a pending reset or EOF surface first
                wire = b""
        try:  # _wire() inlined: the bulk hot path
            if proto.lost or not proto.is_connected:
                raise ServerDisconnected("Connection lost")
            proto.write(wire + b".\r\n" + primed)  # small bodies: one syscall with the "."
        except WIRE_FAULTS as exc:
            raise self._wire_failure(exc, "data", p.command_timeout) from exc
        self._primed = primed
        reply = await self._read("end_of_data", p.data_timeout, after_dot=True)
        if not 200 <= reply.code < 300:
            if not self._primed:  # the transaction is over anyway; RSET only when it is safe
                await self._reset_quietly()
            raise with_replies(reply_error("end_of_data", reply, self._where), replies)
        return TransactionResult(replies, reply)

    async def reset(self) -> None:
        """RSET: abandon any transaction in progress (RFC 5321 4.1.1.5)."""
        async with self._lock:
            reply = await self._command("rset", b"RSET")
            if reply.code != 250:
                raise reply_error("rset", reply, self._where)

    async def noop(self) -> None:
        """NOOP: proves the connection is still alive."""
        async with self._lock:
            reply = await self._command("noop", b"NOOP")
            if reply.code != 250:
                raise reply_error("noop", reply, self._where)

    async def _reset_quietly(self) -> None:
        """RSET after a failed transaction so the session can be reused; drop it if that fails."""
        if not self.is_connected:
            return
        try:
            reply = await self._command("rset", b"RSET")
        except DeliveryError:
            reply = None
        if reply is None or reply.code != 250:
            self._abort()


def _envelope(mail: Staged) -> tuple[tuple[str, ...], bytes, bytes, list[bytes]]:
    """One RCPT per address, the payload (CRLF checked), MAIL FROM without its parameters
    (they depend on the session's extensions) and the RCPT commands; MessageError if bad."""
    rcpts = tuple(dict.fromkeys(mail.recipients))
    payload = message_payload(mail.data)
    encoding = "utf-8" if mail.smtputf8 else "ascii"
    command = b"MAIL FROM:" + envelope_path(mail.sender, encoding)
    commands = [b"RCPT TO:" + envelope_path(r, encoding) + b"\r\n" for r in rcpts]
    return rcpts, payload, command, commands
