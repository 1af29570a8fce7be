"""Message templates (``create(template="welcome", context={...})``), rendered by Jinja2.

A template is up to three files in the templates folder (``FLUXMAIL_TEMPLATES_DIR``):
``welcome.subject`` (required: one line, stripped), ``welcome.txt`` and/or ``welcome.html``
(at least one). Jinja2 is the ``templates`` extra (``pip install 'fluxmail[templates]'``).

Choices (https://jinja.palletsprojects.com/en/stable/api/):

- a ``SandboxedEnvironment``: a template cannot reach Python internals through the context
  (``__class__``, ``__globals__``...), so templates edited outside the code stay harmless;
- HTML autoescaping on for ``.html`` only: the subject and the text are not HTML, and
  escaping them would show ``&lt;`` to the reader (the subject's header rules still apply);
- ``StrictUndefined``: a missing variable is an error naming it, never an empty string;
- names are relative to the folder: ``..``, absolute paths and backslashes are refused (the
  loader also refuses ``..`` in ``{% extends %}`` and ``{% include %}``);
- the environment is built once per folder object, under a lock; Jinja2 caches compiled
  templates and reloads a file that changed on disk.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from fluxmail.errors import ConfigurationError, MessageError

if TYPE_CHECKING:
    import jinja2

__all__ = ["Rendered", "Templates", "create_fields"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# What a template replaces in create(); with a template they come from its files.
_REPLACED = ("subject", "body", "plain_body")


@dataclass(frozen=True)
class Rendered:
    """A rendered template: the subject (stripped) and at least one body."""

    subject: str
    text: str | None
    html: str | None

    def fields(self) -> dict[str, Any]:
        """The ``build_message`` arguments these parts stand for."""
        if self.html is None:
            return {"subject": self.subject, "body": self.text, "html_body": False}
        body = {"body": self.html, "html_body": True, "plain_body": self.text}
        return {"subject": self.subject, **body}


def check_name(name: object) -> str:
    """A template name inside the folder: ``welcome`` or ``emails/welcome``."""
    if not isinstance(name, str):
        raise MessageError(
            f"template must be a string (a name such as 'welcome'), not {type(name).__name__}",
            code="invalid_template_name",
        )
    parts = name.split("/")
    bad = (
        not name
        or len(name) > 255
        or _CONTROL.search(name) is not None
        or "\\" in name
        or ":" in name
        or any(part in ("", ".", "..") for part in parts)
    )
    if bad:
        raise MessageError(
            f"template {name[:60]!r} is not a name inside the templates folder: use 'welcome' "
            "or 'emails/welcome' (no '..', no absolute path, no backslash)",
            code="invalid_template_name",
        )
    return name


def _context(context: object) -> dict[str, Any]:
    if context is None:
        return {}
    if not isinstance(context, Mapping) or not all(isinstance(k, str) for k in context):
        raise MessageError(
            f"context must be a mapping of variable names (strings) to values, not "
            f"{type(context).__name__}",
            code="invalid_message",
        )
    return dict(context)


def create_fields(
    templates: Templates, template: object, context: object, given: Mapping[str, Any]
) -> dict[str, Any]:
    """``create()``'s ``subject``/``body``/... replaced by the rendered ``template``."""
    if template is None:
        raise MessageError("context= is for a template: pass template= too", code="invalid_message")
    clash = [name for name in _REPLACED if given.get(name) is not None]
    if given.get("html_body"):
        clash.append("html_body")
    if clash:
        raise MessageError(
            f"template= gives the subject and the bodies; drop {', '.join(clash)}=",
            code="invalid_message",
        )
    return {**given, **templates.render(template, context).fields()}


