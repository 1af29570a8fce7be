"""FluxMail: the public mailer, a sync and an async face over one engine."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from enum import Enum
from os import PathLike
from types import TracebackType
from typing import TYPE_CHECKING, Any

from fluxmail._lazy import lazy_module
from fluxmail.audit.log import AuditLog
from fluxmail.config.dkim import dkim_signer
from fluxmail.config.resolve import Config, idempotency_needs_audit, resolve_config, resolve_sender
from fluxmail.engine.sending import Engine
from fluxmail.errors import ConfigurationError, FluxMailException, MessageError

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, Iterable

    from fluxmail import bulk, draft, outbox
    from fluxmail.bulk import BulkRun, MessageSource
    from fluxmail.config import composite as composites
    from fluxmail.config.composite import Composite, Kind
    from fluxmail.draft import Draft
    from fluxmail.engine import drafting, enqueue
    from fluxmail.message import mime, model, templates
    from fluxmail.message.model import Message
    from fluxmail.outbox import OutboxAdmin
    from fluxmail.results import SendResult
else:  # needed from the first create() / send_many() on, not to build a mailer (cold start)
    bulk = lazy_module("fluxmail.bulk")
    composites = lazy_module("fluxmail.config.composite")  # failover() / roundrobin() only
    draft = lazy_module("fluxmail.draft")
    drafting = lazy_module("fluxmail.engine.drafting")
    enqueue = lazy_module("fluxmail.engine.enqueue")
    mime = lazy_module("fluxmail.message.mime")
    model = lazy_module("fluxmail.message.model")
    templates = lazy_module("fluxmail.message.templates")
    outbox = lazy_module("fluxmail.outbox")

log = logging.getLogger("fluxmail")
_TEMPLATES_LOCK = threading.Lock()  # builds each mailer's template renderer once


class _Required:
    """create()'s ``recipients`` default: positional after the now-optional ``subject``, and
    still required (an explicit None with cc= or bcc= stays valid, as upstream)."""

    def __repr__(self) -> str:
        return "<required>"


REQUIRED: Any = _Required()


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
        self._dkim = dkim_signer(self._config)  # None without FLUXMAIL_DKIM_* (docs/dkim.md)
        self._log = _logger(logger, log_level)
        self._engine = Engine(self._config, self._log)
        self.audit: AuditLog = self._engine.audit
        self._template_set: templates.Templates | None = None
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
    def _building(cls, config: Config) -> FluxMail:
        """A mailer that only builds messages (a ``send_many(processes=N)`` child): the same
        ``create()`` and DKIM signing, no transport, no audit store, no loop thread."""
        mailer = cls.__new__(cls)
        mailer._config = config
        mailer._dkim = dkim_signer(config)
        mailer._log = log
        mailer.audit = AuditLog(config)  # create() asks whether it is enabled; never opened
        mailer._template_set = None
        return mailer

    @classmethod
    def from_env(cls, **overrides: Any) -> FluxMail:
        """The twelve-factor constructor: everything from the environment and ``.env``."""
        return cls(**overrides)

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> FluxMail:
        """``smtp://user:pass@host:587`` (STARTTLS), ``smtps://...:465`` (implicit TLS), ..."""
        return cls(url=url, **overrides)

    @classmethod
    def failover(cls, *members: str | FluxMail, **overrides: Any) -> FluxMail:
        """A mailer that tries ``members`` in order, moving on only when a message cannot have
        been accepted (docs/delivery.md, "Failover and round-robin").

        A member is a URL with its own credentials (``"smtps://u:p@b.example:465"``, a nested
        ``"roundrobin(...)"``, ``"memory://"``) or a FluxMail, whose configuration (host, TLS,
        credentials, timeouts, ``ssl_context=``) the member keeps; the sender, audit and the
        other ``overrides`` are the new mailer's own.
        """
        return cls(composite=_composite("failover", members), **overrides)

    @classmethod
    def roundrobin(cls, *members: str | FluxMail, **overrides: Any) -> FluxMail:
        """Like :meth:`failover`, but each message and each bulk connection starts at the
        next member (spreading the load) and fails over from there."""
        return cls(composite=_composite("roundrobin", members), **overrides)

    @property
    def config(self) -> Config:
        return self._config

    def describe(self) -> dict[str, dict[str, object]]:
        """The resolved configuration with the source of every value; secrets redacted."""
        return self._config.describe()

    def __repr__(self) -> str:
        c = self._config
        if c.members:  # failover(...) / roundrobin(...): the member URLs, no credentials
            return f"<FluxMail {c.endpoint}>"
        if c.backend != "smtp":
            return f"<FluxMail backend={c.backend}>"
        user = c.describe()["username"]["value"]  # redacted when it is a token (Postmark)
        return f"<FluxMail host={c.host!r} port={c.port} security={c.security} username={user!r}>"

    def create(
        self,
        subject: str | None = None,
        recipients: Any = REQUIRED,
        body: str | None = None,
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
        inline_css: bool | None = None,
        headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        template: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Draft:
        """Validate and build a message; returns a new immutable Draft. Raises MessageError.

        ``message_id`` is for a deliberate resend of an ``unknown`` outcome: reusing the
        original Message-ID lets receivers discard the duplicate (RFC 5322 3.6.4).
        ``template`` renders the subject and bodies from FLUXMAIL_TEMPLATES_DIR with
        ``context`` (docs/templates.md); ``inline_css`` defaults to on for a template.
        """
        parts: dict[str, Any] = {
            "subject": subject, "body": body, "html_body": html_body, "plain_body": plain_body,
            "inline_css": inline_css if inline_css is not None else template is not None,
        }  # fmt: skip
        templated = template is not None or context is not None
        _check_required(subject, recipients, body, templated)
        if templated:
            parts = templates.create_fields(self._templates(), template, context, parts)
        resolved = sender if sender is not None else resolve_sender(self._config, None)
        message = model.build_message(
            recipients=recipients, sender=resolved, cc=cc, bcc=bcc, reply_to=reply_to,
            attachments=attachments, in_reply_to=in_reply_to, references=references,
            priority=priority, unsubscribe_url=unsubscribe_url, inline_images=inline_images,
            headers=headers, idempotency_key=idempotency_key, metadata=metadata,
            message_id=message_id, **parts,
        )  # fmt: skip
        if message.idempotency_key is not None and not self.audit.enabled:
            raise idempotency_needs_audit(self._config)  # the key would be silently ignored
        return draft.Draft(self, message)

    def _templates(self) -> templates.Templates:
        """The templates folder's renderer: built once per mailer, on first use."""
        with _TEMPLATES_LOCK:
            if self._template_set is None:
                self._template_set = templates.Templates(self._config.templates_dir)
            return self._template_set

    # -- sending -----------------------------------------------------------------------------

    def _render(self, message: Message) -> bytes:
        """The wire bytes of a message (sent, audited, queued): DKIM-signed when configured."""
        data = mime.render(message)
        return data if self._dkim is None else self._dkim.sign(message, data)

    @property
    def engine(self) -> Engine:
        return self._engine

    def _send_sync(self, draft: Draft, dry_run: bool) -> SendResult:
        runner = self._engine.runner
        if runner.in_loop():
            raise FluxMailException(
                "send() was called from fluxmail's own event loop; use await send_async()",
                code="invalid_call",
            )
        return runner.run(self._send_async(draft, dry_run))

    async def _send_async(self, draft: Draft, dry_run: bool) -> SendResult:
        done = await self._engine.send(draft.message, draft.as_bytes(), dry_run=dry_run)
        if done.error is not None:
            raise done.error
        assert done.result is not None
        return done.result

    # -- drafts: stored for review, sent later exactly as saved (docs/audit.md) --------------

    def _save_draft(self, message: Message, data: bytes) -> str:
        return drafting.save(self.audit, self._config, message, data)

    def send_draft(self, audit_id: str) -> SendResult:
        """Send a saved draft: its stored bytes and Message-ID, once. Sending it again replays
        the stored result (``replayed=True``); a draft whose send failed may be sent again."""
        runner = self._engine.runner
        if runner.in_loop():
            raise FluxMailException(
                "send_draft() was called from fluxmail's own event loop; use await "
                "send_draft_async()",
                code="invalid_call",
            )
        return runner.run(self.send_draft_async(audit_id))

    async def send_draft_async(self, audit_id: str) -> SendResult:
        """``send_draft`` on the caller's event loop."""
        done = await drafting.send(self._engine, audit_id)
        if done.error is not None:
            raise done.error
        assert done.result is not None
        return done.result

    def discard_draft(self, audit_id: str) -> None:
        """Delete a draft that was not sent; any other record: AuditError ``not_a_draft``."""
        drafting.discard(self.audit, self._config, audit_id)

    # -- the outbox: stored now, delivered by workers (docs/outbox.md) -----------------------

    def _enqueue(
        self, built: Sequence[tuple[Message, bytes]], send_at: object, connection: Any
    ) -> list[str]:
        c = self._config
        return enqueue.enqueue(self.audit, c, built, send_at=send_at, connection=connection)

    async def _enqueue_async(
        self, built: Sequence[tuple[Message, bytes]], send_at: object, connection: Any
    ) -> list[str]:
        return await enqueue.enqueue_async(
            self.audit, self._config, built, send_at=send_at, connection=connection
        )

    def enqueue_many(
        self,
        messages: Iterable[Draft | Mapping[str, Any]],
        *,
        send_at: object = None,
        connection: Any = None,
        batch_size: int = 500,
    ) -> list[str]:
        """Enqueue drafts or ``create()`` keyword dicts, ``batch_size`` per write; their ids."""
        return outbox.enqueue_many(
            self, messages, send_at=send_at, connection=connection, batch_size=batch_size
        )

    async def enqueue_many_async(
        self,
        messages: Iterable[Draft | Mapping[str, Any]] | AsyncIterable[Draft | Mapping[str, Any]],
        *,
        send_at: object = None,
        connection: Any = None,
        batch_size: int = 500,
    ) -> list[str]:
        """``enqueue_many`` on the caller's loop (``connection``: a psycopg AsyncConnection)."""
        return await outbox.enqueue_many_async(
            self, messages, send_at=send_at, connection=connection, batch_size=batch_size
        )

    @property
    def outbox(self) -> OutboxAdmin:
        """Queued messages: ``stats()``, ``retry(id)``, ``cancel(id)``."""
        return outbox.OutboxAdmin(
            lambda: enqueue.outbox_store(self.audit, self._config), self._config.retry_deadline
        )

    # -- connection reuse --------------------------------------------------------------------

    def __enter__(self) -> FluxMail:
        self._engine.transport.hold(1)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        runner = self._engine.runner
        if self._engine.transport.hold(-1) == 0 and runner.started:
            runner.run(self._engine.transport.aclose())

    async def __aenter__(self) -> FluxMail:
        self._engine.transport.hold(1)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._engine.transport.hold(-1) == 0:
            await self._engine.transport.aclose()

    def close(self) -> None:
        """Close pooled connections, the background loop and the audit store."""
        self._engine.close()

    # -- bulk --------------------------------------------------------------------------------

    def send_many(self, messages: MessageSource, **options: Any) -> BulkRun:
        """Send many messages over pooled, pipelined connections; see fluxmail.bulk."""
        return bulk.send_many(self, messages, **options)

    def send_many_async(self, messages: MessageSource, **options: Any) -> BulkRun:
        """The async face of send_many: ``async for result in mailer.send_many_async(...)``."""
        return bulk.send_many_async(self, messages, **options)


def _check_required(subject: object, recipients: object, body: object, templated: bool) -> None:
    """subject and body are optional only because a template may give them."""
    missing = ["recipients"] if recipients is REQUIRED else []
    if not templated:
        missing += [name for name, v in (("subject", subject), ("body", body)) if v is None]
    if missing:
        raise MessageError(
            f"create() needs subject=, recipients= and body= (or template= for the subject and "
            f"body); missing: {', '.join(missing)}",
            code="invalid_message",
        )


def _composite(kind: Kind, members: tuple[object, ...]) -> Composite:
    """The members of FluxMail.failover() / roundrobin(): URLs as given, mailers by config."""
    if not members:
        raise ConfigurationError(
            f"FluxMail.{kind}() needs at least one member (a URL or a FluxMail)",
            code="invalid_composite_url",
        )
    given = tuple(m.config if isinstance(m, FluxMail) else m for m in members)
    return composites.Composite(kind, given)  # type: ignore[arg-type]


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
