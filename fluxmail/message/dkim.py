"""DKIM signatures (RFC 6376; Ed25519 by RFC 8463) over the exact bytes the MIME writer made.

``sign(data, keys)`` prepends one ``DKIM-Signature`` header per key and leaves every other byte
as it was, so the wire, the audit snapshot and the outbox row hold the same signed message.
dkimpy (``fluxmail[dkim]``) is imported on first use only: ``import fluxmail`` stays light.
Keys are built and checked by :mod:`fluxmail.config.dkim`; a ``DkimKey`` never shows its secret.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Literal, cast

from fluxmail.errors import ConfigurationError, MessageError

__all__ = ["OVERSIGNED", "SIGNED_WHEN_PRESENT", "DkimKey", "dkimpy", "header_list", "sign"]

INSTALL_HINT = "DKIM signing needs dkimpy: pip install 'fluxmail[dkim]'"
Algorithm = Literal["rsa-sha256", "ed25519-sha256"]

# RFC 6376 5.4 and 8.15: these are signed once more than they occur ("over-signing"), so a
# header of that name added after signing breaks the signature (a second From, say).
OVERSIGNED = ("from", "subject", "to", "date", "message-id")
# RFC 6376 5.4.1's recommendations, signed as often as they occur.
SIGNED_WHEN_PRESENT = (
    "cc", "reply-to", "sender", "mime-version", "content-type", "content-transfer-encoding",
    "in-reply-to", "references", "list-unsubscribe", "list-unsubscribe-post",
)  # fmt: skip


@dataclass(frozen=True, repr=False)
class DkimKey:
    """One signing key: ``d=`` domain, ``s=`` selector, algorithm, and the public half."""

    domain: str  # ASCII (IDNA), lower case
    selector: str
    algorithm: Algorithm
    bits: int
    public: str  # base64, the p= tag of the DNS record
    secret: bytes = field(compare=False)  # what dkimpy takes: PEM (RSA), base64 seed (Ed25519)

    @property
    def dns_name(self) -> str:
        """Where the public key is published (RFC 6376 3.6.2.1)."""
        return f"{self.selector}._domainkey.{self.domain}"

    def dns_record(self) -> str:
        """The TXT record to publish at ``dns_name`` (RFC 6376 3.6.1, RFC 8463 4.2)."""
        kind = "rsa" if self.algorithm == "rsa-sha256" else "ed25519"
        return f"v=DKIM1; k={kind}; p={self.public}"

    def __repr__(self) -> str:  # never the secret
        return f"DkimKey({self.algorithm}, d={self.domain}, s={self.selector}, {self.bits} bits)"

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a DkimKey holds a private key and is not pickled")


def dkimpy() -> ModuleType:
    """The ``dkim`` module of dkimpy, or the ``missing_extra`` error naming the extra."""
    try:
        import dkim  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ConfigurationError(INSTALL_HINT, code="missing_extra") from exc
    return cast(ModuleType, dkim)


def _header_names(data: bytes) -> list[str]:
    head = data.split(b"\r\n\r\n", 1)[0]
    return [
        line.split(b":", 1)[0].strip().decode("ascii", "replace").lower()
        for line in head.split(b"\r\n")
        if line and line[:1] not in (b" ", b"\t")
    ]


def header_list(names: Sequence[str]) -> list[bytes]:
    """The h= list for a message with these header names, in a fixed order."""
    counts = Counter(name.lower() for name in names)
    listed = [name for name in OVERSIGNED for _ in range(counts[name] + 1)]
    listed += [name for name in SIGNED_WHEN_PRESENT for _ in range(counts[name])]
    return [name.encode("ascii") for name in listed]


def sign(data: bytes, keys: Sequence[DkimKey]) -> bytes:
    """``data`` with one DKIM-Signature per key prepended (relaxed/relaxed), first key on top.

    Every signature covers the unsigned message: none signs another's header.
    """
    dkim = dkimpy()
    headers = header_list(_header_names(data))
    signer = dkim.DKIM(data, minkey=1024, linesep=b"\r\n")
    found: list[bytes] = []
    for key in keys:
        try:
            found.append(
                signer.sign(
                    key.selector.encode("ascii"),
                    key.domain.encode("ascii"),
                    key.secret,
                    signature_algorithm=key.algorithm.encode("ascii"),
                    canonicalize=(b"relaxed", b"relaxed"),
                    include_headers=headers,
                )
            )
        except dkim.DKIMException as exc:
            # The class only: a message from the library could quote key material.
            error = MessageError(
                f"the message could not be DKIM-signed ({type(exc).__name__})",
                code="dkim_sign_failed",
            )
            raise error from None
    return b"".join(found) + data
