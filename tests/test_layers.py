"""The library's shape, checked on its import graph (no sandbox needed): no cycles, nothing imports the Lab back,
the Bookinfo facts are a leaf, and the layers contract of pyproject.toml holds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import pytest

LIBRARY_ONLY = "labkit.sandbox."


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("labkit")


def library(graph: grimp.ImportGraph) -> list[str]:
    return sorted(m for m in graph.modules if not m.startswith(LIBRARY_ONLY) and m != "labkit.sandbox")


def test_no_import_cycles_in_the_library(graph: grimp.ImportGraph) -> None:
    cycles = sorted((a, b) for a in library(graph) for b in graph.find_modules_directly_imported_by(a)
                    if not b.startswith("labkit.sandbox") and graph.chain_exists(importer=b, imported=a))
    assert cycles == [], f"import cycles (a imports b, and b leads back to a): {cycles}"


def test_features_and_the_core_never_import_the_lab(graph: grimp.ImportGraph) -> None:
    importers = graph.find_modules_that_directly_import("labkit.lab")
    below = {"labkit.chaos", "labkit.observe", "labkit.traffic", "labkit.page", "labkit.deploy", "labkit.workshop",
             "labkit.client",
             "labkit.records", "labkit.progress", "labkit.kubestatus", "labkit.bookinfo", "labkit.errors"}
    assert not importers & below, f"the Lab is imported back by {sorted(importers & below)}"


def test_the_bookinfo_facts_are_a_leaf(graph: grimp.ImportGraph) -> None:
    assert graph.find_modules_directly_imported_by("labkit.bookinfo") == set()


def test_the_layers_contract_holds() -> None:
    tool = Path(sys.executable).parent / "lint-imports"
    if not tool.exists():
        pytest.fail(f"{tool} is missing: install the dev extras (pip install -e '.[dev]')")
    proc = subprocess.run([str(tool), "--contract", "layers"], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stdout + proc.stderr
