"""Static (capturable) decoding gives the eager path's tokens and keeps the budget; CUDA graphs on GPU."""

from __future__ import annotations

import functools
import shutil

import pytest
import torch
from tinymodels import LargestAllocation, kv_layers, make_tiny, random_ids
from method_matrix import METHOD_CASES

from kvlab.apply_method import apply
from kvlab.decoding import CAPACITY_MULTIPLE, make_step
from kvlab.engine import continue_generation, prefill_context
from kvlab.errors import KvlabError
from kvlab.methods import get_method
from kvlab.sampling import SamplingParams

EXACT = [n for n in METHOD_CASES if get_method(n).kind != "sparse_prefill"]


def run(lm, name, mode, budget=30, new=16):
    m = get_method(name, **METHOD_CASES[name])
    prefilled = prefill_context(lm, random_ids(70, seed=31), m, budget, 16)
    out = continue_generation(prefilled, random_ids(3, seed=32), SamplingParams(max_new_tokens=new), decode=mode)
    return out, prefilled.cache


@pytest.mark.parametrize("name", EXACT)
def test_static_decoding_matches_eager(tiny, name):
    eager, eager_cache = run(tiny, name, "eager")
    static, static_cache = run(tiny, name, "static")
    assert static.token_ids == eager.token_ids
    # the step counts tokens on the device; the host counter is right again once decoding ends
    assert static_cache.get_seq_length() == eager_cache.get_seq_length() == 70 + 3 + 15


@functools.cache
def inductor_compiles_on_cpu() -> bool:
    """Whether torch.compile's CPU backend works here (a C++ compiler and Python headers)."""
    if shutil.which("cc") is None and shutil.which("gcc") is None and shutil.which("g++") is None:
        return False
    try:
        torch.compile(lambda x: x * 2 + 1, fullgraph=True)(torch.ones(3))
    except Exception:  # noqa: BLE001 - any toolchain problem means: cannot test here
        return False
    return True


@pytest.mark.parametrize("arch,name", [("llama", "h2o"), ("mistral", "snapkv")])  # evicting / growing
def test_compiled_decoding_matches_eager(arch, name):
    """torch.compile of the static step (inductor) gives the eager tokens, traced as one graph."""
    from torch._dynamo.utils import counters

    from torch._inductor.utils import run_and_get_code

    if not inductor_compiles_on_cpu():
        pytest.skip("torch.compile's CPU backend does not work here (C++ compiler, Python headers)")
    lm = make_tiny(arch)
    eager, _ = run(lm, name, "eager")
    torch._dynamo.reset()
    counters.clear()
    (compiled, cache), code = run_and_get_code(lambda: run(lm, name, "compiled"))
    assert compiled.token_ids == eager.token_ids
    assert counters["stats"]["unique_graphs"] == 1  # no graph break, no recompile from step to step
    if not get_method(name).evicts_during_decode:  # capacity rounded up so other lengths reuse the code
        assert all(layer.length % CAPACITY_MULTIPLE == 0 for layer in kv_layers(cache))
    # the cache is written in place: the generated code never allocates a K/V-sized buffer (a copy)
    kv_shape = f"(({', '.join(map(str, kv_layers(cache)[0].keys.shape))})"
    allocations = [line for c in code for line in c.splitlines() if "empty_strided" in line and "= " in line]
    assert allocations, "no generated code captured"
    assert not [a for a in allocations if kv_shape in a], f"a {kv_shape[1:]} buffer: the step copies the cache"


def test_static_buffers_are_exactly_the_static_capacity(tiny_llama):
    """make_static leaves contiguous buffers of exactly the static capacity (what compiles in place)."""
    _, cache = run(tiny_llama, "full", "static")
    for layer in kv_layers(cache):
        assert layer._k.shape[2] == layer.length and layer.keys.is_contiguous() and layer.positions.is_contiguous()


@pytest.mark.parametrize("name", [n for n in EXACT if get_method(n).evicts_during_decode])
def test_static_decoding_holds_the_budget(tiny_llama, name):
    out, cache = run(tiny_llama, name, "static", budget=30, new=24)
    assert out.stats.new_tokens == 24
    assert [layer.valid_slots() for layer in kv_layers(cache)] == [30] * tiny_llama.spec.num_layers
    assert all(layer.length == 31 for layer in kv_layers(cache))  # the budget plus the free slot


def kept_positions(layer):
    """Sorted positions each (batch, head) of a layer holds (empty static slots left out)."""
    return [sorted(p for p in row.tolist() if p >= 0) for row in layer.positions.reshape(-1, layer.positions.shape[-1])]


@pytest.mark.parametrize("name", [n for n in EXACT if get_method(n).evicts_during_decode])
def test_static_decoding_follows_a_growing_ratio_budget(tiny_llama, name):
    """A ratio budget grows with the sequence (25% of 73 prompt tokens = 18, of 113 = 28): the static
    step keeps, at every step, what eager decoding keeps -- same tokens, same kept positions."""
    eager, eager_cache = run(tiny_llama, name, "eager", budget="25%", new=40)
    static, static_cache = run(tiny_llama, name, "static", budget="25%", new=40)
    assert static.token_ids == eager.token_ids
    for a, b in zip(eager_cache.layers, static_cache.layers):
        assert kept_positions(b) == kept_positions(a)
    assert {layer.valid_slots() for layer in static_cache.layers} == {int(0.25 * (70 + 3 + 39))}


