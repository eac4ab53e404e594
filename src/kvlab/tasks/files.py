"""Tasks read from user-supplied files (LongBench v1/v2, InfiniteBench, RULER QA's sources).

kvlab never downloads data: a file task needs ``path=FILE`` and raises a :class:`KvlabError` that
says where the file comes from when it is missing. Long contexts are **middle-truncated** on
tokens of the model under test (LongBench's and InfiniteBench's rule: keep the first and last
halves): the number of context tokens kept is binary-searched so that the rendered prompt (chat
template included) plus ``max_new_tokens`` fits ``length``. Instructions and question are never
cut. Each sample records ``truncated``, ``context_tokens`` (before), ``context_tokens_kept`` and
``kept_fraction``; :func:`truncation_summary` reports how many were truncated and by how much.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvlab.errors import KvlabError
from kvlab.tasks.base import Query, Sample
from kvlab.tasks.fitting import Draft, check_request, fit_units, prompt_tokens, sample_metadata


@dataclass
class FileExample:
    """One example of a file suite, split for kvlab: ``head + context + tail`` is the official prompt."""

    head: str
    context: str
    query: Query
    metadata: dict[str, Any] = field(default_factory=dict)


def read_records(path: str | None, task: str, where: str) -> list[dict[str, Any]]:
    """Records of a ``.jsonl`` (one object per line) or ``.json`` (a list) file."""
    if not path:
        raise KvlabError(f"task '{task}' reads a local file that kvlab does not ship or download: pass "
                         f"path=FILE (kvlab eval --task-arg path=FILE). {where}")
    file = Path(path).expanduser()
    if not file.is_file():
        raise KvlabError(f"task '{task}': file not found: {path}. {where}")
    text = file.read_text(encoding="utf-8")
    try:
        if file.suffix == ".jsonl" or (text.lstrip()[:1] == "{" and "\n{" in text.strip()):
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            records = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KvlabError(f"task '{task}': {path} is not valid JSON/JSONL ({exc.msg} at line {exc.lineno})") from None
    if isinstance(records, dict):
        records = [records]
    if not isinstance(records, list) or not records:
        raise KvlabError(f"task '{task}': {path} holds no examples")
    return records


def require(record: dict[str, Any], keys: Iterable[str], task: str, index: int) -> None:
    missing = [k for k in keys if k not in record]
    if missing:
        raise KvlabError(f"task '{task}': example {index} has no field {', '.join(missing)}; is this the right file?")


class FileTask:
    """Base of file-based suites: subclasses load ``records`` and turn one into a :class:`FileExample`."""

    name = ""
    source = ""
    metric = ""
    notes = ""

    def __init__(self, path: str | None, start: int = 0, shuffle: bool = False):
        self.path, self.start, self.shuffle = path, int(start), bool(shuffle)
        self._records: list[dict[str, Any]] | None = None

    def load(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def example(self, record: dict[str, Any], index: int) -> FileExample:
        raise NotImplementedError

    @property
    def records(self) -> list[dict[str, Any]]:
        if self._records is None:
            self._records = self.load()
        return self._records

    def samples(self, tokenizer: Any, length: int, n: int, seed: int = 42, chat: str = "template") -> list[Sample]:
        """The first ``n`` examples from ``start`` (file order, or a seeded shuffle with ``shuffle``),
        each middle-truncated to fit ``length`` tokens. Fewer when the file has fewer."""
        check_request(length, n, tokenizer)
        order = list(range(len(self.records)))
        if self.shuffle:
            random.Random(f"{self.name}|{seed}").shuffle(order)
        chosen = order[self.start:self.start + n]
        if not chosen:
            raise KvlabError(f"task '{self.name}': start={self.start} is past the {len(order)} examples of {self.path}")
        return [self.fit(tokenizer, self.example(self.records[i], i), i, length, seed, chat) for i in chosen]

    def fit(self, tokenizer: Any, ex: FileExample, index: int, length: int, seed: int, chat: str) -> Sample:
        ids = tokenizer(ex.context, add_special_tokens=False)["input_ids"]

        def draft(kept: int) -> Draft:
            return Draft(ex.head + middle(tokenizer, ids, kept, ex.context), (ex.query,))

        def cost(kept: int) -> int:
            return prompt_tokens(tokenizer, draft(kept), chat)[1]

        kept = fit_units(cost, length, 0, len(ids), len(ids))
        prompt, total = prompt_tokens(tokenizer, draft(kept), chat)
        meta = {**sample_metadata(tokenizer, chat, length, seed), "source_index": index,
                "prompt_tokens": prompt, "total_tokens": total, "max_new_tokens": ex.query.max_new_tokens,
                "truncation": "middle", "truncated": kept < len(ids), "context_tokens": len(ids),
                "context_tokens_kept": kept, "kept_fraction": round(kept / max(1, len(ids)), 4), **ex.metadata}
        return Sample(self.name, index, draft(kept).context, (ex.query,), meta)


def middle(tokenizer: Any, ids: list[int], kept: int, text: str) -> str:
    """``text`` cut to its first ``kept // 2`` and last ``kept - kept // 2`` tokens."""
    if kept >= len(ids):
        return text
    half = kept // 2
    left = tokenizer.decode(ids[:half], skip_special_tokens=True) if half else ""
    right = tokenizer.decode(ids[len(ids) - (kept - half):], skip_special_tokens=True) if kept - half else ""
    return left + right


def truncation_summary(samples: Iterable[Sample]) -> dict[str, Any]:
    """How many samples were truncated and how much of their context was kept."""
    rows = [s.metadata for s in samples if "truncated" in s.metadata]
    cut = [m for m in rows if m["truncated"]]
    return {
        "samples": len(rows), "truncated": len(cut),
        "truncated_share": round(len(cut) / len(rows), 4) if rows else 0.0,
        "mean_kept_fraction_of_truncated": round(sum(m["kept_fraction"] for m in cut) / len(cut), 4) if cut else None,
        "mean_context_tokens": round(sum(m["context_tokens"] for m in rows) / len(rows), 1) if rows else None,
    }


def split_template(template: str, **fields: Any) -> tuple[str, str]:
    """``template`` formatted around ``{context}``: (text before the context, text after it)."""
    if "{context}" not in template:
        raise ValueError("template has no {context}")
    head, tail = template.split("{context}", 1)
    return head.format(**fields), tail.format(**fields)
