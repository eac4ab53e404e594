"""The effective budget on constructed cases where the answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from kvlab.report.budgets import order_budgets
from kvlab.report.effective import NOT_REACHED, effective_budget, effective_index


def scores(values: list[float]) -> dict[int, float]:
    return {i: v for i, v in enumerate(values)}


FULL = scores([1.0] * 20)


def test_smallest_budget_keeping_95_percent():
    by = {"10%": scores([1.0] * 10 + [0.0] * 10),  # 50% of full
          "25%": scores([1.0] * 19 + [0.0]),  # exactly 95%: keeps
          "50%": scores([1.0] * 20)}
    eff = effective_budget(FULL, ["10%", "25%", "50%"], by)
    assert eff.budget == "25%"
    assert eff.retained == pytest.approx({"10%": 0.5, "25%": 0.95, "50%": 1.0})
    assert eff.n == 20
    # the interval brackets the estimate, in budget order
    order = ["10%", "25%", "50%", NOT_REACHED]
    assert order.index(eff.low) <= order.index("25%") <= order.index(eff.high)


def test_just_below_95_percent_does_not_keep():
    full = scores([1.0] * 100)
    by = {"25%": scores([1.0] * 94 + [0.0] * 6), "50%": scores([1.0] * 100)}
    assert effective_budget(full, ["25%", "50%"], by).budget == "50%"


def test_a_lucky_budget_below_a_failing_one_does_not_count():
    by = {"10%": scores([1.0] * 20), "25%": scores([1.0] * 10 + [0.0] * 10), "50%": scores([1.0] * 20)}
    assert effective_budget(FULL, ["10%", "25%", "50%"], by).budget == "50%"


def test_clear_cut_case_has_a_degenerate_interval():
    by = {"10%": scores([0.0] * 20), "25%": scores([1.0] * 20), "50%": scores([1.0] * 20)}
    eff = effective_budget(FULL, ["10%", "25%", "50%"], by)
    assert (eff.budget, eff.low, eff.high) == ("25%", "25%", "25%")
    assert eff.label() == "25%"


def test_not_reached_and_its_label():
    by = {"10%": scores([0.0] * 20), "25%": scores([0.0] * 20)}
    eff = effective_budget(FULL, ["10%", "25%"], by)
    assert eff.budget == NOT_REACHED and eff.label() == "> 25%"


def test_interval_widens_with_noise_and_is_seeded():
    rng = np.random.default_rng(1)
    full = scores(list(rng.integers(0, 2, 30).astype(float)))
    by = {b: scores(list(rng.integers(0, 2, 30).astype(float))) for b in ("128", "512", "2048")}
    a = effective_budget(full, ["128", "512", "2048"], by)
    b = effective_budget(full, ["128", "512", "2048"], by)
    assert a == b
    order = ["128", "512", "2048", NOT_REACHED]
    assert order.index(a.low) <= order.index(a.budget) <= order.index(a.high)
    assert a.low != a.high


def test_only_shared_samples_count():
    full = {**FULL, 99: 0.0}  # a sample the method never ran must not lower the full-cache mean
    by = {"25%": scores([1.0] * 19 + [0.0])}
    eff = effective_budget(full, ["25%"], by)
    assert eff.n == 20 and eff.budget == "25%"


def test_full_cache_scoring_zero_is_not_applicable():
    eff = effective_budget(scores([0.0] * 5), ["25%"], {"25%": scores([0.0] * 5)})
    assert eff.budget is None and "scores 0" in eff.label()


def test_lower_is_better_metric():
    full = scores([10.0] * 5)  # perplexity
    by = {"25%": scores([11.0] * 5), "50%": scores([10.4] * 5)}  # 10/11 = 0.91 fails, 10/10.4 = 0.96 keeps
    assert effective_budget(full, ["25%", "50%"], by, higher_is_better=False).budget == "50%"


def test_effective_index_directly():
    assert effective_index(np.array(1.0), np.array([0.2, 0.96, 0.94, 1.0])) == 3
    assert effective_index(np.array(1.0), np.array([0.96, 0.97])) == 0
    assert effective_index(np.array(1.0), np.array([0.5])) == 1


def test_budget_order_by_value_and_by_measured_bytes():
    assert order_budgets(["50%", "full", "10%", "25%"]) == ["10%", "25%", "50%", "full"]
    assert order_budgets(["1024", "128", "512"]) == ["128", "512", "1024"]
    assert order_budgets(["1MiB", "512KiB", "2GiB"]) == ["512KiB", "1MiB", "2GiB"]
    # mixed kinds are ordered by the KV bytes they held
    assert order_budgets(["25%", "512", "10%"], {"25%": 3e6, "512": 1e6, "10%": 2e6}) == ["512", "10%", "25%"]
