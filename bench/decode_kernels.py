"""Decode attention alone: one new token per step over a cache of ``L`` keys, per kernel, per layer.

The attention share of a decoding step, measured apart from the rest of the model, so the next
GPU session can tell whether the step's time over its bandwidth floor is attention or everything
else. Random q/k/v of the model shape's head geometry (bf16 on CUDA, fp32 on CPU); the cache is
sized as a static decoding cache is (:func:`kvlab.attention.split_capacity`, extra slots empty).
Each row runs over ``--layers`` distinct caches (so the GPU's L2 or the CPU's L3 cannot hold them)
and reports ms per layer and the K+V bytes read per second. On CUDA the loop over the layers is
captured in a CUDA graph and replayed, as a decoding step is (no launch overhead in the figures).

* ``read K+V (sum)``: a plain reduction over the layer's keys and values: this attention's floor;
* ``kvlab decode_attention``: what static / graph decoding runs (and compiled with
  ``KVLAB_DECODE_ATTENTION=matmul``, as one opaque operator) for methods that do not read the attention
  probabilities: on CUDA the matmuls (the value reduction split into
  :func:`kvlab.attention.value_pieces` pieces where that rule splits), on CPU torch's fused flash kernel;
* ``kvlab decode_attention + key mass``: the matmul path returning the mass each slot received (H2O, TOVA);
* ``kvlab + key mass, value reduction in one matmul``: the same with the split off;
* ``... traced by torch.compile``: both as ``compiled`` decoding runs them by default (kernel
  ``inductor``: the passes over the scores fused by inductor; the first call compiles, untimed);
* ``kvlab flex_attention (FlexDecoding)``: :mod:`kvlab.flex_decode`, the opt-in fused kernel
  (``KVLAB_DECODE_ATTENTION=flex``), compiled (on CPU inductor's C++ template);
* ``sdpa ...``: PyTorch SDPA (flash, efficient) for one query without a mask (a cache without empty
  slots), grouped heads: what a fused kernel gives.

    python bench/decode_kernels.py --lengths 13100,32k,130944 --json out/decode_kernels.json
    python bench/decode_kernels.py --device cpu --shape smollm2-135m --lengths 4k,16k --layers 30
"""

from __future__ import annotations

import contextlib
import statistics
import sys

import torch
import torch.nn.functional as F

from sparse_kernels import _timer, kernel_parser, run_lengths  # bench/ is the script's folder


def _inputs(shape: str, slots: int, held: int, layers: int, device: torch.device):
    from kvlab.models import ModelSpec, shapes

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    spec = ModelSpec.from_config(shapes.config_for(shape), dtype=dtype, name=shape)
    g = torch.Generator(device=device).manual_seed(0)
    hq, hkv, d = spec.num_heads, spec.num_kv_heads, spec.head_dim
    make = lambda *size: torch.randn(*size, generator=g, device=device, dtype=dtype)  # noqa: E731
    query = [make(1, hq, 1, d) for _ in range(layers)]
    keys = [make(1, hkv, slots, d) for _ in range(layers)]
    values = [make(1, hkv, slots, d) for _ in range(layers)]
    positions = torch.arange(slots, device=device).masked_fill(torch.arange(slots, device=device) >= held, -1)
    positions = positions.expand(1, hkv, slots).contiguous()
    return spec, query, keys, values, positions


def _graph_timer(device: torch.device):
    """Time ``fn`` as a CUDA graph replay on a GPU (what decoding runs); plain timing on CPU."""
    plain = _timer(device)
    if device.type != "cuda":
        def warm_then_time(fn, repeats: int) -> list[float]:
            fn()  # compiles flex; first-touch costs
            return plain(fn, repeats)
        return warm_then_time

    def run(fn, repeats: int) -> list[float]:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            fn()  # warm-up outside capture (library handles, workspaces)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        graph.replay()
        return plain(graph.replay, repeats)
    return run


