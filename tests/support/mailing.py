"""Helpers for mailer-level tests: a mailer aimed at a test server, and both sending faces."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fluxmail import Draft, FluxMail, SendResult
from tests.support.servers import SMTPTestServer

SENDER = "sender@example.com"


def mailer_for(server: SMTPTestServer, **options: Any) -> FluxMail:
    """A mailer for ``server``: its TLS mode, trusting the test CA, auditing off unless asked."""
    settings: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "use_tls": server.tls == "starttls",
        "use_ssl": server.tls == "implicit",
        "sender": SENDER,
        "audit": False,
        "retry_delay": 0.01,
    }
    if server.tls != "none":
        settings["ca_file"] = server.ca_path
    if "audit_dir" in options:
        settings["audit"] = True
    settings.update(options)
    return FluxMail(**settings)


Send = Callable[..., SendResult]


def send_with(face: str) -> Send:
    """``draft.send()`` or ``asyncio.run(draft.send_async())``: the same behaviour either way."""

    def send(draft: Draft, **kwargs: Any) -> SendResult:
        if face == "sync":
            return draft.send(**kwargs)
        return asyncio.run(draft.send_async(**kwargs))

    return send
