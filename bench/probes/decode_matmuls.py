"""Probe (2026-12-05): what a CPU decoding step's matrix products cost against reading their bytes,
one thread, 30 layers of buffers so caches do not flatter them.

    python bench/probes/decode_matmuls.py values 8000 [threads]  # attention's value reduction: one
                                                                 # matmul, equal pieces, pieces + remainder
    python bench/probes/decode_matmuls.py linears [threads]      # the embedded model's linear layers
                                                                 # for one token, against a sum of the weights

It found the per-step copy of the values in the old split (1,024-key pieces + a remainder: 65 ms
against 37 for one matmul at 8,000 keys) and that the embedded model's 211 linear layers read their
538 MB at ~9.8 GB/s against ~12.5 for a plain sum.
"""
import sys
import time

import torch

from kvlab import attention


def median_s(fn, n=9):
    fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[n // 2]


def values(n: int) -> None:
    layers = 30
    vs = [torch.randn(1, 3, n, 64) for _ in range(layers)]  # the embedded model: 3 KV heads of 64
    probs = torch.softmax(torch.randn(1, 3, 3, n), -1)
    c = attention.DECODE_SPLIT
    s = n // c

    def remainder_split(v):  # the pre-fix code: s pieces of c keys + the rest, batched (copies v)
        p = probs[..., : s * c].reshape(1, 3, 3, s, c).transpose(2, 3)
        out = torch.matmul(p, v[:, :, : s * c].reshape(1, 3, s, c, 64)).float().sum(2)
        return out + torch.matmul(probs[..., s * c:], v[:, :, s * c:]).float()

    nbytes = layers * vs[0].nbytes
    rows = {"one matmul": lambda: [torch.matmul(probs, v) for v in vs],
            "sum of the values": lambda: [v.sum() for v in vs]}
    if n % c:
        rows["pieces + remainder (before)"] = lambda: [remainder_split(v) for v in vs]
    m = attention.split_capacity(n)
    if m == n and attention.value_pieces(n, torch.device("cuda")) > 1:
        pieces = attention.value_pieces(n, torch.device("cuda"))
        rows[f"{pieces} equal pieces"] = lambda: [
            torch.bmm(probs.reshape(1, 3, 3, pieces, n // pieces).transpose(2, 3).reshape(-1, 3, n // pieces),
                      v.view(-1, n // pieces, 64)).view(1, 3, pieces, 3, 64).float().sum(2) for v in vs]
    for name, fn in rows.items():
        t = median_s(fn)
        print(f"{n} keys, {name:28s} {t * 1e3:7.2f} ms / 30 layers  {nbytes / t / 1e9:6.2f} GB/s")


def linears() -> None:
    from kvlab.models import load_model

    model = load_model("default", device="cpu").model
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    xs = {layer.in_features: torch.randn(1, 1, layer.in_features) for layer in layers}
    nbytes = sum(layer.weight.nbytes for layer in layers)
    with torch.no_grad():
        for name, fn in (("linear layers, one token", lambda: [layer(xs[layer.in_features]) for layer in layers]),
                         ("sum of the weights", lambda: [layer.weight.sum() for layer in layers])):
            t = median_s(fn)
            print(f"{len(layers)} linears ({nbytes / 1e6:.0f} MB), {name:26s} {t * 1e3:6.1f} ms  {nbytes / t / 1e9:5.2f} GB/s")


if __name__ == "__main__":
    what = sys.argv[1]
    args = sys.argv[2:]
    threads = int(args[-1]) if (what == "linears" and args) or len(args) > 1 else 1
    torch.set_num_threads(threads)
    if what == "values":
        values(int(args[0]))
    else:
        linears()
