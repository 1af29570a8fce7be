"""Delivery workers for the outbox: ``Worker(mailer).run()`` delivers what ``enqueue()`` stored
(docs/outbox.md). Any number of workers, in any number of processes, share one store::

    from fluxmail import FluxMail
    from fluxmail.worker import Worker

    worker = Worker(FluxMail.from_env(), concurrency=4)
    report = worker.run()          # until worker.stop() (SIGTERM in `fluxmail worker`)
    report = worker.run(once=True)  # what is due now, then return (cron, a scheduled Lambda)
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Protocol

from fluxmail.engine.sending import Engine
from fluxmail.engine.worker import OutboxWorker, WorkerReport
from fluxmail.errors import ConfigurationError, shown

__all__ = ["Worker", "WorkerReport"]


class WorkerMailer(Protocol):
    @property
    def engine(self) -> Engine: ...


class Worker:
    """Claims due outbox rows and delivers them with the mailer's transport.

    ``concurrency``: lanes (kept-open connections); ``batch``: rows claimed at a time;
    ``grace``: seconds ``stop()`` leaves what is in flight to finish before it is cancelled
    (Kubernetes waits 30 s after SIGTERM by default).
    """

    def __init__(
        self, mailer: WorkerMailer, *, concurrency: int = 4, batch: int = 64, grace: float = 25.0
    ) -> None:
        _check_count("concurrency", concurrency, 256, "invalid_concurrency")
        _check_count("batch", batch, 10_000, "invalid_option")
        if (
            isinstance(grace, bool)
            or not isinstance(grace, (int, float))
            or not (math.isfinite(grace) and grace > 0)
        ):
            raise ConfigurationError(
                f"grace must be a positive number of seconds, not {shown(grace)}",
                code="invalid_option",
            )
        engine = mailer.engine
        if not engine.audit.enabled:
            raise ConfigurationError(
                "a worker delivers the outbox of the audit store, and auditing is off; set "
                "FLUXMAIL_AUDIT_URL (PostgreSQL, for a fleet) or FLUXMAIL_AUDIT_DIR",
                code="outbox_needs_audit",
            )
        self._engine = engine
        self._core = OutboxWorker(engine, concurrency=concurrency, batch=batch, grace=grace)

    @property
    def owner(self) -> str:
        """This worker's id in the store's leases (host:pid:random)."""
        return self._core.owner

    def run(self, *, once: bool = False) -> WorkerReport:
        """Deliver until ``stop()`` (or, with ``once``, until nothing is due); blocks. Runs
        its own event loop: call it from a thread without one."""
        return asyncio.run(self.run_async(once=once))

    async def run_async(self, *, once: bool = False) -> WorkerReport:
        return await self._core.run(once=once)

    def stop(self) -> None:
        """Stop claiming, release what waits, finish what is in flight; thread-safe."""
        self._core.stop()

    def deliver(self, ids: Sequence[str]) -> dict[str, str]:
        """Claim these rows (those of them that are due and free), deliver and settle them;
        their statuses (``pending`` when retried later). Rows not claimed are left out: not
        due, taken by another worker, or ended already (a duplicate task never sends twice)."""
        return asyncio.run(self.deliver_async(ids))

    async def deliver_async(self, ids: Sequence[str]) -> dict[str, str]:
        wanted = [str(i) for i in ids]
        if not wanted:
            return {}
        report = await self._core.run(ids=wanted)
        return {i: report.statuses[i] for i in wanted if i in report.statuses}


def _check_count(name: str, value: object, high: int, code: str) -> None:
    fits = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= high
    if not fits:
        raise ConfigurationError(
            f"{name} must be a whole number between 1 and {high}, not {shown(value)}",
            code=code,
        )
