"""``kvlab export``: a result store to CSV or Parquet files (samples with their cell config, cells, runs, bench)."""

from __future__ import annotations

import argparse
import os


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export", help="export a results.db to CSV or Parquet",
        description="Write one file per table of a result store: samples (every query row with its cell's model, "
        "method, budget, task, length, mode and seed), cells (config, status, aggregate score and interval), runs "
        "(provenance) and bench (speed/memory records). Empty tables are skipped.",
        epilog="example: kvlab export results.db --format parquet -o exports/   "
        "# exports/results-samples.parquet ...",
    )
    p.add_argument("db", help="a results.db written by `kvlab run`")
    p.add_argument("--format", choices=("csv", "parquet"), default="csv", help="default: %(default)s")
    p.add_argument("-o", "--output", help="output directory (default: next to the database)")
    p.add_argument("--table", choices=("all", "samples", "cells", "runs", "bench"), default="all",
                   help="which table(s) to export (default: %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kvlab.results.export import TABLES, export
    from kvlab.results.store import ResultStore

    out = args.output or os.path.dirname(os.path.abspath(args.db))
    prefix = os.path.splitext(os.path.basename(args.db))[0]
    tables = TABLES if args.table == "all" else (args.table,)
    with ResultStore(args.db, create=False) as store:
        paths = export(store, args.format, out, tables, prefix)
    if not paths:
        print(f"{args.db} has no rows to export")
    for path in paths:
        print(path)
    return 0
