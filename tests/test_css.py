"""The dependency-free CSS inliner: what it moves, what it leaves, and the cascade order."""

from __future__ import annotations

import pytest

from fluxmail.message.css import inline_css


@pytest.mark.parametrize(
    ("css", "html", "expected"),
    [
        ("p { color: red }", "<p>x</p>", '<p style="color: red">x</p>'),
        (
            ".note { color: red; }",
            '<p class="a note">x</p>',
            '<p class="a note" style="color: red">x</p>',
        ),
        (
            "#main { margin: 0 }",
            '<div id="main">x</div>',
            '<div id="main" style="margin: 0">x</div>',
        ),
        (
            "p.note { color: red }",
            '<p class="note">x</p><p>y</p>',
            '<p class="note" style="color: red">x</p><p>y</p>',
        ),
        (
            "h1, h2 { font-weight: bold }",
            "<h1>a</h1><h2>b</h2>",
            '<h1 style="font-weight: bold">a</h1><h2 style="font-weight: bold">b</h2>',
        ),
        (
            ".a.b { x: 1 }",
            '<i class="a">1</i><i class="b a">2</i>',
            '<i class="a">1</i><i class="b a" style="x: 1">2</i>',
        ),
        ("img { border: 0 }", '<img src="a.png"/>', '<img src="a.png" style="border: 0" />'),
    ],
)
def test_simple_selectors_are_inlined(css: str, html: str, expected: str) -> None:
    """tag, .class, #id, compound and comma-list selectors become style attributes."""
    assert inline_css(f"<style>{css}</style>{html}") == expected


def test_cascade_by_specificity_then_order_and_inline_style_wins() -> None:
    """id beats class beats tag regardless of source order; an existing style attribute is last."""
    html = (
        "<style>#x { color: green } .c { color: blue } p { color: red } p { margin: 0 }</style>"
        '<p id="x" class="c" style="color: black">t</p>'
    )
    assert inline_css(html) == (
        '<p id="x" class="c" style="color: red; margin: 0; color: blue; color: green; '
        'color: black">t</p>'
    )


def test_unsupported_rules_stay_in_the_style_block() -> None:
    """Media queries, pseudo-classes and combinators are left in <style>; the rest is inlined."""
    html = (
        "<style>a:hover { color: red } @media (max-width: 600px) { p { x: 1 } } "
        "div p { y: 2 } p, a:visited { z: 3 }</style><p>t</p>"
    )
    out = inline_css(html)
    assert '<p style="z: 3">t</p>' in out
    for kept in ("a:hover {color: red}", "@media (max-width: 600px) {p { x: 1 }}", "div p {y: 2}"):
        assert kept in out
    assert "a:visited {z: 3}" in out


def test_style_with_media_attribute_is_untouched() -> None:
    """A <style media=...> block is not inlined."""
    html = '<style media="print">p { color: red }</style><p>t</p>'
    assert inline_css(html) == html


def test_document_is_otherwise_preserved() -> None:
    """Doctype, comments, entities, char refs and untouched tags are copied verbatim."""
    html = (
        "<!DOCTYPE html><html><head><style>b { x: 1 }</style></head><body>"
        "<!-- note --><a href='x?a=1&amp;b=2'>&copy; &#169;</a><b>bold</b></body></html>"
    )
    out = inline_css(html)
    assert out == (
        "<!DOCTYPE html><html><head></head><body>"
        "<!-- note --><a href='x?a=1&amp;b=2'>&copy; &#169;</a>"
        '<b style="x: 1">bold</b></body></html>'
    )


def test_attribute_values_are_escaped_when_rewritten() -> None:
    """Attributes of rewritten tags are re-quoted safely."""
    out = inline_css('<style>p { x: 1 }</style><p title="a &quot;b&quot; &lt;c&gt;">t</p>')
    assert out == '<p title="a &quot;b&quot; &lt;c&gt;" style="x: 1">t</p>'


def test_html_without_style_is_returned_unchanged() -> None:
    """No <style> block: the input comes back as is."""
    html = "<p class='x'>unchanged &amp; fine</p>"
    assert inline_css(html) == html


def test_comments_in_css_are_ignored() -> None:
    """CSS comments do not break rule parsing."""
    assert inline_css("<style>/* a { } */ p { x: 1 } /* end */</style><p>t</p>") == (
        '<p style="x: 1">t</p>'
    )
