"""The sweep runner with a fake task and a tiny random model: resume, no duplicates, failures, SIGKILL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import sweep_fakes
from sweep_fakes import FAKE_TASK, register_fake_task, tiny_model

from kvlab.config import expand, resolve
from kvlab.results.store import ResultStore
from kvlab.runner import run_sweep

SWEEP = {"methods": ["snapkv", "streaming_llm"], "budgets": ["50%", 16], "tasks": [FAKE_TASK], "lengths": [64],
         "modes": ["query_aware", "query_agnostic"], "n": 2}
# what must be identical between two runs of the same sweep (timings and run ids are not)
COMPARED = "cell_key, sample_index, query_index, prompt_hash, prediction, score, kv_tokens, kv_bytes, peak_kv_bytes"


@pytest.fixture(autouse=True)
def fake_task():
    register_fake_task()


def rows(db) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(f"SELECT {COMPARED} FROM samples ORDER BY cell_key, sample_index, query_index").fetchall()
    finally:
        conn.close()


def sweep(db, **changes):
    config = resolve({**SWEEP, **changes}, {"db": str(db)})
    with ResultStore(db) as store:
        return config, run_sweep(config, store, load=tiny_model, progress=False, log=lambda _: None)


def test_sweep_fills_every_cell_and_a_rerun_writes_nothing(tmp_path):
    db = tmp_path / "r.db"
    config, summary = sweep(db)
    cells = expand(config)
    assert summary.cells == len(cells) == 2 + 2 * 2 * 2  # full x 2 modes + 2 methods x 2 budgets x 2 modes
    assert summary.ran == len(cells) and not summary.failed
    assert summary.samples_written == len(cells) * 2 * 2  # n=2 samples x 2 questions
    first = rows(db)
    with ResultStore(db) as store:
        assert {c["status"] for c in store.cells()} == {"done"}
        assert all(c["n_samples"] == 2 and c["n_queries"] == 4 for c in store.cells())
        prov = store.runs()[0]["provenance"]
    assert {"kvlab_version", "git_sha", "torch", "transformers", "device", "dtype", "attention", "seed",
            "chat_template_policy"} <= set(prov)
    assert prov["model"] == "tiny-fake" and prov["chat_template_policy"] == ["template"]
    _, again = sweep(db)
    assert again.already_done == again.cells and again.ran == 0 and again.samples_written == 0
    assert rows(db) == first


def test_more_samples_extend_finished_cells(tmp_path):
    db = tmp_path / "r.db"
    sweep(db, n=1)
    before = rows(db)
    _, summary = sweep(db, n=3)
    after = rows(db)
    assert summary.samples_written == summary.cells * 2 * 2  # only samples 1 and 2, two questions each
    assert set(before) <= set(after) and len(after) == summary.cells * 3 * 2


def test_a_failing_cell_is_recorded_and_the_sweep_goes_on(tmp_path):
    db = tmp_path / "r.db"
    _, summary = sweep(db, budgets=["50%", "1B"])  # one byte holds less than one token: fails at run time
    assert len(summary.failed) == 4 and all("less than one token" in err for *_, err in summary.failed)
    with ResultStore(db) as store:
        status = {(c["budget"], c["status"]) for c in store.cells()}
        errors = [c["error"] for c in store.cells() if c["status"] == "failed"]
    assert status == {("full", "done"), ("50%", "done"), ("1B", "failed")}
    assert all("less than one token" in e for e in errors)


def test_sigkill_mid_sweep_then_rerun_equals_an_uninterrupted_run(tmp_path):
    config = tmp_path / "sweep.yaml"
    config.write_text(f"methods: [snapkv]\nbudgets: ['50%']\ntasks: [{FAKE_TASK}]\nlengths: [64]\n"
                      "modes: [query_aware, query_agnostic]\nn: 3\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    script = sweep_fakes.__file__

    def launch(db, delay="0"):
        return subprocess.Popen([sys.executable, script, str(config), str(db), delay], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    clean = tmp_path / "clean.db"
    proc = launch(clean)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    expected = rows(clean)
    assert len(expected) == 4 * 3 * 2  # 4 cells x 3 samples x 2 questions

    killed = tmp_path / "killed.db"
    proc = launch(killed, delay="0.25")  # slow scoring, so the kill lands mid-sweep
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(killed) and len(_safe_rows(killed)) >= 6:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    partial = _safe_rows(killed)
    assert 6 <= len(partial) < len(expected)
    assert len(partial) % 2 == 0  # whole samples only: both questions of a sample or neither
    with ResultStore(killed) as store:  # the killed store opens cleanly and is not finished
        assert any(c["status"] != "done" for c in store.cells())

    proc = launch(killed)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    assert rows(killed) == expected
    assert set(partial) <= set(expected)
    with ResultStore(killed) as store:
        assert {c["status"] for c in store.cells()} == {"done"}
        assert len(store.runs()) == 2


def _safe_rows(db) -> list[tuple]:
    try:
        return rows(db)
    except sqlite3.OperationalError:  # the schema is not there yet
        return []


def test_perplexity_cells_store_one_window_per_sample_and_report_lower_is_better(tmp_path):
    from kvlab.report import report_blocks
    from kvlab.report.data import load
    from kvlab.report.tables import effective_table

    db = tmp_path / "ppl.db"
    _, summary = sweep(db, tasks=[{"name": "perplexity", "params": {"bucket_size": 32}}], budgets=[16, 32],
                            methods=["streaming_llm"], n=2, modes=["query_aware", "query_agnostic"])
    assert not summary.failed and summary.cells == 3  # full + 2 budgets; one mode ('none'): no questions
    with ResultStore(db) as store:
        cells = store.cells()
        samples = store.samples()
        data = load(store)
    assert {c["mode"] for c in cells} == {"none"} and {c["metric"] for c in cells} == {"perplexity"}
    assert len(samples) == 3 * 2 and all(s["score"] > 1.0 for s in samples)  # perplexities, not accuracies
    assert all(len(s["metadata"]["buckets"]) == 2 for s in samples)  # 63 predicted positions in buckets of 32
    full = next(c for c in cells if c["method"] == "full")
    assert full["score"] == sum(s["score"] for s in samples if s["cell_key"] == full["key"]) / 2
    assert not data.higher_is_better("perplexity")
    row = effective_table(data).rows[0]
    assert row[3] == "streaming_llm" and row[7] != "n/a"
    blocks, _ = report_blocks(data, "t", plots=False)
    tables = [b[1] for b in blocks if b[0] == "table" and b[1].title.startswith("perplexity")]
    assert "lower is better" in tables[0].note


def test_shared_prefill_writes_the_rows_a_direct_sweep_writes(tmp_path):
    """Methods and budgets of one context compress one recorded forward: same predictions, scores,
    kept tokens and bytes as when every cell prefills itself."""
    shared, direct = tmp_path / "shared.db", tmp_path / "direct.db"
    config = resolve({**SWEEP, "methods": ["snapkv", "streaming_llm", "h2o", "knorm"]}, {"db": str(shared)})
    summaries = []
    for db, share in ((shared, True), (direct, False)):
        with ResultStore(db) as store:
            summaries.append(run_sweep(config, store, load=tiny_model, progress=False, log=lambda _: None,
                                       share_prefill=share))
    assert rows(shared) == rows(direct) and len(rows(shared)) == (2 + 4 * 2 * 2) * 2 * 2
    # per mode x sample x question-context: snapkv/streaming/knorm share one forward, h2o (attention mass)
    # another; aware mode has one context per question, agnostic one per sample
    assert summaries[0].prefills_replayed > summaries[0].prefills_recorded > 0
    assert summaries[1].prefills_recorded == summaries[1].prefills_replayed == 0
