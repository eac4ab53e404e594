"""Bench results as flat records for the result store, and as a table for the terminal.

One record per measured row (see docs/performance.md for every field). The configuration fields
the store keys a record by (``kvlab.results.schema.BENCH_KEY_FIELDS``): ``model, dtype, device,
method, budget, length, chunk_size, batch_size, max_new_tokens, mode, kind``.
"""

from __future__ import annotations

from typing import Any

RECORD_FIELDS = (
    "kind", "model", "dtype", "device", "device_name", "method", "method_spec", "method_kind", "budget", "length",
    "chunk_size", "batch_size", "max_new_tokens", "mode", "prefill_seconds", "prefill_tokens_per_s",
    "prefill_peak_bytes", "decode_peak_bytes", "memory_method", "kv_bytes", "kv_peak_bytes", "kv_allocated_bytes",
    "full_kv_bytes", "kv_decode_bytes", "decode_ms_per_token", "floor_ms_per_token", "floor_ratio", "copy_gbps",
    "weight_bytes", "weight_read_bytes", "prefill_attention", "decode_attention", "cudnn_decode", "torch_threads",
    "vs_baseline_prefill_seconds", "vs_baseline_prefill_peak_bytes", "vs_baseline_decode_ms_per_token",
    "vs_baseline_kv_bytes", "error", "kvlab_version", "git_sha", "torch", "transformers", "started",
)


def to_records(result: dict[str, Any]) -> list[dict[str, Any]]:
    """``run_bench``'s result -> one flat plain dict per row (JSON-able values only)."""
    device, prov = result.get("device", {}), result.get("provenance", {})
    out = []
    for row in result["rows"]:
        vs = row.get("vs_baseline") or {}
        attention = row.get("attention") or {}
        length = row.get("length")
        rec = {
            "kind": "transformers" if row.get("role") == "transformers" else "kvlab",
            "model": row.get("model", result.get("config", {}).get("model")),
            "dtype": row.get("dtype"), "device": row.get("device", device.get("device")),
            "device_name": device.get("name"), "method": row.get("method", row.get("method_spec")),
            "method_spec": row.get("method_spec"), "method_kind": row.get("method_kind"),
            "budget": row.get("budget"), "length": length, "chunk_size": row.get("chunk_size"), "batch_size": 1,
            "max_new_tokens": row.get("decode_tokens"), "mode": row.get("decode_mode"),
            "prefill_tokens_per_s": (length / row["prefill_seconds"]) if row.get("prefill_seconds") else None,
            "prefill_attention": attention.get("prefill"), "decode_attention": attention.get("decode"),
            **{f"vs_baseline_{k}": v for k, v in vs.items()},
            "kvlab_version": prov.get("kvlab_version"), "git_sha": prov.get("git_sha"), "started": prov.get("started"),
            "torch": device.get("torch"), "transformers": device.get("transformers"),
        }
        for name in RECORD_FIELDS:
            if name not in rec:
                rec[name] = row.get(name)
        out.append({name: rec[name] for name in RECORD_FIELDS})
    return out


def format_table(result: dict[str, Any]) -> str:
    """A fixed-width table of the rows (what the CLI prints)."""
    from kvlab.cli.common import human_bytes

    header = ("length", "method", "budget", "prefill s", "x base", "peak>weights", "KV held", "decode ms/tok",
              "floor ms", "x floor", "x base dec")
    lines = []
    for r in to_records(result):
        if r["error"]:
            lines.append((str(r["length"]), str(r["method"]), "-", f"error: {r['error'][:80]}"))
            continue
        lines.append((
            str(r["length"]), str(r["method"]), str(r["budget"]), f"{r['prefill_seconds']:.3f}",
            _x(r["vs_baseline_prefill_seconds"]), human_bytes(r["prefill_peak_bytes"]), human_bytes(r["kv_bytes"]),
            f"{r['decode_ms_per_token']:.2f}", f"{r['floor_ms_per_token']:.2f}", f"{r['floor_ratio']:.2f}",
            _x(r["vs_baseline_decode_ms_per_token"]),
        ))
    widths = [max([len(h)] + [len(line[i]) for line in lines if len(line) == len(header)]) for i, h in enumerate(header)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))
    dev = result.get("device", {})
    title = (f"{dev.get('name', '?')} ({dev.get('device', '?')}), copy bandwidth {dev.get('copy_gbps', '?')} GB/s "
             f"(read+write; median {dev.get('copy_gbps_median', '?')})")
    body = [fmt(line) if len(line) == len(header) else "  ".join(line) for line in lines]
    return "\n".join([title, fmt(header), *body])


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
