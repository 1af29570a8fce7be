"""Django's email backend ``fluxmail.django.EmailBackend``: the ``BACKEND`` of a ``MAILERS``
entry (Django 6.1+), or ``EMAIL_BACKEND`` before (docs/django.md).

``send_mail()``, ``send_mass_mail()`` (through ``send_many``), ``EmailMessage.send()``,
``mail_admins()`` and password-reset mails go through a FluxMail configured from
``FLUXMAIL_*``, the optional ``FLUXMAIL = {...}`` Django setting (keyword arguments to
``FluxMail``, winning over the environment) and the backend's keyword arguments (a
``MAILERS`` entry's ``OPTIONS``, ``get_connection(...)``), winning over both. Django builds a
backend per ``send_mail()`` call, so the mailer (its configuration, TLS context and audit
store) is built once per process and settings, shared by every backend, and closed at exit.

Each message gets its ``SendResult`` as ``message.fluxmail_result``. ``fail_silently``
swallows delivery errors (and an unreachable audit database), never configuration errors
nor a message fluxmail refuses to build: those are the caller's bugs, which Django's own
SMTP backend raises too (a bad address, a header with a newline).

Django is imported when the backend class is first asked for: ``EmailBackend`` is built on
first access (PEP 562), so this module imports without Django.
"""

from __future__ import annotations

import atexit
import difflib
import email.message
import functools
import hashlib
import inspect
import mimetypes
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fluxmail.config.resolve import argument_names
from fluxmail.errors import (
    AuditError,
    ConfigurationError,
    DeliveryError,
    FluxMailException,
    MessageError,
    shown,
)
from fluxmail.mailer import FluxMail
from fluxmail.message.attachments import Attachment, guess_mimetype

if TYPE_CHECKING:
    from fluxmail.draft import Draft
    from fluxmail.results import SendResult

__all__ = ["RESULT", "EmailBackend", "close_mailers", "mailer_for", "to_draft"]

INSTALL_HINT = "fluxmail.django needs Django: pip install 'fluxmail[django]'"
RESULT = "fluxmail_result"  # the attribute each sent message gets, like anymail_status
# An audit database that cannot be reached is an outage, like a mail server that is down.
_SILENT_AUDIT = frozenset({"audit_unavailable"})


# -- one mailer per process and settings ------------------------------------------------------


class _Mailers:
    """Mailers by configuration; built under a lock, closed at interpreter exit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[str, FluxMail] = {}
        self._hooked = False

    def get(self, options: Mapping[str, Any]) -> FluxMail:
        key = _key(options)
        with self._lock:
            mailer = self._by_key.get(key)
            if mailer is None:
                mailer = FluxMail.from_env(**options)  # a ConfigurationError caches nothing
                self._by_key[key] = mailer
                if not self._hooked:
                    atexit.register(self.close_all)
                    self._hooked = True
            return mailer

    def close_all(self) -> None:
        with self._lock:
            mailers, self._by_key = list(self._by_key.values()), {}
        for mailer in mailers:
            mailer.close()


_MAILERS = _Mailers()


def _key(options: Mapping[str, Any]) -> str:
    """The cache key: the process (a forked child builds its own), the FLUXMAIL_* environment
    and the options, hashed so that no second copy of a secret is kept."""
    env = sorted((k, v) for k, v in os.environ.items() if k.startswith("FLUXMAIL_"))
    text = repr((os.getpid(), env, sorted(options.items(), key=lambda kv: kv[0])))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def mailer_for(**overrides: Any) -> FluxMail:
    """The shared mailer for the Django settings (``FLUXMAIL``) plus ``overrides``, as the
    backend uses it: for ``mailer_for().outbox``, ``.audit`` or ``.create(...).enqueue()``."""
    from django.conf import settings  # type: ignore[import-untyped]

    configured = getattr(settings, "FLUXMAIL", None) or {}
    if not isinstance(configured, Mapping) or not all(isinstance(k, str) for k in configured):
        raise ConfigurationError(
            "the FLUXMAIL Django setting must be a dict of FluxMail keyword arguments, "
            f"not {shown(configured)}",
            code="invalid_config",
        )
    return _MAILERS.get({**configured, **overrides})


def close_mailers() -> None:
    """Close every shared mailer (done at exit; call it after changing settings in tests)."""
    _MAILERS.close_all()


# -- Django's EmailMessage to a fluxmail Draft ------------------------------------------------


def to_draft(mailer: FluxMail, message: Any, *, sender_defaults: Iterable[str] = ()) -> Draft:
    """A Draft from a Django ``EmailMessage`` / ``EmailMultiAlternatives``; a MessageError
    for what fluxmail cannot carry. ``sender_defaults``: ``from_email`` values that mean "not
    chosen" (Django's untouched defaults): the mailer's FLUXMAIL_SENDER wins over them."""
    headers = {str(k): str(v) for k, v in (message.extra_headers or {}).items()}
    message_id = _pop(headers, "message-id")
    text, html = _bodies(message)
    files, inline = _attachments(message.attachments, html is not None)
    from_email = message.from_email
    if (not from_email or from_email in set(sender_defaults)) and mailer.config.default_sender():
        from_email = None
    has_reply_to = any(k.lower() == "reply-to" for k in headers)  # wins, as in Django
    return mailer.create(
        subject=str(message.subject),
        recipients=_addresses(message.to),
        body=html if html is not None else (text or ""),
        sender=from_email or None,
        cc=_addresses(message.cc),
        bcc=_addresses(message.bcc),
        reply_to=None if has_reply_to else _addresses(message.reply_to),
        attachments=files,
        html_body=html is not None,
        plain_body=text if html is not None and text else None,
        inline_images=inline or None,
        headers=headers or None,
        message_id=message_id,
    )


