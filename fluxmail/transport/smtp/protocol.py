"""SMTP on the wire: a pipelining-safe client protocol on asyncio, and envelope encoding.

Used only by the SMTP connection and session modules; together they are the one SMTP
implementation. No aiosmtplib here: importing the transport stays cheap (cold start), and
aiosmtplib's helpers (EHLO parsing, AUTH encoding) are imported where a connection uses them.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections import deque
from typing import NamedTuple, cast

from fluxmail.errors import MessageError, Refused

__all__ = [
    "BadReply",
    "PipelinedProtocol",
    "RawReply",
    "ServerDisconnected",
    "envelope_path",
    "has_8bit",
    "mail_options",
    "message_payload",
    "transparent",
]

_MAX_PENDING = 64 * 1024  # unparsed reply bytes; bounds memory against a babbling server
_READ_SIZE = 16 * 1024  # one read: a batch of pipelined replies, an EHLO, a greeting
_BAD_ADDRESS = re.compile(r"[\x00-\x1f\x7f<>]")


class RawReply(NamedTuple):
    """One reply as read: the code and the text (continuation lines joined by newlines)."""

    code: int
    message: str


class ServerDisconnected(ConnectionError):
    """The connection is closed: by the server, by a reset, or it was never open."""


class BadReply(Exception):
    """A reply line that is not SMTP (RFC 5321 4.2), or more reply text than any server sends."""


class PipelinedProtocol(asyncio.BufferedProtocol):
    """An SMTP client connection that keeps every reply that arrives, in order.

    Several commands may be written at once (RFC 2920 pipelining): their replies queue up here
    and ``read_response`` hands them out one by one. Replies are read into one buffer of this
    connection (``BufferedProtocol``): a plain ``Protocol`` gets a new 256 KiB bytes object
    from asyncio for every read, a cost paid once per message by a bulk run.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self._pending = bytearray()
        self._view = memoryview(bytearray(_READ_SIZE))
        self._continued: list[bytes] = []  # the lines of a multi-line reply read so far
        self._continued_size = 0
        self._replies: deque[RawReply] = deque()
        self._failure: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._deadline: float | None = None  # when the current wait times out (loop time)
        self._watchdog: asyncio.TimerHandle | None = None
        self._watch_at = 0.0
        self._paused = False  # the transport's write buffer is full (asyncio flow control)
        self._drained: asyncio.Future[None] | None = None
        self.closed: asyncio.Future[None] = loop.create_future()

    @property
    def lost(self) -> bool:
        return self._failure is not None

    @property
    def is_connected(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._view[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        pending = self._pending
        pending += data
        end = pending.rfind(b"\n")
        if end != -1:
            # Every complete line at once: pipelined replies arrive several to a segment.
            lines = bytes(pending[: end + 1]).split(b"\n")
            del pending[: end + 1]
            lines.pop()  # the empty tail after the last newline
            replies = self._replies
            try:
                for line in lines:
                    if line[3:4] == b" " and line[:3].isdigit() and not self._continued:
                        text = line[4:].strip(b" \t\r")  # the usual one-line reply, inlined
                        replies.append(
                            RawReply(int(line[:3]), text.decode("utf-8", "surrogateescape"))
                        )
                    else:
                        self._line(line)
            except BadReply as exc:
                self._fail(exc)
        if len(pending) + self._continued_size > _MAX_PENDING:
            self._fail(BadReply("Response too long"))
        self._wake()

    def _line(self, line: bytes) -> None:
        """One reply line (its newline removed): a whole reply once its last line arrives."""
        if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in (b" ", b"-", b"\r", b""):
            raise BadReply("Malformed SMTP reply line")
        if line[3:4] == b"-":
            self._continued.append(line)
            self._continued_size += len(line) + 1
            return
        text = line[4:].strip(b" \t\r")
        if self._continued:
            lines, self._continued, self._continued_size = [*self._continued, line], [], 0
            text = b"\n".join(x[4:].strip(b" \t\r") for x in lines)
        self._replies.append(RawReply(int(line[:3]), text.decode("utf-8", "surrogateescape")))

    def eof_received(self) -> bool:
        self._fail(ServerDisconnected("Unexpected EOF received"))
        return False  # asyncio closes the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._fail(ServerDisconnected("Connection lost"))
        self.resume_writing()  # a writer waiting in drain() learns of the loss
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _fail(self, exc: Exception) -> None:
        if self._failure is None:
            self._failure = exc
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ServerDisconnected("Connection lost")
        self.transport.write(data)

    async def drain(self) -> None:
        """Wait until the transport's write buffer has room again (or the connection is gone)."""
        if self._paused and self.is_connected:
            self._drained = self._loop.create_future()
            try:
                await self._drained
            finally:
                self._drained = None
        if not self.is_connected:
            raise ServerDisconnected("Connection lost")

    def next_reply(self) -> RawReply | None:
        """A reply that has arrived already, without waiting (None: none yet)."""
        return self._replies.popleft() if self._replies else None

    async def read_response(self, timeout: float | None = None) -> RawReply:
        if self._replies:  # pipelined replies usually arrive together: no wait at all
            return self._replies.popleft()
        loop = self._loop
        deadline = None if timeout is None else loop.time() + timeout
        while not self._replies and self._failure is None:
            if deadline is not None and loop.time() >= deadline:
                raise TimeoutError("Timed out waiting for server response")
            # A future per wait, and one watchdog timer per connection that moves on with the
            # deadline: asyncio.wait_for, or a timer per wait, cost several times as much, and
            # a bulk run waits once per message. A wake with only part of a reply loops.
            waiter = self._waiter = loop.create_future()
            self._deadline = deadline
            if deadline is not None and (self._watchdog is None or self._watch_at > deadline):
                self._arm(deadline)
            try:
                await waiter
            finally:
                self._waiter = self._deadline = None
        if self._replies:
            return self._replies.popleft()
        assert self._failure is not None
        raise self._failure

    def _arm(self, when: float) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watch_at = when
        self._watchdog = self._loop.call_at(when, self._watch)

    def _watch(self) -> None:
        """The watchdog: wakes a wait whose deadline passed, else follows the current one."""
        self._watchdog = None
        waiter, deadline = self._waiter, self._deadline
        if waiter is None or deadline is None:
            return  # nobody waits: the next wait arms it again
        if self._loop.time() >= deadline:
            if not waiter.done():
                waiter.set_result(None)  # read_response sees the deadline has passed
        else:
            self._arm(deadline)

    def take_unsolicited(self) -> list[RawReply]:
        """Replies nobody asked for (a server announcing 421 while idle)."""
        replies, self._replies = list(self._replies), deque()
        return replies

    def forget_plaintext(self) -> None:
        """RFC 3207 4.2: nothing received before the TLS handshake may be used after it."""
        self._pending.clear()
        self._continued.clear()
        self._continued_size = 0
        self._replies.clear()

    async def upgrade(self, context: ssl.SSLContext, server_hostname: str, timeout: float) -> None:
        """Run the TLS handshake on this connection (implicit TLS, or STARTTLS after its 220)."""
        transport = self.transport
        if transport is None or transport.is_closing() or self.lost:
            raise ServerDisconnected("Connection lost")
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
        if upgraded is None:  # typeshed allows it; asyncio returns None only for a closed loop
            raise ServerDisconnected("Connection lost")
        self.transport = upgraded


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
