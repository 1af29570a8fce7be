"""DKIM settings to checked signing keys, and the signer a mailer holds (docs/dkim.md).

``FLUXMAIL_DKIM_*`` are resolved with the other settings; :func:`dkim_signer` turns them into a
:class:`DkimSigner` when the mailer is built, so an unreadable, malformed, encrypted, wrong-type
or short key, a partial configuration, a transport that builds its own MIME or a default sender
outside ``d=`` is a ``ConfigurationError`` before any traffic. Keys: PEM (PKCS#1 or PKCS#8) for
RSA, PKCS#8 PEM or dkimpy's base64 32-byte seed for Ed25519. Errors name the variable, never
the key.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

from pydantic import SecretStr

from fluxmail._lazy import lazy_module, lazy_pattern
from fluxmail.config.model import Config
from fluxmail.errors import ConfigurationError, MessageError
from fluxmail.message.addresses import parse_address
from fluxmail.message.domains import idna_domain

if TYPE_CHECKING:
    from fluxmail.message import dkim as signing
    from fluxmail.message.dkim import DkimKey
    from fluxmail.message.model import Message
else:  # the keys' and signatures' code: loaded with the first DKIM key, not by every cold start
    signing = lazy_module("fluxmail.message.dkim")

__all__ = ["DKIM_FIELDS", "RAW_MIME_ONLY", "DkimSigner", "aligned", "dkim_signer", "load_key"]

DKIM_FIELDS = (
    "dkim_domain", "dkim_selector", "dkim_private_key", "dkim_second_selector",
    "dkim_second_private_key", "dkim_allow_unaligned",
)  # fmt: skip
# HTTP APIs that take JSON fields and write the MIME themselves: no bytes of ours to sign.
RAW_MIME_ONLY = frozenset({"sendgrid", "postmark", "resend"})
MIN_RSA_BITS = 1024  # RFC 8301 3.2: verifiers may refuse less; 2048 is what to generate
_PEM = lazy_pattern(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)
_LABEL = lazy_pattern(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_OID_RSA = bytes.fromhex("2a864886f70d010101")  # 1.2.840.113549.1.1.1
_OID_ED25519 = bytes.fromhex("2b6570")  # 1.3.101.112 (RFC 8410)


class DkimSigner(NamedTuple):
    """The keys a mailer signs with, and its alignment rule; immutable, shared by threads.

    A named tuple: a frozen dataclass would cost every cold start ~0.3 ms more to create."""

    domain: str
    keys: tuple[DkimKey, ...]
    allow_unaligned: bool = False

    def sign(self, message: Message, data: bytes) -> bytes:
        """``data`` signed; ``dkim_unaligned`` when the message's From is outside ``d=``."""
        if not self.allow_unaligned and not aligned(message.sender.domain, self.domain):
            raise MessageError(
                f"the From domain {message.sender.domain!r} is not {self.domain!r} or one of its "
                f"subdomains, so the DKIM signature (d={self.domain}) would not align (DMARC); "
                "send from that domain or set FLUXMAIL_DKIM_ALLOW_UNALIGNED=true",
                code="dkim_unaligned",
                field="sender",
            )
        return signing.sign(data, self.keys)


def aligned(from_domain: str, d: str) -> bool:
    """Relaxed alignment as fluxmail applies it: From's domain is ``d`` or a subdomain."""
    try:
        ascii_from = idna_domain(from_domain).lower()
    except UnicodeError:
        return False
    return ascii_from == d or ascii_from.endswith("." + d)


def dkim_signer(c: Config) -> DkimSigner | None:
    """The signer of this configuration, None without DKIM settings; every rule checked."""
    given = {
        "FLUXMAIL_DKIM_DOMAIN": c.dkim_domain,
        "FLUXMAIL_DKIM_SELECTOR": c.dkim_selector,
        "FLUXMAIL_DKIM_PRIVATE_KEY": c.dkim_private_key,
    }
    second = {
        "FLUXMAIL_DKIM_SECOND_SELECTOR": c.dkim_second_selector,
        "FLUXMAIL_DKIM_SECOND_PRIVATE_KEY": c.dkim_second_private_key,
    }
    if all(v is None for v in (*given.values(), *second.values())):
        return None
    _complete(given, "a DKIM signature")
    if any(v is not None for v in second.values()):
        _complete(second, "the second DKIM signature")
    assert c.dkim_domain and c.dkim_selector and c.dkim_private_key
    domain = _domain(c.dkim_domain)
    keys = [load_key(c.dkim_private_key, domain, _selector(c.dkim_selector, ""), "")]
    if c.dkim_second_selector and c.dkim_second_private_key:
        if c.dkim_second_selector.lower() == c.dkim_selector.lower():
            raise ConfigurationError(
                "FLUXMAIL_DKIM_SECOND_SELECTOR is the same as FLUXMAIL_DKIM_SELECTOR; each key "
                "needs its own selector (its own DNS record)",
                code="invalid_dkim_config",
            )
        selector = _selector(c.dkim_second_selector, "SECOND_")
        keys.append(load_key(c.dkim_second_private_key, domain, selector, "SECOND_"))
    _check_transport(c)
    signer = DkimSigner(domain, tuple(keys), c.dkim_allow_unaligned)
    _check_default_sender(c, signer)
    return signer