def _pop(headers: dict[str, str], lowered: str) -> str | None:
    for name in list(headers):
        if name.lower() == lowered:
            return headers.pop(name)
    return None


def _addresses(values: Iterable[Any] | None) -> list[Any]:
    # Django takes "Name <a@b>" strings, lazy strings and (name, address) pairs.
    return [v if isinstance(v, tuple) else str(v) for v in values or ()]


def _text(content: Any) -> str:
    return content.decode("utf-8") if isinstance(content, bytes) else str(content)


def _unsupported(what: str) -> MessageError:
    return MessageError(
        f"{what}: fluxmail sends a text body, an HTML body or both",
        code="unsupported_alternative",
    )


def _bodies(message: Any) -> tuple[str | None, str | None]:
    """(text, html): the body by its ``content_subtype``, then the alternatives."""
    subtype = str(getattr(message, "content_subtype", "plain")).lower()
    if subtype not in ("plain", "html"):
        raise _unsupported(f"a text/{subtype} body")
    body = _text(message.body or "")
    text, html = (None, body) if subtype == "html" else (body, None)
    for content, mimetype in getattr(message, "alternatives", None) or ():
        kind = str(mimetype or "").lower()
        if kind == "text/html" and html is None:
            html = _text(content)
        elif kind == "text/plain" and not text:
            text = _text(content)
        else:
            raise _unsupported(f"a second {kind or 'untyped'} alternative")
    return text, html


def _attachments(items: Iterable[Any], html: bool) -> tuple[list[Attachment], dict[str, Any]]:
    """Files, and the parts with a Content-ID that an HTML body shows inline (cid:...)."""
    files: list[Attachment] = []
    inline: dict[str, Any] = {}
    for item in items or ():
        if isinstance(item, email.message.Message):  # a MIMEBase part
            attachment, cid = _from_part(item)
            if cid is not None and html:
                inline[cid] = attachment
                continue
            files.append(attachment)
            continue
        filename, content, mimetype = item  # a tuple, or Django 5.2's EmailAttachment
        data = content.encode("utf-8") if isinstance(content, str) else content
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        name = str(filename) if filename is not None else ""
        kind = mimetype or guess_mimetype(name, data if isinstance(data, bytes) else None)
        files.append(Attachment(name, data, kind))
    return files, inline


