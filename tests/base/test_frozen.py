"""Frozen data without generated code (fluxmail/_frozen.py): ``Config`` and ``Address`` refuse
assignment like frozen dataclasses, and building a mailer compiles no dataclass method."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from fluxmail.config.resolve import resolve_config
from fluxmail.message.addresses import Address

# Records the module of each fluxmail class whose methods dataclasses compiles from source
# while a mailer is built from the environment in a fresh interpreter (a cold start).
PROBE = """
import builtins, sys
compiled = []
real_exec = builtins.exec
def recording_exec(source, globals=None, *args):
    caller = sys._getframe(1).f_code.co_filename
    module = (globals or {}).get("__name__", "")
    if caller.endswith("dataclasses.py") and module.startswith("fluxmail"):
        compiled.append(module)
    return real_exec(source, globals, *args)
builtins.exec = recording_exec
from fluxmail import FluxMail
FluxMail.from_env()
print(compiled)
"""


def test_config_refuses_assignment_and_deletion() -> None:
    """A resolved Config is read-only, as a frozen dataclass is; replace() still works."""
    config = resolve_config(object_type="memory", sender="s@example.com")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.host = "evil.example"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del config.sender
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.not_a_field = 1  # type: ignore[attr-defined]
    changed = dataclasses.replace(config, sender="other@example.com")
    assert (changed.sender, config.sender) == ("other@example.com", "s@example.com")


def test_address_refuses_assignment_and_keeps_its_constructor() -> None:
    """Address takes addr and name by position or keyword, and no field can change."""
    assert Address("a@x.org", "A") == Address(addr="a@x.org", name="A")
    assert Address("a@x.org").name == ""
    address = Address("a@x.org")
    with pytest.raises(dataclasses.FrozenInstanceError):
        address.name = "Eve"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del address.addr
    assert address.domain == "x.org"  # cached properties still fill the instance's dict
    assert dataclasses.replace(address, name="B") == Address("a@x.org", "B")
    with pytest.raises(TypeError):
        Address()  # type: ignore[call-arg]


def test_building_a_mailer_compiles_no_dataclass_method(tmp_path) -> None:
    """from_env() in a fresh interpreter makes dataclasses compile nothing (cold start)."""
    env = {"FLUXMAIL_TYPE": "memory", "FLUXMAIL_SENDER": "s@example.com", "PATH": "/usr/bin"}
    ran = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60,
        check=False, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "[]"
