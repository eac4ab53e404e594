"""The single engine worker: one thread runs every generation, fed by a bounded request queue.

The engine is synchronous and the model is not safe to run twice at once, so one thread owns it.
The HTTP side submits a :class:`Job`; :meth:`EngineWorker.submit` raises :class:`QueueFull` when
``max_queue`` requests already wait behind the running one (the route answers 429). The worker
reports to the asyncio side through a :class:`Channel` (thread-safe): text deltas, then one
``Done`` or ``Failed``. Setting ``job.cancelled`` (client gone) stops the job between prefill
chunks and at every decoding step, and a job still waiting is skipped, so the worker is free
right after a disconnect.

Context reuse: the job's context is prefilled on its own (without the suffix), stored in the
:class:`~kvlab.server.context_cache.ContextCache`, and the suffix is appended to a copy; a later
job with the same key starts from a copy of the stored context.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from kvlab.budget import Budget
from kvlab.engine import Generation, continue_generation, prefill_context
from kvlab.methods import Method
from kvlab.models.loading import LoadedModel
from kvlab.sampling import SamplingParams
from kvlab.server.context_cache import ContextCache, ContextKey

log = logging.getLogger("kvlab.server")


class QueueFull(Exception):
    """Too many requests are waiting; the client should retry later."""


class Cancelled(Exception):
    """Raised inside the worker to abandon a job whose client went away."""


@dataclass
class Delta:
    text: str


@dataclass
class Done:
    generation: Generation
    reused: bool
    queue_seconds: float


@dataclass
class Failed:
    error: BaseException


Event = Delta | Done | Failed


class Channel:
    """Carries a job's events from the worker thread to the event loop that awaits them."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self.queue: asyncio.Queue[Event] = asyncio.Queue()

    def put(self, event: Event) -> None:
        """Called from the worker thread."""
        try:
            self._loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except RuntimeError:  # the loop is closed: the server is shutting down
            pass


@dataclass
class Job:
    """One generation request, ready for the engine."""

    context_ids: list[int]
    suffix_ids: list[int]
    sampling: SamplingParams
    method: Method
    budget: Budget
    chunk_size: int | None
    reuse: bool
    channel: Channel
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.perf_counter)

    def cancel(self) -> None:
        self.cancelled.set()


@dataclass
class WorkerCounters:
    completed: int = 0
    cancelled: int = 0
    failed: int = 0
    rejected: int = 0


class EngineWorker:
    """Owns the model; runs jobs one at a time in a daemon thread (see the module docstring)."""

    def __init__(self, loaded: LoadedModel, model_id: str, contexts: ContextCache, max_queue: int):
        if max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, not {max_queue}")
        self.loaded, self.model_id, self.contexts, self.max_queue = loaded, model_id, contexts, max_queue
        self.counters = WorkerCounters()
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._waiting = 0
        self._running: Job | None = None
        self._thread = threading.Thread(target=self._loop, name="kvlab-engine", daemon=True)

    # --- HTTP side ------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel the running job, drop the waiting ones and end the thread."""
        with self._lock:
            if self._running:
                self._running.cancel()
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.cancel()
                job.channel.put(Failed(Cancelled("the server is shutting down")))
        self._jobs.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def submit(self, job: Job) -> None:
        """Queue ``job``; raise :class:`QueueFull` when ``max_queue`` jobs already wait."""
        with self._lock:
            if self._waiting >= self.max_queue and (self._running is not None or self._waiting > 0):
                self.counters.rejected += 1
                raise QueueFull(f"{self._waiting} request(s) already wait for the engine (--max-queue "
                                f"{self.max_queue})")
            self._waiting += 1
            self._jobs.put(job)

    @property
    def busy(self) -> bool:
        return self._running is not None

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # --- worker thread ----------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            with self._lock:
                self._waiting -= 1
                self._running = job
            try:
                self._run(job)
            finally:
                with self._lock:
                    self._running = None

    def _run(self, job: Job) -> None:
        if job.cancelled.is_set():
            self.counters.cancelled += 1
            return
        queue_seconds = time.perf_counter() - job.submitted
        try:
            generation, reused = self._generate(job)
        except Cancelled:
            self.counters.cancelled += 1
            return
        except Exception as exc:  # reported to the client; the worker carries on
            if not isinstance(exc, ValueError):
                log.exception("generation failed")
            self.counters.failed += 1
            job.channel.put(Failed(exc))
            return
        if generation.stats.finish_reason == "cancelled":
            self.counters.cancelled += 1
        else:
            self.counters.completed += 1
        job.channel.put(Done(generation, reused, queue_seconds))

    def _generate(self, job: Job) -> tuple[Generation, bool]:
        key = ContextKey.make(self.model_id, job.method, job.budget, job.chunk_size, job.context_ids)
        use_store = job.reuse and self.contexts.enabled
        prefilled = self.contexts.get(key) if use_store else None
        reused, stored = prefilled is not None, False
        if prefilled is None:
            keeps_generated = not job.method.evicts_during_decode
            extra = len(job.suffix_ids) + (job.sampling.max_new_tokens if keeps_generated else 1)
            prefilled = prefill_context(self.loaded, job.context_ids, job.method, job.budget, job.chunk_size,
                                        reserve_extra=extra, on_chunk=lambda done, total: _check(job))
            stored = use_store and self.contexts.put(key, prefilled)
        _check(job)
        copy = reused or stored
        generation = continue_generation(
            prefilled, job.suffix_ids, job.sampling, copy=copy,
            on_text=lambda text: job.channel.put(Delta(text)), should_stop=job.cancelled.is_set,
        )
        if copy and not reused:
            # continue_generation(copy=True) counts only the suffix: add the context prefill done here.
            stats = generation.stats
            generation.stats = dataclasses.replace(
                stats, prefill_seconds=stats.prefill_seconds + prefilled.prefill_seconds,
                peak_kv_bytes=max(stats.peak_kv_bytes, prefilled.cache.peak_bytes),
            )
        return generation, reused

    def describe(self) -> dict[str, Any]:
        """State for /health."""
        with self._lock:
            return {"busy": self._running is not None, "waiting": self._waiting, "max_queue": self.max_queue,
                    **dataclasses.asdict(self.counters)}


def _check(job: Job) -> None:
    if job.cancelled.is_set():
        raise Cancelled()
