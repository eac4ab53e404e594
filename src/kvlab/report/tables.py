"""The report's tables as plain data (title, header, rows of strings), rendered to HTML and markdown.

Scores are shown x100 (RULER's convention) with their 95% interval in brackets; perplexity is shown
as is. A cell without samples reads ``missing`` (or ``failed`` / ``pending``), never 0; a cell with
only some of its samples is marked ``(k/n)``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass

from kvlab.report.budgets import order_budgets
from kvlab.report.data import CellData, ReportData, fmt_score, mean_of, method_budget, pooled
from kvlab.report.effective import THRESHOLD, effective_budget


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""


def mib(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**20:.1f}"


def ordered(cells: list[CellData]) -> list[tuple[str, str, list[CellData]]]:
    """(method, budget, cells) with the full cache first, then methods by name, budgets smallest first."""
    by: dict[tuple[str, str], list[CellData]] = defaultdict(list)
    for c in cells:
        by[(c["method"], c["budget"])].append(c)
    measured = {b: mean_of([c for (_, bb), cs in by.items() if bb == b for c in cs], "mean_kv_bytes") or 0.0
                for _, b in by}
    budgets = order_budgets([b for _, b in by], measured)
    methods = sorted({m for m, _ in by}, key=lambda m: (m != "full", m))
    return [(m, b, by[(m, b)]) for m in methods for b in budgets if (m, b) in by]


def cell_text(cells: list[CellData], scale: float) -> str:
    """A table entry for the cells of one (method, budget[, length]): score [CI], or why there is none."""
    if not cells:
        return "missing"
    with_data = [c for c in cells if c.samples]
    if not with_data:
        statuses = {c.status for c in cells}
        return "failed" if "failed" in statuses else "missing"
    text = fmt_score(pooled(with_data), scale)
    have = sum(len({s["sample_index"] for s in c.samples}) for c in cells)
    want = sum(c["n_target"] for c in cells)
    return text if have >= want else f"{text} ({have}/{want})"


def task_table(data: ReportData, model: str, task: str, mode: str) -> Table:
    """Rows method@budget, columns one per length and ``all`` (pooled over lengths and seeds)."""
    cells = [c for c in data.cells if c.model == model and c["task"] == task and c["mode"] == mode]
    lengths = sorted({c["length"] for c in cells})
    higher = data.higher_is_better(task)
    scale = 100.0 if higher else 1.0
    metric = data.metrics.get(task, "score")
    rows = []
    for method, budget, group in ordered(cells):
        row = [method, budget]
        row += [cell_text([c for c in group if c["length"] == n], scale) for n in lengths]
        row.append(cell_text(group, scale))
        rows.append(row)
    unit = "x100, " if higher else ""
    note = (f"{metric} ({unit}{'higher' if higher else 'lower'} is better), mean over samples with a 95% "
            "interval (Wilson for 0/1 scores, Student t otherwise); (k/n) = only k of n samples so far.")
    return Table(f"{task} - {mode} - {model}", ["method", "budget", *map(str, lengths), "all"], rows, note)


def effective_table(data: ReportData) -> Table:
    """Per (model, task, mode, method): score kept at each budget and the effective budget with its interval."""
    rows = []
    for (model, task, mode), cells in data.groups().items():
        higher = data.higher_is_better(task)
        full_cells = [c for c in cells if c["method"] == "full"]
        full = {u: s for c in full_cells for u, s in c.unit_scores().items()}
        by_method: dict[str, list[CellData]] = defaultdict(list)
        for c in cells:
            if c["method"] != "full":
                by_method[c["method"]].append(c)
        for method, mcells in sorted(by_method.items()):
            measured = {c["budget"]: mean_of([x for x in mcells if x["budget"] == c["budget"]], "mean_kv_bytes")
                        or 0.0 for c in mcells}
            budgets = order_budgets({c["budget"] for c in mcells}, measured)
            scores = {b: {u: s for c in mcells if c["budget"] == b for u, s in c.unit_scores().items()}
                      for b in budgets}
            if not full:
                eff = None
            else:
                eff = effective_budget(full, budgets, scores, higher_is_better=higher)
            kept = ", ".join(f"{b}: {100 * eff.retained[b]:.0f}%" for b in budgets
                             if eff and b in eff.retained and eff.retained[b] == eff.retained[b]) if eff else ""
            rows.append([model, task, mode, method, mcells[0].row.get("family") or "",
                         str(eff.n) if eff else "0", kept or "-",
                         eff.label() if eff else "n/a (no full-cache run)"])
    note = (f"Effective budget = the smallest budget that, with every larger budget tried, keeps >= "
            f"{100 * THRESHOLD:.0f}% of the full-cache score on the same samples (lengths and seeds pooled); "
            "[interval] = 2.5-97.5 percentile over 2000 paired bootstrap resamples of the samples; "
            "'> B' = not reached at the largest budget B tried.")
    return Table("Effective budget per method", ["model", "task", "mode", "method", "family", "samples",
                                      "score kept (vs full)", "effective budget [95% interval]"], rows, note)


def speed_table(data: ReportData) -> Table:
    """Time and KV memory per (model, length, mode, method@budget), measured by the sweep itself."""
    by: dict[tuple, list[CellData]] = defaultdict(list)
    for c in data.cells:
        if c.samples and c.agg and c.agg.get("mean_kv_bytes") is not None:
            by[(c.model, c["length"], c["mode"])].append(c)
    rows = []
    for (model, length, mode), cells in sorted(by.items()):
        for method, budget, group in ordered(cells):
            held, full = mean_of(group, "mean_kv_bytes"), mean_of(group, "mean_full_kv_bytes")
            prefill, decode = mean_of(group, "mean_prefill_seconds"), mean_of(group, "decode_ms_per_token")
            rows.append([model, str(length), mode, method_budget(group[0]),
                         "-" if prefill is None else f"{prefill:.2f}", "-" if decode is None else f"{decode:.1f}",
                         mib(held), mib(mean_of(group, "mean_peak_kv_bytes")),
                         f"{100 * held / full:.1f}%" if held is not None and full else "-"])
    note = ("prefill = seconds per sample (context + question; a query-agnostic sample prefills its context once); "
            "decode = ms per generated token; KV held = bytes of keys+values after prefill; peak = most held at any "
            "moment; all means over the cell's samples, on the device named in the provenance table.")
    return Table("Speed and KV memory (from the sweep)", ["model", "length", "mode", "method", "prefill s",
                                                           "decode ms/tok", "KV held MiB", "peak KV MiB",
                                                           "% of full"], rows, note)


BENCH_PREFERRED = ("kind", "model", "device", "dtype", "method", "budget", "length", "chunk_size", "mode",
                   "prefill_seconds", "prefill_tokens_per_s", "decode_ms_per_token", "kv_bytes", "kv_peak_bytes",
                   "prefill_peak_bytes", "decode_peak_bytes", "full_kv_bytes", "error")


def bench_table(data: ReportData) -> Table | None:
    """The ``kvlab bench`` records in the store (scalar fields; preferred ones first)."""
    if not data.bench:
        return None
    records = [b["record"] for b in data.bench]
    scalar = [k for k in dict.fromkeys(k for r in records for k in r)
              if all(isinstance(r.get(k), (int, float, str, type(None))) for r in records)]
    columns = [k for k in BENCH_PREFERRED if k in scalar] + [k for k in scalar if k not in BENCH_PREFERRED]
    columns = [k for k in columns if any(r.get(k) is not None for r in records)][:16]
    rows = [[_fmt(r.get(k), k) for k in columns] for r in records]
    return Table("Speed and memory (kvlab bench)", columns, rows,
                 "one row per stored bench record (the latest measurement of each configuration); bytes in MiB")


def _fmt(value: object, column: str = "") -> str:
    if value is None:
        return "-"
    if column.endswith("bytes") and isinstance(value, (int, float)):
        return mib(value)
    if isinstance(value, dict):
        return str(value.get("name") or value.get("device") or json.dumps(value, sort_keys=True))
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def status_table(data: ReportData) -> Table:
    counts: dict[str, int] = defaultdict(int)
    for c in data.cells:
        counts[c.status] += 1
    samples = sum(len(c.samples) for c in data.cells)
    order = ("done", "partial", "running", "pending", "failed")
    return Table("Store", ["cells", *order, "query rows", "bench records"],
                 [[str(len(data.cells)), *(str(counts.get(s, 0)) for s in order), str(samples), str(len(data.bench))]])


def failures_table(data: ReportData) -> Table | None:
    failed = [c for c in data.cells if c.status == "failed"]
    if not failed:
        return None
    rows = [[c.model, c["task"], str(c["length"]), c["mode"], method_budget(c), str(c.row.get("error") or "")[:300]]
            for c in failed]
    return Table("Failed cells", ["model", "task", "length", "mode", "method", "error"], rows,
                 "rerun the same command to retry them")


PROVENANCE_FIELDS = ("kvlab_version", "git_sha", "torch", "transformers", "device", "dtype", "attention", "seed",
                     "chat_template_policy", "model", "model_source", "sweep")


def provenance_table(data: ReportData) -> Table:
    rows = []
    for run in data.runs:
        p = run["provenance"]
        rows.append([str(run["id"]), run["started_at"], run.get("finished_at") or "(unfinished)",
                     *(_fmt(p.get(k)) if not isinstance(p.get(k), list) else ",".join(map(str, p[k]))
                       for k in PROVENANCE_FIELDS)])
    # one column per run reads better than a row per run: the fields are long
    header = ["", *(f"run {r[0]}" for r in rows)]
    names = ["started (UTC)", "finished", *PROVENANCE_FIELDS]
    transposed = [[name, *(r[i + 1] for r in rows)] for i, name in enumerate(names)]
    return Table("Provenance (one column per run)", header, transposed,
                 "a run = one invocation of kvlab run (or kvlab bench); samples record the run that wrote them")
