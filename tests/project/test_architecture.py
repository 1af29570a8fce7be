"""The package's shape, checked from its source with ``ast`` (docs/architecture.md).

- No import cycle between fluxmail's modules, counting imports inside functions and under
  ``TYPE_CHECKING``: a cycle held apart by a late import is still a cycle.
- Lower layers never import higher ones; ``transport`` and ``audit`` never import each other.
- Inside functions only heavy or optional modules are imported (cold start), never fluxmail's own.
"""

from __future__ import annotations

import ast
from pathlib import Path

import fluxmail

PACKAGE = Path(fluxmail.__file__).parent

# Lowest first. A module's layer is that of the longest prefix listed here.
LAYERS: dict[str, int] = {
    "fluxmail.errors": 0,
    "fluxmail.results": 0,
    "fluxmail.redaction": 0,
    "fluxmail._lazy": 0,
    "fluxmail._frozen": 0,
    "fluxmail.message": 1,
    "fluxmail.config": 2,
    "fluxmail.transport": 3,
    "fluxmail.audit": 3,
    "fluxmail.engine": 4,
    "fluxmail.draft": 5,
    "fluxmail.bulk": 5,
    "fluxmail.progress": 5,
    "fluxmail.mailer": 5,
    "fluxmail.testing": 5,
    "fluxmail.auditing": 5,
    "fluxmail.outbox": 5,
    "fluxmail.worker": 5,
    "fluxmail.celery": 5,
    "fluxmail.django": 5,
    "fluxmail.devserver": 6,
    "fluxmail.docgen": 6,
    "fluxmail.cli": 6,
    "fluxmail.mcp": 6,
    "fluxmail.__main__": 6,
    "fluxmail": 7,  # the public facade: nothing inside the package imports it
}
SIDE_BY_SIDE = ("fluxmail.transport", "fluxmail.audit")

# What may be imported inside a function: slow to import or optional (an extra).
LATE_OK = {
    "aiosmtplib", "aiosmtpd", "psycopg", "yaml", "rich", "typer", "certifi", "css_inline",
    "idna", "dotenv", "pydantic_settings", "asyncio", "sqlite3", "ssl", "email", "subprocess",
    "concurrent", "importlib", "json", "tempfile", "shutil", "cryptography", "httpx", "google",
    "botocore", "celery", "mcp", "django", "jinja2", "dkim", "nacl",
}  # fmt: skip


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _target(node: ast.ImportFrom, alias: ast.alias, here: str) -> str:
    """The module an ImportFrom really loads (``from fluxmail.message import mime`` is
    ``fluxmail.message.mime``)."""
    base = node.module or ""
    if node.level:
        package = here.split(".") if MODULES[here].name == "__init__.py" else here.split(".")[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join([*package, base] if base else package)
    full = f"{base}.{alias.name}"
    return full if full in MODULES else base


class _Imports(ast.NodeVisitor):
    def __init__(self, here: str) -> None:
        self.here = here
        self.depth = 0
        self.edges: set[str] = set()
        self.late: list[tuple[int, str]] = []

    def _add(self, name: str, line: int) -> None:
        if name == "fluxmail" or name.startswith("fluxmail."):
            self.edges.add(name)
        if self.depth:
            self.late.append((line, name))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            self._add(_target(node, alias, self.here), node.lineno)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_Call(self, node: ast.Call) -> None:
        # lazy_module("fluxmail.x"): a module-level import whose code runs on first use.
        name = node.func.id if isinstance(node.func, ast.Name) else None
        first = node.args[0] if node.args else None
        if name == "lazy_module" and isinstance(first, ast.Constant):
            self._add(str(first.value), node.lineno)
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        # A package's PEP 562 table (_LAZY = {"Name": "submodule"}) loads those submodules.
        targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
        if targets == ["_LAZY"] and isinstance(node.value, ast.Dict):
            for value in node.value.values:
                if isinstance(value, ast.Constant):
                    self._add(f"{self.package}.{value.value}", node.lineno)
        self.generic_visit(node)

    @property
    def package(self) -> str:
        is_init = MODULES[self.here].name == "__init__.py"
        return self.here if is_init else self.here.rpartition(".")[0]


def _scan() -> dict[str, _Imports]:
    found = {}
    for name, path in MODULES.items():
        visitor = _Imports(name)
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        found[name] = visitor
    return found


SCAN = _scan()
GRAPH = {name: {e for e in v.edges if e in MODULES and e != name} for name, v in SCAN.items()}


def _group(module: str) -> str:
    return max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)


def test_every_module_has_a_layer() -> None:
    assert all(_group(m) for m in MODULES)


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return cycles


def test_no_import_cycles() -> None:
    cycles = find_cycles(GRAPH)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_lower_layers_never_import_higher_ones() -> None:
    wrong = []
    for module, targets in GRAPH.items():
        mine = _group(module)
        for target in targets:
            theirs = _group(target)
            upward = LAYERS[theirs] > LAYERS[mine]
            across = {mine, theirs} == set(SIDE_BY_SIDE)
            if upward or across:
                wrong.append(f"{module} ({mine}) imports {target} ({theirs})")
    assert not wrong, "\n".join(sorted(wrong))


def test_imports_inside_functions_are_only_heavy_or_optional_modules() -> None:
    wrong = [
        f"{module}:{line} imports {name} inside a function"
        for module, visitor in SCAN.items()
        for line, name in visitor.late
        if name.split(".")[0] not in LATE_OK
    ]
    assert not wrong, "\n".join(sorted(wrong))


def test_the_scan_sees_what_it_must() -> None:
    """The checks above would pass on an empty graph: make sure the scan finds real edges,
    resolves relative and ``from package import module`` forms, and sees late imports."""
    assert "fluxmail.engine.protocol" in GRAPH["fluxmail.engine.pipeline"]
    assert "fluxmail.errors" in GRAPH["fluxmail.mailer"]
    late = {
        name
        for m, v in SCAN.items()
        if m.startswith("fluxmail.transport.smtp")
        for _, name in v.late
    }
    assert "aiosmtplib" in late
    assert "fluxmail.bulk" in GRAPH["fluxmail.mailer"]  # a lazy_module() edge
    assert "fluxmail.audit.records" in GRAPH["fluxmail.audit"]  # a PEP 562 table edge
    assert "fluxmail.mailer" in GRAPH["fluxmail"]
