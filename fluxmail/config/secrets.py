"""Secrets and the security rules around them.

Secret files (``FLUXMAIL_PASSWORD_FILE`` and friends, as Docker and Kubernetes mount them), the
preset login, and the rules that refuse credentials in the clear. Nothing here
ever puts a secret value into a message: errors name the variable, never its content.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr

from fluxmail.config.urls import is_loopback
from fluxmail.errors import ConfigurationError
from fluxmail.redaction import REDACTED

if TYPE_CHECKING:
    from fluxmail.config.model import Config
    from fluxmail.config.providers import Provider

__all__ = ["REDACTED", "check_smtp", "preset_username", "read_secret_file"]


def read_secret_file(var: str, raw_path: str) -> str:
    """The content of a ``*_FILE`` secret, minus one trailing newline."""
    path = Path(raw_path)
    try:
        text = path.read_text(encoding="utf-8")
    except IsADirectoryError:
        problem = "is a directory"
    except FileNotFoundError:
        problem = "does not exist"
    except PermissionError:
        problem = "is not readable (permission denied)"
    except (OSError, UnicodeDecodeError):
        problem = "cannot be read as UTF-8 text"
    else:
        # Docker/Kubernetes secrets usually end with one newline that is not part of the secret.
        return text[:-2] if text.endswith("\r\n") else text.removesuffix("\n")
    raise ConfigurationError(
        f"{var}={str(path)!r}: the secret file {problem}; give the path of a file that holds "
        "only the secret",
        code="secret_file",
    )


def preset_username(
    username: str | None, password: SecretStr | None, provider: Provider | None, src: dict[str, str]
) -> str | None:
    if username is not None or provider is None:
        return username
    if provider.username_literal:
        src["username"] = "provider preset"
        return provider.username_literal
    if provider.username_is_password and password is not None:
        src["username"] = "provider preset"
        return password.get_secret_value()
    return None


_SET_PASSWORD = "set FLUXMAIL_PASSWORD (or FLUXMAIL_PASSWORD_FILE, or password=)"
# How to take the username back, by the layer that gave it (Config.sources labels).
_UNSET_USERNAME = {
    "argument": ("the username= argument", "drop username="),
    ".env": ("FLUXMAIL_USERNAME in the .env file", "remove FLUXMAIL_USERNAME from .env"),
    "url": ("the user part of FLUXMAIL_URL", "remove the user from FLUXMAIL_URL"),
}


def _missing_password(c: Config) -> str:
    """The fix for a login without a password, fitting where the login came from."""
    source = c.sources.get("username", "environment")
    if source == "provider preset" and c.provider is not None:
        key = c.provider.password_hint or "the password of that login"
        return (
            f"the {c.provider.title} preset logs in as {c.username!r}, which needs a password: "
            f"{_SET_PASSWORD} to {key}"
        )
    given, undo = _UNSET_USERNAME.get(source, ("FLUXMAIL_USERNAME", "unset FLUXMAIL_USERNAME"))
    if source == "url":
        return (
            f"{given} names a login but there is no password: put it in the URL "
            f"(smtp://user:password@host), {_SET_PASSWORD}, or {undo}"
        )
    return f"a username is set ({given}) but no password: {_SET_PASSWORD}, or {undo}"


def check_smtp(c: Config) -> None:
    """Host present, credentials complete, and never sent in the clear off the machine."""
    if c.host is None:
        raise ConfigurationError(
            "FLUXMAIL_HOST is required when FLUXMAIL_TYPE=smtp: set FLUXMAIL_HOST, "
            "FLUXMAIL_PROVIDER or FLUXMAIL_URL (or choose FLUXMAIL_TYPE=console/file/memory)",
            code="invalid_config",
        )
    if c.username is not None and c.password is None and c.auth == "password":
        raise ConfigurationError(_missing_password(c), code="credentials_incomplete")
    if c.password is not None and c.username is None:
        raise ConfigurationError(
            "a password is set but no username: set FLUXMAIL_USERNAME (or username=), or "
            "FLUXMAIL_PROVIDER when the provider's login is fixed",
            code="credentials_incomplete",
        )
    if (
        c.password is not None
        and c.security == "none"
        and not is_loopback(c.host)
        and not c.allow_insecure_auth
    ):
        raise ConfigurationError(
            f"refusing to send credentials without TLS to {c.host}: use STARTTLS (FLUXMAIL_TLS="
            "true) or implicit TLS (FLUXMAIL_SSL=true), or set FLUXMAIL_ALLOW_INSECURE_AUTH=true "
            "if the network path is trusted",
            code="insecure_auth",
        )
