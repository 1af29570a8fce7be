"""Bulk-run leases and "handed to the wire" journals (the SQLite store's side of them).

A bulk run claims up to a batch of records ahead of sending them. So that a crash writes off
only what may really have reached a server, a run holds a lease and journals each record's id
*before* its bytes are handed to a connection. For the SQLite store both are one file,
``<folder>/runs/<token>.wire``: ``flock(LOCK_EX)`` held for the life of the run (the kernel
drops it when the process dies, however it dies) and the ids appended with ``os.write`` (in the
kernel's page cache at once: it survives a process kill; a power loss is not covered).

Whoever opens the store later and can take the lock knows the owner is dead: the run's
records still ``sending`` and in the journal become ``unknown`` (never resent), the others
``failed`` with every recipient ``deferred`` (the same idempotency key sends them again).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fluxmail.errors import AuditError

__all__ = [
    "RUNS_DIR", "DeadRun", "WireJournal", "create_locked", "dead_run", "dead_runs",
    "lock_if_dead", "unwritable", "write_all",
]  # fmt: skip

RUNS_DIR = "runs"
_WIRE = ".wire"
_NEW = ".new"  # a journal being created: locked before it gets its real name


class WireJournal:
    """One live run's lease and journal; ``mark`` before the bytes go out, ``close`` at the end."""

    coalesce = False  # one write() per mark costs less than gathering them

    def __init__(
        self, root: str, token: str, *, ended: Callable[[str], None] | None = None
    ) -> None:
        """``ended``: called with the token when the run closes its lease."""
        self.token = token
        self._ended = ended
        self._path, self._fd = create_locked(root, token, _WIRE, _NEW, os.O_WRONLY)

    def mark(self, audit_ids: Sequence[str]) -> frozenset[str]:
        """Journal these ids as handed to the wire; none is ever refused here (the lease
        cannot be lost while the process lives)."""
        write_all(self._fd, ("\n".join(audit_ids) + "\n").encode("ascii"), self._path)
        return frozenset()

    def close(self, *, resolved: bool) -> None:
        """End the lease; the journal is removed once every record of the run is resolved,
        else kept for the next opener to recover from."""
        if resolved:
            with contextlib.suppress(OSError):
                os.unlink(self._path)
        os.close(self._fd)
        if self._ended is not None:
            self._ended(self.token)


@dataclass
class DeadRun:
    """The journal of a run whose process died, locked by us until ``release``."""

    token: str
    on_wire: frozenset[str]
    path: str
    fd: int

    def release(self, *, resolved: bool) -> None:
        if resolved:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        os.close(self.fd)


def dead_run(root: str, token: str) -> DeadRun | None:
    """The run's journal if its owner is dead (its lock can be taken), else None."""
    return _take(os.path.join(root, RUNS_DIR, token + _WIRE), token)


def dead_runs(root: str) -> list[DeadRun]:
    """Every journal in the folder whose owner died; half-created ones are removed."""
    folder = os.path.join(root, RUNS_DIR)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise unwritable(folder, exc) from exc
    found = []
    for name in sorted(names):
        token, ext = os.path.splitext(name)
        if ext not in (_WIRE, _NEW):
            continue
        dead = _take(os.path.join(folder, name), token)
        if dead is not None and ext == _NEW:  # died before its first claim: nothing to do
            dead.release(resolved=True)
        elif dead is not None:
            found.append(dead)
    return found


def create_locked(
    root: str, token: str, suffix: str, new_suffix: str, mode: int
) -> tuple[str, int]:
    """A run's new file ``runs/<token><suffix>``, locked (``flock``) for as long as this
    process holds the descriptor: created under ``new_suffix`` and renamed once locked, so
    recovery never sees the name unlocked. ``mode``: ``os.O_WRONLY`` or ``os.O_RDWR``."""
    folder = os.path.join(root, RUNS_DIR)
    path = os.path.join(folder, token + suffix)
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        new = os.path.join(folder, token + new_suffix)
        fd = os.open(new, mode | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(new, path)
    except OSError as exc:
        raise unwritable(folder, exc) from exc
    return path, fd


def lock_if_dead(path: str, mode: int) -> int | None:
    """The file opened and locked if the process that held its lock died; None when it is
    alive (or the file is gone)."""
    try:
        fd = os.open(path, mode)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise unwritable(os.path.dirname(path), exc) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def write_all(fd: int, data: bytes, path: str) -> None:
    """Append all of ``data`` (in the page cache when it returns: survives a process kill)."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:
        raise unwritable(os.path.dirname(path), exc) from exc


def _take(path: str, token: str) -> DeadRun | None:
    fd = lock_if_dead(path, os.O_RDONLY)
    if fd is None:
        return None  # its run is alive
    try:
        with os.fdopen(os.dup(fd), "rb") as journal:
            ids = frozenset(line.decode("ascii") for line in journal.read().split())
    except (OSError, UnicodeDecodeError) as exc:
        os.close(fd)
        raise unwritable(os.path.dirname(path), exc) from exc
    return DeadRun(token, ids, path, fd)


def unwritable(folder: str, exc: BaseException) -> AuditError:
    return AuditError(
        f"the audit folder {folder} cannot be written ({exc}); nothing was sent",
        code="audit_unwritable",
    )
