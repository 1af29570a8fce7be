"""mkdocs hooks (mkdocs.yml ``hooks:``): build-time touches to the rendered pages.

Table cells hold long names (``FLUXMAIL_ALLOW_INSECURE_AUTH``,
``email-smtp.{region}.amazonaws.com``). The theme breaks inline code anywhere, which splits
them mid-word; docs/stylesheets/extra.css turns that off, and this hook puts break
opportunities (``<wbr>``) after the separators a reader expects a name to wrap at. Copying a
name copies no ``<wbr>``.
"""

from __future__ import annotations

import re
from typing import Any

CELL = re.compile(r"<t([dh])([^>]*)>(.*?)</t\1>", re.DOTALL)
CODE = re.compile(r"<code>([^<]*)</code>")
AFTER = re.compile(r"(?<=[_/])(?=[^_/])")
AFTER_DOT = re.compile(r"(?<=\.)(?=[^.])")
SHORT = 18  # a host name this short (smtp.sendgrid.net) stays on one line


def _breakable(name: str) -> str:
    """Identifiers and paths break after ``_`` and ``/``; long host names also after ``.``."""
    broken = AFTER.sub("<wbr>", name)
    return AFTER_DOT.sub("<wbr>", broken) if len(name) > SHORT else broken


def break_names(html: str) -> str:
    """Put ``<wbr>`` into the inline code of table cells (and nowhere else)."""

    def cell(match: re.Match[str]) -> str:
        tag, attrs, body = match.groups()
        body = CODE.sub(lambda c: f"<code>{_breakable(c.group(1))}</code>", body)
        return f"<t{tag}{attrs}>{body}</t{tag}>"

    return CELL.sub(cell, html)


def on_page_content(html: str, **_: Any) -> str:
    """mkdocs event: the page body as HTML, before the theme wraps it."""
    return break_names(html)
