"""resolve_config: precedence and sources, TLS modes and ports, presets, the bad-input list,
sender resolution, describe(), secrets never leaking, and import hygiene."""

from __future__ import annotations

import logging
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from fluxmail.config.resolve import Config, resolve_config, resolve_sender
from fluxmail.errors import ConfigurationError
from tests.support import ROOT


def _env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name, value in values.items():
        monkeypatch.setenv(f"FLUXMAIL_{name.upper()}", value)


# --- precedence: argument > environment > .env > secret file > URL > preset > default ---------


def test_precedence_chain(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each layer wins over the ones below it, and describe() names the winning source."""
    (tmp_path / "pw").write_text("from-secret-file\n")
    (tmp_path / ".env").write_text(
        "FLUXMAIL_USERNAME=dotenv-user\nFLUXMAIL_TIMEOUT=11\nFLUXMAIL_MAX_RETRIES=4\n"
    )
    monkeypatch.chdir(tmp_path)
    _env(
        monkeypatch,
        url="smtps://url-user:url-pw@url.example.com:2465?retry_delay=3&sender=u%40x.com",
        password_file=str(tmp_path / "pw"),
        timeout="12",
        provider="gmail",
    )
    config = resolve_config(max_retries=5)
    describe = config.describe()
    expected = {
        "max_retries": (5, "argument"),
        "timeout": (12.0, "environment"),
        "username": ("dotenv-user", ".env"),
        "password": ("********", "secret file"),
        "retry_delay": (3.0, "url"),
        "host": ("url.example.com", "url"),
        "provider": ("gmail", "environment"),
        "data_timeout": (600.0, "default"),
    }
    for field, (value, source) in expected.items():
        assert (describe[field]["value"], describe[field]["source"]) == (value, source), field
    assert config.password is not None
    assert config.password.get_secret_value() == "from-secret-file"


def test_preset_layer_is_below_url_and_above_default() -> None:
    """Provider preset values fill what nothing above gave; the source says so."""
    config = resolve_config(provider="ses", region="eu-west-1", username="AKIA", password="x")
    assert config.sources["host"] == "provider preset"
    assert config.sources["port"] == "provider preset"
    assert config.sources["rate_limit"] == "provider preset"
    assert config.sources["timeout"] == "default"


def test_env_beats_dotenv_beats_secret_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """FLUXMAIL_PASSWORD in env beats .env, which beats FLUXMAIL_PASSWORD_FILE."""
    (tmp_path / "pw").write_text("file-pw")
    (tmp_path / ".env").write_text("FLUXMAIL_PASSWORD=dotenv-pw\n")
    monkeypatch.chdir(tmp_path)
    _env(monkeypatch, password_file=str(tmp_path / "pw"), username="u", host="localhost")
    assert resolve_config().sources["password"] == ".env"
    _env(monkeypatch, password="env-pw")
    config = resolve_config()
    assert config.sources["password"] == "environment"
    assert config.password is not None and config.password.get_secret_value() == "env-pw"


def test_env_file_argument(tmp_path: Path) -> None:
    """env_file= reads another .env file."""
    path = tmp_path / "x.env"
    path.write_text("FLUXMAIL_HOST=from-x.example.com\n")
    config = resolve_config(env_file=path)
    assert (config.host, config.sources["host"]) == ("from-x.example.com", ".env")


# --- upstream constructor and TLS modes ------------------------------------------------------


def test_upstream_constructor_kwargs() -> None:
    """The upstream keyword arguments keep their meaning."""
    context = ssl.create_default_context()
    config = resolve_config(
        object_type="smtp",
        host="smtp.gmail.com",
        port=587,
        use_tls=True,
        use_ssl=False,
        ssl_context=context,
        timeout=10,
        max_retries=3,
        retry_delay=2.0,
        username="me@gmail.com",
        password="app-password",
    )
    assert (config.backend, config.security, config.port, config.timeout) == (
        "smtp",
        "starttls",
        587,
        10.0,
    )
    assert (config.max_retries, config.retry_delay) == (3, 2.0)
    assert config.ssl_context() is context
    assert config.connect_timeout == config.command_timeout == 10.0


@pytest.mark.parametrize(
    ("kwargs", "security", "port"),
    [
        ({"host": "mail.example.com", "use_tls": True}, "starttls", 587),
        ({"host": "mail.example.com", "use_ssl": True}, "implicit", 465),
        ({"host": "mail.example.com", "use_tls": False}, "none", 25),
        ({"host": "mail.example.com"}, "starttls", 587),
        ({"host": "mail.example.com", "port": 465}, "implicit", 465),
        ({"host": "mail.example.com", "use_ssl": False, "port": 465}, "starttls", 465),
        ({"host": "localhost", "port": 1025}, "none", 1025),
        ({"host": "127.0.0.1"}, "none", 25),
        ({"provider": "yahoo", "username": "a@yahoo.com", "password": "p"}, "implicit", 465),
        (
            {"provider": "gmail", "use_ssl": True, "username": "a@x.com", "password": "p"},
            "implicit",
            465,
        ),
        (
            {"provider": "gmail", "port": 465, "username": "a@x.com", "password": "p"},
            "implicit",
            465,
        ),
        ({"provider": "sendgrid", "port": 2525, "password": "p"}, "starttls", 2525),
        (
            {"provider": "yahoo", "use_ssl": False, "username": "a@x.com", "password": "p"},
            "starttls",
            587,
        ),
        ({"provider": "elasticemail", "username": "a@x.com", "password": "p"}, "starttls", 2525),
    ],
)
def test_tls_mode_and_port_defaults(kwargs: dict[str, object], security: str, port: int) -> None:
    """The TLS mode comes from the flags, URL, preset or port; the port from mode or preset."""
    config = resolve_config(**kwargs)
    assert (config.security, config.port) == (security, port)


def test_ssl_context_default_verifies() -> None:
    """The default context verifies certificates and host names, TLS 1.2 at least."""
    context = resolve_config(host="mail.example.com").ssl_context()
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert resolve_config(host="mail.example.com", use_tls=False).ssl_context() is None


def test_ssl_context_ca_file_and_verify_off(tmp_path: Path) -> None:
    """FLUXMAIL_CA_FILE loads a private CA; tls_verify=False turns checks off explicitly."""
    import certifi

    ca = tmp_path / "ca.pem"
    ca.write_bytes(Path(certifi.where()).read_bytes())
    config = resolve_config(host="mail.example.com", ca_file=str(ca), tls_verify="false")
    context = config.ssl_context()
    assert context is not None and context.verify_mode == ssl.CERT_NONE
    assert config.ssl_context() is context  # built once


# --- bad input ------------------------------------------------------------------------------

BAD_INPUT: list[tuple[dict[str, object], str, str]] = [
    ({"host": "h.example.com", "port": 0}, "invalid_port", "port"),
    ({"host": "h.example.com", "port": 65536}, "invalid_port", "port"),
    ({"host": "h.example.com", "port": -1}, "invalid_port", "port"),
    ({"host": "h.example.com", "port": "587abc"}, "invalid_port", "port"),
    ({"host": "h.example.com", "timeout": 0}, "invalid_timeout", "timeout"),
    ({"host": "h.example.com", "timeout": float("nan")}, "invalid_timeout", "timeout"),
    ({"host": "h.example.com", "timeout": float("inf")}, "invalid_timeout", "timeout"),
    ({"host": "h.example.com", "command_timeout": -1}, "invalid_timeout", "command_timeout"),
    ({"host": "h.example.com", "use_tls": "maybe"}, "invalid_boolean", "use_tls"),
    ({"host": "h.example.com", "use_tls": ""}, "invalid_boolean", "use_tls"),
    ({"host": "h.example.com", "use_ssl": 2}, "invalid_boolean", "use_ssl"),
    ({"host": "h.example.com", "use_tls": True, "use_ssl": True}, "invalid_config", "use_ssl"),
    (
        {"provider": "gmail", "port": 2525, "username": "a@b.co", "password": "p"},
        "port_not_offered",
        "FLUXMAIL_PORT",
    ),
    (
        {"provider": "postmark", "use_ssl": True, "password": "p"},
        "port_not_offered",
        "FLUXMAIL_SSL",
    ),
    (
        {"provider": "gmail", "use_tls": False, "username": "a@b.co", "password": "p"},
        "port_not_offered",
        "FLUXMAIL_TLS",
    ),
    ({"provider": "sendgird", "password": "p"}, "unknown_provider", "sendgrid"),
    (
        {"provider": "ses", "username": "AKIA", "password": "p"},
        "region_required",
        "FLUXMAIL_REGION",
    ),
    (
        {"provider": "zoho", "region": "mars", "username": "a@b.co", "password": "p"},
        "invalid_region",
        "FLUXMAIL_REGION",
    ),
    ({"host": "h.example.com", "username": "u"}, "credentials_incomplete", "FLUXMAIL_PASSWORD"),
    ({"host": "h.example.com", "password": "p"}, "credentials_incomplete", "FLUXMAIL_USERNAME"),
    ({"provider": "sendgrid"}, "credentials_incomplete", "FLUXMAIL_PASSWORD"),
    (
        {"host": "h.example.com", "use_tls": False, "username": "u", "password": "p"},
        "insecure_auth",
        "FLUXMAIL_ALLOW_INSECURE_AUTH",
    ),
    ({"url": "smtp+plain://u:p@h.example.com"}, "insecure_auth", "FLUXMAIL_TLS"),
    ({"url": "smtp://h.example.com/x"}, "invalid_url", "FLUXMAIL_URL"),
    ({}, "invalid_config", "FLUXMAIL_HOST"),
    ({"use_tls": True}, "invalid_config", "FLUXMAIL_PROVIDER"),
    ({"object_type": "carrier-pigeon"}, "invalid_config", "object_type"),
    ({"host": "h.example.com", "hots": "x"}, "invalid_config", "hots"),
    (
        {"host": "h.example.com", "ca_file": "/nonexistent/ca.pem"},
        "invalid_config",
        "FLUXMAIL_CA_FILE",
    ),
    (
        {"host": "h.example.com", "sender": "a@b.co\r\nBcc: x@y.z"},
        "invalid_config",
        "FLUXMAIL_SENDER",
    ),
    ({"host": "h.example.com", "sender": "not an address"}, "invalid_config", "FLUXMAIL_SENDER"),
    ({"host": "h.example.com", "ssl_context": "yes"}, "invalid_config", "ssl_context"),
    ({"host": "h.example.com", "local_hostname": "a b"}, "invalid_host", "FLUXMAIL_LOCAL_HOSTNAME"),
]


@pytest.mark.parametrize(("kwargs", "code", "named"), BAD_INPUT)
def test_bad_input(kwargs: dict[str, object], code: str, named: str) -> None:
    """Each bad input is a ConfigurationError with a stable code naming what to fix."""
    with pytest.raises(ConfigurationError) as info:
        resolve_config(**kwargs)
    assert info.value.code == code
    assert named in str(info.value)


def test_bad_providers_file(tmp_path: Path) -> None:
    """A providers override that breaks the schema is invalid_providers_file."""
    extra = tmp_path / "p.yaml"
    extra.write_text("providers:\n  gmail:\n    port: 2525\n")
    with pytest.raises(ConfigurationError) as info:
        resolve_config(provider="gmail", providers_file=extra, username="a@b.co", password="p")
    assert info.value.code == "invalid_providers_file"
    assert "gmail" in str(info.value) and "port" in str(info.value)


def test_missing_providers_file(tmp_path: Path) -> None:
    """A FLUXMAIL_PROVIDERS_FILE that does not exist is invalid_providers_file."""
    with pytest.raises(ConfigurationError) as info:
        resolve_config(host="h.example.com", providers_file=tmp_path / "none.yaml")
    assert info.value.code == "invalid_providers_file"


@pytest.mark.parametrize("backend", ["console", "file", "memory"])
def test_non_smtp_backends_need_no_host(backend: str) -> None:
    """console/file/memory resolve without a host or credentials."""
    config = resolve_config(object_type=backend)
    assert (config.backend, config.host, config.port) == (backend, None, None)


def test_insecure_auth_allowed_explicitly_and_on_loopback() -> None:
    """Plain credentials are allowed to loopback, or elsewhere with allow_insecure_auth."""
    assert resolve_config(host="127.0.0.1", port=1025, username="u", password="p").port == 1025
    config = resolve_config(
        host="relay.lan", use_tls=False, username="u", password="p", allow_insecure_auth=True
    )
    assert config.security == "none"


# --- provider presets and sender resolution ----------------------------------------------------


def test_sendgrid_password_and_sender_is_complete(monkeypatch: pytest.MonkeyPatch) -> None:
    """FLUXMAIL_PROVIDER=sendgrid + FLUXMAIL_PASSWORD + FLUXMAIL_SENDER is a full setup."""
    _env(monkeypatch, provider="sendgrid", password="SG.key", sender="App <app@example.com>")
    config = resolve_config()
    assert (config.host, config.port, config.security) == ("smtp.sendgrid.net", 587, "starttls")
    assert (config.username, config.sources["username"]) == ("apikey", "provider preset")
    assert resolve_sender(config, None) == "App <app@example.com>"


def test_postmark_token_is_username_and_redacted() -> None:
    """Postmark reuses the token as the username; describe() and repr() hide it."""
    config = resolve_config(provider="postmark", password="pm-token-123", sender="a@b.co")
    assert config.username == "pm-token-123"
    assert config.describe()["username"]["value"] == "********"
    assert "pm-token-123" not in repr(config)


SENDERS: list[tuple[dict[str, object], str | None, str | None]] = [
    (
        {"host": "h.example.com", "username": "me@example.com", "password": "p"},
        None,
        "me@example.com",
    ),
    (
        {
            "host": "h.example.com",
            "username": "me@example.com",
            "password": "p",
            "sender": "S <s@x.com>",
        },
        None,
        "S <s@x.com>",
    ),
    (
        {
            "host": "h.example.com",
            "username": "me@example.com",
            "password": "p",
            "sender": "s@x.com",
        },
        "e@x.com",
        "e@x.com",
    ),
    ({"provider": "gmail", "username": "me@gmail.com", "password": "p"}, None, "me@gmail.com"),
    (
        {"provider": "mailgun", "username": "postmaster@mg.x.com", "password": "p"},
        None,
        "postmaster@mg.x.com",
    ),
    ({"provider": "sendgrid", "password": "p"}, None, None),
    ({"provider": "mailtrap", "password": "p"}, None, None),
    ({"provider": "resend", "password": "p"}, None, None),
    ({"provider": "sparkpost", "password": "p"}, None, None),
    ({"provider": "postmark", "password": "pm-token-zz"}, None, None),
    (
        {"provider": "ses", "region": "us-east-1", "username": "a@b.com", "password": "p"},
        None,
        None,
    ),
    ({"provider": "mandrill", "username": "me@x.com", "password": "p"}, None, None),
    ({"host": "h.example.com", "username": "apikey", "password": "p"}, None, None),
    ({"object_type": "memory"}, None, None),
]


@pytest.mark.parametrize(("kwargs", "explicit", "expected"), SENDERS)
def test_sender_resolution(
    kwargs: dict[str, object], explicit: str | None, expected: str | None
) -> None:
    """explicit > FLUXMAIL_SENDER > address-like login (if the provider allows) > error."""
    config = resolve_config(**kwargs)
    if expected is None:
        with pytest.raises(ConfigurationError) as info:
            resolve_sender(config, explicit)
        assert info.value.code == "sender_required"
        assert "FLUXMAIL_SENDER" in str(info.value) and "sender=" in str(info.value)
        if config.username:
            assert config.username not in str(info.value)
    else:
        assert resolve_sender(config, explicit) == expected


def test_rate_limit_defaults_from_provider() -> None:
    """A provider's published per-second limit is the default; FLUXMAIL_RATE_LIMIT wins."""
    kwargs: dict[str, object] = {
        "provider": "ses",
        "region": "us-east-1",
        "username": "A",
        "password": "p",
    }
    assert resolve_config(**kwargs).rate_limit == 1.0
    assert resolve_config(rate_limit=14, **kwargs).rate_limit == 14.0


def test_describe_covers_every_field_with_a_source() -> None:
    """describe() lists every Config field with a known source label."""
    describe = resolve_config(host="h.example.com").describe()
    labels = {"argument", "environment", ".env", "secret file", "url", "provider preset", "default"}
    assert "host" in describe and "sources" not in describe
    assert all(entry["source"] in labels for entry in describe.values())
    assert describe["password"]["value"] is None


# --- secrets never leak ----------------------------------------------------------------------

SECRET = "Zq9-distinctive-s3cret-PW"


def _via_argument(mp: pytest.MonkeyPatch, tmp: Path) -> dict[str, object]:
    return {"password": SECRET}


def _via_env(mp: pytest.MonkeyPatch, tmp: Path) -> dict[str, object]:
    mp.setenv("FLUXMAIL_PASSWORD", SECRET)
    return {}


def _via_dotenv(mp: pytest.MonkeyPatch, tmp: Path) -> dict[str, object]:
    (tmp / ".env").write_text(f"FLUXMAIL_PASSWORD={SECRET}\n")
    mp.chdir(tmp)
    return {}


def _via_file(mp: pytest.MonkeyPatch, tmp: Path) -> dict[str, object]:
    (tmp / "pw").write_text(SECRET + "\n")
    mp.setenv("FLUXMAIL_PASSWORD_FILE", str(tmp / "pw"))
    return {}


def _via_url(mp: pytest.MonkeyPatch, tmp: Path) -> dict[str, object]:
    mp.setenv("FLUXMAIL_URL", f"smtp://user:{SECRET}@mail.example.com")
    return {}


PATHS: list[Callable[[pytest.MonkeyPatch, Path], dict[str, object]]] = [
    _via_argument,
    _via_env,
    _via_dotenv,
    _via_file,
    _via_url,
]

# Each of these fails after the password has been read.
LEAKY_BAD_INPUTS: list[dict[str, object]] = [
    {"port": "587abc"},
    {"timeout": "nan"},
    {"use_tls": "maybe"},
    {"use_tls": True, "use_ssl": True},
    {"use_tls": False},
    {"provider": "sendgird"},
    {"provider": "ses"},
    {"host": "mail.example.com:0"},
    {"object_type": "x"},
    {"sender": "bad"},
]


@pytest.mark.parametrize("path", PATHS, ids=lambda f: f.__name__)
def test_secret_never_leaks(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    path: Callable[[pytest.MonkeyPatch, Path], dict[str, object]],
) -> None:
    """A distinctive password from any input path never shows in repr, describe, errors, logs."""
    from fluxmail.config.settings import FluxMailSettings

    caplog.set_level(logging.DEBUG)
    base = {"username": "user", "host": "mail.example.com", **path(monkeypatch, tmp_path)}
    if path is _via_url:
        base = {}
    config = resolve_config(**base)
    assert config.password is not None and config.password.get_secret_value() == SECRET
    settings = FluxMailSettings(**({"password": SECRET} if path is _via_argument else {}))
    texts = [repr(config), str(config), str(config.describe()), repr(settings), str(settings)]
    for bad in LEAKY_BAD_INPUTS:
        with pytest.raises(ConfigurationError) as info:
            resolve_config(**{**base, **bad})
        texts += [str(info.value), repr(info.value), str(info.value.to_dict())]
        texts.append(str(info.value.__cause__) + str(info.value.__context__))
    texts += [record.getMessage() for record in caplog.records]
    leaked = [text for text in texts if SECRET in text]
    assert not leaked


def test_secret_in_bad_secret_typed_value_not_echoed() -> None:
    """A wrongly typed secret's error does not echo it, not even in a chained pydantic error."""
    with pytest.raises(ConfigurationError) as info:
        resolve_config(host="h.example.com", username="u", password=["Zq9-list-secret"])
    assert "Zq9-list-secret" not in str(info.value)
    assert info.value.__context__ is None and info.value.__cause__ is None


@pytest.mark.parametrize(
    "url", ["smtp://u:Zq9-pw@host:port", "smtp://u:Zq9-pw@[::1", "smtp://h?&&"]
)
def test_url_parse_error_carries_no_urllib_error(url: str) -> None:
    """urllib's own error (which can quote the URL) is not chained to ours."""
    with pytest.raises(ConfigurationError) as info:
        resolve_config(url=url)
    assert info.value.code == "invalid_url"
    assert info.value.__context__ is None and "Zq9-pw" not in str(info.value)


# --- import hygiene -----------------------------------------------------------------------------

HEAVY = ("yaml", "aiosmtplib", "rich", "sqlite3", "asyncio", "certifi", "pydantic_settings")


def _imported(code: str) -> list[str]:
    script = (
        "import sys, types\n"
        # Load fluxmail.config.resolve alone: the package __init__ belongs to other modules.
        f"pkg = types.ModuleType('fluxmail'); pkg.__path__ = [{str(ROOT / 'fluxmail')!r}]\n"
        "sys.modules['fluxmail'] = pkg\n"
        f"{code}\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return [m for m in out.stdout.strip().split(",") if m]


def test_import_config_is_light() -> None:
    """Importing the configuration loads no yaml, aiosmtplib, rich, sqlite3, asyncio or certifi."""
    assert _imported("import fluxmail.config.resolve") == []


def test_resolving_without_provider_loads_no_yaml_or_certifi() -> None:
    """Resolving a plain configuration reads no catalog and builds no TLS context."""
    loaded = _imported(
        "import fluxmail.config.resolve as c; c.resolve_config(host='h.example.com')"
    )
    # pydantic-settings itself imports asyncio; everything else must stay unloaded.
    assert set(loaded) <= {"pydantic_settings", "asyncio"}


def test_config_is_frozen() -> None:
    """Config is immutable."""
    config: Config = resolve_config(object_type="memory")
    with pytest.raises(AttributeError):
        config.host = "x"  # type: ignore[misc]


def test_the_declared_names_are_the_settings_models_fields() -> None:
    """field_names() reads the declaration without building the model: it must list exactly
    the fields pydantic-settings builds, in their order (the known variables come from it)."""
    from fluxmail.config.fields import field_names
    from fluxmail.config.settings import settings_class

    assert field_names() == tuple(settings_class().model_fields)


def test_the_settings_documented_as_secret_are_the_secret_fields() -> None:
    """The reference marks secrets from SECRET_FIELDS; the declarations' own flags agree."""
    from fluxmail.config.fields import field_docs
    from fluxmail.config.sources import SECRET_FIELDS

    assert {name for name, doc in field_docs().items() if doc.secret} == set(SECRET_FIELDS)


def test_the_settings_model_is_built_from_plain_defaults_with_the_declared_values() -> None:
    """No pydantic Field per setting (a cold-start cost); the defaults are the declared ones."""
    from fluxmail.config.fields import field_docs
    from fluxmail.config.settings import settings_class

    fields = settings_class().model_fields
    docs = field_docs()
    assert list(fields) == list(docs)
    assert all(fields[name].default == doc.default for name, doc in docs.items())
    assert all(doc.text and fields[name].description is None for name, doc in docs.items())
