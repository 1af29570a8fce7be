"""Outbox delivery from Celery tasks, for teams that already run Celery (docs/outbox.md).

``register(app, mailer)`` adds two tasks to a Celery app: ``fluxmail.deliver`` takes one
audit id and delivers that outbox row, ``fluxmail.sweep`` drains every due row (schedule it
with celery beat: it catches rows whose task was lost). ``dispatch(task, ids)`` hands ids to
the delivery task once the enqueueing transaction has committed.

The row decides, not the task: a duplicate task or a Celery retry claims the row under a
lease first, so a message is never sent twice. Tasks carry audit ids only, never the message
or a secret. Celery is imported by ``register`` alone: ``import fluxmail`` never loads it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, NamedTuple

from fluxmail._lazy import lazy_module
from fluxmail.errors import AuditError, ConfigurationError, RecordNotFound, shown
from fluxmail.mailer import FluxMail

if TYPE_CHECKING:
    from fluxmail import worker
    from fluxmail.engine import enqueue
    from fluxmail.worker import Worker
else:  # a web process that only dispatches never loads the worker
    worker = lazy_module("fluxmail.worker")
    enqueue = lazy_module("fluxmail.engine.enqueue")

__all__ = ["DELIVER", "SWEEP", "CeleryTasks", "dispatch", "register"]

DELIVER = "fluxmail.deliver"
SWEEP = "fluxmail.sweep"
INSTALL_HINT = "the Celery adapter needs Celery: pip install 'fluxmail[celery]'"
NOT_FOUND = "not_found"  # the task's status for a row it cannot see (yet)
# A task looks again at a row not committed yet, not due yet or rescheduled after a transient
# failure. Any other status leaves it nothing to do: final (sent, failed, unknown, cancelled,
# dry_run...) or "sending" under another worker's lease (that worker settles the row; if it
# died, its lease runs out and the sweep takes over).
LOOK_AGAIN = frozenset({"pending", NOT_FOUND})

log = logging.getLogger("fluxmail.celery")

MailerSource = FluxMail | Callable[[], FluxMail]


class CeleryTasks(NamedTuple):
    """What ``register`` returns: ``deliver, sweep = register(app, mailer)``."""

    deliver: Any  # celery.Task taking one audit id; returns the row's status
    sweep: Any  # celery.Task draining every due row; returns the run's report as a dict


class _PerProcess:
    """The mailer, built on first use in each process (after a prefork pool's fork), and
    one Worker per thread of it (a ``threads`` pool delivers from several at once)."""

    def __init__(self, source: MailerSource) -> None:
        self._source = source
        self._lock = threading.Lock()
        self._pid = -1
        self._mailer: FluxMail | None = None
        self._local = threading.local()

    def mailer(self) -> FluxMail:
        with self._lock:
            if self._mailer is None or self._pid != os.getpid():
                built = self._source if isinstance(self._source, FluxMail) else self._source()
                if not isinstance(built, FluxMail):
                    raise ConfigurationError(
                        "fluxmail.celery.register(app, mailer): the mailer factory returned "
                        f"{type(built).__name__}, not a FluxMail",
                        code="invalid_option",
                    )
                self._mailer, self._pid = built, os.getpid()
            return self._mailer

    def worker(self) -> Worker:
        # Keyed by pid too: a forked child must not reuse its parent's lease owner id.
        mailer, pid = self.mailer(), os.getpid()
        mine: tuple[int, FluxMail, Worker] | None = getattr(self._local, "worker", None)
        if mine is None or mine[0] != pid or mine[1] is not mailer:
            mine = (pid, mailer, worker.Worker(mailer))
            self._local.worker = mine
        return mine[2]


def _require_celery() -> Any:
    try:
        import celery  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ConfigurationError(INSTALL_HINT, code="missing_extra") from exc
    return celery


def _backoff(mailer: FluxMail, retries: int) -> float:
    """Seconds before a task looks at its row again: FLUXMAIL_RETRY_DELAY doubled on each
    retry, capped by FLUXMAIL_RETRY_MAX_DELAY (keep the broker's visibility timeout above
    that cap, or an acks_late message waiting out its countdown is delivered twice)."""
    config = mailer.config
    return float(min(config.retry_delay * 2 ** min(retries, 30), config.retry_max_delay))


def register(
    app: Any,
    mailer: MailerSource,
    *,
    name: str = DELIVER,
    sweep_name: str = SWEEP,
    max_retries: int = 16,
    unseen_retries: int = 6,
    **options: Any,
) -> CeleryTasks:
    """Add the delivery and sweep tasks to ``app``; ``mailer``: a FluxMail, or a function
    returning one (called once per worker process, after the pool forks: preferred).

    ``max_retries`` bounds how often one task looks again at a row that is not due yet (a
    ``send_at`` in the future, a retry's backoff); ``unseen_retries`` how often at a row not
    visible yet (dispatched before its transaction committed, or rolled back). Past either
    bound the task ends and the sweep delivers the row when it is due. ``options`` go to
    ``app.task`` for both tasks (``queue=...``, ``rate_limit=...``)."""
    _require_celery()
    if not isinstance(mailer, FluxMail) and not callable(mailer):
        raise ConfigurationError(
            "fluxmail.celery.register(app, mailer): mailer is a FluxMail or a function "
            f"returning one, not {shown(mailer)}",
            code="invalid_option",
        )
    for label, value in (("max_retries", max_retries), ("unseen_retries", unseen_retries)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 1000:
            raise ConfigurationError(
                f"{label} must be a whole number between 0 and 1000, not {shown(value)}",
                code="invalid_option",
            )
    source = _PerProcess(mailer)
    # shared=False: the tasks belong to this app alone (a shared task joins every app).
    base = {"serializer": "json", "acks_late": True, "shared": False, **options}
    deliver_task = app.task(bind=True, name=name, max_retries=max_retries, **base)(
        _deliver_function(source, max_retries, unseen_retries)
    )
    sweep_task = app.task(name=sweep_name, **base)(_sweep_function(source))
    return CeleryTasks(deliver_task, sweep_task)


def _deliver_function(
    source: _PerProcess, max_retries: int, unseen_retries: int
) -> Callable[[Any, str], str]:
    def deliver(task: Any, audit_id: str) -> str:
        """Deliver one outbox row if it is due; the row's status afterwards."""
        tries = int(task.request.retries or 0)
        try:
            status = _status(source, audit_id)
        except AuditError as exc:
            if exc.code != "audit_unavailable" or tries >= max_retries:
                raise
            log.warning("outbox %s: the audit store is unavailable; trying again", audit_id)
            raise task.retry(countdown=_backoff(source.mailer(), tries), exc=exc) from exc
        if status not in LOOK_AGAIN:
            return status
        limit = unseen_retries if status == NOT_FOUND else max_retries
        if tries >= limit:
            log.warning("outbox %s: still %s after %d retries; left to the sweep",
                        audit_id, status, tries)  # fmt: skip
            return status
        # Not committed yet, not due yet, or rescheduled after a transient failure.
        raise task.retry(countdown=_backoff(source.mailer(), tries))

    return deliver


def _status(source: _PerProcess, audit_id: str) -> str:
    """Deliver the row if it can be claimed; its status afterwards. A row not claimed (not
    due, leased by another worker, ended already, not committed yet) is read as it is."""
    if not isinstance(audit_id, str) or not audit_id:
        raise ConfigurationError(
            f"fluxmail.deliver takes one audit id (a string), not {shown(audit_id)}",
            code="invalid_option",
        )
    found = source.worker().deliver([audit_id]).get(audit_id)
    if found is not None:
        return str(found)
    try:
        return source.mailer().audit.get(audit_id).status
    except RecordNotFound:
        return NOT_FOUND


def _sweep_function(source: _PerProcess) -> Callable[[], dict[str, Any]]:
    def sweep() -> dict[str, Any]:
        """Deliver every due outbox row (a safety net for lost tasks); the run's report."""
        report = worker.Worker(source.mailer()).run(once=True)
        return _report_dict(report)

    return sweep


def _report_dict(report: Any) -> dict[str, Any]:
    to_dict = getattr(report, "to_dict", None)
    if callable(to_dict):
        return dict(to_dict())
    fields = getattr(report, "__dataclass_fields__", None) or {}
    return {name: getattr(report, name) for name in fields}


def dispatch(
    task: Any, audit_ids: str | Iterable[str], *, send_at: object = None, **options: Any
) -> list[Any]:
    """Queue one delivery task per audit id; their Celery ``AsyncResult``s, in order.

    Call it after the transaction that enqueued the rows has committed (Django's
    ``transaction.on_commit``, or right after ``conn.commit()``): a task that runs earlier
    finds no row and looks again a few times only. ``send_at`` (as given to ``enqueue``)
    holds the task until the row is due; ``options`` go to ``apply_async``."""
    ids = [audit_ids] if isinstance(audit_ids, str) else list(audit_ids)
    bad = [i for i in ids if not isinstance(i, str) or not i]
    if bad:
        raise ConfigurationError(
            f"dispatch() takes audit ids (strings from enqueue()), not {shown(bad[0])}",
            code="invalid_option",
        )
    if send_at is not None:
        due = enqueue.due_at(send_at, time.time())
        options["eta"] = datetime.fromtimestamp(due, timezone.utc)
    if not ids:
        return []
    with task.app.producer_or_acquire(options.pop("producer", None)) as producer:
        return [task.apply_async((i,), producer=producer, **options) for i in ids]
