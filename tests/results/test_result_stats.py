"""Confidence intervals against published reference values."""

from __future__ import annotations

import math

import pytest

from kvlab.results.aggregate import aggregate, sample_scores
from kvlab.results.stats import mean_ci, t_quantile, wilson


@pytest.mark.parametrize("p, df, expected", [
    (0.975, 1, 12.7062), (0.975, 4, 2.7764), (0.975, 10, 2.2281), (0.975, 30, 2.0423), (0.95, 10, 1.8125),
    (0.995, 5, 4.0321),
])
def test_t_quantile_matches_tables(p, df, expected):
    assert t_quantile(p, df) == pytest.approx(expected, abs=1e-4)
    assert t_quantile(1 - p, df) == pytest.approx(-expected, abs=1e-4)


def test_wilson_matches_reference_values():
    # Newcombe (1998), Table I: 81/263 -> 0.2553-0.3662; 15/148 -> 0.0624-0.1605
    assert wilson(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert wilson(15, 148) == pytest.approx((0.0624, 0.1605), abs=1e-4)
    # the extremes stay inside [0, 1] and are not degenerate
    low, high = wilson(5, 5)
    assert high == 1.0 and 0.5 < low < 0.6
    low, high = wilson(0, 5)
    assert low == 0.0 and 0.4 < high < 0.5


def test_mean_ci_picks_wilson_for_binary_and_t_otherwise():
    binary = mean_ci([1, 0, 1, 1])
    assert binary.method == "wilson" and binary.mean == 0.75
    assert (binary.low, binary.high) == pytest.approx(wilson(3, 4))
    graded = mean_ci([0.5, 0.25, 1.0, 0.75])
    assert graded.method == "t"
    sd = math.sqrt(sum((x - 0.625) ** 2 for x in [0.5, 0.25, 1.0, 0.75]) / 3)
    assert graded.low == pytest.approx(0.625 - 3.1824 * sd / 2, abs=1e-3)
    assert graded.high == pytest.approx(min(1.0, 0.625 + 3.1824 * sd / 2), abs=1e-3)
    assert mean_ci([]).method == "none" and mean_ci([0.5]).method == "single"


def test_t_interval_is_not_clipped_for_unbounded_scores():
    ppl = mean_ci([10.0, 12.0, 14.0])
    assert ppl.low == pytest.approx(12 - 4.3027 * 2 / math.sqrt(3), abs=1e-3)
    assert ppl.high > 14


def test_aggregate_scores_samples_not_queries():
    # sample 0 has two queries (1 and 0 -> 0.5), sample 1 one query (1): the mean is over samples
    rows = [
        {"sample_index": 0, "query_index": 0, "score": 1.0, "kv_bytes": 100, "new_tokens": 4, "decode_seconds": 0.4,
         "prefill_seconds": 2.0},
        {"sample_index": 0, "query_index": 1, "score": 0.0, "kv_bytes": 100, "new_tokens": 6, "decode_seconds": 0.6,
         "prefill_seconds": 0.1},
        {"sample_index": 1, "query_index": 0, "score": 1.0, "kv_bytes": 400, "new_tokens": 10, "decode_seconds": 1.0,
         "prefill_seconds": 3.0},
    ]
    assert sample_scores(rows) == {0: 0.5, 1: 1.0}
    agg = aggregate(rows)
    assert agg["score"] == pytest.approx(0.75)
    assert agg["ci_method"] == "t" and agg["n_samples"] == 2 and agg["n_queries"] == 3
    assert agg["mean_kv_bytes"] == pytest.approx(200)
    assert agg["decode_ms_per_token"] == pytest.approx(100.0)  # 2.0 s over 20 tokens
    assert agg["mean_prefill_seconds"] == pytest.approx(2.55)  # 5.1 s over 2 samples
