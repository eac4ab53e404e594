"""RULER's scorers and the shared prediction clean-up.

Per prediction ``p`` with references ``R`` (both after :func:`postprocess`, matching is
case-insensitive substring):

* ``string_match_all(p, R) = |{r in R : r in p}| / |R|`` -- the fraction of references found
  (RULER: niah, vt, cwe, fwe);
* ``string_match_part(p, R) = max_r 1[r in p]`` -- any reference found (RULER: qa).

A task score is the mean over predictions times 100, rounded to 2 decimals (:func:`aggregate`),
exactly as RULER's ``scripts/eval/synthetic/constants.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

_CONTROL = re.compile(r"[\x00-\x1f]")


def postprocess(prediction: str) -> str:
    """RULER's ``postprocess_pred``: strip, turn control characters into newlines, strip again."""
    return _CONTROL.sub("\n", prediction.strip()).strip()


def string_match_all(prediction: str, references: Sequence[str]) -> float:
    pred = postprocess(prediction).lower()
    if not references:
        raise ValueError("string_match_all needs at least one reference")
    return sum(1.0 for r in references if r.lower() in pred) / len(references)


def string_match_part(prediction: str, references: Sequence[str]) -> float:
    pred = postprocess(prediction).lower()
    if not references:
        raise ValueError("string_match_part needs at least one reference")
    return max(1.0 if r.lower() in pred else 0.0 for r in references)


def aggregate(scores: Iterable[float]) -> float:
    """Mean of per-prediction scores in [0, 1], times 100, rounded to 2 decimals (RULER's table)."""
    values = list(scores)
    if not values:
        raise ValueError("no scores to aggregate")
    return round(100.0 * sum(values) / len(values), 2)


METRICS = {"string_match_all": string_match_all, "string_match_part": string_match_part}
