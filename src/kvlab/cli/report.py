"""``kvlab report``: render a result store to report/index.html, report.md and PNG plots."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser(
        "report", help="write index.html + report.md + plots from a results.db",
        description="Render a kvlab result store: the effective budget of every method (smallest budget keeping "
        ">= 95% of the full-cache score, with a bootstrap interval), score vs budget per task with 95% bands and "
        "the full cache as reference, score vs measured KV bytes (Pareto), needle depth x length heatmaps, "
        "per-task tables, speed and memory, failed cells and provenance. index.html is one self-contained page "
        "(plots embedded), report.md has the same tables.",
        epilog="example: kvlab report results.db -o report/ && xdg-open report/index.html",
    )
    p.add_argument("db", help="a results.db written by `kvlab run` (or `kvlab bench`)")
    p.add_argument("-o", "--output", default="report", help="output directory (default: %(default)s)")
    p.add_argument("--title", help="page title (default: 'kvlab report: DB name')")
    p.add_argument("--no-plots", action="store_true", help="tables only (no matplotlib needed)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kvlab.report import build_report

    paths = build_report(args.db, args.output, title=args.title, plots=not args.no_plots)
    print(f"wrote {paths.markdown} and {len(paths.plots)} plots")
    print(f"report: {paths.index}")
    return 0
