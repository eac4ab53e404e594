"""Decode ms/token of kvlab's decoding paths side by side, on one prefilled cache per method.

For each method the prompt (random token ids, seeded) is prefilled once, chunked and compressed to
the budget; each decode mode then continues its own copy of that cache greedily: ``--warmup``
untimed steps (where ``compiled`` compiles and ``graph`` captures), then ``--rounds`` rounds of
``--tokens`` timed steps with the modes interleaved, median per mode. The
modes must produce the same tokens (``same_tokens``); the ratio to the device's bandwidth floor
is computed as in ``kvlab bench`` ((weight bytes read + KV bytes read) / measured copy bandwidth).

    python bench/decode_modes.py --length 4096 --methods full,snapkv --json bench/results/decode_modes_cpu.json
    python bench/decode_modes.py --model random:llama-3.1-8b --length 131072 --modes graph,compiled  # GPU
    python bench/decode_modes.py --length 4096 --methods snapkv --modes compiled,compiled+inductor,static+flex

Modes run in one process (``kvlab bench`` isolates cases in processes; here the point is the same
cache and tokens for every mode, and interleaving, as a shared machine's speed drifts). On CPU the first ``compiled`` step takes
tens of seconds (inductor builds C++); it is reported as ``warmup_seconds``, not timed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time

import torch

from kvlab import decode_kernel
from kvlab.apply_method import apply
from kvlab.bench.measure import copy_bandwidth, device_info
from kvlab.bench.worker import _ids, _load, _sync, weight_bytes
from kvlab.config import parse_length
from kvlab.decoding import make_step, resolve_mode
from kvlab.engine import prefill_context
from kvlab.methods import get_method
from kvlab.results.provenance import collect


def decode_modes(lm, prefilled, method, modes: list[str], warmup: int, tokens: int, rounds: int) -> list[dict]:
    """Each mode on its own copy of the prefilled cache; ``rounds`` timed rounds of ``tokens`` steps,
    the modes interleaved within a round (so a slow spell of the machine hits them all); median."""
    device = lm.device
    steps_total = warmup + rounds * tokens
    caches = {m: prefilled.cache.clone(spare=steps_total + 2) for m in modes}
    first = int(prefilled.last_logits.argmax())
    out = {m: {"tokens": [first], "round_ms": []} for m in modes}
    steps = {}

    def advance(m: str, n: int) -> float:
        """``n`` greedy steps of mode ``m`` on its own cache; seconds, synchronised."""
        state.cache = caches[m]
        _sync(device)
        start = time.perf_counter()
        for _ in range(n):
            out[m]["tokens"].append(int(steps[m](out[m]["tokens"][-1]).argmax()))
        _sync(device)
        return time.perf_counter() - start

    with torch.no_grad(), apply(lm, method, prefilled.budget) as state:
        state.phase, state.prompt_tokens = "append", prefilled.context_tokens
        for m in modes:
            state.cache = caches[m]
            mode, _, kernel = m.partition("+")
            with _switch(decode_kernel.SWITCH, kernel or None):
                steps[m] = make_step(mode, lm.model, caches[m], device, state, steps_total + 1)
            out[m]["decode_attention"] = getattr(steps[m], "kernel", "sdpa")
            out[m]["warmup_seconds"] = advance(m, warmup)
        for _ in range(rounds):
            for m in modes:
                out[m]["round_ms"].append(advance(m, tokens) / tokens * 1e3)
        for m in modes:
            steps[m].finish()
    return [{"mode": m, "decode_ms_per_token": statistics.median(out[m]["round_ms"]), **out[m],
             "kv_decode_bytes": caches[m].bytes_held} for m in modes]


def _mode_spec(p: argparse.ArgumentParser, spec: str, device: torch.device) -> str:
    """``mode`` or ``mode+kernel``, the mode resolved for ``device``, the kernel checked."""
    mode, plus, kernel = spec.partition("+")
    mode = resolve_mode(mode, device)
    if plus and (mode == "eager" or kernel not in decode_kernel.KERNELS):
        p.error(f"--modes {spec}: a kernel goes with a static mode ({', '.join(decode_kernel.KERNELS)}), "
                "as in graph+flex")
    if kernel == "inductor" and mode != "compiled":
        p.error(f"--modes {spec}: the inductor kernel is decode attention traced into the compiled step: "
                "compiled+inductor")
    return f"{mode}+{kernel}" if plus else mode


@contextlib.contextmanager
def _switch(name: str, value: str | None):
    """Set environment variable ``name`` to ``value`` for the block (unchanged where ``value`` is None)."""
    saved = os.environ.get(name)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        if value is not None:
            if saved is None:
                del os.environ[name]
            else:
                os.environ[name] = saved


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default", help="as for kvlab bench (default, a path, random:<shape>)")
    p.add_argument("--length", default="4096", help="prompt tokens (4096, 4k, 128k)")
    p.add_argument("--methods", default="full,snapkv", help="comma-separated (default: %(default)s)")
    p.add_argument("--budget", default="10%", help="KV budget of compressing methods (default: %(default)s)")
    p.add_argument("--chunk-size", type=int, default=4096, help="prefill chunk (default: %(default)s)")
    p.add_argument("--modes", default=None,
                   help="decode modes (default: eager,static,compiled; + graph on CUDA); a static mode may name its "
                        "decode attention kernel: graph+flex, compiled+matmul, compiled+inductor (default: "
                        "KVLAB_DECODE_ATTENTION's)")
    p.add_argument("--tokens", type=int, default=32, help="timed steps (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds, modes interleaved (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", default=None, help="write the result here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    lm = _load({"model": args.model})
    device = lm.device
    modes = (args.modes or ("eager,static,compiled,graph" if device.type == "cuda" else "eager,static,compiled")).split(",")
    modes = [_mode_spec(p, m, device) for m in modes]
    if any(m.startswith("compiled") for m in modes) and args.warmup < 1:
        p.error("the compiled mode compiles in its first step: use --warmup 1 or more")
    length = parse_length(args.length)
    ids = _ids(lm, length, 0)
    bandwidth = copy_bandwidth(device)
    _, read = weight_bytes(lm.model)
    rows = []
    for name in args.methods.split(","):
        method = get_method(name)
        prefilled = prefill_context(lm, ids, method, args.budget, args.chunk_size,
                                    reserve_extra=args.warmup + args.rounds * args.tokens + 2)
        first = None
        for row in decode_modes(lm, prefilled, method, modes, args.warmup, args.tokens, args.rounds):
            mode = row["mode"]
            first = first or row["tokens"]
            floor_ms = (read + row["kv_decode_bytes"]) / (bandwidth["copy_gbps"] * 1e9) * 1e3
            row.update(method=method.describe(), budget=str(prefilled.budget), length=length,
                       kv_bytes=prefilled.cache.bytes_held, floor_ms_per_token=floor_ms,
                       floor_ratio=row["decode_ms_per_token"] / floor_ms, same_tokens=row["tokens"] == first)
            rows.append(row)
            print(f"{row['method']:>14} {mode:>14}: {row['decode_ms_per_token']:8.2f} ms/token "
                  f"({row['floor_ratio']:.2f}x floor {floor_ms:.2f} ms), warm-up {row['warmup_seconds']:.1f} s, "
                  f"same tokens {row['same_tokens']}", flush=True)
        del prefilled
    result = {"what": "decode ms/token per decode mode on one prefilled cache per method", "model": lm.name,
              "length": length, "budget": args.budget, "chunk_size": args.chunk_size, "tokens": args.tokens,
              "warmup": args.warmup, "rounds": args.rounds, "weight_read_bytes": read, "device": device_info(device), **bandwidth,
              "torch_threads": torch.get_num_threads(), "rows": rows, "provenance": collect(lm)}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
