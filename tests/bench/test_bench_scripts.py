"""The benchmark scripts a GPU session runs (bench/*.py) work end to end on CPU with a tiny shape."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def run_script(name: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, name, *args], cwd=BENCH, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_chunk_kernels_times_every_way_and_checks_them_against_one_pass(tmp_path):
    out = tmp_path / "chunks.json"
    result = run_script("chunk_kernels.py", "--device", "cpu", "--shape", "tiny-llama", "--lengths", "600",
                        "--chunk", "256", "--repeats", "1", "--json", str(out))
    assert json.loads(out.read_text()) == result
    rows = {r["kernel"]: r for r in result["rows"]}
    assert set(rows) == {"one pass (default)", "chunks: lower-right", "chunks: split"}
    for name in ("chunks: lower-right", "chunks: split"):
        assert rows[name]["calls"] == 3 and rows[name]["ms"] > 0
        assert rows[name]["max_abs_diff_vs_one_pass"] < 1e-5


def test_sparse_kernels_runs_dense_and_sparse_rows():
    result = run_script("sparse_kernels.py", "--device", "cpu", "--shape", "tiny-llama", "--lengths", "1024",
                        "--repeats", "1", "--methods", "a_shape:n_init=16,n_local=128")
    kernels = [r["kernel"] for r in result["rows"]]
    assert kernels == ["sdpa (default)", "a_shape"]
    assert all("ms" in r for r in result["rows"]), result["rows"]


def test_decode_kernels_times_kvlab_sdpa_and_the_read_floor():
    result = run_script("decode_kernels.py", "--device", "cpu", "--shape", "tiny-llama", "--lengths", "3000",
                        "--layers", "2", "--repeats", "1")
    rows = {r["kernel"]: r for r in result["rows"]}
    assert set(rows) == {"read K+V (sum)", "kvlab decode_attention", "kvlab decode_attention + key mass",
                         "kvlab + key mass, value reduction in one matmul", "kvlab flex_attention (FlexDecoding)",
                         "kvlab decode_attention traced by torch.compile", "kvlab + key mass, traced by torch.compile",
                         "sdpa (no mask)"}
    assert all(r["ms_per_layer"] > 0 and r["slots"] >= 3000 for r in rows.values())
