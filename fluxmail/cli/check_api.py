"""``fluxmail check`` on an HTTP API transport: one harmless authenticated call (its ``probe``).

Nothing is sent: each provider module names the call (Resend lists domains, SendGrid the key's
scopes, Postmark its server). The report names the endpoint, never the key.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import typer

from fluxmail.cli._common import error_dict, explain, output, report
from fluxmail.cli.exit_codes import exit_code
from fluxmail.errors import FluxMailException
from fluxmail.transport.registry import make_transport

if TYPE_CHECKING:
    from fluxmail.config.resolve import Config

__all__ = ["check_api", "probe_api"]


def probe_api(config: Config) -> dict[str, Any]:
    """Run the transport's probe; a report (``ok``, ``transport``, ``probe``, ``error``)."""
    import asyncio

    transport: Any = make_transport(config)  # an ApiTransport: backend "api"

    async def run() -> str:
        try:
            return str(await transport.probe())
        finally:
            await transport.aclose()

    started = time.monotonic()
    data: dict[str, Any] = {"ok": True, "transport": transport.endpoint, "probed": True}
    try:
        data["probe"] = asyncio.run(run())
    except FluxMailException as exc:
        data.update(ok=False, probe=None, error=error_dict(exc), explanation=explain(exc))
        data["_error"] = exc
    data["elapsed_ms"] = round((time.monotonic() - started) * 1000, 2)
    return data


def check_api(config: Config, json_output: bool) -> None:
    data = probe_api(config)
    error: FluxMailException | None = data.pop("_error", None)
    if json_output:
        output().json(data)
    else:
        output().fields([("api", data["transport"]), ("probe", data["probe"] or "failed")])
    if error is not None:
        raise typer.Exit(exit_code(error) if json_output else report(error))
    if not json_output:
        output().out.print("[bold green]ok[/]: the API accepted the key, nothing was sent")
