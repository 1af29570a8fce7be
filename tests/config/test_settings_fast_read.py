"""The environment and .env layers read variables directly, as pydantic-settings would.

``fluxmail.config.sources`` skips pydantic-settings' per-field type analysis (a cold-start
cost); these tests prove the shortcut returns what the sources' own call returns for every
field, so a future field it would misread (an alias, a nested model, a list) fails here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fluxmail.config.settings import settings_class
from fluxmail.config.sources import _variables, dotenv, env_name, environment


def _every_variable(prefix_case: str = "upper") -> dict[str, str]:
    """A value for every field's variable (some blank, some odd case), names in ``prefix_case``."""
    values: dict[str, str] = {}
    for number, field in enumerate(settings_class().model_fields):
        name = env_name(field)
        values[name.lower() if prefix_case == "lower" else name] = (
            "" if number % 7 == 0 else f" Value-{number} "
        )
    values["FLUXMAIL_NOT_A_SETTING"] = "x"
    values["HOST"] = "no prefix"
    return values


@pytest.mark.parametrize("prefix_case", ["upper", "lower"])
def test_environment_read_matches_pydantic_settings(prefix_case: str) -> None:
    """Every field's environment variable gives the value EnvSettingsSource gives."""
    source = environment(settings_class(), _every_variable(prefix_case))
    assert _variables(source)() == source()


def test_dotenv_read_matches_pydantic_settings(tmp_path: Path) -> None:
    """Every field's .env line gives the value DotEnvSettingsSource gives (extras aside)."""
    lines = [f"{name}={value!r}" for name, value in _every_variable().items()]
    lines.append("FLUXMAIL_SENDER")  # a name without a value: pydantic-settings skips it
    path = tmp_path / "settings.env"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cls = settings_class()
    source = dotenv(cls, path, {})
    theirs = {k: v for k, v in source().items() if k in cls.model_fields and v is not None}
    ours = {k: v for k, v in _variables(source)().items() if v is not None}
    assert ours == theirs
    assert ours["host"] == " Value-1 "  # the file was read


def test_fields_have_nothing_the_direct_read_would_miss() -> None:
    """No alias and no value pydantic-settings would decode as JSON or explode from names."""
    cls = settings_class()
    source = environment(cls, {})
    for name, field in cls.model_fields.items():
        assert field.alias is None and field.validation_alias is None, name
        assert source._field_is_complex(field) == (False, False), name
