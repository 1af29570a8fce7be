"""A small, dependency-free CSS inliner for HTML e-mail (``inline_css=True``).

Many mail clients drop ``<style>`` blocks, so simple rules are copied into ``style=""``
attributes. What it handles:

- selectors ``tag``, ``.class``, ``#id``, and compounds of those (``tag.class``, ``p#intro``,
  ``.a.b``), in comma lists; ``*`` is not handled;
- cascade by specificity (id > class > tag), then source order; declarations already in a
  ``style`` attribute win over the stylesheet;
- ``!important`` is kept on the declaration text but not given extra weight.

Limits (left untouched in the ``<style>`` block, which is kept when anything remains): at-rules
(``@media``, ``@font-face``, ``@import``...), pseudo-classes and pseudo-elements (``a:hover``),
combinators (``div p``, ``ul > li``, ``+``, ``~``), attribute selectors, and ``<style>`` elements
with a ``media`` attribute. Shorthand and longhand properties are not merged. The HTML is
re-serialized from ``html.parser`` events: tags that receive styles are rewritten (attributes
re-quoted), everything else is copied verbatim.
"""

from __future__ import annotations

import re
from html import escape
from html.parser import HTMLParser

__all__ = ["inline_css"]

_COMMENT = re.compile(r"/\*.*?\*/", re.S)
_SIMPLE = re.compile(r"([A-Za-z][A-Za-z0-9-]*)?((?:[.#][A-Za-z_-][A-Za-z0-9_-]*)*)")
_PART = re.compile(r"([.#])([A-Za-z0-9_-]+)")

_Rule = tuple[tuple[int, int, int], int, str | None, tuple[str, ...], str | None, str]


def _split_blocks(css: str) -> list[tuple[str, str]]:
    """Top-level ``(prelude, body)`` pairs; nested braces (at-rules) stay in one body."""
    blocks: list[tuple[str, str]] = []
    depth, start, prelude = 0, 0, ""
    for index, char in enumerate(css):
        if char == "{":
            if depth == 0:
                prelude, start = css[start:index].strip(), index + 1
            depth += 1
        elif char == "}" and depth:
            depth -= 1
            if depth == 0:
                blocks.append((prelude, css[start:index].strip()))
                start = index + 1
    return blocks


def _parse_selector(selector: str) -> tuple[str | None, tuple[str, ...], str | None] | None:
    match = _SIMPLE.fullmatch(selector)
    if match is None or not selector:
        return None
    ids = [name for kind, name in _PART.findall(match.group(2)) if kind == "#"]
    classes = tuple(name for kind, name in _PART.findall(match.group(2)) if kind == ".")
    if len(ids) > 1:
        return None
    tag = match.group(1).lower() if match.group(1) else None
    return tag, classes, ids[0] if ids else None


def _parse_css(css: str) -> tuple[list[_Rule], str]:
    """Inlinable rules (with specificity and order) and the CSS text that must stay."""
    rules: list[_Rule] = []
    leftover: list[str] = []
    for prelude, body in _split_blocks(_COMMENT.sub("", css)):
        if prelude.startswith("@"):
            leftover.append(f"{prelude} {{{body}}}")
            continue
        kept: list[str] = []
        for selector in (part.strip() for part in prelude.split(",")):
            parsed = _parse_selector(selector)
            if parsed is None:
                kept.append(selector)
                continue
            tag, classes, ident = parsed
            weight = (int(ident is not None), len(classes), int(tag is not None))
            rules.append((weight, len(rules), tag, classes, ident, body.strip().rstrip(";")))
        if kept:
            leftover.append(f"{', '.join(kept)} {{{body}}}")
    rules.sort(key=lambda rule: (rule[0], rule[1]))
    return rules, "\n".join(leftover)


class _Collector(HTMLParser):
    """First pass: the text of every ``<style>`` block that we may inline."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.css: list[str] = []
        self._inside = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._inside = tag == "style" and "media" not in dict(attrs)

    def handle_endtag(self, tag: str) -> None:
        self._inside = False

    def handle_data(self, data: str) -> None:
        if self._inside:
            self.css.append(data)


class _Inliner(HTMLParser):
    """Second pass: copy the document, adding styles and replacing the inlined blocks."""

    def __init__(self, rules: list[_Rule], leftover: str) -> None:
        super().__init__(convert_charrefs=False)
        self.rules, self.leftover = rules, leftover
        self.out: list[str] = []
        self._skip = False  # inside an inlined <style> block
        self._emitted_leftover = False

    def _styles(self, tag: str, attrs: list[tuple[str, str | None]]) -> list[str]:
        values = dict(attrs)
        classes = set((values.get("class") or "").split())
        ident = values.get("id")
        found = []
        for _weight, _order, r_tag, r_classes, r_id, body in self.rules:
            if r_tag is not None and r_tag != tag:
                continue
            if r_id is not None and r_id != ident:
                continue
            if all(name in classes for name in r_classes) and body:
                found.append(body)
        return found

    def _tag(self, tag: str, attrs: list[tuple[str, str | None]], close: str) -> None:
        raw = self.get_starttag_text() or ""
        found = self._styles(tag, attrs)
        if not found:
            self.out.append(raw)
            return
        existing = dict(attrs).get("style")
        style = "; ".join([*found, *([existing.strip().rstrip(";")] if existing else [])])
        parts = [tag]
        for name, value in attrs:
            if name != "style":
                parts.append(name if value is None else f'{name}="{escape(value, quote=True)}"')
        parts.append(f'style="{escape(style, quote=True)}"')
        self.out.append(f"<{' '.join(parts)}{close}>")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "style" and "media" not in dict(attrs):
            self._skip = True
            if self.leftover and not self._emitted_leftover:
                self._emitted_leftover = True
                self.out.append(f"{self.get_starttag_text()}\n{self.leftover}\n</style>")
            return
        self._tag(tag, attrs, "")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._tag(tag, attrs, " /")

    def handle_endtag(self, tag: str) -> None:
        if self._skip and tag == "style":
            self._skip = False
            return
        self.out.append(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.out.append(data)

    def handle_entityref(self, name: str) -> None:
        self.out.append(f"&{name};")

    def handle_charref(self, name: str) -> None:
        self.out.append(f"&#{name};")

    def handle_comment(self, data: str) -> None:
        self.out.append(f"<!--{data}-->")

    def handle_decl(self, decl: str) -> None:
        self.out.append(f"<!{decl}>")

    def handle_pi(self, data: str) -> None:
        self.out.append(f"<?{data}>")

    def unknown_decl(self, data: str) -> None:
        self.out.append(f"<![{data}]>")


def inline_css(html: str) -> str:
    """Move simple ``<style>`` rules into ``style`` attributes; see the module docstring."""
    collector = _Collector()
    collector.feed(html)
    collector.close()
    if not collector.css:
        return html
    rules, leftover = _parse_css("\n".join(collector.css))
    inliner = _Inliner(rules, leftover)
    inliner.feed(html)
    inliner.close()
    return "".join(inliner.out)
