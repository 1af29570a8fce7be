"""Every ```python block in docs/**/*.md and README.md is executed here, so the docs cannot rot.

Conventions (for whoever writes a page):

- The blocks of one page run in order in one namespace, as a reader pasting them one after the
  other would run them, in a fresh temporary working directory, with a clean ``FLUXMAIL_*``
  environment plus the page's own (``PAGES`` below). A page not listed there runs against the
  ``memory`` backend with a sender set (``DEFAULT_ENV``).
- A page may ask for a real SMTP server on 127.0.0.1 (``server="dev"``: ``fluxmail.devserver``;
  ``server="faults"``: the scripted aiosmtpd server of ``tests/support/servers.py``), in which case
  ``FLUXMAIL_HOST`` and ``FLUXMAIL_PORT`` point at it; a ``prelude`` (code run before the first
  block, for names the prose assumes, such as ``audit_id``) and a ``check`` (code run after the
  last block, asserting what the page claims happened).
- ``<!-- docs-test: compile-only -->`` on the line right before a fence marks a block that cannot
  run here (it needs FastAPI, Django, AWS or a real provider): it is compiled, not run. Use it
  sparingly; prefer a stand-in (the Lambda handler is called with a fake event instead).
- Other fences (bash, console, yaml, ...) are not executed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fluxmail.devserver import DevServer
from tests.support import ROOT
from tests.support.servers import Faults, SMTPTestServer, TestCA, reply

DOCS = ROOT / "docs"
MARKER = re.compile(r"<!--\s*docs-test:\s*([a-z-]+)\s*-->")
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[A-Za-z0-9_+-]*)[^\n]*$")
# The audit on, as in production: the examples pass idempotency keys, which need it.
DEFAULT_ENV = {
    "FLUXMAIL_TYPE": "memory",
    "FLUXMAIL_SENDER": "Shop <shop@example.com>",
    "FLUXMAIL_AUDIT": "on",
}


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    code: str
    compile_only: bool


@dataclass(frozen=True)
class Page:
    """How one page's examples run: environment, a server, code before and after."""

    env: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ENV))
    server: str | None = None  # None, "dev" or "faults"
    prelude: str = ""
    check: str = ""


SMTP_ENV = {"FLUXMAIL_SENDER": "Shop <shop@example.com>"}

AUDIT_ENV = {**DEFAULT_ENV, "FLUXMAIL_AUDIT": "on", "FLUXMAIL_AUDIT_DIR": "audit"}

PROVIDER_ENV = {"FLUXMAIL_PROVIDER": "sendgrid", "FLUXMAIL_SENDER": "Shop <shop@example.com>"}
# A Docker/Kubernetes secret file, mounted where the page says (here: in the page's tmp cwd).
SECRET_FILE = (
    "import os, pathlib\n"
    "pathlib.Path('smtp_password').write_text('SG.docs-test\\n')\n"
    "os.environ['FLUXMAIL_PASSWORD_FILE'] = os.path.abspath('smtp_password')\n"
)

# The testing recipe defines pytest-style test functions: call each one, as pytest would.
RUN_TEST_FUNCTIONS = """
import inspect, pathlib
from fluxmail.testing import outbox
tests = [f for n, f in list(globals().items()) if n.startswith("test_") and callable(f)]
for test in tests:
    outbox.clear()
    folder = pathlib.Path(test.__name__)
    folder.mkdir()
    wanted = inspect.signature(test).parameters
    test(**({"tmp_path": folder} if "tmp_path" in wanted else {}))
assert len(tests) == 4, tests
"""

PAGES: dict[str, Page] = {
    "docs/audit.md": Page(
        env=AUDIT_ENV,
        prelude=(
            "from datetime import datetime, timedelta, timezone\n"
            "from fluxmail import FluxMail\n"
            "yesterday = datetime.now(timezone.utc) - timedelta(days=1)\n"
            "prelude_mailer = FluxMail.from_env()\n"
            "audit_id = prelude_mailer.create('Hi', 'ada@example.com', 'x').send().audit_id\n"
        ),
        check="assert raw.startswith(b'From: ') and record.id == audit_id",
    ),
    "docs/delivery.md": Page(
        env={**SMTP_ENV, "FLUXMAIL_RETRY_DELAY": "0.01"},
        server="faults",
        check="assert len(server.messages) == 7, [m.rcpt_tos for m in server.messages]",
    ),
    "docs/recipes/docker.md": Page(env=PROVIDER_ENV, prelude=SECRET_FILE),
    "docs/recipes/kubernetes.md": Page(env=PROVIDER_ENV, prelude=SECRET_FILE),
    "docs/recipes/lambda.md": Page(env=AUDIT_ENV),
    "docs/recipes/testing.md": Page(env={}, check=RUN_TEST_FUNCTIONS),
    # 0.3.3 had no FLUXMAIL_SENDER: the username must be what resolves the sender there.
    "docs/migrating.md": Page(env={"FLUXMAIL_TYPE": "memory"}),
    "docs/quickstart.md": Page(
        env=SMTP_ENV,
        server="dev",
        check="assert len(server.messages) == 3, server.messages",
    ),
}


