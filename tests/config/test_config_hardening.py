"""Configuration that used to be accepted and fail later, or be silently ignored: a CA file that
is not PEM, a broken providers file, an idempotency key with no audit to keep it, misspelled
variables, and the message for a preset login without a password."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fluxmail import FluxMail
from fluxmail.config.resolve import resolve_config
from fluxmail.config.settings import unknown_variables
from fluxmail.errors import EXIT_CODES, ConfigurationError
from tests.support import ROOT
from tests.support.cli import cli, smtp_env
from tests.support.mailing import mailer_for
from tests.support.servers import SMTPTestServer

Server = Callable[..., SMTPTestServer]

# --- item 4: FLUXMAIL_CA_FILE is loaded when the mailer is built ------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not a certificate\n",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ],
    ids=["empty", "text", "broken-pem"],
)
def test_ca_file_that_is_not_pem_is_refused_at_build(tmp_path: Path, content: bytes) -> None:
    """FluxMail() refuses a CA file without a usable certificate, naming FLUXMAIL_CA_FILE."""
    ca = tmp_path / "ca.pem"
    ca.write_bytes(content)
    with pytest.raises(ConfigurationError) as info:
        FluxMail(host="mail.example.com", ca_file=str(ca), audit=False)
    assert info.value.code == "invalid_config"
    assert "FLUXMAIL_CA_FILE" in info.value.message and "PEM" in info.value.message


def test_ca_file_is_checked_even_without_tls(tmp_path: Path) -> None:
    """A bad CA file is a configuration error whatever the TLS mode (it is checked when set)."""
    ca = tmp_path / "ca.pem"
    ca.write_text("garbage\n")
    with pytest.raises(ConfigurationError, match="FLUXMAIL_CA_FILE"):
        resolve_config(host="127.0.0.1", use_tls=False, ca_file=str(ca))


def test_build_time_context_is_the_one_the_transport_uses(smtp_server: Server) -> None:
    """The context loaded at build time (TLS 1.2+, verifying) is reused for the connection."""
    import ssl

    server = smtp_server(tls="starttls")
    mailer = mailer_for(server)
    built = mailer.config.ssl_context()
    assert built is not None and built.verify_mode == ssl.CERT_REQUIRED
    assert built.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert mailer.create("Hi", "a@example.com", "x").send().status == "sent"
    assert mailer.config.ssl_context() is built


# --- item 5: FLUXMAIL_PROVIDERS_FILE is validated whenever it is set -------------------------

BROKEN_CATALOGS = {
    "yaml": "providers:\n  acme: [unclosed\n",
    "shape": "- just\n- a list\n",
    "schema": (
        "providers:\n  acme:\n    host: smtp.acme.test\n    port: 587\n    security: starttls\n"
        "    ports: {starttls: [587]}\n    username_kind: address\n"
        "    docs_url: https://acme.test/smtp\n    colour: blue\n"
    ),
    "override": "providers:\n  sendgrid:\n    port: 99999\n",
}


@pytest.mark.parametrize("kind", sorted(BROKEN_CATALOGS))
def test_broken_providers_file_is_refused_without_a_provider(tmp_path: Path, kind: str) -> None:
    """Invalid YAML or a schema error is refused even when no provider is selected."""
    extra = tmp_path / "providers.yaml"
    extra.write_text(BROKEN_CATALOGS[kind])
    with pytest.raises(ConfigurationError) as info:
        FluxMail(host="mail.example.com", providers_file=str(extra), audit=False)
    assert info.value.code == "invalid_providers_file"
    assert "FLUXMAIL_PROVIDERS_FILE" in info.value.message


def test_valid_providers_file_without_a_provider_is_accepted(tmp_path: Path) -> None:
    """A correct override file with no provider selected still builds."""
    extra = tmp_path / "providers.yaml"
    extra.write_text("providers:\n  sendgrid:\n    notes: ours\n")
    config = resolve_config(host="mail.example.com", providers_file=str(extra))
    assert config.provider is None


# --- item 7: an idempotency key needs the audit ----------------------------------------------


def test_idempotency_key_without_audit_is_refused_before_traffic(smtp_server: Server) -> None:
    """audit off + idempotency_key: ConfigurationError naming FLUXMAIL_AUDIT; nothing sent."""
    server = smtp_server()
    mailer = mailer_for(server)  # audit=False
    with pytest.raises(ConfigurationError) as info:
        mailer.create("Hi", "a@example.com", "x", idempotency_key="order-1")
    assert info.value.code == "idempotency_needs_audit"
    assert "FLUXMAIL_AUDIT" in info.value.message and "PostgreSQL" in info.value.message
    assert server.connections == 0


def test_idempotency_key_without_audit_in_send_many(smtp_server: Server) -> None:
    """Each keyed send_many item fails with idempotency_needs_audit; unkeyed items go out."""
    server = smtp_server()
    mailer = mailer_for(server)
    items: list[dict[str, Any]] = [
        {"subject": "A", "recipients": ["a@example.com"], "body": "x", "idempotency_key": "k1"},
        {"subject": "B", "recipients": ["b@example.com"], "body": "x"},
    ]
    outcomes = sorted(mailer.send_many(items, progress=False), key=lambda o: o.index)
    assert outcomes[0].error is not None and outcomes[0].error.code == "idempotency_needs_audit"
    assert outcomes[1].ok and server.deliveries == 1


def test_idempotency_key_in_a_dry_run_without_audit(tmp_path: Path) -> None:
    """A dry run refuses the key too: it must predict what the real send would do."""
    mailer = FluxMail(host="mail.example.com", sender="s@example.com", audit=False, dry_run=True)
    with pytest.raises(ConfigurationError, match="idempotency_key"):
        mailer.create("Hi", "a@example.com", "x", idempotency_key="k")


def test_idempotency_key_on_memory_backend_needs_explicit_audit(tmp_path: Path) -> None:
    """The memory backend keeps no audit unless asked: the key is refused, with the fix."""
    mailer = FluxMail(object_type="memory", sender="s@example.com")
    with pytest.raises(ConfigurationError) as info:
        mailer.create("Hi", "a@example.com", "x", idempotency_key="k")
    assert info.value.code == "idempotency_needs_audit"
    assert "memory backend" in info.value.message and "FLUXMAIL_AUDIT=true" in info.value.message
    audited = FluxMail(
        object_type="memory", sender="s@example.com", audit=True, audit_dir=str(tmp_path / "a")
    )
    first = audited.create("Hi", "a@example.com", "x", idempotency_key="k").send()
    again = audited.create("Hi", "a@example.com", "x", idempotency_key="k").send()
    assert again.replayed and again.message_id == first.message_id
    audited.close()


def test_cli_send_with_key_and_audit_off_exits_3(
    smtp_server: Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """fluxmail send --idempotency-key with FLUXMAIL_AUDIT=off: configuration error, no mail."""
    server = smtp_server()
    smtp_env(monkeypatch, server.port, audit="off")
    ran = cli(
        capsys, monkeypatch, "send", "--to", "a@example.com", "--subject", "Hi", "--text", "x",
        "--idempotency-key", "k",
    )  # fmt: skip
    assert ran.code == EXIT_CODES["configuration"], ran.both
    assert "idempotency_needs_audit" in ran.err and server.connections == 0


# --- item 8: unknown FLUXMAIL_* variables ------------------------------------------------------


def test_misspelled_variable_is_logged_with_a_suggestion(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """from_env() warns on logger 'fluxmail', naming the variable and the closest known one."""
    monkeypatch.setenv("FLUXMAIL_SENDR", "s@example.com")
    monkeypatch.setenv("FLUXMAIL_TYPE", "memory")
    with caplog.at_level(logging.WARNING, logger="fluxmail"):
        FluxMail.from_env()
    messages = [r.getMessage() for r in caplog.records if r.name == "fluxmail"]
    assert any("FLUXMAIL_SENDR" in m and "FLUXMAIL_SENDER" in m for m in messages), messages
    assert all("s@example.com" not in m for m in messages)  # names only, never values


def test_misspelled_variable_in_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Names in the .env file are checked too, and the warning says where the name was."""
    (tmp_path / ".env").write_text("FLUXMAIL_HOTS=mail.example.com\nOTHER_APP=1\n")
    monkeypatch.chdir(tmp_path)
    config = resolve_config(object_type="memory")
    assert len(config.warnings) == 1
    assert "FLUXMAIL_HOTS (in .env)" in config.warnings[0]
    assert "FLUXMAIL_HOST" in config.warnings[0].replace("FLUXMAIL_HOTS", "")


