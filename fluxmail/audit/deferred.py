"""Deferred snapshots (bulk runs): the snapshot rides in the claim's commit, the folder follows.

``claim_many(records, defer_snapshots=True)`` commits each record together with its snapshot
(message bytes, bodies, attachment contents) in ``pending_snapshots``, in the same transaction,
and writes no files. A :class:`Materializer` then writes the usual folders (same layout, modes
and manifest) and deletes the pending rows: in a background thread while the run goes on, and
in the caller's thread when a run ends (``materialize_pending``) or a store is opened.

Why: a bulk run's event loop is CPU-bound and holds the GIL, so a worker thread that must make
a mkdir and several writes per message before each claim commits is starved (every syscall
gives the GIL up and then waits for it). Here nothing waits for the files: the database holds
the snapshot from the commit on, so a process killed before the folders exist loses nothing.

A bulk run's own new records go to its spool file instead (fluxmail.audit.spool: one write per
claim batch, cheaper than rows); the Materializer writes those folders too, once the run ends.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

from fluxmail.audit.records import OutboundRecord
from fluxmail.audit.snapshots import write_folder
from fluxmail.audit.spool import Spool, read_frames
from fluxmail.errors import AuditError

__all__ = [
    "BATCH",
    "INSERT_PENDING",
    "PENDING_INTO",
    "PENDING_SCHEMA",
    "Materializer",
    "pending_row",
]

# Schema migration 3 (SQLite). ``seq`` (AUTOINCREMENT: never reused) names one version of a
# record's snapshot, so a pass deletes only what it wrote, never a newer retry's snapshot.
PENDING_SCHEMA = (
    """CREATE TABLE pending_snapshots (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        eml BLOB NOT NULL,
        body_text TEXT,
        body_html TEXT,
        files BLOB
    )""",
)
_COLUMNS = "pending_snapshots (id, eml, body_text, body_html, files)"  # pending_row()'s
# A retry's snapshot replaces any still pending for its record.
INSERT_PENDING = f"INSERT OR REPLACE INTO {_COLUMNS} VALUES (?,?,?,?,?)"
# For sqlite_inserts.insert_rows, of records with none pending (claim_batch deletes a retried
# record's first): a plain INSERT skips the REPLACE's conflict handling.
PENDING_INTO = f"INSERT INTO {_COLUMNS}"
_SELECT = (
    "SELECT p.seq, m.folder, m.attachments, p.eml, p.body_text, p.body_html, p.files "
    "FROM pending_snapshots p LEFT JOIN messages m ON m.id = p.id "
    # An outbox row waiting or under a worker's lease keeps its snapshot here: the worker
    # reads its bytes from the database, never from a file another process may be writing.
    "WHERE NOT COALESCE(m.status = 'pending' OR (m.status = 'sending' "
    "AND m.lease_owner IS NOT NULL), 0)"
)
BATCH = 64  # snapshots per pass: one read and one delete transaction each
# The folder and manifest of a spool's records that still belong to its run (not rolled back,
# pruned or claimed again by a later run since).
_SPOOLED = "SELECT id, folder, attachments FROM messages WHERE run_id=? AND id IN ({marks})"

Reading = Callable[[], AbstractContextManager[Any]]  # a cursor with rows as dicts
Writing = Callable[[], AbstractContextManager[Any]]  # a connection inside BEGIN IMMEDIATE
logger = logging.getLogger("fluxmail")


def _lower_priority() -> None:
    """Folders are a copy of what the database holds: let sending have the CPU first.

    Linux applies a nice value per thread (``setpriority`` on the thread id); elsewhere this
    does nothing.
    """
    get_id = getattr(threading, "get_native_id", None)
    if get_id is not None and hasattr(os, "setpriority"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, get_id(), 10)


def pending_row(audit_id: str, record: OutboundRecord) -> tuple[Any, ...]:
    """INSERT_PENDING's parameters: attachment contents concatenated in manifest order (the
    manifest's sizes split them again)."""
    attached = record.attachments
    files = b"".join([content for _, _, content in attached]) or None if attached else None
    return (audit_id, record.eml, record.text, record.html, files)


def _files(manifest_json: str, blob: bytes | None) -> Iterator[tuple[str, bytes]]:
    """(stored name, content) of each attachment, cut from the concatenated blob."""
    if not blob:
        return
    view, offset = memoryview(blob), 0
    for entry in json.loads(manifest_json):
        size = int(entry["size"])
        yield entry["stored_as"], bytes(view[offset : offset + size])
        offset += size


