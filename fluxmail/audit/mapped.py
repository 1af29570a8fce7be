"""Appending to a run's wire journal through a shared memory map: a mark is a copy, not a
system call (fluxmail.audit.runs).

A store into a ``MAP_SHARED`` page lands in the file's page cache at once, so it survives a
process kill as ``os.write``'s bytes do (a power loss is covered by neither). Space is
allocated with ``posix_fallocate`` before it is mapped: a store into a page the disk has no
room for would kill the process with SIGBUS. Where the file cannot be allocated or mapped,
the journal truncates what it allocated and goes on with one ``os.write`` per mark.

Readers see zeros after the last mark, and may see a mark a kill cut short: they trust only
the lines before the last newline that hold no NUL byte (``complete_lines``). A mark cut short
was never followed by its send.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from typing import Protocol

__all__ = ["CHUNK", "MappedTail", "complete_lines"]

CHUNK = 1 << 18  # bytes allocated and mapped at a time: ~9,000 marks of one id


class _File(Protocol):
    """What is needed of a ``fluxmail.audit.runs.RunFile``."""

    fd: int  # -1 once closed, or in a forked child
    path: str

    def write(self, data: bytes) -> None: ...


class MappedTail:
    """The end of a ``RunFile`` (opened read-write), appended to through a memory map."""

    __slots__ = ("_at", "_end", "_file", "_map", "_mapping")

    def __init__(self, file: _File) -> None:
        self._file = file
        self._map: mmap.mmap | None = None
        self._mapping = True  # False once allocating or mapping failed: os.write from then on
        self._at = self._end = os.fstat(file.fd).st_size

    def append(self, data: bytes) -> None:
        """Append ``data``; in the page cache when this returns."""
        end = self._at + len(data)
        if self._file.fd < 0 or not self._mapping or (end > self._end and not self._grow(end)):
            self._file.write(data)  # refuses a closed file (or a forked child's copy)
        else:
            assert self._map is not None
            self._map[self._at : end] = data
        self._at = end

    def close(self, *, keep: bool) -> None:
        """Unmap; ``keep``: the file stays for recovery, cut to what was appended."""
        if self._map is not None:
            self._map.close()
            self._map = None
        if keep and self._end > self._at and self._file.fd >= 0:
            with contextlib.suppress(OSError):  # readers skip the zeros anyway
                os.ftruncate(self._file.fd, self._at)

    def _grow(self, end: int) -> bool:
        size = max(self._end, end) + CHUNK
        fd = self._file.fd
        grown: mmap.mmap | None = None
        try:
            os.posix_fallocate(fd, self._end, size - self._end)
            grown = _map_unlocked(self._file.path, fd, size)
            grown.madvise(mmap.MADV_DONTFORK)  # a forked child never writes the parent's run
        except (OSError, ValueError, OverflowError, AttributeError):
            if grown is not None:
                grown.close()
            self._give_up(fd)
            return False
        if self._map is not None:
            self._map.close()
        self._map, self._end = grown, size
        return True

    def _give_up(self, fd: int) -> None:
        self._mapping = False
        if self._map is not None:
            self._map.close()
            self._map = None
        self._end = self._at
        try:
            os.ftruncate(fd, self._at)  # no zeros between the mapped marks and the written ones
        except OSError:
            # The zeros stay: a newline after them keeps the next mark a line of its own.
            self._file.write(b"\n")


def _map_unlocked(path: str, locked: int, size: int) -> mmap.mmap:
    """A shared map of the locked file through a descriptor of its own. ``mmap`` keeps a
    duplicate of the descriptor it maps, and a duplicate shares the ``flock``: a forked child
    would inherit it (whatever ``MADV_DONTFORK`` does to the pages) and keep the lock, so a
    dead run would look alive for as long as the child lives."""
    fd = os.open(path, os.O_RDWR)
    try:
        mine, theirs = os.fstat(fd), os.fstat(locked)
        if (mine.st_dev, mine.st_ino) != (theirs.st_dev, theirs.st_ino):
            raise OSError(f"{path} was replaced")  # never map another file: write instead
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)


def complete_lines(data: bytes) -> list[bytes]:
    """The marks of a journal's contents: whole lines only, none with a NUL in it."""
    whole = data[: data.rfind(b"\n") + 1]
    return [line for line in whole.split() if b"\0" not in line]
