"""The effective budget: the smallest budget that keeps >= 95% of the full-cache score.

Definition (per model, task, mode and method, pooling lengths and seeds): with the method's
budgets ordered smallest first, the effective budget is the smallest budget ``b`` such that ``b``
*and every larger budget tried* keep at least ``threshold`` (95%) of the full-cache score -- a
budget that passes only by luck between two failing ones does not count. "Keeps" compares means
over the same samples: ``mean_b >= threshold * mean_full`` (for lower-is-better metrics such as
perplexity, ``threshold * mean_b <= mean_full``). When no budget qualifies the answer is "not
reached" (above the largest budget tried).

Interval: a paired percentile bootstrap over samples. Each replicate draws samples with
replacement -- the same draw for the full cache and every budget, since they ran on the same
samples -- and recomputes the effective budget; the interval is the 2.5th-97.5th percentile of the
replicates' budgets in the budget order ("not reached" sorts last). Only samples that the full cache
and every budget of the method share are used.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

THRESHOLD = 0.95
NOT_REACHED = "not reached"


@dataclass(frozen=True)
class EffectiveBudget:
    """``budget`` is a budget label or :data:`NOT_REACHED` (or None when it cannot be computed)."""

    budget: str | None
    low: str | None
    high: str | None
    retained: dict[str, float]  # budget -> mean_b / mean_full (higher-is-better) on the shared samples
    n: int  # shared samples
    reason: str = ""  # why it is None

    def label(self) -> str:
        if self.budget is None:
            return f"n/a ({self.reason})" if self.reason else "n/a"
        shown = f"> {list(self.retained)[-1]}" if self.budget == NOT_REACHED else self.budget
        if self.low is None:
            return shown
        lo = f"> {list(self.retained)[-1]}" if self.low == NOT_REACHED else self.low
        hi = f"> {list(self.retained)[-1]}" if self.high == NOT_REACHED else self.high
        return shown if lo == hi == shown else f"{shown} [{lo}, {hi}]"


def effective_index(full: np.ndarray, by_budget: np.ndarray, threshold: float = THRESHOLD,
                    higher_is_better: bool = True) -> int:
    """Index of the effective budget given mean scores (``by_budget`` in budget order); len = none."""
    keeps = by_budget >= threshold * full if higher_is_better else threshold * by_budget <= full
    index = len(keeps)
    for i in range(len(keeps) - 1, -1, -1):
        if not keeps[i]:
            break
        index = i
    return index


def effective_budget(full: Mapping[Hashable, float], budgets: Sequence[str],
                     scores: Mapping[str, Mapping[Hashable, float]], *, threshold: float = THRESHOLD,
                     higher_is_better: bool = True, replicates: int = 2000, seed: int = 0) -> EffectiveBudget:
    """The effective budget of one method.

    Args:
        full: full-cache score per sample unit (any hashable id shared across budgets).
        budgets: the method's budgets, smallest first.
        scores: per budget, score per sample unit.
    """
    if not budgets:
        return EffectiveBudget(None, None, None, {}, 0, "no budgets")
    units = set(full)
    for b in budgets:
        units &= set(scores.get(b, {}))
    units_list = sorted(units, key=repr)
    if not units_list:
        return EffectiveBudget(None, None, None, {}, 0, "no samples shared with the full cache")
    matrix = np.array([[scores[b][u] for u in units_list] for b in budgets], dtype=float)  # (budgets, units)
    base = np.array([full[u] for u in units_list], dtype=float)
    full_mean, means = float(base.mean()), matrix.mean(axis=1)
    if higher_is_better:
        retained = {b: (float(m / full_mean) if full_mean else float("nan")) for b, m in zip(budgets, means)}
    else:
        retained = {b: (float(full_mean / m) if m else float("nan")) for b, m in zip(budgets, means)}
    if higher_is_better and full_mean == 0:
        return EffectiveBudget(None, None, None, retained, len(units_list), "the full cache scores 0")
    labels = [*budgets, NOT_REACHED]
    point = effective_index(np.array(full_mean), means, threshold, higher_is_better)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(units_list), size=(replicates, len(units_list)))
    boot_full = base[draws].mean(axis=1)  # (replicates,)
    boot = matrix[:, draws].mean(axis=2)  # (budgets, replicates)
    indices = np.array([effective_index(boot_full[r], boot[:, r], threshold, higher_is_better)
                        for r in range(replicates)])
    low = int(np.percentile(indices, 2.5, method="lower"))
    high = int(np.percentile(indices, 97.5, method="higher"))
    return EffectiveBudget(labels[point], labels[low], labels[high], retained, len(units_list))
