"""End to end: the installed ``fluxmail`` console script, as a subprocess, against real servers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.support.cli import FLUXMAIL, DevServerProcess, clean_environ, run_script
from tests.support.servers import SMTPTestServer

pytestmark = pytest.mark.slow

Server = Callable[..., SMTPTestServer]


@pytest.fixture(autouse=True)
def _needs_script() -> None:
    """These tests run the console script that `make install` puts next to the interpreter."""
    if not FLUXMAIL.exists():
        pytest.skip(f"{FLUXMAIL} is not installed (run make install)")


def test_dev_server_send_audit(tmp_path: Path) -> None:
    """dev-server catches a send configured only by env vars; audit list shows the record."""
    server = DevServerProcess(tmp_path)
    try:
        (tmp_path / "hello.txt").write_text("hello\n")
        env = clean_environ(
            FLUXMAIL_HOST="127.0.0.1", FLUXMAIL_PORT=str(server.port), FLUXMAIL_TLS="false",
            FLUXMAIL_SENDER="Demo <demo@example.com>",
        )  # fmt: skip
        args = ("send", "--to", "you@example.com", "--subject", "E2E", "--text", "Hi")
        sent = run_script(*args, "--attach", "hello.txt", "--json", env=env, cwd=tmp_path)
        assert sent.returncode == 0, sent.stderr
        result = json.loads(sent.stdout)
        listed = run_script("audit", "list", env=env, cwd=tmp_path)
        assert listed.returncode == 0 and result["audit_id"] in listed.stdout
    finally:
        log = server.stop()
    assert "subject:     E2E" in log and "attachment:  hello.txt (6 bytes)" in log
    assert "stopped; 1 message(s) received" in log
    [eml] = (tmp_path / "fluxmail-dev-mail").glob("*.eml")
    assert b"Subject: E2E" in eml.read_bytes()


def test_check_untrusted_until_ca_file(smtp_server: Server, tmp_path: Path) -> None:
    """check on a trustme STARTTLS server: untrusted (exit 6) until FLUXMAIL_CA_FILE is set."""
    server = smtp_server(tls="starttls", auth=("u@example.com", "pw-e2e-123"))
    env = clean_environ(
        FLUXMAIL_HOST="127.0.0.1", FLUXMAIL_PORT=str(server.port), FLUXMAIL_TLS="true",
        FLUXMAIL_USERNAME="u@example.com", FLUXMAIL_TIMEOUT="10",
    )  # fmt: skip
    untrusted = run_script("check", "--password-stdin", env=env, cwd=tmp_path, stdin="pw-e2e-123")
    assert untrusted.returncode == 6, untrusted.stdout + untrusted.stderr
    assert "not trusted" in untrusted.stderr and "FLUXMAIL_CA_FILE" in untrusted.stderr
    assert "Traceback" not in untrusted.stderr
    env["FLUXMAIL_CA_FILE"] = server.ca_path
    trusted = run_script("check", "--password-stdin", env=env, cwd=tmp_path, stdin="pw-e2e-123")
    assert trusted.returncode == 0, trusted.stderr
    assert "ok as u@example.com" in trusted.stdout and "TLSv1." in trusted.stdout
    assert "pw-e2e-123" not in trusted.stdout + trusted.stderr
    assert "\x1b[" not in trusted.stdout  # no colour when not on a terminal


def test_dev_server_tls_generated_certificate(tmp_path: Path) -> None:
    """dev-server --tls makes a certificate that check trusts once FLUXMAIL_CA_FILE names it."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    server = DevServerProcess(tmp_path, "--tls")
    try:
        cert = tmp_path / "fluxmail-dev-mail" / "dev-cert.pem"
        env = clean_environ(
            FLUXMAIL_HOST="127.0.0.1", FLUXMAIL_PORT=str(server.port), FLUXMAIL_TLS="true",
            FLUXMAIL_CA_FILE=str(cert), FLUXMAIL_SENDER="demo@example.com",
        )  # fmt: skip
        checked = run_script("check", "--json", env=env, cwd=tmp_path)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert json.loads(checked.stdout)["tls"]["version"].startswith("TLSv1.")
    finally:
        log = server.stop()
    assert "with STARTTLS" in log and str(cert) in log


def test_python_dash_m_exit_codes(tmp_path: Path) -> None:
    """`python -m fluxmail` is the same CLI and its exit codes reach the shell."""
    env = clean_environ()
    version = subprocess.run(
        [sys.executable, "-m", "fluxmail", "--version"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert version.returncode == 0 and version.stdout.startswith("fluxmail ")
    wrong = run_script("send", "--to", "x@example.com", env=env, cwd=tmp_path)
    assert wrong.returncode == 2 and wrong.stderr.startswith("error:")
    unconfigured = run_script("check", env=env, cwd=tmp_path)
    assert unconfigured.returncode == 3 and "FLUXMAIL_HOST" in unconfigured.stderr


def test_make_demo_script(tmp_path: Path) -> None:
    """scripts/demo.sh (what `make demo` runs) sends through the dev server and audits it."""
    done = subprocess.run(
        ["sh", str(ROOT / "scripts" / "demo.sh"), str(FLUXMAIL)],
        env=clean_environ(TMPDIR=str(tmp_path), FLUXMAIL_HOST="ignored.example.com"),
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    for expected in ("attachment:  hello.txt", "1 record(s)", "stopped; 1 message(s) received"):
        assert expected in done.stdout
