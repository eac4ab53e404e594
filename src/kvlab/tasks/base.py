"""The task interface: deterministic sample generators plus scorers.

A task turns ``(tokenizer, length, n, seed)`` into :class:`Sample` s and scores predictions. Tasks
never import methods or the engine: they produce plain data that :mod:`kvlab.evaluate` runs.

Length is counted in tokens of the model under test and includes the chat template and the
generation budget (``max_new_tokens``), as RULER does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from kvlab.prompting import PromptParts


@dataclass(frozen=True)
class Query:
    """One question about a context: the text appended after the context, its answer prefix,
    the reference answers and how many tokens to generate."""

    question: str
    answers: tuple[str, ...]
    answer_prefix: str = ""
    max_new_tokens: int = 128
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sample:
    """One context with one or more queries.

    ``context`` is everything before the question (instructions, haystack). Single-request tasks
    have one query; shared-context tasks (SCBench-style) have several about the same context.
    ``metadata`` records what a report needs (needle depth, target length, token counts, seed,
    chat policy, truncation).
    """

    task: str
    index: int
    context: str
    queries: tuple[Query, ...]
    metadata: dict[str, Any] = field(default_factory=dict)
    system: str | None = None

    def parts(self, query: Query, mode: str) -> PromptParts:
        """The prompt for ``query``: ``query_aware`` puts the question inside the prefilled (and
        compressed) context; ``query_agnostic`` appends it after compression."""
        if mode == "query_aware":
            return PromptParts(self.context + query.question, "", query.answer_prefix, self.system)
        if mode == "query_agnostic":
            return PromptParts(self.context, query.question, query.answer_prefix, self.system)
        raise ValueError(f"unknown mode {mode!r}")


MODES = ("query_aware", "query_agnostic")


class Task(Protocol):
    """What the evaluator needs from a task."""

    name: str  # e.g. "ruler/niah_single_2"
    source: str  # where the data comes from (generator, file format)
    metric: str  # e.g. "string_match_all"

    def samples(self, tokenizer: Any, length: int, n: int, seed: int = 42, chat: str = "template") -> list[Sample]:
        """``n`` samples whose prompts are at most ``length`` tokens (template + generation included)."""
        ...

    def score(self, prediction: str, query: Query) -> float:
        """Score in [0, 1] of one prediction against the query's references."""
        ...
