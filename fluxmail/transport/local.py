"""Where a built message goes: SMTP, the console, a folder of .eml files, or memory."""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import asyncio

    from fluxmail.config.resolve import Config
    from fluxmail.errors import DeliveryError
    from fluxmail.message.model import Message
    from fluxmail.results import SendResult
    from fluxmail.transport.smtp.pool import ConnectionPool
    from fluxmail.transport.smtp.retry import Envelope, RetryPolicy
    from fluxmail.transport.smtp.session import SMTPParams, Staged


class Backend(Protocol):
    name: str

    async def deliver(
        self,
        env: Envelope,
        data: bytes,
        message: Message,
        pool: ConnectionPool | None = None,
        then: Staged | None = None,
    ) -> tuple[SendResult, DeliveryError | None]: ...

    async def aclose(self) -> None: ...


def _all_sent(env: Envelope, message: Message, started: float) -> SendResult:
    from fluxmail.results import RecipientStatus, SendResult

    return SendResult(
        status="sent",
        message_id=message.message_id,
        recipients={a: RecipientStatus(a, "sent") for a in env.recipients},
        elapsed=time.monotonic() - started,
    )


class SMTPBackend:
    """Delivery over SMTP; one connection pool per event loop."""

    name = "smtp"

    def __init__(self, config: Config, *, max_connections: int = 8) -> None:
        self._config = config
        self._max = max_connections
        self._policy: RetryPolicy | None = None  # built on first use: keeps aiosmtplib unloaded
        self._held = 0
        self._lock = threading.Lock()
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ConnectionPool] = (
            weakref.WeakKeyDictionary()
        )

    def params(self) -> SMTPParams:
        from fluxmail.transport.smtp.session import SMTPParams

        c = self._config
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

    def hold(self, delta: int) -> int:
        """``with mailer:`` keeps connections open while the count is above zero."""
        with self._lock:
            self._held += delta
            return self._held

    def _kept(self) -> bool:
        return self._held > 0

    def pool(self) -> ConnectionPool:
        import asyncio

        from fluxmail.transport.smtp.pool import ConnectionPool

        loop = asyncio.get_running_loop()
        with self._lock:
            pool = self._pools.get(loop)
            if pool is None:
                pool = ConnectionPool(self.params, keep_open=self._kept, max_size=self._max)
                self._pools[loop] = pool
            return pool

    async def deliver(
        self,
        env: Envelope,
        data: bytes,
        message: Message,
        pool: ConnectionPool | None = None,
        then: Staged | None = None,
    ) -> tuple[SendResult, DeliveryError | None]:
        from fluxmail.transport.smtp.retry import RetryPolicy, deliver

        if self._policy is None:
            c = self._config
            self._policy = RetryPolicy(c.max_retries, c.retry_delay, c.retry_deadline)
        return await deliver(pool or self.pool(), env, data, message.message_id, self._policy, then)

    def private_pool(self) -> ConnectionPool:
        """A pool of one kept-open connection, for one bulk worker."""
        from fluxmail.transport.smtp.pool import ConnectionPool

        return ConnectionPool(self.params, keep_open=lambda: True, max_size=1)

    async def aclose(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        with self._lock:
            pool = self._pools.pop(loop, None)
        if pool is not None:
            await pool.close()


class _LocalBackend:
    """A backend that hands the message over locally: every recipient counts as sent."""

    name = "local"

    async def deliver(
        self,
        env: Envelope,
        data: bytes,
        message: Message,
        pool: ConnectionPool | None = None,
        then: Staged | None = None,
    ) -> tuple[SendResult, DeliveryError | None]:
        started = time.monotonic()
        self.hand_over(env, data, message)
        return _all_sent(env, message, started), None

    def hand_over(self, env: Envelope, data: bytes, message: Message) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


class ConsoleBackend(_LocalBackend):
    """Prints each message to standard output; for development."""

    name = "console"

    def hand_over(self, env: Envelope, data: bytes, message: Message) -> None:
        text = data.decode("utf-8", "replace").replace("\r\n", "\n")
        sys.stdout.write(f"{text}\n{'-' * 72}\n")
        sys.stdout.flush()


class FileBackend(_LocalBackend):
    """Writes each message as an .eml file into a folder (written whole, then renamed)."""

    name = "file"

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def hand_over(self, env: Envelope, data: bytes, message: Message) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(6).hex()}"
        tmp = self.folder / f".{stem}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, self.folder / f"{stem}.eml")


class MemoryBackend(_LocalBackend):
    """Keeps messages in ``fluxmail.testing.outbox`` for assertions in the user's tests."""

    name = "memory"

    def hand_over(self, env: Envelope, data: bytes, message: Message) -> None:
        from fluxmail.testing import SentMessage, outbox

        outbox.append(SentMessage(message, data, env.sender, env.recipients))


def make_backend(config: Config) -> Backend:
    if config.backend == "console":
        return ConsoleBackend()
    if config.backend == "file":
        return FileBackend(config.file_dir)
    if config.backend == "memory":
        return MemoryBackend()
    return SMTPBackend(config)
