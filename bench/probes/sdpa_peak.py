"""Probe (2026-12-04): peak RSS of kvlab.attention.sdpa_attention on CPU: one causal pass over 8,000
tokens vs a 4,000-query chunk over 8,000 keys (bottom-right mask), 9/3 heads of 64. One JSON line."""
import json, torch, torch.nn.functional as F
from kvlab.bench.measure import PeakMemory
from kvlab.attention import sdpa_attention
torch.set_num_threads(2)
q = torch.randn(1, 9, 8000, 64); k = torch.randn(1, 3, 8000, 64); v = torch.randn(1, 3, 8000, 64)
sdpa_attention(q[:, :, :256], k[:, :, :256], v[:, :, :256], 0.125)
res = {}
with PeakMemory("cpu") as m:
    sdpa_attention(q, k, v, 0.125)
res["kvlab_sdpa_gqa_MiB"] = m.peak_over_base / 2**20
with PeakMemory("cpu") as m:
    F.scaled_dot_product_attention(q, k.repeat_interleave(3, 1), v.repeat_interleave(3, 1), is_causal=True, scale=0.125)
res["sdpa_expanded_MiB"] = m.peak_over_base / 2**20
with PeakMemory("cpu") as m:
    sdpa_attention(q[:, :, 4000:], k, v, 0.125)
res["kvlab_sdpa_chunk_4000_of_8000_MiB"] = m.peak_over_base / 2**20
print(json.dumps(res))
