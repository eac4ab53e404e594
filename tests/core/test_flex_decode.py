"""The opt-in flex decode attention (kvlab.flex_decode): exact against decode_attention, chosen only
where it applies, and static / compiled decoding through it gives the eager tokens."""

from __future__ import annotations

import importlib
import warnings

import pytest
import torch
from test_decoding import inductor_compiles_on_cpu, run
from tinymodels import make_tiny

from kvlab import decode_kernel, flex_decode
from kvlab.attention import decode_attention
from kvlab.decoding import CAPACITY_MULTIPLE
from kvlab.errors import KvlabError
from kvlab.methods import get_method
from kvlab.sparse.flex import available

pytestmark = pytest.mark.skipif(not available(), reason="this torch has no flex_attention")


def decode_inputs(b, hq, hkv, slots, d=32, seed=0, device="cpu", dtype=torch.float32):
    """A static cache with empty slots (-1), one slot holding a token after the query, the query at ``slots + 1``."""
    g = torch.Generator().manual_seed(seed)
    make = lambda *s: torch.randn(*s, generator=g).to(device, dtype)  # noqa: E731
    query, key, value = make(b, hq, 1, d), make(b, hkv, slots, d), make(b, hkv, slots, d)
    pos = torch.arange(slots).repeat(b, hkv, 1)
    holes = torch.rand(b, hkv, slots, generator=g) < 0.3
    pos = pos.masked_fill(holes, -1)
    pos[..., 0] = slots + 5  # after the query: masked
    pos[..., -1] = slots + 1  # the query's own token
    return query, key, value, pos.to(device), torch.tensor([slots + 1], device=device)


CASES = [  # b, hq, hkv, slots (not a multiple of the 128-key block), window, softcap
    (1, 4, 2, 300, None, None), (2, 6, 2, 257, 50, None), (1, 4, 4, 130, None, 30.0), (1, 8, 1, 129, 64, 20.0)]


@pytest.mark.parametrize("b,hq,hkv,slots,window,softcap", CASES)
def test_flex_decode_equals_decode_attention(b, hq, hkv, slots, window, softcap):
    inputs = decode_inputs(b, hq, hkv, slots, seed=slots)
    ref, _ = decode_attention(*inputs, 0.2, window, softcap)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "flex_attention called without torch.compile()"
        out = flex_decode.flex_decode_attention(*inputs, 0.2, window, softcap, compiled=False)
    torch.testing.assert_close(out, ref, atol=2e-6, rtol=2e-5)


def test_compiled_flex_decode_equals_decode_attention():
    """The compiled kernel (inductor's CPU template here, Triton on a GPU) with every option at once."""
    if not inductor_compiles_on_cpu():
        pytest.skip("torch.compile's CPU backend does not work here (C++ compiler, Python headers)")
    inputs = decode_inputs(1, 9, 3, 600, d=64, seed=3)
    ref, _ = decode_attention(*inputs, 0.125, 100, 20.0)
    out = flex_decode.flex_decode_attention(*inputs, 0.125, 100, 20.0)
    torch.testing.assert_close(out, ref, atol=2e-6, rtol=2e-5)


@pytest.mark.parametrize("window", [None, 40])
def test_decode_attention_without_the_key_mass(window):
    """want_key_mass=False: no mass and the same output (on CPU through torch's fused flash kernel, the
    empty slots an additive bias) -- eagerly and through the compiled step's custom op."""
    inputs = decode_inputs(2, 6, 2, 300, seed=4)
    out, mass = decode_attention(*inputs, 0.2, window)
    alone, none = decode_attention(*inputs, 0.2, window, want_key_mass=False)
    assert none is None and mass.shape == (2, 2, 300)
    torch.testing.assert_close(alone, out, atol=2e-6, rtol=2e-5)
    traced = torch.compile(lambda *a: decode_attention(*a, 0.2, window, want_key_mass=False), backend="eager",
                           fullgraph=True)
    alone, none = traced(*inputs)
    assert none is None
    torch.testing.assert_close(alone, out, atol=2e-6, rtol=2e-5)


