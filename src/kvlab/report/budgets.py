"""Ordering budgets as they are stored (canonical strings: ``25%``, ``512``, ``64MiB``, ``full``).

The report reads only the store, so it orders budgets from their text: ratios by value, token
counts by value, byte sizes by value, and ``full`` last. Budgets of different kinds (``25%`` vs
``512``) are not comparable by text; :func:`order_budgets` then orders them by the KV bytes the
store measured for them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

_UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}


def budget_kind(budget: str) -> str:
    if budget == "full":
        return "full"
    if budget.endswith("%"):
        return "ratio"
    if re.fullmatch(r"[0-9]+", budget):
        return "tokens"
    return "bytes"


def budget_value(budget: str) -> float:
    """The number a budget stands for within its kind (percent, tokens or bytes); inf for full."""
    kind = budget_kind(budget)
    if kind == "full":
        return math.inf
    if kind == "ratio":
        return float(budget[:-1])
    if kind == "tokens":
        return float(budget)
    match = re.fullmatch(r"([0-9.]+)\s*([KMG]iB|B)", budget)
    return float(match.group(1)) * _UNITS[match.group(2)] if match else math.nan


def order_budgets(budgets: Iterable[str], measured_bytes: Mapping[str, float] | None = None) -> list[str]:
    """Smallest first. One kind: by value. Mixed kinds: by measured KV bytes (then by value)."""
    unique = list(dict.fromkeys(budgets))
    kinds = {budget_kind(b) for b in unique} - {"full"}
    if len(kinds) <= 1 or not measured_bytes:
        return sorted(unique, key=lambda b: (b == "full", budget_value(b)))
    return sorted(unique, key=lambda b: (b == "full", measured_bytes.get(b, math.inf), budget_value(b)))
