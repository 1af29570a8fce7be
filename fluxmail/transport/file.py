"""The file transport: each message becomes an ``.eml`` file in a folder."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from fluxmail.config.resolve import Config
from fluxmail.transport.base import Transport

if TYPE_CHECKING:
    from fluxmail.transport.mail import Mail, TransportResult


class FileTransport(Transport):
    name = "file"

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    @classmethod
    def from_config(cls, config: Config) -> FileTransport:
        return cls(config.file_dir)

    async def send(self, mail: Mail) -> TransportResult:
        started = time.monotonic()
        self.folder.mkdir(parents=True, exist_ok=True)
        stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(6).hex()}"
        tmp = self.folder / f".{stem}.tmp"
        tmp.write_bytes(mail.data)  # written whole, then renamed: a reader never sees half a file
        os.replace(tmp, self.folder / f"{stem}.eml")
        return self.handed_over(mail, started)


TRANSPORT = FileTransport
