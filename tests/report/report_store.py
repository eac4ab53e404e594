"""A result store built by hand, with known scores, for the report tests (no model involved).

Task ``niah/single`` at lengths 1024 and 2048, mode query_aware, seed 42; sample i sits at depth
(0, 50, 100)[i]. What each (method, budget, length) holds:

==================  =============  =============
method@budget       1024           2048
==================  =============  =============
full                1, 1, 1        1, 1, 0
snapkv@25%          .6, .8, .7     0, 0, 0
snapkv@50%          1, 1, 1        1, 1, 1
streaming_llm@25%   failed         1 (1 of 3: partial)
streaming_llm@50%   pending        (no cell)
==================  =============  =============
"""

from __future__ import annotations

from kvlab.results.store import ResultStore

DEPTHS = (0, 50, 100)
SCORES = {
    ("full", "full", 1024): [1, 1, 1], ("full", "full", 2048): [1, 1, 0],
    ("snapkv", "25%", 1024): [0.6, 0.8, 0.7], ("snapkv", "25%", 2048): [0, 0, 0],
    ("snapkv", "50%", 1024): [1, 1, 1], ("snapkv", "50%", 2048): [1, 1, 1],
    ("streaming_llm", "25%", 2048): [1],
}
KV_BYTES = {"full": 1.0, "25%": 0.25, "50%": 0.5}
FAMILY = {"full": "baseline", "snapkv": "eviction (attention score)", "streaming_llm": "eviction (static pattern)"}


def cell(method: str, budget: str, length: int) -> dict:
    return {"key": f"{method}-{budget}-{length}", "n": 3, "model": "default", "dtype": "float32", "method": method,
            "method_config": "{}", "budget": budget, "task": "niah/single", "task_params": {}, "length": length,
            "mode": "query_aware", "seed": 42, "chunk_size": 4096, "chat": "template", "family": FAMILY[method],
            "metric": "string_match_all"}


def build(path) -> str:
    with ResultStore(path) as store:
        run = store.start_run({"kvlab_version": "0.1.0", "torch": "2.13.0", "device": "cpu (test)", "seed": [42]},
                              "test")
        for (method, budget, length), values in SCORES.items():
            c = cell(method, budget, length)
            store.ensure_cell(c)
            store.mark_cell(c["key"], "running", run_id=run, model_name="TinyModel")
            for i, score in enumerate(values):
                full = 1_000_000 * length // 1024
                store.add_sample(c["key"], run, [{
                    "sample_index": i, "query_index": 0, "prompt_hash": f"{length}-{i}", "prediction": "x",
                    "answers": ["x"], "score": float(score), "prompt_tokens": length - 20, "context_tokens": length - 30,
                    "new_tokens": 5, "prefill_seconds": length / 1000, "decode_seconds": 0.25, "kv_tokens": 10.0,
                    "kv_bytes": int(full * KV_BYTES[budget]), "peak_kv_bytes": full, "full_kv_bytes": full,
                    "metadata": {"depth": DEPTHS[i]}}])
            if len(values) == c["n"]:
                store.finish_cell(c["key"])
        failed = cell("streaming_llm", "25%", 1024)
        store.ensure_cell(failed)
        store.mark_cell(failed["key"], "failed", run_id=run, error="RuntimeError: boom", model_name="TinyModel")
        pending = cell("streaming_llm", "50%", 1024)
        store.ensure_cell(pending)
        store.mark_cell(pending["key"], "pending")  # never ran: no resolved model name yet
        store.finish_run(run)
    return str(path)
