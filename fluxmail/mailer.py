"""FluxMail: settings + backend + audit, one async core with a sync face."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from enum import Enum
from os import PathLike
from types import TracebackType
from typing import TYPE_CHECKING, Any

from fluxmail.audit.log import AuditLog
from fluxmail.config.resolve import Config, idempotency_needs_audit, resolve_config, resolve_sender
from fluxmail.engine.loop import LoopThread
from fluxmail.errors import (
    ConfigurationError,
    DeliveryError,
    FluxMailException,
    MessageError,
    OutcomeUnknown,
    Refused,
)
from fluxmail.transport.local import make_backend

if TYPE_CHECKING:
    from fluxmail.bulk import BulkRun, MessageSource
    from fluxmail.draft import Draft
    from fluxmail.results import SendResult

log = logging.getLogger("fluxmail")


class EmailObject(str, Enum):
    """Upstream's backend selector; plain strings ("smtp", "memory", ...) work too."""

    SMTP = "smtp"
    CONSOLE = "console"
    FILE = "file"
    MEMORY = "memory"


class FluxMail:
    """A configured mailer. Immutable once built; share one instance across threads and tasks.

    ``FluxMail.from_env()`` reads ``FLUXMAIL_*`` variables (and ``.env``); keyword arguments,
    including the upstream ones (``object_type``, ``host``, ``use_tls``, ``use_ssl``, ...), win.
    """

    def __init__(
        self,
        object_type: Any = None,
        host: Any = None,
        *,
        logger: logging.Logger | None = None,
        log_level: str | None = None,
        **settings: Any,
    ) -> None:
        if object_type is not None:
            settings["object_type"] = getattr(object_type, "value", object_type)
        if host is not None:
            settings["host"] = host
        self._config = resolve_config(**settings)
        self._log = _logger(logger, log_level)
        self._backend = make_backend(self._config)
        self._runner = LoopThread()
        self.audit = AuditLog(self._config)
        c = self._config
        if c.backend == "smtp" and c.security != "none" and not c.tls_verify:
            self._log.warning(
                "TLS certificate verification is OFF for %s (FLUXMAIL_TLS_VERIFY=false): "
                "anyone on the network path can read and change this mail",
                c.host,
            )
        for warning in c.warnings:  # misspelled FLUXMAIL_* names
            self._log.warning("%s", warning)

    @classmethod
    def from_env(cls, **overrides: Any) -> FluxMail:
        """The twelve-factor constructor: everything from the environment and ``.env``."""
        return cls(**overrides)

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> FluxMail:
        """``smtp://user:pass@host:587`` (STARTTLS), ``smtps://...:465`` (implicit TLS), ..."""
        return cls(url=url, **overrides)

    @property
    def config(self) -> Config:
        return self._config

    def describe(self) -> dict[str, dict[str, object]]:
        """The resolved configuration with the source of every value; secrets redacted."""
        return self._config.describe()

    def __repr__(self) -> str:
        c = self._config
        if c.backend != "smtp":
            return f"<FluxMail backend={c.backend}>"
        user = c.describe()["username"]["value"]  # redacted when it is a token (Postmark)
        return f"<FluxMail host={c.host!r} port={c.port} security={c.security} username={user!r}>"

    def create(
        self,
        subject: str,
        recipients: Any,
        body: str,
        sender: Any = None,
        cc: Any = None,
        bcc: Any = None,
        reply_to: Any = None,
        attachments: Sequence[Any] | None = None,
        html_body: bool = False,
        plain_body: str | None = None,
        in_reply_to: str | None = None,
        references: Sequence[str] | str | None = None,
        priority: str | None = None,
        unsubscribe_url: str | None = None,
        inline_images: Mapping[str, str | PathLike[str] | bytes | Any] | None = None,
        inline_css: bool = False,
        headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        message_id: str | None = None,
    ) -> Draft:
        """Validate and build a message; returns a new immutable Draft. Raises MessageError.

        ``message_id`` is for a deliberate resend of an ``unknown`` outcome: reusing the
        original Message-ID lets receivers discard the duplicate (RFC 5322 3.6.4).
        """
        from fluxmail.draft import Draft
        from fluxmail.message.model import build_message

        resolved = sender if sender is not None else resolve_sender(self._config, None)
        message = build_message(
            subject=subject, recipients=recipients, body=body, sender=resolved, cc=cc, bcc=bcc,
            reply_to=reply_to, attachments=attachments, html_body=html_body,
            plain_body=plain_body, in_reply_to=in_reply_to, references=references,
            priority=priority, unsubscribe_url=unsubscribe_url, inline_images=inline_images,
            inline_css=inline_css, headers=headers, idempotency_key=idempotency_key,
            metadata=metadata, message_id=message_id,
        )  # fmt: skip
        if message.idempotency_key is not None and not self.audit.enabled:
            raise idempotency_needs_audit(self._config)  # the key would be silently ignored
        return Draft(self, message)

    # -- sending -----------------------------------------------------------------------------

    def _send_sync(self, draft: Draft, dry_run: bool) -> SendResult:
        if self._runner.in_loop():
            raise FluxMailException(
                "send() was called from fluxmail's own event loop; use await send_async()",
                code="invalid_call",
            )
        return self._runner.run(self._send_async(draft, dry_run))

    async def _send_async(self, draft: Draft, dry_run: bool) -> SendResult:
        result, error = await self._deliver_one(draft, dry_run)
        raise_for(result, error)
        return result

    async def _deliver_one(
        self, draft: Draft, dry_run: bool
    ) -> tuple[SendResult, DeliveryError | None]:
        """Claim an audit record, deliver, record the outcome. Never raises for delivery faults."""
        import asyncio

        from fluxmail.engine.outgoing import Outgoing

        out = Outgoing.prepare(draft, dry=dry_run or self._config.dry_run)
        if self.audit.enabled:
            # In a worker thread: a PostgreSQL round trip or a SQLite lock held by another
            # process must not stall the event loop (other sends, the caller's own tasks).
            record = out.record(self._config)
            claim = await asyncio.to_thread(lambda: self.audit.store().claim(record))
            if claim.replay is not None:
                return claim.replay, None
            out.audit_id = claim.audit_id
        if out.dry:
            return out.dry_result(), None
        try:
            result, error = await out.transmit(self._backend)
        except MessageError as exc:
            # Found while preparing the SMTP commands (a bare LF), always before MAIL FROM.
            self._finish(out.audit_id, out.unsent(str(exc)))
            raise
        except BaseException as exc:
            self._finish(out.audit_id, out.interrupted(exc))
            raise
        if out.audit_id is not None:
            await asyncio.to_thread(self._finish, out.audit_id, result)
        return result, error

    def _finish(self, audit_id: str | None, result: SendResult) -> None:
        if audit_id is None:
            return
        try:
            self.audit.store().finish(audit_id, result)
        except FluxMailException as exc:
            # The message went out; raising now would invite a resend. The record stays
            # 'sending' and becomes 'unknown' when the store is next opened.
            self._log.error("could not record the outcome of %s: %s", audit_id, exc)

    # -- connection reuse --------------------------------------------------------------------

    def __enter__(self) -> FluxMail:
        self._hold(1)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._hold(-1) == 0 and self._runner.started:
            self._runner.run(self._backend.aclose())

    async def __aenter__(self) -> FluxMail:
        self._hold(1)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._hold(-1) == 0:
            await self._backend.aclose()

    def _hold(self, delta: int) -> int:
        hold = getattr(self._backend, "hold", None)
        return int(hold(delta)) if hold is not None else 0

    def close(self) -> None:
        """Close pooled connections, the background loop and the audit store."""
        if self._runner.started:
            self._runner.run(self._backend.aclose())
        self._runner.stop()
        self.audit.close()

    # -- bulk --------------------------------------------------------------------------------

    def send_many(self, messages: MessageSource, **options: Any) -> BulkRun:
        """Send many messages over pooled, pipelined connections; see fluxmail.bulk."""
        from fluxmail.bulk import send_many

        return send_many(self, messages, **options)

    def send_many_async(self, messages: MessageSource, **options: Any) -> BulkRun:
        """The async face of send_many: ``async for result in mailer.send_many_async(...)``."""
        from fluxmail.bulk import send_many_async

        return send_many_async(self, messages, **options)


