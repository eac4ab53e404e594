"""kvlab export: CSV and Parquet files with the same rows as the store."""

from __future__ import annotations

import csv
import json

import pytest
from test_result_store import CELL, row

from kvlab.cli.main import main
from kvlab.results.store import ResultStore


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "res.db"
    with ResultStore(path) as s:
        run = s.start_run({"torch": "x"})
        s.ensure_cell(CELL)
        s.ensure_cell({**CELL, "key": "k2", "method": "full", "budget": "full"})
        s.add_sample("k1", run, [row(0, 0), row(0, 1, score=0.0)])
        s.add_sample("k2", run, [row(0, 0)])
        s.finish_cell("k1")
    return path


def test_csv_export_samples_carry_their_cell_config(db, tmp_path, capsys):
    assert main(["export", str(db), "--format", "csv", "-o", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out.split()
    assert sorted(p.rsplit("/", 1)[1] for p in printed) == ["res-cells.csv", "res-runs.csv", "res-samples.csv"]
    with open(tmp_path / "out" / "res-samples.csv", newline="") as fh:
        samples = list(csv.DictReader(fh))
    assert len(samples) == 3
    by = {(r["cell_key"], r["query_index"]): r for r in samples}
    assert by[("k1", "1")]["method"] == "snapkv" and by[("k1", "1")]["budget"] == "25%"
    assert float(by[("k1", "1")]["score"]) == 0.0 and by[("k2", "0")]["method"] == "full"
    assert json.loads(by[("k1", "0")]["metadata"]) == {"depth": 50}
    with open(tmp_path / "out" / "res-cells.csv", newline="") as fh:
        cells = {r["key"]: r for r in csv.DictReader(fh)}
    assert float(cells["k1"]["score"]) == 0.5 and cells["k2"]["status"] == "pending"


def test_parquet_export_round_trips(db, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    assert main(["export", str(db), "--format", "parquet", "-o", str(tmp_path), "--table", "samples"]) == 0
    table = pq.read_table(tmp_path / "res-samples.parquet").to_pylist()
    assert len(table) == 3
    assert sorted((r["cell_key"], r["query_index"], r["score"]) for r in table) == [
        ("k1", 0, 1.0), ("k1", 1, 0.0), ("k2", 0, 1.0)]
    assert not (tmp_path / "res-cells.parquet").exists()
