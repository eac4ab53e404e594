"""Sparse vs dense prefill on this device: end-to-end prefill time and attention-kernel time.

1. End to end: the embedded model prefills ``--length`` tokens of real text (the shipped Austen
   haystack) in one pass with ``full`` and with each sparse-prefill method (patterns sized for the
   length; see ``PATTERNS``), ``--repeats`` interleaved rounds, median, ratio to ``full``.
2. Kernel only: the real queries/keys/values of a few layers (captured from that prefill) through
   dense SDPA and through each sparse pattern with the kernel this device uses (flex on CUDA,
   the blocked torch kernel on CPU), plus the share of (query, key) pairs each pattern keeps.

    python bench/sparse_prefill.py --json bench/results/sparse_prefill_cpu.json
    python bench/sparse_prefill.py --length 8000
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from functools import partial

import torch

PATTERNS = {  # a quarter of a 4K prompt as the local window; ~1/8 of the diagonals for MInference
    "a_shape": "a_shape:n_init=64,n_local=1024",
    "lm_infinite": "lm_infinite:n_global=10,n_local=1024",
    "minference": "minference:vertical_size=256,slash_size=512",
}


def text_ids(lm, length: int) -> list[int]:
    from kvlab.tasks.text import haystack_text

    ids = lm.tokenizer(haystack_text()[: length * 8], add_special_tokens=False)["input_ids"]
    assert len(ids) >= length, "haystack too short"
    return ids[:length]


def end_to_end(lm, ids, repeats: int) -> list[dict]:
    from kvlab.engine import prefill_context

    specs = {"full": "full", **PATTERNS}
    prefill_context(lm, ids[:512], "full", None, None)  # warm-up
    times = {name: [] for name in specs}
    for r in range(repeats):
        for name, spec in specs.items():
            t = prefill_context(lm, ids, spec, None, None).prefill_seconds
            times[name].append(t)
            print(f"round {r + 1} {name:12s} {t:.2f} s", file=sys.stderr, flush=True)
    full = statistics.median(times["full"])
    return [{"method": name, "spec": specs[name], "median_seconds": round(statistics.median(ts), 3),
             "seconds": [round(t, 3) for t in ts], "ratio_to_full": round(statistics.median(ts) / full, 3)}
            for name, ts in times.items()]


@dataclass
class Captured:
    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    positions: torch.Tensor
    query_pos: torch.Tensor
    scaling: float


def capture(lm, ids, layers: list[int]) -> dict[int, Captured]:
    """The queries/keys/values each chosen layer sees in a one-pass dense prefill."""
    from dataclasses import dataclass as dc

    from kvlab.engine import prefill_context
    from kvlab.methods.base import Method

    store: dict[int, Captured] = {}

    @dc(frozen=True)
    class Capture(Method):
        name = "capture"
        kind = "baseline"
        phase = "none"

        def prefill_pattern(self, ctx):
            if ctx.layer_idx in layers:
                store[ctx.layer_idx] = Captured(ctx.query.clone(), ctx.keys.clone(), ctx.values.clone(),
                                                ctx.positions.clone(), ctx.query_pos.clone(), ctx.scaling)

    prefill_context(lm, ids, Capture(), None, None)
    return store


def kernels(lm, captured: dict[int, Captured], repeats: int) -> list[dict]:
    from kvlab.attention import sdpa_attention
    from kvlab.methods import get_method
    from kvlab.methods.base import LayerContext
    from kvlab.sparse.prefill import kernel_for

    def best_of(fn) -> float:
        fn()
        out = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            out.append(time.perf_counter() - start)
        return statistics.median(out)

    rows = []
    for layer, c in captured.items():
        dense = best_of(partial(sdpa_attention, c.query, c.key, c.value, c.scaling))
        row = {"layer": layer, "length": c.query.shape[2], "dense_sdpa_ms": round(dense * 1e3, 1)}
        for name, spec in PATTERNS.items():
            m = get_method(spec)
            ctx = LayerContext(layer_idx=layer, spec=lm.spec, query=c.query, query_pos=c.query_pos, keys=c.key,
                               values=c.value, positions=c.positions, scaling=c.scaling, window=None,
                               phase="context", layer=None)
            sp = m.prefill_pattern(ctx)
            t = best_of(partial(sp.attend, c.query, c.key, c.value, c.positions, c.query_pos, c.scaling, None))
            pattern = sp.make(c.query, c.key, c.positions, c.query_pos, c.scaling, None)
            row[f"{name}_ms"] = round(t * 1e3, 1)
            row[f"{name}_speedup"] = round(dense / t, 2)
            row[f"{name}_kept_pairs"] = round(kept_pairs(pattern, c.query_pos, c.positions, lm.spec), 4)
        row["kernel"] = kernel_for("auto", c.query.device)
        rows.append(row)
        print(row, file=sys.stderr, flush=True)
    return rows


def kept_pairs(pattern, query_pos, key_pos, spec) -> float:
    """Share of the causal (query, key) pairs the pattern keeps, averaged over heads."""
    heads = pattern.heads or key_pos.shape[1]
    kp = key_pos.repeat_interleave(heads // key_pos.shape[1], 1)[0].view(heads, 1, -1)
    kept = causal = 0
    for start in range(0, len(query_pos), 256):
        qp = query_pos[start:start + 256].view(1, -1, 1)
        ok = (kp <= qp) & (kp >= 0)
        member = pattern.member(torch.zeros(1, 1, 1, dtype=torch.long), torch.arange(heads).view(-1, 1, 1), qp, kp)
        kept += int((ok & member).sum())
        causal += int(ok.sum()) * 1
    return kept / causal


def main() -> int:
    import kvlab
    from kvlab.results.provenance import collect

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--length", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--layers", default="0,15,29")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    lm = kvlab.load_model("default")
    ids = text_ids(lm, args.length)
    start = time.time()
    e2e = end_to_end(lm, ids, args.repeats)
    kern = kernels(lm, capture(lm, ids, [int(x) for x in args.layers.split(",")]), args.repeats)
    import os

    result = {"what": "sparse vs dense prefill (one pass), end to end and attention kernel only",
              "model": lm.name, "length": args.length, "text": "Austen haystack (kvlab.tasks.text)",
              "patterns": PATTERNS, "end_to_end": e2e, "kernels": kern, "torch_threads": torch.get_num_threads(),
              "load_average": list(os.getloadavg()), "wall_seconds": round(time.time() - start, 1),
              "provenance": collect(lm)}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1, default=str)
    for r in e2e:
        print(f"{r['method']:12s} {r['median_seconds']:7.2f} s  x full {r['ratio_to_full']:.2f}")
    for r in kern:
        print(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