def test_known_variables_give_no_warning(tmp_path: Path) -> None:
    """Every setting, the secret *_FILE forms, FLUXMAIL_ENV_FILE, FLUXMAIL_STRICT are known."""
    environ = {
        "FLUXMAIL_HOST": "h",
        "FLUXMAIL_PASSWORD_FILE": "/x",
        "FLUXMAIL_URL_FILE": "/x",
        "FLUXMAIL_AUDIT_URL_FILE": "/x",
        "FLUXMAIL_AUDIT_PASSWORD_FILE": "/x",
        "FLUXMAIL_ENV_FILE": "",
        "FLUXMAIL_STRICT": "false",
        "FLUXMAIL_BENCH_DIR": "/tmp",
        "fluxmail_sender": "lower case is read too",
        "PATH": "/bin",
    }
    assert unknown_variables(environ=environ) == []


def test_file_form_of_a_plain_setting_is_reported() -> None:
    """FLUXMAIL_HOST_FILE is not read: say which variable to set instead."""
    (warning,) = unknown_variables(environ={"FLUXMAIL_HOST_FILE": "/run/secrets/host"})
    assert "FLUXMAIL_HOST_FILE" in warning and "FLUXMAIL_HOST" in warning.split("setting", 1)[1]


def test_strict_makes_unknown_variables_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """FLUXMAIL_STRICT=true: an unknown variable is ConfigurationError(unknown_setting)."""
    monkeypatch.setenv("FLUXMAIL_SENDR", "s@example.com")
    monkeypatch.setenv("FLUXMAIL_STRICT", "true")
    with pytest.raises(ConfigurationError) as info:
        FluxMail(object_type="memory")
    assert info.value.code == "unknown_setting"
    assert "FLUXMAIL_SENDR" in info.value.message and "FLUXMAIL_SENDER" in info.value.message
    monkeypatch.delenv("FLUXMAIL_SENDR")
    FluxMail(object_type="memory")  # strict and clean: fine


