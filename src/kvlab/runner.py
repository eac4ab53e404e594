"""The sweep runner: expand a config into cells, run them through the engine, write the store, resume.

:func:`run_sweep` records the run's provenance, registers every cell of the plan (so the store knows
what is still missing), then runs the cells in order. A cell runs only the samples the store does
not have; each finished sample is committed on its own, so a run killed at any moment resumes from
the next sample when the same command is run again. A cell that raises is marked ``failed`` with its
error and the sweep goes on; the next run retries it.

The model and task factories are parameters so the runner can be tested with tiny models and fake
tasks; by default they are :func:`kvlab.load_model` and :func:`kvlab.tasks.registry.get_task`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kvlab.config import Cell, SweepConfig, expand
from kvlab.errors import KvlabError
from kvlab.results.provenance import collect
from kvlab.results.store import ResultStore


@dataclass
class SweepSummary:
    """What a sweep did: counts, failures (cell key, label, error) and wall time."""

    cells: int = 0
    already_done: int = 0
    ran: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)
    samples_written: int = 0
    seconds: float = 0.0
    run_ids: list[int] = field(default_factory=list)
    prefills_recorded: int = 0  # contexts run through the model once and recorded (shared prefill)
    prefills_replayed: int = 0  # prefills served from a recording instead of the model


def cell_label(cell: Cell) -> str:
    budget = "" if cell.budget == "full" else f"@{cell.budget}"
    return f"{cell.task} {cell.length} {cell.mode} {cell.method}{budget} seed={cell.seed}"


def plan(config: SweepConfig, store: ResultStore | None = None) -> list[tuple[Cell, int]]:
    """Every cell with the number of its samples already in ``store`` (0 without a store)."""
    cells = expand(config)
    return [(c, len(store.done_samples(c.key)) if store else 0) for c in cells]


def run_sweep(
    config: SweepConfig,
    store: ResultStore,
    *,
    load: Callable[[str, str | None, str | None], Any] | None = None,
    make_task: Callable[..., Any] | None = None,
    progress: bool | None = None,
    command: str = "",
    log: Callable[[str], None] | None = None,
    share_prefill: bool = True,
) -> SweepSummary:
    """Run every unfinished cell of ``config`` into ``store``; see the module docstring.

    ``share_prefill``: cells whose samples have the same context (methods and budgets of one task,
    length, mode and seed) compress one recorded forward instead of each running the model
    (:mod:`kvlab.shared_prefill`; identical results, several times faster on CPU).
    """
    from kvlab.tasks.registry import get_task

    load = load or _load_model
    make_task = make_task or get_task
    show = sys.stderr.isatty() if progress is None else progress
    say = log or (lambda msg: print(msg, file=sys.stderr))
    start = time.perf_counter()
    summary = SweepSummary()
    cells = expand(config)
    summary.cells = len(cells)
    for cell in cells:
        store.ensure_cell(cell.record())
    todo = [c for c in cells if not _finished(store, c)]
    summary.already_done = len(cells) - len(todo)
    if not todo:
        summary.seconds = time.perf_counter() - start
        return summary
    bar = _bar(len(cells), summary.already_done, "cells", show)
    for model in dict.fromkeys(c.model for c in todo):
        lm = load(model, config.dtype, config.device)
        _check_lengths(lm, [c for c in todo if c.model == model])
        run_id = store.start_run(collect(lm, seed=list(config.seeds), chat=list(config.chat),
                                         extra={"sweep": config.name, "cells_planned": len(cells)}), command)
        summary.run_ids.append(run_id)
        samples_cache: dict[tuple, list] = {}
        memo = _memo() if share_prefill else None  # cells of one context group reuse its forward
        for cell in (c for c in todo if c.model == model):
            try:
                summary.samples_written += _run_cell(lm, cell, store, run_id, make_task, samples_cache, show, memo)
                summary.ran += 1
            except KvlabError as exc:
                _fail(store, cell, run_id, str(exc), summary, say)
            except Exception as exc:  # one bad cell must not end a sweep of hours
                _fail(store, cell, run_id, f"{type(exc).__name__}: {exc}", summary, say)
            bar.update(1)
            if not show:
                c = store.cell(cell.key) or {}
                score = "-" if c.get("score") is None else f"{100 * c['score']:.1f}"
                say(f"[{bar.n}/{len(cells)}] {cell_label(cell)}: {c.get('status')} score={score}")
        if memo is not None:
            summary.prefills_recorded += memo.misses
            summary.prefills_replayed += memo.hits
        store.finish_run(run_id)  # an interrupted run keeps finished_at empty
        del lm
    bar.close()
    summary.seconds = time.perf_counter() - start
    return summary


def _memo() -> Any:
    from kvlab.shared_prefill import PrefillMemo

    return PrefillMemo()


def _finished(store: ResultStore, cell: Cell) -> bool:
    row = store.cell(cell.key)
    return bool(row and row["status"] == "done" and len(store.done_samples(cell.key)) >= cell.n)


def _fail(store: ResultStore, cell: Cell, run_id: int, error: str, summary: SweepSummary, say) -> None:
    store.mark_cell(cell.key, "failed", run_id=run_id, error=error)
    summary.failed.append((cell.key, cell_label(cell), error))
    say(f"kvlab: cell failed ({cell_label(cell)}): {error}")


def _run_cell(lm: Any, cell: Cell, store: ResultStore, run_id: int, make_task: Callable[..., Any],
              samples_cache: dict[tuple, list], show: bool, memo: Any = None) -> int:
    from kvlab.evaluate import run_sample

    task = make_task(cell.task, **dict(cell.task_params))
    store.ensure_cell({**cell.record(), "metric": getattr(task, "metric", None)})
    done = store.done_samples(cell.key)
    todo = [i for i in range(cell.n) if i not in done]
    store.mark_cell(cell.key, "running", run_id=run_id, model_name=lm.name)
    written = 0
    if todo and getattr(task, "kind", None) == "perplexity":
        written = _run_perplexity(lm, task, cell, store, run_id, todo, show)
    elif todo:
        samples = _samples(lm, task, cell, samples_cache)
        bar = _bar(cell.n, len(done), "samples", show, leave=False, desc=_short_label(cell))
        for i in todo:
            results = run_sample(lm, task, samples[i], cell.method_spec, cell.budget_arg, mode=cell.mode,
                                 chat=cell.chat, chunk_size=cell.chunk_size, memo=memo)
            written += store.add_sample(cell.key, run_id, [r.to_dict() for r in results])
            bar.update(1)
        bar.close()
    store.finish_cell(cell.key)
    return written


def _samples(lm: Any, task: Any, cell: Cell, cache: dict[tuple, list]) -> list:
    """The cell's samples; generated once per (task, length, seed, chat) and shared by its cells."""
    key = (cell.task, cell.task_params, cell.length, cell.seed, cell.chat)
    if key not in cache or len(cache[key]) < cell.n:
        cache.clear()  # cells come grouped by this key: keep only the current group
        cache[key] = task.samples(lm.tokenizer, cell.length, cell.n, cell.seed, cell.chat)
    return cache[key]


