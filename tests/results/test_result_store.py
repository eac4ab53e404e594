"""The SQLite store: schema, uniqueness enforced by SQLite itself, resume queries, bad files."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from kvlab.errors import KvlabError
from kvlab.results.schema import APPLICATION_ID, SCHEMA_VERSION
from kvlab.results.store import ResultStore

CELL = {"key": "k1", "n": 2, "model": "m", "dtype": "float32", "method": "snapkv", "method_config": "{}",
        "budget": "25%", "task": "t", "task_params": {"depths": "0,50"}, "length": 1024, "mode": "query_aware",
        "seed": 42, "chunk_size": 4096, "chat": "template", "family": "eviction", "metric": "string_match_all"}


def row(sample: int, query: int = 0, score: float = 1.0) -> dict:
    return {"sample_index": sample, "query_index": query, "prompt_hash": f"h{sample}", "prediction": "42",
            "answers": ["42"], "score": score, "prompt_tokens": 1000, "context_tokens": 990, "new_tokens": 3,
            "prefill_seconds": 1.0, "decode_seconds": 0.3, "kv_tokens": 250.0, "kv_bytes": 1000,
            "peak_kv_bytes": 4000, "full_kv_bytes": 4000, "metadata": {"depth": 50}}


@pytest.fixture
def store(tmp_path):
    with ResultStore(tmp_path / "r.db") as s:
        yield s


def test_new_store_is_wal_and_marked_as_kvlab(store):
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_samples_are_unique_per_cell_sample_query_even_with_raw_sql(store):
    store.ensure_cell(CELL)
    assert store.add_sample("k1", None, [row(0, 0), row(0, 1)]) == 2
    assert store.add_sample("k1", None, [row(0, 0), row(0, 1)]) == 0  # a rerun writes nothing
    assert len(store.samples("k1")) == 2
    with pytest.raises(sqlite3.IntegrityError):  # the constraint, not only the runner's logic
        store.conn.execute("INSERT INTO samples (cell_key, sample_index, query_index, score, created_at) "
                           "VALUES ('k1', 0, 0, 1.0, 'now')")


def test_a_sample_commits_all_its_queries_or_none(store):
    store.ensure_cell(CELL)
    bad = [row(1, 0), {**row(1, 1), "score": None}]  # NOT NULL violation on the second query
    with pytest.raises(sqlite3.IntegrityError):
        store.add_sample("k1", None, bad)
    assert store.done_samples("k1") == set()


def test_cells_are_upserted_and_keep_the_largest_target(store):
    store.ensure_cell(CELL)
    store.ensure_cell({**CELL, "n": 5})
    store.ensure_cell({**CELL, "n": 3})
    cells = store.cells()
    assert len(cells) == 1 and cells[0]["n_target"] == 5 and cells[0]["task_params"] == {"depths": "0,50"}


def test_finish_cell_writes_the_aggregate(store):
    store.ensure_cell(CELL)
    store.add_sample("k1", None, [row(0, score=1.0)])
    store.add_sample("k1", None, [row(1, score=0.0)])
    agg = store.finish_cell("k1")
    cell = store.cell("k1")
    assert cell["status"] == "done" and cell["score"] == 0.5 and agg["ci_method"] == "wilson"
    assert cell["ci_low"] < 0.5 < cell["ci_high"] and cell["n_samples"] == 2


def test_runs_keep_provenance(store):
    run = store.start_run({"torch": "2.x", "seed": [42]}, "kvlab run x")
    store.finish_run(run)
    runs = store.runs()
    assert runs[0]["provenance"] == {"torch": "2.x", "seed": [42]} and runs[0]["finished_at"]


def test_bench_records_replace_the_same_configuration(store):
    rec = {"model": "m", "method": "snapkv", "budget": "25%", "length": 32768, "device": "cpu", "prefill_seconds": 3.0}
    store.add_bench([rec, {**rec, "length": 65536}])
    store.add_bench([{**rec, "prefill_seconds": 2.5}])
    rows = store.bench()
    assert len(rows) == 2
    assert {r["length"]: r["record"]["prefill_seconds"] for r in rows} == {32768: 2.5, 65536: 3.0}
    with pytest.raises(KvlabError, match="method"):
        store.add_bench([{"model": "m"}])


def test_corrupted_file_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.db"
    path.write_bytes(b"this is not a database at all\n" * 200)
    with pytest.raises(KvlabError, match="not a readable kvlab result store"):
        ResultStore(path)


def test_truncated_store_is_a_clear_error(tmp_path):
    path = tmp_path / "r.db"
    with ResultStore(path) as s:
        s.ensure_cell(CELL)
        for i in range(200):
            s.add_sample("k1", None, [{**row(i), "prediction": "x" * 500}])
        s.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # half the pages gone
    with pytest.raises(KvlabError), ResultStore(path, create=False) as s:
        s.samples()


def test_foreign_sqlite_database_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER, name TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(KvlabError, match="not a kvlab result store.*customers"):
        ResultStore(path)
    tables = sqlite3.connect(path).execute("SELECT name FROM sqlite_master").fetchall()
    assert tables == [("customers",)]  # nothing was added to it


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "r.db"
    ResultStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(KvlabError, match="newer kvlab"):
        ResultStore(path)


def test_missing_or_empty_file_for_reading(tmp_path):
    with pytest.raises(KvlabError, match="no such results file"):
        ResultStore(tmp_path / "nope.db", create=False)
    (tmp_path / "empty.db").write_bytes(b"")
    with pytest.raises(KvlabError, match="holds no kvlab results"):
        ResultStore(tmp_path / "empty.db", create=False)
    with pytest.raises(KvlabError, match="directory"):
        ResultStore(tmp_path)


@pytest.mark.parametrize("command", ["report", "export"])
def test_cli_on_a_bad_file_prints_one_line_and_exits_2(tmp_path, command):
    path = tmp_path / "broken.db"
    path.write_bytes(b"\x00garbage" * 100)
    proc = subprocess.run([sys.executable, "-m", "kvlab.cli.main", command, str(path), "-o", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kvlab: error:") and "broken.db" in lines[0]
