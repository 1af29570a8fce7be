"""CSS inlining for HTML e-mail (``inline_css=True``), done by the ``css-inline`` package.

Many mail clients drop ``<style>`` blocks, so the rules are copied into ``style=""`` attributes
with the CSS cascade (specificity, source order, ``!important``; a declaration already in a
``style`` attribute beats a normal stylesheet one). ``css-inline`` is an extra
(``pip install 'fluxmail[css]'``): the core install stays small.

Choices (``CSSInliner`` options: https://pypi.org/project/css-inline/ and
https://docs.rs/css-inline/latest/css_inline/struct.InlineOptions.html):

- nothing is ever fetched: ``load_remote_stylesheets=False`` (no network and no local file read
  for ``<link>`` or ``@import``), ``<link>`` tags are kept as written;
- rules that were inlined leave their ``<style>`` block; what cannot be inlined (``@media``,
  ``@font-face``, ``a:hover``, a selector that matched nothing) stays in it
  (``keep_at_rules`` and ``remove_inlined_selectors``, css-inline >= 0.19); an emptied block goes;
- a ``<style media="...">`` block is rewritten as ``@media ... { }`` first, so its rules are kept
  for that medium instead of being applied everywhere;
- the result is a whole document: a fragment comes back inside ``<html><head><body>``.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from fluxmail.errors import ConfigurationError, MessageError

__all__ = ["inline_css"]

# HTML: <style> content is raw text that ends at the first "</style" (HTML Living Standard,
# 13.2.5.3), so a regex finds the blocks exactly.
_STYLE = re.compile(r"<style\b([^>]*)>(.*?)</style\s*>", re.I | re.S)
_MEDIA = re.compile(r"""\bmedia\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""", re.I)


@lru_cache(maxsize=1)
def _inliner() -> Any:
    try:
        import css_inline
    except ImportError as exc:
        raise ConfigurationError(
            "inline_css=True needs the css-inline package: pip install 'fluxmail[css]'",
            code="missing_extra",
        ) from exc
    return css_inline.CSSInliner(
        keep_style_tags=False,
        keep_link_tags=True,
        keep_at_rules=True,
        remove_inlined_selectors=True,
        load_remote_stylesheets=False,
        base_url=None,
    )


def _media_as_at_rule(match: re.Match[str]) -> str:
    attrs, css = match.group(1), match.group(2)
    media = _MEDIA.search(attrs)
    if media is None:
        return match.group(0)
    query = next(part for part in media.groups() if part is not None).strip()
    if not query or query.lower() == "all":
        return f"<style{_MEDIA.sub('', attrs)}>{css}</style>"
    return f"<style{_MEDIA.sub('', attrs)}>@media {query} {{{css}}}</style>"


def inline_css(html: str) -> str:
    """Move ``<style>`` rules into ``style`` attributes; see the module docstring."""
    inliner = _inliner()
    if "<style" not in html.lower():
        return html
    try:
        result: str = inliner.inline(_STYLE.sub(_media_as_at_rule, html))
    except ValueError as exc:  # css_inline.InlineError
        raise MessageError(f"the HTML body cannot be inlined: {exc}", code="invalid_body") from exc
    return result
