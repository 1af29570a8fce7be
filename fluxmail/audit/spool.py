"""Snapshot spools: a bulk run's deferred snapshots, appended to one file per run (SQLite store).

A bulk claim's snapshot (message bytes, bodies, attachment contents) must be durable before
its claim commits, and its folder is written later (fluxmail.audit.deferred). In
``pending_snapshots`` each snapshot cost the sending loop ~6 µs of B-tree pages and WAL
frames for ~4 KB; here a claim batch's snapshots are one ``os.write``. The durability is the
WAL's at ``synchronous=NORMAL``: in the kernel's page cache at once, so a process kill loses
nothing; a power loss may lose the newest (as it may lose the newest commits).

``<folder>/runs/<token>.snap`` is locked (``flock``) by the process that writes it until its
folders are written; whoever can take the lock later knows that process died and writes them.
A frame is written for a record whose claim may still roll back: a frame is only ever written
to its folder when the record exists and still belongs to the frame's run (``run_id``), so a
rolled-back claim, a pruned record or a later run's retry is never overwritten by it.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import NamedTuple

from fluxmail.audit.records import OutboundRecord
from fluxmail.audit.runs import RUNS_DIR, RunFile, create_locked, lock_if_dead, unwritable

__all__ = [
    "SPOOL_SUFFIX", "Spool", "SpoolFrame", "dead_spools", "frame", "frame_parts", "read_frames",
    "spooled_eml",
]  # fmt: skip

SPOOL_SUFFIX = ".snap"
_NEW = ".snap-new"  # being created: locked before it gets the name recovery looks for
_MAGIC = b"fluxmail-spool 1\n"
# Lengths of: id, folder, eml, text, html, attachment contents (-1: no text / html).
_HEAD = struct.Struct("<IIIiiI")


class SpoolFrame(NamedTuple):
    audit_id: str
    folder: str
    eml: bytes
    text: str | None
    html: str | None
    files: bytes  # attachment contents concatenated in manifest order (the sizes split them)


def frame(audit_id: str, folder: str, record: OutboundRecord) -> bytes:
    """One record's snapshot as a frame."""
    return b"".join(frame_parts(audit_id, folder, record))


def frame_parts(audit_id: str, folder: str, record: OutboundRecord) -> list[bytes]:
    """The same frame in its parts, for ``Spool.append`` to write without copying them."""
    text = record.text.encode("utf-8") if record.text is not None else b""
    html = record.html.encode("utf-8") if record.html is not None else b""
    files = b"".join([content for _, _, content in record.attachments])
    key, rel = audit_id.encode("ascii"), folder.encode("ascii")
    head = _HEAD.pack(
        len(key), len(rel), len(record.eml),
        -1 if record.text is None else len(text), -1 if record.html is None else len(html),
        len(files),
    )  # fmt: skip
    return [head, key, rel, record.eml, text, html, files]


def read_frames(data: bytes, at: int = 0) -> Iterator[tuple[SpoolFrame, int]]:
    """The complete frames of a spool's contents from offset ``at``, each with the offset
    after it (a frame cut short by a crash, or being written, ends them)."""
    if not data.startswith(_MAGIC):
        return
    view, at, end = memoryview(data), max(at, len(_MAGIC)), len(data)
    while at + _HEAD.size <= end:
        sizes = _HEAD.unpack_from(view, at)
        start = at + _HEAD.size
        stop = start + sum(max(size, 0) for size in sizes)
        if stop > end:
            return
        cuts = []
        for size in sizes:
            cuts.append(None if size < 0 else bytes(view[start : start + size]))
            start += max(size, 0)
        key, rel, eml, text, html, files = cuts
        assert key is not None and rel is not None and eml is not None and files is not None
        found = SpoolFrame(
            key.decode("ascii"), rel.decode("ascii"), eml,
            None if text is None else text.decode("utf-8"),
            None if html is None else html.decode("utf-8"), files,
        )  # fmt: skip
        yield found, stop
        at = stop


def spooled_eml(root: str, token: str, audit_id: str) -> bytes | None:
    """A record's bytes from its run's spool, read without its lock (a reader in another
    process while the run sends); None when not there."""
    try:
        with open(os.path.join(root, RUNS_DIR, token + SPOOL_SUFFIX), "rb") as spool:
            data = spool.read()
    except OSError:
        return None
    found = None
    for each, _ in read_frames(data):
        if each.audit_id == audit_id:
            found = each.eml  # the last frame of an id is its newest
    return found


class Spool:
    """One run's spool, locked by this process from creation until ``remove`` (a forked child
    gives up its copy of the lock: :class:`~fluxmail.audit.runs.RunFile`)."""

    def __init__(self, file: RunFile, token: str) -> None:
        self.token = token
        self.written = 0  # frames before this offset have their folders (a read asked early)
        self._file = file

    @property
    def path(self) -> str:
        return self._file.path

    @classmethod
    def create(cls, root: str, token: str) -> Spool:
        spool = cls(create_locked(root, token, SPOOL_SUFFIX, _NEW, os.O_RDWR), token)
        try:
            spool.append([_MAGIC])  # a spool killed before this holds no frame: read as empty
        except BaseException:
            spool.remove()  # nothing in it yet: neither the file nor its lock stays
            raise
        return spool

    def append(self, parts: list[bytes]) -> None:
        """Durable against a process kill when it returns: frames (or their parts) in one
        system call per IOV_MAX of them, never joined into one buffer first."""
        self._file.write_parts(parts)

    def contents(self) -> bytes:
        return self._file.read()

    def remove(self) -> None:
        """Every frame is written to its folder: delete the spool, then drop the lock."""
        self._file.close(remove=True)

    def release(self) -> None:
        """Drop the lock and keep the file (for the next opener), e.g. after a failed write."""
        self._file.close(remove=False)


def dead_spools(root: str) -> list[Spool]:
    """The spools whose writing process died, locked now by us; half-created ones removed."""
    folder = os.path.join(root, RUNS_DIR)
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise unwritable(folder, exc) from exc
    found = []
    for name in names:
        token, ext = os.path.splitext(name)
        if ext not in (SPOOL_SUFFIX, _NEW):
            continue
        path = os.path.join(folder, name)
        file = lock_if_dead(path, os.O_RDWR)
        if file is None:
            continue  # its run (or the writing of its folders) is alive, or it is gone
        spool = Spool(file, token)
        if ext == _NEW:  # died before its first frame: nothing in it
            spool.remove()
        else:
            found.append(spool)
    return found
