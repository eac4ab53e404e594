"""One benchmark case, run in a fresh process: ``python -m kvlab.bench.worker '<case json>'``.

A case is a plain dict (see :class:`kvlab.bench.runner.BenchConfig` for the fields). ``role``:

* ``kvlab``: prefill (+ compression) through :func:`kvlab.engine.prefill_context`, then
  ``decode_tokens`` timed decoding steps through :mod:`kvlab.decoding` (after ``warmup_steps``
  untimed ones; a CUDA graph is captured during those), greedy, host sync per token as in serving;
* ``transformers``: the baseline without kvlab -- one-shot ``model(ids)`` prefill with its own
  ``DynamicCache``, then a plain greedy loop over ``model(token, past_key_values=cache)`` (optionally
  also ``model.generate`` continuing from a fresh prefill, timed per token with a streamer);
* ``device``: copy bandwidth and the device's description.

The result is printed as one line ``KVLAB_BENCH_RESULT {json}`` on stdout.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from typing import Any

import torch

from kvlab.bench.measure import PeakMemory, attention_backends, copy_bandwidth, device_info, heap_reuse
from kvlab.models import hf_compat

MARKER = "KVLAB_BENCH_RESULT "
SHORT_WARMUP = 256
BASELINE_LABEL = "plain transformers"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _load(case: dict[str, Any]):
    from transformers.utils import logging as hf_logging

    from kvlab.models import load_model

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    return load_model(case["model"], dtype=case.get("dtype"), device=case.get("device"))


def _ids(lm, n: int, seed: int) -> list[int]:
    vocab = int(lm.model.get_input_embeddings().weight.shape[0])
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n,), generator=g).tolist()


def weight_bytes(model) -> tuple[int, int]:
    """``(all parameter bytes, bytes one decoding step reads)``: the input embedding is read one row
    per token, so it counts only when it is also the output head (tied)."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    tied = head is not None and head.weight.data_ptr() == emb.data_ptr()
    return total, total if tied else total - emb.numel() * emb.element_size()


def _warmup_length(case: dict[str, Any], device: torch.device) -> int:
    """CUDA: the full length (compilation, kernel plans; the allocator's reserve does not count in
    ``max_memory_allocated``). CPU: a short prompt (a full one would leave freed pages in the RSS
    baseline and flatter the peak)."""
    mode = case.get("warmup", "auto")
    if mode == "none":
        return 0
    if mode == "full" or (mode == "auto" and device.type == "cuda"):
        return case["length"]
    return min(SHORT_WARMUP, case["length"])


@contextlib.contextmanager
def _decode_backend(device: torch.device, cudnn: bool):
    """cuDNN SDPA re-plans for every new KV length (gpu-notes.md): off while decoding unless asked."""
    if device.type != "cuda" or cudnn or not hasattr(torch.backends.cuda, "enable_cudnn_sdp"):
        yield
        return
    before = torch.backends.cuda.cudnn_sdp_enabled()
    torch.backends.cuda.enable_cudnn_sdp(False)
    try:
        yield
    finally:
        torch.backends.cuda.enable_cudnn_sdp(before)


def _common(case, lm, ids) -> dict[str, Any]:
    weights, read = weight_bytes(lm.model)
    return {"role": case["role"], "model": lm.name, "model_source": lm.source,
            "dtype": str(lm.spec.dtype).removeprefix("torch."), "device": str(lm.device),
            "length": len(ids), "decode_tokens": case["decode_tokens"], "warmup_steps": case["warmup_steps"],
            "weight_bytes": weights, "weight_read_bytes": read, "full_kv_bytes": lm.spec.full_cache_bytes(len(ids)),
            "sdpa_backends": attention_backends(lm.device), "cudnn_decode": bool(case.get("cudnn_decode")),
            "torch_threads": torch.get_num_threads()}


