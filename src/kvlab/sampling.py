"""Token sampling (greedy, temperature, top-p with a seed) and incremental text with stop strings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from kvlab.errors import KvlabError


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. ``temperature == 0`` is greedy; a ``seed`` makes sampling reproducible."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise KvlabError(f"max_new_tokens must be >= 1, not {self.max_new_tokens}")
        if self.temperature < 0:
            raise KvlabError(f"temperature must be >= 0, not {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise KvlabError(f"top_p must be in (0, 1], not {self.top_p}")
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        if any(not s for s in self.stop):
            raise KvlabError("stop strings must not be empty")


class Sampler:
    """Picks the next token from ``logits (vocab,)``; deterministic for a given seed."""

    def __init__(self, params: SamplingParams):
        self.params = params
        self.generator = None
        if params.temperature > 0:
            self.generator = torch.Generator(device="cpu")
            self.generator.manual_seed(params.seed if params.seed is not None else torch.seed())

    def __call__(self, logits: torch.Tensor) -> int:
        if self.params.temperature <= 0:
            return int(logits.argmax())
        probs = torch.softmax(logits.float().cpu() / self.params.temperature, dim=-1)
        if self.params.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            cumulative = sorted_probs.cumsum(0)
            drop = cumulative - sorted_probs > self.params.top_p  # keep the smallest set reaching top_p
            sorted_probs[drop] = 0.0
            probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
        return int(torch.multinomial(probs, 1, generator=self.generator))


class TextAssembler:
    """Turns generated token ids into text deltas, holding back incomplete characters and any tail
    that could be the start of a stop string, and cutting the text at the first stop string."""

    def __init__(self, tokenizer: Any, stop: tuple[str, ...] = ()):
        self.tokenizer, self.stop = tokenizer, tuple(stop)
        self.ids: list[int] = []
        self.emitted = ""
        self.stopped = False
        self.text = ""

    def add(self, token_id: int) -> str:
        """Add a token; return the new text that is safe to show (may be empty)."""
        self.ids.append(token_id)
        if self.tokenizer is None:
            return ""
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.text, self.stopped = text[:cut], True
            return self._emit(self.text)
        self.text = text
        safe = text[:-1] if text.endswith("\ufffd") else text
        hold = max((n for s in self.stop for n in range(1, len(s)) if safe.endswith(s[:n])), default=0)
        return self._emit(safe[: len(safe) - hold])

    def flush(self) -> str:
        """At the end of generation: the held-back text."""
        return self._emit(self.text)

    def _emit(self, upto: str) -> str:
        if not upto.startswith(self.emitted) or len(upto) <= len(self.emitted):
            return ""
        delta = upto[len(self.emitted):]
        self.emitted = upto
        return delta
