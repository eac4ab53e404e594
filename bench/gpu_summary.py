"""Side-by-side table of one GPU session's results (kvlab bench rows + kvpress anchor records).

    python bench/gpu_summary.py bench/results/h200_bench_32k.json bench/results/h200_bench_128k.json \
        --kvpress bench/results/h200_kvpress.json

Prints a markdown table: prefill seconds, peak memory over the weights, KV held, decode ms/token and
its ratio to the bandwidth floor of the same run ((weight bytes read + KV bytes read) / measured copy
bandwidth), for plain transformers, kvlab and kvpress at each length.
"""

from __future__ import annotations

import argparse
import json

GIB = 2**30


def rows_from_bench(path: str) -> tuple[list[dict], float, int]:
    data = json.load(open(path, encoding="utf-8"))
    gbps = data["device"]["copy_gbps"]
    out, weight_read = [], 0
    for r in data["rows"]:
        if "error" in r:
            continue
        weight_read = r["weight_read_bytes"]
        out.append({"length": r["length"], "who": "transformers" if r["role"] == "transformers" else "kvlab",
                    "method": r["method"], "budget": r["budget"], "prefill_s": r["prefill_seconds"],
                    "peak_gib": r["prefill_peak_bytes"] / GIB, "kv_gib": r["kv_bytes"] / GIB,
                    "decode_ms": r["decode_ms_per_token"], "floor_ms": r["floor_ms_per_token"],
                    "decode_how": r["decode_mode"]})
    return out, gbps, weight_read


def rows_from_kvpress(path: str, gbps: float, weight_read: int) -> list[dict]:
    out = []
    for r in json.load(open(path, encoding="utf-8")):
        if "press" not in r or "decode_ms_per_tok" not in r:
            continue
        floor = (weight_read + r["kv_bytes"]) / (gbps * 1e9) * 1e3
        out.append({"length": r["L"], "who": "kvpress 0.5.5", "method": r["press"], "budget": "10%",
                    "prefill_s": r["prefill_compress_s"], "peak_gib": r["peak_over_weights_GiB"],
                    "kv_gib": r["kv_bytes"] / GIB, "decode_ms": r["decode_ms_per_tok_nocudnn"], "floor_ms": floor,
                    "decode_how": "eager loop, cuDNN off"})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bench", nargs="+", help="kvlab bench --json files")
    p.add_argument("--kvpress", help="the peers' gpu_anchor.py kvp.json")
    args = p.parse_args(argv)
    rows, gbps, weight_read = [], 0.0, 0
    for path in args.bench:
        got, gbps, weight_read = rows_from_bench(path)
        rows += got
    if args.kvpress:
        rows += rows_from_kvpress(args.kvpress, gbps, weight_read)
    base = {r["length"]: r for r in rows if r["who"] == "transformers"}
    print(f"copy bandwidth {gbps:.0f} GB/s (read + write); weights read per token {weight_read / 1e9:.2f} GB\n")
    print("| length | tool | method | budget | prefill s | x transformers | peak over weights GiB | KV held GiB "
          "| decode ms/token | floor ms | x floor | decode path |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    order = {"transformers": 0, "kvlab": 1, "kvpress 0.5.5": 2}
    near = lambda n: min(base, key=lambda b: abs(b - n)) if base else None  # noqa: E731 (kvpress ran 131072)
    for r in sorted(rows, key=lambda r: (r["length"] > 40000, order[r["who"]])):
        ref = base.get(near(r["length"])) if base else None
        ratio = f"{r['prefill_s'] / ref['prefill_s']:.2f}" if ref and ref is not r else "-"
        print(f"| {r['length']} | {r['who']} | {r['method']} | {r['budget']} | {r['prefill_s']:.2f} | {ratio} "
              f"| {r['peak_gib']:.2f} | {r['kv_gib']:.2f} | {r['decode_ms']:.2f} | {r['floor_ms']:.2f} "
              f"| {r['decode_ms'] / r['floor_ms']:.2f} | {r['decode_how']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
