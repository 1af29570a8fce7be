"""SMTP sessions reused across transactions on one event loop (``with mailer:`` and bulk)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fluxmail.transport.smtp.session import SMTPParams, SMTPSession


class ConnectionPool:
    """Hands out connected sessions, at most ``max_size`` at once; one transaction per session."""

    def __init__(
        self, params: Callable[[], SMTPParams], *, keep_open: Callable[[], bool], max_size: int = 8
    ) -> None:
        self._params = params
        self.keep_open = keep_open
        self._idle: list[SMTPSession] = []
        self._slots = asyncio.Semaphore(max_size)

    async def acquire(self, *, fresh: bool = False) -> tuple[SMTPSession, bool]:
        """A connected session, and whether it was reused (it may have gone stale while idle)."""
        await self._slots.acquire()
        try:
            while self._idle and not fresh:
                session = self._idle.pop()
                # A login whose OAuth token is about to expire: a fresh session logs in anew.
                if session.is_connected and not session.login_stale:
                    return session, True
                await session.close()
            session = SMTPSession(self._params())
            await session.connect()
            return session, False
        except BaseException:
            self._slots.release()
            raise

    async def warm(self) -> None:
        """Have a connected session idle (greeting, EHLO, TLS, AUTH done), so the next
        transaction starts at MAIL FROM: bulk runs mark a message as handed to the wire
        only once nothing but its own commands stands between it and the server."""
        session, _ = await self.acquire()
        await self.release(session, healthy=True)

    async def release(self, session: SMTPSession, *, healthy: bool) -> None:
        try:
            if healthy and self.keep_open() and session.is_connected:
                self._idle.append(session)
            else:
                await session.close()
        finally:
            self._slots.release()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for session in idle:
            await session.close()


class LanePool:
    """``ConnectionPool`` for a bulk lane: one kept-open session, used by one task at a time
    (the lane's sender), so no semaphore and no list on the per-message path."""

    def __init__(self, params: Callable[[], SMTPParams]) -> None:
        self._params = params
        self._session: SMTPSession | None = None

    async def acquire(self, *, fresh: bool = False) -> tuple[SMTPSession, bool]:
        session, self._session = self._session, None
        if session is not None:
            if not fresh and session.is_connected and not session.login_stale:
                return session, True
            await session.close()
        session = SMTPSession(self._params())
        await session.connect()
        return session, False

    async def warm(self) -> None:
        """As ``ConnectionPool.warm``: a connected session waits for the next transaction."""
        session, _ = await self.acquire()
        await self.release(session, healthy=True)

    async def release(self, session: SMTPSession, *, healthy: bool) -> None:
        if healthy and session.is_connected and self._session is None:
            self._session = session
        else:
            await session.close()

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
