"""Probe (2026-12-04): the same for plain transformers one pass (sdpa, DynamicCache). One JSON line."""
import json, torch
from kvlab.bench.measure import PeakMemory
from kvlab.bench.worker import _ids, _load
torch.set_num_threads(2)
lm = _load({"model": "default"})
ids = torch.tensor([_ids(lm, 8000, 0)])
with torch.no_grad():
    lm.model(input_ids=ids[:, :256], use_cache=True, logits_to_keep=1)
    with PeakMemory(lm.device) as m:
        out = lm.model(input_ids=ids, use_cache=True, logits_to_keep=1)
print(json.dumps({"transformers_one_pass_peak_MiB": m.peak_over_base / 2**20, "attn": lm.model.config._attn_implementation}))
