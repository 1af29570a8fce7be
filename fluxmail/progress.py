"""A rich progress bar for bulk runs, drawn only on a terminal (rich imported only here)."""

from __future__ import annotations

import sys
from typing import Any, Protocol


class ProgressDisplay(Protocol):
    def advance(self, ok: bool) -> None: ...
    def close(self) -> None: ...


class _RichBar:
    def __init__(self, total: int | None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._failed = 0
        self._progress = Progress(
            TextColumn("[bold]sending"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:.0f} msg/s"),
            TextColumn("[red]{task.fields[failed]} failed"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._task: Any = self._progress.add_task("send", total=total, failed=0, rate=0.0)
        self._progress.start()

    def advance(self, ok: bool) -> None:
        self._failed += not ok
        task = self._progress.tasks[0]
        rate = task.completed / task.elapsed if task.elapsed else 0.0
        self._progress.update(self._task, advance=1, failed=self._failed, rate=rate)

    def close(self) -> None:
        self._progress.stop()


def make_display(wanted: bool | None, total: int | None) -> ProgressDisplay | None:
    """A bar when asked for (or by default) and stderr is a terminal; otherwise nothing."""
    if wanted is False or not sys.stderr.isatty():
        return None
    return _RichBar(total)
