#!/usr/bin/env python
"""Measure the embedded model on kvlab's benchmarks and write JSON (the numbers in docs/benchmarks.md).

Parts (``--parts``, comma-separated, run in this order):

* ``grid``: the needle grid ``niah/single`` at ``--grid-lengths`` (1K-8K) x ``--depths``, for every
  ``--methods`` entry (``full`` and ``snapkv@25%``) in both modes (``query_aware``,
  ``query_agnostic``), ``--grid-n`` samples per length (sample i at depth ``depths[i % k]``).
* ``ruler``: the 11 synthetic RULER tasks at ``--ruler-length`` (4096), ``--ruler-n`` samples each,
  full cache, query-aware (RULER's single-request setting).
* ``shared``: ``shared/multikey`` (8 needles, 4 questions per context) at ``--shared-length`` for
  every method in both modes.

Every cell (task x length x method x mode) records its summary, per-depth scores where samples have
a depth, the wall time it took, and each query's full record. The JSON file is rewritten after
every cell, so an interrupted run keeps what it finished. ``--resume`` skips finished cells and
*extends* cells run with a smaller ``n``: sample ``i`` does not depend on ``n``, so only the missing
samples run (the cell's ``seconds`` then adds up the runs). Cells of one length and mode share each
context's forward (:mod:`kvlab.shared_prefill`, contexts up to one 4096-token chunk): the first
method of the group pays for it in ``seconds``, the others only for compression and decoding;
every sample's ``prefill_seconds`` still reports what a direct prefill costs.
Run long measurements at low priority, e.g.::

    nice -n 10 .venv/bin/python scripts/measure_benchmarks.py --out bench/results/benchmarks_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

RULER_SYNTHETIC = ("niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multikey_2",
                   "niah_multikey_3", "niah_multivalue", "niah_multiquery", "vt", "cwe", "fwe")
MODES = ("query_aware", "query_agnostic")


def parse_method(text: str) -> tuple[str, str | None]:
    name, _, budget = text.partition("@")
    return name, (budget or None)


def cells(args) -> list[dict]:
    from kvlab.bench.runner import parse_lengths

    out = []
    methods = [parse_method(m) for m in args.methods.split(",")]
    for part in args.parts.split(","):
        if part == "grid":
            for length in parse_lengths(args.grid_lengths):
                for mode in MODES:  # methods innermost: they share each context's recorded prefill
                    for method, budget in methods:
                        out.append({"part": part, "task": "niah/single", "params": {"depths": args.depths},
                                    "length": length, "n": args.grid_n, "method": method, "budget": budget,
                                    "mode": mode})
        elif part == "ruler":
            for task in (args.ruler_tasks.split(",") if args.ruler_tasks else RULER_SYNTHETIC):
                out.append({"part": part, "task": f"ruler/{task}", "params": {}, "length": args.ruler_length,
                        "n": args.ruler_n, "method": "full", "budget": None, "mode": "query_aware"})
        elif part == "shared":
            for mode in MODES:
                for method, budget in methods:
                    out.append({"part": part, "task": "shared/multikey", "params": {}, "length": args.shared_length,
                                "n": args.shared_n, "method": method, "budget": budget, "mode": mode})
        else:
            sys.exit(f"unknown part '{part}': use grid, ruler, shared")
    return out


def key(cell: dict) -> str:
    """A cell's identity; ``n`` is not part of it, so a resumed run can extend a cell."""
    return f"{cell['task']}|{json.dumps(cell['params'], sort_keys=True)}|{cell['length']}|{cell['method']}|" \
           f"{cell['budget']}|{cell['mode']}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--out", default="bench/results/benchmarks_cpu.json")
    p.add_argument("--parts", default="grid,ruler,shared")
    p.add_argument("--methods", default="full,snapkv@25%", help="METHOD[@BUDGET],... (default: %(default)s)")
    p.add_argument("--grid-lengths", default="1024,2048,4096,8192")
    p.add_argument("--depths", default="0,25,50,75,100")
    p.add_argument("--grid-n", type=int, default=10)
    p.add_argument("--ruler-length", type=int, default=4096)
    p.add_argument("--ruler-n", type=int, default=20)
    p.add_argument("--ruler-tasks", default="", help="comma-separated subset of the 11 synthetic tasks "
                   "(default: all), e.g. to split a run over processes that each write their own --out")
    p.add_argument("--first-sample", type=int, default=0,
                   help="skip the samples before this index (measured by an earlier run whose file lacks the "
                        "per-query records --resume needs; scripts/measurement_tables.py merges the two)")
    p.add_argument("--chunk-size", default="4096",
                   help="prefill chunk size, or 'none' for one pass (single-chunk contexts share one recorded "
                        "forward across methods; default: %(default)s)")
    p.add_argument("--shared-length", type=int, default=4096)
    p.add_argument("--shared-n", type=int, default=10)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--chat", default="template", choices=("template", "none"))
    p.add_argument("--resume", action="store_true", help="keep finished cells of --out and skip them")
    args = p.parse_args()

    import torch
    import transformers
    from tqdm import tqdm

    import kvlab
    from kvlab.evaluate import run_sample, scores_by, summarize
    from kvlab.models import load_model
    from kvlab.tasks import get_task

    chunk_size = None if args.chunk_size.lower() == "none" else int(args.chunk_size)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done: dict[str, dict] = {}
    if args.resume and out.exists():
        done = {key(c["cell"]): c for c in json.loads(out.read_text())["cells"]}
    lm = load_model("default", device="cpu")
    doc = {
        "what": "kvlab benchmark measurements on the embedded model",
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "device": f"cpu ({os.cpu_count()} cores, {platform.processor() or platform.machine()}), "
                  f"torch threads {torch.get_num_threads()}",
        "model": lm.name, "dtype": str(lm.spec.dtype) if hasattr(lm.spec, "dtype") else "float32",
        "versions": {"kvlab": kvlab.__version__, "torch": torch.__version__, "transformers": transformers.__version__},
        "seed": args.seed, "chat": args.chat, "chunk_size": chunk_size, "cells": list(done.values()),
    }
    if done:
        doc["command"] = json.loads(out.read_text()).get("command", "") + " ; resumed: " + doc["command"]
    from kvlab.evaluate import QueryResult

    from kvlab.shared_prefill import PrefillMemo

    memo = PrefillMemo(max_bytes=6 << 30)  # a context's forward is shared by the methods that follow it
    todo = [c for c in cells(args) if key(c) not in done or done[key(c)]["summary"]["samples"] < c["n"]]
    started = time.time()
    for cell in todo:
        previous = done.get(key(cell))
        old = [QueryResult(**r) for r in previous["records"]] if previous and "records" in previous else []
        first = previous.get("first_sample", 0) if old else args.first_sample
        have = len({r.sample_index for r in old})
        task = get_task(cell["task"], **cell["params"])
        label = f"{cell['task']} {cell['length']} {cell['method']}@{cell['budget'] or 'full'} {cell['mode']}"
        t0 = time.perf_counter()
        samples = task.samples(lm.tokenizer, cell["length"], cell["n"], args.seed, args.chat)[first + have:]
        gen_seconds = time.perf_counter() - t0
        results = list(old)
        for sample in tqdm(samples, desc=label, file=sys.stderr, leave=False):
            results += run_sample(lm, task, sample, cell["method"], cell["budget"], mode=cell["mode"], chat=args.chat,
                                  chunk_size=chunk_size, memo=memo)
        seconds = time.perf_counter() - t0 + (previous["seconds"] if old else 0.0)
        record = {
            "cell": cell, "chunk_size": chunk_size, "first_sample": first,
            "summary": summarize(results), "seconds": round(seconds, 1),
            "generation_seconds": round(gen_seconds, 2),
            "by_depth": scores_by(results, "depth") if any("depth" in r.metadata for r in results) else None,
            "queries": [{"sample": r.sample_index, "query": r.query_index, "score": r.score,
                         "prediction": r.prediction[:200], "answers": r.answers, "prompt_tokens": r.prompt_tokens,
                         "kv_tokens": r.kv_tokens, "depth": r.metadata.get("depth"),
                         "depth_actual": r.metadata.get("depth_actual")} for r in results],
            "records": [r.to_dict() for r in results],
        }
        doc["cells"] = [c for c in doc["cells"] if key(c["cell"]) != key(cell)] + [record]
        doc["total_seconds"] = round(time.time() - started, 1)
        out.write_text(json.dumps(doc, indent=1))
        s = record["summary"]
        print(f"{label}: score {s['score']:.2f} over {s['queries']} queries, nulls {s['nulls']:.2f}, "
              f"{seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
