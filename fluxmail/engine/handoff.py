"""Outcomes from the event loop's thread to the caller's thread: the sync face of a bulk run.

A deque the loop thread appends to and the caller's thread drains. The caller sleeps on an
``Event`` only when it finds nothing, then lingers a moment so that it wakes once per batch of
outcomes, not once per outcome; the loop thread never waits for the caller unless the caller
falls ``limit`` outcomes behind (bounded memory). A coroutine per batch run on the loop from the
other thread (``run_coroutine_threadsafe``) cost a self-pipe write, a task and two thread
hand-offs of the GIL per batch, and stalled the loop while the caller read.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from typing import Any

LINGER = 0.01  # seconds the caller waits for more once one outcome is there
BATCH = 256  # outcomes that make the wait pointless


class Handoff:
    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int = 1024) -> None:
        self._loop = loop
        self._limit = limit
        self._items: deque[Any] = deque()
        self._ready = threading.Event()
        self._waiting = False  # the caller sleeps on _ready
        self._room: asyncio.Future[None] | None = None  # the loop waits for the caller

    async def put(self, item: Any) -> None:
        """On the loop: hand one item over; waits only while the caller is ``limit`` behind."""
        self._items.append(item)
        if self._waiting:
            self._ready.set()
        if len(self._items) >= self._limit:
            self._room = self._loop.create_future()
            try:
                if len(self._items) >= self._limit:  # re-checked: the caller may have drained
                    await self._room
            finally:
                self._room = None

    def take(self) -> list[Any]:
        """In the caller's thread: every item there is, waiting for the first one."""
        if not self._items:
            self._waiting = True  # set before the re-check: put() sees it or we see its item
            while not self._items:
                self._ready.wait()
                self._ready.clear()
            self._waiting = False
            if len(self._items) < BATCH:
                time.sleep(LINGER)
        items = self._items
        batch = [items.popleft() for _ in range(len(items))]
        room = self._room
        if room is not None:
            self._loop.call_soon_threadsafe(_free, room)
        return batch


def _free(room: asyncio.Future[None]) -> None:
    if not room.done():
        room.set_result(None)
