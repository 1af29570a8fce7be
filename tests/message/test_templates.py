"""Templates (Jinja2): escaping, strict variables, layouts, names, errors with stable codes."""

from __future__ import annotations

import os
import threading
from html.parser import HTMLParser
from pathlib import Path

import pytest

from fluxmail.errors import MessageError
from fluxmail.message.templates import Templates, check_name

pytest.importorskip("jinja2")

HOSTILE = '<script>alert(1)</script>" onmouseover="alert(2)'


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write(
        tmp_path,
        {
            "welcome.subject": "  Welcome, {{ name }}!  \n",
            "welcome.txt": "Hi {{ name }},\nthanks.\n",
            "welcome.html": '<p title="{{ name }}">Hi {{ name }}</p>\n',
            "text_only.subject": "Plain",
            "text_only.txt": "{{ name }}",
            "html_only.subject": "Rich",
            "html_only.html": "<b>{{ name }}</b>",
        },
    )


class Elements(HTMLParser):
    """Start tags and their attributes, as a browser's parser sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


def parsed(html: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    parser = Elements()
    parser.feed(html)
    return parser.tags


def test_hostile_values_are_escaped_in_html_only(folder: Path) -> None:
    """<script> and a quote that would open an attribute stay text in HTML; the text part
    and the subject keep the value as written."""
    rendered = Templates(folder).render("welcome", {"name": HOSTILE})
    assert rendered.html is not None and rendered.text is not None
    assert parsed(rendered.html) == [("p", [("title", HOSTILE)])]  # one tag, one attribute
    assert "<script>" not in rendered.html and "&lt;script&gt;" in rendered.html
    assert rendered.text == f"Hi {HOSTILE},\nthanks."
    assert rendered.subject == f"Welcome, {HOSTILE}!"  # stripped, not escaped


def test_parts_present_decide_the_bodies(folder: Path) -> None:
    """A template may have text, HTML or both; each maps to create()'s body arguments."""
    templates = Templates(folder)
    both = templates.render("welcome", {"name": "Ada"}).fields()
    assert both == {
        "subject": "Welcome, Ada!",
        "body": '<p title="Ada">Hi Ada</p>',
        "html_body": True,
        "plain_body": "Hi Ada,\nthanks.",
    }
    assert templates.render("text_only", {"name": "Ada"}).fields() == {
        "subject": "Plain", "body": "Ada", "html_body": False,
    }  # fmt: skip
    html_only = templates.render("html_only", {"name": "<i>"})
    assert html_only.text is None and html_only.html == "<b>&lt;i&gt;</b>"


@pytest.mark.parametrize(
    ("files", "variable"),
    [
        ({"t.subject": "Hi {{ first_name }}", "t.txt": "x"}, "first_name"),
        ({"t.subject": "Hi", "t.txt": "line 1\n{{ order.total }}"}, "total"),
        ({"t.subject": "Hi", "t.html": "{% if vip %}x{% endif %}"}, "vip"),
    ],
)
def test_a_missing_variable_is_named(tmp_path: Path, files: dict[str, str], variable: str) -> None:
    """StrictUndefined: a missing name (or attribute) is template_variable_missing naming it,
    never an empty string."""
    with pytest.raises(MessageError) as caught:
        Templates(write(tmp_path, files)).render("t", {"order": {}})
    assert caught.value.code == "template_variable_missing"
    assert caught.value.details["variable"] == variable
    assert repr(variable) in str(caught.value)


def test_a_missing_variable_names_the_file_and_line(tmp_path: Path) -> None:
    """The message points at the template line that used the variable."""
    folder = write(tmp_path, {"t.subject": "Hi", "t.txt": "one\ntwo\n{{ gone }}\n"})
    with pytest.raises(MessageError) as caught:
        Templates(folder).render("t", {})
    assert "t.txt line 3" in str(caught.value)


def test_a_template_extends_a_layout(tmp_path: Path) -> None:
    """{% extends %} and blocks; the layout's own variables come from the same context;
    a folder inside the templates folder works for names and layouts."""
    folder = write(
        tmp_path,
        {
            "layouts/base.html": (
                "<html><body><h1>{{ brand }}</h1>{% block content %}default{% endblock %}"
                "<footer>{% block footer %}Bye{% endblock %}</footer></body></html>"
            ),
            "emails/receipt.subject": "Receipt {{ order }}",
            "emails/receipt.html": (
                '{% extends "layouts/base.html" %}'
                "{% block content %}<p>Order {{ order }}</p>{% endblock %}"
            ),
        },
    )
    html = Templates(folder).render("emails/receipt", {"brand": "<Shop>", "order": 42}).html
    assert html == (
        "<html><body><h1>&lt;Shop&gt;</h1><p>Order 42</p><footer>Bye</footer></body></html>"
    )


@pytest.mark.parametrize(
    "name",
    ["../secret", "a/../../b", "/etc/passwd", "C:\\x", "a\\b", "", "a//b", "./a", "x\x00", 7],
)
def test_names_outside_the_folder_are_refused(folder: Path, name: object) -> None:
    """No path escape: '..', absolute paths, backslashes, drive letters, empty or odd parts."""
    with pytest.raises(MessageError) as caught:
        Templates(folder).render(name, {})
    assert caught.value.code == "invalid_template_name"


