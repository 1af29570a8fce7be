"""Real SMTP servers for the test suite: aiosmtpd on 127.0.0.1, trustme certificates, faults.

Use the fixtures from ``tests/conftest.py``; ``ca`` is one trustme CA per test session and
``smtp_server`` starts servers that are stopped at teardown::

    def test_something(smtp_server):
        server = smtp_server(tls="starttls", auth=("user", "pass"))
        params = SMTPParams(
            host=server.host, port=server.port, security="starttls",
            ssl_context=server.client_context(),      # trusts the test CA
            username="user", password="pass",
        )
        ...                                         # send through fluxmail
        [msg] = server.messages                     # accepted messages, in order
        assert msg.data == exact_bytes              # DATA bytes as received (dot-unstuffed)
        assert msg.mail_from == "a@example.com" and msg.rcpt_tos == ["b@example.com"]

``smtp_server(...)`` keywords (all optional):

- ``tls``: ``"none"`` (default), ``"starttls"`` or ``"implicit"``.
- ``cert``: ``"good"`` (default: 127.0.0.1 and localhost), ``"expired"``, ``"wrong_host"``
  (mail.example.invalid) or ``"untrusted"`` (from another CA, unknown to ``client_context()``).
- ``auth``: ``(username, password)`` to offer AUTH; ``auth_mechanisms`` (default
  ``("PLAIN", "LOGIN")``); ``auth_require_tls`` (default True: no AUTH before TLS, 538 if tried);
  ``auth_required`` (MAIL before login gets 530). ``oauth``: a ``TokenVerifier``
  (``tests/support/oauth_smtp.py``) for ``XOAUTH2`` / ``OAUTHBEARER`` in ``auth_mechanisms``.
- ``pipelining``, ``smtputf8``, ``eightbitmime``, ``advertise_starttls`` (True by default) and
  ``size`` (an int, or None not to advertise SIZE): what EHLO offers.
  ``advertise_starttls=False`` with ``tls="starttls"`` hides STARTTLS (a stripping attacker).
- ``tls_max_version``: an ``ssl.TLSVersion`` the server will not go above (``TLSv1_1``: a
  legacy server offering only TLS 1.0/1.1; its ciphers are opened to ``@SECLEVEL=0`` so that
  OpenSSL offers them at all). Like every asyncio server it then drops the connection without
  sending its TLS alert.
- ``faults``: a ``Faults`` script, see below.

Server attributes:

- ``host``, ``port``, ``ca_path`` (PEM of the CA, for ``FLUXMAIL_CA_FILE``), ``client_context()``
  and ``params(**overrides)`` (``SMTPParams`` for this server, trusting the CA).
- ``messages``: accepted ``Received`` messages (``mail_from``, ``rcpt_tos``, ``data``,
  ``mail_options``, ``tls``, ``login``); ``received``: every message whose final "." arrived.
- ``deliveries``: messages accepted, or possibly accepted because the reply to the final "."
  was dropped or stalled; proves "never delivered twice".
- ``commands`` (verbs seen: ``["EHLO", "STARTTLS", "EHLO", "AUTH", "MAIL", ...]``),
  ``connections``, ``ehlo_names``, ``pipelined`` (per MAIL: did RCPT and DATA come with it).
- ``drop_connections(reply="421 ...")`` closes every open connection, as an idle timeout would
  (``reply=None``: no 421 first); ``stop()`` (the fixture calls it).

Faults: ``Faults(stage=fault, ...)`` with stages ``greeting``, ``ehlo``, ``starttls``, ``auth``,
``mail``, ``rcpt`` (every RCPT), ``data`` (the DATA command), ``end_of_data`` (the reply to the
final ".") and ``quit``; ``rcpt_to={"addr": fault}`` per recipient; ``max_recipients=K``
answers ``452 4.5.3`` to every RCPT after K accepted ones in a transaction.
A fault is ``reply("451 4.3.0 Later")``, ``drop()`` (close the connection without a reply)
or ``stall()`` (no reply until the server stops or ``seconds`` pass; then close). Each takes
``times=N`` to fire only on the first N occurrences (counted across connections) and then
behave normally, so retries can be tested. Any ``421`` reply closes the connection after it
is sent, as RFC 5321 3.8 describes. Examples::

    Faults(greeting=reply("554 5.7.1 Blocked"))                  # permanent refusal
    Faults(auth=reply("535 5.7.8 Bad credentials"))
    Faults(mail=reply("451 4.3.0 Try later", times=2))          # fails twice, then accepts
    Faults(rcpt_to={"c@example.com": reply("421 4.4.2 Closing")})  # 421 in the middle of RCPT
    Faults(data=drop())                                          # lost before the final "."
    Faults(end_of_data=drop(times=1))                            # lost after the final "."
    Faults(end_of_data=stall())                                  # client's data_timeout fires
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.support.oauth_smtp import OAuthMechanisms, TokenVerifier

if TYPE_CHECKING:
    from fluxmail.transport.smtp.session import SMTPParams

__all__ = [
    "Fault",
    "Faults",
    "Received",
    "SMTPTestServer",
    "TestCA",
    "drop",
    "reply",
    "stall",
]

CertKind = Literal["good", "expired", "wrong_host", "untrusted"]
_OAUTH = ("XOAUTH2", "OAUTHBEARER")
STALL_LIMIT = 60.0  # a stall never outlives this, even if nobody stops the server


class TestCA:
    """A trustme CA with server certificates of every kind a client must handle."""

    __test__ = False  # not a test class, despite the name

    def __init__(self, folder: Path) -> None:
        self.ca = trustme.CA(organization_name="fluxmail test CA")
        self.ca_path = folder / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_path))
        now = datetime.datetime.now(datetime.timezone.utc)
        self._certs: dict[str, trustme.LeafCert] = {
            "good": self.ca.issue_cert("127.0.0.1", "localhost", "::1"),
            "expired": self.ca.issue_cert(
                "127.0.0.1",
                "localhost",
                not_before=now - datetime.timedelta(days=30),
                not_after=now - datetime.timedelta(days=1),
            ),
            "wrong_host": self.ca.issue_cert("mail.example.invalid"),
            "untrusted": trustme.CA().issue_cert("127.0.0.1", "localhost"),
        }

    def server_context(self, kind: CertKind = "good") -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._certs[kind].configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        """Verifies certificates and host names against this CA only."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


