"""FluxMailSettings: every variable, booleans, bad values, .env, *_FILE secrets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fluxmail.config.settings import FluxMailSettings, settings_class
from fluxmail.config.sources import read_layers
from fluxmail.errors import ConfigurationError

# (variable, raw value, field, parsed value)
VARIABLES = [
    ("FLUXMAIL_TYPE", "Console", "type", "console"),
    ("FLUXMAIL_HOST", "smtp.example.com", "host", "smtp.example.com"),
    ("FLUXMAIL_PORT", "2525", "port", 2525),
    ("FLUXMAIL_TLS", "true", "tls", True),
    ("FLUXMAIL_SSL", "YES", "ssl", True),
    ("FLUXMAIL_USERNAME", "me@example.com", "username", "me@example.com"),
    ("FLUXMAIL_TIMEOUT", "15", "timeout", 15.0),
    ("FLUXMAIL_MAX_RETRIES", "3", "max_retries", 3),
    ("FLUXMAIL_RETRY_DELAY", "2.0", "retry_delay", 2.0),
    ("FLUXMAIL_PROVIDER", "sendgrid", "provider", "sendgrid"),
    ("FLUXMAIL_REGION", "eu-west-1", "region", "eu-west-1"),
    ("FLUXMAIL_SENDER", "Shop <shop@example.com>", "sender", "Shop <shop@example.com>"),
    ("FLUXMAIL_CA_FILE", "/etc/ca.pem", "ca_file", Path("/etc/ca.pem")),
    ("FLUXMAIL_TLS_VERIFY", "off", "tls_verify", False),
    ("FLUXMAIL_LOCAL_HOSTNAME", "app.example.com", "local_hostname", "app.example.com"),
    ("FLUXMAIL_CONNECT_TIMEOUT", "5", "connect_timeout", 5.0),
    ("FLUXMAIL_COMMAND_TIMEOUT", "7.5", "command_timeout", 7.5),
    ("FLUXMAIL_DATA_TIMEOUT", "120", "data_timeout", 120.0),
    ("FLUXMAIL_RETRY_DEADLINE", "60", "retry_deadline", 60.0),
    ("FLUXMAIL_PROVIDERS_FILE", "extra.yaml", "providers_file", Path("extra.yaml")),
    ("FLUXMAIL_ALLOW_INSECURE_AUTH", "1", "allow_insecure_auth", True),
    ("FLUXMAIL_DRY_RUN", "On", "dry_run", True),
    ("FLUXMAIL_AUDIT", "no", "audit", False),
    ("FLUXMAIL_AUDIT_DIR", "/var/audit", "audit_dir", Path("/var/audit")),
    ("FLUXMAIL_FILE_DIR", "mails", "file_dir", Path("mails")),
    ("FLUXMAIL_RATE_LIMIT", "10", "rate_limit", 10.0),
    ("fluxmail_port", "26", "port", 26),
]

SECRETS = [
    ("FLUXMAIL_PASSWORD", "password"),
    ("FLUXMAIL_URL", "url"),
    ("FLUXMAIL_AUDIT_URL", "audit_url"),
    ("FLUXMAIL_AUDIT_PASSWORD", "audit_password"),
]


@pytest.mark.parametrize(("var", "raw", "field", "expected"), VARIABLES)
def test_every_variable_is_read(
    monkeypatch: pytest.MonkeyPatch, var: str, raw: str, field: str, expected: object
) -> None:
    """Each FLUXMAIL_* variable (any case) lands in its field, parsed."""
    monkeypatch.setenv(var, raw)
    assert getattr(FluxMailSettings(), field) == expected


@pytest.mark.parametrize(("var", "field"), SECRETS)
def test_secret_variables_are_secretstr(
    monkeypatch: pytest.MonkeyPatch, var: str, field: str
) -> None:
    """Secret variables are SecretStr and hidden in repr."""
    monkeypatch.setenv(var, "pg-s3cret-value")
    settings = FluxMailSettings()
    assert getattr(settings, field).get_secret_value() == "pg-s3cret-value"
    assert "pg-s3cret-value" not in repr(settings)


def test_upstream_defaults() -> None:
    """Upstream defaults: type smtp, timeout 30, max_retries 0, retry_delay 1.0."""
    settings = FluxMailSettings()
    assert (settings.type, settings.timeout, settings.max_retries, settings.retry_delay) == (
        "smtp",
        30.0,
        0,
        1.0,
    )
    assert settings.tls_verify is True and settings.audit is True
    assert settings.data_timeout == 600.0


@pytest.mark.parametrize(
    ("word", "expected"),
    [(w, True) for w in ("true", "1", "yes", "on", "TRUE", "Yes", "ON")]
    + [(w, False) for w in ("false", "0", "no", "off", "FALSE", "No", "Off")],
)
def test_boolean_words(monkeypatch: pytest.MonkeyPatch, word: str, expected: bool) -> None:
    """Booleans accept true/1/yes/on and false/0/no/off in any case."""
    monkeypatch.setenv("FLUXMAIL_TLS", word)
    assert FluxMailSettings().tls is expected


@pytest.mark.parametrize("word", ["maybe", "", "2", "t", "y", "enabled"])
def test_bad_boolean(monkeypatch: pytest.MonkeyPatch, word: str) -> None:
    """Anything else is invalid_boolean naming the variable and the allowed words."""
    monkeypatch.setenv("FLUXMAIL_DRY_RUN", word)
    with pytest.raises(ConfigurationError) as info:
        FluxMailSettings()
    assert info.value.code == "invalid_boolean"
    assert "FLUXMAIL_DRY_RUN" in str(info.value) and "yes" in str(info.value)


@pytest.mark.parametrize(
    ("var", "raw", "code"),
    [
        ("FLUXMAIL_PORT", "0", "invalid_port"),
        ("FLUXMAIL_PORT", "65536", "invalid_port"),
        ("FLUXMAIL_PORT", "-1", "invalid_port"),
        ("FLUXMAIL_PORT", "587abc", "invalid_port"),
        ("FLUXMAIL_TIMEOUT", "0", "invalid_timeout"),
        ("FLUXMAIL_TIMEOUT", "-3", "invalid_timeout"),
        ("FLUXMAIL_TIMEOUT", "nan", "invalid_timeout"),
        ("FLUXMAIL_TIMEOUT", "inf", "invalid_timeout"),
        ("FLUXMAIL_CONNECT_TIMEOUT", "NaN", "invalid_timeout"),
        ("FLUXMAIL_DATA_TIMEOUT", "-inf", "invalid_timeout"),
        ("FLUXMAIL_RETRY_DELAY", "-1", "invalid_timeout"),
        ("FLUXMAIL_MAX_RETRIES", "-1", "invalid_config"),
        ("FLUXMAIL_MAX_RETRIES", "1.5", "invalid_config"),
        ("FLUXMAIL_TYPE", "pigeon", "invalid_config"),
        ("FLUXMAIL_RATE_LIMIT", "0", "invalid_config"),
    ],
)
def test_bad_values(monkeypatch: pytest.MonkeyPatch, var: str, raw: str, code: str) -> None:
    """Out-of-range or malformed values give the stable code and name the variable."""
    monkeypatch.setenv(var, raw)
    with pytest.raises(ConfigurationError) as info:
        FluxMailSettings()
    assert info.value.code == code
    assert var in str(info.value)


def test_dotenv_is_read_and_env_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A .env in the working directory is read; the real environment wins over it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("FLUXMAIL_HOST=from-file\nFLUXMAIL_PORT=2525\nOTHER=x\n")
    monkeypatch.setenv("FLUXMAIL_HOST", "from-env")
    settings = FluxMailSettings()
    assert (settings.host, settings.port) == ("from-env", 2525)


def test_env_file_variable_points_elsewhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """FLUXMAIL_ENV_FILE names another .env file; a missing one is an error."""
    other = tmp_path / "prod.env"
    other.write_text("FLUXMAIL_HOST=prod.example.com\n")
    monkeypatch.setenv("FLUXMAIL_ENV_FILE", str(other))
    assert FluxMailSettings().host == "prod.example.com"
    monkeypatch.setenv("FLUXMAIL_ENV_FILE", str(tmp_path / "missing.env"))
    with pytest.raises(ConfigurationError, match="FLUXMAIL_ENV_FILE"):
        FluxMailSettings()


@pytest.mark.parametrize(("var", "field"), SECRETS)
@pytest.mark.parametrize("ending", ["\n", "", "\r\n"])
def test_secret_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, var: str, field: str, ending: str
) -> None:
    """<NAME>_FILE reads the secret from a file, stripping one trailing newline."""
    path = tmp_path / "secret"
    path.write_text("top secret" + ending, newline="")
    monkeypatch.setenv(f"{var}_FILE", str(path))
    assert getattr(FluxMailSettings(), field).get_secret_value() == "top secret"


def test_secret_file_keeps_inner_newlines(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only one trailing newline is stripped, nothing else."""
    path = tmp_path / "secret"
    path.write_text("a\n\n")
    monkeypatch.setenv("FLUXMAIL_PASSWORD_FILE", str(path))
    assert FluxMailSettings().password is not None
    assert FluxMailSettings().password.get_secret_value() == "a\n"  # type: ignore[union-attr]


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_bad_secret_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kind: str) -> None:
    """A missing file or a directory is secret_file naming the variable."""
    target = tmp_path / "nope" if kind == "missing" else tmp_path
    monkeypatch.setenv("FLUXMAIL_PASSWORD_FILE", str(target))
    with pytest.raises(ConfigurationError) as info:
        FluxMailSettings()
    assert info.value.code == "secret_file"
    assert "FLUXMAIL_PASSWORD_FILE" in str(info.value)