def test_a_layout_outside_the_folder_is_not_found(tmp_path: Path) -> None:
    """{% extends "../x" %} cannot leave the folder either: the loader refuses it."""
    (tmp_path / "outside.html").write_text("SECRET")
    folder = write(tmp_path / "t", {"t.subject": "s", "t.html": '{% extends "../outside.html" %}'})
    with pytest.raises(MessageError) as caught:
        Templates(folder).render("t", {})
    assert caught.value.code == "template_not_found"


def test_not_found(folder: Path, tmp_path: Path) -> None:
    """No subject file, no body file, a missing layout, or no folder: template_not_found."""
    write(folder, {"nobody.subject": "s", "nosubject.txt": "x"})
    write(folder, {"orphan.subject": "s", "orphan.html": '{% extends "gone.html" %}'})
    for name, missing in [
        ("nothing", "nothing.subject"),
        ("nosubject", "nosubject.subject"),
        ("nobody", "nobody.txt"),
        ("orphan", "gone.html"),
    ]:
        with pytest.raises(MessageError) as caught:
            Templates(folder).render(name, {})
        assert caught.value.code == "template_not_found", name
        assert missing in str(caught.value), str(caught.value)
    with pytest.raises(MessageError) as caught:
        Templates(None).render("welcome", {})
    assert caught.value.code == "template_not_found"
    assert "FLUXMAIL_TEMPLATES_DIR" in str(caught.value)


@pytest.mark.parametrize(
    ("files", "where"),
    [
        ({"t.subject": "s", "t.txt": "ok\n{% for %}\n"}, "t.txt line 2"),
        ({"t.subject": "{{ }}", "t.txt": "x"}, "t.subject line 1"),
        (
            {"t.subject": "s", "t.html": '{% extends "l.html" %}', "l.html": "\n{% block %}"},
            "l.html line 2",
        ),
    ],
)
def test_syntax_errors_name_file_and_line(
    tmp_path: Path, files: dict[str, str], where: str
) -> None:
    """A syntax error (in the template or its layout) is template_invalid with file and line."""
    with pytest.raises(MessageError) as caught:
        Templates(write(tmp_path, files)).render("t", {"x": 1})
    assert caught.value.code == "template_invalid"
    assert where in str(caught.value)


def test_a_failing_value_is_the_message_error(tmp_path: Path) -> None:
    """An error raised while rendering (a filter, a value's __str__) is template_invalid, so a
    bulk run fails that message only."""

    class Broken:
        def __str__(self) -> str:
            raise RuntimeError("no text")

    folder = write(tmp_path, {"t.subject": "s", "t.txt": "{{ value }}", "u.subject": "s"})
    write(folder, {"u.txt": "{{ n + 'x' }}"})
    for name, context in [("t", {"value": Broken()}), ("u", {"n": 1})]:
        with pytest.raises(MessageError) as caught:
            Templates(folder).render(name, context)
        assert caught.value.code == "template_invalid"


def test_the_sandbox_keeps_python_internals_out(tmp_path: Path) -> None:
    """A template cannot walk from a value to Python internals (SandboxedEnvironment)."""
    folder = write(tmp_path, {"t.subject": "s", "t.txt": "{{ name.__class__.__mro__ }}"})
    with pytest.raises(MessageError) as caught:
        Templates(folder).render("t", {"name": "x"})
    assert caught.value.code in ("template_invalid", "template_variable_missing")


def test_context_must_be_a_mapping_of_names(folder: Path) -> None:
    """context= is a mapping with string keys (or None)."""
    for bad in (["name"], {1: "x"}, "name=Ada"):
        with pytest.raises(MessageError) as caught:
            Templates(folder).render("welcome", bad)
        assert caught.value.code == "invalid_message"


def test_a_changed_file_is_picked_up(folder: Path) -> None:
    """Jinja2's cache reloads a template whose file changed on disk."""
    templates = Templates(folder)
    assert templates.render("text_only", {"name": "a"}).text == "a"
    path = folder / "text_only.txt"
    path.write_text("changed {{ name }}")
    stat = path.stat()
    os.utime(path, (stat.st_atime, stat.st_mtime + 5))
    assert templates.render("text_only", {"name": "a"}).text == "changed a"


def test_one_environment_shared_by_threads(folder: Path) -> None:
    """Many threads rendering at once through one Templates: same results, one environment."""
    templates = Templates(folder)
    results: list[str] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        subject = templates.render("welcome", {"name": f"n{i}"}).subject
        with lock:
            results.append(subject)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(results) == sorted(f"Welcome, n{i}!" for i in range(16))
    assert templates._environment() is templates._environment()


def test_check_name_accepts_folders() -> None:
    """Plain names and sub-folders pass unchanged."""
    assert check_name("welcome") == "welcome"
    assert check_name("emails/2024/welcome") == "emails/2024/welcome"