def _logger(logger: object, log_level: object) -> logging.Logger:
    """The logger= and log_level= arguments, checked before anything uses them."""
    if logger is not None and not isinstance(logger, logging.Logger):
        raise ConfigurationError(
            f"argument logger= must be a logging.Logger, not {type(logger).__name__}",
            code="invalid_config",
        )
    chosen = logger if logger is not None else log
    if log_level is not None:
        level = logging.getLevelName(log_level.upper()) if isinstance(log_level, str) else None
        if not isinstance(level, int):
            raise ConfigurationError(
                "argument log_level= must be a level name: DEBUG, INFO, WARNING, ERROR or CRITICAL",
                code="invalid_config",
            )
        chosen.setLevel(level)
    return chosen


def raise_for(result: SendResult, error: DeliveryError | None) -> None:
    """send() returns sent/partial/queued/dry_run results and replays; otherwise it raises."""
    if result.ok or result.replayed:
        return
    if result.status == "unknown":
        if isinstance(error, OutcomeUnknown):
            raise error.with_result(result)
        raise OutcomeUnknown("the outcome of the send is unknown", result=result)
    statuses = {r.status for r in result.recipients.values()}
    if statuses == {"rejected"} and (error is None or isinstance(error, Refused)):
        first = next(iter(result.recipients.values()))
        raise Refused(
            f"every recipient was refused (first: {first.code} {first.text})",
            code="all_recipients_refused" if error is None else error.code,
            smtp_code=first.code, smtp_text=first.text, enhanced_status=first.enhanced_status,
            transient=False, result=result,
        )  # fmt: skip
    if error is not None:
        raise error.with_result(result)
    raise DeliveryError("every recipient was deferred; nothing was delivered", result=result)
