"""The SMTP transport: a connection pool per event loop, the retry loop, and bulk lanes that
own one kept-open, pipelining connection each."""

from __future__ import annotations

import asyncio
import threading
import weakref

from fluxmail.config.resolve import Config
from fluxmail.transport.base import Lane, Mail, Transport, TransportResult
from fluxmail.transport.smtp.pool import ConnectionPool
from fluxmail.transport.smtp.retry import RetryPolicy, deliver
from fluxmail.transport.smtp.session import SMTPParams, Staged


def smtp_params(config: Config) -> SMTPParams:
    """The connection parameters of a resolved configuration (password in the clear: only the
    session that logs in ever sees it)."""
    c = config
    assert c.host is not None and c.port is not None
    return SMTPParams(
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
    )


class SMTPTransport(Transport):
    """Delivery over SMTP. A connection belongs to the loop that opened it: one pool per loop."""

    name = "smtp"

    def __init__(self, config: Config, *, max_connections: int = 8) -> None:
        super().__init__()
        self._config = config
        self._max = max_connections
        self._policy = RetryPolicy(config.max_retries, config.retry_delay, config.retry_deadline)
        self._lock = threading.Lock()
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ConnectionPool] = (
            weakref.WeakKeyDictionary()
        )

    @classmethod
    def from_config(cls, config: Config) -> SMTPTransport:
        return cls(config)

    def params(self) -> SMTPParams:
        return smtp_params(self._config)

    def _pool(self) -> ConnectionPool:
        loop = asyncio.get_running_loop()
        with self._lock:
            pool = self._pools.get(loop)
            if pool is None:
                pool = ConnectionPool(self.params, keep_open=lambda: self.held, max_size=self._max)
                self._pools[loop] = pool
            return pool

    async def send(self, mail: Mail) -> TransportResult:
        return await deliver(self._pool(), mail.envelope, mail.data, self._policy)

    def lane(self) -> SMTPLane:
        return SMTPLane(self, ConnectionPool(self.params, keep_open=lambda: True, max_size=1))

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            pool = self._pools.pop(loop, None)
        if pool is not None:
            await pool.close()


class SMTPLane(Lane):
    """One kept-open connection; the next message is primed behind the current one's "."
    (RFC 2920 PIPELINING), one round trip per message."""

    primes = True

    def __init__(self, transport: SMTPTransport, pool: ConnectionPool) -> None:
        super().__init__(transport)
        self._pool = pool
        self._policy = transport._policy

    async def ready(self) -> None:
        await self._pool.warm()

    async def send(self, mail: Mail, then: Mail | None = None) -> TransportResult:
        staged = None
        if then is not None:
            env = then.envelope
            staged = Staged(env.sender, env.recipients, then.data, env.smtputf8)
        return await deliver(self._pool, mail.envelope, mail.data, self._policy, staged)

    async def close(self) -> None:
        await self._pool.close()


TRANSPORT = SMTPTransport
