"""SMTP on the wire: aiosmtplib's protocol made pipelining-safe, and envelope encoding.

Used only by ``fluxmail.transport.smtp.session``; together they are the one SMTP implementation.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections import deque

from aiosmtplib.errors import SMTPResponseException, SMTPServerDisconnected, SMTPTimeoutError
from aiosmtplib.protocol import SMTPProtocol
from aiosmtplib.response import SMTPResponse

from fluxmail.errors import MessageError, Refused

__all__ = [
    "PipelinedProtocol",
    "envelope_path",
    "has_8bit",
    "mail_options",
    "message_payload",
    "transparent",
]

_MAX_PENDING = 64 * 1024  # unparsed reply bytes; bounds memory against a babbling server
_BAD_ADDRESS = re.compile(r"[\x00-\x1f\x7f<>]")


class PipelinedProtocol(SMTPProtocol):
    """aiosmtplib's protocol, keeping every reply that arrives, in order.

    The stock protocol holds one reply and drops bytes received while no command waits, which
    loses replies when several commands are written at once (RFC 2920 pipelining).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self._pending = bytearray()
        self._replies: deque[SMTPResponse] = deque()
        self._failure: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.closed: asyncio.Future[None] = loop.create_future()

    @property
    def lost(self) -> bool:
        return self._failure is not None

    def data_received(self, data: bytes) -> None:
        self._pending.extend(data)
        try:
            while (reply := self._parse_one()) is not None:
                self._replies.append(reply)
        except SMTPResponseException as exc:
            self._fail(exc)
        if len(self._pending) > _MAX_PENDING:
            self._fail(SMTPResponseException(-1, "Response too long"))
        self._wake()

    def _parse_one(self) -> SMTPResponse | None:
        lines: list[bytes] = []
        offset = 0
        while (end := self._pending.find(b"\n", offset)) != -1:
            line = bytes(self._pending[offset : end + 1])
            offset = end + 1
            if len(line) < 4 or not line[:3].isdigit() or line[3:4] not in (b" ", b"-", b"\r"):
                raise SMTPResponseException(-1, "Malformed SMTP reply line")
            lines.append(line)
            if line[3:4] != b"-":
                del self._pending[:offset]
                text = b"\n".join(x[4:].strip(b" \t\r\n") for x in lines)
                return SMTPResponse(int(line[:3]), text.decode("utf-8", "surrogateescape"))
        return None

    def eof_received(self) -> bool:
        self._fail(SMTPServerDisconnected("Unexpected EOF received"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._fail(SMTPServerDisconnected("Connection lost"))
        if not self.closed.done():
            self.closed.set_result(None)

    def _fail(self, exc: Exception) -> None:
        if self._failure is None:
            self._failure = exc
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def read_response(self, timeout: float | None = None) -> SMTPResponse:
        deadline = None if timeout is None else self._loop.time() + timeout
        while not self._replies and self._failure is None:
            remaining = None if deadline is None else max(deadline - self._loop.time(), 0.0)
            self._waiter = self._loop.create_future()
            try:
                await asyncio.wait_for(self._waiter, remaining)
            except asyncio.TimeoutError as exc:
                raise SMTPTimeoutError("Timed out waiting for server response") from exc
            finally:
                self._waiter = None
        if self._replies:
            return self._replies.popleft()
        assert self._failure is not None
        raise self._failure

    def take_unsolicited(self) -> list[SMTPResponse]:
        """Replies nobody asked for (a server announcing 421 while idle)."""
        replies, self._replies = list(self._replies), deque()
        return replies

    def forget_plaintext(self) -> None:
        """RFC 3207 4.2: nothing received before the TLS handshake may be used after it."""
        self._pending.clear()
        self._replies.clear()

    async def upgrade(self, context: ssl.SSLContext, server_hostname: str, timeout: float) -> None:
        """Run the TLS handshake on this connection (implicit TLS, or STARTTLS after its 220)."""
        transport = self.transport
        if transport is None or transport.is_closing() or self.lost:
            raise SMTPServerDisconnected("Connection lost")
        try:
            upgraded = await self._loop.start_tls(
                transport,
                self,
                context,
                server_hostname=server_hostname,
                ssl_handshake_timeout=timeout,
            )
        except ConnectionAbortedError as exc:  # how asyncio reports the handshake timeout
            raise asyncio.TimeoutError("TLS handshake timed out") from exc
        self.transport = upgraded
        self._over_ssl = True

    async def drain(self) -> None:
        await self._drain_helper()


def message_payload(data: bytes) -> bytes:
    """The message as sent: CRLF only (no smuggling), ending in CRLF before the final "."."""
    # Bare CR/LF enable SMTP smuggling (CVE-2023-51764). Counting in C is much faster than a
    # regex on the bulk hot path: every CR and every LF must belong to a CRLF pair.
    pairs = data.count(b"\r\n")
    if data.count(b"\r") != pairs or data.count(b"\n") != pairs:
        raise MessageError(
            "The message contains a bare CR or LF; only CRLF line endings may be sent",
            code="bare_line_ending",
        )
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def envelope_path(address: str, encoding: str) -> bytes:
    """``<address>`` for MAIL/RCPT; refuses anything that could inject a command or parameter."""
    if _BAD_ADDRESS.search(address):
        raise MessageError(f"Invalid envelope address {address!r}", code="invalid_address")
    try:
        return b"<" + address.encode(encoding) + b">"
    except UnicodeEncodeError:
        raise MessageError(
            f"The address {address!r} needs SMTPUTF8 (RFC 6531); pass it in ASCII/IDNA form "
            "or send with smtputf8=True",
            code="smtputf8_required",
        ) from None


def transparent(payload: bytes) -> bytes:
    """RFC 5321 4.5.2: double a "." that starts a line, so the server removes it again."""
    if payload.startswith(b"."):
        payload = b"." + payload
    return payload.replace(b"\n.", b"\n..") if b"\n." in payload else payload


def has_8bit(payload: bytes) -> bool:
    """True when the message needs BODY=8BITMIME (RFC 6152)."""
    return not payload.isascii()


def mail_options(extensions: dict[str, str], payload: bytes, smtputf8: bool, where: str) -> bytes:
    """The MAIL FROM parameters: SIZE (RFC 1870), BODY=8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531)."""
    options = b""
    if "size" in extensions:
        limit = extensions["size"]
        if limit.isdigit() and 0 < int(limit) < len(payload):  # RFC 1870 section 6
            raise Refused(
                f"The message ({len(payload)} bytes) exceeds the {limit}-byte limit that "
                f"{where} announces",
                code="message_too_large",
                transient=False,
                stage="mail",
            )
        options += b" SIZE=%d" % len(payload)
    if "8bitmime" in extensions and has_8bit(payload):
        options += b" BODY=8BITMIME"
    if smtputf8:
        if "smtputf8" not in extensions:
            raise MessageError(
                f"An address needs SMTPUTF8 (RFC 6531), which {where} does not offer",
                code="smtputf8_unsupported",
            )
        options += b" SMTPUTF8"
    return options