def _from_part(part: email.message.Message) -> tuple[Attachment, str | None]:
    """A MIMEBase part's decoded payload, its filename (Content-Disposition, else the
    Content-ID) and its Content-ID."""
    kind = part.get_content_type()
    data = None if part.is_multipart() else part.get_payload(decode=True)
    if not isinstance(data, bytes):
        raise MessageError(
            f"a {kind} MIME part cannot be attached: fluxmail attaches single parts",
            code="invalid_attachment",
        )
    raw_cid = part.get("Content-ID")
    cid = str(raw_cid).strip().strip("<>") if raw_cid else None
    disposition = str(part.get("Content-Disposition", "")).split(";")[0].strip().lower()
    filename = part.get_filename() or (cid or "attachment").partition("@")[0]
    if "." not in filename:
        filename += mimetypes.guess_extension(kind) or ""
    attachment = Attachment(filename, data, kind)
    return attachment, cid if cid and disposition != "attachment" else None


# -- the backend --------------------------------------------------------------------------------


class FluxMailBackend:
    """What ``EmailBackend`` does; Django loads ``EmailBackend``, this class combined with
    ``django.core.mail.backends.base.BaseEmailBackend``.

    Keyword arguments (a ``MAILERS`` entry's ``OPTIONS``, ``get_connection(host=...,
    username=..., ...)``, ``send_mail(auth_user=, auth_password=)``) are ``fail_silently`` and
    FluxMail keyword arguments; ``None`` means unset; an unknown name is a ConfigurationError
    here, when the backend is built. Django's own (``alias``, the ``MAILERS`` key, and its
    private ``_*`` names) go to ``BaseEmailBackend``. ``open()`` / ``close()`` (``with
    mailers.default as connection:``) keep the mailer's connection open in between, as
    ``with mailer:`` does."""

    fail_silently: bool

    def __init__(self, fail_silently: bool = False, **kwargs: Any) -> None:
        djangos = {k: kwargs.pop(k) for k in list(kwargs) if k == "alias" or k.startswith("_")}
        # fail_silently is ours to keep: BaseEmailBackend's handling of it is deprecated in
        # Django 6.1 (a warning when it is passed on, another when its attribute is read).
        super().__init__(**djangos)
        where = _Where(djangos.get("alias"), djangos.get("_ignore_unknown_kwargs") or ())
        self.fail_silently = _flag(fail_silently, where)
        _check_names(kwargs, where)
        self._options = {k: v for k, v in kwargs.items() if v is not None}
        self._mailer: FluxMail | None = None
        self._held = False
        self._lock = threading.Lock()

    @property
    def mailer(self) -> FluxMail:
        if self._mailer is None:
            self._mailer = mailer_for(**self._options)
        return self._mailer

    def open(self) -> bool:
        with self._lock:
            if self._held:
                return False
            self.mailer.__enter__()
            self._held = True
            return True

    def close(self) -> None:
        with self._lock:
            if not self._held:
                return
            self._held = False
            try:
                self.mailer.__exit__(None, None, None)
            except DeliveryError:  # closing a broken connection
                if not self.fail_silently:
                    raise

    def send_messages(self, email_messages: Sequence[Any]) -> int:
        """Send Django messages; the number sent (``sent`` or ``partial``, not ``unknown``)."""
        for message in email_messages or ():
            setattr(message, RESULT, None)
        messages = [m for m in email_messages or () if m.recipients()]
        if not messages:
            return 0
        mailer = self.mailer
        defaults = _sender_defaults()
        # Every message is built before anything is sent: bad input sends nothing.
        drafts = [to_draft(mailer, m, sender_defaults=defaults) for m in messages]
        if len(drafts) == 1:
            return self._send_one(messages[0], drafts[0])
        return self._send_bulk(mailer, messages, drafts)

    def _silenced(self, exc: FluxMailException) -> bool:
        if not self.fail_silently:
            return False
        return isinstance(exc, DeliveryError) or (
            isinstance(exc, AuditError) and exc.code in _SILENT_AUDIT
        )

    def _send_one(self, message: Any, draft: Draft) -> int:
        try:
            result = draft.send()
        except FluxMailException as exc:
            setattr(message, RESULT, getattr(exc, "result", None))
            if self._silenced(exc):
                return 0
            raise
        setattr(message, RESULT, result)
        return int(result.ok)

    def _send_bulk(self, mailer: FluxMail, messages: list[Any], drafts: list[Draft]) -> int:
        """Through send_many: every message is tried; the first error not silenced is
        raised at the end, once each message has its result."""
        sent, first = 0, None
        for outcome in mailer.send_many(drafts):
            result: SendResult | None = outcome.result
            if result is None and outcome.error is not None:
                result = getattr(outcome.error, "result", None)
            setattr(messages[outcome.index], RESULT, result)
            if outcome.error is None:
                sent += int(result is not None and result.ok)
            elif first is None and not self._silenced(outcome.error):
                first = outcome.error
        if first is not None:
            raise first
        return sent


