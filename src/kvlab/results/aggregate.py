"""Aggregates of a cell computed from its sample rows (plain dicts), shared by the store and the report."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from kvlab.results.stats import mean_ci


def sample_scores(rows: Iterable[Mapping[str, Any]]) -> dict[int, float]:
    """Score of each sample (mean over its queries), keyed by ``sample_index``."""
    per: dict[int, list[float]] = defaultdict(list)
    for r in rows:
        per[int(r["sample_index"])].append(float(r["score"]))
    return {i: sum(v) / len(v) for i, v in sorted(per.items())}


def aggregate(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The aggregate columns of a cell (see :data:`kvlab.results.schema.AGGREGATE_COLUMNS`).

    ``score`` is the mean of per-sample scores (a sample's score is the mean of its queries), with
    a 95% interval over samples (:func:`kvlab.results.stats.mean_ci`). Token and byte columns are
    means over queries; ``mean_prefill_seconds`` is per sample (a query-agnostic sample prefills
    its context once); ``decode_ms_per_token`` is total decode time over generated tokens.
    """
    rows = list(rows)
    interval = mean_ci(list(sample_scores(rows).values()))
    out: dict[str, Any] = {
        "score": _num(interval.mean), "ci_low": _num(interval.low), "ci_high": _num(interval.high),
        "ci_method": interval.method, "n_samples": interval.n, "n_queries": len(rows),
    }
    for column, field in (("mean_prompt_tokens", "prompt_tokens"), ("mean_kv_tokens", "kv_tokens"),
                          ("mean_kv_bytes", "kv_bytes"), ("mean_peak_kv_bytes", "peak_kv_bytes"),
                          ("mean_full_kv_bytes", "full_kv_bytes")):
        values = [float(r[field]) for r in rows if r.get(field) is not None]
        out[column] = sum(values) / len(values) if values else None
    prefill = [float(r["prefill_seconds"]) for r in rows if r.get("prefill_seconds") is not None]
    out["mean_prefill_seconds"] = sum(prefill) / interval.n if prefill and interval.n else None
    decode = sum(float(r.get("decode_seconds") or 0.0) for r in rows)
    tokens = sum(int(r.get("new_tokens") or 0) for r in rows)
    out["decode_ms_per_token"] = 1000.0 * decode / tokens if tokens else None
    return out


def _num(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)
