"""Probe (2026-12-05): the peak of *live tensor bytes* of a prefill of random tokens on the embedded
model, from the profiler's allocation events (CPU), next to what the RSS probes see. It showed that
kvlab's one-pass CPU prefill and plain transformers' hold the same tensors at their peak (574 vs
566 MiB at 8,000 tokens): the 411 MiB RSS gap of the 12-04 probes was glibc keeping freed blocks
resident (dynamic mmap threshold), gone with ``MALLOC_MMAP_THRESHOLD_=1048576``.

    python bench/probes/prefill_live_peak.py kvlab 8000 4096    # kvlab full, chunks of 4096
    python bench/probes/prefill_live_peak.py kvlab 8000 none    # kvlab full, one pass
    python bench/probes/prefill_live_peak.py transformers 8000
"""
import json, sys, torch
from torch.profiler import ProfilerActivity, profile
from kvlab.bench.worker import _ids, _load
from kvlab.engine import prefill_context
torch.set_num_threads(2)
which, n = sys.argv[1], int(sys.argv[2])
chunk = None if len(sys.argv) < 4 or sys.argv[3] == "none" else int(sys.argv[3])
lm = _load({"model": "default"})
ids = _ids(lm, n, 0)
with torch.no_grad():
    if which == "kvlab":
        prefill_context(lm, ids[:256], "full", None, chunk, reserve_extra=40)
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            prefill_context(lm, ids, "full", None, chunk, reserve_extra=40)
    else:
        t = torch.tensor([ids])
        lm.model(input_ids=t[:, :256], use_cache=True, logits_to_keep=1)
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            lm.model(input_ids=t, use_cache=True, logits_to_keep=1)
events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
live = peak = 0
for _, nbytes in events:
    live += nbytes
    peak = max(peak, live)
print(json.dumps({"which": which, "length": n, "chunk": chunk, "live_peak_MiB": round(peak / 2**20, 1),
                  "live_at_end_MiB": round(live / 2**20, 1)}))
