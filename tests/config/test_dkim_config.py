"""FLUXMAIL_DKIM_*: keys of both types and forms accepted, bad ones refused when the mailer is
built, partial settings, alignment of the default sender, and transports that cannot sign."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec

from fluxmail import FluxMail
from fluxmail.config.resolve import resolve_config
from fluxmail.errors import ConfigurationError
from tests.support.dkim import (
    DOMAIN,
    ed_key,
    ed_pem,
    ed_seed_b64,
    pem_body,
    record_of,
    rsa_key,
    rsa_pem,
    small_rsa_pem,
    verify_all,
    zone,
)

BASE = {"object_type": "memory", "sender": f"shop@{DOMAIN}"}


def build(**settings: Any) -> FluxMail:
    given = {"dkim_domain": DOMAIN, "dkim_selector": "s1", **settings}
    return FluxMail(**{**BASE, **given})


def refused(code: str, **settings: Any) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as info:
        build(**settings)
    assert info.value.code == code, info.value.message
    return info.value


@pytest.mark.parametrize(
    "form", ["rsa-pkcs1", "rsa-pkcs8", "rsa-1024", "ed25519-pkcs8", "ed25519-seed", "crlf"]
)
def test_accepted_key_forms_and_their_dns_record(form: str) -> None:
    key = {
        "rsa-pkcs1": lambda: rsa_pem(),
        "rsa-pkcs8": lambda: rsa_pem(pkcs8=True),
        "rsa-1024": lambda: rsa_pem(1024),
        "ed25519-pkcs8": ed_pem,
        "ed25519-seed": ed_seed_b64,
        "crlf": lambda: rsa_pem().replace("\n", "\r\n") + "\r\n",
    }[form]()
    mailer = build(dkim_private_key=key)
    assert mailer._dkim is not None
    [signing] = mailer._dkim.keys
    # fluxmail's record for the key is the one cryptography derives independently.
    assert signing.dns_record() == record_of(key.replace("\r\n", "\n").strip())
    assert signing.dns_name == f"s1._domainkey.{DOMAIN}"
    data = mailer.create("s", "t@example.org", "b").as_bytes()
    assert verify_all(data, zone({"s1": key.replace("\r\n", "\n").strip()})) == [True]


def test_settings_from_the_environment_and_a_key_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key_file = tmp_path / "dkim.pem"
    key_file.write_text(rsa_pem())
    second = tmp_path / "ed.pem"
    second.write_text(ed_pem())
    for name, value in {
        "TYPE": "memory", "SENDER": f"shop@news.{DOMAIN}", "DKIM_DOMAIN": DOMAIN.upper(),
        "DKIM_SELECTOR": "2026a", "DKIM_PRIVATE_KEY_FILE": str(key_file),
        "DKIM_SECOND_SELECTOR": "2026b", "DKIM_SECOND_PRIVATE_KEY_FILE": str(second),
    }.items():  # fmt: skip
        monkeypatch.setenv(f"FLUXMAIL_{name}", value)
    mailer = FluxMail.from_env()
    assert mailer._dkim is not None
    assert [(k.selector, k.algorithm) for k in mailer._dkim.keys] == [
        ("2026a", "rsa-sha256"), ("2026b", "ed25519-sha256"),
    ]  # fmt: skip
    assert mailer._dkim.domain == DOMAIN
    assert mailer.describe()["dkim_private_key"] == {"value": "********", "source": "secret file"}


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("not a key at all", "not a PEM"),
        ("-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n", "base64"),
        ("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n", "RSA"),
        ("__ec__", "neither RSA nor Ed25519"),
        ("__public__", "no RSA or Ed25519 private key"),
        ("__encrypted__", "encrypted"),
        ("__small__", "512 bits"),
    ],
)
def test_bad_keys_are_refused_at_build(key: str, why: str) -> None:
    if key == "__ec__":
        key = (
            ec.generate_private_key(ec.SECP256R1())
            .private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
            .decode()
        )
    elif key == "__public__":
        key = (
            rsa_key()
            .public_key()
            .public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )
    elif key == "__encrypted__":
        key = (
            ed_key()
            .private_bytes(
                ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.BestAvailableEncryption(b"pw")
            )
            .decode()
        )
    elif key == "__small__":
        key = small_rsa_pem(512)
    error = refused("invalid_dkim_key", dkim_private_key=key)
    assert why in error.message and "FLUXMAIL_DKIM_PRIVATE_KEY" in error.message
    body = pem_body(key)
    assert not body or body[:24] not in error.message


def test_key_files_that_cannot_be_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLUXMAIL_DKIM_PRIVATE_KEY_FILE", str(tmp_path / "missing.pem"))
    assert refused("secret_file").message.startswith("FLUXMAIL_DKIM_PRIVATE_KEY_FILE=")
    monkeypatch.setenv("FLUXMAIL_DKIM_PRIVATE_KEY_FILE", str(tmp_path))
    refused("secret_file")
    binary = tmp_path / "key.der"
    binary.write_bytes(b"\x30\x82\xff\xfe" * 20)
    monkeypatch.setenv("FLUXMAIL_DKIM_PRIVATE_KEY_FILE", str(binary))
    refused("secret_file")


@pytest.mark.parametrize(
    "settings",
    [
        {"dkim_private_key": None},
        {"dkim_selector": None, "dkim_private_key": "__rsa__"},
        {"dkim_domain": None, "dkim_private_key": "__rsa__"},
        {"dkim_private_key": "__rsa__", "dkim_second_selector": "s2"},
        {"dkim_private_key": "__rsa__", "dkim_second_private_key": "__ed__"},
    ],
)
def test_partial_settings_are_refused(settings: dict[str, Any]) -> None:
    keys = {"__rsa__": rsa_pem(), "__ed__": ed_pem()}
    given = {k: keys.get(v, v) if isinstance(v, str) else v for k, v in settings.items()}
    error = refused("dkim_incomplete", **given)
    assert "missing: FLUXMAIL_DKIM_" in error.message


def test_second_key_alone_is_partial() -> None:
    with pytest.raises(ConfigurationError) as info:
        FluxMail(**BASE, dkim_second_selector="s2", dkim_second_private_key=ed_pem())
    assert info.value.code == "dkim_incomplete"


@pytest.mark.parametrize(
    "settings",
    [
        {"dkim_domain": "not a domain"},
        {"dkim_domain": "localhost"},
        {"dkim_selector": "bad selector"},
        {"dkim_selector": "x" * 64},
        {"dkim_second_selector": "S1", "dkim_second_private_key": "__ed__"},
    ],
)
def test_malformed_domain_or_selector(settings: dict[str, Any]) -> None:
    given = {k: ed_pem() if v == "__ed__" else v for k, v in settings.items()}
    refused("invalid_dkim_config", dkim_private_key=rsa_pem(), **given)


def test_the_default_sender_must_align() -> None:
    with pytest.raises(ConfigurationError) as info:
        FluxMail(object_type="memory", sender="a@other.example", dkim_domain=DOMAIN,
                 dkim_selector="s1", dkim_private_key=ed_pem())  # fmt: skip
    assert info.value.code == "dkim_unaligned"
    assert "FLUXMAIL_DKIM_ALLOW_UNALIGNED=true" in info.value.message
    FluxMail(object_type="memory", sender="a@other.example", dkim_domain=DOMAIN,
             dkim_selector="s1", dkim_private_key=ed_pem(), dkim_allow_unaligned=True)  # fmt: skip
    FluxMail(object_type="memory", sender=f"a@deep.mail.{DOMAIN}", dkim_domain=DOMAIN,
             dkim_selector="s1", dkim_private_key=ed_pem())  # fmt: skip
    # A parent domain does not align with a subdomain's signature.
    with pytest.raises(ConfigurationError):
        FluxMail(object_type="memory", sender=f"a@{DOMAIN}", dkim_domain=f"mail.{DOMAIN}",
                 dkim_selector="s1", dkim_private_key=ed_pem())  # fmt: skip


@pytest.mark.parametrize("provider", ["sendgrid", "postmark", "resend"])
def test_json_field_apis_cannot_carry_a_signature(provider: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        FluxMail(url=f"{provider}+api://KEY123@default", sender=f"a@{DOMAIN}",
                 dkim_domain=DOMAIN, dkim_selector="s1", dkim_private_key=ed_pem())  # fmt: skip
    assert info.value.code == "dkim_unsupported_transport" and provider in info.value.message


def test_raw_mime_apis_and_composites() -> None:
    key = ed_pem()
    dkim = {"dkim_domain": DOMAIN, "dkim_selector": "s1", "dkim_private_key": key}
    FluxMail(url="mailgun+api://KEY123@mg.example.com", sender=f"a@{DOMAIN}", **dkim)
    FluxMail.failover("memory://", "memory://", sender=f"a@{DOMAIN}", **dkim)
    plain = FluxMail(url="sendgrid+api://KEY123@default", sender=f"a@{DOMAIN}")
    with pytest.raises(ConfigurationError) as info:
        FluxMail.failover("memory://", plain, sender=f"a@{DOMAIN}", **dkim)
    assert info.value.code == "dkim_unsupported_transport"


def test_without_settings_nothing_is_signed() -> None:
    mailer = FluxMail(**BASE)
    assert mailer._dkim is None
    assert not mailer.create("s", "t@example.org", "b").as_bytes().startswith(b"DKIM")
    assert resolve_config(**BASE, dkim_allow_unaligned=True).dkim_domain is None
