"""Layering: results never import methods or the engine; report reads only results."""

from __future__ import annotations

import ast
import pathlib

import pytest

SRC = pathlib.Path(__file__).resolve().parents[2] / "src" / "kvlab"
ENGINE = ("kvlab.methods", "kvlab.engine", "kvlab.evaluate", "kvlab.apply_method", "kvlab.cache", "kvlab.attention",
          "kvlab.models", "kvlab.tasks", "kvlab.runner", "kvlab.config")


def kvlab_imports(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return {n for n in names if n == "kvlab" or n.startswith("kvlab.")}


@pytest.mark.parametrize("path", sorted((SRC / "results").glob("*.py")), ids=lambda p: p.name)
def test_results_do_not_import_the_engine(path):
    bad = {n for n in kvlab_imports(path) if n.startswith(ENGINE)}
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", sorted((SRC / "report").glob("*.py")), ids=lambda p: p.name)
def test_report_reads_only_results(path):
    allowed = ("kvlab.report", "kvlab.results", "kvlab.errors")
    bad = {n for n in kvlab_imports(path) if not n.startswith(allowed)}
    assert not bad, f"{path.name} imports {bad}"
