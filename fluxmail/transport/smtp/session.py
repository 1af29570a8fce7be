"""The one SMTP wire implementation, on aiosmtplib's protocol (the only module importing it).

``SMTPSession`` connects, requires TLS when configured (RFC 3207: never a plaintext fallback),
logs in (RFC 4954), and runs mail transactions, pipelined when the server offers it (RFC 2920).
Replies become data (``TransactionResult``) or errors with stable codes (``smtp_errors``). It never
retries: the retry policy belongs to the caller; a loss after the final "." is ``OutcomeUnknown``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType

from aiosmtplib.auth import auth_login_encode, auth_plain_encode
from aiosmtplib.errors import SMTPResponseException, SMTPServerDisconnected
from aiosmtplib.esmtp import parse_esmtp_extensions

from fluxmail.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    DeliveryError,
    MessageError,
    TLSFailure,
)
from fluxmail.redaction import redact_words
from fluxmail.results import ServerReply
from fluxmail.transport.smtp.model import (
    Security,
    SMTPParams,
    Staged,
    TLSInfo,
    TransactionResult,
    default_local_hostname,
    ehlo_name,
    is_loopback_host,
    tls_info,
)
from fluxmail.transport.smtp.protocol import (
    PipelinedProtocol,
    envelope_path,
    mail_options,
    message_payload,
    transparent,
)
from fluxmail.transport.smtp.replies import (
    handshake_error,
    insecure_auth,
    parse_reply,
    reply_error,
    wire_error,
    with_replies,
)

__all__ = ["SMTPParams", "SMTPSession", "Security", "Staged", "TLSInfo", "TransactionResult"]


# Bodies up to this size go out in one write together with the final "." (bulk hot path).
ONE_WRITE = 64 * 1024


class SMTPSession:
    """One SMTP connection: ``connect()``, any number of ``send()``, ``close()``.

    One task at a time drives a session (an internal lock serializes transactions).
    """

    def __init__(self, params: SMTPParams) -> None:
        self._params = params
        self._where = f"{params.host}:{params.port}"
        self._protocol: PipelinedProtocol | None = None
        self._extensions: dict[str, str] = {}
        self._auth_methods: list[str] = []
        self._tls_info: TLSInfo | None = None
        self._timings: dict[str, float] = {}
        self._authenticated = False
        self._context: ssl.SSLContext | None = None
        self._lock = asyncio.Lock()  # binds to a loop on first use (Python >= 3.10)
        # MAIL/RCPT/DATA of the next message, written after the last final "." (RFC 2920);
        # the next send() with exactly these commands reads their replies instead of writing.
        self._primed = b""

    def __repr__(self) -> str:
        state = "connected" if self.is_connected else "closed"
        return f"<SMTPSession {self._where} {self._params.security} {state}>"

    @property
    def is_connected(self) -> bool:
        proto = self._protocol
        return proto is not None and proto.is_connected and not proto.lost

    @property
    def where(self) -> str:
        """``host:port``, as error messages name the server."""
        return self._where

    @property
    def extensions(self) -> Mapping[str, str]:
        return MappingProxyType(self._extensions)

    @property
    def supports_smtputf8(self) -> bool:
        return "smtputf8" in self._extensions

    @property
    def tls_info(self) -> TLSInfo | None:
        return self._tls_info

    @property
    def timings(self) -> Mapping[str, float]:
        return MappingProxyType(self._timings)

    @property
    def authenticated(self) -> bool:
        return self._authenticated

    # -- connection -------------------------------------------------------------------------

    async def connect(self) -> None:
        """Greeting, EHLO, STARTTLS (required when configured), EHLO, AUTH."""
        if self.is_connected:
            return
        self._abort()
        p = self._params
        insecure = p.username is not None and p.security == "none" and not p.allow_insecure_auth
        if insecure and not is_loopback_host(p.host):
            raise insecure_auth(self._where)  # before any network traffic
        try:
            await self._open()
            await self._step("ehlo", self._ehlo())
            if p.security == "starttls":
                await self._step("tls", self._starttls())
                await self._step("ehlo", self._ehlo())
            if p.username is not None:
                await self._step("auth", self._login())
        except BaseException:
            self._abort()
            raise

    async def _step(self, name: str, coro: object) -> None:
        started = time.monotonic()
        await coro  # type: ignore[misc]
        self._timings[name] = self._timings.get(name, 0.0) + time.monotonic() - started

    def _ssl_context(self) -> ssl.SSLContext:
        if self._context is None:
            self._context = self._params.ssl_context
        if self._context is None:
            import certifi  # verify against certifi when the caller gave no context

            self._context = ssl.create_default_context(cafile=certifi.where())
        return self._context

    async def _open(self) -> None:
        p = self._params
        loop = asyncio.get_running_loop()
        proto = PipelinedProtocol(loop)
        started = time.monotonic()
        with self._wire("connect", p.connect_timeout):
            connecting = loop.create_connection(lambda: proto, p.host, p.port)
            await asyncio.wait_for(connecting, p.connect_timeout)
        self._protocol = proto
        self._timings = {"connect": time.monotonic() - started}
        self._tls_info = None
        if p.security == "implicit":  # apart from the TCP connect: a failure here is about TLS
            await self._step("tls", self._handshake("tls", p.connect_timeout))
        started = time.monotonic()
        reply = await self._read("greeting")
        self._timings["greeting"] = time.monotonic() - started
        if reply.code != 220:
            self._abort()
            raise reply_error("greeting", reply, self._where)

    async def _ehlo(self) -> None:
        p = self._params
        raw = p.local_hostname
        if raw is None:
            raw = await asyncio.to_thread(default_local_hostname)
        name = ehlo_name(raw) or "localhost.localdomain"
        reply = await self._command("ehlo", b"EHLO", name.encode("ascii"))
        if reply.code in (500, 502) and p.security == "none" and p.username is None:
            reply = await self._command("ehlo", b"HELO", name.encode("ascii"))  # RFC 5321 3.2
            if reply.code == 250:
                self._extensions, self._auth_methods = {}, []
                return
        if reply.code != 250:
            raise reply_error("ehlo", reply, self._where)
        self._extensions, self._auth_methods = parse_esmtp_extensions(reply.text)

    async def _starttls(self) -> None:
        if "starttls" not in self._extensions:
            local = ""
            if is_loopback_host(self._params.host):  # a local test server: say how to opt out
                local = (
                    "; smtp:// in FLUXMAIL_URL means STARTTLS: to send without TLS to a local "
                    "test server use smtp+plain://host:port (or FLUXMAIL_TLS=false)"
                )
            raise TLSFailure(
                f"{self._where} does not offer STARTTLS, which is required; refusing to go on "
                f"without TLS (never a plaintext fallback). Check the port and TLS mode{local}",
                code="starttls_unavailable",
                transient=False,
                stage="starttls",
            )
        reply = await self._command("starttls", b"STARTTLS")
        if reply.code != 220:
            self._abort()
            raise reply_error("starttls", reply, self._where)
        await self._handshake("starttls", self._params.command_timeout)
        self._extensions, self._auth_methods = {}, []  # RFC 3207 4.2: EHLO again

    async def _handshake(self, stage: str, seconds: float) -> None:
        """TLS on the open connection: at once (implicit TLS) or after the 220 to STARTTLS."""
        proto = self._live(stage)
        context = self._ssl_context()
        try:
            await proto.upgrade(context, self._params.host, seconds)
        except (asyncio.TimeoutError, OSError) as exc:  # ssl.SSLError is an OSError
            self._abort()
            raise handshake_error(exc, stage, self._where, seconds, context) from exc
        proto.forget_plaintext()  # RFC 3207 4.2: nothing received in plaintext is used
        self._tls_info = tls_info(proto.transport)

    async def _login(self) -> None:
        p = self._params
        user, password = p.username or "", p.password or ""
        if self._tls_info is None and not p.allow_insecure_auth and not is_loopback_host(p.host):
            raise insecure_auth(self._where)
        plain = auth_plain_encode(user, password)
        login_user, login_password = auth_login_encode(user, password)
        secrets = (password, plain, login_password)
        if "plain" in self._auth_methods:
            reply = await self._command("auth", b"AUTH", b"PLAIN", plain, secrets=secrets)
        elif "login" in self._auth_methods:
            reply = await self._command("auth", b"AUTH", b"LOGIN", login_user, secrets=secrets)
            if reply.code == 334:
                reply = await self._command("auth", login_password, secrets=secrets)
        else:
            offered = " ".join(self._auth_methods) or "none"
            raise AuthenticationFailed(
                f"{self._where} offers no login mechanism fluxmail supports (PLAIN, LOGIN); "
                f"offered: {offered}",
                code="auth_unsupported",
                transient=False,
                stage="auth",
            )
        if reply.code != 235:
            raise reply_error("auth", reply, self._where)
        self._authenticated = True

    # -- transactions -----------------------------------------------------------------------

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
        rcpts = tuple(dict.fromkeys(recipients))  # one RCPT per address
        payload = message_payload(data)
        encoding = "utf-8" if smtputf8 else "ascii"
        mail = b"MAIL FROM:" + envelope_path(sender, encoding)
        commands = [b"RCPT TO:" + envelope_path(r, encoding) + b"\r\n" for r in rcpts]
        if not rcpts:
            raise MessageError("A message needs at least one recipient", code="no_recipients")
        async with self._lock:
            self._live("mail")
            mail += mail_options(self._extensions, payload, smtputf8, self._where) + b"\r\n"
            if "pipelining" in self._extensions:
                preamble = mail + b"".join(commands) + b"DATA\r\n"
                return await self._send_pipelined(preamble, rcpts, payload, then)
            if self._primed:
                self._drop_primed()
            return await self._send_stepwise(mail, commands, rcpts, payload)

    def _stage(self, then: Staged | None) -> bytes:
        """The pipelined commands for the next message, or b"" when it cannot be primed."""
        if then is None or "pipelining" not in self._extensions:
            return b""
        try:
            rcpts = tuple(dict.fromkeys(then.recipients))
            payload = message_payload(then.data)
            encoding = "utf-8" if then.smtputf8 else "ascii"
            mail = b"MAIL FROM:" + envelope_path(then.sender, encoding)
            mail += mail_options(self._extensions, payload, then.smtputf8, self._where)
            rcpt = b"".join(b"RCPT TO:" + envelope_path(r, encoding) + b"\r\n" for r in rcpts)
        except (MessageError, DeliveryError):
            return b""  # it will fail on its own turn, with its own error
        return mail + b"\r\n" + rcpt + b"DATA\r\n" if rcpts else b""

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
            transient=True,
            stage="mail",
        )

    async def _send_pipelined(
        self, preamble: bytes, rcpts: tuple[str, ...], payload: bytes, then: Staged | None
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
        return await self._transfer(payload, replies, self._stage(then))

    async def _send_stepwise(
        self, mail: bytes, commands: list[bytes], rcpts: tuple[str, ...], payload: bytes
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
        return await self._transfer(payload, replies)

    async def _transfer(
        self, payload: bytes, replies: dict[str, ServerReply], primed: bytes = b""
    ) -> TransactionResult:
        """Send the message; once the final "." is written a loss means the outcome is unknown."""
        p = self._params
        proto = self._live("data")
        wire = transparent(payload)
        with self._wire("data", p.command_timeout):
            if len(wire) > ONE_WRITE:
                # A large body: make sure it all left before committing to the final ".".
                proto.write(wire)
                await asyncio.wait_for(proto.drain(), p.command_timeout)
                await asyncio.sleep(0)  # let a pending reset or EOF surface first
                wire = b""
            if proto.lost or not proto.is_connected:
                raise SMTPServerDisconnected("Connection lost")
            proto.write(wire + b".\r\n" + primed)  # small bodies: one syscall with the "."
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

    async def close(self) -> None:
        """QUIT (errors ignored), then always close the socket."""
        proto = self._protocol
        if proto is None:
            return
        if self._primed:
            self._primed = b""
            self._abort()  # never QUIT into a primed DATA: it would become message text
        try:
            if self.is_connected:
                with contextlib.suppress(Exception):
                    quit_timeout = min(self._params.command_timeout, 5.0)
                    await proto.execute_command(b"QUIT", timeout=quit_timeout)
        finally:
            if proto.transport is not None:
                proto.transport.close()
            try:
                await asyncio.wait_for(asyncio.shield(proto.closed), 2.0)
            except (asyncio.TimeoutError, OSError):
                self._abort()
            self._protocol = None
            self._authenticated = False

    # -- plumbing ---------------------------------------------------------------------------

    def _abort(self) -> None:
        """Drop the connection at once (after a timeout the reply stream is out of step)."""
        proto = self._protocol
        if proto is not None and isinstance(proto.transport, asyncio.Transport):
            proto.transport.abort()
        self._authenticated = False
        self._primed = b""

    def _live(self, stage: str) -> PipelinedProtocol:
        proto = self._protocol
        if proto is not None and not proto.lost and not self._primed:  # primed replies are ours
            for early in proto.take_unsolicited():
                if early.code == 421:  # the server announced it is closing (RFC 5321 3.8)
                    self._abort()
                    raise reply_error(stage, parse_reply(early.code, early.message), self._where)
        if proto is None or not self.is_connected:
            raise ConnectionFailed(
                f"Not connected to {self._where} (the connection was closed)",
                code="not_connected",
                transient=True,
                stage=stage,
            )
        return proto

    async def _command(
        self, stage: str, *args: bytes, secrets: Sequence[str | bytes] = ()
    ) -> ServerReply:
        return await self._exchange(stage, b" ".join(args) + b"\r\n", secrets=secrets)

    async def _exchange(
        self, stage: str, line: bytes, *, secrets: Sequence[str | bytes] = ()
    ) -> ServerReply:
        proto = self._live(stage)
        with self._wire(stage, self._params.command_timeout):
            proto.write(line)
        return await self._read(stage, secrets=secrets)

    async def _read(
        self,
        stage: str,
        timeout: float | None = None,
        *,
        after_dot: bool = False,
        secrets: Sequence[str | bytes] = (),
    ) -> ServerReply:
        proto = self._protocol
        seconds = timeout or self._params.command_timeout
        try:  # _wire() inlined: this runs for every reply of a bulk run
            if proto is None:
                raise SMTPServerDisconnected("Connection lost")
            response = await proto.read_response(timeout=seconds)
        except (asyncio.TimeoutError, OSError, SMTPResponseException) as exc:
            self._abort()
            raise wire_error(exc, stage, self._where, seconds, after_dot=after_dot) from exc
        # A server may echo the password or the base64 credentials back.
        text = redact_words(response.message, secrets) if secrets else response.message
        reply = parse_reply(response.code, text)
        if reply.code == 421 and stage != "auth":
            self._abort()
            raise reply_error(stage, reply, self._where)
        if reply.code == 421:
            self._abort()
        return reply

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

    @contextlib.contextmanager
    def _wire(self, stage: str, seconds: float, *, after_dot: bool = False) -> Iterator[None]:
        """Translate low-level failures at ``stage`` into fluxmail errors."""
        try:
            yield
        except DeliveryError:
            raise
        except (asyncio.TimeoutError, OSError, SMTPResponseException) as exc:
            self._abort()
            raise wire_error(exc, stage, self._where, seconds, after_dot=after_dot) from exc


def _ok(reply: ServerReply) -> bool:
    return 200 <= reply.code < 300
