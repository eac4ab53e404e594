"""``kvlab bench``: cases, measurements, floors, records and the CLI (tiny random-weight model)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest
import torch
from tinymodels import MAPPED_PROBE

from kvlab.bench import RECORD_FIELDS, BenchConfig, format_table, parse_lengths, run_bench, to_records
from kvlab.bench.measure import PeakMemory, copy_bandwidth
from kvlab.bench.worker import error_row, run_case, weight_bytes
from kvlab.cli.bench import config_from_args, split_methods
from kvlab.errors import KvlabError, UnknownNameError
from kvlab.models import hf_compat

TINY = "random:tiny-llama"


def case(role: str, **kw):
    base = {"role": role, "model": TINY, "length": 96, "method": "full", "budget": "25%", "chunk_size": 32,
            "decode_tokens": 4, "warmup_steps": 1, "decode_mode": "auto"}
    return {**base, **kw}


def test_parse_lengths():
    assert parse_lengths("4k, 8K,32768,128k,1m,0.5k") == [4096, 8192, 32768, 131072, 1048576, 512]
    for bad in ("", "abc", "4q", "1"):
        with pytest.raises(KvlabError):
            parse_lengths(bad)


def test_split_methods_keeps_parameters_together():
    assert split_methods("full, a_shape:n_init=64,n_local=1024,snapkv") == ["full", "a_shape:n_init=64,n_local=1024",
                                                                           "snapkv"]
    assert split_methods("minference:vertical_size=8;slash_size=16") == ["minference:vertical_size=8,slash_size=16"]


def args(**kw):
    base = {"model": "default", "random_weights": None, "device": None, "dtype": None, "lengths": "4k",
            "methods": "full", "budget": "10%", "chunk_size": 4096, "decode_tokens": 32, "warmup_steps": 2,
            "decode_mode": "auto", "decode_attention": None, "baseline": True, "cudnn_decode": False, "warmup": "auto", "threads": None,
            "timeout": 60.0, "baseline_generate": False}
    return argparse.Namespace(**{**base, **kw})


def test_cli_config_validates_before_running_anything():
    config = config_from_args(args(random_weights="llama-3.1-8b", lengths="32k,130000", methods="full,snapkv"))
    assert config.model == "random:llama-3.1-8b" and config.lengths == [32768, 130000]
    assert [c["role"] for c in config.cases()] == ["transformers", "kvlab", "kvlab"] * 2
    # 128K = the whole 131072-position window: no room for the 36 generated tokens; the error says what fits
    with pytest.raises(KvlabError, match="131072 tokens do not fit.*--lengths 131036"):
        config_from_args(args(random_weights="llama-3.1-8b", lengths="32k,128k"))
    with pytest.raises(UnknownNameError, match="snapkv"):
        config_from_args(args(methods="full,snapkvv"))
    with pytest.raises(UnknownNameError):
        config_from_args(args(random_weights="llama-9"))
    with pytest.raises(KvlabError, match="either"):
        config_from_args(args(model="x/y", random_weights="tiny-llama"))
    with pytest.raises(KvlabError):
        config_from_args(args(budget="lots"))
    with pytest.raises(KvlabError):
        config_from_args(args(decode_tokens=0))
    # a named model's window is read from its config, before any case loads it
    with pytest.raises(KvlabError, match="window of 8192.*--lengths 8156"):
        config_from_args(args(lengths="4k,100k"))
    with pytest.raises(KvlabError, match="unknown device"):
        config_from_args(args(device="gpu0"))
    if not torch.cuda.is_available():
        with pytest.raises(KvlabError, match="no CUDA"):
            config_from_args(args(device="cuda"))
        with pytest.raises(KvlabError, match="'graph' needs a CUDA device"):
            config_from_args(args(decode_mode="graph"))


def test_table_of_failed_cases_says_what_failed():
    """Every case of a length failing (the baseline included) still prints a table, labelled per row."""
    result = {"device": {"name": "cpu", "device": "cpu", "copy_gbps": 10.0},
              "rows": [error_row({"role": "transformers", "length": 5000}, "too long"),
                       error_row({"role": "kvlab", "method": "snapkv", "length": 5000}, "too long")]}
    assert [r["method"] for r in result["rows"]] == ["plain transformers", "snapkv"]
    table = format_table(result)
    assert "5000  plain transformers  -  error: too long" in table and "5000  snapkv  -  error: too long" in table


def test_peak_memory_sees_an_allocation_and_not_the_baseline():
    with PeakMemory("cpu") as big:
        x = torch.ones(64 << 20, dtype=torch.uint8)  # 64 MiB, touched
        del x
    assert big.peak_over_base >= 60 << 20
    with PeakMemory("cpu") as small:
        y = torch.ones(1 << 20, dtype=torch.uint8)
        del y
    assert small.peak_over_base < 32 << 20  # the earlier peak was reset


def test_copy_bandwidth_is_positive():
    bw = copy_bandwidth("cpu", nbytes=8 << 20, repeats=3)
    assert bw["copy_gbps"] >= bw["copy_gbps_median"] > 0


def test_weight_bytes_count_the_embedding_only_when_tied(tiny_llama):
    total, read = weight_bytes(tiny_llama.model)
    emb = tiny_llama.model.get_input_embeddings().weight
    assert total == sum(p.numel() * p.element_size() for p in tiny_llama.model.parameters())
    assert read == total - emb.numel() * emb.element_size()  # this tiny Llama has an untied head


@pytest.mark.parametrize("method", ["full", "snapkv", "streaming_llm", "a_shape:n_init=4,n_local=16"])
def test_kvlab_case_measures_what_it_says(method):
    row = run_case(case("kvlab", method=method))
    assert "error" not in row, row.get("error")
    assert row["length"] == 96 and row["prefill_seconds"] > 0 and row["decode_ms_per_token"] > 0
    per_token = row["full_kv_bytes"] // 96
    if method in ("full",) or method.startswith("a_shape"):
        assert row["kv_bytes"] == row["full_kv_bytes"] and row["budget"] == "full"
    else:
        assert row["kv_bytes"] == 24 * per_token  # 25% of 96 tokens in every layer
        assert row["kv_peak_bytes"] <= (24 + 32) * per_token  # budget + one chunk
    assert row["kv_decode_bytes"] >= row["kv_bytes"]
    assert row["attention"]["prefill"].startswith("kvlab")
    if method in ("full", "streaming_llm"):  # chunks after older keys: the CPU log-sum-exp split
        assert row["attention"]["prefill"] == "kvlab sdpa (chunks: log-sum-exp split)"


def test_compiled_case_compiles_only_for_the_measured_cache(monkeypatch):
    """The short CPU warm-up prompt decodes uncompiled: a step compiled for its cache capacity would
    be thrown away. The steps are run as ``static`` here (same code, no compile time)."""
    import kvlab.decoding

    built, make_step = [], kvlab.decoding.make_step

    def recording(mode, model, cache, *args, **kw):
        built.append((mode, cache.get_seq_length()))
        return make_step("static" if mode == "compiled" else mode, model, cache, *args, **kw)

    monkeypatch.setattr(kvlab.decoding, "make_step", recording)
    row = run_case(case("kvlab", length=300, chunk_size=128, decode_mode="compiled"))
    assert "error" not in row, row.get("error")
    assert row["warmup_length"] == 256 and row["decode_mode"] == "compiled"
    assert built == [("static", 256), ("compiled", 300)]


def test_case_with_flex_decode_attention_records_it(monkeypatch):
    """--decode-attention reaches the case's process (the switch of kvlab.flex_decode) and the row says
    which kernel decoded; H2O keeps the kernel that returns the probabilities it accumulates."""
    from torch.nn.attention.flex_attention import flex_attention

    from kvlab import decode_kernel, flex_decode

    config = config_from_args(args(random_weights="tiny-llama", lengths="1k", methods="snapkv", decode_attention="flex",
                                   decode_mode="static"))
    assert [c.get("decode_attention") for c in config.cases()] == [None, "flex"]  # baseline, kvlab
    if not torch.cuda.is_available():  # auto on CPU decodes snapkv eagerly: flex would never run
        with pytest.raises(KvlabError, match="add --decode-mode static"):
            config_from_args(args(random_weights="tiny-llama", lengths="1k", methods="snapkv", decode_attention="flex",
                                  decode_mode="auto"))
    monkeypatch.setenv(decode_kernel.SWITCH, "matmul")  # restored after the test: run_case sets it
    monkeypatch.setattr(flex_decode, "_flex", lambda compiled, device_type: flex_attention)  # no compile here
    row = run_case(case("kvlab", method="snapkv", decode_mode="static", decode_attention="flex"))
    assert "error" not in row, row.get("error")
    assert row["attention"]["decode"] == "kvlab flex_attention (FlexDecoding) (static cache)"
    assert row["decode_mode"] == "static+flex"  # the store keys records by mode: kept apart from matmul's
    row = run_case(case("kvlab", method="h2o", decode_mode="static", decode_attention="flex"))
    assert row["attention"]["decode"] == "kvlab decode_attention (matmuls) (static cache)"  # with the key mass
    assert row["decode_mode"] == "static"


def test_inductor_decode_attention_goes_with_compiled_decoding():
    """--decode-attention inductor changes only the compiled step: other modes fail up front, and a
    compiled row names the kernel and keeps its own mode key."""
    from types import SimpleNamespace

    from kvlab.bench.worker import _decode_attention_label
    from kvlab.methods import get_method

    with pytest.raises(KvlabError, match="add --decode-mode compiled"):
        config_from_args(args(random_weights="tiny-llama", lengths="1k", methods="snapkv",
                              decode_attention="inductor", decode_mode="static"))
    config = config_from_args(args(random_weights="tiny-llama", lengths="1k", methods="h2o",
                                   decode_attention="inductor", decode_mode="compiled"))
    assert [c.get("decode_attention") for c in config.cases()] == [None, "inductor"]
    config_ = SimpleNamespace(get_text_config=lambda: SimpleNamespace())
    lm = SimpleNamespace(model=SimpleNamespace(config=config_), device=torch.device("cpu"))
    label = _decode_attention_label("compiled", "inductor", get_method("h2o"), lm)
    assert label == "kvlab decode_attention (matmuls) traced into the step (static cache, torch.compile)"


def test_transformers_case_and_errors():
    row = run_case(case("transformers"))
    assert row["method"] == "plain transformers" and row["kv_bytes"] == row["full_kv_bytes"]
    assert row["kv_decode_bytes"] == row["kv_bytes"] + 6 * (row["kv_bytes"] // 96)  # warmup + timed + 1 tokens
    assert "generate_ms_per_token" not in row and row["decode_mode"] == "greedy loop"
    too_long = run_case(case("kvlab", length=5000))
    assert "window" in too_long["error"] and too_long["method"] == "full"
    assert run_case(case("transformers", length=5000))["method"] == "plain transformers"
    with_generate = run_case(case("transformers", generate=True))
    assert with_generate["generate_ms_per_token"] > 0


def test_baseline_greedy_loop_decodes_what_generate_decodes(tiny_llama):
    """The baseline's plain loop (no attention mask, explicit positions) is the same greedy decoding."""
    from kvlab.bench.worker import _greedy_loop

    model = tiny_llama.model
    ids = torch.randint(0, 320, (1, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        first = out.logits[:, -1:].argmax(-1)
        cache = hf_compat.output_cache(out)
        tokens = [int(first)]
        # the loop returns timestamps; read the tokens back from the cache-extended argmax chain
        original = model.forward

        def spy(*a, **kw):
            result = original(*a, **kw)
            tokens.append(int(result.logits[:, -1:].argmax(-1)))
            return result

        model.forward = spy
        try:
            stamps = _greedy_loop(model, cache, first, 40, 5, torch.device("cpu"))
        finally:
            del model.forward
        expected = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)[0, 40:].tolist()
    assert len(stamps) == 5 and tokens == expected


def test_run_bench_floors_ratios_and_records(tmp_path):
    config = BenchConfig(model=TINY, lengths=[64, 96], methods=["full", "snapkv"], budget="25%", chunk_size=32,
                         decode_tokens=3, warmup_steps=1)
    result = run_bench(config, runner=lambda c, timeout: run_case(c))
    rows = result["rows"]
    assert [(r["length"], r["role"]) for r in rows] == [(n, role) for n in (64, 96)
                                                         for role in ("transformers", "kvlab", "kvlab")]
    gbps = result["device"]["copy_gbps"]
    for r in rows:
        expected = (r["weight_read_bytes"] + r["kv_decode_bytes"]) / (gbps * 1e9) * 1e3
        assert r["floor_ms_per_token"] == pytest.approx(expected)
        assert r["floor_ratio"] == pytest.approx(r["decode_ms_per_token"] / expected)
    snap = rows[2]
    assert snap["vs_baseline"]["kv_bytes"] == pytest.approx(snap["kv_bytes"] / rows[0]["kv_bytes"], rel=1e-3)
    records = to_records(result)
    assert all(tuple(rec) == RECORD_FIELDS for rec in records)
    json.dumps(records)  # plain data
    assert {rec["kind"] for rec in records} == {"kvlab", "transformers"}
    assert "snapkv" in format_table(result)
    from kvlab.results.store import open_store

    with open_store(tmp_path / "r.db") as store:
        assert store.add_bench(records) == 6
        assert store.add_bench(records) == 6  # the same configurations are replaced, not duplicated
        assert len(store.bench()) == 6


def test_cli_runs_each_case_in_its_own_process(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "kvlab.cli.main", "bench", "--random-weights", "tiny-llama",
                           "--lengths", "64", "--methods", "snapkv", "--budget", "25%", "--decode-tokens", "2",
                           "--no-baseline", "--json", str(out)], capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    (row,) = data["rows"]
    assert row["method"] == "snapkv" and row["memory_method"].startswith("peak RSS") and row["wall_seconds"] > 0
    assert "MALLOC_MMAP_THRESHOLD_=1048576" in row["memory_method"]  # RSS follows live tensors (runner.py)
    assert data["device"]["copy_gbps"] > 0 and "snapkv" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "kvlab.cli.main", "bench", "--methods", "nope"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 2 and "unknown method 'nope'" in bad.stderr


HEAP_PROBE = MAPPED_PROBE + """
import json
from kvlab.bench.measure import heap_reuse

out = {"outside": mapped(4 << 20)}
with heap_reuse():
    out["inside"] = mapped(4 << 20)
out["after"] = mapped(4 << 20)
print(json.dumps(out))
"""


def test_fixed_mmap_threshold_for_peaks_heap_reuse_for_decoding():
    """A case process (MALLOC_MMAP_THRESHOLD_ fixed by the runner) maps a 4 MiB block of its own, so
    freed activations leave the RSS; inside heap_reuse() (the timed decoding) such a block comes from
    the heap as under glibc's default, and the fixed threshold is back afterwards."""
    import ctypes
    import os

    if not hasattr(ctypes.CDLL(None), "mallinfo2"):
        pytest.skip("needs glibc >= 2.33 (mallinfo2)")
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(1 << 20))
    proc = subprocess.run([sys.executable, "-c", HEAP_PROBE], capture_output=True, text=True, env=env, timeout=120,
                          check=True)
    assert json.loads(proc.stdout.splitlines()[-1]) == {"outside": 1, "inside": 0, "after": 1}