def run_kvlab(case: dict[str, Any]) -> dict[str, Any]:
    from kvlab import decode_kernel
    from kvlab.apply_method import apply
    from kvlab.decoding import make_step, resolve_mode
    from kvlab.engine import check_fits, prefill_context
    from kvlab.methods import get_method
    from kvlab.sparse.prefill import kernel_for

    lm = _load(case)
    device = lm.device
    method = get_method(case["method"])
    steps = case["warmup_steps"] + case["decode_tokens"]
    ids = _ids(lm, case["length"], case.get("seed", 0))
    check_fits(lm, len(ids), steps + 1, method)
    mode = resolve_mode(case.get("decode_mode", "auto"), device, method)
    kernel = decode_kernel.kernel_for(method, mode) if mode != "eager" else None  # static decode attention
    budget, chunk = case.get("budget"), case.get("chunk_size")

    def decode(prefilled, warm: int, timed: int, mode: str = mode) -> float:
        cache = prefilled.cache
        with torch.no_grad(), heap_reuse(), apply(lm, method, prefilled.budget) as state, \
                _decode_backend(device, case.get("cudnn_decode")):
            state.cache, state.phase, state.prompt_tokens = cache, "append", prefilled.context_tokens
            step = make_step(mode, lm.model, cache, device, state, warm + timed + 1)
            token = int(prefilled.last_logits.argmax())
            for _ in range(warm):
                token = int(step(token).argmax())
            _sync(device)
            start = time.perf_counter()
            for _ in range(timed):
                token = int(step(token).argmax())
            _sync(device)
            seconds = time.perf_counter() - start
            step.finish()
        return seconds

    warm_len = _warmup_length(case, device)
    if warm_len:
        warm = prefill_context(lm, ids[:warm_len], method, budget, chunk, reserve_extra=steps + 2)
        # A compiled step is specialised to its cache capacity: compiling it for a shorter warm-up
        # prompt would only be thrown away (~100 s a case on CPU), so the warm-up runs it uncompiled;
        # the measured case compiles during its own untimed warm-up steps.
        warm_mode = "static" if mode == "compiled" and warm_len != len(ids) else mode
        decode(warm, case["warmup_steps"], 1, warm_mode)
        del warm
        if device.type == "cuda":
            torch.cuda.empty_cache()
    with PeakMemory(device) as prefill_mem:
        prefilled = prefill_context(lm, ids, method, budget, chunk, reserve_extra=steps + 2)
    kv_bytes, kv_peak = prefilled.cache.bytes_held, prefilled.cache.peak_bytes
    with PeakMemory(device) as decode_mem:
        seconds = decode(prefilled, case["warmup_steps"], case["decode_tokens"])
    sparse = method.kind == "sparse_prefill"
    prefill_attention = (f"kvlab sparse ({kernel_for(getattr(method, 'kernel', 'auto'), device)})" if sparse else
                         "kvlab masked (blocked exact)" if method.needs_attention_weights else
                         _chunk_attention_label(device))
    return {
        **_common(case, lm, ids), "method": method.describe(), "method_spec": case["method"],
        "method_kind": method.kind, "budget": str(prefilled.budget) if method.compresses else "full",
        "chunk_size": chunk, "decode_mode": decode_kernel.mode_label(mode, method),  # the store keys records by mode
        "prefill_seconds": prefilled.prefill_seconds, "prefill_peak_bytes": prefill_mem.peak_over_base,
        "decode_peak_bytes": decode_mem.peak_over_base, "memory_method": prefill_mem.method,
        "kv_bytes": kv_bytes, "kv_peak_bytes": kv_peak, "kv_allocated_bytes": prefilled.cache.bytes_allocated,
        "kv_decode_bytes": prefilled.cache.bytes_held, "decode_ms_per_token": seconds / case["decode_tokens"] * 1e3,
        "attention": {"prefill": prefill_attention, "decode": _decode_attention_label(mode, kernel, method, lm)},
        "warmup_length": warm_len,
    }


def _decode_attention_label(mode: str, kernel: str | None, method, lm) -> str:
    """What ran decode attention: ``kernel`` is :func:`kvlab.decode_kernel.kernel_for`'s (None: eager)."""
    from kvlab import attention, decode_kernel

    if kernel is None:
        return "sdpa"
    softcap = getattr(lm.model.config.get_text_config(), "attn_logit_softcapping", None)  # what attention gets
    if kernel == "flex":
        name = "flex_attention (FlexDecoding)"
    elif attention.cpu_flash_decodes(lm.device, decode_kernel.wants_key_mass(method), softcap):
        name = "decode_attention (CPU flash kernel)"
    else:
        name = "decode_attention (matmuls)"
    if kernel == "inductor":
        name += " traced into the step"
    return f"kvlab {name} (static cache{', torch.compile' if mode == 'compiled' else ''})"


def _chunk_attention_label(device: torch.device) -> str:
    from kvlab import chunk_attention

    if chunk_attention.kernel_for(device) is None:
        return "kvlab sdpa"
    if chunk_attention.split_refused():  # the opt-in CUDA split fell back at least once
        return "kvlab sdpa (chunks: log-sum-exp split refused, lower-right kernel)"
    return "kvlab sdpa (chunks: log-sum-exp split)"


class _Clock:
    """A generate() streamer that timestamps every put (the prompt first, then each new token)."""

    def __init__(self):
        self.times: list[float] = []

    def put(self, value) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def _cache_bytes(cache) -> int:
    """Key/value bytes a cache (kvlab's or transformers') holds; linear-attention state layers hold none."""
    tensors = (getattr(layer, name, None) for layer in cache.layers for name in ("keys", "values"))
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def _greedy_loop(model, cache, first: torch.Tensor, start: int, steps: int, device) -> list[float]:
    """Plain transformers decoding: ``model(token, past_key_values=DynamicCache)`` then argmax, one host
    sync per token (as kvlab's loop and a server do). No attention mask is passed, as in kvpress's
    pipeline, so SDPA can take its mask-free kernels. Returns a timestamp after each step."""
    token, stamps = first, []
    for i in range(steps):
        pos = torch.tensor([[start + i]], device=device)
        out = model(input_ids=token, position_ids=pos, use_cache=True, logits_to_keep=1,
                    **hf_compat.cache_kwargs(model, cache))
        token = out.logits[:, -1:].argmax(-1)
        token.item()
        stamps.append(time.perf_counter())
    return stamps


