"""The guard rails of ``fluxmail mcp``: which files, which recipients, how many sends.

Read once from the configuration when the server starts (docs/agents.md): an agent cannot
change them, and a refusal is a FluxMailException with a stable ``mcp_*`` code.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from fluxmail.config.resolve import Config
from fluxmail.errors import ConfigurationError, FluxMailException, MessageError
from fluxmail.message.domains import idna_domain

__all__ = ["Guards", "SendBudget", "normalize_domain"]


def normalize_domain(domain: str) -> str:
    """The comparable form of a domain: IDNA ASCII (UTS #46 maps case), lower case."""
    return idna_domain(domain.strip().rstrip(".")).lower()


def _allowed_domains(raw: str | None) -> frozenset[str] | None:
    if raw is None:
        return None
    found = set()
    for item in raw.split(","):
        name = item.strip().lstrip("@")
        if not name:
            continue
        try:
            found.add(normalize_domain(name))
        except UnicodeError:
            raise ConfigurationError(
                f"FLUXMAIL_MCP_ALLOWED_DOMAINS: {name!r} is not a domain name",
                code="invalid_config",
            ) from None
    if not found:
        raise ConfigurationError(
            "FLUXMAIL_MCP_ALLOWED_DOMAINS names no domain; unset it to allow any",
            code="invalid_config",
        )
    return frozenset(found)


def _attachment_root(path: Path | None) -> Path | None:
    if path is None:
        return None
    root = path.expanduser().resolve()
    if not root.is_dir():
        raise ConfigurationError(
            f"FLUXMAIL_MCP_ATTACHMENT_DIR {str(path)!r} is not a folder",
            code="invalid_config",
        )
    return root


def _refused_file(name: str, why: str) -> MessageError:
    return MessageError(f"attachment {name!r} refused: {why}", code="mcp_attachment_refused")


@dataclass(frozen=True)
class Guards:
    """What the operator allowed when the server started."""

    allow_send: bool = False
    attachment_root: Path | None = None
    max_sends: int | None = None
    max_recipients: int | None = None
    allowed_domains: frozenset[str] | None = None

    @classmethod
    def from_config(cls, config: Config) -> Guards:
        return cls(
            allow_send=config.mcp_allow_send,
            attachment_root=_attachment_root(config.mcp_attachment_dir),
            max_sends=config.mcp_max_sends,
            max_recipients=config.mcp_max_recipients,
            allowed_domains=_allowed_domains(config.mcp_allowed_domains),
        )

    def attachment(self, name: str) -> Path:
        """The real path of a file inside the attachment folder, or a refusal."""
        if self.attachment_root is None:
            raise _refused_file(name, "attachments are off (FLUXMAIL_MCP_ATTACHMENT_DIR is unset)")
        if not name or "\0" in name:
            raise _refused_file(name, "not a file name")
        if ".." in PurePath(name).parts:
            raise _refused_file(name, "'..' is not allowed")
        given = Path(name)
        path = given if given.is_absolute() else self.attachment_root / given
        real = path.resolve()  # follows every symlink: one pointing out is caught below
        if not real.is_relative_to(self.attachment_root):
            raise _refused_file(name, "outside FLUXMAIL_MCP_ATTACHMENT_DIR")
        if not real.is_file():
            raise MessageError(f"attachment not found: {name!r}", code="attachment_not_found")
        return real

    def recipients(self, addresses: Iterable[str]) -> None:
        """The recipient cap and the domain allow-list, over To, Cc and Bcc together."""
        listed = list(addresses)
        cap = self.max_recipients
        if cap is not None and len(listed) > cap:
            raise MessageError(
                f"{len(listed)} recipients (To, Cc and Bcc); FLUXMAIL_MCP_MAX_RECIPIENTS "
                f"allows {cap}",
                code="mcp_too_many_recipients",
            )
        if self.allowed_domains is None:
            return
        for address in listed:
            domain = address.rpartition("@")[2]
            try:
                ok = normalize_domain(domain) in self.allowed_domains
            except UnicodeError:
                ok = False
            if not ok:
                raise MessageError(
                    f"recipient {address!r}: the domain is not in FLUXMAIL_MCP_ALLOWED_DOMAINS",
                    code="mcp_recipient_refused",
                )


@dataclass
class SendBudget:
    """Sends left in this server run; a slot is taken before sending, given back for a
    replay or when nothing could have left."""

    cap: int | None
    used: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def take(self) -> None:
        with self._lock:
            if self.cap is not None and self.used >= self.cap:
                raise FluxMailException(
                    f"this server run has made its {self.cap} send(s) "
                    "(FLUXMAIL_MCP_MAX_SENDS); restart it to send more",
                    code="mcp_send_limit",
                )
            self.used += 1

    def give_back(self) -> None:
        with self._lock:
            self.used = max(0, self.used - 1)