def _pages() -> list[Path]:
    return [*sorted(DOCS.rglob("*.md")), ROOT / "README.md"]


def extract_blocks(path: Path) -> list[Block]:
    """The ```python blocks of a Markdown file, with their compile-only markers."""
    name = path.relative_to(ROOT).as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        match = FENCE.match(lines[index])
        if match is None:
            index += 1
            continue
        indent, lang = match.group("indent"), match.group("lang").lower()
        start = index
        index += 1
        body: list[str] = []
        while index < len(lines) and lines[index].strip() != "```":
            body.append(lines[index][len(indent) :])
            index += 1
        index += 1
        if lang in ("python", "py"):
            marker = _marker_before(lines, start)
            blocks.append(Block(name, start + 2, "\n".join(body) + "\n", marker == "compile-only"))
    return blocks


def _marker_before(lines: list[str], fence: int) -> str | None:
    previous = fence - 1
    while previous >= 0 and not lines[previous].strip():
        previous -= 1
    match = MARKER.search(lines[previous]) if previous >= 0 else None
    return match.group(1) if match else None


ALL_BLOCKS = [block for page in _pages() for block in extract_blocks(page)]
RUN_PAGES = sorted({b.page for b in ALL_BLOCKS if not b.compile_only} | set(PAGES))


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=lambda b: f"{b.page}:{b.line}")
def test_block_compiles(block: Block) -> None:
    """Every Python example in the docs is valid Python."""
    compile(block.code, f"{block.page}:{block.line}", "exec")


def test_markers_name_known_modes() -> None:
    """Every docs-test marker is one this file understands (a typo would silently run a block)."""
    for page in _pages():
        for mode in MARKER.findall(page.read_text(encoding="utf-8")):
            assert mode == "compile-only", f"{page}: unknown docs-test marker {mode!r}"


@pytest.fixture
def page_server(request: pytest.FixtureRequest, ca: TestCA, tmp_path: Path) -> Iterator[Any]:
    """The server a page asks for, started on a free loopback port, or None."""
    kind = PAGES.get(request.param, Page()).server
    if kind is None:
        yield None
    elif kind == "dev":
        with DevServer(port=0, folder=tmp_path / "dev-mail") as dev:
            yield dev
    else:
        faults = Faults(rcpt_to={"gone@example.com": reply("550 5.1.1 No such user")})
        server = SMTPTestServer(ca, faults=faults).start()
        try:
            yield server
        finally:
            server.stop()


@pytest.mark.timeout(30)  # a page's examples take well under a second; a hang is a bug
@pytest.mark.parametrize("page_server", RUN_PAGES, indirect=True, ids=str)
def test_page_examples_run(
    page_server: Any, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page's examples run in order against its backend or server, and do what it says."""
    name = request.node.callspec.params["page_server"]
    page = PAGES.get(name, Page())
    for key, value in page.env.items():
        monkeypatch.setenv(key, value)
    if page_server is not None:
        monkeypatch.setenv("FLUXMAIL_HOST", page_server.host)
        monkeypatch.setenv("FLUXMAIL_PORT", str(page_server.port))
    from fluxmail.testing import outbox

    outbox.clear()
    namespace: dict[str, Any] = {"__name__": "docs_example", "server": page_server}
    saved = dict(os.environ)
    try:
        exec(compile(page.prelude, f"{name}:prelude", "exec"), namespace)
        for block in (b for b in ALL_BLOCKS if b.page == name and not b.compile_only):
            exec(compile(block.code, f"{block.page}:{block.line}", "exec"), namespace)
        exec(compile(page.check, f"{name}:check", "exec"), namespace)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        _close_mailers(namespace)
        outbox.clear()


def _close_mailers(namespace: dict[str, Any]) -> None:
    from fluxmail import FluxMail

    for value in namespace.values():
        if isinstance(value, FluxMail):
            value.close()