@dataclass(frozen=True)
class Fault:
    """What the server does instead of its normal answer at one stage."""

    action: Literal["reply", "drop", "stall"]
    text: str | None = None
    times: int | None = None  # None: every time
    seconds: float = STALL_LIMIT


def reply(text: str, *, times: int | None = None) -> Fault:
    return Fault("reply", text, times)


def drop(*, times: int | None = None) -> Fault:
    return Fault("drop", None, times)


def stall(*, times: int | None = None, seconds: float = STALL_LIMIT) -> Fault:
    return Fault("stall", None, times, min(seconds, STALL_LIMIT))


@dataclass(frozen=True)
class Faults:
    greeting: Fault | None = None
    ehlo: Fault | None = None
    starttls: Fault | None = None
    auth: Fault | None = None
    mail: Fault | None = None
    rcpt: Fault | None = None
    rcpt_to: Mapping[str, Fault] = field(default_factory=dict)
    max_recipients: int | None = None
    data: Fault | None = None
    end_of_data: Fault | None = None
    quit: Fault | None = None


@dataclass(frozen=True)
class Received:
    """One message whose final "." reached the server."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    mail_options: list[str]
    accepted: bool
    reply: str
    tls: bool
    login: str | None


class _State:
    """Shared by every connection of one server; touched from the server thread only,
    except the lists, which tests read under the lock."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self.fired: dict[str, int] = {}
        self.lock = threading.Lock()
        self.received: list[Received] = []
        self.commands: list[str] = []
        self.ehlo_names: list[str] = []
        self.pipelined: list[bool] = []
        self.connections = 0
        self.live: set[_ScriptedSMTP] = set()
        self.stopping: asyncio.Event | None = None

    def take(self, key: str, fault: Fault | None) -> Fault | None:
        """The fault for this occurrence, if it still fires (``times`` counts down)."""
        if fault is None:
            return None
        count = self.fired.get(key, 0)
        if fault.times is not None and count >= fault.times:
            return None
        self.fired[key] = count + 1
        return fault

    def log(self, verb: str) -> None:
        with self.lock:
            self.commands.append(verb)


