"""Reports from a result store: ``build_report("results.db", "report/")``.

Writes ``index.html`` (one self-contained page), ``report.md`` (the same tables) and ``plots/*.png``:
the effective budget of every method, per task the score vs budget with 95% bands and the
full-cache line, score vs measured KV bytes (Pareto), needle depth x length heatmaps, per-task
tables, speed and KV memory, failed cells and the provenance of every run. The report reads only
the store (:mod:`kvlab.results`); it never loads a model.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from kvlab.report.data import ReportData, load
from kvlab.report.render import Block, write
from kvlab.report.tables import (
    bench_table,
    effective_table,
    failures_table,
    provenance_table,
    speed_table,
    status_table,
    task_table,
)
from kvlab.results.store import ResultStore


@dataclass(frozen=True)
class ReportPaths:
    index: str
    markdown: str
    plots: list[str]


def build_report(db: str, out_dir: str, *, title: str | None = None, plots: bool = True) -> ReportPaths:
    """Render the report of the store ``db`` into ``out_dir`` (created if needed)."""
    with ResultStore(db, create=False) as store:
        data = load(store)
    blocks, pngs = report_blocks(data, title or f"kvlab report: {os.path.basename(db)}", plots=plots)
    os.makedirs(out_dir, exist_ok=True)
    index, md = write(out_dir, blocks, pngs, blocks[0][1])
    return ReportPaths(index, md, [os.path.join(out_dir, "plots", n) for n in pngs])


def report_blocks(data: ReportData, title: str, *, plots: bool = True) -> tuple[list[Block], dict[str, bytes]]:
    """The report as blocks plus the PNG bytes they refer to (see :mod:`kvlab.report.render`)."""
    if plots:
        from kvlab.report import plots as P

        P.require_matplotlib()
    pngs: dict[str, bytes] = {}

    def figure(fig, name: str, caption: str) -> list[Block]:
        if fig is None:
            return []
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        P.plt.close(fig)
        name = _slug(name) + ".png"
        pngs[name] = buf.getvalue()
        return [("figure", name, caption)]

    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    blocks: list[Block] = [("h1", title), ("p", f"Store {data.path}, rendered {stamp}."),
                           ("table", status_table(data))]
    if not data.cells and not data.bench:
        blocks.append(("p", "The store has no cells yet: run `kvlab run CONFIG.yaml --db ...` first."))
    if any(c["method"] != "full" for c in data.cells):
        blocks += [("h2", "Effective budget"), ("table", effective_table(data))]
    for model, task in data.tasks():
        blocks.append(("h2", f"{task} ({model})"))
        if plots:
            blocks += figure(P.score_vs_budget(data, model, task), f"score-{model}-{task}",
                             f"{task}: score vs KV budget per method, 95% bands; dashed black = full cache "
                             "(grey band = its interval). A gap = no samples at that budget.")
            blocks += figure(P.pareto(data, model, task), f"pareto-{model}-{task}",
                             f"{task}: score vs KV bytes held after prefill (measured); each line is one method "
                             "over its budgets, the star the full cache, dotted = Pareto front.")
        modes = sorted({c["mode"] for c in data.cells if c.model == model and c["task"] == task})
        for mode in modes:
            if plots:
                blocks += figure(P.heatmaps(data, model, task, mode), f"heatmap-{model}-{task}-{mode}",
                                 f"{task}, {mode}: score (x100) per needle depth and context length, one panel "
                                 "per method and budget; hatched n/a = no samples there.")
            blocks.append(("table", task_table(data, model, task, mode)))
    speed = speed_table(data)
    bench = bench_table(data)
    if speed.rows or bench:
        blocks.append(("h2", "Speed and memory"))
        if plots:
            for model in sorted({c.model for c in data.cells}):
                blocks += figure(P.speed_memory(data, model), f"speed-{model}",
                                 f"{model}: prefill seconds per sample and peak KV MiB against context length, "
                                 "measured during the sweep.")
        if speed.rows:
            blocks.append(("table", speed))
        if bench:
            if plots:
                blocks += figure(P.bench(data), "bench", "kvlab bench records: prefill time, decode time per token "
                                 "and memory against prompt length (log scale), one line per method and budget.")
            blocks.append(("table", bench))
    failures = failures_table(data)
    if failures:
        blocks += [("h2", "Failed cells"), ("table", failures)]
    blocks += [("h2", "Provenance"), ("table", provenance_table(data)),
               ("h2", "How to read this report"), ("p", READING)]
    return blocks, pngs


READING = (
    "A cell is one model x method x budget x task x length x mode x seed (x chunk size, chat policy). A sample's "
    "score is the mean over its questions; a cell's score is the mean over its samples with a 95% interval "
    "(Wilson score interval when every score is 0 or 1, Student t otherwise). 'all' columns and the plots pool "
    "lengths and seeds. query_aware = the question is prefilled with the context (compression sees it); "
    "query_agnostic = the context is compressed before any question is seen and each question is answered "
    "from a copy of that cache. KV bytes are measured from the cache tensors. Missing cells are shown as "
    "missing (n/a, '-', a gap), never as 0."
)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:120]
