"""load_model: the embedded default, a local HF directory, a GGUF file, a cached HF id, or random weights.

kvlab never downloads: a Hugging Face id must already be in the local cache.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kvlab.errors import KvlabError, UnknownNameError
from kvlab.models import shapes
from kvlab.models.embedded import EMBEDDED_NAME, embedded_model_dir
from kvlab.models.spec import ModelSpec

DEFAULT_ALIASES = ("default", "smollm2", "smollm2-135m", "smollm2-135m-instruct")


@dataclass
class LoadedModel:
    """A model ready for kvlab: the HF module, its tokenizer (may be None for random weights) and spec."""

    model: Any
    tokenizer: Any
    spec: ModelSpec
    name: str
    source: str

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(name: str) -> torch.device:
    """``name`` as a torch device that exists here; a clear error otherwise."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise KvlabError(f"unknown device '{name}'; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise KvlabError(f"device '{name}' asked for, but this torch sees no CUDA GPU; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise KvlabError(f"device '{name}' asked for, but only {torch.cuda.device_count()} CUDA GPU(s) are visible")
    return device


def default_dtype(device: str | torch.device) -> torch.dtype:
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def load_model(
    name: str = "default",
    *,
    dtype: torch.dtype | str | None = None,
    device: str | None = None,
    device_map: str | None = None,
) -> LoadedModel:
    """Load a causal LM for kvlab.

    Args:
        name: ``default`` (embedded SmolLM2-135M-Instruct), a local HF directory, a ``.gguf`` file,
            a Hugging Face id already in the local cache, or ``random:<shape>`` (random weights of a
            named shape, e.g. ``random:llama-3.1-8b``; see ``kvlab ls models``).
        dtype: torch dtype or its name; default float32 on CPU, bfloat16 on CUDA.
        device: ``cpu``, ``cuda``, ``cuda:1`` ...; default CUDA when available.
        device_map: passed to transformers (e.g. ``auto`` to spread a big model over GPUs).
    """
    device = device or default_device()
    if not device_map:
        check_device(device)
    if isinstance(dtype, str):
        dtype = _parse_dtype(dtype)
    dtype = dtype or default_dtype(device)
    from transformers import AutoTokenizer

    common: dict[str, Any] = {"dtype": dtype, "trust_remote_code": False, "attn_implementation": "sdpa"}
    if device_map:
        common["device_map"] = device_map
    tokenizer = None
    if name.lower() in DEFAULT_ALIASES:
        path = embedded_model_dir()
        model = _model_from_pretrained(str(path), use_safetensors=True, **common)
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        label, source = EMBEDDED_NAME, f"embedded:{path}"
    elif name.startswith("random:"):
        shape = name.split(":", 1)[1]
        model = shapes.random_model(shape, dtype=dtype, device="cpu" if device_map else device)
        label, source = name, "random weights"
    elif os.path.exists(name):
        model, tokenizer, label, source = _load_local(Path(name), common)
    else:
        model, tokenizer, label, source = _load_hub_cached(name, common)
    if not device_map:
        model = model.to(device)
    model.eval()
    spec = ModelSpec.from_config(model.config, dtype=dtype, name=label)
    return LoadedModel(model=model, tokenizer=tokenizer, spec=spec, name=label, source=source)


def _model_from_pretrained(*args: Any, **kwargs: Any) -> Any:
    """``AutoModelForCausalLM.from_pretrained`` with SDPA attention, or eager attention where the
    architecture has no SDPA path (Gemma 2, gpt-oss): under ``kvlab.apply()`` kvlab's own attention
    replaces either; the model's own runs only in plain baselines."""
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(*args, **kwargs)
    except ValueError as exc:
        if "scaled_dot_product_attention" not in str(exc):
            raise
        return AutoModelForCausalLM.from_pretrained(*args, **{**kwargs, "attn_implementation": "eager"})


def load_config(name: str = "default") -> Any | None:
    """The transformers config of the model :func:`load_model` would load for ``name``, without its
    weights (for checks before any work starts); None where it cannot be read cheaply."""
    from transformers import AutoConfig

    try:
        if name.lower() in DEFAULT_ALIASES:
            return AutoConfig.from_pretrained(str(embedded_model_dir()))
        if name.startswith("random:"):
            return shapes.config_for(name.split(":", 1)[1])
        path = Path(name)
        if path.is_file():
            return AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
        return AutoConfig.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError, KvlabError):
        return None


def _load_local(path: Path, common: dict[str, Any]):
    from transformers import AutoTokenizer

    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise KvlabError(f"'{path}' is a file but not a .gguf; pass a GGUF file or a HF model directory")
        model = _model_from_pretrained(str(path.parent), gguf_file=path.name, **common)
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        return model, tokenizer, path.stem, f"gguf:{path}"
    if not (path / "config.json").is_file():
        raise KvlabError(f"'{path}' is a directory without config.json; pass a Hugging Face model directory")
    if not any(path.glob("*.safetensors")):
        raise KvlabError(
            f"'{path}' has no .safetensors weights; kvlab does not load pickled weights. "
            "Convert them with transformers' save_pretrained(safe_serialization=True)"
        )
    model = _model_from_pretrained(str(path), local_files_only=True, use_safetensors=True, **common)
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    return model, tokenizer, path.name, f"dir:{path}"


def _load_hub_cached(name: str, common: dict[str, Any]):
    from transformers import AutoTokenizer

    if "/" not in name:
        raise UnknownNameError("model", name, [*DEFAULT_ALIASES, *(f"random:{s}" for s in shapes.names())])
    try:
        model = _model_from_pretrained(name, local_files_only=True, use_safetensors=True, **common)
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=True)
    except OSError:
        raise KvlabError(
            f"model '{name}' is not in the local Hugging Face cache and kvlab never downloads. "
            f"Fetch it first (e.g. `hf download {name}`), pass a local directory or .gguf file, or use 'default'"
        ) from None
    return model, tokenizer, name, f"hf:{name}"


def _parse_dtype(text: str) -> torch.dtype:
    table = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    try:
        return table[text.lower()]
    except KeyError:
        raise UnknownNameError("dtype", text, table) from None