def _address(arg: str | None) -> str:
    text = arg or ""
    start, end = text.find("<"), text.find(">")
    return text[start + 1 : end] if 0 <= start < end else text.partition(":")[2].strip()


class _ScriptedSMTP(SMTP):  # type: ignore[misc]
    """aiosmtpd's SMTP with a fault script consulted at every stage."""

    def __init__(self, handler: _Handler, state: _State, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._state = state
        self._greeted = False
        self._accepted_rcpts = 0
        self._implicit_tls = False

    async def push(self, status: Any) -> None:
        if not self._greeted:  # the first push is the 220 greeting
            self._greeted = True
            fault = self._state.take("greeting", self._state.faults.greeting)
            if fault is not None:
                await self._perform(fault)
                if fault.action == "reply":  # a refused greeting ends the session
                    self._close()
                return
        await super().push(status)
        text = status.decode("ascii", "replace") if isinstance(status, bytes) else status
        if text.startswith("421"):  # RFC 5321 3.8: 421 means the server closes the channel
            self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    async def _perform(self, fault: Fault) -> None:
        if fault.action == "reply":
            assert fault.text is not None
            await self.push(fault.text)
            return
        if fault.action == "stall":
            assert self._state.stopping is not None
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._state.stopping.wait(), fault.seconds)
        self._close()
        # connection_lost() cancels this handler; wait for that, boundedly.
        await asyncio.sleep(STALL_LIMIT)

    async def _scripted(self, verb: str, key: str, fault: Fault | None) -> bool:
        """Log the verb; perform the fault if one fires. True when the fault replaced the stage."""
        self._state.log(verb)
        fired = self._state.take(key, fault)
        if fired is None:
            return False
        await self._perform(fired)
        return True

    async def smtp_EHLO(self, hostname: str) -> None:
        with self._state.lock:
            self._state.ehlo_names.append(hostname)
        if not await self._scripted("EHLO", "ehlo", self._state.faults.ehlo):
            await super().smtp_EHLO(hostname)

    async def smtp_HELO(self, hostname: str) -> None:
        if not await self._scripted("HELO", "ehlo", self._state.faults.ehlo):
            await super().smtp_HELO(hostname)

    async def smtp_STARTTLS(self, arg: str) -> None:
        if not await self._scripted("STARTTLS", "starttls", self._state.faults.starttls):
            await super().smtp_STARTTLS(arg)

    async def smtp_AUTH(self, arg: str) -> None:
        if not await self._scripted("AUTH", "auth", self._state.faults.auth):
            await super().smtp_AUTH(arg)

    async def smtp_MAIL(self, arg: str | None) -> None:
        self._accepted_rcpts = 0
        # RFC 2920: a pipelining client has already sent its RCPTs and DATA behind MAIL.
        waiting = bytes(self._reader._buffer)
        with self._state.lock:
            self._state.pipelined.append(b"DATA\r\n" in waiting.upper())
        if not await self._scripted("MAIL", "mail", self._state.faults.mail):
            await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str | None) -> None:
        faults = self._state.faults
        address = _address(arg)
        fault = faults.rcpt_to.get(address)
        key = f"rcpt:{address}" if fault is not None else "rcpt"
        if await self._scripted("RCPT", key, fault or faults.rcpt):
            return
        limit = faults.max_recipients
        if limit is not None and self._accepted_rcpts >= limit and self.envelope.mail_from:
            await self.push("452 4.5.3 Too many recipients")  # RFC 5321 4.5.3.1.10
            return
        before = len(self.envelope.rcpt_tos)
        await super().smtp_RCPT(arg)
        self._accepted_rcpts += len(self.envelope.rcpt_tos) - before

    async def smtp_DATA(self, arg: str) -> None:
        if not await self._scripted("DATA", "data", self._state.faults.data):
            await super().smtp_DATA(arg)

    async def smtp_RSET(self, arg: str) -> None:
        self._state.log("RSET")
        await super().smtp_RSET(arg)

    async def smtp_NOOP(self, arg: str) -> None:
        self._state.log("NOOP")
        await super().smtp_NOOP(arg)

    async def smtp_QUIT(self, arg: str) -> None:
        if not await self._scripted("QUIT", "quit", self._state.faults.quit):
            await super().smtp_QUIT(arg)

    def connection_lost(self, error: Exception | None) -> None:
        self._state.live.discard(self)
        super().connection_lost(error)


