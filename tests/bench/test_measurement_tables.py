"""scripts/measurement_tables.py merges runs of scripts/measure_benchmarks.py query by query."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "measurement_tables.py"


def load_script():
    spec = importlib.util.spec_from_file_location("measurement_tables", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_file(path: Path, task: str, scores: dict[int, float], seconds: float, first: int | None = None) -> str:
    cell = {"cell": {"part": "ruler", "task": task, "params": {}, "length": 4096, "n": 20, "method": "full",
                     "budget": None, "mode": "query_aware"},
            "summary": {"samples": len(scores)}, "seconds": seconds,
            "queries": [{"sample": i, "query": 0, "score": s, "prompt_tokens": 4000 + i, "depth": None}
                        for i, s in scores.items()]}
    if first is not None:
        cell["first_sample"] = first
    path.write_text(json.dumps({"cells": [cell]}))
    return str(path)


def test_a_continued_run_merges_query_by_query(tmp_path):
    tables = load_script()
    earlier = run_file(tmp_path / "a.json", "ruler/vt", {0: 1.0, 1: 0.0, 2: 1.0, 3: 1.0}, 400.0)
    later = run_file(tmp_path / "b.json", "ruler/vt", {2: 0.0, 3: 0.0, 4: 0.5, 5: 1.0}, 400.0, first=2)
    [cell] = tables.load_cells([earlier, later])
    # samples 2 and 3 come from the later file; 0-1 from the earlier one
    assert cell["summary"]["samples"] == 6
    assert cell["summary"]["score"] == round(100 * (1 + 0 + 0 + 0 + 0.5 + 1) / 6, 2)
    # the earlier run is charged for the 2 of its 4 samples that were kept
    assert cell["seconds"] == 200.0 + 400.0
    assert [p["samples"] for p in cell["parts"]] == [2, 4]
    table = tables.ruler_table([cell])
    assert "| vt | 41.67 | 6 |" in table and "merged from two runs" in table


def test_a_single_run_keeps_its_own_score(tmp_path):
    tables = load_script()
    only = run_file(tmp_path / "a.json", "ruler/niah_single_1", {0: 1.0, 1: 1.0, 2: 0.0}, 90.0)
    [cell] = tables.load_cells([only])
    assert cell["summary"]["score"] == 66.67 and cell["seconds"] == 90.0
    assert "merged" not in tables.ruler_table([cell])
