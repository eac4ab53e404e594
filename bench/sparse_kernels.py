"""Sparse-prefill attention kernels against dense SDPA, one layer of a model shape at long lengths.

For every length: one layer's queries/keys/values (random, bf16 on CUDA) of the shape's head
geometry, then milliseconds per call of

* dense causal SDPA with each backend torch offers on the device (cuDNN, flash, efficient on CUDA;
  the default on CPU) -- what a one-pass prefill runs per layer;
* kvlab's sparse patterns (A-shape, LM-Infinite's Lambda, MInference's vertical-slash, each with
  the method's defaults unless given) through the kernel the method picks (compiled flex_attention
  on CUDA, the blocked torch kernel on CPU), pattern construction included,

timed with CUDA events (median of ``--repeats`` after warm-up and compilation). Random queries make
MInference's estimated columns scattered, the worst case for its block structure. The dense rows'
fastest is the reference of every ``speedup``.

    python bench/sparse_kernels.py --lengths 32k,128k --json bench/results/sparse_kernels_h200.json
    python bench/sparse_kernels.py --device cpu --lengths 4k --repeats 2      # a CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

SPARSE = {
    "a_shape": "a_shape",  # MInference's A-shape: 128 sinks + 3968 local
    "lm_infinite": "lm_infinite:n_local=8192,limit_distance=8192",  # Llama-3's pre-training window
    "minference": "minference",  # vertical 1000 + slash 6096, blocks of 64
}


def _timer(device: torch.device):
    if device.type == "cuda":
        def run(fn, repeats: int) -> list[float]:
            out = []
            for _ in range(repeats):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                out.append(start.elapsed_time(end))
            return out
    else:
        def run(fn, repeats: int) -> list[float]:
            out = []
            for _ in range(repeats):
                t = time.perf_counter()
                fn()
                out.append((time.perf_counter() - t) * 1e3)
            return out
    return run


def dense_backends(device: torch.device) -> dict[str, list]:
    from torch.nn.attention import SDPBackend

    if device.type != "cuda":
        return {"sdpa (default)": None}
    return {"sdpa cudnn": [SDPBackend.CUDNN_ATTENTION], "sdpa flash": [SDPBackend.FLASH_ATTENTION]}


def layer_inputs(shape: str, length: int, device: torch.device):
    """``(spec, query (1, Hq, L, D), key, value (1, Hkv, L, D))``: random, bf16 on CUDA, fp32 on CPU."""
    from kvlab.models import ModelSpec, shapes

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    spec = ModelSpec.from_config(shapes.config_for(shape), dtype=dtype, name=shape)
    g = torch.Generator(device=device).manual_seed(0)
    hq, hkv, d = spec.num_heads, spec.num_kv_heads, spec.head_dim
    query = torch.randn(1, hq, length, d, generator=g, device=device, dtype=dtype)
    key = torch.randn(1, hkv, length, d, generator=g, device=device, dtype=dtype)
    value = torch.randn(1, hkv, length, d, generator=g, device=device, dtype=dtype)
    return spec, query, key, value


def report(shape: str, device: torch.device, rows: list[dict], path: str | None) -> int:
    """Print the result as JSON, and write it to ``path``."""
    result = {"shape": shape, "device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "rows": rows}
    text = json.dumps(result, indent=1)
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    print(text)
    return 0


def measure(shape: str, length: int, device: torch.device, repeats: int, methods: dict[str, str]) -> list[dict]:
    from torch.nn.attention import sdpa_kernel

    from kvlab.methods import get_method
    from kvlab.methods.base import LayerContext

    spec, query, key, value = layer_inputs(shape, length, device)
    hkv, d = spec.num_kv_heads, spec.head_dim
    pos = torch.arange(length, device=device)
    key_pos = pos.expand(1, hkv, length)
    scaling = d ** -0.5
    timer = _timer(device)
    rows = []
    for label, backends in dense_backends(device).items():
        def dense():
            return F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scaling, enable_gqa=True)
        try:
            if backends:
                with sdpa_kernel(backends):
                    ms = timer(dense, 2) and timer(dense, repeats)
            else:
                ms = timer(dense, 1) and timer(dense, repeats)
            rows.append({"kernel": label, "length": length, "ms": round(statistics.median(ms), 3),
                         "ms_all": [round(x, 3) for x in ms]})
        except RuntimeError as exc:
            rows.append({"kernel": label, "length": length, "error": str(exc).splitlines()[0][:200]})
        print(f"{length} {label}: {rows[-1].get('ms', rows[-1].get('error'))}", file=sys.stderr, flush=True)
    for name, text in methods.items():
        method = get_method(text)
        ctx = LayerContext(layer_idx=0, spec=spec, query=query, query_pos=pos, keys=key, values=value,
                           positions=key_pos, scaling=scaling, window=None, phase="context", layer=None)
        pattern = method.prefill_pattern(ctx)
        if pattern is None:
            rows.append({"kernel": name, "method": method.describe(), "length": length, "error": "dense at this length"})
            continue

        def sparse():
            return pattern.attend(query, key, value, key_pos, pos, scaling, None)

        try:
            t = time.perf_counter()
            timer(sparse, 1)
            compile_s = time.perf_counter() - t
            timer(sparse, 1)
            ms = timer(sparse, repeats)
            rows.append({"kernel": name, "method": method.describe(), "length": length,
                         "ms": round(statistics.median(ms), 3), "ms_all": [round(x, 3) for x in ms],
                         "first_call_seconds": round(compile_s, 2)})
        except Exception as exc:  # report and go on: one pattern failing must not hide the others
            rows.append({"kernel": name, "method": method.describe(), "length": length,
                         "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"})
        print(f"{length} {name}: {rows[-1].get('ms', rows[-1].get('error'))}", file=sys.stderr, flush=True)
    best = min((r["ms"] for r in rows if "ms" in r and r["kernel"].startswith("sdpa")), default=None)
    for r in rows:
        if best and "ms" in r:
            r["speedup_vs_best_dense"] = round(best / r["ms"], 2)
    return rows


def kernel_parser(doc: str, lengths: str, repeats: int) -> argparse.ArgumentParser:
    """The options every per-kernel script takes: --shape, --lengths, --device, --repeats, --threads, --json."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--shape", default="llama-3.1-8b", help="head geometry of this model shape (default: %(default)s)")
    p.add_argument("--lengths", default=lengths, help="tokens (default: %(default)s)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=repeats, help="timed runs, median (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", metavar="PATH", help="also write the result here")
    return p


def run_lengths(args: argparse.Namespace, measure_length) -> int:
    """``measure_length(length, device) -> rows`` for each of ``--lengths``; prints and writes the result."""
    from kvlab.bench.runner import parse_lengths

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    rows = []
    for length in parse_lengths(args.lengths):
        rows += measure_length(length, device)
        if device.type == "cuda":
            torch.cuda.empty_cache()  # this length's tensors are gone with measure_length()'s frame
    return report(args.shape, device, rows, args.json)


def main(argv: list[str] | None = None) -> int:
    from kvlab.cli.bench import split_methods

    p = kernel_parser(__doc__, "32k,128k", 5)
    p.add_argument("--methods", default=None, help="sparse methods with parameters (default: a_shape, lm_infinite "
                   "with an 8K window, minference)")
    args = p.parse_args(argv)
    methods = SPARSE if not args.methods else {m.split(":")[0]: m for m in split_methods(args.methods)}
    return run_lengths(args, lambda length, device: measure(args.shape, length, device, args.repeats, methods))


if __name__ == "__main__":
    sys.exit(main())
