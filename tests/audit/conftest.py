"""Fixtures of the audit store tests."""

from __future__ import annotations

import pytest

from fluxmail.audit.deferred import Materializer


@pytest.fixture
def no_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The background writer never runs: as if the process died right after the claims."""
    monkeypatch.setattr(Materializer, "wake", lambda self: None)
