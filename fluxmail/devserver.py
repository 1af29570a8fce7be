"""A local SMTP catcher for trying fluxmail with no account anywhere (``fluxmail dev-server``).

It accepts every message (and any login), prints a short summary of each one and keeps the exact
bytes received as ``.eml`` files in a folder. STARTTLS is optional: pass a certificate and key,
or let :func:`self_signed_files` make a throwaway pair with the ``openssl`` command (falling back
to the ``cryptography`` package when it happens to be installed). It is a development tool: never
expose it beyond your machine.

It runs on aiosmtpd, an extra (``pip install 'fluxmail[dev-server]'``): without it,
:class:`DevServer` raises a ``ConfigurationError`` with code ``missing_extra``.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fluxmail.errors import ConfigurationError

# asyncio, ssl, subprocess and email are imported where used: the CLI imports this module at
# every start, and only `fluxmail dev-server` needs them.
if TYPE_CHECKING:
    import asyncio
    import ssl

__all__ = [
    "DevServer",
    "ReceivedMessage",
    "require_aiosmtpd",
    "self_signed_files",
    "summarize",
    "tls_context",
]

DEFAULT_FOLDER = Path("fluxmail-dev-mail")
INSTALL_HINT = "the dev server needs aiosmtpd: pip install 'fluxmail[dev-server]'"


def require_aiosmtpd() -> None:
    """Raise a ConfigurationError naming the extra to install when aiosmtpd cannot be imported."""
    try:
        import aiosmtpd.smtp  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError(INSTALL_HINT, code="missing_extra") from exc


@dataclass(frozen=True)
class ReceivedMessage:
    """One message the catcher accepted, as the envelope and headers describe it."""

    path: Path
    mail_from: str
    rcpt_tos: tuple[str, ...]
    subject: str
    parts: tuple[str, ...]
    attachments: tuple[tuple[str, int], ...]
    size: int
    tls: bool
    login: str | None

    def lines(self) -> list[str]:
        """A plain-text summary, one fact per line (the CLI prints these)."""
        out = [
            f"from:        {self.mail_from}",
            f"to:          {', '.join(self.rcpt_tos)}",
            f"subject:     {self.subject}",
            f"parts:       {', '.join(self.parts) or '-'}",
        ]
        for name, size in self.attachments:
            out.append(f"attachment:  {name} ({size} bytes)")
        secure = "STARTTLS" if self.tls else "plaintext"
        who = f", login {self.login}" if self.login else ""
        out.append(f"saved:       {self.path} ({self.size} bytes, {secure}{who})")
        return out


def summarize(data: bytes) -> tuple[str, tuple[str, ...], tuple[tuple[str, int], ...]]:
    """Subject, leaf content types, and (filename, decoded size) of each attachment."""
    from email import policy
    from email.message import EmailMessage
    from email.parser import BytesParser

    msg = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(msg, EmailMessage)
    parts: list[str] = []
    attachments: list[tuple[str, int]] = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        filename = part.get_filename()
        if filename is not None or part.get_content_disposition() == "attachment":
            payload = part.get_payload(decode=True)
            size = len(payload) if isinstance(payload, bytes) else 0
            attachments.append((filename or "(unnamed)", size))
        else:
            parts.append(part.get_content_type())
    return str(msg.get("Subject", "")), tuple(parts), tuple(attachments)


class _Catcher:
    """aiosmtpd handler: saves each message whole (temp name, then rename) and reports it."""

    def __init__(self, folder: Path, on_message: Callable[[ReceivedMessage], None]) -> None:
        self.folder = folder
        self.on_message = on_message
        self._counter = itertools.count(1)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data: bytes = envelope.original_content or envelope.content or b""
        stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{next(self._counter):04d}"
        path = self.folder / f"{stem}.eml"
        tmp = self.folder / f".{stem}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, path)
        subject, parts, attachments = summarize(data)
        auth = getattr(session, "auth_data", None)
        login = auth.decode("utf-8", "replace") if isinstance(auth, bytes) else None
        self.on_message(
            ReceivedMessage(
                path=path,
                mail_from=str(envelope.mail_from),
                rcpt_tos=tuple(envelope.rcpt_tos),
                subject=subject,
                parts=parts,
                attachments=attachments,
                size=len(data),
                tls=session.ssl is not None,
                login=login,
            )
        )
        return f"250 2.0.0 OK: saved as {path.name}"


def _quiet_aiosmtpd(record: logging.LogRecord) -> bool:
    # aiosmtpd itself sets the deprecated Session.login_data on every login and warns about it.
    if "login_data is deprecated" in record.getMessage():
        return False
    if record.exc_info and _is_tls_abort(record.exc_info[1]):
        # A client that does not trust our certificate hangs up mid-handshake: say so in one
        # line instead of a traceback.
        record.msg = "%r closed the connection during the TLS handshake (certificate not trusted?)"
        record.exc_info = None
    return True


def _is_tls_abort(exc: BaseException | None) -> bool:
    import ssl

    return type(exc).__name__ == "TLSSetupException" or isinstance(
        exc, (ssl.SSLError, ConnectionResetError)
    )


def _accept_any_login(server: Any, session: Any, envelope: Any, mechanism: str, auth: Any) -> Any:
    # A catcher accepts every login so that a configured username/password can be exercised;
    # only the username is kept (never the password).
    from aiosmtpd.smtp import AuthResult, LoginPassword

    name = auth.login if isinstance(auth, LoginPassword) else b"?"
    return AuthResult(success=True, auth_data=name)


class DevServer:
    """The catcher on ``host:port`` (port 0 picks a free one; read ``.port`` after ``start()``).

    ``start()``/``stop()`` run it on a background thread (tests, ``with DevServer() as s:``);
    ``serve()`` runs it on the caller's event loop until cancelled (the CLI).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1025,
        folder: Path = DEFAULT_FOLDER,
        *,
        tls: ssl.SSLContext | None = None,
        on_message: Callable[[ReceivedMessage], None] | None = None,
    ) -> None:
        require_aiosmtpd()  # here, not at start(): the error belongs to the caller's thread
        self.host = host
        self.port = port
        self.folder = Path(folder)
        self.tls = tls
        self.messages: list[ReceivedMessage] = []
        self._lock = threading.Lock()
        self._on_message = on_message
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None

    def _record(self, message: ReceivedMessage) -> None:
        with self._lock:
            self.messages.append(message)
        if self._on_message is not None:
            self._on_message(message)

    async def _listen(self) -> asyncio.AbstractServer:
        import asyncio

        from aiosmtpd.smtp import SMTP

        self.folder.mkdir(parents=True, exist_ok=True)
        aiosmtpd_log = logging.getLogger("mail.log")
        if _quiet_aiosmtpd not in aiosmtpd_log.filters:
            aiosmtpd_log.addFilter(_quiet_aiosmtpd)
        handler = _Catcher(self.folder, self._record)

        def factory() -> SMTP:
            return SMTP(
                handler,
                hostname="fluxmail-dev-server",
                enable_SMTPUTF8=True,
                tls_context=self.tls,
                auth_require_tls=False,
                authenticator=_accept_any_login,
            )

        server = await asyncio.get_running_loop().create_server(factory, self.host, self.port)
        self.port = int(server.sockets[0].getsockname()[1])
        return server

    async def serve(self, ready: Callable[[DevServer], None] | None = None) -> None:
        """Listen until cancelled (or ``stop()`` from another thread); ``ready`` runs once bound."""
        import asyncio

        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        server = await self._listen()
        if ready is not None:
            ready(self)
        try:
            await self._stopped.wait()
        finally:
            server.close()
            await server.wait_closed()

    def start(self, timeout: float = 10.0) -> DevServer:
        """Run on a background thread; returns once the port is bound (raises if it cannot be)."""
        import asyncio

        bound = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(self.serve(lambda _: bound.set()))
            except BaseException as exc:  # reported to start()'s caller
                failure.append(exc)
                bound.set()

        self._thread = threading.Thread(target=run, name="fluxmail-dev-server", daemon=True)
        self._thread.start()
        if not bound.wait(timeout) or failure:
            raise failure[0] if failure else TimeoutError("the dev server did not start")
        return self

    def stop(self) -> None:
        """Stop listening and wait for the background thread (if any)."""
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(stopped.set)
        if self._thread is not None:
            self._thread.join(10.0)
            self._thread = None

    def __enter__(self) -> DevServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server-side context for STARTTLS from PEM files; errors name the file."""
    import ssl

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"cannot load the certificate {cert} with key {key}: {exc}", code="invalid_certificate"
        ) from exc
    return ctx


def self_signed_files(folder: Path, hostname: str = "localhost") -> tuple[Path, Path]:
    """Make (or reuse) ``dev-cert.pem``/``dev-key.pem`` in ``folder`` for ``hostname``.

    Uses the ``openssl`` command, which most machines have; else ``cryptography`` if some other
    package brought it in. fluxmail itself does not depend on either.
    """
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "dev-cert.pem", folder / "dev-key.pem"
    if cert.is_file() and key.is_file():
        return cert, key
    if shutil.which("openssl"):
        _openssl_pair(cert, key, hostname)
    else:
        try:
            _cryptography_pair(cert, key, hostname)
        except ImportError as exc:
            raise ConfigurationError(
                "cannot generate a certificate: neither the openssl command nor the Python "
                "package cryptography is available; pass --cert and --key",
                code="invalid_certificate",
            ) from exc
    os.chmod(key, 0o600)
    return cert, key


def _openssl_pair(cert: Path, key: Path, hostname: str) -> None:
    import subprocess

    san = f"subjectAltName=DNS:{hostname},DNS:localhost,IP:127.0.0.1,IP:::1"
    cmd = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "30"]
    cmd += ["-keyout", str(key), "-out", str(cert), "-subj", f"/CN={hostname}", "-addext", san]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
    if done.returncode != 0:
        raise ConfigurationError(
            f"openssl could not make a certificate: {done.stderr.strip().splitlines()[-1:]}",
            code="invalid_certificate",
        )


def _cryptography_pair(cert: Path, key: Path, hostname: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.timezone.utc)
    alt: list[x509.GeneralName] = [x509.DNSName(hostname), x509.DNSName("localhost")]
    alt.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    built = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(built.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
