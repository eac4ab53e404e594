"""The one inference path: prefill (chunked, compressing) -> append the question -> decode.

The runner, the server and the benchmarks all call these functions, so what a report measures is
what the endpoint serves.

* :func:`prefill_context` feeds the context in chunks through the model under ``apply()`` with a
  :class:`~kvlab.cache.BudgetCache`; after each chunk every layer is back at its budget, so the
  KV held never exceeds budget + one chunk.
* :func:`continue_generation` appends the suffix (question, chat-template tail, answer prefix)
  to a prefilled context -- optionally to a *copy*, so one compressed context can answer many
  questions -- and decodes under the budget.
* :func:`generate` does both for one prompt and returns text plus measured stats.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from kvlab.apply_method import apply
from kvlab.budget import Budget
from kvlab.cache import BudgetCache
from kvlab.decoding import make_step
from kvlab.defaults import DEFAULT_CHUNK_SIZE
from kvlab.errors import KvlabError, PromptTooLongError
from kvlab.methods import Method, get_method
from kvlab.models import hf_compat
from kvlab.models.loading import LoadedModel
from kvlab.prompting import ChatPolicy, PromptParts, RenderedPrompt, render
from kvlab.sampling import Sampler, SamplingParams, TextAssembler


@dataclass
class GenerationStats:
    """Measured facts about one generation (bytes are keys+values of the cache tensors)."""

    method: str
    budget: str
    chunk_size: int | None
    prompt_tokens: int
    context_tokens: int
    kv_tokens: float  # tokens held per layer (mean over layers and KV heads) when decoding starts
    kv_bytes: int  # KV bytes held when decoding starts (after prefill)
    peak_kv_bytes: int  # most KV bytes held at any moment
    full_kv_bytes: int  # what an uncompressed cache would hold for the prompt
    prefill_seconds: float  # context + suffix, up to the first token's logits
    decode_seconds: float
    new_tokens: int
    finish_reason: str
    device_peak_bytes: int | None = None  # CUDA: max_memory_allocated over what was allocated before
    decode_steps: int = 0  # forward passes of the decoding loop (the last token needs none)
    first_step_seconds: float = 0.0  # the first of them alone: where a compiled step compiles, a graph captures

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Generation:
    text: str
    token_ids: list[int]
    stats: GenerationStats


@dataclass
class PrefilledContext:
    """A context prefilled (and compressed) under a method; reusable for many continuations."""

    loaded: LoadedModel
    method: Method
    budget: Budget
    cache: BudgetCache
    context_ids: list[int]
    last_logits: torch.Tensor
    prefill_seconds: float
    chunk_size: int | None
    device_base: int | None = None

    @property
    def context_tokens(self) -> int:
        return len(self.context_ids)


def check_fits(loaded: LoadedModel, prompt_tokens: int, max_new_tokens: int, method: Method) -> None:
    """Raise :class:`PromptTooLongError` when prompt + generation exceeds the trained window."""
    window = loaded.spec.max_positions
    if not window or prompt_tokens + max_new_tokens <= window:
        return
    room = window - prompt_tokens
    fix = (
        f"at most {room} new tokens fit (--max-new-tokens {room})"
        if room > 0
        else f"cut the prompt by at least {prompt_tokens - window + max_new_tokens} tokens"
    )
    raise PromptTooLongError(
        f"the prompt has {prompt_tokens} tokens and {max_new_tokens} more would be generated, but "
        f"{loaded.name} was trained on a window of {window} positions: {fix}. Eviction methods such as "
        f"'{method.name}' shrink the cache, not the positions, so they do not lift this limit"
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _chunks(ids: Sequence[int], chunk_size: int | None) -> list[Sequence[int]]:
    """Near-equal chunks of at most ``chunk_size`` (no tiny last chunk); one chunk for None."""
    n = len(ids)
    if not chunk_size or n <= chunk_size:
        return [ids]
    count = -(-n // chunk_size)
    size = -(-n // count)
    return [ids[i:i + size] for i in range(0, n, size)]


def _forward(model, ids: Sequence[int], cache: BudgetCache, device, all_logits: bool = False) -> torch.Tensor:
    input_ids = torch.tensor([list(ids)], dtype=torch.long, device=device)
    start = cache.get_seq_length()
    position_ids = torch.arange(start, start + input_ids.shape[1], device=device).unsqueeze(0)
    out = model(input_ids=input_ids, position_ids=position_ids, use_cache=True,
                logits_to_keep=0 if all_logits else 1, **hf_compat.cache_kwargs(model, cache))
    return out.logits[0]


def prefill_context(
    loaded: LoadedModel,
    context_ids: Sequence[int],
    method: str | Method = "full",
    budget: str | int | float | Budget | None = None,
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
    reserve_extra: int = 0,
    on_chunk: Callable[[int, int], None] | None = None,
) -> PrefilledContext:
    """Prefill ``context_ids`` in chunks, compressing every layer to its budget after each chunk.

    ``reserve_extra`` preallocates room for that many tokens beyond budget + chunk (the suffix and
    generated tokens of a prefill-only method). ``on_chunk(done, total)`` reports progress.
    """
    method = get_method(method)
    budget = Budget.parse(budget)
    if not context_ids:
        raise KvlabError("the context is empty; give a prompt or a file with some text")
    if chunk_size is not None and chunk_size < 1:
        raise KvlabError(f"chunk size must be >= 1 or None, not {chunk_size}")
    spec, model, device = loaded.spec, loaded.model, loaded.device
    n = len(context_ids)
    chunks = _chunks(context_ids, chunk_size)
    if method.compresses:
        kept = budget.resolve(spec, n)
        reserve = max(method.layer_capacities(kept, spec, n)) + len(chunks[0]) + reserve_extra
    else:
        reserve = n + reserve_extra
    cache = BudgetCache(spec, reserve=reserve)
    device_base = _reset_device_peak(device)
    _sync(device)
    start = time.perf_counter()
    with torch.no_grad(), apply(loaded, method, budget) as state:
        state.cache, state.phase, state.prompt_tokens = cache, "context", n
        done = 0
        for chunk in chunks:
            logits = _forward(model, chunk, cache, device)[-1]
            done += len(chunk)
            if on_chunk:
                on_chunk(done, n)
    _sync(device)
    return PrefilledContext(
        loaded=loaded, method=method, budget=budget, cache=cache, context_ids=list(context_ids),
        last_logits=logits, prefill_seconds=time.perf_counter() - start, chunk_size=chunk_size,
        device_base=device_base,
    )


def continue_generation(
    prefilled: PrefilledContext,
    suffix_ids: Sequence[int],
    sampling: SamplingParams,
    *,
    copy: bool = False,
    on_text: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    decode: str = "auto",
) -> Generation:
    """Append ``suffix_ids`` to a prefilled context and decode.

    With ``copy=True`` the prefilled cache is cloned first and stays reusable. Prefill-time methods
    keep the suffix and generated tokens; decode-time methods keep evicting to the budget.
    ``on_text`` receives text deltas as they become safe to show (streaming); ``should_stop()`` is
    polled every step (a disconnected client). ``decode`` picks how steps run (see
    :mod:`kvlab.decoding`): ``auto`` = CUDA graphs on a GPU; on CPU static for decode-time eviction
    methods, eager otherwise.
    """
    loaded, method = prefilled.loaded, prefilled.method
    model, device, spec = loaded.model, loaded.device, loaded.spec
    prompt_tokens = prefilled.context_tokens + len(suffix_ids)
    check_fits(loaded, prompt_tokens, sampling.max_new_tokens, method)
    spare = len(suffix_ids) + (sampling.max_new_tokens if not method.evicts_during_decode else 1)
    cache = prefilled.cache.clone(spare=spare) if copy else prefilled.cache
    device_base = _reset_device_peak(device) if copy else prefilled.device_base
    sampler = Sampler(sampling)
    assembler = TextAssembler(loaded.tokenizer, sampling.stop)
    eos = _eos_ids(loaded)
    tokens: list[int] = []
    finish = "length"
    with torch.no_grad(), apply(loaded, method, prefilled.budget) as state:
        state.cache, state.phase, state.prompt_tokens = cache, "append", prefilled.context_tokens
        start = time.perf_counter()
        logits = _forward(model, suffix_ids, cache, device)[-1] if suffix_ids else prefilled.last_logits
        _sync(device)
        suffix_seconds = time.perf_counter() - start
        # A reused context was prefilled once, earlier: this request paid only for its suffix.
        prefill_seconds = suffix_seconds + (0.0 if copy else prefilled.prefill_seconds)
        kv_tokens = _mean(cache.tokens_per_layer())
        kv_bytes = cache.bytes_held
        start = time.perf_counter()
        step_fn = make_step(decode, model, cache, device, state, sampling.max_new_tokens)
        steps, first_step_seconds = 0, 0.0
        for step in range(sampling.max_new_tokens):
            token = sampler(logits)
            if token in eos:
                finish = "stop"
                break
            tokens.append(token)
            delta = assembler.add(token)
            if delta and on_text:
                on_text(delta)
            if assembler.stopped:
                finish = "stop"
                break
            if should_stop and should_stop():
                finish = "cancelled"
                break
            if step + 1 < sampling.max_new_tokens:
                if steps == 0:
                    _sync(device)
                    first = time.perf_counter()
                    logits = step_fn(token)
                    _sync(device)
                    first_step_seconds = time.perf_counter() - first
                else:
                    logits = step_fn(token)
                steps += 1
        _sync(device)
        decode_seconds = time.perf_counter() - start
        step_fn.finish()
    tail = assembler.flush() if not assembler.stopped else ""
    if tail and on_text:
        on_text(tail)
    stats = GenerationStats(
        method=method.describe(), budget=str(prefilled.budget), chunk_size=prefilled.chunk_size,
        prompt_tokens=prompt_tokens, context_tokens=prefilled.context_tokens, kv_tokens=kv_tokens,
        kv_bytes=kv_bytes, peak_kv_bytes=cache.peak_bytes,
        full_kv_bytes=spec.full_cache_bytes(prompt_tokens), prefill_seconds=prefill_seconds,
        decode_seconds=decode_seconds, new_tokens=len(tokens), finish_reason=finish,
        device_peak_bytes=_device_peak(device, device_base), decode_steps=steps,
        first_step_seconds=first_step_seconds,
    )
    return Generation(text=assembler.text, token_ids=tokens, stats=stats)


def generate(
    loaded: LoadedModel,
    prompt: str | PromptParts | RenderedPrompt,
    *,
    question: str | None = None,
    answer_prefix: str = "",
    chat: ChatPolicy = "template",
    method: str | Method = "full",
    budget: str | int | float | Budget | None = None,
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    stop: Sequence[str] = (),
    on_text: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_chunk: Callable[[int, int], None] | None = None,
    decode: str = "auto",
    prefill: Callable[..., PrefilledContext] | None = None,
) -> Generation:
    """Generate under ``method`` and ``budget``: the context is compressed before the question is seen.

    ``prompt`` is the context text (with ``question`` appended after compression, on a paragraph of
    its own), a :class:`PromptParts`, or an already rendered prompt. Returns text and
    :class:`GenerationStats`. ``prefill`` replaces :func:`prefill_context` (same signature), e.g.
    :meth:`kvlab.shared_prefill.PrefillMemo.prefill` in sweeps.
    """
    method = get_method(method)
    sampling = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                              seed=seed, stop=tuple(stop))
    if isinstance(prompt, RenderedPrompt):
        rendered = prompt
    else:
        if isinstance(prompt, PromptParts):
            parts = prompt
        else:
            if question and prompt[-1:].strip() and question[:1].strip():
                question = "\n\n" + question  # keep the question a paragraph of its own
            parts = PromptParts(context=prompt, question=question or "", answer_prefix=answer_prefix)
        rendered = render(loaded.tokenizer, parts, chat)
    check_fits(loaded, rendered.num_tokens, max_new_tokens, method)
    extra = len(rendered.suffix_ids) + (max_new_tokens if not method.evicts_during_decode else 1)
    if prefill is None:
        prefilled = prefill_context(loaded, rendered.context_ids, method, budget, chunk_size,
                                    reserve_extra=extra, on_chunk=on_chunk)
    else:
        prefilled = prefill(loaded, rendered.context_ids, method, budget, chunk_size, reserve_extra=extra)
    return continue_generation(prefilled, rendered.suffix_ids, sampling, on_text=on_text,
                               should_stop=should_stop, decode=decode)


def _eos_ids(loaded: LoadedModel) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(loaded.model, "generation_config", None), loaded.tokenizer):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _reset_device_peak(device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


def _device_peak(device: torch.device, base: int | None) -> int | None:
    if base is None:
        return None
    return torch.cuda.max_memory_allocated(device) - base


def token_logprobs(
    loaded: LoadedModel,
    ids: Sequence[int],
    method: str | Method = "full",
    budget: str | int | float | Budget | None = None,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Log-probability of each token given the ones before it, under ``method`` and ``budget``.

    The text is fed in chunks of ``chunk_size``; every layer is compressed back to its budget
    after each chunk, so a token is predicted from what the method kept of the earlier chunks plus
    the tokens of its own chunk (streaming language modelling). Returns float32 ``(len(ids) - 1,)``
    where entry ``i`` is ``log p(ids[i + 1] | ids[:i + 1])``.
    """
    method = get_method(method)
    budget = Budget.parse(budget)
    if len(ids) < 2:
        raise KvlabError("perplexity needs at least two tokens")
    spec, model, device = loaded.spec, loaded.model, loaded.device
    n = len(ids)
    kept = budget.resolve(spec, n) if method.compresses else n
    reserve = (max(method.layer_capacities(kept, spec, n)) + chunk_size) if method.compresses else n
    cache = BudgetCache(spec, reserve=reserve)
    out = torch.empty(n - 1, dtype=torch.float32)
    with torch.no_grad(), apply(loaded, method, budget) as state:
        state.cache, state.phase, state.prompt_tokens = cache, "context", n
        for start in range(0, n, chunk_size):
            chunk = ids[start:start + chunk_size]
            logits = _forward(model, chunk, cache, device, all_logits=True).float()
            targets = torch.tensor(ids[start + 1:start + 1 + len(chunk)], device=logits.device)
            logp = torch.log_softmax(logits[: len(targets)], dim=-1).gather(-1, targets.unsqueeze(-1))[:, 0]
            out[start:start + len(targets)] = logp.cpu()
    return out