def _complete(values: Mapping[str, object], what: str) -> None:
    missing = [name for name, value in values.items() if value is None]
    if missing:
        raise ConfigurationError(
            f"{what} needs {', '.join(values)}; missing: {', '.join(missing)} (a "
            "*_PRIVATE_KEY may come from its *_PRIVATE_KEY_FILE)",
            code="dkim_incomplete",
        )


def _domain(value: str) -> str:
    text = value.strip().rstrip(".")
    try:
        ascii_form = idna_domain(text).lower()
    except UnicodeError:
        ascii_form = ""
    labels = ascii_form.split(".")
    if len(labels) < 2 or len(ascii_form) > 253 or not all(_LABEL().match(x) for x in labels):
        raise ConfigurationError(
            f"FLUXMAIL_DKIM_DOMAIN={value!r} is not a domain name (the d= tag, e.g. example.com)",
            code="invalid_dkim_config",
        )
    return ascii_form


def _selector(value: str, which: str) -> str:
    text = value.strip()
    if not text or len(text) > 63 or not all(_LABEL().match(x) for x in text.split(".")):
        raise ConfigurationError(
            f"FLUXMAIL_DKIM_{which}SELECTOR={value!r} is not a selector (letters, digits, "
            "hyphens and dots, e.g. 2026a): it becomes part of a DNS name",
            code="invalid_dkim_config",
        )
    return text


def _check_transport(c: Config) -> None:
    """Transports that write the MIME themselves cannot carry our signature: refuse them."""
    if c.members:
        for member in c.members:
            _check_transport(member)
    elif c.backend == "api" and c.api_provider in RAW_MIME_ONLY:
        raise ConfigurationError(
            f"DKIM signing needs a transport that sends fluxmail's own MIME bytes, and the "
            f"{c.api_provider} API builds the message itself from JSON fields: sign in "
            "the provider (its domain authentication) and drop FLUXMAIL_DKIM_*, or use its "
            "SMTP relay (FLUXMAIL_TRANSPORT=smtp)",
            code="dkim_unsupported_transport",
        )


def _check_default_sender(c: Config, signer: DkimSigner) -> None:
    sender = c.default_sender()
    if sender is None or signer.allow_unaligned:
        return
    domain = parse_address(sender, field="FLUXMAIL_SENDER").domain
    if not aligned(domain, signer.domain):
        raise ConfigurationError(
            f"the default sender's domain {domain!r} is not FLUXMAIL_DKIM_DOMAIN="
            f"{signer.domain!r} or one of its subdomains, so signatures would not align "
            "(DMARC); sign for the sender's domain or set FLUXMAIL_DKIM_ALLOW_UNALIGNED=true",
            code="dkim_unaligned",
        )


# -- keys ----------------------------------------------------------------------------------


def _bad_key(which: str, why: str) -> ConfigurationError:
    return ConfigurationError(
        f"FLUXMAIL_DKIM_{which}PRIVATE_KEY (or its _FILE) {why}; give an RSA key (PEM, PKCS#1 or "
        "PKCS#8, >= 1024 bits, 2048 recommended) or an Ed25519 key (PKCS#8 PEM), unencrypted "
        "(docs/dkim.md)",
        code="invalid_dkim_key",
    )


