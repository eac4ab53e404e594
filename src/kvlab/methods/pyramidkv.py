"""PyramidKV: SnapKV scores with per-layer budgets that shrink from bottom to top layers."""

from __future__ import annotations

from dataclasses import dataclass

from kvlab.methods import register_method
from kvlab.methods.snapkv import SnapKV
from kvlab.models.spec import ModelSpec


@register_method
@dataclass(frozen=True)
class PyramidKV(SnapKV):
    """PyramidKV: Dynamic KV Cache Compression based on Pyramidal Information Funneling (Cai et al., 2024).

    https://arxiv.org/abs/2406.02069 -- attention is broad in lower layers and concentrated in upper
    ones, so lower layers get more of the budget. Layer budgets form an arithmetic sequence whose
    mean is the per-layer budget: the top layer keeps ``(B - w) / beta`` prefix tokens, the bottom
    ``2 (B - w) - top``, plus the observation window ``w`` everywhere (the reference code's
    schedule, including its adjustment when the bottom layer would exceed the prompt; like the
    reference, a prompt shorter than ``2 (B - w)`` gets SnapKV's uniform budget). Tokens are
    chosen within each layer with the SnapKV score. Defaults: window 32, kernel 5, avg pooling,
    beta 20.
    """

    name = "pyramidkv"
    family = "eviction (attention score, layer allocation)"
    paper = "Cai et al. 2024, PyramidKV: Dynamic KV Cache Compression based on Pyramidal Information Funneling"
    url = "https://arxiv.org/abs/2406.02069"

    beta: int = 20

    def layer_capacities(self, kept: int, spec: ModelSpec, prompt_tokens: int | None = None) -> list[int]:
        """The pyramid runs over the layers that keep keys and values (in hybrid models, the attention
        layers between linear-attention ones, which keep ``kept`` nominally and hold nothing)."""
        capacities = [kept] * spec.num_layers
        for idx, cap in zip(spec.kv_layers, self._pyramid(kept, len(spec.kv_layers), prompt_tokens)):
            capacities[idx] = cap
        return capacities

    def _pyramid(self, kept: int, layers: int, prompt_tokens: int | None) -> list[int]:
        w = self.window_size
        prefix = kept - w
        if layers == 1 or prefix <= 0:
            return [kept] * layers
        if prompt_tokens is not None and prompt_tokens < 2 * prefix:
            return [kept] * layers  # PyramidKVCluster.update_kv: q_len < 2 (B - w) -> uniform SnapKV
        min_num = prefix // self.beta
        max_num = 2 * prefix - min_num
        if prompt_tokens is not None and max_num >= prompt_tokens - w:
            max_num = max(prompt_tokens - w, 0)
            min_num = max(2 * prefix - max_num, 0)
        steps = (max_num - min_num) // (layers - 1)
        return [max(1, max_num - i * steps + w) for i in range(layers)]
