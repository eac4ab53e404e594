"""Sweep configuration: frozen dataclasses resolved from defaults < YAML < command-line flags.

A sweep is the product model x method x budget x task x length x mode x seed x chunk size x chat
policy; each element of the product is a :class:`Cell`. :func:`resolve` merges the three sources
and validates everything *before* anything runs: an unknown method, task, model, mode or chat
policy, or a budget that cannot be parsed, raises :class:`~kvlab.errors.KvlabError` naming the
valid choices. A YAML file looks like ``configs/demo.yaml``::

    model: default                  # or models: [default, path/to/model]
    methods: [full, snapkv, "snapkv:window_size=64"]
    budgets: ["10%", "25%", 512]
    tasks:
      - ruler/niah_single_2          # a name, or a name with parameters:
      - {name: niah/single, params: {depths: "0,50,100", max_new_tokens: 12}}
    lengths: [1k, 2k, 4k]
    modes: [query_aware, query_agnostic]
    seeds: [42]
    n: 5                            # samples per cell
    db: results.db

The full cache is the reference of every plot and of the effective budget, so ``full`` is added to
the methods unless ``reference: false``. ``full`` runs once per (task, length, mode, seed), not once
per budget; a budget of ``full`` for another method is the same experiment and is dropped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

from kvlab.errors import KvlabError, UnknownNameError

KEYS = ("name", "model", "models", "dtype", "device", "method", "methods", "budget", "budgets", "task", "tasks",
        "length", "lengths", "mode", "modes", "seed", "seeds", "n", "chunk_size", "chunk_sizes", "chat",
        "db", "reference")
PLURAL = {"model": "models", "method": "methods", "budget": "budgets", "task": "tasks", "length": "lengths",
          "mode": "modes", "seed": "seeds", "chunk_size": "chunk_sizes"}


@dataclass(frozen=True)
class TaskSpec:
    """A task name with its parameters (sorted ``(key, value)`` pairs, values as given)."""

    name: str
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        return self.name + (f"[{','.join(f'{k}={v}' for k, v in self.params)}]" if self.params else "")


@dataclass(frozen=True)
class SweepConfig:
    """A resolved sweep. Build it with :func:`resolve` (which validates); fields are plain values."""

    name: str = "sweep"
    models: tuple[str, ...] = ("default",)
    dtype: str | None = None
    device: str | None = None
    methods: tuple[str, ...] = ("full",)
    budgets: tuple[str, ...] = ("full",)
    tasks: tuple[TaskSpec, ...] = ()
    lengths: tuple[int, ...] = (4096,)
    modes: tuple[str, ...] = ("query_aware",)
    seeds: tuple[int, ...] = (42,)
    n: int = 20
    chunk_sizes: tuple[int | None, ...] = (4096,)
    chat: tuple[str, ...] = ("template",)
    db: str = "results.db"
    reference: bool = True


@dataclass(frozen=True)
class Cell:
    """One cell of a sweep; ``key`` is a stable hash of everything that determines its results."""

    model: str
    dtype: str
    method: str  # as displayed: name plus changed hyperparameters, e.g. snapkv(window_size=64)
    method_config: str  # JSON of every hyperparameter, defaults included
    family: str
    budget: str  # canonical, e.g. "25%", "512", "64MiB", "full"
    task: str
    task_params: tuple[tuple[str, Any], ...]
    length: int
    mode: str
    seed: int
    chunk_size: int | None
    chat: str
    n: int = field(default=1, compare=False)
    method_spec: str = field(default="", compare=False)  # what get_method() takes, e.g. snapkv:window_size=64

    @property
    def key(self) -> str:
        identity = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                    if f.name not in ("n", "method", "family", "method_spec")}
        identity["task_params"] = dict(self.task_params)
        blob = json.dumps(identity, sort_keys=True, default=str, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    @property
    def budget_arg(self) -> str | None:
        return None if self.budget == "full" else self.budget

    def record(self) -> dict[str, Any]:
        """The plain record :meth:`kvlab.results.store.ResultStore.ensure_cell` takes."""
        out = dataclasses.asdict(self)
        out["task_params"] = dict(self.task_params)
        out["key"] = self.key
        return out


def parse_length(value: Any) -> int:
    """``4096``, ``"4k"``, ``"8K"`` -> tokens."""
    text = str(value).strip().lower()
    try:
        tokens = int(float(text[:-1]) * 1024) if text.endswith("k") else int(text)
    except ValueError:
        raise KvlabError(f"length must be a number of tokens such as 4096 or 4k, not {value!r}") from None
    if tokens < 1:
        raise KvlabError(f"length must be >= 1 token, not {value!r}")
    return tokens


def parse_chunk_size(value: Any) -> int | None:
    if value is None or str(value).strip().lower() in ("none", "0", "off"):
        return None
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise KvlabError(f"chunk size must be a positive integer or 'none', not {value!r}") from None
    if size < 1:
        raise KvlabError(f"chunk size must be >= 1, not {value!r}")
    return size


def split_list(value: Any) -> list[Any]:
    """A YAML list, or a comma-separated string (from a flag) -> list."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [value]