def test_the_switch_picks_flex_only_where_it_applies(monkeypatch):
    monkeypatch.delenv(decode_kernel.SWITCH, raising=False)
    assert decode_kernel.kernel_for(get_method("snapkv")) == "matmul"  # the default
    monkeypatch.setenv(decode_kernel.SWITCH, "flex")
    assert [decode_kernel.kernel_for(get_method(n)) for n in ("full", "snapkv", "streaming_llm", "pyramidkv")] == \
        ["flex"] * 4
    # methods that read the probabilities of a decoding step keep the kernel that returns them
    assert [decode_kernel.kernel_for(get_method(n)) for n in ("h2o", "tova")] == ["matmul"] * 2
    assert decode_kernel.wants_key_mass(get_method("tova")) and not decode_kernel.wants_key_mass(get_method("snapkv"))
    monkeypatch.setenv(decode_kernel.SWITCH, "triton")
    with pytest.raises(KvlabError, match="use one of matmul, flex, inductor"):
        decode_kernel.kernel_for(get_method("full"))


def test_the_inductor_kernel_is_compiled_decodings_default_and_changes_nothing_else(monkeypatch):
    modes = ("static", "graph", "compiled")
    for value in (None, "inductor"):
        if value is None:
            monkeypatch.delenv(decode_kernel.SWITCH, raising=False)
        else:
            monkeypatch.setenv(decode_kernel.SWITCH, value)
        for name in ("snapkv", "h2o"):  # the traced function also returns the key mass
            method = get_method(name)
            assert [decode_kernel.kernel_for(method, m) for m in modes] == ["matmul", "matmul", "inductor"]
            assert [decode_kernel.mode_label(m, method) for m in ("eager", *modes)] == ["eager", *modes]
    monkeypatch.setenv(decode_kernel.SWITCH, "matmul")  # the opaque operator, kept apart in results
    assert [decode_kernel.mode_label(m, get_method("snapkv")) for m in modes] == ["static", "graph", "compiled+matmul"]
    monkeypatch.setenv(decode_kernel.SWITCH, "flex")
    assert decode_kernel.mode_label("graph", get_method("snapkv")) == "graph+flex"
    assert decode_kernel.mode_label("graph", get_method("tova")) == "graph"  # tova keeps the default
    assert decode_kernel.mode_label("compiled", get_method("tova")) == "compiled"


@pytest.mark.parametrize("name,wanted", [("full", False), ("streaming_llm", False), ("h2o", True), ("tova", True)])
def test_static_steps_compute_the_key_mass_only_for_methods_that_read_it(tiny_llama, name, wanted, monkeypatch):
    apply_module = importlib.import_module("kvlab.apply_method")  # where static steps look it up
    seen = set()
    real = apply_module.decode_attention

    def spy(*args, want_key_mass=True, **kwargs):
        seen.add(want_key_mass)
        return real(*args, want_key_mass=want_key_mass, **kwargs)

    monkeypatch.delenv(decode_kernel.SWITCH, raising=False)
    monkeypatch.setattr(apply_module, "decode_attention", spy)
    run(tiny_llama, name, "static")
    assert seen == {wanted}


@pytest.mark.parametrize("name", ["full", "snapkv", "streaming_llm", "tova"])
def test_static_decoding_through_flex_matches_eager(tiny_llama, name, monkeypatch):
    """Static decoding with the switch on: the step calls flex (except for TOVA) and gives eager's tokens.
    flex runs its eager reference here (the compiled kernel is checked above and on a GPU)."""
    from torch.nn.attention.flex_attention import flex_attention

    calls = []
    real = flex_decode.flex_decode_attention

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    eager, _ = run(tiny_llama, name, "eager")
    monkeypatch.setenv(decode_kernel.SWITCH, "flex")
    monkeypatch.setattr(flex_decode, "flex_decode_attention", counting)
    monkeypatch.setattr(flex_decode, "_flex", lambda compiled, device_type: flex_attention)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        static, cache = run(tiny_llama, name, "static")
    assert static.token_ids == eager.token_ids
    assert bool(calls) == (name != "tova")
    if not get_method(name).evicts_during_decode:  # fewer capacities for the compiled kernel
        assert all(layer.length % CAPACITY_MULTIPLE == 0 for layer in cache.layers)


