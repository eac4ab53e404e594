"""Chunked-prefill attention of one layer: every chunk against the keys before it, per kernel.

A chunked `full` prefill of ``L`` tokens in chunks of ``C`` makes ``L / C`` attention calls per
layer, chunk ``i`` with ``C`` queries over ``(i + 1) * C`` keys (bottom-right causal). This times the
sum of those calls for each way kvlab can run them, next to the one-pass causal call a plain
prefill makes (random bf16 q/k/v of the model shape's head geometry; CUDA events on a GPU, median of
``--repeats``):

* ``one pass (cuDNN/flash/default)``: ``sdpa(is_causal=True)`` over all ``L`` queries: the reference;
* ``chunks: lower-right``: kvlab's default on CUDA (flash/efficient with the lower-right causal bias);
  on CPU the public SDPA call with a dense bottom-right mask;
* ``chunks: split``: :mod:`kvlab.chunk_attention` (older keys unmasked + own keys causal, merged by
  log-sum-exp): cuDNN on CUDA (kvlab's opt-in ``KVLAB_CUDA_CHUNK_ATTENTION=split``), flash on CPU.

Every chunk row's largest deviation from the one-pass output (over sampled chunks) is recorded.

    python bench/chunk_kernels.py --lengths 32k,128k --json out/chunk_kernels.json
    python bench/chunk_kernels.py --device cpu --shape smollm2-135m --lengths 8000 --chunk 4000 --repeats 2
"""

from __future__ import annotations

import contextlib
import statistics
import sys

import torch
import torch.nn.functional as F

from sparse_kernels import _timer, kernel_parser, layer_inputs, run_lengths  # bench/ is the script's folder


def _lower_right(query, key, value, scaling):
    from torch.nn.attention.bias import causal_lower_right

    from kvlab.attention import _cuda_sdpa

    if query.device.type == "cuda":
        return _cuda_sdpa(query, key, value, scaling)
    q_len, kv_len = query.shape[2], key.shape[2]
    mask = causal_lower_right(q_len, kv_len)._materialize(query.device)
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling, enable_gqa=True)


def _split(query, key, value, scaling):
    from kvlab import chunk_attention

    attend = chunk_attention._cudnn_attend if query.device.type == "cuda" else chunk_attention._cpu_attend
    return chunk_attention.split_chunk_attention(query, key, value, scaling, attend)


def measure(shape: str, length: int, chunk: int, device: torch.device, repeats: int) -> list[dict]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    spec, query, key, value = layer_inputs(shape, length, device)
    scaling = spec.head_dim ** -0.5
    timer = _timer(device)
    starts = list(range(0, length, chunk))
    rows = []

    def one_pass():
        return F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scaling, enable_gqa=True)

    dense = {"one pass (default)": None} if device.type != "cuda" else {
        "one pass (cuDNN)": [SDPBackend.CUDNN_ATTENTION], "one pass (flash)": [SDPBackend.FLASH_ATTENTION]}
    reference = None
    for label, backends in dense.items():
        try:
            with sdpa_kernel(backends) if backends else contextlib.nullcontext():
                reference = one_pass() if reference is None else reference
                ms = timer(one_pass, 1) and timer(one_pass, repeats)
            rows.append({"kernel": label, "length": length, "ms": round(statistics.median(ms), 3)})
        except RuntimeError as exc:
            rows.append({"kernel": label, "length": length, "error": str(exc).splitlines()[0][:200]})
        _say(rows[-1])
    for label, fn in (("chunks: lower-right", _lower_right), ("chunks: split", _split)):
        def chunked():  # the first chunk is a square causal call in both; the rest use fn
            for s in starts:
                e = min(length, s + chunk)
                q, k, v = query[:, :, s:e], key[:, :, :e], value[:, :, :e]
                if s == 0:
                    F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling, enable_gqa=True)
                else:
                    fn(q, k, v, scaling)
        try:
            err = 0.0
            for s in starts[1:][:: max(1, len(starts) // 4)]:  # a few chunks against the one-pass output
                e = min(length, s + chunk)
                out = fn(query[:, :, s:e], key[:, :, :e], value[:, :, :e], scaling)
                err = max(err, (out.float() - reference[:, :, s:e].float()).abs().max().item())
            ms = timer(chunked, 1) and timer(chunked, repeats)
            rows.append({"kernel": label, "length": length, "chunk": chunk, "calls": len(starts),
                         "ms": round(statistics.median(ms), 3), "max_abs_diff_vs_one_pass": err})
        except RuntimeError as exc:
            rows.append({"kernel": label, "length": length, "chunk": chunk, "error": str(exc).splitlines()[0][:200]})
        _say(rows[-1])
    best = min((r["ms"] for r in rows if "ms" in r and r["kernel"].startswith("one pass")), default=None)
    for r in rows:
        if best and "ms" in r:
            r["x_best_one_pass"] = round(r["ms"] / best, 2)
    return rows


def _say(row: dict) -> None:
    print(f"{row['length']} {row['kernel']}: {row.get('ms', row.get('error'))}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = kernel_parser(__doc__, "32k,128k", 3)
    p.add_argument("--chunk", type=int, default=4096, help="prefill chunk size (default: %(default)s)")
    args = p.parse_args(argv)
    return run_lengths(args, lambda length, device: measure(args.shape, length, args.chunk, device, args.repeats))


if __name__ == "__main__":
    sys.exit(main())
