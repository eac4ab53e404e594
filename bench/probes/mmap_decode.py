"""Probe (2026-12-05): does the fixed 1 MiB mmap threshold that kvlab commands set (kvlab.heap) slow
eager decoding on CPU? One process, the embedded model, 4,096-token prompt, one thread; rounds of 24
decoded tokens for full and h2o (10%), alternating the threshold between 1 MiB and 32 MiB (glibc's
dynamic maximum, where it stands after a long prefill). Prints ms/token per round and the medians.

    python bench/probes/mmap_decode.py
"""
import time, torch, statistics
from kvlab import heap
from kvlab.models import load_model
from kvlab.engine import prefill_context, continue_generation
from kvlab.sampling import SamplingParams
from kvlab.bench.worker import _ids
torch.set_num_threads(1)
call = heap.mallopt()
lm = load_model("default", device="cpu")
ids = _ids(lm, 4096, 0)
res = {"fixed": [], "dynamic-max": []}
with torch.no_grad():
    pre = {m: prefill_context(lm, ids, m, "10%" if m != "full" else None, 4096, reserve_extra=200) for m in ("full", "h2o")}
    for r in range(3):
        for name, val in (("fixed", 1 << 20), ("dynamic-max", 32 << 20)):
            call(heap.M_MMAP_THRESHOLD, val)
            for m in ("full", "h2o"):
                t = time.perf_counter()
                out = continue_generation(pre[m], ids[:3], SamplingParams(max_new_tokens=24), decode="eager", copy=True)
                res[name].append((m, round(out.stats.decode_seconds / max(1, out.stats.new_tokens) * 1e3, 1)))
print(res)
for name in res:
    for m in ('full','h2o'):
        print(name, m, statistics.median(v for mm, v in res[name] if mm == m))
