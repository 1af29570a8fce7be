"""``fluxmail dev-server``: run the local SMTP catcher in the foreground until Ctrl-C."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fluxmail.cli._common import output, usage_error
from fluxmail.config.urls import is_loopback
from fluxmail.devserver import (
    DevServer,
    ReceivedMessage,
    require_aiosmtpd,
    self_signed_files,
    tls_context,
)

if TYPE_CHECKING:
    import ssl

EPILOG = """Examples:

  fluxmail dev-server

  fluxmail dev-server --port 2525 --folder /tmp/mail

  fluxmail dev-server --tls        # STARTTLS with a generated self-signed certificate

  fluxmail dev-server --port 0     # any free port; the first line says which

Then, in another shell:

  FLUXMAIL_HOST=127.0.0.1 FLUXMAIL_PORT=1025 FLUXMAIL_TLS=false \\
  FLUXMAIL_SENDER=me@example.com fluxmail send --to you@example.com --subject Hi --text Hi
"""


def _tls(tls: bool, cert: Path | None, key: Path | None, folder: Path) -> ssl.SSLContext | None:
    if (cert is None) != (key is None):
        raise usage_error("give both --cert and --key, or neither")
    if cert is not None and key is not None:
        return tls_context(cert, key)
    if not tls:
        return None
    cert, key = self_signed_files(folder)
    cert = cert.resolve()
    output().print(f"STARTTLS certificate: {cert} (trust it with FLUXMAIL_CA_FILE={cert})")
    return tls_context(cert, key)


def exposure_warning(host: str) -> str | None:
    """Why listening on ``host`` is risky, or None for loopback (``''`` means every interface)."""
    if is_loopback(host):
        return None
    return (
        f"--host {host or repr(host)} is not a loopback address: the dev server is then reachable "
        "from the network, accepts any login and keeps every message; use 127.0.0.1 unless "
        "other machines must reach it"
    )


def _show(message: ReceivedMessage) -> None:
    out = output()
    out.out.print("[bold cyan]-- message received[/]")
    for line in message.lines():
        out.print(f"  {line}")
    out.out.file.flush()


def _ready(server: DevServer) -> None:
    out = output()
    secure = " with STARTTLS" if server.tls is not None else ""
    out.print(f"fluxmail dev-server listening on {server.host}:{server.port}{secure}")
    out.print(f"saving messages to {server.folder.resolve()}/ (Ctrl-C to stop)")
    out.out.file.flush()


def dev_server(
    host: Annotated[str, typer.Option(help="Address to listen on (keep it local).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port; 0 picks a free one.")] = 1025,
    folder: Annotated[
        Path, typer.Option(help="Where each message is kept as an .eml file.")
    ] = Path("fluxmail-dev-mail"),
    tls: Annotated[
        bool, typer.Option("--tls", help="Offer STARTTLS with a generated self-signed certificate.")
    ] = False,
    cert: Annotated[Path | None, typer.Option(help="PEM certificate for STARTTLS.")] = None,
    key: Annotated[Path | None, typer.Option(help="PEM private key for STARTTLS.")] = None,
) -> None:
    """A local SMTP server that catches every message: prints it and saves it as .eml."""
    import asyncio

    require_aiosmtpd()  # before the warning and the certificate: nothing can run without it
    warning = exposure_warning(host)
    if warning is not None:
        output().warning(warning)
    server = DevServer(host, port, folder, tls=_tls(tls, cert, key, folder), on_message=_show)
    try:
        asyncio.run(_serve(server))
    except OSError as exc:
        output().error(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
        output().hint("pick another port with --port (0 picks a free one)")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass
    output().print(f"stopped; {len(server.messages)} message(s) received")


async def _serve(server: DevServer) -> None:
    """Serve until Ctrl-C or SIGTERM (``kill``, ``make demo``) and then close cleanly."""
    import asyncio

    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            # Not available on Windows or off the main thread: Ctrl-C still works there.
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, task.cancel)
    try:
        await server.serve(_ready)
    except asyncio.CancelledError:
        return


def register(app: typer.Typer) -> None:
    app.command("dev-server", epilog=EPILOG)(dev_server)
