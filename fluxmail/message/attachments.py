"""Attachments: the frozen :class:`Attachment` and the checks that make one safe to send.

A filename is one path component, a MIME type is ``type/subtype`` tokens, files are read only
when regular (never a FIFO or a device), and every input form ``create()`` accepts (a path, an
Attachment, ``(filename, bytes[, mimetype])``, inline image bytes) is converted here.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Union

from fluxmail.errors import MessageError
from fluxmail.message.addresses import check_header_text

__all__ = [
    "Attachment",
    "AttachmentInput",
    "InlineInput",
    "attachment_from",
    "attachment_items",
    "check_content_id",
    "check_filename",
    "check_mimetype",
    "guess_mimetype",
    "inline_from",
    "inline_images_from",
]

AttachmentInput = Union[str, "os.PathLike[str]", "Attachment", tuple[Any, ...]]
InlineInput = Union[str, "os.PathLike[str]", bytes, "Attachment"]


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 2045 §5.1 token
_CONTENT_ID = re.compile(r"[!-~]+")
# Sniffed when inline image bytes come without a filename.
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def check_filename(filename: str) -> None:
    """A filename is one non-empty path component without control characters."""
    if not isinstance(filename, str) or not filename.strip():
        raise MessageError("an attachment needs a non-empty filename", code="invalid_attachment")
    check_header_text(filename, field="attachment filename")
    if "/" in filename or "\\" in filename or filename in (".", ".."):
        raise MessageError(
            f"attachment filename {filename!r} must not contain a path", code="invalid_attachment"
        )


def check_mimetype(mimetype: str, *, filename: str) -> None:
    """``type/subtype`` tokens only; multipart/* and message/* cannot be base64 (RFC 2046 §5)."""
    main, slash, sub = mimetype.partition("/") if isinstance(mimetype, str) else ("", "", "")
    if not slash or not _TOKEN.fullmatch(main) or not _TOKEN.fullmatch(sub) or len(mimetype) > 200:
        raise MessageError(
            f"attachment {filename!r}: {mimetype!r} is not a MIME type", code="invalid_attachment"
        )
    if main.lower() in ("multipart", "message"):
        raise MessageError(
            f"attachment {filename!r}: {mimetype} cannot be attached as a file",
            code="invalid_attachment",
        )


def guess_mimetype(filename: str, content: bytes | None) -> str:
    """Guess from the name (``mimetypes``), then from magic bytes; octet-stream otherwise."""
    guessed = mimetypes.guess_type(filename, strict=False)[0] if filename else None
    if guessed and not guessed.startswith(("multipart/", "message/")):
        return guessed
    for magic, mimetype in _MAGIC:
        if content is not None and content.startswith(magic):
            return mimetype
    if content is not None and content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


def check_content_id(content_id: str) -> str:
    """A Content-ID (RFC 2392) without its angle brackets; printable ASCII, no spaces."""
    if not isinstance(content_id, str):
        raise MessageError("a content id must be a string", code="invalid_attachment")
    check_header_text(content_id, field="content id")
    cid = (
        content_id[1:-1] if content_id.startswith("<") and content_id.endswith(">") else content_id
    )
    if not _CONTENT_ID.fullmatch(cid) or "<" in cid or ">" in cid or len(cid) > 900:
        raise MessageError(f"{content_id!r} is not a valid content id", code="invalid_attachment")
    return cid


def _read_regular_file(path: str | os.PathLike[str]) -> bytes:
    """Read a regular file; refuse directories, devices, FIFOs and sockets without opening them."""
    shown = repr(os.fspath(path))
    not_regular = MessageError(
        f"attachment {shown} is not a regular file", code="invalid_attachment"
    )
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise not_regular
        # O_NONBLOCK + fstat close the race where the path becomes a FIFO after stat().
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise not_regular
            return handle.read()
    except MessageError:
        raise  # not a regular file: already says so (MessageError is a ValueError too)
    except FileNotFoundError as exc:
        raise MessageError(f"attachment not found: {shown}", code="attachment_not_found") from exc
    except ValueError as exc:  # a NUL byte, or a lone surrogate the file system cannot encode
        raise MessageError(
            f"attachment {shown} is not a valid path", code="invalid_attachment"
        ) from exc
    except OSError as exc:
        raise MessageError(
            f"attachment {shown} cannot be read: {exc.strerror}", code="invalid_attachment"
        ) from exc


@dataclass(frozen=True)
class Attachment:
    """A file carried by the message; ``content_id`` set means inline (``multipart/related``)."""

    filename: str
    content: bytes = field(repr=False)
    mimetype: str = "application/octet-stream"
    content_id: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.content, (bytearray, memoryview)):
            object.__setattr__(self, "content", bytes(self.content))
        if not isinstance(self.content, bytes):
            raise MessageError(
                f"attachment {self.filename!r}: content must be bytes", code="invalid_attachment"
            )
        check_filename(self.filename)
        check_mimetype(self.mimetype, filename=self.filename)
        if self.content_id is not None:
            object.__setattr__(self, "content_id", check_content_id(self.content_id))

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike[str],
        *,
        mimetype: str | None = None,
        filename: str | None = None,
        content_id: str | None = None,
    ) -> Attachment:
        """Read a regular file; the filename defaults to its base name, the type is guessed."""
        if not isinstance(path, (str, os.PathLike)):
            raise MessageError(
                f"an attachment path must be a str or os.PathLike, not {type(path).__name__}",
                code="invalid_attachment",
            )
        content = _read_regular_file(path)
        name = filename if filename is not None else os.path.basename(os.fspath(path))
        return cls(name, content, mimetype or guess_mimetype(name, content), content_id)

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


def attachment_from(item: AttachmentInput) -> Attachment:
    if isinstance(item, Attachment):
        return item
    if isinstance(item, (str, os.PathLike)):
        return Attachment.from_path(item)
    if isinstance(item, tuple) and len(item) in (2, 3) and isinstance(item[0], str):
        filename, content = item[0], item[1]
        if not isinstance(content, (bytes, bytearray, memoryview)):
            raise MessageError(
                f"attachment {filename!r}: content must be bytes", code="invalid_attachment"
            )
        mimetype = item[2] if len(item) == 3 else None
        return Attachment(filename, bytes(content), mimetype or guess_mimetype(filename, None))
    raise MessageError(
        f"attachment {item!r}: expected a path, an Attachment or (filename, bytes[, mimetype])",
        code="invalid_attachment",
    )


def inline_from(content_id: str, item: InlineInput) -> Attachment:
    cid = check_content_id(content_id)
    if isinstance(item, Attachment):
        return Attachment(item.filename, item.content, item.mimetype, cid)
    if isinstance(item, (bytes, bytearray, memoryview)):
        data = bytes(item)
        mimetype = guess_mimetype("", data)
        name = cid.partition("@")[0] + (mimetypes.guess_extension(mimetype) or "")
        return Attachment(name, data, mimetype, cid)
    if isinstance(item, (str, os.PathLike)):
        return Attachment.from_path(item, content_id=cid)
    raise MessageError(
        f"inline image {content_id!r}: expected a path, bytes or an Attachment",
        code="invalid_attachment",
    )


def attachment_items(value: Any) -> list[Any]:
    if value is None:
        return []
    single_tuple = isinstance(value, tuple) and len(value) in (2, 3) and isinstance(value[1], bytes)
    if isinstance(value, (str, os.PathLike, Attachment)) or single_tuple:
        return [value]
    if isinstance(value, (bytes, bytearray, Mapping)) or not isinstance(value, Iterable):
        raise MessageError(
            "attachments must be a list of paths, Attachments or (filename, bytes[, mimetype]) "
            f"tuples, not {type(value).__name__}",
            code="invalid_attachment",
        )
    return list(value)


def inline_images_from(value: object) -> tuple[Attachment, ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise MessageError(
            f"inline_images must be a mapping of content ids to images, not {type(value).__name__}",
            code="invalid_attachment",
        )
    return tuple(inline_from(cid, item) for cid, item in value.items())
