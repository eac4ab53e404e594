"""The full cache: no compression, the reference row of every report."""

from __future__ import annotations

from dataclasses import dataclass

from kvlab.methods import register_method
from kvlab.methods.base import Method


@register_method
@dataclass(frozen=True)
class FullCache(Method):
    """Keep every token. The baseline every method is compared against."""

    name = "full"
    family = "baseline"
    kind = "baseline"
    phase = "none"
    paper = "(baseline: no compression)"
