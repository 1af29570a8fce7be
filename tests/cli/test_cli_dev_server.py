"""``fluxmail dev-server --host``: a host other than loopback is warned about on stderr."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from fluxmail.cli.dev_server import exposure_warning
from tests.support.cli import cli


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "10.0.0.5", "", "myhost"])
def test_non_loopback_hosts_are_warned_about(host: str) -> None:
    """Every interface, IPv6 any, LAN addresses and names: reachable from the network."""
    warning = exposure_warning(host)
    assert warning is not None and "reachable from the network" in warning


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_hosts_are_not_warned_about(host: str) -> None:
    """Loopback never leaves the machine: no warning."""
    assert exposure_warning(host) is None


def test_cli_warns_on_stderr_before_listening(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A LAN address (TEST-NET-1, not on this machine: binding fails) is warned about first."""
    folder = str(tmp_path / "mail")
    ran = cli(capsys, monkeypatch, "dev-server", "--host", "192.0.2.1", "--port", "0",
              "--folder", folder)  # fmt: skip
    assert ran.code == 1 and "cannot listen on 192.0.2.1" in ran.err, ran.both
    assert ran.err.startswith("warning: --host 192.0.2.1 is not a loopback address")
    assert "reachable from the network" in ran.err and "warning" not in ran.out


def test_cli_loopback_has_no_warning(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The default loopback host prints no warning (a busy port makes the run end at once)."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        ran = cli(capsys, monkeypatch, "dev-server", "--port", port,
                  "--folder", str(tmp_path / "mail"))  # fmt: skip
    assert ran.code == 1 and "cannot listen" in ran.err, ran.both
    assert "warning" not in ran.both