class _Where:
    """Where an option came from, as an error names it: the ``MAILERS`` entry, or (Django
    before 6.1, or ``get_connection(...)`` under ``MAILERS``) the backend's arguments."""

    def __init__(self, alias: str | None, from_call: Iterable[str]) -> None:
        self.alias = alias
        self.from_call = frozenset(from_call)

    def of(self, name: str) -> str:
        if self.alias is None or name in self.from_call:
            return "the keyword arguments of fluxmail.django.EmailBackend (get_connection(...))"
        return f"MAILERS[{self.alias!r}]['OPTIONS']"


@functools.cache
def _option_names() -> frozenset[str]:
    """What the backend passes to FluxMail: its own parameters and the settings' names."""
    own = inspect.signature(FluxMail).parameters.values()
    return argument_names() | {p.name for p in own if p.kind is not p.VAR_KEYWORD}


def _check_names(options: Mapping[str, Any], where: _Where) -> None:
    """Every unknown name at once, with the closest known one; never a value (a secret)."""
    known = _option_names()
    found: dict[str, list[str]] = {}
    for name in sorted(n for n in options if n not in known):
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        found.setdefault(where.of(name), []).append(f"{name!r}{hint}")
    if found:
        listed = "; ".join(f"{place}: {', '.join(names)}" for place, names in found.items())
        raise ConfigurationError(
            f"unknown option in {listed}. fluxmail.django.EmailBackend takes fail_silently and "
            "FluxMail keyword arguments (host, port, username, password, sender, audit_dir, "
            "...; see docs/configuration.md)",
            code="invalid_config",
        )


def _flag(value: Any, where: _Where) -> bool:
    """``fail_silently``: True or False (None is unset; 0 and 1 from old callers pass). A
    string such as "false" from the environment is refused: it would silence every error."""
    if value is None or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    raise ConfigurationError(
        f"fail_silently in {where.of('fail_silently')} must be True or False, not {shown(value)}",
        code="invalid_config",
    )


def _sender_defaults() -> tuple[str, ...]:
    """Django's default senders when the project did not set them: placeholders
    (webmaster@localhost, root@localhost), not chosen addresses."""
    from django.conf import global_settings, settings

    names = ("DEFAULT_FROM_EMAIL", "SERVER_EMAIL")
    return tuple(getattr(global_settings, n) for n in names if not settings.is_overridden(n))


# -- EmailBackend, built on first access -----------------------------------------------------

_CLASS_LOCK = threading.Lock()
_CLASSES: dict[str, type[Any]] = {}

if TYPE_CHECKING:
    EmailBackend = FluxMailBackend


def _backend_class() -> type[Any]:
    with _CLASS_LOCK:  # one class, even when threads ask at once (isinstance checks)
        if "EmailBackend" not in _CLASSES:
            try:
                from django.core.mail.backends.base import (  # type: ignore[import-untyped]
                    BaseEmailBackend,
                )
            except ImportError as exc:
                raise ConfigurationError(INSTALL_HINT, code="missing_extra") from exc
            namespace = {
                "__module__": __name__,
                "__qualname__": "EmailBackend",
                "__doc__": FluxMailBackend.__doc__,
            }
            built = type("EmailBackend", (FluxMailBackend, BaseEmailBackend), namespace)
            _CLASSES["EmailBackend"] = built
        return _CLASSES["EmailBackend"]


def __getattr__(name: str) -> Any:
    if name == "EmailBackend":
        return _backend_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
