"""The console transport: prints each message to standard output, for development."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from fluxmail.config.resolve import Config
from fluxmail.transport.base import Transport

if TYPE_CHECKING:
    from fluxmail.transport.mail import Mail, TransportResult


class ConsoleTransport(Transport):
    name = "console"

    @classmethod
    def from_config(cls, config: Config) -> ConsoleTransport:
        return cls()

    async def send(self, mail: Mail) -> TransportResult:
        started = time.monotonic()
        text = mail.data.decode("utf-8", "replace").replace("\r\n", "\n")
        sys.stdout.write(f"{text}\n{'-' * 72}\n")
        sys.stdout.flush()
        return self.handed_over(mail, started)


TRANSPORT = ConsoleTransport
