"""The generated configuration and provider pages match the committed files."""

from __future__ import annotations

from pathlib import Path

import pytest

from fluxmail.config.providers import load_catalog
from fluxmail.config.settings import FluxMailSettings, env_name
from fluxmail.docgen import architecture_md, configuration_md, main, providers_md
from tests.support import ROOT

DOCS = ROOT / "docs"


@pytest.mark.parametrize(
    ("name", "render"), [("configuration.md", configuration_md), ("providers.md", providers_md)]
)
def test_committed_docs_are_current(name: str, render: object) -> None:
    """docs/*.md equal a fresh `python -m fluxmail.docgen` (run it after changing settings)."""
    assert callable(render)
    assert (DOCS / name).read_text(encoding="utf-8") == render(), (
        f"docs/{name} is stale: run `python -m fluxmail.docgen`"
    )


def test_every_variable_is_documented() -> None:
    """Each settings field appears with its variable name in the configuration page."""
    page = configuration_md()
    for name in FluxMailSettings.model_fields:
        assert f"`{env_name(name)}`" in page


def test_every_provider_has_a_section_with_an_example() -> None:
    """Each catalog entry has a section and a ready environment example."""
    page = providers_md()
    for provider in load_catalog().values():
        assert f"## {provider.title}\n" in page
        assert f"FLUXMAIL_PROVIDER={provider.name}\n" in page


def test_main_writes_both_pages(tmp_path: Path) -> None:
    """`python -m fluxmail.docgen DIR` writes both pages into DIR."""
    assert main([str(tmp_path)]) == 0
    assert (tmp_path / "configuration.md").read_text(encoding="utf-8") == configuration_md()
    assert (tmp_path / "providers.md").is_file()


def test_architecture_module_map_is_current() -> None:
    """docs/architecture.md lists every module of the package as it is now."""
    page = (DOCS / "architecture.md").read_text(encoding="utf-8")
    assert page == architecture_md(page), "docs/architecture.md is stale: run fluxmail.docgen"
    for path in (ROOT / "fluxmail").rglob("*.py"):
        assert f"`{path.relative_to(ROOT).as_posix()}`" in page
