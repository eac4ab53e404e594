"""The KV budget: tokens per layer, a ratio of the prompt, or bytes of KV memory.

``Budget.parse`` accepts what users type::

    Budget.parse("1024")    # 1024 tokens kept per layer (and per KV head)
    Budget.parse("25%")     # a quarter of the prompt's tokens
    Budget.parse("0.25")    # same as 25%
    Budget.parse("64MiB")   # as many tokens as 64 MiB of keys+values hold over all layers
    Budget.parse("full")    # no compression

``resolve(spec, prompt_tokens)`` turns it into kept tokens per layer; the result never exceeds
the prompt. Per-layer and per-head allocation (PyramidKV, AdaKV) is a method's policy on top.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from kvlab.errors import KvlabError
from kvlab.models.spec import ModelSpec

_UNITS = {
    "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9,
    "kib": 2**10, "mib": 2**20, "gib": 2**30,
}
_BYTES_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmg]i?b|b)\s*$", re.IGNORECASE)
_TOKENS_RE = re.compile(r"^\s*([0-9]+)\s*([kK])?\s*(tokens?)?\s*$")


@dataclass(frozen=True)
class Budget:
    """A frozen KV budget. ``kind`` is ``tokens``, ``ratio``, ``bytes`` or ``full``."""

    kind: Literal["tokens", "ratio", "bytes", "full"]
    value: float = 0.0

    @classmethod
    def parse(cls, text: str | int | float | Budget | None) -> Budget:
        if isinstance(text, Budget):
            return text
        if text is None:
            return cls("full")
        if isinstance(text, bool):
            raise KvlabError(f"budget must be tokens, a ratio or bytes, not {text!r}")
        if isinstance(text, int):
            return cls._tokens(text, str(text))
        if isinstance(text, float):
            return cls._ratio(text, str(text))
        raw = str(text).strip()
        low = raw.lower()
        if low in ("full", "none", "all", "100%"):
            return cls("full")
        if low.endswith("%"):
            try:
                pct = float(low[:-1])
            except ValueError:
                raise _malformed(raw) from None
            return cls._ratio(pct / 100.0, raw)
        if m := _BYTES_RE.match(low):
            n = float(m.group(1)) * _UNITS[m.group(2).lower()]
            if n <= 0:
                raise KvlabError(f"budget '{raw}' must be a positive amount of memory")
            return cls("bytes", float(int(n)))
        if m := _TOKENS_RE.match(raw):
            n = int(m.group(1)) * (1024 if m.group(2) else 1)
            return cls._tokens(n, raw)
        try:
            return cls._ratio(float(low), raw)
        except ValueError:
            raise _malformed(raw) from None

    @classmethod
    def _tokens(cls, n: int, raw: str) -> Budget:
        if n <= 0:
            raise KvlabError(f"budget '{raw}' must be a positive number of tokens")
        return cls("tokens", float(n))

    @classmethod
    def _ratio(cls, r: float, raw: str) -> Budget:
        if not 0.0 < r <= 1.0:
            raise KvlabError(f"budget '{raw}' is a ratio outside (0, 1]; write e.g. '25%' or '0.25'")
        return cls("full") if r == 1.0 else cls("ratio", r)

    @property
    def is_full(self) -> bool:
        return self.kind == "full"

    def resolve(self, spec: ModelSpec, prompt_tokens: int) -> int:
        """Tokens kept per layer (per KV head) for a prompt of ``prompt_tokens`` tokens.

        The result is in [1, prompt_tokens] (``prompt_tokens`` when the budget is full or larger).
        """
        if prompt_tokens <= 0:
            return 0
        if self.kind == "full":
            kept = prompt_tokens
        elif self.kind == "tokens":
            kept = int(self.value)
        elif self.kind == "ratio":
            kept = math.ceil(self.value * prompt_tokens)
        else:
            kept = int(self.value) // spec.kv_bytes_per_token
            if kept < 1:
                raise KvlabError(
                    f"budget {self} holds less than one token: one token costs {spec.kv_bytes_per_token} bytes "
                    f"of keys and values over {spec.num_layers} layers"
                )
        return max(1, min(kept, prompt_tokens))

    def __str__(self) -> str:
        if self.kind == "full":
            return "full"
        if self.kind == "tokens":
            return str(int(self.value))
        if self.kind == "ratio":
            return f"{self.value * 100:g}%"
        return _format_bytes(int(self.value))


def _malformed(raw: str) -> KvlabError:
    return KvlabError(
        f"cannot parse budget '{raw}': use tokens per layer ('1024', '4k'), a ratio of the prompt "
        f"('25%', '0.25'), bytes of KV memory ('64MiB', '1.5GB'), or 'full'"
    )


def _format_bytes(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:g}{unit}"
    return f"{n}B"
