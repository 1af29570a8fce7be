"""docs/cli.md cannot drift: every command and flag it shows exists, every exit code is listed."""

from __future__ import annotations

import re
import shlex

import pytest

from fluxmail.cli.exit_codes import EXIT_CODES
from tests.support import ROOT
from tests.support.cli import cli

DOC = ROOT / "docs" / "cli.md"
GLOBAL_FLAGS = {"--debug", "--version", "--help"}


def _commands() -> list[list[str]]:
    found = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = re.search(r"(?:^\$ |\| )(?:[A-Z_]+=\S+ )*fluxmail (.+?)(?: \\)?$", line)
        if match:
            found.append(shlex.split(match.group(1).replace("$SMTP_PASSWORD", "x")))
    return found


def test_doc_shows_every_command() -> None:
    """Each command of the CLI appears in docs/cli.md at least once."""
    shown = {tuple(c[:2]) if c[0] == "audit" else (c[0],) for c in _commands()}
    expected = {("send",), ("check",), ("config",), ("providers",), ("dev-server",)}
    assert expected | {("audit", "list"), ("audit", "show")} <= shown


def test_doc_flags_exist(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every --flag used in a docs/cli.md command is accepted by that command's --help."""
    helps: dict[tuple[str, ...], str] = {}
    for command in _commands():
        # Command groups: the flags belong to the subcommand (`fluxmail outbox stats --json`).
        grouped = command[0] in ("audit", "outbox") and len(command) > 1
        path = tuple(command[:2]) if grouped else (command[0],)
        if path not in helps:
            ran = cli(capsys, monkeypatch, *path, "--help")
            assert ran.code == 0, path
            helps[path] = ran.out
        for flag in (t.split("=")[0] for t in command if t.startswith("--")):
            assert flag in GLOBAL_FLAGS or flag in helps[path], (path, flag)


def test_doc_lists_every_exit_code() -> None:
    """The exit-code table names every code of fluxmail.cli.exit_codes.EXIT_CODES."""
    text = DOC.read_text(encoding="utf-8")
    for code in EXIT_CODES.values():
        assert re.search(rf"^\| {code} \|", text, re.MULTILINE), code
