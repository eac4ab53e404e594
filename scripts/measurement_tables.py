"""Markdown tables from the JSON files of ``scripts/measure_benchmarks.py``.

    python scripts/measurement_tables.py bench/results/ruler_4k_cpu/*.json bench/results/needle_grid_cpu.json

Cells from several files are gathered (a RULER run split over processes writes one file per part),
and a cell found in several files is merged query by query (see :func:`load_cells`). RULER cells
become one row per task; needle-grid cells one row per length with a column per method and mode
(score in percent, with the depths it missed) and the cell's wall time. Score, per-depth scores
and times are computed from the files' per-query rows, so a merged cell is scored as one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure_benchmarks import key  # noqa: E402  (a cell's identity, as the measuring script resumes it)


def load_cells(paths: list[str]) -> list[dict]:
    """Cells of all files, merged query by query where several files hold the same cell (a run that
    continued an earlier one with ``--first-sample``): later files win for the same (sample, query);
    the score is recomputed as RULER's mean per-query score x 100 and the wall time is the sum of
    the parts (``parts`` says how many samples each file gave and what they cost)."""
    merged: dict[str, dict] = {}
    for path in paths:
        for cell in json.loads(Path(path).read_text())["cells"]:
            into = merged.setdefault(key(cell["cell"]), {"cell": cell["cell"], "queries": {}, "parts": []})
            part = {"file": path, "samples": cell["summary"]["samples"], "seconds": cell["seconds"],
                    "first_sample": cell.get("first_sample", 0)}
            into["parts"].append(part)
            into["queries"].update({(q["sample"], q["query"]): (part, q) for q in cell["queries"]})
    cells = []
    for into in merged.values():
        queries = [q for _, q in into["queries"].values()]
        parts = []
        for part in into["parts"]:  # a part counts for the share of its samples that were kept
            kept = len({q["sample"] for p, q in into["queries"].values() if p is part})
            if kept:
                parts.append({**part, "samples": kept, "seconds": part["seconds"] * kept / part["samples"]})
        depths: dict[float, list[float]] = {}
        for q in queries:
            if q.get("depth") is not None:
                depths.setdefault(q["depth"], []).append(q["score"])
        cells.append({
            "cell": into["cell"], "parts": parts, "seconds": sum(p["seconds"] for p in parts),
            "by_depth": {d: 100.0 * sum(v) / len(v) for d, v in sorted(depths.items())} or None,
            "summary": {"score": round(100.0 * sum(q["score"] for q in queries) / len(queries), 2),
                        "samples": len({q["sample"] for q in queries}), "queries": len(queries),
                        "mean_prompt_tokens": sum(q["prompt_tokens"] for q in queries) / len(queries)},
        })
    return cells


def ruler_table(cells: list[dict]) -> str:
    rows = ["| task | score | samples | mean prompt tokens | wall s |", "|---|---|---|---|---|"]
    notes = []
    total = 0.0
    for cell in sorted(cells, key=lambda c: c["cell"]["task"]):
        s = cell["summary"]
        total += cell["seconds"]
        rows.append(f"| {cell['cell']['task'].split('/', 1)[1]} | {s['score']:.2f} | {s['samples']} | "
                    f"{s['mean_prompt_tokens']:.0f} | {cell['seconds']:.0f}{'*' if len(cell['parts']) > 1 else ''} |")
        if len(cell["parts"]) > 1:
            notes.append(f"{cell['cell']['task']}: " + " + ".join(
                f"{p['samples']} samples from {p['first_sample']} in {Path(p['file']).name} ({p['seconds']:.0f} s)"
                for p in cell["parts"]))
    mean = sum(c["summary"]["score"] for c in cells) / len(cells)
    rows.append(f"| **mean of {len(cells)} tasks** | **{mean:.2f}** | | | {total:.0f} |")
    if notes:
        rows += ["", "\\* merged from two runs: " + "; ".join(notes)]
    return "\n".join(rows)


def missed(cell: dict) -> str:
    by_depth = cell.get("by_depth") or {}
    lost = [f"{float(d):g}" for d, score in by_depth.items() if score < 100.0]
    return f" (misses depth {', '.join(lost)})" if lost and len(lost) < len(by_depth) else ""


def grid_table(cells: list[dict]) -> str:
    columns = sorted({(c["cell"]["method"], c["cell"]["budget"], c["cell"]["mode"]) for c in cells},
                     key=lambda k: (k[2] != "query_aware", k[0] != "full", k[0], k[1] or ""))
    head = [f"{m}{' ' + b if b else ''}, {mode.replace('query_', '')}" for m, b, mode in columns]
    rows = ["| length | " + " | ".join(head) + " | wall s (same order) |", "|---|" + "---|" * (len(head) + 1)]
    by_key = {(c["cell"]["length"], c["cell"]["method"], c["cell"]["budget"], c["cell"]["mode"]): c for c in cells}
    for length in sorted({c["cell"]["length"] for c in cells}):
        scores, times = [], []
        for m, b, mode in columns:
            cell = by_key.get((length, m, b, mode))
            scores.append("missing" if cell is None else f"{cell['summary']['score']:.0f}{missed(cell)}")
            times.append("-" if cell is None else f"{cell['seconds']:.0f}")
        n = max((by_key[k]["summary"]["samples"] for k in by_key if k[0] == length), default=0)
        rows.append(f"| {length} (n={n}) | " + " | ".join(scores) + " | " + " / ".join(times) + " |")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", help="JSON files written by scripts/measure_benchmarks.py")
    args = p.parse_args()
    cells = load_cells(args.files)
    ruler = [c for c in cells if c["cell"]["part"] == "ruler"]
    grid = [c for c in cells if c["cell"]["part"] == "grid"]
    if ruler:
        print(ruler_table(ruler) + "\n")
    if grid:
        print(grid_table(grid) + "\n")
    if not ruler and not grid:
        print("no RULER or needle-grid cells in these files", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