def test_cli_config_prints_unknown_variables(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """fluxmail config warns on stderr and lists the warnings in --json."""
    monkeypatch.setenv("FLUXMAIL_TYPE", "memory")
    monkeypatch.setenv("FLUXMAIL_SENDR", "s@example.com")
    ran = cli(capsys, monkeypatch, "config")
    assert ran.code == 0, ran.both
    assert "FLUXMAIL_SENDR" in ran.err and "FLUXMAIL_SENDER" in ran.err
    data = json.loads(cli(capsys, monkeypatch, "config", "--json").out)
    assert any("FLUXMAIL_SENDR" in w for w in data["warnings"])


def test_cli_check_prints_unknown_variables(
    smtp_server: Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """fluxmail check warns about a misspelled variable before it connects."""
    server = smtp_server()
    smtp_env(monkeypatch, server.port, usernme="alice")
    ran = cli(capsys, monkeypatch, "check")
    assert ran.code == 0, ran.both
    assert "FLUXMAIL_USERNME" in ran.err and "FLUXMAIL_USERNAME" in ran.err


# --- item 10: the preset's fixed login and a missing password --------------------------------


def test_preset_login_without_password_says_set_the_api_key() -> None:
    """SendGrid fixes the login ('apikey'): ask for the API key, not to unset a username."""
    with pytest.raises(ConfigurationError) as info:
        resolve_config(provider="sendgrid")
    message = info.value.message
    assert info.value.code == "credentials_incomplete"
    assert "FLUXMAIL_PASSWORD" in message and "API key" in message and "apikey" in message
    assert "unset FLUXMAIL_USERNAME" not in message


@pytest.mark.parametrize(
    ("kwargs", "env", "named"),
    [
        ({"host": "h.example.com", "username": "u"}, {}, "username="),
        ({}, {"FLUXMAIL_HOST": "h.example.com", "FLUXMAIL_USERNAME": "u"}, "FLUXMAIL_USERNAME"),
        ({"url": "smtp://u@h.example.com"}, {}, "FLUXMAIL_URL"),
    ],
    ids=["argument", "environment", "url"],
)
def test_username_without_password_names_where_the_username_came_from(
    monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, str], env: dict[str, str], named: str
) -> None:
    """The fix names the place the username was set."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as info:
        resolve_config(**kwargs)
    assert info.value.code == "credentials_incomplete"
    fix = info.value.message.split("or ", 1)[-1]
    assert named in fix and "FLUXMAIL_PASSWORD" in info.value.message


# --- one address rule: FLUXMAIL_SENDER goes through the strict parser ------------------------


@pytest.mark.parametrize(
    "sender",
    [
        "not an address",
        "a@example.com, b@example.com",  # two addresses: parseaddr alone saw an "@"
        "Shop <shop@example.com",
        "shop@@example.com",
        '"Shop" <shop@example.com> junk',
    ],
)
def test_bad_sender_is_configuration_error_before_traffic(
    smtp_server: Server, monkeypatch: pytest.MonkeyPatch, sender: str
) -> None:
    """A FLUXMAIL_SENDER the message parser refuses fails the build; nothing connects."""
    server = smtp_server()
    monkeypatch.setenv("FLUXMAIL_SENDER", sender)
    with pytest.raises(ConfigurationError) as info:
        FluxMail.from_env(host=server.host, port=server.port, use_tls=False, audit=False)
    assert info.value.code == "invalid_config" and "FLUXMAIL_SENDER" in info.value.message
    assert server.connections == 0


def test_username_as_sender_uses_the_strict_rule() -> None:
    """Only a bare address the strict parser accepts becomes the default sender."""
    base = {"host": "mail.example.com", "password": "p"}
    assert resolve_config(username="me@example.com", **base).default_sender() == "me@example.com"
    for login in ("apikey", "Me <me@example.com>", "me@@example.com"):
        assert resolve_config(username=login, **base).default_sender() is None


# --- one TLS policy for every client path ------------------------------------------------------

# The server context of the dev server is not a client path.
_TLS_BUILDERS_ALLOWED = {"fluxmail/config/tls.py", "fluxmail/devserver.py"}


def test_one_place_builds_client_tls_contexts() -> None:
    """create_default_context / SSLContext( / minimum_version appear only in config/tls.py."""
    found = []
    for path in sorted((ROOT / "fluxmail").rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        text = path.read_text(encoding="utf-8")
        if name not in _TLS_BUILDERS_ALLOWED and any(
            word in text for word in ("create_default_context", "SSLContext(", "minimum_version =")
        ):
            found.append(name)
    assert found == []


def _client_contexts(ca_path: Path) -> dict[str, Any]:
    from fluxmail.config.tls import client_context

    return {
        "client_context(ca)": client_context(ca_path),
        "Config.ssl_context() with FLUXMAIL_CA_FILE": resolve_config(
            host="localhost", use_tls=True, ca_file=str(ca_path)
        ).ssl_context(),
        "client_context() (certifi)": client_context(),
        "Config.ssl_context() (certifi)": resolve_config(
            host="localhost", use_tls=True
        ).ssl_context(),
    }


def _handshake(context: Any, server: SMTPTestServer) -> None:
    import socket

    with (
        socket.create_connection((server.host, server.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost"),
    ):
        pass


def test_every_client_context_is_tls12_and_verifying(ca: Any) -> None:
    """Each client context: TLS >= 1.2, certificates required, host names checked."""
    import ssl

    for name, context in _client_contexts(ca.ca_path).items():
        assert context.minimum_version >= ssl.TLSVersion.TLSv1_2, name
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname, name


@pytest.mark.parametrize(
    "which", ["client_context(ca)", "Config.ssl_context() with FLUXMAIL_CA_FILE"]
)
def test_client_context_refuses_tls11_and_untrusted(
    smtp_server: Server, ca: Any, which: str
) -> None:
    """Against real servers: TLS 1.1 only is refused, an untrusted certificate is refused,
    and the CA it was given is trusted."""
    import ssl

    context = _client_contexts(ca.ca_path)[which]
    _handshake(context, smtp_server(tls="implicit"))  # the configured CA: accepted
    for server in (
        smtp_server(tls="implicit", tls_max_version=ssl.TLSVersion.TLSv1_1),
        smtp_server(tls="implicit", cert="untrusted"),
    ):
        with pytest.raises(ssl.SSLError):
            _handshake(context, server)


def test_certifi_context_does_not_trust_a_private_ca(smtp_server: Server, ca: Any) -> None:
    """Without FLUXMAIL_CA_FILE the policy trusts certifi's roots only."""
    import ssl

    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(
            _client_contexts(ca.ca_path)["client_context() (certifi)"], smtp_server(tls="implicit")
        )
