"""Needle retrieval of the sparse-prefill methods on the embedded model (RULER NIAH-style, CPU).

RULER ``niah_single_1`` (a number in the repeated-noise haystack) and ``niah_single_2`` (a number
in the Austen essay haystack) at 2K and 4K tokens, ``--samples`` prompts each, query-aware (the
question is part of the prefilled prompt, as in RULER and in the MInference paper), greedy, scored
with the task's own metric. ``full`` is the reference; the sparse methods use patterns sized for
these lengths (the paper defaults are dense below 4K-8K and would equal ``full``).

    python bench/sparse_needles.py --json bench/results/sparse_needles_cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

METHODS = {
    "full": "full",
    "a_shape": "a_shape:n_init=64,n_local=1024",
    "lm_infinite": "lm_infinite:n_global=10,n_local=1024",
    "minference": "minference:vertical_size=256,slash_size=512",
}


def main() -> int:
    import kvlab
    from kvlab.engine import generate
    from kvlab.prompting import render
    from kvlab.results.provenance import collect
    from kvlab.tasks.registry import get_task

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="ruler/niah_single_1,ruler/niah_single_2")
    p.add_argument("--lengths", default="2048,4096")
    p.add_argument("--samples", type=int, default=5)
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    lm = kvlab.load_model("default")
    methods = {m: METHODS.get(m, m) for m in args.methods.split(",")}
    rows, start = [], time.time()
    for task_name in args.tasks.split(","):
        task = get_task(task_name)
        for length in map(int, args.lengths.split(",")):
            samples = task.samples(lm.tokenizer, length, args.samples, seed=42)
            for sample in samples:
                query = sample.queries[0]
                rendered = render(lm.tokenizer, sample.parts(query, "query_aware"), "template")
                for name, spec in methods.items():
                    out = generate(lm, rendered, method=spec, max_new_tokens=args.max_new_tokens)
                    score = float(task.score(out.text, query))
                    rows.append({"task": task_name, "length": length, "sample": sample.index, "method": name,
                                 "spec": spec, "score": score, "prompt_tokens": out.stats.prompt_tokens,
                                 "prefill_seconds": round(out.stats.prefill_seconds, 2), "answer": list(query.answers),
                                 "prediction": out.text})
                    print(f"{task_name} {length} #{sample.index} {name:12s} {score:.0f} {out.text[:40]!r}",
                          file=sys.stderr, flush=True)
    summary = {}
    for r in rows:
        key = f"{r['task']}@{r['length']}"
        summary.setdefault(key, {}).setdefault(r["method"], []).append(r["score"])
    summary = {k: {m: round(100 * sum(v) / len(v), 1) for m, v in d.items()} for k, d in summary.items()}
    result = {"what": "needle retrieval (score x100) of sparse-prefill methods, query-aware, greedy",
              "model": lm.name, "methods": methods, "samples_per_cell": args.samples, "summary": summary,
              "rows": rows, "torch_threads": torch.get_num_threads(), "wall_seconds": round(time.time() - start, 1),
              "provenance": collect(lm, seed=42)}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1, default=str)
    for key, d in summary.items():
        print(key, d)
    return 0


if __name__ == "__main__":
    sys.exit(main())
