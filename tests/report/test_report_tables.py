"""The report of a hand-built store: its tables equal values computed by hand; missing stays missing."""

from __future__ import annotations

import math
import pathlib
import re

import pytest
from report_store import build

from kvlab.report import build_report, report_blocks
from kvlab.report.data import load
from kvlab.report.plots import depth_grid
from kvlab.report.tables import effective_table, status_table, task_table
from kvlab.results.store import ResultStore

Z = 1.959963984540054
T975 = {2: 4.302652729911275, 5: 2.570581835636314}  # Student t quantiles (tables)


def wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    p = k / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z / (1 + Z * Z / n) * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def t_by_hand(xs: list[float]) -> tuple[float, float, float]:
    n, m = len(xs), sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    half = T975[n - 1] * sd / math.sqrt(n)
    return m, max(0.0, m - half), min(1.0, m + half)


def shown(mean: float, low: float, high: float) -> str:
    return f"{100 * mean:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = build(tmp_path_factory.mktemp("store") / "results.db")
    with ResultStore(path, create=False) as store:
        return load(store)


def test_task_table_equals_hand_computed_values(data):
    table = task_table(data, "TinyModel", "niah/single", "query_aware")
    assert table.header == ["method", "budget", "1024", "2048", "all"]
    rows = {(r[0], r[1]): r[2:] for r in table.rows}
    assert list(rows) == [("full", "full"), ("snapkv", "25%"), ("snapkv", "50%"), ("streaming_llm", "25%"),
                          ("streaming_llm", "50%")]  # full first, budgets smallest first
    assert rows[("full", "full")] == [shown(1, *wilson_by_hand(3, 3)), shown(2 / 3, *wilson_by_hand(2, 3)),
                                      shown(5 / 6, *wilson_by_hand(5, 6))]
    assert rows[("full", "full")][0] == "100.0 [43.9, 100.0]"  # 3/(3 + z^2) = 0.4385
    assert rows[("snapkv", "25%")] == [shown(*t_by_hand([0.6, 0.8, 0.7])), shown(0, *wilson_by_hand(0, 3)),
                                       shown(*t_by_hand([0.6, 0.8, 0.7, 0, 0, 0]))]
    assert rows[("snapkv", "25%")][0] == "70.0 [45.2, 94.8]"
    assert rows[("snapkv", "50%")] == [shown(1, *wilson_by_hand(3, 3))] * 2 + [shown(1, *wilson_by_hand(6, 6))]
    # failed, partial (1 of 3 samples) and pending/absent cells: never a zero
    assert rows[("streaming_llm", "25%")] == ["failed", shown(1, *wilson_by_hand(1, 1)) + " (1/3)",
                                              shown(1, *wilson_by_hand(1, 1)) + " (1/6)"]
    assert rows[("streaming_llm", "50%")] == ["missing", "missing", "missing"]


def test_effective_budget_table(data):
    rows = {r[3]: r for r in effective_table(data).rows}
    snap = rows["snapkv"]
    # full = 5/6; snapkv@25% = 2.1/6 -> 42%; snapkv@50% = 6/6 -> 120%: the effective budget is 50%
    assert snap[:6] == ["TinyModel", "niah/single", "query_aware", "snapkv", "eviction (attention score)", "6"]
    assert snap[6] == "25%: 42%, 50%: 120%"
    assert snap[7].startswith("50%")
    assert rows["streaming_llm"][7].startswith("n/a")  # its budgets share no sample


def test_status_counts(data):
    assert status_table(data).rows == [["9", "6", "1", "0", "1", "1", "19", "0"]]


def test_heatmap_grid_leaves_missing_cells_empty(data):
    snap25 = [c for c in data.cells if c["method"] == "snapkv" and c["budget"] == "25%"]
    grid = depth_grid(snap25, [0.0, 50.0, 100.0, 75.0], [1024, 2048, 4096])
    assert grid[0][:2] == [pytest.approx(60.0), 0.0] and grid[1][:2] == [pytest.approx(80.0), 0.0]
    assert grid[2][:2] == [pytest.approx(70.0), 0.0]
    assert all(math.isnan(v) for v in grid[3]) and all(math.isnan(row[2]) for row in grid)


def test_rendered_report_has_the_same_tables(data, tmp_path):
    pytest.importorskip("matplotlib")
    paths = build_report(data.path, str(tmp_path / "rep"))
    md = pathlib.Path(paths.markdown).read_text(encoding="utf-8")
    html = pathlib.Path(paths.index).read_text(encoding="utf-8")
    for method, budget, *values in task_table(data, "TinyModel", "niah/single", "query_aware").rows:
        line = f"| {method} | {budget} | " + " | ".join(values) + " |"
        assert line in md
        assert re.search(rf'<td( class="\w+")?>{re.escape(values[-1])}</td>', html)
    assert "| TinyModel | niah/single | query_aware | snapkv |" in md
    # every plot is a file and is embedded in the page; nothing external is referenced
    names = [p.rsplit("/", 1)[1] for p in paths.plots]
    assert any(n.startswith("heatmap-") for n in names) and any(n.startswith("pareto-") for n in names)
    assert any(n.startswith("score-") for n in names) and any(n.startswith("speed-") for n in names)
    assert html.count('<img src="data:image/png;base64,') == len(names)
    assert not re.search(r'(src|href)="(https?:)?//', html)
    for name in names:
        assert f"](plots/{name})" in md
        assert (tmp_path / "rep" / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_of_an_empty_store_and_without_plots(tmp_path):
    path = tmp_path / "e.db"
    ResultStore(path).close()
    with ResultStore(path, create=False) as store:
        blocks, pngs = report_blocks(load(store), "t", plots=False)
    assert not pngs and any(b[0] == "p" and "no cells yet" in b[1] for b in blocks)


def test_bench_records_appear(tmp_path):
    pytest.importorskip("matplotlib")
    path = build(tmp_path / "b.db")
    with ResultStore(path) as store:
        store.add_bench([{"kind": "kvlab", "model": "m", "method": "snapkv", "budget": "25%", "length": n,
                          "device": "cpu", "prefill_seconds": n / 1000, "decode_ms_per_token": 50.0,
                          "prefill_peak_bytes": 2**20 * n // 1024, "kv_bytes": 2**18 * n // 1024}
                         for n in (1024, 4096)])
    paths = build_report(path, str(tmp_path / "rep"))
    md = pathlib.Path(paths.markdown).read_text(encoding="utf-8")
    assert "**Speed and memory (kvlab bench)**" in md and "| kvlab | m | cpu | snapkv | 25% | 4096 |" in md
    assert any(p.endswith("bench.png") for p in paths.plots)


def test_bench_plot_lines_keep_configurations_apart():
    """Records of one method that differ in decode mode are two lines (labelled by the mode); fields that
    are the same everywhere stay out of the labels."""
    pytest.importorskip("matplotlib")
    from kvlab.report.plots import bench_lines

    records = [{"kind": "kvlab", "model": "m", "method": "snapkv", "budget": "10%", "length": n, "device": "cuda",
                "mode": mode, "chunk_size": 4096} for n in (1024, 4096) for mode in ("graph", "graph+flex")]
    lines = bench_lines(records)
    assert sorted(lines) == ["m: snapkv@10%, mode graph", "m: snapkv@10%, mode graph+flex"]
    assert all([r["length"] for r in rs] == [1024, 4096] for rs in lines.values())
    assert list(bench_lines(records[::2])) == ["m: snapkv@10%"]
