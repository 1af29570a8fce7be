"""DKIM test keys (made with ``cryptography``, once per session) and dkimpy's verifier.

The public keys the verifier sees are derived here by ``cryptography``, independently of
fluxmail's own ``DkimKey.dns_record()``, and served through dkimpy's DNS hook (``dnsfunc``).
"""

from __future__ import annotations

import base64
import functools
import re
import subprocess
from collections.abc import Mapping

import dkim
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

DOMAIN = "example.com"


@functools.cache
def rsa_key(bits: int = 2048, tag: str = "a") -> rsa.RSAPrivateKey:
    """One RSA key per (bits, tag) per session (``tag`` gives distinct keys of one size)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@functools.cache
def ed_key(tag: str = "a") -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def rsa_pem(bits: int = 2048, *, pkcs8: bool = False, tag: str = "a") -> str:
    form = ser.PrivateFormat.PKCS8 if pkcs8 else ser.PrivateFormat.TraditionalOpenSSL
    return rsa_key(bits, tag).private_bytes(ser.Encoding.PEM, form, ser.NoEncryption()).decode()


def ed_pem(tag: str = "a") -> str:
    key = ed_key(tag)
    return key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption()).decode()


def ed_seed_b64(tag: str = "a") -> str:
    """dkimpy's own Ed25519 form: the base64 of the 32-byte private seed."""
    raw = ed_key(tag).private_bytes(ser.Encoding.Raw, ser.PrivateFormat.Raw, ser.NoEncryption())
    return base64.b64encode(raw).decode()


def pem_body(pem: str) -> str:
    """The base64 of a PEM without its armour and line breaks: what must never leak."""
    return "".join(line for line in pem.splitlines() if not line.startswith("-----"))


def small_rsa_pem(bits: int = 512) -> str:
    """A key below the 1024-bit floor (cryptography refuses to make one): the openssl CLI."""
    done = subprocess.run(
        ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{bits}"],
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout


def record_of(pem_or_seed: str) -> str:
    """The TXT record for a private key, derived by cryptography (not by fluxmail)."""
    if "BEGIN" in pem_or_seed:
        key = ser.load_pem_private_key(pem_or_seed.encode(), password=None)
    else:
        key = ed25519.Ed25519PrivateKey.from_private_bytes(base64.b64decode(pem_or_seed))
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
    assert isinstance(key, rsa.RSAPrivateKey)
    der = key.public_key().public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


def zone(keys: Mapping[str, str], domain: str = DOMAIN) -> dict[bytes, bytes]:
    """selector -> private key, as dkimpy's DNS hook answers: name -> TXT record."""
    return {
        f"{selector}._domainkey.{domain}.".encode(): record_of(key).encode()
        for selector, key in keys.items()
    }


def signatures(data: bytes) -> int:
    head = data.split(b"\r\n\r\n", 1)[0]
    return len(re.findall(rb"^DKIM-Signature:", head, flags=re.MULTILINE | re.IGNORECASE))


def verify_all(data: bytes, records: Mapping[bytes, bytes]) -> list[bool]:
    """dkimpy's verdict on every DKIM-Signature of ``data``, top first."""

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name)

    def one(idx: int) -> bool:
        try:
            return bool(dkim.DKIM(data).verify(idx=idx, dnsfunc=dnsfunc))
        except dkim.DKIMException:  # a body hash mismatch raises rather than returns False
            return False

    return [one(i) for i in range(signatures(data))]


def tags(data: bytes, idx: int = 0) -> dict[str, str]:
    """The tags of the idx-th DKIM-Signature, whitespace removed."""
    headers, _ = dkim.rfc822_parse(data)
    values = [v for k, v in headers if k.lower() == b"dkim-signature"]
    found = dkim.util.parse_tag_value(values[idx])
    return {k.decode(): re.sub(r"\s+", "", v.decode()) for k, v in found.items()}
