"""The TLS policy of every client connection: TLS 1.2 at least, certificates verified.

One function builds every client context (the SMTP session's fallback, ``Config.ssl_context()``,
``fluxmail check``), so there is one place that decides what a trusted server is: the bundle of
``certifi`` (Mozilla's roots) or the PEM file of ``FLUXMAIL_CA_FILE``. RFC 8996 deprecates
TLS 1.0 and 1.1; RFC 8314 section 4.1 asks mail clients to verify the server's certificate.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from fluxmail.errors import ConfigurationError

if TYPE_CHECKING:
    import ssl

__all__ = ["SECURITY_MODES", "Security", "client_context"]

# How a connection is protected: STARTTLS after EHLO (RFC 3207), TLS from the first byte
# (RFC 8314 "implicit TLS"), or not at all (loopback catchers, trusted relays).
Security = Literal["starttls", "implicit", "none"]
SECURITY_MODES: tuple[Security, ...] = ("starttls", "implicit", "none")


def client_context(ca_file: Path | str | None = None, *, verify: bool = True) -> ssl.SSLContext:
    """A client context: TLS >= 1.2, verified against ``ca_file`` or certifi's bundle.

    ``verify=False`` is the explicit opt-out of ``FLUXMAIL_TLS_VERIFY=false`` (the mailer logs a
    warning when built); the version floor stays.
    """
    import ssl

    import certifi

    cafile = str(ca_file) if ca_file is not None else certifi.where()
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    except (OSError, ssl.SSLError):
        raise ConfigurationError(
            f"FLUXMAIL_CA_FILE={cafile!r} is not a readable PEM certificate bundle; give a file "
            "of CA certificates in PEM form (-----BEGIN CERTIFICATE-----)",
            code="invalid_config",
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
