"""One SMTP connection: the handshake (greeting, EHLO, STARTTLS, AUTH) and the command plumbing.

``SMTPConnection`` connects, requires TLS when configured (RFC 3207: never a plaintext fallback)
and logs in (RFC 4954). Every low-level failure becomes a fluxmail error with its stage
(``replies``); ``SMTPSession`` (``session``) adds the mail transactions on top.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Awaitable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import TypeVar

from fluxmail.config.tls import client_context
from fluxmail.errors import AuthenticationFailed, ConnectionFailed, DeliveryError, Stage, TLSFailure
from fluxmail.redaction import redact_words
from fluxmail.results import ServerReply
from fluxmail.transport.oauth.cache import Token, refresh_time
from fluxmail.transport.smtp import sasl
from fluxmail.transport.smtp.model import (
    SMTPParams,
    Staged,
    TLSInfo,
    default_local_hostname,
    ehlo_name,
    is_loopback_host,
    tls_info,
)
from fluxmail.transport.smtp.protocol import BadReply, PipelinedProtocol, ServerDisconnected
from fluxmail.transport.smtp.replies import (
    handshake_error,
    insecure_auth,
    parse_reply,
    reply_error,
    wire_error,
)

__all__ = ["SMTPConnection"]

T = TypeVar("T")


# What a low-level failure may look like: a timeout, a socket or TLS error, a garbled reply.
WIRE_FAULTS = (asyncio.TimeoutError, OSError, BadReply)


class SMTPConnection:
    """The connection half of ``SMTPSession``: ``connect()``, ``close()`` and the plumbing."""

    def __init__(self, params: SMTPParams) -> None:
        self._params = params
        self._where = f"{params.host}:{params.port}"
        self._protocol: PipelinedProtocol | None = None
        self._extensions: dict[str, str] = {}
        self._auth_methods: list[str] = []
        self._tls_info: TLSInfo | None = None
        self._timings: dict[str, float] = {}
        self._authenticated = False
        self._token: Token | None = None  # the OAuth token this session logged in with
        self._renew_at: float | None = None  # epoch seconds; when a fresh login is due
        self._context: ssl.SSLContext | None = None
        # MAIL/RCPT/DATA of the next message, written after the last final "." (RFC 2920);
        # the next send() with exactly these commands reads their replies instead of writing.
        self._primed = b""
        self._primed_for: Staged | None = None  # the message those commands are for
        self._primed_wire = b""  # and its dot-stuffed bytes, computed with them

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

    @property
    def token_expires_at(self) -> float | None:
        """When the OAuth token of this login expires (epoch seconds); None: no token, unknown."""
        return self._token.expires_at if self._token is not None else None

    @property
    def login_stale(self) -> bool:
        """The token of this login is about to expire: Google ends the session with it, so a
        pool replaces a kept-open session between transactions (never during one)."""
        return self._renew_at is not None and time.time() >= self._renew_at

    # -- the handshake ------------------------------------------------------------------------

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
            await self._greet()
            if p.username is not None:
                refused = await self._step("auth", self._login(last=False))
                if refused is not None:
                    await self._relogin(refused)
        except BaseException:
            self._abort()
            raise

    async def _greet(self) -> None:
        """Greeting, EHLO, STARTTLS (required when configured), EHLO."""
        await self._open()
        await self._step("ehlo", self._ehlo())
        if self._params.security == "starttls":
            await self._step("tls", self._starttls())
            await self._step("ehlo", self._ehlo())

    async def _relogin(self, refused: Token) -> None:
        """The token was refused: exactly one fresh token and one new login, never a loop.

        RFC 4954 4 lets a client try AUTH again after a failure; a server that hung up instead
        gets one new connection.
        """
        source = self._params.token_source
        assert source is not None
        source.invalidate(refused)
        if not self.is_connected:
            self._abort()
            await self._greet()
        await self._step("auth", self._login(last=True))

    async def _step(self, name: str, step: Awaitable[T]) -> T:
        started = time.monotonic()
        try:
            return await step
        finally:
            self._timings[name] = self._timings.get(name, 0.0) + time.monotonic() - started

    def _ssl_context(self) -> ssl.SSLContext:
        if self._context is None:
            self._context = self._params.ssl_context
        if self._context is None:  # no context given: the one client TLS policy
            self._context = client_context()
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
        from aiosmtplib import esmtp

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
        self._extensions, self._auth_methods = esmtp.parse_esmtp_extensions(reply.text)

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
                stage="starttls",
            )
        reply = await self._command("starttls", b"STARTTLS")
        if reply.code != 220:
            self._abort()
            raise reply_error("starttls", reply, self._where)
        await self._handshake("starttls", self._params.command_timeout)
        self._extensions, self._auth_methods = {}, []  # RFC 3207 4.2: EHLO again

    async def _handshake(self, stage: Stage, seconds: float) -> None:
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

    async def _login(self, *, last: bool = True) -> Token | None:
        """AUTH with the configured mechanism; returns the token when the server refused it
        and a fresh one may succeed (only when not ``last``)."""
        p = self._params
        if self._tls_info is None and not p.allow_insecure_auth and not is_loopback_host(p.host):
            raise insecure_auth(self._where)
        if p.auth in sasl.MECHANISMS:
            return await self._token_login(p.auth, last=last)
        await self._password_login()
        return None

    async def _token_login(self, mechanism: str, *, last: bool) -> Token | None:
        """SASL XOAUTH2 / OAUTHBEARER with an initial response (RFC 4954 4, RFC 7628 3.1)."""
        p = self._params
        if mechanism not in self._auth_methods:
            raise sasl.unsupported(mechanism, self._auth_methods, self._where)
        assert p.token_source is not None
        token = await self._step("token", p.token_source.token())
        raw, initial = sasl.initial_response(mechanism, p.username or "", token.value)
        secrets = (token.value, raw, initial)
        name = sasl.MECHANISMS[mechanism].encode("ascii")
        reply = await self._command("auth", b"AUTH", name, initial, secrets=secrets)
        challenge = sasl.NO_CHALLENGE
        if reply.code == 334:  # an error challenge: answer it to get the final reply
            challenge = sasl.error_challenge(reply.text)
            reply = await self._command("auth", sasl.ERROR_ANSWER[mechanism], secrets=secrets)
        if reply.code == 235:
            self._authenticated, self._token = True, token
            self._renew_at = (
                None if token.expires_at is None else refresh_time(token.expires_at, time.time())
            )
            return None
        if not last and sasl.token_refused(reply, challenge):
            return token
        base = reply_error("auth", reply, self._where)
        raise sasl.refused(base, mechanism, challenge, refreshed=last)

    async def _password_login(self) -> None:
        from aiosmtplib import auth  # RFC 4616 PLAIN and the LOGIN mechanism's base64

        p = self._params
        user, password = p.username or "", p.password or ""
        plain = auth.auth_plain_encode(user, password)
        login_user, login_password = auth.auth_login_encode(user, password)
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
                stage="auth",
            )
        if reply.code != 235:
            raise reply_error("auth", reply, self._where)
        self._authenticated = True

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
                    proto.write(b"QUIT\r\n")
                    await proto.read_response(timeout=min(self._params.command_timeout, 5.0))
        finally:
            if proto.transport is not None:
                proto.transport.close()
            try:
                await asyncio.wait_for(asyncio.shield(proto.closed), 2.0)
            except (asyncio.TimeoutError, OSError):
                self._abort()
            self._protocol = None
            self._authenticated = False
            self._token = self._renew_at = None

    # -- plumbing -----------------------------------------------------------------------------

    def _abort(self) -> None:
        """Drop the connection at once (after a timeout the reply stream is out of step)."""
        proto = self._protocol
        if proto is not None and proto.transport is not None:
            proto.transport.abort()
        self._authenticated = False
        self._token = self._renew_at = None
        self._primed = b""
        self._primed_for, self._primed_wire = None, b""

    def _live(self, stage: Stage) -> PipelinedProtocol:
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
                stage=stage,
            )
        return proto

    async def _command(
        self, stage: Stage, *args: bytes, secrets: Sequence[str | bytes] = ()
    ) -> ServerReply:
        return await self._exchange(stage, b" ".join(args) + b"\r\n", secrets=secrets)

    async def _exchange(
        self, stage: Stage, line: bytes, *, secrets: Sequence[str | bytes] = ()
    ) -> ServerReply:
        proto = self._live(stage)
        with self._wire(stage, self._params.command_timeout):
            proto.write(line)
        return await self._read(stage, secrets=secrets)

    async def _read(
        self,
        stage: Stage,
        timeout: float | None = None,
        *,
        after_dot: bool = False,
        secrets: Sequence[str | bytes] = (),
    ) -> ServerReply:
        proto = self._protocol
        seconds = timeout or self._params.command_timeout
        try:  # _wire() inlined: this runs for every reply of a bulk run
            if proto is None:
                raise ServerDisconnected("Connection lost")
            response = proto.next_reply() or await proto.read_response(timeout=seconds)
        except WIRE_FAULTS as exc:
            raise self._wire_failure(exc, stage, seconds, after_dot=after_dot) from exc
        # A server may echo the password or the base64 credentials back.
        text = redact_words(response.message, secrets) if secrets else response.message
        reply = parse_reply(response.code, text)
        if reply.code == 421:
            self._abort()
            if stage != "auth":  # AUTH's 421 is auth_deferred (RFC 4954 section 6)
                raise reply_error(stage, reply, self._where)
        return reply

    @contextlib.contextmanager
    def _wire(self, stage: Stage, seconds: float, *, after_dot: bool = False) -> Iterator[None]:
        """Translate low-level failures at ``stage`` into fluxmail errors."""
        try:
            yield
        except DeliveryError:
            raise  # already ours (a ConnectionFailed is an OSError too)
        except WIRE_FAULTS as exc:
            raise self._wire_failure(exc, stage, seconds, after_dot=after_dot) from exc

    def _wire_failure(
        self, exc: BaseException, stage: Stage, seconds: float, *, after_dot: bool = False
    ) -> DeliveryError:
        """A low-level failure at ``stage`` as a fluxmail error; the connection is dropped."""
        self._abort()
        return wire_error(exc, stage, self._where, seconds, after_dot=after_dot)
