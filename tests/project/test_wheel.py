"""The built wheel ships providers.yaml and loads the catalog from an installed package."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import fluxmail
from tests.support import ROOT


def _run(*args: str | Path, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=110
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _assert_lean_core(meta: str) -> None:
    """The core needs idna but not aiosmtpd nor css-inline: those come with their extras only."""
    requires = [line[len("Requires-Dist: ") :] for line in meta.splitlines() if line.startswith(
        "Requires-Dist: ")]  # fmt: skip
    core = [r for r in requires if "extra ==" not in r]
    assert any(r.startswith("idna") for r in core), core
    assert not any(r.startswith(("aiosmtpd", "css-inline", "css_inline")) for r in core), core
    assert "Provides-Extra: dev-server" in meta and "Provides-Extra: css" in meta
    assert any(r.startswith("aiosmtpd") and "extra == 'dev-server'" in r for r in requires)
    assert any(r.startswith("css-inline") and "extra == 'css'" in r for r in requires)
    # The dev extra (make install) pulls in the other extras, so make test has them all.
    dev = [r for r in requires if "extra == 'dev'" in r]
    for package in ("aiosmtpd", "css-inline", "psycopg"):
        assert any(r.startswith(package) for r in dev), dev


@pytest.mark.slow
def test_wheel_installs_and_loads_catalog(tmp_path: Path) -> None:
    """Build the wheel, install it into a fresh venv, load the catalog from the installed copy."""
    dist = tmp_path / "dist"
    # The build step docs/quickstart.md gives ("python -m pip wheel --no-deps --wheel-dir dist .").
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--wheel-dir",
        dist,
        ROOT,
        cwd=tmp_path,
    )
    (wheel,) = dist.glob("fluxmail-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "fluxmail/providers.yaml" in names and "fluxmail/py.typed" in names
    # The name the docs tell users to install (docs/quickstart.md) is the one the build makes.
    assert wheel.name == f"fluxmail-{fluxmail.__version__}-py3-none-any.whl"
    meta = zipfile.ZipFile(wheel).read(f"fluxmail-{fluxmail.__version__}.dist-info/METADATA")
    assert f"Version: {fluxmail.__version__}\n" in meta.decode()
    assert "Provides-Extra: postgres" in meta.decode() and ".invalid" not in meta.decode()
    _assert_lean_core(meta.decode())

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    # Install only fluxmail itself (offline, fast); its dependencies come from this test's
    # environment through a plain path entry, so the checkout's editable .pth is not used.
    _run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "-q",
        "--no-deps",
        "--no-index",
        wheel,
        cwd=tmp_path,
    )
    site = Path(
        _run(
            python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp_path
        ).strip()
    )
    (site / "_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")

    script = (
        "import fluxmail.config.providers as p\n"
        "print(p.__file__); print(p.catalog_path()); print(len(p.load_catalog()))\n"
        "print(p.get_provider('sendgrid').username_literal)\n"
        "import fluxmail, importlib.metadata as m\n"
        "print(m.version('fluxmail'), fluxmail.__version__)\n"
    )
    out = _run(python, "-c", script, cwd=tmp_path).split()
    module, catalog, count, literal, installed, attribute = out
    assert Path(module).is_relative_to(venv) and Path(catalog).is_relative_to(venv)
    assert int(count) >= 25 and literal == "apikey"
    assert installed == attribute == fluxmail.__version__
