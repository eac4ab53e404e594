"""The SQLite schema of a kvlab result store.

One file, WAL mode. A kvlab store is recognised by ``PRAGMA application_id`` (``APPLICATION_ID``)
and versioned by ``PRAGMA user_version`` (``SCHEMA_VERSION``), so a foreign SQLite file is refused
with a clear message instead of being written into.

Tables:

* ``runs``: one row per invocation of the runner (or of ``kvlab bench``) with its provenance
  (kvlab version and git SHA, torch/transformers versions, device, dtype, attention kernel ...).
* ``cells``: one row per cell of a sweep, keyed by the hash of its resolved config; the config
  columns, the status (``pending`` / ``running`` / ``done`` / ``failed``) and the aggregate score
  with its confidence interval (written when the cell finishes).
* ``samples``: one row per answered query; ``UNIQUE(cell_key, sample_index, query_index)`` makes a
  duplicate impossible whatever the runner does. All queries of a sample are committed together.
* ``bench``: speed/memory records from ``kvlab bench`` (plain dicts kept whole as JSON, plus the
  columns a report groups by); ``UNIQUE(key)``: a re-measurement replaces the old record.
"""

from __future__ import annotations

APPLICATION_ID = 0x6B766C62  # "kvlb"
SCHEMA_VERSION = 1

CELL_CONFIG_COLUMNS = (
    "model", "dtype", "method", "method_config", "budget", "task", "task_params", "length", "mode", "seed",
    "chunk_size", "chat",
)
AGGREGATE_COLUMNS = (
    "score", "ci_low", "ci_high", "ci_method", "n_samples", "n_queries", "mean_prompt_tokens", "mean_kv_tokens",
    "mean_kv_bytes", "mean_peak_kv_bytes", "mean_full_kv_bytes", "mean_prefill_seconds", "decode_ms_per_token",
)
SAMPLE_COLUMNS = (
    "sample_index", "query_index", "prompt_hash", "prediction", "answers", "score", "prompt_tokens",
    "context_tokens", "new_tokens", "prefill_seconds", "decode_seconds", "kv_tokens", "kv_bytes", "peak_kv_bytes",
    "full_kv_bytes", "metadata",
)
BENCH_KEY_FIELDS = ("model", "dtype", "device", "method", "budget", "length", "chunk_size", "batch_size",
                    "max_new_tokens", "mode", "kind")

DDL = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    command TEXT,
    provenance TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cells (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    dtype TEXT,
    method TEXT NOT NULL,
    method_config TEXT NOT NULL,
    budget TEXT NOT NULL,
    task TEXT NOT NULL,
    task_params TEXT NOT NULL DEFAULT '{}',
    length INTEGER NOT NULL,
    mode TEXT NOT NULL,
    seed INTEGER NOT NULL,
    chunk_size INTEGER,
    chat TEXT NOT NULL,
    n_target INTEGER NOT NULL,
    metric TEXT,
    model_name TEXT,
    family TEXT,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'done', 'failed')),
    error TEXT,
    run_id INTEGER REFERENCES runs(id),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    score REAL, ci_low REAL, ci_high REAL, ci_method TEXT,
    n_samples INTEGER, n_queries INTEGER,
    mean_prompt_tokens REAL, mean_kv_tokens REAL, mean_kv_bytes REAL, mean_peak_kv_bytes REAL,
    mean_full_kv_bytes REAL, mean_prefill_seconds REAL, decode_ms_per_token REAL
);
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cell_key TEXT NOT NULL REFERENCES cells(key),
    run_id INTEGER REFERENCES runs(id),
    sample_index INTEGER NOT NULL,
    query_index INTEGER NOT NULL,
    prompt_hash TEXT,
    prediction TEXT,
    answers TEXT,
    score REAL NOT NULL,
    prompt_tokens INTEGER,
    context_tokens INTEGER,
    new_tokens INTEGER,
    prefill_seconds REAL,
    decode_seconds REAL,
    kv_tokens REAL,
    kv_bytes INTEGER,
    peak_kv_bytes INTEGER,
    full_kv_bytes INTEGER,
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    UNIQUE (cell_key, sample_index, query_index)
);
CREATE INDEX IF NOT EXISTS samples_by_cell ON samples (cell_key, sample_index);
CREATE TABLE IF NOT EXISTS bench (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    run_id INTEGER REFERENCES runs(id),
    model TEXT,
    method TEXT,
    budget TEXT,
    length INTEGER,
    record TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"""

TABLES = ("runs", "cells", "samples", "bench")
