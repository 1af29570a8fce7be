"""``fluxmail worker``: deliver the outbox until SIGTERM / SIGINT (or, ``--once``, until
nothing is due), then print what it did (docs/outbox.md)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from fluxmail.cli._common import JsonFlag, build_mailer, json_errors, output
from fluxmail.worker import Worker, WorkerReport

EPILOG = (
    "Examples:  fluxmail worker  |  fluxmail worker --once  (cron, a scheduled job)  |  "
    "fluxmail worker --concurrency 8 --grace 25"
)


def worker(
    once: Annotated[
        bool, typer.Option("--once", help="Deliver what is due now, then exit.")
    ] = False,
    concurrency: Annotated[
        int, typer.Option(min=1, max=256, help="Connections (lanes) used at once.")
    ] = 4,
    batch: Annotated[int, typer.Option(min=1, max=10_000, help="Rows claimed at a time.")] = 64,
    grace: Annotated[
        float,
        typer.Option(min=0.1, help="Seconds in-flight messages get to finish after SIGTERM."),
    ] = 25.0,
    json_output: JsonFlag = False,
) -> None:
    """Deliver queued messages (enqueue()) from the audit store's outbox."""
    with json_errors(json_output):
        mailer = build_mailer()
        try:
            runner = Worker(mailer, concurrency=concurrency, batch=batch, grace=grace)
            with _logging(), _signals(runner):
                report = runner.run(once=once)
        finally:
            mailer.close()
    _done(report, json_output)


@contextmanager
def _signals(runner: Worker) -> Iterator[None]:
    """SIGTERM (Kubernetes, systemd) and SIGINT (Ctrl-C) stop the worker cleanly."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread (tests run it in one)
        return

    def handler(signum: int, frame: Any) -> None:
        runner.stop()

    saved = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in saved.items():
            signal.signal(sig, old)


@contextmanager
def _logging() -> Iterator[None]:
    """What the worker claims and how each message ends, on stderr (ids, statuses, codes)."""
    log = logging.getLogger("fluxmail.worker")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    level = log.level
    log.addHandler(handler)
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def _done(report: WorkerReport, json_output: bool) -> None:
    counts = report.to_dict()
    if json_output:
        output().json({"ok": True, **counts})
        return
    output().print("worker stopped: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


def register(app: typer.Typer) -> None:
    app.command("worker", epilog=EPILOG)(worker)
