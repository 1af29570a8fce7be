"""CSS inlining (css-inline, the ``css`` extra): what it moves, what it keeps, the cascade order."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fluxmail.message.css import inline_css

pytest.importorskip("css_inline")


def body(html: str) -> str:
    """The part of css-inline's whole-document output between <body> and </body>."""
    match = re.search(r"<body>(.*)</body>", html, re.S)
    assert match is not None, html
    return match.group(1)


@pytest.mark.parametrize(
    ("css", "html", "expected"),
    [
        ("p { color: red }", "<p>x</p>", '<p style="color: red;">x</p>'),
        (
            ".note { color: red; }",
            '<p class="a note">x</p>',
            '<p class="a note" style="color: red;">x</p>',
        ),
        (
            "#main { margin: 0 }",
            '<div id="main">x</div>',
            '<div id="main" style="margin: 0;">x</div>',
        ),
        (
            "p.note { color: red }",
            '<p class="note">x</p><p>y</p>',
            '<p class="note" style="color: red;">x</p><p>y</p>',
        ),
        (
            "h1, h2 { font-weight: bold }",
            "<h1>a</h1><h2>b</h2>",
            '<h1 style="font-weight: bold;">a</h1><h2 style="font-weight: bold;">b</h2>',
        ),
        (
            ".a.b { x: 1 }",
            '<i class="a">1</i><i class="b a">2</i>',
            '<i class="a">1</i><i class="b a" style="x: 1;">2</i>',
        ),
        ("img { border: 0 }", '<img src="a.png"/>', '<img src="a.png" style="border: 0;">'),
    ],
)
def test_simple_selectors_are_inlined(css: str, html: str, expected: str) -> None:
    """tag, .class, #id, compound and comma-list selectors become style attributes."""
    assert body(inline_css(f"<style>{css}</style>{html}")) == expected


def test_cascade_by_specificity_then_order() -> None:
    """id beats class beats tag regardless of source order; a later rule beats an earlier one."""
    html = (
        "<style>#x { color: green } .c { color: blue; margin: 1px } p { color: red } "
        "p { margin: 0 } p { padding: 1px } p { padding: 2px }</style>"
        '<p id="x" class="c">t</p><p class="c">u</p>'
    )
    out = body(inline_css(html))
    first, second = re.findall(r'style="([^"]*)"', out)
    assert "color: green" in first and "color: blue" in second
    assert "margin: 1px" in first and "padding: 2px" in first
    assert "color: red" not in out and "padding: 1px" not in out


def test_existing_style_attribute_wins_over_normal_rules_not_over_important() -> None:
    """A style="" declaration beats the stylesheet; a stylesheet !important beats both."""
    html = (
        "<style>#x { color: green; margin: 0 } p { border: 1px !important }</style>"
        '<p id="x" style="color: black; border: 0">t</p>'
    )
    (style,) = re.findall(r'style="([^"]*)"', inline_css(html))
    assert "color: black" in style and "color: green" not in style
    assert "border: 1px !important" in style and "margin: 0" in style


def test_important_beats_higher_specificity() -> None:
    """!important wins over a more specific rule (CSS cascade, not source order)."""
    html = "<style>p { color: red !important } #x { color: green }</style><p id='x'>t</p>"
    assert "color: red !important" in inline_css(html)


def test_unsupported_rules_stay_in_the_style_block() -> None:
    """Media queries, pseudo-classes and unmatched rules stay in <style>; the rest is inlined."""
    html = (
        "<style>a:hover { color: red } @media (max-width: 600px) { p { x: 1 } } "
        "div p { y: 2 } p, a:visited { z: 3 }</style><p>t</p>"
    )
    out = inline_css(html)
    assert '<p style="z: 3;">t</p>' in out
    (kept,) = re.findall(r"<style>(.*?)</style>", out, re.S)
    assert "@media (max-width: 600px)" in kept and "p { x: 1 }" in kept
    assert "a:hover" in kept and "a:visited" in kept


def test_style_with_media_attribute_is_not_applied_everywhere() -> None:
    """A <style media=...> block is kept for its medium (as @media), never inlined."""
    html = '<style media="print">p { color: red }</style><p>t</p>'
    out = inline_css(html)
    assert body(out) == "<p>t</p>"
    assert "@media print" in out and "color: red" in out


def test_at_rules_are_kept_and_nothing_is_fetched(tmp_path: Path) -> None:
    """@import, @font-face and <link> stay as written; no stylesheet is read or fetched."""
    sheet = tmp_path / "a.css"
    sheet.write_text("p { color: red }", encoding="utf-8")
    remote = "http://127.0.0.1:9/b.css"  # loopback discard port, should a fetch ever happen
    html = (
        f'<link rel="stylesheet" href="{sheet}"><link rel="stylesheet" href="{remote}">'
        f"<style>@import url({sheet}); @font-face {{ font-family: X; src: url(x.woff) }} "
        "b { x: 1 }</style><p>t</p><b>b</b>"
    )
    out = inline_css(html)
    assert "<p>t</p>" in out and '<b style="x: 1;">b</b>' in out
    assert f'href="{sheet}"' in out and "@import" in out and "@font-face" in out


def test_document_is_otherwise_preserved() -> None:
    """Doctype, comments, entities and untouched tags survive (re-serialized as HTML5)."""
    html = (
        "<!DOCTYPE html><html><head><style>b { x: 1 }</style></head><body>"
        "<!-- note --><a href='x?a=1&amp;b=2'>&copy; &#169;</a><b>bold</b></body></html>"
    )
    out = inline_css(html)
    assert out == (
        "<!DOCTYPE html><html><head></head><body>"
        '<!-- note --><a href="x?a=1&amp;b=2">© ©</a>'
        '<b style="x: 1;">bold</b></body></html>'
    )


def test_attribute_values_are_escaped_when_rewritten() -> None:
    """Attributes of rewritten tags are re-quoted safely: a quote cannot end the attribute."""
    out = inline_css('<style>p { x: 1 }</style><p title="a &quot;b&quot; &lt;c&gt;">t</p>')
    assert body(out) == '<p title="a &quot;b&quot; <c>" style="x: 1;">t</p>'


def test_html_without_style_is_returned_unchanged() -> None:
    """No <style> block: the input comes back as is."""
    html = "<p class='x'>unchanged &amp; fine</p>"
    assert inline_css(html) == html


def test_comments_in_css_are_ignored() -> None:
    """CSS comments do not break rule parsing."""
    out = inline_css("<style>/* a { } */ p { x: 1 } /* end */</style><p>t</p>")
    assert body(out) == '<p style="x: 1;">t</p>'