@pytest.mark.parametrize("name", ["full", "h2o", "tova", "streaming_llm", "adakv"])
def test_static_step_is_capturable(tiny_llama, name):
    """No host sync and no data-dependent Python inside the step: dynamo traces it as one graph."""
    prefilled = prefill_context(tiny_llama, random_ids(70, seed=33), name, 30, 16)
    with torch.no_grad(), apply(tiny_llama, name, 30) as state:
        state.cache, state.phase, state.prompt_tokens = prefilled.cache, "append", 70
        step = make_step("static", tiny_llama.model, prefilled.cache, tiny_llama.device, state, 8)
        step.ids.fill_(5)
        step.pos.fill_(70)
        torch._dynamo.reset()
        logits = torch.compile(step.forward, fullgraph=True, backend="eager")()
    assert logits.shape == (tiny_llama.model.config.vocab_size,) and torch.isfinite(logits).all()


def test_graph_mode_needs_cuda(tiny_llama):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(KvlabError, match="CUDA"):
        run(tiny_llama, "full", "graph")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", ["graph", "compiled"])
@pytest.mark.parametrize("name", ["full", "snapkv", "h2o", "streaming_llm"])
def test_cuda_graph_decoding_matches_eager(name, mode):
    lm = make_tiny("llama")
    lm.model.to("cuda")
    eager, _ = run(lm, name, "eager")
    graph, _ = run(lm, name, mode)
    assert graph.token_ids == eager.token_ids


def test_auto_mode_per_device_and_method():
    """auto: CUDA graphs on a GPU; on CPU the static step for decode-time eviction methods (faster
    there, same tokens), eager for the rest."""
    from kvlab.decoding import resolve_mode

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_mode("auto", cuda, get_method("snapkv")) == "graph"
    assert [resolve_mode("auto", cpu, get_method(n)) for n in ("h2o", "tova", "streaming_llm")] == ["static"] * 3
    assert [resolve_mode("auto", cpu, get_method(n)) for n in ("full", "snapkv", "pyramidkv")] == ["eager"] * 3
    assert resolve_mode("eager", cpu, get_method("h2o")) == "eager"
    with pytest.raises(KvlabError, match="unknown decode mode 'warp'"):
        resolve_mode("warp", cpu)


@pytest.mark.parametrize("name,budget", [("full", 1000), ("h2o", 300)])
def test_static_decoding_with_a_split_value_reduction(tiny_llama, name, budget, monkeypatch):
    """Caches long enough for decode attention's split-K (pieces of 128 keys here, as a GPU splits):
    the static capacity is rounded up so the pieces are equal (a view of the buffer), and the tokens
    stay eager's."""
    from kvlab import attention

    monkeypatch.setattr(attention, "DECODE_SPLIT", 128)
    monkeypatch.setattr(attention, "CPU_MIN_PIECES", (2, 2))
    m = get_method(name)
    outs = {}
    for mode in ("eager", "static"):
        prefilled = prefill_context(tiny_llama, random_ids(701, seed=35), m, budget, 256)
        outs[mode] = continue_generation(prefilled, random_ids(3, seed=36), SamplingParams(max_new_tokens=12),
                                         decode=mode)
    assert outs["static"].token_ids == outs["eager"].token_ids
    slots = budget + 1 if name == "h2o" else 701 + 3 + 12  # the budget and a free slot / all the tokens
    assert attention.split_capacity(slots) > slots
    for layer in kv_layers(prefilled.cache):
        assert layer.length == attention.split_capacity(slots)
        assert attention.value_pieces(layer.length, layer.keys.device) >= 2


@pytest.mark.parametrize("name", ["full", "snapkv", "h2o", "tova", "streaming_llm"])
def test_static_step_never_copies_the_cache(tiny_llama, name, monkeypatch):
    """One static step (what a CUDA graph replays) allocates nothing near a layer's K or V size: the
    token is written in place and attention reads views (split-K on, as on a GPU)."""
    from kvlab import attention

    monkeypatch.setattr(attention, "DECODE_SPLIT", 128)
    monkeypatch.setattr(attention, "CPU_MIN_PIECES", (2, 2))
    prefilled = prefill_context(tiny_llama, random_ids(1500, seed=37), name, 1300, 512)
    with torch.no_grad(), apply(tiny_llama, name, 1300) as state:
        state.cache, state.phase, state.prompt_tokens = prefilled.cache, "append", 1500
        step = make_step("static", tiny_llama.model, prefilled.cache, tiny_llama.device, state, 8)
        layers = kv_layers(prefilled.cache)
        buffers = [t for layer in layers for t in (layer.keys, layer.values, layer.positions, *layer.extras.values())]
        step(5)  # the first step may set things up
        with LargestAllocation(*buffers, *tiny_llama.model.parameters()) as seen:
            logits = step(7)
    assert torch.isfinite(logits).all()
    assert attention.value_pieces(layers[0].length, layers[0].keys.device) >= 2
    assert seen.largest < layers[0].values.nbytes // 4, f"a {seen.largest}-byte allocation: the step copies the cache"
