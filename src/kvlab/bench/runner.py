"""``kvlab bench``: every (length, method) case in its own process, plus the device's copy bandwidth.

Each case runs in a fresh ``python -m kvlab.bench.worker`` so no allocator cache, compiled kernel
or kernel plan of an earlier case can flatter a later one, and so a case that runs out of memory
only fails its own row. The rows of one run are compared side by side: the bandwidth floor of a
decoding step is ``(weight bytes read + KV bytes read) / copy bandwidth`` with the bandwidth
measured on the same device in the same run, and each row is also compared with the
``plain transformers`` baseline row of its length.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from kvlab.bench.worker import MARKER, error_row
from kvlab.errors import KvlabError
from kvlab.heap import FIXED_MMAP_THRESHOLD, MMAP_THRESHOLD_ENV

BASELINE = "transformers"


@dataclass
class BenchConfig:
    """What ``kvlab bench`` measures; every field is recorded with the results."""

    model: str = "default"
    lengths: list[int] = field(default_factory=lambda: [4096])
    methods: list[str] = field(default_factory=lambda: ["full", "snapkv", "streaming_llm"])
    budget: str | None = "10%"
    chunk_size: int | None = 4096
    decode_tokens: int = 32
    warmup_steps: int = 2
    decode_mode: str = "auto"
    decode_attention: str | None = None  # static decoding's kernel (kvlab.decode_kernel); None = the environment's
    baseline: bool = True
    baseline_generate: bool = False
    device: str | None = None
    dtype: str | None = None
    cudnn_decode: bool = False
    warmup: str = "auto"
    seed: int = 0
    threads: int | None = None
    timeout: float = 3600.0

    def cases(self) -> list[dict[str, Any]]:
        common = {"model": self.model, "device": self.device, "dtype": self.dtype, "decode_tokens": self.decode_tokens,
                  "warmup_steps": self.warmup_steps, "cudnn_decode": self.cudnn_decode, "warmup": self.warmup,
                  "seed": self.seed, "threads": self.threads}
        out = []
        for length in self.lengths:
            if self.baseline:
                out.append({**common, "role": BASELINE, "length": length, "generate": self.baseline_generate})
            for method in self.methods:
                out.append({**common, "role": "kvlab", "length": length, "method": method, "budget": self.budget,
                            "chunk_size": self.chunk_size, "decode_mode": self.decode_mode,
                            "decode_attention": self.decode_attention})
        return out


def parse_lengths(text: str) -> list[int]:
    """``"4k,8k,32768,128K,1m"`` -> ``[4096, 8192, 32768, 131072, 1048576]``."""
    out = []
    for item in filter(None, (p.strip().lower() for p in str(text).split(","))):
        scale = {"k": 1024, "m": 1024 * 1024}.get(item[-1], 1)
        digits = item[:-1] if scale > 1 else item
        try:
            value = int(float(digits) * scale)
        except ValueError:
            raise KvlabError(f"bad length '{item}': use token counts such as 4096, 4k, 128k or 1m") from None
        if value < 2:
            raise KvlabError(f"length {item} is too short; give at least 2 tokens")
        out.append(value)
    if not out:
        raise KvlabError("no lengths given; use e.g. --lengths 4k,8k")
    return out


def run_case_subprocess(case: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one case in a fresh interpreter; a crash or a kill becomes an ``error`` row."""
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    # glibc raises its mmap threshold each time a large block is freed, after which activations of
    # 1-32 MB come from the heap and stay resident: the CPU peak RSS of the same prefill then varied
    # from 565 to 989 MiB with the allocation history. A fixed threshold makes peak RSS follow the
    # live tensors (565 MiB, their profiled peak 574), for every case alike, the baseline included.
    # Timed decoding runs under measure.heap_reuse(), so the fixed threshold costs it no page faults.
    env.setdefault(MMAP_THRESHOLD_ENV, str(FIXED_MMAP_THRESHOLD))
    started = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "kvlab.bench.worker", json.dumps(case)], capture_output=True,
                              text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return error_row(case, f"timed out after {timeout:.0f} s")
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARKER):
            row = json.loads(line[len(MARKER):])
            row["wall_seconds"] = round(time.perf_counter() - started, 2)
            return row
    why = "killed (out of memory?)" if proc.returncode in (-9, 137) else f"exit status {proc.returncode}"
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return error_row(case, f"{why}: {' | '.join(tail)[-400:]}")


def run_bench(config: BenchConfig, on_row: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
              runner: Callable[[dict[str, Any], float], dict[str, Any]] = run_case_subprocess) -> dict[str, Any]:
    """Run every case of ``config``; returns ``{"config", "device", "provenance", "rows"}``.

    ``runner(case, timeout)`` runs one case (a subprocess by default; tests may run it in-process).
    ``on_row(row, result_so_far)`` is called after every case with the result as it stands (floors
    and baseline ratios filled in for the rows done), so a caller can save partial results.
    """
    from kvlab import __version__
    from kvlab.results.provenance import git_sha

    provenance = {"kvlab_version": __version__, "git_sha": git_sha(), "python": sys.version.split()[0],
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    device = runner({"role": "device", "device": config.device, "threads": config.threads}, config.timeout)
    if "error" in device:
        raise KvlabError(f"cannot measure the device: {device['error']}")
    rows: list[dict[str, Any]] = []
    result = {"config": asdict(config), "device": device, "rows": rows, "provenance": provenance}
    for case in config.cases():
        row = runner(case, config.timeout)
        rows.append(row)
        add_floors(rows, device)
        add_baseline_ratios(rows)
        if on_row:
            on_row(row, result)
    return result


def add_floors(rows: list[dict[str, Any]], device: dict[str, Any]) -> None:
    """The bandwidth floor of one decoding step and each row's ratio to it (in place)."""
    gbps = device["copy_gbps"]
    for row in rows:
        if "error" in row:
            continue
        read = row["weight_read_bytes"] + row["kv_decode_bytes"]
        row["copy_gbps"] = gbps
        row["floor_ms_per_token"] = read / (gbps * 1e9) * 1e3
        row["floor_ratio"] = row["decode_ms_per_token"] / row["floor_ms_per_token"]


def add_baseline_ratios(rows: list[dict[str, Any]]) -> None:
    """Each kvlab row against the plain-transformers row of its length (in place): ``x / baseline``."""
    base = {r["length"]: r for r in rows if r.get("role") == BASELINE and "error" not in r}
    for row in rows:
        ref = base.get(row.get("length"))
        if ref is None or "error" in row or row is ref:
            continue
        row["vs_baseline"] = {
            "prefill_seconds": _ratio(row["prefill_seconds"], ref["prefill_seconds"]),
            "prefill_peak_bytes": _ratio(row["prefill_peak_bytes"], ref["prefill_peak_bytes"]),
            "decode_ms_per_token": _ratio(row["decode_ms_per_token"], ref["decode_ms_per_token"]),
            "kv_bytes": _ratio(row["kv_bytes"], ref["kv_bytes"]),
        }


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None
