"""The bulk pipeline's queue of built messages waiting for a sender, bounded in bytes too."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fluxmail.engine.outgoing import Outgoing

__all__ = ["ReadyQueue"]


class ReadyQueue:
    """The built messages waiting for a sender (one producer, the senders as consumers): at
    most ``room`` of them and, past the first, at most ``cap`` bytes. A deque and bare
    futures: asyncio.Queue counts only items, and costs several times as much per message."""

    def __init__(self, room: int, cap: int) -> None:
        self._items: deque[Any] = deque()
        self._room = room
        self._cap = cap
        self._bytes = 0
        self._getters: deque[asyncio.Future[None]] = deque()
        self._putter: asyncio.Future[None] | None = None

    async def put(self, job: tuple[int, Outgoing] | None) -> None:
        size = len(job[1].mail.data) if job is not None else 0
        while self._items and (
            len(self._items) >= self._room or (size and self._bytes + size > self._cap)
        ):
            self._putter = asyncio.get_running_loop().create_future()
            try:
                await self._putter
            finally:
                self._putter = None
        self._items.append(job)
        self._bytes += size
        self._wake_getter()

    async def get(self) -> Any:
        while not self._items:
            getter = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                getter.cancel()
                if getter in self._getters:
                    self._getters.remove(getter)
                elif self._items:
                    self._wake_getter()  # woken, then cancelled: the item is another's
                raise
        return self._took(self._items.popleft())

    def get_nowait(self) -> Any:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._took(self._items.popleft())

    def empty(self) -> bool:
        return not self._items

    def _took(self, job: Any) -> Any:
        if job is not None:
            self._bytes -= len(job[1].mail.data)
        if self._putter is not None and not self._putter.done():
            self._putter.set_result(None)
        return job

    def _wake_getter(self) -> None:
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(None)
                return