class Materializer:
    """Writes pending snapshots into their folders; one pass at a time per process."""

    def __init__(self, root: str, reading: Reading, writing: Writing) -> None:
        self._root = root
        self._reading = reading
        self._writing = writing
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._failing = False  # an error was logged; log again only after a success
        self._held = 0  # bulk runs in progress: the writer waits so sending keeps the CPU
        self._owed = False  # snapshots claimed while held: wake the writer when the runs end
        self._holding = threading.Lock()  # _held and _owed, changed from any thread
        self._live: dict[str, Spool] = {}  # spools of runs still sending (token -> spool)
        self._ended: list[Spool] = []  # spools of ended (or dead) runs, folders to write

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """While a bulk run sends, keep the writer idle; it catches up when the run ends."""
        with self._holding:
            self._held += 1
        try:
            yield
        finally:
            with self._holding:
                self._held -= 1
                owed = self._held == 0 and (self._owed or self._thread is not None)
                if owed:
                    self._owed = False
            if owed:
                self.wake()

    def wake(self) -> None:
        """New pending snapshots: let the background writer (started on first use) run.

        While a run holds the writer, only note it: setting the event woke the thread for
        nothing on every claim, and each wake-up took the GIL from the sending loop."""
        self._this_process()
        with self._holding:
            if self._held:
                self._owed = True
                return
        if self._thread is None or not self._thread.is_alive():
            self._closed = False
            self._thread = threading.Thread(
                target=self._run, name="fluxmail-snapshots", daemon=True
            )
            self._thread.start()
        self._wake.set()

    def spool(self, root: str, token: str) -> Spool:
        """The spool of a run of this process, created with its first claim."""
        self._this_process()
        found = self._live.get(token)
        if found is None:
            found = self._live[token] = Spool.create(root, token)
        return found

    def end_run(self, token: str) -> None:
        """A run ended: its spool (if it has one) is written in the background from now."""
        self._this_process()
        spool = self._live.pop(token, None)
        if spool is not None:
            with self._lock:
                self._ended.append(spool)
            self.wake()

    def adopt(self, spools: Sequence[Spool]) -> None:
        """Spools of dead processes (locked by us now): written with the next drain."""
        with self._lock:
            self._ended.extend(spools)

    @property
    def spooling(self) -> bool:
        """Whether this process holds a spool (a run's folders not all written yet)."""
        return bool(self._live or self._ended) and self._pid == os.getpid()

    def drain_spools(self) -> int:
        """Write the folders of every spool of this process now, live runs' too (a read
        asked for them; a live spool stays, and is written again when its run ends)."""
        self._this_process()
        with self._lock:
            return self._write_ended() + sum(self._write(s) for s in list(self._live.values()))

    def drain(self, ids: Sequence[str] | None = None) -> int:
        """Write every pending snapshot (or those of ``ids``) now, in this thread; how many.
        Without ``ids``, the ended runs' spools too."""
        self._this_process()
        total = 0
        if ids is None:
            with self._lock:
                total += self._write_ended()
        while True:
            with self._lock:  # waits for the background writer's current pass, if any
                done = self._pass(ids)
            total += done
            if done == 0 or ids is not None:
                return total

    def stop(self) -> None:
        """Stop the background writer (after its current pass); pending rows stay pending."""
        thread, self._thread = self._thread, None
        self._closed = True
        self._wake.set()
        mine = thread is not None and self._pid == os.getpid()
        if mine and thread is not threading.current_thread():
            assert thread is not None
            thread.join(timeout=30)
        if self._pid == os.getpid():  # unwritten spools stay on disk for the next opener
            for spool in [*self._live.values(), *self._ended]:
                spool.release()
            self._live, self._ended = {}, []

    def _this_process(self) -> None:
        """After a fork the parent's thread and lock state do not apply: start afresh."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._lock = threading.Lock()
            self._holding = threading.Lock()
            self._wake = threading.Event()
            self._thread = None
            self._live, self._ended = {}, []  # the parent's: locked and written by the parent

    def _run(self) -> None:
        _lower_priority()
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._closed:
                return
            if self._held:
                continue  # woken again when the last run ends
            try:
                while not self._closed and not self._held:
                    with self._lock:
                        if self._write_ended() + self._pass(None) == 0:
                            break
                self._failing = False
            except AuditError as exc:  # kept pending: retried on the next wake, drain or open
                if not self._failing:
                    logger.error("audit snapshots are waiting in the database: %s", exc)
                self._failing = True

    def _write_ended(self) -> int:
        """Write and remove the ended spools (under ``_lock``); a failing one stays listed."""
        total = 0
        while self._ended:
            spool = self._ended[0]
            total += self._write(spool)
            self._ended.pop(0)
            spool.remove()
        return total

    def _write(self, spool: Spool) -> int:
        """Write the folders of a spool's frames whose records are still its run's."""
        found = list(read_frames(spool.contents(), spool.written))
        frames = [each for each, _ in found]
        written = 0
        for start in range(0, len(frames), 500):  # SQLite's bound-parameter limit may be 999
            chunk = frames[start : start + 500]
            sql = _SPOOLED.format(marks=",".join("?" * len(chunk)))
            with self._reading() as cursor:
                rows = {
                    row["id"]: row
                    for row in cursor.execute(sql, [spool.token, *(f.audit_id for f in chunk)])
                }
            for each in chunk:
                row = rows.get(each.audit_id)
                if row is None:
                    continue
                files = list(_files(row["attachments"], each.files))
                self._write_folder(row["folder"], each.eml, each.text, each.html, files)
                written += 1
        if found:
            spool.written = found[-1][1]
        return written

    def _write_folder(
        self,
        rel: str,
        eml: bytes,
        text: str | None,
        html: str | None,
        files: list[tuple[str, bytes]],
    ) -> None:
        try:
            write_folder(self._root, rel, eml, text, html, files)
        except OSError as exc:
            raise AuditError(
                f"a snapshot folder in {self._root} cannot be written ({exc.strerror or exc})",
                code="audit_unwritable",
            ) from exc

    def _pass(self, ids: Sequence[str] | None) -> int:
        """Read up to BATCH pending snapshots, write their folders, delete what was written."""
        args: list[Any]
        if ids is None:
            sql, args = f"{_SELECT} ORDER BY p.seq LIMIT ?", [BATCH]
        else:
            sql, args = f"{_SELECT} AND p.id IN ({','.join('?' * len(ids))})", list(ids)
        with self._reading() as cursor:
            rows = cursor.execute(sql, args).fetchall()
        if not rows:
            return 0
        for row in rows:
            if row["folder"] is None:  # the record was pruned meanwhile: drop its snapshot
                continue
            files = list(_files(row["attachments"], row["files"]))
            self._write_folder(row["folder"], row["eml"], row["body_text"], row["body_html"], files)
        with self._writing() as conn:
            done = [(row["seq"],) for row in rows]
            conn.executemany("DELETE FROM pending_snapshots WHERE seq=?", done)
        return len(rows)