class Templates:
    """The templates of one folder; the Jinja2 environment is built on first use."""

    def __init__(self, directory: Path | None) -> None:
        self._directory = directory
        self._env: jinja2.Environment | None = None
        self._lock = threading.Lock()

    def render(self, name: object, context: object = None) -> Rendered:
        """Render ``name``'s subject, text and HTML with ``context``; MessageError if not."""
        base = check_name(name)
        values = _context(context)
        if self._directory is None:
            raise MessageError(
                f"template {base!r} not found: no templates folder is set "
                "(FLUXMAIL_TEMPLATES_DIR or templates_dir=)",
                code="template_not_found",
            )
        env = self._environment()
        subject = self._part(env, f"{base}.subject", values, required=True)
        text = self._part(env, f"{base}.txt", values)
        html = self._part(env, f"{base}.html", values)
        if text is None and html is None:
            raise MessageError(
                f"template {base!r} has no body: add {base}.txt and/or {base}.html to the "
                "templates folder",
                code="template_not_found",
            )
        assert subject is not None
        return Rendered(subject.strip(), text, html)

    def _environment(self) -> jinja2.Environment:
        env = self._env
        if env is None:
            with self._lock:
                if self._env is None:
                    assert self._directory is not None
                    self._env = _build(self._directory)
                env = self._env
        return env

    def _part(
        self, env: jinja2.Environment, file: str, values: dict[str, Any], *, required: bool = False
    ) -> str | None:
        import jinja2

        try:
            template = env.get_template(file)
        except jinja2.TemplateNotFound as exc:
            if not required and exc.name == file:
                return None  # an optional part that is not there
            raise _not_found(file, exc) from None
        except jinja2.TemplateSyntaxError as exc:
            raise _invalid(exc) from None
        try:
            return template.render(values)
        except jinja2.UndefinedError as exc:
            raise _missing(file, exc, self._where(exc.__traceback__)) from None
        except jinja2.TemplateNotFound as exc:  # a missing layout or include
            raise _not_found(file, exc) from None
        except jinja2.TemplateSyntaxError as exc:  # in a layout or include
            raise _invalid(exc) from None
        except Exception as exc:  # a filter or a context value failed: this message's error
            line = self._where(exc.__traceback__)
            raise MessageError(
                f"template {line or file} cannot be rendered: {type(exc).__name__}: {exc}",
                code="template_invalid",
                template=file,
            ) from exc

    def _where(self, tb: TracebackType | None) -> str | None:
        """``file line N`` of the innermost template frame (Jinja2 maps its frames to them)."""
        assert self._directory is not None
        root = os.path.abspath(self._directory)
        found = None
        while tb is not None:
            path = tb.tb_frame.f_code.co_filename
            if os.path.isabs(path) and path.startswith(root + os.sep):
                found = f"{os.path.relpath(path, root)} line {tb.tb_lineno}"
            tb = tb.tb_next
        return found


def _build(directory: Path) -> jinja2.Environment:
    try:
        import jinja2
        from jinja2.sandbox import SandboxedEnvironment
    except ImportError as exc:
        raise ConfigurationError(
            "create(template=...) needs Jinja2: pip install 'fluxmail[templates]'",
            code="missing_extra",
        ) from exc
    return SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(os.path.abspath(directory), encoding="utf-8"),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "htm"), disabled_extensions=(), default=False
        ),
        undefined=jinja2.StrictUndefined,
    )


def _not_found(file: str, exc: Any) -> MessageError:
    missing = exc.name if isinstance(exc.name, str) else file
    via = "" if missing == file else f" (used by {file})"
    return MessageError(
        f"template {missing!r} not found in the templates folder{via}",
        code="template_not_found",
        template=missing,
    )


def _invalid(exc: Any) -> MessageError:
    name = exc.name or exc.filename or "?"
    return MessageError(
        f"template {name} line {exc.lineno}: {exc.message}",
        code="template_invalid",
        template=name,
        line=exc.lineno,
    )


_UNDEFINED = re.compile(r"^'([^']+)' is undefined$|has no attribute '([^']+)'")


def _missing(file: str, exc: Any, where: str | None) -> MessageError:
    text = str(exc.message or exc)
    match = _UNDEFINED.search(text)
    variable = next((g for g in match.groups() if g), text) if match else text
    return MessageError(
        f"template {where or file}: variable {variable!r} is not in the context ({text})",
        code="template_variable_missing",
        template=file,
        variable=variable,
    )
