"""Methods: one paper per file, registered by name.

``get_method("snapkv")``, ``get_method("snapkv", window_size=64)`` or
``get_method("snapkv:window_size=64,kernel_size=7")`` build a method; ``METHODS`` lists them.
"""

from __future__ import annotations

import dataclasses
import typing

from kvlab.errors import KvlabError
from kvlab.methods.base import LayerContext, Method
from kvlab.registry import Registry

METHODS: Registry[type[Method]] = Registry("method")


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: add a Method subclass to the registry under ``cls.name``."""
    if not cls.name:
        raise KvlabError(f"{cls.__name__} has no name")
    METHODS.add(cls.name, cls)
    return cls


def get_method(spec: str | Method, **kwargs) -> Method:
    """A method instance from a name (optionally ``name:key=value,...``) or an instance."""
    if isinstance(spec, Method):
        return dataclasses.replace(spec, **kwargs) if kwargs else spec
    name, _, params = str(spec).partition(":")
    cls = METHODS.get(name.strip())
    parsed = _parse_params(cls, params) if params else {}
    parsed.update(kwargs)
    try:
        return cls(**parsed)
    except TypeError as exc:
        valid = [f.name for f in dataclasses.fields(cls)]
        raise KvlabError(f"bad parameters for method '{name}': {exc}. Its parameters: {valid or 'none'}") from None


def _parse_params(cls: type[Method], text: str) -> dict:
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    out: dict = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or key not in fields:
            raise KvlabError(
                f"bad parameter '{item}' for method '{cls.name}': write key=value with key in {sorted(fields)}"
            )
        out[key] = _coerce(raw.strip(), hints.get(key), cls.name, key)
    return out


def _coerce(raw: str, hint, method: str, key: str):
    if hint is bool:
        if raw.lower() in ("1", "true", "yes"):
            return True
        if raw.lower() in ("0", "false", "no"):
            return False
    try:
        if hint is int:
            return int(raw)
        if hint is float:
            return float(raw)
    except ValueError:
        raise KvlabError(f"parameter {key}={raw!r} of method '{method}' must be a {hint.__name__}") from None
    if isinstance(hint, type) and issubclass(hint, Method):
        return get_method(raw)
    return raw


# Import the method modules so their @register_method decorators run.
from kvlab.methods import (  # noqa: E402,F401
    a_shape,
    adakv,
    full,
    h2o,
    knorm,
    lm_infinite,
    minference,
    pyramidkv,
    snapkv,
    streaming_llm,
    tova,
)

__all__ = ["METHODS", "LayerContext", "Method", "get_method", "register_method"]