class _Handler(OAuthMechanisms):
    """aiosmtpd hooks: what EHLO offers, and recording (or faulting) each finished message."""

    def __init__(
        self, state: _State, offers: Mapping[str, bool], oauth: TokenVerifier | None = None
    ) -> None:
        self._state = state
        self._offers = offers
        self.oauth = oauth

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, lines: list[str]
    ) -> list[str]:
        session.host_name = hostname
        keep = [
            line for line in lines[:-1] if self._offers.get(line[4:].split(" ")[0].lower(), True)
        ]
        if self._offers["pipelining"]:
            keep.append("250-PIPELINING")
        return [*keep, "250 HELP"]

    async def handle_DATA(self, server: _ScriptedSMTP, session: Session, envelope: Envelope) -> str:
        state = self._state
        fault = state.take("end_of_data", state.faults.end_of_data)
        text = fault.text if fault is not None and fault.text else "250 2.0.0 OK: queued as FLUX1"
        auth = session.auth_data
        name = getattr(auth, "login", None)  # LoginPassword, or OAuthLogin after a token login
        login = name.decode() if isinstance(name, bytes) else None
        received = Received(
            mail_from=envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            data=bytes(envelope.original_content),
            mail_options=list(envelope.mail_options),
            accepted=fault is None or (fault.action == "reply" and text.startswith("2")),
            reply=text if fault is None or fault.action == "reply" else fault.action,
            tls=session.ssl is not None or server._implicit_tls,
            login=login,
        )
        with state.lock:
            state.received.append(received)
        if fault is not None and fault.action != "reply":
            await server._perform(fault)
        return text


