"""Export a result store to CSV or Parquet, one file per table.

The ``samples`` export is self-describing: every query row carries its cell's configuration
(model, method, budget, task, length, mode, seed ...), so it loads straight into pandas or a
spreadsheet. JSON columns (answers, metadata, task parameters, provenance, bench records) are
written as JSON text.
"""

from __future__ import annotations

import csv
import json
import os
from typing import Any

from kvlab.errors import KvlabError
from kvlab.results.store import JSON_COLUMNS, ResultStore

FORMATS = ("csv", "parquet")
TABLES = ("samples", "cells", "runs", "bench")
CELL_FIELDS_IN_SAMPLES = ("model", "model_name", "dtype", "method", "family", "budget", "task", "task_params",
                          "metric", "length", "mode", "seed", "chunk_size", "chat")


def table_rows(store: ResultStore, table: str) -> list[dict[str, Any]]:
    """Rows of ``table`` as flat dicts (JSON columns as text)."""
    if table == "samples":
        cells = {c["key"]: c for c in store.cells()}
        rows = []
        for s in store.samples():
            cell = cells.get(s["cell_key"], {})
            rows.append({**{f: cell.get(f) for f in CELL_FIELDS_IN_SAMPLES}, **s})
    elif table == "cells":
        rows = store.cells()
    elif table == "runs":
        rows = store.runs()
    elif table == "bench":
        rows = store.bench()
    else:
        raise KvlabError(f"unknown table '{table}'; tables: {', '.join(TABLES)}")
    return [{k: (json.dumps(v, sort_keys=True) if k in JSON_COLUMNS else v) for k, v in r.items()} for r in rows]


def export(store: ResultStore, fmt: str, out_dir: str, tables: tuple[str, ...] = TABLES,
           prefix: str = "results") -> list[str]:
    """Write ``<out_dir>/<prefix>-<table>.<fmt>`` for each non-empty table; returns the paths written."""
    if fmt not in FORMATS:
        raise KvlabError(f"unknown export format '{fmt}'; use one of {', '.join(FORMATS)}")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise KvlabError("Parquet export needs pyarrow: pip install 'kvlab[export]'") from None
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for table in tables:
        rows = table_rows(store, table)
        if not rows:
            continue
        path = os.path.join(out_dir, f"{prefix}-{table}.{fmt}")
        (_write_csv if fmt == "csv" else _write_parquet)(path, rows)
        written.append(path)
    return written


def _write_csv(path: str, rows: list[dict[str, Any]]) -> None:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _write_parquet(path: str, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = list(dict.fromkeys(k for r in rows for k in r))
    table = pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows])
    tmp = path + ".tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, path)
