"""Measuring instruments of the speed/memory benchmark: peak memory, copy bandwidth, the device.

* :class:`PeakMemory` -- peak memory over a baseline during a block of code. CUDA:
  ``torch.cuda.max_memory_allocated`` over ``memory_allocated`` at the start (live tensors, so the
  caching allocator's reserve does not count). CPU: the process's peak resident set (``VmHWM``)
  over its resident set at the start; the kernel's peak counter is reset through
  ``/proc/self/clear_refs`` (Linux >= 4.0), with a sampling thread as the fallback.
* :func:`copy_bandwidth` -- device copy bandwidth, bytes read + written per second (the figure the
  decode floor divides by, as in gpu-notes.md: 3028 GB/s on an H100).
* :func:`device_info` -- what the figures were measured on.
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import re
import threading
import time
from collections.abc import Iterator
from typing import Any, Self

import torch

# glibc's mmap threshold (kvlab.heap): runner.py starts every case with it fixed through the variable
from kvlab.heap import DYNAMIC_MAX, M_MMAP_THRESHOLD, MMAP_THRESHOLD_ENV, mallopt


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            match = re.search(rf"^{field}:\s+(\d+) kB", fh.read(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def rss_bytes() -> int:
    """The current resident set size of this process."""
    kib = _status_kib("VmRSS")
    if kib is not None:
        return kib * 1024
    import psutil  # pragma: no cover - non-Linux

    return psutil.Process().memory_info().rss


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


class PeakMemory:
    """``with PeakMemory(device) as m: ...`` then ``m.peak_over_base`` (bytes) and ``m.method``."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.base = self.peak = 0
        self.method = ""
        self._sampler: threading.Thread | None = None
        self._stop = threading.Event()

    def __enter__(self) -> Self:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            self.method = "torch.cuda.max_memory_allocated"
        elif _reset_peak_rss() and _status_kib("VmHWM") is not None:
            self.base = rss_bytes()
            self.method = "peak RSS (VmHWM after clear_refs)"
            if os.environ.get(MMAP_THRESHOLD_ENV):
                self.method += f", {MMAP_THRESHOLD_ENV}={os.environ[MMAP_THRESHOLD_ENV]}"
        else:  # pragma: no cover - without /proc/self/clear_refs
            self.base = self.peak = rss_bytes()
            self.method = "peak RSS (sampled every 2 ms)"
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        return self

    def _sample(self) -> None:  # pragma: no cover - fallback
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.002)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        elif self._sampler is not None:  # pragma: no cover - fallback
            self._stop.set()
            self._sampler.join()
        else:
            self.peak = (_status_kib("VmHWM") or 0) * 1024

    @property
    def peak_over_base(self) -> int:
        return max(0, self.peak - self.base)


@contextlib.contextmanager
def heap_reuse() -> Iterator[None]:
    """Around a timed decoding loop on CPU, when the case runs with a fixed mmap threshold: blocks under
    32 MiB come from the reusable heap again, as under glibc's default, so per-step allocations (a
    ``DynamicCache``'s ``torch.cat`` of the whole layer) do not pay fresh page faults that a default
    process would not. The fixed threshold is for the memory peaks only; it is restored on exit."""
    fixed, call = os.environ.get(MMAP_THRESHOLD_ENV), mallopt()
    if not fixed or call is None or not call(M_MMAP_THRESHOLD, DYNAMIC_MAX):
        yield
        return
    try:
        yield
    finally:
        call(M_MMAP_THRESHOLD, int(fixed))


def copy_bandwidth(device: torch.device | str, nbytes: int | None = None, repeats: int = 10) -> dict[str, Any]:
    """Copy one buffer into another ``repeats`` times; GB/s counting bytes read + written.

    Returns ``{"copy_gbps": best, "copy_gbps_median": ..., "buffer_bytes", "repeats"}``. The best
    copy is the device's capability (the floor uses it); the median shows the contention.
    """
    device = torch.device(device)
    if nbytes is None:
        nbytes = (1 << 30) if device.type == "cuda" else (256 << 20)
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    for _ in range(2):
        dst.copy_(src)
    rates = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            dst.copy_(src)
            end.record()
            torch.cuda.synchronize(device)
            seconds = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            dst.copy_(src)
            seconds = time.perf_counter() - t0
        rates.append(2 * nbytes / seconds / 1e9)
    rates.sort()
    return {"copy_gbps": round(rates[-1], 2), "copy_gbps_median": round(rates[len(rates) // 2], 2),
            "buffer_bytes": nbytes, "repeats": repeats}


def attention_backends(device: torch.device | str) -> dict[str, Any]:
    """Which SDPA backends torch may pick on ``device`` now."""
    device = torch.device(device)
    if device.type != "cuda":
        return {"sdpa": "cpu (flash-attention CPU kernel for causal/no-mask, math otherwise)"}
    b = torch.backends.cuda
    out = {"flash": b.flash_sdp_enabled(), "mem_efficient": b.mem_efficient_sdp_enabled(), "math": b.math_sdp_enabled()}
    if hasattr(b, "cudnn_sdp_enabled"):
        out["cudnn"] = b.cudnn_sdp_enabled()
    return out


def device_info(device: torch.device | str) -> dict[str, Any]:
    """Name, memory and software of ``device``."""
    import transformers

    device = torch.device(device)
    info: dict[str, Any] = {"device": str(device), "torch": torch.__version__,
                            "transformers": transformers.__version__, "platform": platform.platform()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, memory_bytes=props.total_memory, cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), sms=props.multi_processor_count)
    else:
        name = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as fh:
                names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
            name = names[0] if names else name
        except OSError:
            pass
        total = None
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            pass
        info.update(name=name, cores=os.cpu_count(), torch_threads=torch.get_num_threads(), memory_bytes=total,
                    load_average=[round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None)
    return info
