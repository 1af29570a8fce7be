"""Project-level promises: install lines work, the version is a release, metadata URLs are real,
``make test`` fails when it tests nothing, and comments cite only files in the repository."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

import fluxmail
from tests.support import ROOT

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _pyproject() -> dict[str, Any]:
    return dict(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8")))


# --- install lines ---------------------------------------------------------------------------

# The name `fluxmail` on PyPI is an unrelated 0.3.3 package, and this project has no public
# repository: the only installs that work are from a checkout or from a wheel built from one.
INSTALL = re.compile(r"\bpip3? install\b(?P<args>[^`\n]*)")
VALUED_OPTIONS = {"--target", "-t", "--python", "--prefix", "--root", "--wheel-dir", "-w"}
FLAGS = {"-q", "--quiet", "-U", "--upgrade", "--no-cache-dir", "--no-deps", "--user", "-e"}
LOCAL = re.compile(r"^(?P<path>\.|\./[^\[]*|/[^\[]*)(?:\[(?P<extras>[a-z0-9_,-]+)\])?$")


def install_problems(args: str) -> list[str]:
    """Why the arguments of one `pip install` line would not install this fluxmail (or [])."""
    command = re.split(r"&&|;|\||\s#", args)[0]
    words = shlex.split(command)
    extras = set(_pyproject()["project"]["optional-dependencies"])
    wheel = f"fluxmail-{fluxmail.__version__}-py3-none-any.whl"
    problems: list[str] = []
    targets: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word in VALUED_OPTIONS:
            skip = True
        elif word.startswith("-"):
            if word not in FLAGS:
                problems.append(f"unknown option {word!r}")
        else:
            targets.append(word)
    if not targets:
        problems.append("nothing to install")
    for target in targets:
        match = LOCAL.match(target)
        if match is None:
            problems.append(f"{target!r} is not a checkout or a wheel path")
            continue
        path = match.group("path")
        if path.endswith(".whl") and Path(path).name != wheel:
            problems.append(f"{target!r}: the wheel this checkout builds is {wheel}")
        elif not path.endswith(".whl") and path not in (".", "./"):
            problems.append(f"{target!r}: install the checkout as '.'")
        unknown = set((match.group("extras") or "").split(",")) - extras - {""}
        if unknown:
            problems.append(f"{target!r}: no such extra {sorted(unknown)}")
    return problems


def _install_lines() -> list[tuple[str, str]]:
    found = []
    for path in DOC_FILES:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in INSTALL.finditer(line):
                found.append((f"{path.relative_to(ROOT)}:{number}", match.group("args")))
    return found


def test_every_documented_install_line_installs_this_project() -> None:
    """Each `pip install` in README and docs installs from a checkout or this version's wheel."""
    lines = _install_lines()
    assert len(lines) >= 5, lines  # the scan found the quickstart, audit, docker, lambda lines
    bad = {where: problems for where, args in lines if (problems := install_problems(args))}
    assert not bad, bad


@pytest.mark.parametrize(
    "args",
    [
        " fluxmail",
        " -q 'fluxmail[postgres]'",
        ' "git+https://github.com/fluxmail/fluxmail"',
        " ./dist/fluxmail-0.9.0-py3-none-any.whl",
        " '.[no_such_extra]'",
        " --index-url https://pypi.org/simple .",
        "",
    ],
)
def test_install_check_rejects_lines_that_do_not_work(args: str) -> None:
    """The checker above is not vacuous: index names, URLs, stale wheels, bad extras fail."""
    assert install_problems(args)


@pytest.mark.parametrize(
    "args",
    [
        " .",
        " -e '.[dev]'",
        " -q --no-deps ./dist/fluxmail-1.0.0-py3-none-any.whl",
        " --target package './fluxmail-1.0.0-py3-none-any.whl[postgres]'",
        " '.[postgres]'   # a comment",
    ],
)
def test_install_check_accepts_checkout_and_wheel_forms(args: str) -> None:
    """The forms the docs use (checkout, editable with extras, wheel with extras) pass."""
    if fluxmail.__version__ != "1.0.0":
        args = args.replace("1.0.0", fluxmail.__version__)
    assert install_problems(args) == []


