"""The report's plots (matplotlib, Agg backend): each function returns a Figure or None (nothing to draw).

Missing data is drawn as missing: a heatmap cell without samples is hatched grey and reads "n/a",
a budget without samples breaks its line. Colours are fixed per method across every plot; the
full cache is black.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from kvlab.errors import KvlabError

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure
except ImportError:  # pragma: no cover - depends on the install
    plt = None
    Figure = Any  # type: ignore[misc,assignment]

from kvlab.report.budgets import order_budgets
from kvlab.report.data import CellData, ReportData, mean_of, method_budget, pooled
from kvlab.report.tables import ordered

FULL_COLOR = "black"


def require_matplotlib() -> None:
    if plt is None:
        raise KvlabError("plots need matplotlib: pip install 'kvlab[report]' (or pip install matplotlib)")


def method_colors(data: ReportData) -> dict[str, Any]:
    methods = sorted({c["method"] for c in data.cells if c["method"] != "full"})
    cmap = plt.get_cmap("tab10")
    colors = {m: cmap(i % 10) for i, m in enumerate(methods)}
    colors["full"] = FULL_COLOR
    return colors


def _scale(data: ReportData, task: str) -> tuple[float, str]:
    if data.higher_is_better(task):
        return 100.0, f"{data.metrics.get(task, 'score')} (x100)"
    return 1.0, data.metrics.get(task, "score")


def depth_of(sample: dict[str, Any]) -> float | None:
    depth = (sample.get("metadata") or {}).get("depth")
    return None if depth is None else float(depth)


def heatmaps(data: ReportData, model: str, task: str, mode: str) -> Figure | None:
    """Needle depth x context length, one panel per method@budget (tasks whose samples record a depth)."""
    cells = [c for c in data.cells if c.model == model and c["task"] == task and c["mode"] == mode]
    depths = sorted({d for c in cells for s in c.samples if (d := depth_of(s)) is not None})
    if not depths:
        return None
    if len(depths) > 11:  # random depths (RULER): bin into 10 deciles
        bins = [10.0 * i for i in range(10)]
        binned = lambda d: min(9, int(d // 10)) * 10.0
        labels = [f"{b:.0f}-{b + 10:.0f}" for b in bins]
    else:
        bins, binned, labels = depths, (lambda d: d), [f"{d:g}" for d in depths]
    lengths = sorted({c["length"] for c in cells})
    panels = ordered(cells)
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.9 * cols + 1.2, 2.7 * rows + 0.7), squeeze=False,
                             layout="constrained")
    image = None
    for ax, (method, budget, group) in zip(axes.flat, panels):
        grid = depth_grid(group, bins, lengths, binned)
        ax.set_facecolor("#d9d9d9")
        image = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=100, aspect="auto", interpolation="nearest")
        for i in range(len(bins)):
            for j in range(len(lengths)):
                value = grid[i][j]
                if math.isnan(value):
                    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", color="#888888",
                                               lw=0))
                    ax.text(j, i, "n/a", ha="center", va="center", fontsize=7, color="#444444")
                else:
                    ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=7,
                            color="black" if 25 < value < 85 else "white")
        ax.set_title(method if budget == "full" else f"{method} @ {budget}", fontsize=9)
        ax.set_xticks(range(len(lengths)), [_short(n) for n in lengths], fontsize=7)
        ax.set_yticks(range(len(bins)), labels, fontsize=7)
        ax.set_xlabel("context length (tokens)", fontsize=7)
        ax.set_ylabel("needle depth (%)", fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="score (x100)")
    fig.suptitle(f"{task}: needle depth x length, {mode} ({model})", fontsize=11)
    return fig


def depth_grid(cells: list[CellData], bins: list[float], lengths: list[int], binned=lambda d: d) -> list[list[float]]:
    """Mean score x100 per (depth bin, length) over the queries of ``cells``; NaN where there is none."""
    grid = [[math.nan] * len(lengths) for _ in bins]
    for j, length in enumerate(lengths):
        per: dict[float, list[float]] = defaultdict(list)
        for c in cells:
            if c["length"] == length:
                for s in c.samples:
                    if (d := depth_of(s)) is not None:
                        per[binned(d)].append(float(s["score"]))
        for i, b in enumerate(bins):
            if per.get(b):
                grid[i][j] = 100.0 * sum(per[b]) / len(per[b])
    return grid


def score_vs_budget(data: ReportData, model: str, task: str) -> Figure | None:
    """Score per budget for each method with its 95% band; the full cache as the reference line."""
    cells = [c for c in data.cells if c.model == model and c["task"] == task and c.samples]
    if not any(c["method"] != "full" for c in cells):
        return None
    modes = sorted({c["mode"] for c in cells})
    scale, ylabel = _scale(data, task)
    colors = method_colors(data)
    measured = {c["budget"]: mean_of([x for x in cells if x["budget"] == c["budget"]], "mean_kv_bytes") or 0.0
                for c in cells}
    budgets = [b for b in order_budgets({c["budget"] for c in cells}, measured) if b != "full"]
    fig, axes = plt.subplots(1, len(modes), figsize=(5.2 * len(modes), 3.8), squeeze=False, sharey=True)
    for ax, mode in zip(axes[0], modes):
        here = [c for c in cells if c["mode"] == mode]
        full = pooled([c for c in here if c["method"] == "full"])
        if full.n:
            ax.axhline(scale * full.mean, color=FULL_COLOR, lw=1.5, ls="--", label="full cache")
            ax.axhspan(scale * full.low, scale * full.high, color=FULL_COLOR, alpha=0.08)
        for method in sorted({c["method"] for c in here} - {"full"}):
            stats = [pooled([c for c in here if c["method"] == method and c["budget"] == b]) for b in budgets]
            y = [scale * s.mean if s.n else math.nan for s in stats]
            lo = [scale * s.low if s.n else math.nan for s in stats]
            hi = [scale * s.high if s.n else math.nan for s in stats]
            ax.plot(range(len(budgets)), y, marker="o", color=colors[method], label=method)
            ax.fill_between(range(len(budgets)), lo, hi, color=colors[method], alpha=0.15)
        ax.set_xticks(range(len(budgets)), budgets)
        ax.set_xlabel("KV budget")
        ax.set_title(mode, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(fontsize=8, loc="best")
    fig.suptitle(f"{task}: score vs budget ({model}; lengths pooled; bands = 95% interval)", fontsize=11)
    fig.tight_layout()
    return fig


def pareto(data: ReportData, model: str, task: str) -> Figure | None:
    """Score vs KV bytes actually held, every method and budget; the dashed line is the Pareto front."""
    cells = [c for c in data.cells if c.model == model and c["task"] == task and c.samples and c.agg
             and c.agg.get("mean_kv_bytes") is not None]
    if not cells:
        return None
    modes = sorted({c["mode"] for c in cells})
    scale, ylabel = _scale(data, task)
    higher = data.higher_is_better(task)
    colors = method_colors(data)
    fig, axes = plt.subplots(1, len(modes), figsize=(5.2 * len(modes), 3.8), squeeze=False, sharey=True)
    for ax, mode in zip(axes[0], modes):
        points = []
        for method, budget, group in ordered([c for c in cells if c["mode"] == mode]):
            x = mean_of(group, "mean_kv_bytes") / 2**20
            points.append((x, scale * pooled(group).mean, method, budget))
        for method in dict.fromkeys(p[2] for p in points):
            mine = sorted(p for p in points if p[2] == method)
            family = next((c.row.get("family") for c in cells if c["method"] == method and c.row.get("family")), "")
            label = method + (f" ({family})" if family and method != "full" else "")
            marker = "*" if method == "full" else "o"
            ax.plot([p[0] for p in mine], [p[1] for p in mine], marker=marker, ms=12 if method == "full" else 6,
                    color=colors.get(method, "grey"), label=label, ls="-" if len(mine) > 1 else "none")
        front, best = [], -math.inf if higher else math.inf
        for x, y, *_ in sorted(points):
            if (y > best) if higher else (y < best):
                best = y
                front.append((x, y))
        if len(front) > 1:
            ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="grey", ls=":", lw=1,
                    label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel("KV bytes held after prefill (MiB, log)")
        ax.set_title(mode, fontsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle(f"{task}: score vs measured KV memory ({model}; lengths pooled)", fontsize=11)
    fig.tight_layout()
    return fig


def speed_memory(data: ReportData, model: str) -> Figure | None:
    """Prefill time per sample and peak KV memory against context length, one line per method@budget."""
    cells = [c for c in data.cells if c.model == model and c.samples and c.agg]
    modes = {c["mode"] for c in cells}
    mode = "query_aware" if "query_aware" in modes else (min(modes) if modes else None)
    cells = [c for c in cells if c["mode"] == mode]
    if not cells or len({c["length"] for c in cells}) < 1:
        return None
    colors = method_colors(data)
    styles = ["-", "--", ":", "-."]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10.4, 3.8))
    for method, budget, group in ordered(cells):
        lengths = sorted({c["length"] for c in group})
        style = styles[sorted({c["budget"] for c in cells if c["method"] == method}).index(budget) % len(styles)]
        kw = dict(marker="o", color=colors.get(method, "grey"), ls=style, label=method_budget(group[0]))
        a.plot(lengths, [mean_of([c for c in group if c["length"] == n], "mean_prefill_seconds") for n in lengths],
               **kw)
        peak = [mean_of([c for c in group if c["length"] == n], "mean_peak_kv_bytes") for n in lengths]
        b.plot(lengths, [None if p is None else p / 2**20 for p in peak], **kw)
    a.set_ylabel("prefill seconds per sample")
    b.set_ylabel("peak KV MiB")
    for ax in (a, b):
        ax.set_xlabel("context length (tokens)")
        ax.grid(alpha=0.3)
    b.legend(fontsize=7, loc="best")
    fig.suptitle(f"Speed and KV memory measured in the sweep ({model}, {mode})", fontsize=11)
    fig.tight_layout()
    return fig


BENCH_PANELS = (("prefill_seconds", "prefill seconds", 1.0), ("decode_ms_per_token", "decode ms per token", 1.0),
                ("prefill_peak_bytes", "peak memory in prefill (MiB)", 2**-20), ("kv_bytes", "KV held (MiB)", 2**-20))


def bench(data: ReportData) -> Figure | None:
    """``kvlab bench`` records: time and memory against prompt length, one line per method@budget."""
    records = [b["record"] for b in data.bench if not b["record"].get("error") and b["record"].get("length")]
    panels = [p for p in BENCH_PANELS if any(isinstance(r.get(p[0]), (int, float)) for r in records)]
    if not records or not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 0.8, 3.6), squeeze=False)
    lines = bench_lines(records)
    for ax, (field, label, scale) in zip(axes[0], panels):
        for name, rs in sorted(lines.items()):
            rs = sorted((r for r in rs if isinstance(r.get(field), (int, float))), key=lambda r: r["length"])
            if rs:
                ax.plot([r["length"] for r in rs], [r[field] * scale for r in rs], marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("prompt length (tokens)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle("kvlab bench: speed and memory per method", fontsize=11)
    fig.tight_layout()
    return fig


BENCH_LINE_APART = ("device", "dtype", "mode", "chunk_size")


def bench_lines(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Bench records grouped into the lines of a plot: model, method@budget, and whichever of
    :data:`BENCH_LINE_APART` differ among the records (two decode modes, devices or chunk sizes of one
    method are two lines, not one zigzag)."""
    apart = [k for k in BENCH_LINE_APART if len({str(r.get(k)) for r in records}) > 1]
    lines: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        kind = "" if r.get("kind") in (None, "kvlab") else f" [{r['kind']}]"
        budget = "" if r.get("budget") in (None, "full") else f"@{r['budget']}"
        extra = "".join(f", {k} {r.get(k)}" for k in apart)
        lines[f"{r.get('model', '')}: {r['method']}{budget}{kind}{extra}"].append(r)
    return lines


def _short(n: int) -> str:
    return f"{n / 1024:g}K" if n % 256 == 0 and n >= 1024 else str(n)


def cells_of(data: ReportData, **where: Any) -> list[CellData]:
    return [c for c in data.cells if all(c[k] == v for k, v in where.items())]
