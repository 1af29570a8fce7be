"""``fluxmail mcp``: an MCP server that lets AI agents draft (and, when allowed, send) mail.

``guards`` holds the guard rails, ``tools`` the tools as plain functions over a mailer,
``server`` their registration with the MCP Python SDK (``fluxmail[mcp]``; docs/agents.md).
"""
