"""The dev server (``fluxmail.devserver``): catches, prints and saves what fluxmail sends."""

from __future__ import annotations

import shutil
import subprocess
import sys
from email import message_from_bytes
from pathlib import Path

import pytest

from fluxmail import FluxMail
from fluxmail.devserver import (
    DevServer,
    ReceivedMessage,
    _cryptography_pair,
    self_signed_files,
    summarize,
    tls_context,
)
from fluxmail.errors import ConfigurationError


def _mailer(server: DevServer, **extra: object) -> FluxMail:
    return FluxMail(
        host="127.0.0.1", port=server.port, sender="Dev <dev@example.com>", audit=False,
        timeout=10, **extra,
    )  # fmt: skip


def test_catches_saves_and_reports(tmp_path: Path) -> None:
    """A message with an attachment is saved byte for byte and summarized for printing."""
    seen: list[ReceivedMessage] = []
    attachment = tmp_path / "invoice.pdf"
    attachment.write_bytes(b"%PDF-1.4 fake")
    with DevServer(port=0, folder=tmp_path / "mail", on_message=seen.append) as server:
        mailer = _mailer(server, use_tls=False)
        draft = mailer.create(
            "Invoice", ["bob@example.com"], "<p>Hi</p>", html_body=True, plain_body="Hi",
            bcc=["audit@example.com"], attachments=[attachment],
        )  # fmt: skip
        draft.send()
        mailer.close()
    [msg] = seen
    assert server.messages == seen
    assert msg.mail_from == "dev@example.com"
    assert msg.rcpt_tos == ("bob@example.com", "audit@example.com")
    assert msg.subject == "Invoice" and not msg.tls
    assert msg.parts == ("text/plain", "text/html")
    assert msg.attachments == (("invoice.pdf", 13),)
    assert msg.path.read_bytes() == draft.as_bytes()
    text = "\n".join(msg.lines())
    assert "attachment:  invoice.pdf (13 bytes)" in text and str(msg.path) in text


def test_port_zero_picks_free_ports(tmp_path: Path) -> None:
    """Two servers on port 0 get different real ports; stop() releases them."""
    with DevServer(port=0, folder=tmp_path) as a, DevServer(port=0, folder=tmp_path) as b:
        assert a.port != b.port and a.port > 0 and b.port > 0


def test_busy_port_raises(tmp_path: Path) -> None:
    """Starting on a port already in use raises OSError from start()."""
    with DevServer(port=0, folder=tmp_path) as first, pytest.raises(OSError):
        DevServer(port=first.port, folder=tmp_path).start()


def test_starttls_with_generated_certificate(tmp_path: Path) -> None:
    """--tls: the generated certificate, trusted via FLUXMAIL_CA_FILE, secures a login."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    cert, key = self_signed_files(tmp_path / "certs")
    assert self_signed_files(tmp_path / "certs") == (cert, key)  # reused, not regenerated
    assert (key.stat().st_mode & 0o777) == 0o600
    with DevServer(port=0, folder=tmp_path / "mail", tls=tls_context(cert, key)) as server:
        mailer = _mailer(
            server, use_tls=True, ca_file=str(cert), username="dev@example.com", password="pw-1234"
        )
        mailer.create("Secure", ["bob@example.com"], "Hi").send()
        mailer.close()
    [msg] = server.messages
    assert msg.tls and msg.login == "dev@example.com"
    assert "pw-1234" not in "\n".join(msg.lines())


def test_cryptography_fallback_certificate(tmp_path: Path) -> None:
    """Without openssl the cryptography package (when present) makes a usable pair."""
    pytest.importorskip("cryptography")
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    _cryptography_pair(cert, key, "localhost")
    with DevServer(port=0, folder=tmp_path, tls=tls_context(cert, key)) as server:
        mailer = _mailer(server, use_tls=True, ca_file=str(cert))
        mailer.create("Secure", ["bob@example.com"], "Hi").send()
        mailer.close()
    assert server.messages[0].tls


def test_bad_certificate_files(tmp_path: Path) -> None:
    """A missing or invalid certificate is a ConfigurationError naming the file."""
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate")
    with pytest.raises(ConfigurationError, match=r"bogus\.pem"):
        tls_context(bogus, bogus)


def test_summarize_plain_and_unnamed_attachment() -> None:
    """summarize() reads a single-part message and counts an attachment without a name."""
    raw = (
        b"Subject: S\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
        b"--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nAAEC\r\n--b--\r\n"
    )
    assert message_from_bytes(raw).is_multipart()
    assert summarize(raw) == ("S", ("text/plain",), (("(unnamed)", 3),))


# A fresh interpreter in which `import aiosmtpd` fails, as it does when the dev-server extra is
# not installed: a meta path finder refuses it (nothing is mocked), then the given code runs.
REFUSE_AIOSMTPD = """
import sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "aiosmtpd":
            raise ImportError("No module named " + repr(name))
sys.meta_path.insert(0, Refuse())
"""


def _without_aiosmtpd(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", REFUSE_AIOSMTPD + code],
        capture_output=True, text=True, timeout=60, check=False, cwd=cwd,
    )  # fmt: skip


def test_dev_server_class_without_aiosmtpd_names_the_extra(tmp_path: Path) -> None:
    """DevServer() without aiosmtpd: a ConfigurationError (missing_extra) naming the extra."""
    code = """
from fluxmail.errors import ConfigurationError
from fluxmail.devserver import DevServer, summarize
print(summarize(b"Subject: still works\\r\\n\\r\\nx\\r\\n")[0])
try:
    DevServer(port=0)
except ConfigurationError as exc:
    print(exc.code, exc)
"""
    done = _without_aiosmtpd(code, tmp_path)
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first == "still works"  # the module itself imports without the extra
    assert second.startswith("missing_extra ")
    assert "pip install 'fluxmail[dev-server]'" in second


def test_cli_dev_server_without_aiosmtpd_says_what_to_install(tmp_path: Path) -> None:
    """`fluxmail dev-server` without aiosmtpd: one line naming the extra, exit 3, nothing made."""
    code = "import sys; from fluxmail.cli import run; sys.exit(run(sys.argv[1:]))"
    args = ["dev-server", "--port", "0", "--tls", "--folder", str(tmp_path / "mail")]
    done = subprocess.run(
        [sys.executable, "-c", REFUSE_AIOSMTPD + code, *args],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert "pip install 'fluxmail[dev-server]'" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert not (tmp_path / "mail").exists()  # no certificate or folder before the check
    other = _without_aiosmtpd(code.replace("sys.argv[1:]", "['providers']"), tmp_path)
    assert other.returncode == 0, other.stderr  # the rest of the CLI works without the extra