def test_compiled_decoding_through_flex_matches_eager(monkeypatch):
    """The compiled step with flex as its attention (one opaque operator running the compiled kernel)
    gives eager's tokens, and the step is traced once: one graph, no recompile from step to step."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    from kvlab.decoding import StaticStep

    if not inductor_compiles_on_cpu():
        pytest.skip("torch.compile's CPU backend does not work here (C++ compiler, Python headers)")
    lm = make_tiny("llama")
    eager, _ = run(lm, "snapkv", "eager")
    monkeypatch.setenv(decode_kernel.SWITCH, "flex")
    torch._dynamo.reset()
    compiled, _ = run(lm, "snapkv", "compiled")
    assert compiled.token_ids == eager.token_ids
    assert len(_debug_get_cache_entry_list(StaticStep.forward.__code__)) == 1


@pytest.mark.parametrize("name", ["snapkv", "h2o"])
def test_compiled_decoding_with_the_inductor_kernel_traces_decode_attention(name, monkeypatch):
    """KVLAB_DECODE_ATTENTION=inductor (compiled's default): the compiled step's graph holds decode
    attention's own operations (the mass-free CPU flash kernel for snapkv, the matmuls and the mass for
    h2o) instead of the opaque kvlab::decode_attention operator (=matmul), in one graph, and gives
    eager's tokens. The graph is run as traced
    (no inductor code generation: the CPU's C++ compile is slow and tested with the default kernel)."""
    graphs = []

    def recording(gm, example_inputs):
        graphs.append({str(node.target) for node in gm.graph.nodes if node.op == "call_function"})
        return gm.forward

    real_compile = torch.compile
    lm = make_tiny("llama")
    eager, _ = run(lm, name, "eager")
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, **{**kw, "backend": recording}))
    for kernel in ("matmul", "inductor"):
        monkeypatch.setenv(decode_kernel.SWITCH, kernel)
        torch._dynamo.reset()
        compiled, _ = run(lm, name, "compiled")
        assert compiled.token_ids == eager.token_ids, kernel
    opaque, traced = graphs  # one graph each: fullgraph=True, no recompiles
    assert any("decode_attention" in t for t in opaque)
    assert not any("decode_attention" in t for t in traced)
    wanted = "flash_attention_for_cpu" if name == "snapkv" else "softmax"
    assert any(wanted in t for t in traced) and not any(wanted in t for t in opaque)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("slots,window", [(13100, None), (4097, 1000)])
def test_cuda_flex_decode_equals_decode_attention(slots, window):
    """Triton's FlexDecoding in bf16 at a realistic length, Llama-3.1-8B's head geometry."""
    inputs = decode_inputs(1, 32, 8, slots, d=128, seed=5, device="cuda", dtype=torch.bfloat16)
    ref, _ = decode_attention(*inputs, 128 ** -0.5, window)
    out = flex_decode.flex_decode_attention(*inputs, 128 ** -0.5, window)
    torch.testing.assert_close(out.float(), ref.float(), atol=2e-2, rtol=2e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_flex_decode_compiles_at_most_twice_over_capacities():
    """Each request's static cache has its own capacity: after the first, flex compiles once with
    dynamic sizes and reuses that kernel (it must not compile per capacity)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    for slots in (1000, 1300, 2100, 4097):
        inputs = decode_inputs(1, 8, 2, slots, d=64, seed=slots, device="cuda", dtype=torch.bfloat16)
        ref, _ = decode_attention(*inputs, 0.125)
        out = flex_decode.flex_decode_attention(*inputs, 0.125)
        torch.testing.assert_close(out.float(), ref.float(), atol=2e-2, rtol=2e-2)
    assert counters["stats"]["unique_graphs"] <= 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name,mode", [("full", "graph"), ("snapkv", "graph"), ("streaming_llm", "graph"),
                                       ("snapkv", "compiled")])
def test_cuda_graph_decoding_through_flex_matches_eager(name, mode, monkeypatch):
    lm = make_tiny("llama")
    lm.model.to("cuda")
    eager, _ = run(lm, name, "eager")
    monkeypatch.setenv(decode_kernel.SWITCH, "flex")
    graph, _ = run(lm, name, mode)
    assert graph.token_ids == eager.token_ids
