"""``kvlab demo``: a small real sweep on the embedded model, then the report.

Needle-in-a-haystack grid (depths 0/50/100 % x lengths 1K/2K/4K), the full cache plus three methods of
different families (SnapKV: attention score, StreamingLLM: static pattern, K-norm: key statistics)
at two budgets, query-aware and query-agnostic; about ten minutes on 2 CPU cores. The settings are
those of ``configs/demo.yaml``. Running it again resumes (finished samples are kept).
"""

from __future__ import annotations

import argparse
import os
import shutil

DEMO = {
    "name": "demo",
    "model": "default",
    "methods": ["full", "snapkv", "streaming_llm", "knorm"],
    "budgets": ["25%", "50%"],
    "tasks": [{"name": "niah/single", "params": {"depths": "0,50,100", "max_new_tokens": 12}}],
    "lengths": ["1k", "2k", "4k"],
    "modes": ["query_aware", "query_agnostic"],
    "seeds": [42],
    "n": 3,
    "chunk_size": 4096,
    "chat": "template",
}


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo", help="run a small needle sweep on the embedded model and write its report",
        description="Run the demo sweep of configs/demo.yaml on the embedded SmolLM2-135M-Instruct: a needle grid "
        "(depths 0/50/100%, lengths 1K/2K/4K), full cache vs SnapKV, StreamingLLM and K-norm at 25% and 50% of "
        "the prompt, query-aware and query-agnostic (126 samples, about ten minutes on 2 CPU cores). Writes "
        "DIR/results.db and DIR/report/index.html and prints the report's path. Interrupted? Run it again: "
        "it resumes.",
    )
    p.add_argument("--out", default="kvlab-demo", help="output directory (default: %(default)s)")
    p.add_argument("--fresh", action="store_true", help="delete DIR/results.db first instead of resuming")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kvlab.config import resolve
    from kvlab.report import build_report
    from kvlab.report.data import load
    from kvlab.report.tables import effective_table
    from kvlab.results.store import ResultStore
    from kvlab.runner import run_sweep

    os.makedirs(args.out, exist_ok=True)
    db = os.path.join(args.out, "results.db")
    if args.fresh:
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(db + suffix):
                os.remove(db + suffix)
    config = resolve(DEMO, {"db": db})
    print(f"kvlab demo: needle grid on the embedded model -> {db} (progress on stderr; rerun to resume)")
    with ResultStore(db) as store:
        summary = run_sweep(config, store, command="kvlab demo")
        table = effective_table(load(store))
    print(f"{summary.cells} cells ({summary.already_done} already done), ran {summary.ran}, "
          f"failed {len(summary.failed)} in {summary.seconds:.0f} s; {summary.prefills_recorded} contexts run "
          f"through the model, {summary.prefills_replayed} compressions replayed from them")
    width = shutil.get_terminal_size((100, 20)).columns
    print("effective budget (smallest budget keeping >= 95% of the full-cache score, 95% interval):")
    for row in table.rows:
        print(f"  {row[2]:15s} {row[3]:14s} {row[7]}"[:width])
    paths = build_report(db, os.path.join(args.out, "report"), title="kvlab demo: needle grid on SmolLM2-135M")
    print(f"report: {os.path.abspath(paths.index)}")
    return 1 if summary.failed else 0
