"""Probe (2026-12-04): peak RSS over the start of a kvlab full prefill of 8,000 random tokens on the
embedded model, chunk size from argv (a number or none), 2 threads. One JSON line.

    python bench/probes/prefill_peak_kvlab.py 4096
"""
import sys, json, torch
from kvlab.bench.measure import PeakMemory
from kvlab.bench.worker import _ids, _load
from kvlab.engine import prefill_context
torch.set_num_threads(2)
chunk = None if sys.argv[1] == "none" else int(sys.argv[1])
lm = _load({"model": "default"})
ids = _ids(lm, 8000, 0)
warm = prefill_context(lm, ids[:256], "full", None, chunk, reserve_extra=40); del warm
with torch.no_grad(), PeakMemory(lm.device) as m:
    p = prefill_context(lm, ids, "full", None, chunk, reserve_extra=40)
print(json.dumps({"chunk": chunk, "peak_over_base_MiB": m.peak_over_base / 2**20, "kv_MiB": p.cache.bytes_held / 2**20,
                  "kv_alloc_MiB": p.cache.bytes_allocated / 2**20, "secs": p.prefill_seconds}))