def run_transformers(case: dict[str, Any]) -> dict[str, Any]:
    """The baseline: one-shot prefill with transformers' own DynamicCache, then a plain greedy loop
    (and, with ``generate``, ``model.generate`` continuing from a second prefill's cache)."""
    lm = _load(case)
    model, device = lm.model, lm.device
    warm_steps, timed = case["warmup_steps"], case["decode_tokens"]
    ids = _ids(lm, case["length"], case.get("seed", 0))
    window = lm.spec.max_positions
    if window and len(ids) + warm_steps + timed + 2 > window:
        from kvlab.errors import PromptTooLongError

        raise PromptTooLongError(f"{len(ids)} tokens + {warm_steps + timed + 2} to generate exceed the "
                                 f"model's window of {window}")
    input_ids = torch.tensor([ids], device=device)
    gen = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None, "pad_token_id": 0}

    def prefill(n: int):
        out = model(input_ids=input_ids[:, :n], use_cache=True, logits_to_keep=1)
        return out.logits[:, -1:].argmax(-1), hf_compat.output_cache(out)

    def loop(first, cache, n: int, steps: int) -> list[float]:
        with heap_reuse(), _decode_backend(device, case.get("cudnn_decode")):
            return _greedy_loop(model, cache, first, n, steps, device)

    def generate(first, cache, n: int, new: int) -> list[float]:
        clock = _Clock()
        with heap_reuse(), _decode_backend(device, case.get("cudnn_decode")):
            model.generate(torch.cat([input_ids[:, :n], first], dim=1), max_new_tokens=new, min_new_tokens=new,
                           streamer=clock, **gen, **hf_compat.cache_kwargs(model, cache))
        _sync(device)
        return clock.times[1:]  # one per new token

    warm_len = _warmup_length(case, device)
    extra: dict[str, Any] = {}
    with torch.no_grad():
        if warm_len:
            first, cache = prefill(warm_len)
            loop(first, cache, warm_len, warm_steps + 1)
            del first, cache
            if device.type == "cuda":
                torch.cuda.empty_cache()
        with PeakMemory(device) as prefill_mem:
            _sync(device)
            start = time.perf_counter()
            first, cache = prefill(len(ids))
            _sync(device)
            prefill_seconds = time.perf_counter() - start
        kv_bytes = _cache_bytes(cache)
        with PeakMemory(device) as decode_mem:
            stamps = loop(first, cache, len(ids), warm_steps + timed + 1)
        kv_decode = _cache_bytes(cache)
        if case.get("generate"):
            del cache
            first, cache = prefill(len(ids))
            gstamps = generate(first, cache, len(ids), warm_steps + timed + 1)
            extra["generate_ms_per_token"] = (gstamps[warm_steps + timed] - gstamps[warm_steps]) / timed * 1e3
    return {
        **_common(case, lm, ids), "method": BASELINE_LABEL, "method_spec": "transformers",
        "method_kind": "baseline", "budget": "full", "chunk_size": None, "decode_mode": "greedy loop",
        "prefill_seconds": prefill_seconds, "prefill_peak_bytes": prefill_mem.peak_over_base,
        "decode_peak_bytes": decode_mem.peak_over_base, "memory_method": prefill_mem.method,
        "kv_bytes": kv_bytes, "kv_peak_bytes": kv_bytes, "kv_allocated_bytes": kv_bytes,
        "kv_decode_bytes": kv_decode,
        "decode_ms_per_token": (stamps[warm_steps + timed] - stamps[warm_steps]) / timed * 1e3,
        "attention": {"prefill": f"transformers {model.config._attn_implementation}",
                      "decode": f"transformers {model.config._attn_implementation} (DynamicCache, no mask)"},
        "warmup_length": warm_len, **extra,
    }


def run_device(case: dict[str, Any]) -> dict[str, Any]:
    from kvlab.models.loading import default_device

    device = torch.device(case.get("device") or default_device())
    return {"role": "device", **device_info(device), **copy_bandwidth(device)}


ROLES = {"kvlab": run_kvlab, "transformers": run_transformers, "device": run_device}


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """Run one case in this process and return its row (errors become an ``error`` field)."""
    from kvlab.errors import KvlabError

    torch.set_grad_enabled(False)
    if case.get("threads"):
        torch.set_num_threads(int(case["threads"]))
    if case.get("decode_attention"):  # this process only: the kernel static decoding steps pick
        from kvlab import decode_kernel

        os.environ[decode_kernel.SWITCH] = case["decode_attention"]
    try:
        return ROLES[case["role"]](case)
    except KvlabError as exc:
        return error_row(case, str(exc))
    except torch.OutOfMemoryError as exc:
        return error_row(case, f"out of memory: {str(exc)[:200]}")


def error_row(case: dict[str, Any], error: str) -> dict[str, Any]:
    """The row of a case that failed, labelled as its measured row would be."""
    role = case["role"]
    method = BASELINE_LABEL if role == "transformers" else case.get("method", role)
    return {"role": role, "method": method, "method_spec": case.get("method", role), "length": case.get("length"),
            "error": error}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    case = json.loads(argv[0])
    result = run_case(case)
    print(MARKER + json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