def measure(shape: str, length: int, layers: int, device: torch.device, repeats: int) -> list[dict]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from kvlab import attention, flex_decode

    slots = attention.split_capacity(length)
    spec, query, keys, values, positions = _inputs(shape, slots, length, layers, device)
    scaling = spec.head_dim ** -0.5
    query_pos = torch.tensor([length - 1], device=device)
    kv_bytes = keys[0].nbytes + values[0].nbytes
    timer = _graph_timer(device)
    rows = []

    def kvlab_decode(want_key_mass: bool = False):
        for i in range(layers):
            attention.decode_attention(query[i], keys[i], values[i], positions, query_pos, scaling,
                                       want_key_mass=want_key_mass)

    def traced(want_key_mass: bool):
        """decode_attention traced by torch.compile, as compiled decoding runs it (kernel 'inductor')."""
        def step():
            return [attention.decode_attention(query[i], keys[i], values[i], positions, query_pos, scaling,
                                               want_key_mass=want_key_mass, opaque=False) for i in range(layers)]
        return torch.compile(step, fullgraph=True, dynamic=False)

    def flex():
        for i in range(layers):
            flex_decode.flex_decode_attention(query[i], keys[i], values[i], positions, query_pos, scaling)

    @contextlib.contextmanager
    def no_split():
        saved = attention.value_pieces
        attention.value_pieces = lambda n, dev: 1
        try:
            yield
        finally:
            attention.value_pieces = saved

    def sdpa():
        for i in range(layers):
            F.scaled_dot_product_attention(query[i], keys[i], values[i], scale=scaling, enable_gqa=True)

    backend = lambda *b: (lambda: sdpa_kernel(list(b)))  # noqa: E731
    cases = [("read K+V (sum)", lambda: [(keys[i].sum(), values[i].sum()) for i in range(layers)], None),
             ("kvlab decode_attention", kvlab_decode, None),
             ("kvlab decode_attention + key mass", lambda: kvlab_decode(True), None),
             ("kvlab + key mass, value reduction in one matmul", lambda: kvlab_decode(True), no_split),
             ("kvlab decode_attention traced by torch.compile", traced(False), None),
             ("kvlab + key mass, traced by torch.compile", traced(True), None),
             ("kvlab flex_attention (FlexDecoding)", flex, None)]
    if device.type == "cuda":
        # not cuDNN: a refused graph capture can leave the CUDA context unusable for the next rows
        cases += [("sdpa flash (no mask)", sdpa, backend(SDPBackend.FLASH_ATTENTION)),
                  ("sdpa efficient (no mask)", sdpa, backend(SDPBackend.EFFICIENT_ATTENTION))]
    else:
        cases.append(("sdpa (no mask)", sdpa, None))
    for label, fn, context in cases:
        row = {"kernel": label, "length": length, "slots": slots, "layers": layers}
        if label == "kvlab decode_attention + key mass":
            row["value_pieces"] = attention.value_pieces(slots, device)
        try:
            with (context or contextlib.nullcontext)():
                ms = statistics.median(timer(fn, repeats)) / layers
            row.update(ms_per_layer=round(ms, 4), kv_gb_per_s=round(kv_bytes / (ms * 1e-3) / 1e9, 1))
            said = f"{row['ms_per_layer']} ms/layer, {row['kv_gb_per_s']} GB/s"
        except Exception as exc:  # noqa: BLE001 - a kernel that fails here (a compile error) is a row's result
            row["error"] = said = str(exc).splitlines()[0][:200]
        rows.append(row)
        print(f"{length} {label}: {said}", file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = kernel_parser(__doc__, "13100,32k,130944", 5)  # 10% of 128K, 32K, 128K less the generated tokens
    p.add_argument("--layers", type=int, default=8, help="distinct caches per timing (default: %(default)s)")
    args = p.parse_args(argv)
    return run_lengths(args, lambda length, device: measure(args.shape, length, args.layers, device, args.repeats))


if __name__ == "__main__":
    sys.exit(main())
