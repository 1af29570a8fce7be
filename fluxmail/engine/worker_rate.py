"""A rate limit held by the whole fleet: slots reserved in chunks from the store
(``outbox.reserve``: one row per endpoint says when the next slot is free), each chunk's
messages spaced ``1/rate`` apart. The same face as ``RateLimiter`` (engine/outcomes.py)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque

from fluxmail.audit.outbox import Outbox
from fluxmail.errors import FluxMailException

log = logging.getLogger("fluxmail.worker")
CHUNK_SECONDS = 0.5  # slots reserved at a time: half a second's worth (one round trip)


class FleetLimiter:
    def __init__(self, outbox: Outbox, key: str, rate: float) -> None:
        self._outbox = outbox
        self._key = key
        self._rate = rate
        self._chunk = max(1, int(rate * CHUNK_SECONDS))
        self._slots: deque[float] = deque()  # monotonic start times reserved, not used yet
        self._lock = asyncio.Lock()
        self.reserved = 0

    @property
    def active(self) -> bool:
        return True

    async def wait(self) -> None:
        async with self._lock:  # one refill at a time; slots handed out in order
            if not self._slots:
                await self._refill()
            start = self._slots.popleft()
        delay = start - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _refill(self) -> None:
        pause = 0.5
        while True:
            try:
                wait = await asyncio.to_thread(
                    self._outbox.reserve, self._key, self._rate, self._chunk
                )
                break
            except FluxMailException as exc:  # the store is down: no slot, no send
                log.warning("could not reserve send slots: %s", exc.code)
                await asyncio.sleep(random.uniform(pause / 2, pause))
                pause = min(pause * 2, 30.0)
        first = time.monotonic() + max(0.0, wait)
        self._slots.extend(first + i / self._rate for i in range(self._chunk))
        self.reserved += self._chunk
