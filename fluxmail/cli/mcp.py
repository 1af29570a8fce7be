"""``fluxmail mcp``: serve the MCP tools over stdio to an AI agent's client (docs/agents.md).

Standard output is the protocol channel: nothing else may print there. The guard rails are
read from FLUXMAIL_MCP_* once, here; the mailer marks every record it writes ``origin=mcp``.
"""

from __future__ import annotations

import typer

from fluxmail.cli._common import build_mailer
from fluxmail.errors import ConfigurationError
from fluxmail.mcp.guards import Guards
from fluxmail.mcp.scrub import Scrubber
from fluxmail.mcp.server import build_server
from fluxmail.mcp.tools import AgentTools

INSTALL_HINT = "fluxmail mcp needs the MCP SDK: pip install fluxmail[mcp]"
EPILOG = (
    "Examples:  fluxmail mcp  (started by an MCP client: Claude Desktop, an IDE)  |  "
    "FLUXMAIL_MCP_ALLOW_SEND=true FLUXMAIL_MCP_MAX_SENDS=5 fluxmail mcp"
)


def _sdk_version() -> str:
    try:
        import mcp  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError(INSTALL_HINT, code="missing_extra") from exc
    from importlib.metadata import version

    return version("fluxmail")


def mcp_command() -> None:
    """Serve draft_email, list_records, show_record and preview (plus send_draft and
    send_email with FLUXMAIL_MCP_ALLOW_SEND=true) to an MCP client over stdio."""
    version = _sdk_version()
    mailer = build_mailer(origin="mcp")
    try:
        guards = Guards.from_config(mailer.config)
        server = build_server(AgentTools(mailer, guards), Scrubber(mailer.config), version)
        server.run("stdio")
    finally:
        mailer.close()


def register(app: typer.Typer) -> None:
    app.command("mcp", epilog=EPILOG)(mcp_command)
