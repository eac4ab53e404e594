"""What a report is built from: the store's cells with their samples, as plain records.

A cell's *status* for the report is ``done`` (all samples present), ``partial`` (some),
``pending``/``running`` (none yet) or ``failed``. Aggregates are recomputed from the samples, so a
partial cell shows what it has, marked as partial; a cell with no samples is *missing* and is
drawn as missing, never as zero.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kvlab.results.aggregate import aggregate
from kvlab.results.stats import Interval, mean_ci
from kvlab.results.store import ResultStore

LOWER_IS_BETTER = {"perplexity"}
Unit = tuple[int, int, int]  # (length, seed, sample_index): one sample of a (model, task, mode) group


@dataclass
class CellData:
    """One cell: its stored row (config, status), its sample rows and their aggregate (None if empty)."""

    row: dict[str, Any]
    samples: list[dict[str, Any]]
    agg: dict[str, Any] | None

    def __getitem__(self, key: str) -> Any:
        return self.row[key]

    @property
    def status(self) -> str:
        n = len({s["sample_index"] for s in self.samples})
        if self.row["status"] == "failed":
            return "failed"
        if n >= self.row["n_target"] and self.row["status"] == "done":
            return "done"
        return "partial" if n else ("pending" if self.row["status"] != "running" else "running")

    @property
    def model(self) -> str:
        return self.row.get("model_name") or self.row["model"]

    def unit_scores(self) -> dict[Unit, float]:
        """Score per sample (mean over its queries), keyed by (length, seed, sample_index)."""
        per: dict[Unit, list[float]] = defaultdict(list)
        for s in self.samples:
            per[(self.row["length"], self.row["seed"], s["sample_index"])].append(float(s["score"]))
        return {u: sum(v) / len(v) for u, v in per.items()}


@dataclass
class ReportData:
    """Everything the report shows, grouped as the report walks it."""

    path: str
    cells: list[CellData]
    runs: list[dict[str, Any]]
    bench: list[dict[str, Any]]
    metrics: dict[str, str] = field(default_factory=dict)  # task -> metric

    def groups(self) -> dict[tuple[str, str, str], list[CellData]]:
        """Cells by (model, task, mode), in a stable order."""
        out: dict[tuple[str, str, str], list[CellData]] = defaultdict(list)
        for c in self.cells:
            out[(c.model, c["task"], c["mode"])].append(c)
        return dict(sorted(out.items()))

    def tasks(self) -> list[tuple[str, str]]:
        return sorted({(c.model, c["task"]) for c in self.cells})

    def higher_is_better(self, task: str) -> bool:
        return self.metrics.get(task) not in LOWER_IS_BETTER


def load(store: ResultStore) -> ReportData:
    """Read the store into :class:`ReportData` (recomputing aggregates from the samples)."""
    by_cell: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in store.samples():
        by_cell[s["cell_key"]].append(s)
    cells = []
    metrics: dict[str, str] = {}
    rows = store.cells()
    # a cell that has not run yet has no resolved model name: borrow it from a cell of the same model that ran
    names = {r["model"]: r["model_name"] for r in rows if r.get("model_name")}
    for row in rows:
        row["model_name"] = row.get("model_name") or names.get(row["model"])
        samples = by_cell.get(row["key"], [])
        cells.append(CellData(row, samples, aggregate(samples) if samples else None))
        if row.get("metric"):
            metrics[row["task"]] = row["metric"]
    return ReportData(store.path, cells, store.runs(), store.bench(), metrics)


def pooled(cells: Iterable[CellData]) -> Interval:
    """Mean and interval over every sample of ``cells`` (e.g. one method@budget over all lengths)."""
    scores = [v for c in cells for v in c.unit_scores().values()]
    return mean_ci(scores)


def method_budget(cell: CellData) -> str:
    """``snapkv@25%`` or ``full``: how a (method, budget) pair is labelled everywhere."""
    return cell["method"] if cell["budget"] == "full" else f"{cell['method']}@{cell['budget']}"


def fmt_score(interval: Interval | None, scale: float = 100.0) -> str:
    """``87.5 [61.7, 97.8]``; ``-`` when there is no data."""
    if interval is None or interval.n == 0 or math.isnan(interval.mean):
        return "-"
    if interval.method == "single":
        return f"{scale * interval.mean:.1f}"
    return f"{scale * interval.mean:.1f} [{scale * interval.low:.1f}, {scale * interval.high:.1f}]"


def mean_of(cells: Iterable[CellData], column: str) -> float | None:
    values = [c.agg[column] for c in cells if c.agg and c.agg.get(column) is not None]
    return sum(values) / len(values) if values else None
