"""The SMTP transport: a connection pool per event loop, the retry loop, and bulk lanes that
own one kept-open, pipelining connection each.

Building one (``FluxMail.from_env()``) loads none of the SMTP session, the pools, the retry
loop or the OAuth token sources: the first send does, so a cold start pays for the
configuration only.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import weakref
from typing import TYPE_CHECKING

from fluxmail._lazy import lazy_module
from fluxmail.config.auth import OAUTH_MECHANISMS
from fluxmail.config.resolve import Config
from fluxmail.transport.base import Lane, Transport

if TYPE_CHECKING:
    from fluxmail.transport.mail import Mail, TransportResult
    from fluxmail.transport.oauth import tokens
    from fluxmail.transport.oauth.tokens import TokenSource
    from fluxmail.transport.smtp import pool, retry, session
    from fluxmail.transport.smtp.pool import ConnectionPool, LanePool
    from fluxmail.transport.smtp.retry import RetryPolicy
    from fluxmail.transport.smtp.session import SMTPParams, Staged
else:
    tokens = lazy_module("fluxmail.transport.oauth.tokens")
    pool = lazy_module("fluxmail.transport.smtp.pool")
    retry = lazy_module("fluxmail.transport.smtp.retry")
    session = lazy_module("fluxmail.transport.smtp.session")


def smtp_params(config: Config, source: TokenSource | None = None) -> SMTPParams:
    """The connection parameters of a resolved configuration (password in the clear: only the
    session that logs in ever sees it). An OAuth login gets ``source``, else a new one."""
    c = config
    assert c.host is not None and c.port is not None
    if source is None and c.auth in OAUTH_MECHANISMS and c.username is not None:
        source = tokens.token_source(c)
    return session.SMTPParams(
        host=c.host,
        port=c.port,
        security=c.security,
        ssl_context=c.ssl_context(),
        username=c.username,
        password=c.password.get_secret_value() if c.password is not None else None,
        local_hostname=c.local_hostname,
        connect_timeout=c.connect_timeout,
        command_timeout=c.command_timeout,
        data_timeout=c.data_timeout,
        allow_insecure_auth=c.allow_insecure_auth,
        auth=c.auth if source is not None else "password",
        token_source=source,
    )


class SMTPTransport(Transport):
    """Delivery over SMTP. A connection belongs to the loop that opened it: one pool per loop."""

    name = "smtp"

    def __init__(self, config: Config, *, max_connections: int = 8) -> None:
        super().__init__()
        self._config = config
        self._max = max_connections
        # One token source per transport: every pool, lane and loop shares its cached token.
        self._tokens = tokens.token_source(config) if config.auth in OAUTH_MECHANISMS else None
        self._lock = threading.Lock()
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ConnectionPool] = (
            weakref.WeakKeyDictionary()
        )

    @classmethod
    def from_config(cls, config: Config) -> SMTPTransport:
        return cls(config)

    @functools.cached_property
    def policy(self) -> RetryPolicy:
        """The retry rules, made by the first send (the retry loop's module loads with it)."""
        c = self._config
        return retry.RetryPolicy(c.max_retries, c.retry_delay, c.retry_deadline)

    def params(self) -> SMTPParams:
        return smtp_params(self._config, self._tokens)

    def _pool(self) -> ConnectionPool:
        loop = asyncio.get_running_loop()
        with self._lock:
            found = self._pools.get(loop)
            if found is None:
                found = pool.ConnectionPool(
                    self.params, keep_open=lambda: self.held, max_size=self._max
                )
                self._pools[loop] = found
            return found

    @property
    def endpoint(self) -> str:
        """``scheme://host:port``, no credentials: the results' ``transport``."""
        return self._config.endpoint

    async def send(self, mail: Mail) -> TransportResult:
        return await retry.deliver(
            self._pool(), mail.envelope, mail.data, self.policy, transport=self.endpoint
        )

    def lane(self) -> SMTPLane:
        return SMTPLane(self, pool.LanePool(self.params))

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            found = self._pools.pop(loop, None)
        if found is not None:
            await found.close()


class SMTPLane(Lane):
    """One kept-open connection; the next message is primed behind the current one's "."
    (RFC 2920 PIPELINING), one round trip per message."""

    primes = True

    def __init__(self, transport: SMTPTransport, lane_pool: LanePool) -> None:
        super().__init__(transport)
        self._pool = lane_pool
        self._policy = transport.policy
        self._endpoint = transport.endpoint
        self._primed: tuple[Mail, Staged] | None = None  # the last `then`, as staged

    async def ready(self) -> None:
        await self._pool.warm()

    async def send(self, mail: Mail, then: Mail | None = None) -> TransportResult:
        # The message primed last time is sent now: the same Staged object lets the session
        # reuse the commands and bytes it computed for it then.
        primed, self._primed = self._primed, None
        current = primed[1] if primed is not None and primed[0] is mail else None
        staged = None
        if then is not None:
            staged = _staged(then)
            self._primed = (then, staged)
        return await retry.deliver(
            self._pool, mail.envelope, mail.data, self._policy, staged,
            transport=self._endpoint, current=current,
        )  # fmt: skip

    async def close(self) -> None:
        await self._pool.close()


def _staged(mail: Mail) -> Staged:
    env = mail.envelope
    return session.Staged(env.sender, env.recipients, mail.data, env.smtputf8)


TRANSPORT = SMTPTransport
