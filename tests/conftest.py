"""Shared fixtures: a clean FLUXMAIL_* environment for every test (servers live in servers.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every test starts with no FLUXMAIL_* variables and in an empty working directory."""
    for name in list(os.environ):
        if name.startswith("FLUXMAIL_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    yield