def test_secret_file_named_in_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A *_FILE variable may itself come from the .env file."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pw").write_text("from-file\n")
    (tmp_path / ".env").write_text(f"FLUXMAIL_PASSWORD_FILE={tmp_path / 'pw'}\n")
    layers = read_layers(settings_class()).layers
    assert [label for label, values in layers if "password" in values] == ["secret file"]


def test_settings_are_frozen() -> None:
    """Settings cannot be changed once built."""
    settings = FluxMailSettings()
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        settings.host = "x"  # type: ignore[misc]


# --- the sources, in one precedence --------------------------------------------------------


def _file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "secret"
    path.write_text(text + "\n")
    return str(path)


def _argument_over_environment(mp: pytest.MonkeyPatch, tmp: Path) -> dict[str, object]:
    mp.setenv("FLUXMAIL_TIMEOUT", "5")
    return {"timeout": 7}


def _environment_over_dotenv(mp: pytest.MonkeyPatch, tmp: Path) -> dict[str, object]:
    mp.setenv("FLUXMAIL_TIMEOUT", "7")
    (tmp / ".env").write_text("FLUXMAIL_TIMEOUT=5\n")
    return {}


def _dotenv_over_secret_file(mp: pytest.MonkeyPatch, tmp: Path) -> dict[str, object]:
    (tmp / ".env").write_text("FLUXMAIL_PASSWORD=winner\n")
    mp.setenv("FLUXMAIL_PASSWORD_FILE", _file(tmp, "loser"))
    return {}