class SMTPTestServer:
    """An aiosmtpd server on 127.0.0.1 (free port) in its own thread and event loop."""

    __test__ = False

    def __init__(
        self,
        ca: TestCA,
        *,
        tls: Literal["none", "starttls", "implicit"] = "none",
        cert: CertKind = "good",
        auth: tuple[str, str] | None = None,
        auth_mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN"),
        auth_require_tls: bool = True,
        auth_required: bool = False,
        pipelining: bool = True,
        smtputf8: bool = True,
        eightbitmime: bool = True,
        advertise_starttls: bool = True,
        size: int | None = 33554432,
        tls_max_version: ssl.TLSVersion | None = None,
        faults: Faults | None = None,
        oauth: TokenVerifier | None = None,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self.tls = tls
        self.ca_path = str(ca.ca_path)
        self._ca = ca
        self._state = _State(faults or Faults())
        offers = {
            "pipelining": pipelining,
            "8bitmime": eightbitmime,
            "starttls": advertise_starttls,
            "auth": auth is not None or oauth is not None,
        }
        self._handler = _Handler(self._state, offers, oauth)
        self._server_ctx = ca.server_context(cert) if tls != "none" else None
        if self._server_ctx is not None and tls_max_version is not None:
            _limit_versions(self._server_ctx, tls_max_version)
        self._smtp_kwargs: dict[str, Any] = {
            "hostname": "mx.test.invalid",
            "data_size_limit": size,
            "enable_SMTPUTF8": smtputf8,
            "tls_context": self._server_ctx if tls == "starttls" else None,
            "require_starttls": tls == "starttls" and advertise_starttls,
            # implicit TLS is TLS from the first byte; aiosmtpd only knows about STARTTLS
            "auth_require_tls": auth_require_tls and tls != "implicit",
            "auth_required": auth_required,
            "auth_exclude_mechanism": [
                m for m in ("PLAIN", "LOGIN", *_OAUTH) if m not in auth_mechanisms
            ],
            "authenticator": _authenticator(auth),
            "timeout": 120,
        }
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None

    # -- what the server saw ---------------------------------------------------------------

    @property
    def received(self) -> list[Received]:
        with self._state.lock:
            return list(self._state.received)

    @property
    def messages(self) -> list[Received]:
        return [m for m in self.received if m.accepted]

    @property
    def deliveries(self) -> int:
        """Messages the server accepted, or may have: its reply to the final "." was 2xx or
        never sent (dropped, stalled). A 4xx/5xx there means not delivered."""
        return sum(1 for m in self.received if m.accepted or m.reply in ("drop", "stall"))

    @property
    def commands(self) -> list[str]:
        with self._state.lock:
            return list(self._state.commands)

    @property
    def connections(self) -> int:
        return self._state.connections

    @property
    def ehlo_names(self) -> list[str]:
        with self._state.lock:
            return list(self._state.ehlo_names)

    @property
    def pipelined(self) -> list[bool]:
        """Per MAIL command: did RCPT and DATA arrive together with it (RFC 2920)?"""
        with self._state.lock:
            return list(self._state.pipelined)

    def client_context(self) -> ssl.SSLContext:
        return self._ca.client_context()

    def params(self, **overrides: Any) -> SMTPParams:
        """``SMTPParams`` for this server (its TLS mode, trusting the test CA); override any."""
        from fluxmail.transport.smtp.session import SMTPParams

        security = {"none": "none", "starttls": "starttls", "implicit": "implicit"}[self.tls]
        values: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "security": security,
            "ssl_context": self.client_context(),
            "connect_timeout": 10.0,
            "command_timeout": 10.0,
            "data_timeout": 10.0,
        }
        values.update(overrides)
        return SMTPParams(**values)

    # -- lifecycle -------------------------------------------------------------------------

    def _factory(self) -> _ScriptedSMTP:
        assert self._loop is not None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # aiosmtpd warns about auth without TLS
            smtp = _ScriptedSMTP(self._handler, self._state, loop=self._loop, **self._smtp_kwargs)
        smtp._implicit_tls = self.tls == "implicit"
        self._state.connections += 1
        self._state.live.add(smtp)
        return smtp

    def start(self) -> SMTPTestServer:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10) or self._server is None:
            raise RuntimeError("the test SMTP server did not start")
        return self

    def _run(self, ready: threading.Event) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            implicit = self._server_ctx if self.tls == "implicit" else None
            self._state.stopping = asyncio.Event()
            self._server = loop.run_until_complete(
                loop.create_server(self._factory, self.host, 0, ssl=implicit)
            )
            self.port = self._server.sockets[0].getsockname()[1]
        finally:
            ready.set()
        loop.run_forever()

    def _call(self, coro: Any, timeout: float = 10) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def drop_connections(
        self, reply: str | None = "421 4.4.2 mx.test.invalid idle timeout"
    ) -> None:
        """Close every open connection, as a server does with idle clients."""

        async def drop_all() -> None:
            for smtp in list(self._state.live):
                if reply is not None and smtp.transport is not None:
                    smtp.transport.write(reply.encode() + b"\r\n")
                smtp._close()

        self._call(drop_all())

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()

    async def _shutdown(self) -> None:
        assert self._state.stopping is not None and self._server is not None
        self._state.stopping.set()  # ends every stall
        self._server.close()
        for smtp in list(self._state.live):
            smtp._close()
        current = asyncio.current_task()
        for _ in range(50):  # bounded: let connection_lost() cancel the handlers
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            if not tasks:
                break
            await asyncio.sleep(0.01)
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()


def _limit_versions(context: ssl.SSLContext, highest: ssl.TLSVersion) -> None:
    """Cap the server's TLS version; old versions need old ciphers (OpenSSL security level 0)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1/TLSv1_1 are deprecated
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = highest
    context.set_ciphers("DEFAULT:@SECLEVEL=0")


def _authenticator(credentials: tuple[str, str] | None) -> Callable[..., AuthResult] | None:
    if credentials is None:
        return None
    username, password = (c.encode() for c in credentials)

    def check(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (username, password)
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)

    return check