def load_key(secret: SecretStr, domain: str, selector: str, which: str) -> DkimKey:
    """A checked key: its type found from the PEM label and the PKCS#8 algorithm."""
    raw = secret.get_secret_value().strip().encode("utf-8", "replace")
    blocks = _PEM().findall(raw)
    if not blocks:
        seed = _b64(raw)  # dkimpy's own Ed25519 form: the 32-byte seed in base64
        if seed is None or len(seed) != 32:
            raise _bad_key(which, "is not a PEM private key")
        return _ed25519(seed, domain, selector)
    labels = [label.decode("ascii") for label, _ in blocks]
    if "ENCRYPTED PRIVATE KEY" in labels:
        raise _bad_key(which, "is encrypted (decrypt it: openssl pkey -in key.pem -out plain.pem)")
    keys = [(lbl, body) for lbl, body in blocks if lbl in (b"RSA PRIVATE KEY", b"PRIVATE KEY")]
    if len(keys) != 1:
        found = ", ".join(labels)
        raise _bad_key(which, f"holds no RSA or Ed25519 private key (PEM blocks: {found})")
    label, body = keys[0]
    der = _b64(body)
    if der is None:
        raise _bad_key(which, "is not valid PEM (its base64 does not decode)")
    if label == b"PRIVATE KEY":
        oid, inner = _pkcs8(der)
        if oid == _OID_ED25519:
            if len(inner) != 34 or inner[:2] != b"\x04\x20":
                raise _bad_key(which, "is a malformed Ed25519 key")
            return _ed25519(inner[2:], domain, selector)
        if oid != _OID_RSA:
            raise _bad_key(which, "is neither RSA nor Ed25519 (EC and others cannot sign DKIM)")
    return _rsa(der, domain, selector, which)


def _b64(text: bytes) -> bytes | None:
    try:
        return base64.b64decode(b"".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def _tlv(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of value, end of value) of the DER element at ``pos``; ValueError if cut."""
    tag, length = der[pos], der[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if not 1 <= count <= 4:
            raise ValueError("DER length")
        length = int.from_bytes(der[pos : pos + count], "big")
        pos += count
    if pos + length > len(der):
        raise ValueError("DER truncated")
    return tag, pos, pos + length


def _pkcs8(der: bytes) -> tuple[bytes, bytes]:
    """(algorithm OID, privateKey octets) of a PKCS#8 PrivateKeyInfo (RFC 5958)."""
    try:
        tag, pos, _ = _tlv(der, 0)
        _, _, pos = _tlv(der, pos)  # version
        tag2, alg, pos = _tlv(der, pos)  # AlgorithmIdentifier
        tag3, oid_at, oid_end = _tlv(der, alg)
        tag4, key_at, key_end = _tlv(der, pos)
    except (IndexError, ValueError):
        return b"", b""
    if (tag, tag2, tag3, tag4) != (0x30, 0x30, 0x06, 0x04):
        return b"", b""
    return der[oid_at:oid_end], der[key_at:key_end]


def _ed25519(seed: bytes, domain: str, selector: str) -> DkimKey:
    signing.dkimpy()  # the extra, before its optional part
    try:
        import nacl.signing
    except ImportError as exc:
        raise ConfigurationError(
            "Ed25519 DKIM keys need PyNaCl: pip install 'fluxmail[dkim]'", code="missing_extra"
        ) from exc
    public = nacl.signing.SigningKey(seed).verify_key.encode()
    return signing.DkimKey(
        domain, selector, "ed25519-sha256", 256,
        base64.b64encode(public).decode("ascii"), base64.b64encode(seed),
    )  # fmt: skip


def _rsa(der: bytes, domain: str, selector: str, which: str) -> DkimKey:
    crypto = signing.dkimpy().crypto
    try:
        key = crypto.parse_private_key(der)
    except crypto.UnparsableKeyError:
        raise _bad_key(which, "is not a readable RSA private key") from None
    n, e = key["modulus"], key["publicExponent"]
    if key["prime1"] * key["prime2"] != n:
        raise _bad_key(which, "is an inconsistent RSA key (n is not p*q)")
    bits = n.bit_length()
    if bits < MIN_RSA_BITS:
        raise _bad_key(which, f"is an RSA key of {bits} bits, below the {MIN_RSA_BITS} minimum")
    pem = (
        b"-----BEGIN PRIVATE KEY-----\n" + base64.b64encode(der) + b"\n-----END PRIVATE KEY-----\n"
    )
    public = base64.b64encode(_spki(n, e)).decode("ascii")
    return signing.DkimKey(domain, selector, "rsa-sha256", bits, public, pem)


def _der(tag: int, value: bytes) -> bytes:
    size = len(value)
    length = bytes([size]) if size < 0x80 else _long_length(size)
    return bytes([tag]) + length + value


def _long_length(size: int) -> bytes:
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def _int(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _spki(n: int, e: int) -> bytes:
    """SubjectPublicKeyInfo of an RSA key (RFC 5280 4.1, RFC 8017 A.1.1): the p= of RSA."""
    algorithm = _der(0x30, _der(0x06, _OID_RSA) + b"\x05\x00")
    return _der(0x30, algorithm + _der(0x03, b"\x00" + _der(0x30, _int(n) + _int(e))))