def load_yaml(path: str) -> dict[str, Any]:
    """Read a sweep YAML file into a dict (no validation yet)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise KvlabError(f"no such config file: {path}") from None
    except yaml.YAMLError as exc:
        raise KvlabError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise KvlabError(f"{path} must be a YAML mapping of sweep settings (methods:, budgets:, tasks: ...)")
    return data


def resolve(yaml_values: dict[str, Any] | None = None, flags: dict[str, Any] | None = None) -> SweepConfig:
    """Merge defaults < ``yaml_values`` < ``flags`` (flags that are None are not given) and validate."""
    merged: dict[str, Any] = {}
    for source in (yaml_values or {}), {k: v for k, v in (flags or {}).items() if v is not None}:
        unknown = sorted(set(source) - set(KEYS))
        if unknown:
            raise KvlabError(f"unknown sweep setting(s) {', '.join(unknown)}; valid: {', '.join(KEYS)}")
        for key, value in source.items():
            key = PLURAL.get(key, key)
            merged[key] = value
    return _validate(merged)


def _validate(raw: dict[str, Any]) -> SweepConfig:
    from kvlab.budget import Budget
    from kvlab.methods import get_method
    from kvlab.prompting import CHAT_POLICIES
    from kvlab.tasks.base import MODES
    from kvlab.tasks.registry import get_task

    defaults = SweepConfig()
    models = tuple(check_model(str(m)) for m in split_list(raw.get("models", defaults.models)))
    methods = tuple(dict.fromkeys(str(m) for m in split_list(raw.get("methods", defaults.methods))))
    for m in methods:
        get_method(m)
    budgets = tuple(dict.fromkeys(str(Budget.parse(b)) for b in split_list(raw.get("budgets", defaults.budgets))))
    tasks = tuple(_task_spec(t) for t in split_list(raw.get("tasks", [])))
    if not tasks:
        raise KvlabError("a sweep needs at least one task (tasks: [...] or --tasks); see `kvlab ls tasks`")
    for t in tasks:
        get_task(t.name, **dict(t.params))
    modes = tuple(dict.fromkeys(str(m) for m in split_list(raw.get("modes", defaults.modes))))
    for m in modes:
        if m not in MODES:
            raise UnknownNameError("mode", m, MODES)
    chat = tuple(dict.fromkeys(str(c) for c in split_list(raw.get("chat", defaults.chat))))
    for c in chat:
        if c not in CHAT_POLICIES:
            raise UnknownNameError("chat policy", c, CHAT_POLICIES)
    try:
        seeds = tuple(dict.fromkeys(int(s) for s in split_list(raw.get("seeds", defaults.seeds))))
        n = int(raw.get("n", defaults.n))
    except (TypeError, ValueError):
        raise KvlabError("seeds and n must be integers") from None
    if n < 1:
        raise KvlabError(f"n (samples per cell) must be >= 1, not {n}")
    dtype = raw.get("dtype")
    if dtype is not None:
        from kvlab.models.loading import _parse_dtype

        _parse_dtype(str(dtype))
    values = dict(
        name=str(raw.get("name", defaults.name)), models=models, dtype=None if dtype is None else str(dtype),
        device=None if raw.get("device") is None else str(raw["device"]), methods=methods, budgets=budgets,
        tasks=tasks, lengths=tuple(dict.fromkeys(parse_length(x) for x in split_list(raw.get("lengths", defaults.lengths)))),
        modes=modes, seeds=seeds, n=n, chat=chat, db=str(raw.get("db", defaults.db)),
        chunk_sizes=tuple(dict.fromkeys(parse_chunk_size(c) for c in split_list(raw.get("chunk_sizes", [4096])))),
        reference=bool(raw.get("reference", defaults.reference)),
    )
    for key in ("models", "methods", "budgets", "lengths", "modes", "seeds", "chunk_sizes", "chat"):
        if not values[key]:
            raise KvlabError(f"'{key}' is empty; give at least one value")
    return SweepConfig(**values)


def _task_spec(item: Any) -> TaskSpec:
    if isinstance(item, str):
        return TaskSpec(item)
    if isinstance(item, dict) and "name" in item and set(item) <= {"name", "params"}:
        params = item.get("params") or {}
        if not isinstance(params, dict):
            raise KvlabError(f"params of task {item['name']} must be a mapping, e.g. {{depths: '0,50,100'}}")
        return TaskSpec(str(item["name"]), tuple(sorted((str(k), _frozen(v)) for k, v in params.items())))
    raise KvlabError(f"a task is a name or {{name: ..., params: {{...}}}}, not {item!r}")


def _frozen(value: Any) -> Any:
    """Lists from YAML become tuples, so a cell stays hashable."""
    return tuple(_frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


def check_model(name: str) -> str:
    """Validate a model name without loading it; returns the canonical name (``default`` for its aliases)."""
    from kvlab.models.loading import DEFAULT_ALIASES
    from kvlab.models.shapes import SHAPES

    if name.lower() in DEFAULT_ALIASES:
        return "default"
    if name.startswith("random:"):
        raise KvlabError(f"'{name}' has random weights and no tokenizer, so it cannot run benchmark tasks; "
                         "use 'default', a local model directory, a .gguf file or a cached Hugging Face id")
    if os.path.exists(name):
        return name
    if "/" in name:
        try:
            from huggingface_hub import try_to_load_from_cache

            if isinstance(try_to_load_from_cache(name, "config.json"), str):
                return name
        except Exception:  # a malformed id: fall through to the message below
            pass
        raise KvlabError(f"model '{name}' is neither a local path nor in the local Hugging Face cache, and kvlab "
                         "never downloads; fetch it first (`hf download NAME`) or pass a local directory")
    raise UnknownNameError("model", name, [*DEFAULT_ALIASES, *(f"random:{s}" for s in SHAPES), "PATH", "ORG/NAME"])


def expand(config: SweepConfig) -> list[Cell]:
    """Every cell of the sweep, in run order (model, task, length, seed, chat, chunk, mode, method, budget)."""
    from kvlab.methods import get_method
    from kvlab.models.loading import default_device, default_dtype

    device = config.device or default_device()
    dtype = config.dtype or str(default_dtype(device)).removeprefix("torch.")
    methods = list(config.methods)
    if config.reference and not any(m.split(":")[0].strip() == "full" for m in methods):
        methods.insert(0, "full")
    compressing = [b for b in config.budgets if b != "full"]
    if not compressing and any(get_method(m).name != "full" for m in methods):
        raise KvlabError("the sweep has compressing methods but no budget below full; give budgets such as "
                         "--budgets 25%,50% (or 512, 64MiB)")
    task_modes = {task: modes_of(task, config.modes) for task in config.tasks}
    cells = []
    for model in config.models:
        for task in config.tasks:
            for length in config.lengths:
                for seed in config.seeds:
                    for chat in config.chat:
                        for chunk in config.chunk_sizes:
                            for mode in task_modes[task]:
                                for spec in methods:
                                    method = get_method(spec)
                                    budgets = ["full"] if method.name == "full" else compressing
                                    config_json = json.dumps({"name": method.name, **dataclasses.asdict(method)},
                                                             sort_keys=True, default=str)
                                    for budget in budgets:
                                        cells.append(Cell(model, dtype, method.describe(), config_json,
                                                          type(method).family, budget, task.name, task.params,
                                                          length, mode, seed, chunk, chat, config.n, spec))
    return cells


def modes_of(task: TaskSpec, modes: tuple[str, ...]) -> tuple[str, ...]:
    """Perplexity has no questions, so no query-aware/agnostic distinction: it runs once, as ``none``."""
    from kvlab.tasks.registry import get_task

    return ("none",) if getattr(get_task(task.name, **dict(task.params)), "kind", None) == "perplexity" else modes
