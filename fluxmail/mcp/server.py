"""The MCP server: the tools of ``fluxmail.mcp.tools`` registered with the MCP Python SDK.

The SDK (``fluxmail[mcp]``) is imported inside functions only. ``send_draft`` and
``send_email`` are registered only when FLUXMAIL_MCP_ALLOW_SEND was true at start: an agent
cannot list, let alone call, what is not there. Every result and error text goes through the
``Scrubber``; a fluxmail error reaches the agent as a tool error ending in ``[code]``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import Field

from fluxmail.audit.records import STATUSES
from fluxmail.errors import FluxMailException
from fluxmail.mcp.scrub import Scrubber
from fluxmail.mcp.tools import AgentTools

__all__ = ["build_server"]

log = logging.getLogger("fluxmail.mcp")

INSTRUCTIONS = (
    "Compose email with draft_email: it stores a draft and sends nothing. A person reviews "
    "drafts (`fluxmail drafts show ID`) and sends them (`fluxmail drafts send ID`). Use "
    "preview to see a draft as the recipient will. Errors end with a [code]."
)

Addresses = Annotated[list[str], Field(description="Addresses: a@example.com or 'Name <a@x>'")]
MoreAddresses = Annotated[list[str] | None, Field(description="More addresses (optional)")]
Subject = Annotated[str, Field(description="Subject line (one line)")]
Body = Annotated[str | None, Field(description="Plain-text body")]
Html = Annotated[str | None, Field(description="HTML body (text becomes its plain part)")]
Files = Annotated[
    list[str] | None,
    Field(description="File names inside the server's attachment folder"),
]
RecordId = Annotated[str, Field(description="An audit record id (from draft_email)")]
Status = Literal[STATUSES]  # type: ignore[valid-type]
Limit = Annotated[int, Field(ge=1, le=200, description="At most this many, newest first")]


Runner = Callable[[Callable[[], dict[str, Any]]], dict[str, Any]]


def _runner(scrub: Scrubber, tool_error: type[Exception]) -> Runner:
    """Calls a tool: results scrubbed, fluxmail errors as tool errors with their code."""

    def run(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        try:
            result: dict[str, Any] = scrub.value(fn())
            return result
        except FluxMailException as exc:
            raise tool_error(f"{scrub.text(exc.message)} [{exc.code}]") from None
        except Exception as exc:  # a bug: the agent gets no text that could hold a secret
            log.error("fluxmail mcp: unexpected %s: %s", type(exc).__name__, scrub.text(str(exc)))
            raise tool_error(f"unexpected {type(exc).__name__} [error]") from None

    return run


def _fields(
    to: list[str], subject: str, text: str | None, html: str | None,
    cc: list[str] | None, bcc: list[str] | None, attachments: list[str] | None,
) -> dict[str, Any]:  # fmt: skip
    return {
        "to": to, "subject": subject, "text": text, "html": html, "cc": cc, "bcc": bcc,
        "attachments": attachments,
    }  # fmt: skip


def build_server(tools: AgentTools, scrub: Scrubber, version: str) -> Any:
    """An ``MCPServer`` with the tools the guard rails allow (call ``.run("stdio")``)."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp.types import ToolAnnotations

    server = MCPServer("fluxmail", instructions=INSTRUCTIONS, version=version, log_level="WARNING")
    run = _runner(scrub, ToolError)
    reading = ToolAnnotations(read_only_hint=True, open_world_hint=False)
    storing = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
    sending = ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=True)

    def draft_email(
        to: Addresses, subject: Subject, text: Body = None, html: Html = None,
        cc: MoreAddresses = None, bcc: MoreAddresses = None, attachments: Files = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Store an email as a draft for a person to review; nothing is sent. Returns the
        draft id and a summary."""
        fields = _fields(to, subject, text, html, cc, bcc, attachments)
        return run(lambda: tools.draft_email(**fields))

    def list_records(status: Status | None = None, limit: Limit = 20) -> dict[str, Any]:
        """List recent drafts and sent messages, newest first (Bcc never shown)."""
        return run(lambda: tools.list_records(status, limit))

    def show_record(id: RecordId, include_bcc: bool = False) -> dict[str, Any]:
        """One record: status, recipients, server replies; Bcc only with include_bcc."""
        return run(lambda: tools.show_record(id, include_bcc))

    def preview(id: RecordId) -> dict[str, Any]:
        """A stored message as the recipient gets it: headers, text, HTML, attachments."""
        return run(lambda: tools.preview(id))

    server.add_tool(draft_email, annotations=storing, structured_output=True)
    server.add_tool(list_records, annotations=reading, structured_output=True)
    server.add_tool(show_record, annotations=reading, structured_output=True)
    server.add_tool(preview, annotations=reading, structured_output=True)
    if tools.guards.allow_send:
        _sending_tools(server, tools, run, sending)
    return server


def _sending_tools(server: Any, tools: AgentTools, run: Runner, hints: Any) -> None:
    """Only with FLUXMAIL_MCP_ALLOW_SEND=true when the server started."""

    def send_draft(id: RecordId) -> dict[str, Any]:
        """Send a stored draft exactly as stored; a second call returns the first result
        (replayed) and sends nothing."""
        return run(lambda: tools.send_draft(id))

    def send_email(
        to: Addresses, subject: Subject, text: Body = None, html: Html = None,
        cc: MoreAddresses = None, bcc: MoreAddresses = None, attachments: Files = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Send an email now (no review). Prefer draft_email."""
        fields = _fields(to, subject, text, html, cc, bcc, attachments)
        return run(lambda: tools.send_email(**fields))

    server.add_tool(send_draft, annotations=hints, structured_output=True)
    server.add_tool(send_email, annotations=hints, structured_output=True)