# --- version and metadata --------------------------------------------------------------------


def test_version_is_a_release_written_once() -> None:
    """The version is a final release (pip skips pre-releases) and only __init__.py states it."""
    from packaging.version import Version

    assert not Version(fluxmail.__version__).is_prerelease
    assert str(Version(fluxmail.__version__)) == fluxmail.__version__
    project = _pyproject()
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["hatch"]["version"]["path"] == "fluxmail/__init__.py"


PLACEHOLDER_HOST = re.compile(
    r"(\.invalid|\.example|\.test|\.localhost|^localhost|(^|\.)example\.(com|org|net))$"
)


def placeholder_urls(urls: dict[str, str]) -> list[str]:
    """The URLs whose host is reserved for examples and documentation (RFC 2606, RFC 6761)."""
    bad = []
    for name, url in urls.items():
        match = re.match(r"^https://([^/:?#]+)", url.lower())
        if match is None or PLACEHOLDER_HOST.search(match.group(1)):
            bad.append(name)
    return bad


def test_metadata_urls_are_not_placeholders() -> None:
    """[project.urls] names only real addresses (none is better than fluxmail.invalid)."""
    assert placeholder_urls(_pyproject()["project"].get("urls", {})) == []
    assert placeholder_urls({"Documentation": "https://fluxmail.invalid/docs"}) == ["Documentation"]
    assert placeholder_urls({"Home": "https://docs.example.com/x"}) == ["Home"]


# --- make test -------------------------------------------------------------------------------