def _secret_file_over_url(mp: pytest.MonkeyPatch, tmp: Path) -> dict[str, object]:
    mp.setenv("FLUXMAIL_PASSWORD_FILE", _file(tmp, "winner"))
    mp.setenv("FLUXMAIL_URL", "smtp://u:loser@mail.example.com")
    return {}


def _url_over_preset(mp: pytest.MonkeyPatch, tmp: Path) -> dict[str, object]:
    mp.setenv("FLUXMAIL_URL", "sendgrid://winner:key@")  # the preset's login is "apikey"
    return {}


def _preset_over_default(mp: pytest.MonkeyPatch, tmp: Path) -> dict[str, object]:
    mp.setenv("FLUXMAIL_PROVIDER", "sendgrid")
    mp.setenv("FLUXMAIL_PASSWORD", "key")
    return {}


# (set one setting in two adjacent sources, the setting, the value that wins, its source)
ADJACENT = [
    (_argument_over_environment, "timeout", 7.0, "argument"),
    (_environment_over_dotenv, "timeout", 7.0, "environment"),
    (_dotenv_over_secret_file, "password", "winner", ".env"),
    (_secret_file_over_url, "password", "winner", "secret file"),
    (_url_over_preset, "username", "winner", "url"),
    (_preset_over_default, "username", "apikey", "provider preset"),
]


@pytest.mark.parametrize(
    ("setup", "name", "value", "source"), ADJACENT, ids=[c[0].__name__ for c in ADJACENT]
)
def test_adjacent_sources_higher_wins_and_is_named(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    setup: Any,
    name: str,
    value: object,
    source: str,
) -> None:
    """One setting in two adjacent sources: the higher one wins and describe() names it."""
    from fluxmail.config.resolve import resolve_config

    monkeypatch.chdir(tmp_path)
    config = resolve_config(object_type="memory", **setup(monkeypatch, tmp_path))
    got = getattr(config, name)
    assert (got.get_secret_value() if hasattr(got, "get_secret_value") else got) == value
    assert config.describe()[name]["source"] == source


def test_precedence_is_the_order_of_the_sources() -> None:
    """settings_customise_sources returns the layers in PRECEDENCE order (before the preset)."""
    from fluxmail.config.sources import Trace, dotenv, environment, layers
    from fluxmail.config.urls import PRECEDENCE

    cls = settings_class()
    env = environment(cls, {})
    chain = layers(cls, dict, env, dotenv(cls, None, env.env_vars), Trace())
    assert tuple(layer.__name__ for layer in chain) == PRECEDENCE[:5]


def test_settings_know_the_source_of_each_value(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """FluxMailSettings().origins names the source of every value read (pydantic-settings)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("FLUXMAIL_PORT=2525\n")
    monkeypatch.setenv("FLUXMAIL_HOST", "env.example.com")
    settings = FluxMailSettings(timeout=3)
    assert settings.origins == {"timeout": "argument", "host": "environment", "port": ".env"}


def test_plain_settings_do_not_expand_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """FluxMailSettings() keeps FLUXMAIL_URL as one secret; resolve_config applies its parts."""
    from fluxmail.config.resolve import resolve_config

    monkeypatch.setenv("FLUXMAIL_URL", "smtp://u:pw@mail.example.com:2525")
    assert FluxMailSettings().host is None
    assert resolve_config().describe()["port"] == {"value": 2525, "source": "url"}


def test_pydantic_settings_debug_log_shows_no_secret(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """PYDANTIC_SETTINGS_DEBUG logs every source's values: the secrets are SecretStr there."""
    import logging

    from fluxmail.config.resolve import resolve_config

    monkeypatch.setenv("PYDANTIC_SETTINGS_DEBUG", "1")
    monkeypatch.setenv("FLUXMAIL_PASSWORD", "Zq9-debug-secret")
    monkeypatch.setenv("FLUXMAIL_URL", "smtp://u:Zq9-url-secret@mail.example.com")
    caplog.set_level(logging.DEBUG, logger="pydantic_settings")
    resolve_config()
    assert caplog.records and "Zq9" not in caplog.text