def _run_perplexity(lm: Any, task: Any, cell: Cell, store: ResultStore, run_id: int, todo: list[int],
                    show: bool) -> int:
    """Perplexity windows as samples: ``score`` = the window's perplexity (lower is better)."""
    from kvlab.evaluate import run_perplexity

    windows = task.windows(lm.tokenizer, cell.length, cell.n, cell.seed)
    written = 0
    bar = _bar(cell.n, cell.n - len(todo), "windows", show, leave=False)
    for i in todo:
        one = _OneWindow(task, windows[i])
        rec = run_perplexity(lm, one, cell.length, cell.method_spec, cell.budget_arg,
                             cell.chunk_size or cell.length, n=1, seed=cell.seed)[0]
        row = {"sample_index": i, "query_index": 0, "prediction": "", "answers": [], "score": rec["ppl"],
               "prompt_tokens": cell.length, "context_tokens": cell.length, "new_tokens": 0,
               "prefill_seconds": rec["seconds"], "decode_seconds": 0.0,
               "metadata": {**rec["metadata"], "nll": rec["nll"], "tokens": rec["tokens"], "buckets": rec["buckets"]}}
        written += store.add_sample(cell.key, run_id, [row])
        bar.update(1)
    bar.close()
    return written


class _OneWindow:
    """A perplexity task restricted to one of its windows (so each window is committed on its own)."""

    def __init__(self, task: Any, window: Any):
        self.name, self._task, self._window = task.name, task, window

    def windows(self, *args: Any, **kwargs: Any) -> list:
        return [self._window]

    def buckets(self, length: int) -> list[tuple[int, int]]:
        return self._task.buckets(length)


def _check_lengths(lm: Any, cells: list[Cell]) -> None:
    window = lm.spec.max_positions
    too_long = sorted({c.length for c in cells if window and c.length > window})
    if too_long:
        raise KvlabError(f"lengths {', '.join(map(str, too_long))} exceed {lm.name}'s trained window of {window} "
                         "tokens; drop them from --lengths")


def _load_model(name: str, dtype: str | None, device: str | None) -> Any:
    from transformers.utils import logging as hf_logging

    from kvlab.models import load_model

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    return load_model(name, dtype=dtype, device=device)


class _NoBar:
    n = 0

    def update(self, k: int = 1) -> None:
        self.n += k

    def close(self) -> None:
        pass


def _short_label(cell: Cell) -> str:
    budget = "" if cell.budget == "full" else f"@{cell.budget}"
    return f"{cell.method}{budget} {cell.length} {cell.mode.replace('query_', 'q-')}"


def _bar(total: int, initial: int, unit: str, show: bool, leave: bool = True, desc: str | None = None):
    """A tqdm bar on stderr with rate and ETA, or a counter when bars are off."""
    if not show:
        bar = _NoBar()
        bar.n = initial
        return bar
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc or unit, unit=unit.rstrip("s"), file=sys.stderr, leave=leave,
                dynamic_ncols=True)
