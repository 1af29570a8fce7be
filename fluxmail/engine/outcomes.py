"""What a bulk run reports and how it paces itself: per-message outcomes, the running summary,
the rate limiter shared by its workers."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

from fluxmail.errors import ConfigurationError, FluxMailException, shown
from fluxmail.results import SendResult


@dataclass(frozen=True)
class BulkOutcome:
    """One message's outcome: its position in the input, the result, and the error if any."""

    index: int
    result: SendResult | None
    error: FluxMailException | None = None

    @property
    def status(self) -> str:
        return self.result.status if self.result is not None else "failed"

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class BulkSummary:
    total: int = 0
    sent: int = 0
    partial: int = 0
    failed: int = 0
    unknown: int = 0
    dry_run: int = 0
    elapsed: float = 0.0

    @property
    def rate(self) -> float:
        """Messages per second."""
        return self.total / self.elapsed if self.elapsed > 0 else 0.0

    def add(self, outcome: BulkOutcome) -> None:
        self.total += 1
        status = outcome.status if outcome.status != "queued" else "sent"
        setattr(self, status, getattr(self, status) + 1)


def is_rate(value: object) -> bool:
    """A finite positive number whose inverse is finite too (an interval can be made of it)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value) and value > 0 and math.isfinite(1.0 / value)
    except (OverflowError, ZeroDivisionError):  # an int too large for a float
        return False


class RateLimiter:
    """Spaces starts evenly at ``per_second`` (shared by every worker)."""

    def __init__(self, per_second: float | None, name: str = "rate_limit") -> None:
        if per_second is not None and not is_rate(per_second):
            raise ConfigurationError(
                f"{name} must be a finite positive number of messages per second, "
                f"not {shown(per_second)}",
                code="invalid_rate_limit",
            )
        self._interval = 1.0 / per_second if per_second else 0.0
        self._next = 0.0

    @property
    def active(self) -> bool:
        return bool(self._interval)

    async def wait(self) -> None:
        if not self._interval:
            return
        now = time.monotonic()
        start = max(self._next, now)
        self._next = start + self._interval
        if start > now:
            await asyncio.sleep(start - now)
