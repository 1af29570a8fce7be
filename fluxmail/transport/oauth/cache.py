"""The token cache every source shares: ``Token`` and ``TokenSource``.

``TokenSource.token()`` returns a cached token until shortly before it expires; concurrent
callers share one refresh (single flight), also across event loops and threads (the mailer's
loop thread and a caller's own loop): the first caller fetches, the others wait for its
``concurrent.futures.Future``. ``invalidate(token)`` is called when a server refused the token,
so the next ``token()`` fetches a new one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

from fluxmail.errors import AuthenticationFailed, FluxMailException

__all__ = ["REFRESH_MARGIN", "UNKNOWN_LIFETIME", "Token", "TokenSource", "refresh_time"]

# A token this close to its expiry is not handed out (nor kept logged in) any more.
REFRESH_MARGIN = 60.0
# A token of unknown lifetime is reused this long; a server that refuses it sooner invalidates it.
UNKNOWN_LIFETIME = 300.0
_ATTEMPTS = 3  # a waiter whose leader was cancelled leads itself; bounded


def refresh_time(expires_at: float, now: float) -> float:
    """When a token expiring at ``expires_at`` is renewed: REFRESH_MARGIN before expiry, or
    halfway through a shorter lifetime. The cache refetches then and an SMTP session logged in
    with it logs in again then (never earlier: it would be handed the same token)."""
    lifetime = max(expires_at - now, 0.0)
    return now + max(lifetime - REFRESH_MARGIN, lifetime / 2)


@dataclass(frozen=True)
class Token:
    """An access token; its value never appears in a repr."""

    value: str = field(repr=False)
    expires_at: float | None = None  # epoch seconds; None = unknown

    def expires_within(self, seconds: float, now: float | None = None) -> bool:
        if self.expires_at is None:
            return False
        return self.expires_at - (time.time() if now is None else now) <= seconds


class _Abandoned(Exception):
    """The caller that was fetching was cancelled: a waiter fetches instead."""


class TokenSource(ABC):
    """Fetches tokens with ``_fetch()``; caches them and shares one refresh between callers.

    ``clock`` (epoch seconds) is replaceable so tests can move time instead of sleeping.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()  # guards the three fields below, across threads
        self._cached: Token | None = None
        self._refresh_at = 0.0
        self._pending: concurrent.futures.Future[Token] | None = None

    @abstractmethod
    async def _fetch(self) -> Token: ...

    async def token(self) -> Token:
        for _ in range(_ATTEMPTS):
            with self._lock:
                if self._cached is not None and self._clock() < self._refresh_at:
                    return self._cached
                pending, leader = self._pending, self._pending is None
                if pending is None:
                    pending = self._pending = concurrent.futures.Future()
            if leader:
                return await self._lead(pending)
            try:
                # Shielded: a waiter's cancellation must not cancel the shared future.
                return await asyncio.shield(asyncio.wrap_future(pending))
            except _Abandoned:
                continue
        raise AuthenticationFailed(
            "no access token: every caller fetching one was cancelled",
            code="oauth_endpoint_failed",
            stage="auth",
            transient=True,
        )

    async def _lead(self, pending: concurrent.futures.Future[Token]) -> Token:
        try:
            fresh = await self._fetch()
        except BaseException as exc:
            with self._lock:
                self._pending = None
            shared = exc if isinstance(exc, FluxMailException) else None
            pending.set_exception(shared or _Abandoned())
            pending.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        with self._lock:
            self._cached, self._refresh_at = fresh, self._refresh_time(fresh)
            self._pending = None
        pending.set_result(fresh)
        return fresh

    def _refresh_time(self, token: Token) -> float:
        now = self._clock()
        if token.expires_at is None:
            return now + UNKNOWN_LIFETIME
        return refresh_time(token.expires_at, now)

    def invalidate(self, token: Token) -> None:
        """The server refused ``token``: forget it, unless a newer one is already cached."""
        with self._lock:
            if self._cached is not None and self._cached.value == token.value:
                self._cached, self._refresh_at = None, 0.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
