"""kvlab.heap.fix_mmap_threshold: freed activations leave the resident set; a user's choice is kept."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys

import pytest
from tinymodels import MAPPED_PROBE

PROBE = MAPPED_PROBE + """
import json, os
from kvlab import heap

# glibc's default: a freed 30 MiB mapping raises the threshold to 30 MiB, so 12 MiB comes from the heap
del_me = torch.empty(30 << 20, dtype=torch.uint8); del del_me
before = mapped(12 << 20)
if FIX:
    heap.fix_mmap_threshold()
# 20 MiB: under the raised threshold, and more than the heap's free 12 MiB (which malloc would reuse)
print(json.dumps({"before": before, "after": mapped(20 << 20), "env": os.environ.get("MALLOC_MMAP_THRESHOLD_")}))
"""


def run_probe(fix: bool = True, **env) -> dict:
    base = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    proc = subprocess.run([sys.executable, "-c", f"FIX = {fix}\n" + PROBE], capture_output=True, text=True,
                          env={**base, **env}, timeout=120, check=True)
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.fixture(autouse=True)
def _glibc():
    if not hasattr(ctypes.CDLL(None), "mallinfo2"):
        pytest.skip("needs glibc >= 2.33 (mallinfo2)")


def test_fixing_the_threshold_maps_large_blocks_again_and_exports_it():
    assert run_probe(fix=False) == {"before": 0, "after": 0, "env": None}  # glibc's default: from the heap
    assert run_probe() == {"before": 0, "after": 1, "env": str(1 << 20)}


def test_a_threshold_the_user_chose_is_kept():
    out = run_probe(MALLOC_MMAP_THRESHOLD_=str(64 << 20))
    assert out == {"before": 0, "after": 0, "env": str(64 << 20)}
