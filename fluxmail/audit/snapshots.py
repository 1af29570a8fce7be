"""The audit folder: where it lives, and the per-message snapshot files inside it.

Layout (docs/audit.md)::

    <folder>/store.db                                    SQLite database (WAL)
    <folder>/messages/<yyyy-mm-dd>/<id>/message.eml       exact bytes sent (no Bcc header)
    <folder>/messages/<yyyy-mm-dd>/<id>/body.txt|html     the bodies that exist
    <folder>/messages/<yyyy-mm-dd>/<id>/attachments/<safe name>

Folders are created 0o700 and files 0o600. Files are written with os.open/os.write and not
fsync'ed: a process kill loses nothing written, a power loss may lose the newest snapshots.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import stat
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fluxmail.audit.records import OutboundRecord
from fluxmail.errors import AuditError

__all__ = [
    "DEFAULT_DIRNAME",
    "day_dir",
    "remove_snapshot",
    "resolve_directory",
    "safe_filename",
    "write_file",
    "write_folder",
    "write_snapshot",
]

DEFAULT_DIRNAME = ".fluxmail"
DB_NAME = "store.db"
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_warned: set[str] = set()
logger = logging.getLogger("fluxmail")


def resolve_directory(directory: Path | None, *, explicit: bool) -> Path:
    """The audit folder to use, created and proven writable.

    An explicit folder that cannot be written is an error; otherwise fall back to a private
    folder under the temp dir (read-only code directories, as in AWS Lambda) with one warning.
    """
    import tempfile

    folder = Path(directory) if directory is not None else Path.cwd() / DEFAULT_DIRNAME
    try:
        _prepare(folder)
        return folder
    except OSError as exc:
        if explicit:
            raise AuditError(
                f"the audit folder {folder} cannot be written ({exc.strerror or exc}); "
                "fix FLUXMAIL_AUDIT_DIR or its permissions (nothing was sent)",
                code="audit_unwritable",
            ) from exc
        reason = exc.strerror or str(exc)
    fallback = Path(tempfile.gettempdir()) / f"fluxmail-audit-{_uid()}"
    try:
        _prepare(fallback)
        _check_private(fallback)
    except OSError as exc:
        raise AuditError(
            f"neither the audit folder {folder} nor the fallback {fallback} can be written "
            f"({exc.strerror or exc}); set FLUXMAIL_AUDIT_DIR to a writable folder",
            code="audit_unwritable",
        ) from exc
    key = str(fallback)
    if key not in _warned:
        _warned.add(key)
        logger.warning(
            "audit folder %s cannot be written (%s); recording to %s instead "
            "(set FLUXMAIL_AUDIT_DIR to choose)",
            folder,
            reason,
            fallback,
        )
    return fallback


def _prepare(folder: Path) -> None:
    """Create the folder (0o700) and store.db (0o600); raises OSError when not writable."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Pre-create the database so SQLite (and its -wal/-shm files, which copy the database's
    # mode) never get the umask's default 0o644. Opening for write is the real writability test.
    fd = os.open(folder / DB_NAME, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)


def _check_private(folder: Path) -> None:
    """A shared temp dir: refuse a folder (or symlink) that another user planted for us."""
    info = os.lstat(folder)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise OSError(0, f"{folder} is not a plain directory")
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise OSError(0, f"{folder} belongs to another user")


def _uid() -> str:
    return str(os.getuid()) if hasattr(os, "getuid") else "user"


def day_dir(created: float) -> str:
    """The day folder of messages created at ``created``, relative to the audit folder."""
    return time.strftime("messages/%Y-%m-%d", time.gmtime(created))


def safe_filename(name: str, taken: set[str]) -> str:
    """A file name that cannot escape the folder or collide with an earlier attachment."""
    base = _UNSAFE.sub("_", os.path.basename(name.replace("\\", "/"))).lstrip(".")[:100]
    base = base or "attachment"
    candidate, n = base, 1
    while candidate.lower() in taken:
        n += 1
        stem, dot, ext = base.rpartition(".")
        candidate = f"{stem}-{n}.{ext}" if dot and stem else f"{base}-{n}"
    taken.add(candidate.lower())
    return candidate


def write_file(path: str | Path, data: bytes) -> None:
    """Write a private (0o600) file without buffering layers or fsync."""
    fd = os.open(path, _FLAGS, 0o600)
    try:
        written = os.write(fd, data)
        if written < len(data):  # rare (a signal, a full disk): write the rest
            view = memoryview(data)[written:]
            while view:
                view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def write_snapshot(root: str | Path, rel: str, record: OutboundRecord) -> list[dict[str, Any]]:
    """Write message.eml, the bodies and the attachment copies; returns the manifest."""
    folder = write_folder(root, rel, record.eml, record.text, record.html)
    if not record.attachments:
        return []
    return write_attachments(Path(folder), record.attachments)


def write_folder(
    root: str | Path,
    rel: str,
    eml: bytes,
    text: str | None,
    html: str | None,
    files: Sequence[tuple[str, bytes]] = (),
) -> str:
    """Create the message folder and write message.eml, the bodies and ``files`` (already safe
    names under attachments/); returns the folder. Shared by claims and deferred snapshots."""
    # Plain strings joined with "/" (valid on Windows too): pathlib's and even os.path.join's
    # work shows at bulk rates, and none of these parts can be absolute or empty.
    folder = f"{os.fspath(root)}/{rel}"
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass  # a retry rewrites the files of the same record
    except FileNotFoundError:
        # First message of the day: create messages/ and the day folder private too
        # (makedirs would give them the umask's mode).
        for part in (os.path.join(root, "messages"), os.path.dirname(folder), folder):
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o700)
    write_file(f"{folder}/message.eml", eml)
    if text is not None:
        write_file(f"{folder}/body.txt", text.encode("utf-8"))
    if html is not None:
        write_file(f"{folder}/body.html", html.encode("utf-8"))
    if files:
        with contextlib.suppress(FileExistsError):
            os.mkdir(f"{folder}/attachments", 0o700)
        for stored, content in files:
            write_file(f"{folder}/attachments/{stored}", content)
    return folder


def write_attachments(
    folder: Path | None, attachments: tuple[tuple[str, str, bytes], ...]
) -> list[dict[str, Any]]:
    """Copy attachments under ``folder/attachments`` (None: only build the manifest)."""
    manifest: list[dict[str, Any]] = []
    if not attachments:
        return manifest
    if folder is not None:
        (folder / "attachments").mkdir(mode=0o700, exist_ok=True)
    taken: set[str] = set()
    for filename, mimetype, content in attachments:
        stored = safe_filename(filename, taken)
        if folder is not None:
            write_file(folder / "attachments" / stored, content)
        manifest.append(
            {
                "filename": filename,
                "stored_as": stored,
                "mimetype": mimetype,
                "size": len(content),
                "sha256": hashlib.sha256(content).hexdigest(),
            }
        )
    return manifest


def remove_snapshot(root: Path, rel: str) -> None:
    """Delete one message folder, and its day folder once empty."""
    import shutil

    folder = root / rel
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):  # other messages of that day remain
        folder.parent.rmdir()
