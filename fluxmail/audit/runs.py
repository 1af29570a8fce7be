"""Bulk-run leases and "handed to the wire" journals (the SQLite store's side of them).

A bulk run claims up to a batch of records ahead of sending them. So that a crash writes off
only what may really have reached a server, a run holds a lease and journals each record's id
*before* its bytes are handed to a connection. For the SQLite store both are one file,
``<folder>/runs/<token>.wire``: ``flock(LOCK_EX)`` held for the life of the run (the kernel
drops it when the process dies, however it dies) and the ids appended through a shared memory
map (fluxmail.audit.mapped: in the kernel's page cache at once, so it survives a process kill;
a power loss is not covered).

Whoever opens the store later and can take the lock knows the owner is dead: the run's
records still ``sending`` and in the journal become ``unknown`` (never resent), the others
``failed`` with every recipient ``deferred`` (the same idempotency key sends them again).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fluxmail.audit.mapped import MappedTail, complete_lines
from fluxmail.errors import AuditError

__all__ = [
    "RUNS_DIR", "DeadRun", "RunFile", "WireJournal", "create_locked", "dead_run", "dead_runs",
    "lock_if_dead", "unwritable",
]  # fmt: skip

RUNS_DIR = "runs"
_WIRE = ".wire"
_NEW = ".new"  # a journal being created: locked before it gets its real name
_IOV_MAX = os.sysconf("SC_IOV_MAX")  # buffers one writev takes (1024 on Linux and the BSDs)


class RunFile:
    """A run's file and the ``flock`` on it, held by this process until ``close``.

    A forked child closes its copy of the descriptor at once (the lock lives on in the parent's):
    a child that outlives its parent must not keep the lock, or recovery would take the dead
    run for alive, and it never writes to or removes the parent's file."""

    __slots__ = ("__weakref__", "fd", "path")

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd = fd  # -1 once closed, or in a forked child
        _HELD.add(self)

    def write(self, data: bytes) -> None:
        """Append all of ``data`` (in the page cache when it returns: survives a process kill)."""
        self._check_open()
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError as exc:
            raise unwritable(os.path.dirname(self.path), exc) from exc

    def write_parts(self, parts: Sequence[bytes]) -> None:
        """Append the parts in order, as ``write(b"".join(parts))`` would, without the copy:
        a claim batch's snapshots are a few hundred KB, a buffer that glibc's allocator maps
        and unmaps (or grows and trims its heap for) on every batch."""
        self._check_open()
        try:
            for start in range(0, len(parts), _IOV_MAX):
                chunk = parts[start : start + _IOV_MAX]
                done = os.writev(self.fd, chunk)
                if done < sum(map(len, chunk)):  # short (a signal, a nearly full disk)
                    self._write_rest(chunk, done)
        except OSError as exc:
            raise unwritable(os.path.dirname(self.path), exc) from exc

    def _write_rest(self, chunk: Sequence[bytes], done: int) -> None:
        for part in chunk:
            if done >= len(part):
                done -= len(part)
                continue
            view = memoryview(part)[done:]
            done = 0
            while view:
                view = view[os.write(self.fd, view) :]

    def read(self) -> bytes:
        self._check_open()
        try:
            return os.pread(self.fd, os.fstat(self.fd).st_size, 0)
        except OSError as exc:
            raise unwritable(os.path.dirname(self.path), exc) from exc

    def close(self, *, remove: bool) -> bool:
        """Drop the lock; ``remove``: delete the file first. False, doing nothing, when it was
        closed already or this is a forked child."""
        fd, self.fd = self.fd, -1
        if fd < 0:
            return False
        try:
            if remove:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
        finally:
            os.close(fd)
        return True

    def _check_open(self) -> None:
        if self.fd < 0:
            raise AuditError(
                f"the bulk run file {self.path} is closed, or belongs to the process that started "
                "the run (this is a forked child); nothing was sent",
                code="audit_unwritable",
            )

    def _forked(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


_HELD: weakref.WeakSet[RunFile] = weakref.WeakSet()


def _close_in_child() -> None:
    for held in list(_HELD):
        held._forked()


os.register_at_fork(after_in_child=_close_in_child)


class WireJournal:
    """One live run's lease and journal; ``mark`` before the bytes go out, ``close`` at the end."""

    coalesce = False  # a mark is a copy into the mapped journal: nothing to gather

    def __init__(
        self, root: str, token: str, *, ended: Callable[[str], None] | None = None
    ) -> None:
        """``ended``: called with the token when the run closes its lease."""
        self.token = token
        self._ended = ended
        self._file = create_locked(root, token, _WIRE, _NEW, os.O_RDWR)
        self._tail = MappedTail(self._file)

    def mark(self, audit_ids: Sequence[str]) -> frozenset[str]:
        """Journal these ids as handed to the wire; none is ever refused here (the lease
        cannot be lost while the process lives)."""
        self._tail.append(("\n".join(audit_ids) + "\n").encode("ascii"))
        return frozenset()

    def close(self, *, resolved: bool) -> None:
        """End the lease; the journal is removed once every record of the run is resolved,
        else kept for the next opener to recover from."""
        self._tail.close(keep=not resolved)
        if self._file.close(remove=resolved) and self._ended is not None:
            self._ended(self.token)  # once, and only in the run's own process


@dataclass
class DeadRun:
    """The journal of a run whose process died, locked by us until ``release``."""

    token: str
    on_wire: frozenset[str]
    file: RunFile

    def release(self, *, resolved: bool) -> None:
        self.file.close(remove=resolved)


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


def create_locked(root: str, token: str, suffix: str, new_suffix: str, mode: int) -> RunFile:
    """A run's new file ``runs/<token><suffix>``, locked (``flock``) for as long as this
    process holds the descriptor: created under ``new_suffix`` and renamed once locked, so
    recovery never sees the name unlocked. ``mode``: ``os.O_WRONLY`` or ``os.O_RDWR``."""
    folder = os.path.join(root, RUNS_DIR)
    path = os.path.join(folder, token + suffix)
    new = os.path.join(folder, token + new_suffix)
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        fd = os.open(new, mode | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
    except OSError as exc:
        raise unwritable(folder, exc) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(new, path)
    except OSError as exc:
        with contextlib.suppress(OSError):  # never named for recovery: nothing to keep
            os.unlink(new)
        os.close(fd)
        raise unwritable(folder, exc) from exc
    return RunFile(path, fd)


def lock_if_dead(path: str, mode: int) -> RunFile | None:
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
    return RunFile(path, fd)


def _take(path: str, token: str) -> DeadRun | None:
    file = lock_if_dead(path, os.O_RDONLY)
    if file is None:
        return None  # its run is alive
    try:
        ids = frozenset(line.decode("ascii") for line in complete_lines(file.read()))
    except AuditError:
        file.close(remove=False)
        raise
    except UnicodeDecodeError as exc:
        file.close(remove=False)
        raise unwritable(os.path.dirname(path), exc) from exc
    return DeadRun(token, ids, file)


def unwritable(folder: str, exc: BaseException) -> AuditError:
    return AuditError(
        f"the audit folder {folder} cannot be written ({exc}); nothing was sent",
        code="audit_unwritable",
    )