def _make_test(pytest_args: str) -> subprocess.CompletedProcess[str]:
    # -o: the venv is already installed (this test runs in it); never reinstall from here.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "MAKE"))}
    return subprocess.run(
        ["make", "-s", "-o", ".venv/.installed", "test", f"PYTEST_ARGS={pytest_args}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
def test_make_test_fails_when_nothing_is_collected() -> None:
    """`make test` exits non-zero on pytest's exit 5 (no test collected), zero on a real pass."""
    # --collect-only on one small file: cheap, and it cannot recurse into the whole suite.
    empty = _make_test("--collect-only -k no_such_test_zz tests/project/test_package.py")
    assert empty.returncode != 0, empty.stdout + empty.stderr
    assert "no tests collected" in empty.stdout
    some = _make_test("--collect-only -k test_all_names_resolve tests/project/test_package.py")
    assert some.returncode == 0, some.stdout + some.stderr


def test_readme_test_command_is_what_ci_runs() -> None:
    """The README's test command is the one .ci/run runs, so a green CI means the README works."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert re.search(r"^make test\s+#", readme, re.MULTILINE)
    assert ci[-1] == "make test"


# --- references to files ---------------------------------------------------------------------

SCANNED = [
    "fluxmail",
    "tests",
    "bench",
    "docs",
    "scripts",
    "Makefile",
    "README.md",
    "mkdocs.yml",
    "pyproject.toml",
    ".ci/run",
]
OUTSIDE = re.compile(r"(?<![\w./-])(?:\.\./)*(?:shared|reference)/[\w./-]*")
MD_NAME = re.compile(r"(?<![\w-])[\w./-]*[\w-]\.md\b")


def _scanned_files() -> list[Path]:
    files: list[Path] = []
    for name in SCANNED:
        path = ROOT / name
        found = sorted(path.rglob("*")) if path.is_dir() else [path]
        files += [
            f
            for f in found
            if f.is_file() and f.suffix in ("", ".py", ".md", ".yml", ".toml", ".sh", ".yaml")
        ]
    # Not what tools leave in the tree (bench/.venv-*, bench/results): see .gitignore.
    skipped = ("__pycache__", ".venv", "results", ".hypothesis")
    return [f for f in files if not any(p.startswith(skipped) for p in f.relative_to(ROOT).parts)]


def missing_references(path: Path, text: str, known: set[str]) -> list[str]:
    """The files ``text`` (in ``path``) cites that a reader of the repository cannot open."""
    bad = [m.group(0) for m in OUTSIDE.finditer(text)]
    for match in MD_NAME.finditer(text):
        name = match.group(0)
        candidates = [ROOT / name, path.parent / name, ROOT / "docs" / name]
        if not any(c.is_file() for c in candidates) and Path(name).name not in known:
            bad.append(name)
    return bad


def test_comments_cite_only_files_in_the_repository() -> None:
    """No source, test, bench or docs file cites ../shared, reference/*.md or a missing .md."""
    files = _scanned_files()
    known = {f.name for f in [*files, *ROOT.glob("*.md")] if f.suffix == ".md"}
    this = Path(__file__).resolve()
    bad = {
        str(f.relative_to(ROOT)): found
        for f in files
        if f != this and (found := missing_references(f, f.read_text(encoding="utf-8"), known))
    }
    assert not bad, bad


def test_reference_check_catches_outside_files() -> None:
    """The scan above flags the forms that used to be in the tree."""
    here = ROOT / "fluxmail" / "delivery.py"
    for text in (
        "Policy (shared/reference/smtp-faults.md)",
        "as in baselines.md",
        "see ../shared/STYLE.md",
        "reference/peers.md",
    ):
        assert missing_references(here, text, {"README.md"}), text
    assert missing_references(here, "see docs/delivery.md and README.md", {"README.md"}) == []


# --- the built site --------------------------------------------------------------------------

# About 80 monospace characters fit in a code block at 1280 px (measured in Chromium).
CODE_WIDTH = 80


def test_site_uses_the_readability_css_and_hook() -> None:
    """mkdocs.yml loads extra.css (no mid-word breaks in tables) and the <wbr> hook."""
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert "  - stylesheets/extra.css" in config and "  - scripts/mkdocs_hooks.py" in config
    css = (ROOT / "docs" / "stylesheets" / "extra.css").read_text(encoding="utf-8")
    assert "word-break: normal" in css and "overflow-x: auto" in css


def test_table_code_breaks_only_after_separators() -> None:
    """Names in table cells get <wbr> after _ / (and . when long); code elsewhere is untouched."""
    from scripts.mkdocs_hooks import break_names

    html = (
        "<p><code>FLUXMAIL_HOST</code></p><table><tr><td><code>FLUXMAIL_HOST</code></td>"
        '<td align="left"><code>smtp.gmail.com</code> or <code>email-smtp.{region}.amazonaws.com'
        "</code></td></tr></table><pre><code>a_b</code></pre>"
    )
    out = break_names(html)
    assert "<p><code>FLUXMAIL_HOST</code></p>" in out and "<pre><code>a_b</code></pre>" in out
    assert "<td><code>FLUXMAIL_<wbr>HOST</code></td>" in out
    assert "<code>smtp.gmail.com</code>" in out
    assert "<code>email-smtp.<wbr>{region}.<wbr>amazonaws.<wbr>com</code>" in out
    assert re.sub("<wbr>", "", out) == html


def test_recipe_code_lines_fit_the_page() -> None:
    """No line of a recipe's code block is clipped at 1280 px (comments go above the code)."""
    long_lines = []
    for page in sorted((ROOT / "docs" / "recipes").glob("*.md")):
        inside = False
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            if line.lstrip().startswith("```"):
                inside = not inside
            elif inside and len(line) > CODE_WIDTH:
                long_lines.append(f"{page.name}:{number}: {line}")
    assert not long_lines, "\n".join(long_lines)


def test_upstream_marker_is_explained() -> None:
    """configuration.md says once what "(upstream)" in its descriptions means."""
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    if "(upstream)" in text:
        assert "*(upstream)* marks a setting that fluxmail 0.3.3 already had" in text
