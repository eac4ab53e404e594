"""The task registry: ``get_task(name, **params)`` and the rows of ``kvlab ls tasks``.

Each entry is a :class:`TaskEntry` -- a factory plus what ``kvlab ls tasks`` shows. Parameters are
the factory's keyword arguments (strings from the command line are converted to the default's
type); an unknown parameter raises :class:`~kvlab.errors.KvlabError` listing the valid ones.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kvlab.errors import KvlabError
from kvlab.registry import Registry
from kvlab.tasks.base import Task


@dataclass(frozen=True)
class TaskEntry:
    factory: Callable[..., Task]
    source: str
    metric: str
    notes: str = ""
    defaults: tuple[tuple[str, Any], ...] = ()  # parameters fixed by this name (e.g. RULER's variant)


TASKS: Registry[TaskEntry] = Registry("task")


def register(name: str, factory: Callable[..., Task], source: str, metric: str, notes: str = "", **defaults: Any) -> None:
    TASKS.add(name, TaskEntry(factory, source, metric, notes, tuple(defaults.items())))


def get_task(name: str, **params: Any) -> Task:
    """Build the task ``name`` with ``params`` (e.g. ``get_task("ruler/qa_1", path="dev-v2.0.json")``)."""
    _load()
    entry = TASKS.get(name)
    accepted = _parameters(entry.factory)
    unknown = sorted(set(params) - set(accepted) - {"name"})
    if unknown:
        valid = ", ".join(sorted(set(accepted) - {"name", "notes"} - {k for k, _ in entry.defaults})) or "none"
        raise KvlabError(f"task '{name}' has no parameter {', '.join(unknown)}; its parameters: {valid}")
    kwargs = dict(entry.defaults)
    kwargs.update({k: _convert(v, accepted[k]) for k, v in params.items()})
    return entry.factory(name=name, notes=entry.notes, **kwargs)


def task_names() -> list[str]:
    _load()
    return TASKS.names()


def task_rows() -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """``(header, rows)`` for ``kvlab ls tasks``: name, source, metric, notes."""
    _load()
    rows = [(name, e.source, e.metric, e.notes) for name, e in TASKS.items()]
    return ("name", "source", "metric", "notes"), rows


def parse_task_args(items: list[str] | None) -> dict[str, str]:
    """``["path=dev.json", "depths=0,50,100"]`` -> dict (the ``--task-arg KEY=VALUE`` option)."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise KvlabError(f"task arguments are KEY=VALUE, e.g. --task-arg path=data.jsonl; got '{item}'")
        out[key.strip()] = value
    return out


def _parameters(factory: Callable[..., Any]) -> dict[str, Any]:
    sig = inspect.signature(factory)
    return {k: p.default for k, p in sig.parameters.items() if k != "self"}


def _convert(value: Any, default: Any) -> Any:
    if not isinstance(value, str) or default is inspect.Parameter.empty or default is None or isinstance(default, str):
        return value
    try:
        if isinstance(default, bool):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
    except ValueError:
        raise KvlabError(f"task parameter value '{value}' should be a {type(default).__name__}") from None
    return value


_LOADED = False


def _load() -> None:
    """Register the built-in tasks (once, on first use, so importing kvlab stays cheap)."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    from kvlab.tasks import catalog  # noqa: F401  (registers everything)
