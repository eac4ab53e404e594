"""Prefill(+compression) wall time of every registered method, as a ratio to ``full`` in the same run.

CPU variant (default): the embedded SmolLM2-135M-Instruct at 4K tokens, one random prompt shared by
all methods, ``--repeats`` interleaved rounds (every method once per round, so slow drift of a
shared machine hits all methods alike), the median per method. Each method runs in one pass
(``chunk=None``) and chunked (``--chunk-size``, default a quarter of the prompt: the engine's
default chunk of 4096 equals a 4K prompt, which would be the one-pass case again). Sparse-prefill
methods also run with their patterns scaled to the 4K prompt (their paper defaults are meant for
32K-128K and are dense at 4K). Writes ``bench/results/prefill_methods_cpu.json``.

GPU variant (``--gpu``, CUDA only): a Llama-3.1-8B-shaped random model at 32K through
``kvlab bench`` (each case in its own process): peak GPU memory over the weights of each method's
chunked prefill against the full cache and plain transformers, plus times. Writes
``bench/results/prefill_methods_gpu.json``.

    python bench/prefill_methods.py --json bench/results/prefill_methods_cpu.json
    python bench/prefill_methods.py --gpu --json bench/results/prefill_methods_gpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

SCALED_4K = {  # sparse patterns sized for a 4K prompt (a quarter of it local, ~1/8 of the diagonals)
    "a_shape": "a_shape:n_init=64,n_local=1024",
    "lm_infinite": "lm_infinite:n_global=10,n_local=1024",
    "minference": "minference:vertical_size=256,slash_size=512",
}


def cpu_variant(args) -> dict:
    import kvlab
    from kvlab.engine import prefill_context
    from kvlab.methods import METHODS
    from kvlab.results.provenance import collect

    torch.set_grad_enabled(False)
    lm = kvlab.load_model(args.model, device="cpu")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, lm.model.get_input_embeddings().weight.shape[0], (args.length,), generator=g).tolist()
    chunk = args.chunk_size or max(1, args.length // 4)
    names = args.methods.split(",") if args.methods else METHODS.names()
    variants = [(n, n) for n in names] + [(f"{n} (4K pattern)", SCALED_4K[n]) for n in names if n in SCALED_4K]
    cases = [(label, spec, c) for label, spec in variants for c in (None, chunk)]
    prefill_context(lm, ids[:512], "full", None, None)  # warm-up
    times: dict[tuple, list[float]] = {(label, c): [] for label, _, c in cases}
    kv_peak: dict[tuple, int] = {}
    for round_ in range(args.repeats):
        for label, spec, c in cases:
            pre = prefill_context(lm, ids, spec, args.budget, c)
            times[(label, c)].append(pre.prefill_seconds)
            kv_peak[(label, c)] = pre.cache.peak_bytes
            print(f"round {round_ + 1} {label:32s} chunk={c}: {pre.prefill_seconds:.2f} s", file=sys.stderr, flush=True)
            del pre
    rows = []
    for label, spec, c in cases:
        med = statistics.median(times[(label, c)])
        rows.append({"method": label, "spec": spec, "chunk_size": c, "median_seconds": round(med, 3),
                     "seconds": [round(t, 3) for t in times[(label, c)]],
                     "ratio_to_full_same_chunking": round(med / statistics.median(times[("full", c)]), 3),
                     "ratio_to_full_one_pass": round(med / statistics.median(times[("full", None)]), 3),
                     "kv_peak_bytes": kv_peak[(label, c)]})
    return {"what": "prefill(+compression) wall time per method, ratio to full in the same run",
            "model": lm.name, "length": args.length, "budget": args.budget, "chunk_size": chunk,
            "repeats": args.repeats, "statistic": "median", "load_average": _load(),
            "torch_threads": torch.get_num_threads(),
            "provenance": collect(lm, seed=0), "rows": rows}


def gpu_variant(args) -> dict:
    from kvlab.bench import BenchConfig, run_bench, to_records
    from kvlab.methods import METHODS

    names = args.methods.split(",") if args.methods else METHODS.names()
    config = BenchConfig(model="random:llama-3.1-8b", lengths=[32768], methods=names, budget=args.budget,
                         chunk_size=args.chunk_size or 4096, decode_tokens=16)
    result = run_bench(config, on_row=lambda r, _result: print(r.get("method", r.get("method_spec")), r.get("prefill_seconds"),
                                                      r.get("prefill_peak_bytes"), r.get("error"), file=sys.stderr))
    result["records"] = to_records(result)
    return result


def _load():
    try:
        import os

        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--length", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--budget", default="10%")
    p.add_argument("--chunk-size", type=int, default=None, help="chunked runs (default: length/4 on CPU, 4096 on GPU)")
    p.add_argument("--methods", default=None, help="comma-separated (default: every registered method)")
    p.add_argument("--gpu", action="store_true", help="the GPU variant (Llama-3.1-8B shape at 32K, CUDA only)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.gpu and not torch.cuda.is_available():
        print("prefill_methods --gpu: no CUDA device here; skipped", file=sys.stderr)
        return 0
    start = time.time()
    result = gpu_variant(args) if args.gpu else cpu_variant(args)
    result["wall_seconds"] = round(time.time() - start, 1)
    text = json.dumps(result, indent=1, default=str)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    if not args.gpu:
        for r in result["rows"]:
            print(f"{r['method']:32s} chunk={r['chunk_size']!s:5} {r['median_seconds']:7.2f} s  "
                  f"x full {r['ratio_to_full_same_chunking']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
