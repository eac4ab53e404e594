"""Provenance of a run: what produced the numbers, recorded with every run in the store."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from typing import Any


def git_sha(path: str | None = None) -> str | None:
    """The commit of the kvlab checkout (``+dirty`` when it has uncommitted changes); None outside git."""
    where = path or os.path.dirname(os.path.abspath(__file__))
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5, check=False)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=10, check=False)
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def device_description(device: Any) -> str:
    """``cpu (Intel Xeon ..., 2 threads)`` or ``cuda:0 (NVIDIA H100 80GB HBM3)``."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return f"{dev} ({cpu}, {torch.get_num_threads()} threads)"


def collect(lm: Any, *, seed: int | None = None, chat: Any = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Provenance of running ``lm`` (a :class:`~kvlab.models.loading.LoadedModel`) now."""
    import torch
    import transformers

    from kvlab import __version__

    model_attn = getattr(getattr(lm.model, "config", None), "_attn_implementation", None)
    out = {
        "kvlab_version": __version__,
        "git_sha": git_sha(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "device": device_description(lm.device),
        "dtype": str(lm.spec.dtype).removeprefix("torch."),
        "attention": f"kvlab attention function (torch SDPA; blocked exact masked attention for evicted/sparse "
                     f"layouts); model default {model_attn}",
        "model": lm.name,
        "model_source": lm.source,
        "seed": seed,
        "chat_template_policy": chat,
    }
    out.update(extra or {})
    return out
