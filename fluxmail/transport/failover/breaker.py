"""A member's circuit breaker: a failing member rests instead of being hit by every message.

closed --failure--> open (for ``cooldown`` seconds) --> half-open: ONE message probes it; its
success closes the breaker, its failure opens it again. Shared by every thread and event loop
that sends through the mailer, hence the lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal

__all__ = ["Breaker"]

State = Literal["closed", "open", "half_open"]


class Breaker:
    def __init__(self, cooldown: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._state: State = "closed"
        self._until = 0.0

    @property
    def state(self) -> State:
        return self._state

    def allow(self) -> bool:
        """May a message go to this member now? True once per cool-down for the probe."""
        with self._lock:
            if self._state == "closed":
                return True
            if self._state == "half_open" or self._clock() < self._until:
                return False  # resting, or the one probe is on its way
            self._state = "half_open"
            return True

    def record(self, failed: bool) -> None:
        with self._lock:
            if failed:
                self._state, self._until = "open", self._clock() + self.cooldown
            else:
                self._state = "closed"

    def abandon(self) -> None:
        """The probe never finished (a cancelled send): the next message probes instead."""
        with self._lock:
            if self._state == "half_open":
                self._state, self._until = "open", self._clock()
