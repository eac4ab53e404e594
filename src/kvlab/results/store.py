"""The result store: one SQLite file (WAL) of runs, cells, samples and bench records.

Every write is its own short transaction, so a process killed at any moment leaves every sample
it finished in the file and nothing half-written: a sample's queries are committed together, and
``UNIQUE(cell_key, sample_index, query_index)`` makes duplicates impossible. Readers (the report,
``kvlab export``) get plain dicts, JSON columns decoded.

Opening a file that is not a kvlab store (a corrupted file, another program's SQLite database, a
store written by a newer kvlab) raises :class:`~kvlab.errors.KvlabError` saying what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from kvlab.errors import KvlabError
from kvlab.results.aggregate import aggregate
from kvlab.results.schema import (
    AGGREGATE_COLUMNS,
    APPLICATION_ID,
    BENCH_KEY_FIELDS,
    CELL_CONFIG_COLUMNS,
    DDL,
    SAMPLE_COLUMNS,
    SCHEMA_VERSION,
)

JSON_COLUMNS = {"task_params", "answers", "metadata", "provenance", "record"}


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ResultStore:
    """A kvlab result store. ``create=False`` (report, export) refuses a missing or empty file."""

    def __init__(self, path: str | os.PathLike, *, create: bool = True):
        self.path = os.fspath(path)
        if os.path.isdir(self.path):
            raise KvlabError(f"{self.path} is a directory; pass the path of a results file, e.g. results.db")
        if not create and not os.path.exists(self.path):
            raise KvlabError(f"no such results file: {self.path} (create one with `kvlab run ... --db {self.path}`)")
        parent = os.path.dirname(os.path.abspath(self.path))
        if create and not os.path.isdir(parent):
            os.makedirs(parent, exist_ok=True)
        try:
            self.conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        except sqlite3.Error as exc:
            raise KvlabError(f"cannot open {self.path}: {exc}") from None
        self.conn.row_factory = sqlite3.Row
        try:
            self._check_and_init(create)
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise self._not_a_store(exc) from None
        except KvlabError:
            self.conn.close()
            raise

    # -- opening -------------------------------------------------------------------------------

    def _check_and_init(self, create: bool) -> None:
        app_id = self.conn.execute("PRAGMA application_id").fetchone()[0]
        tables = [r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        if app_id == 0 and not tables:
            if not create:
                raise KvlabError(f"{self.path} holds no kvlab results (it is empty); run `kvlab run` first")
            self.conn.execute("PRAGMA journal_mode = WAL")
            with self.transaction():
                for statement in filter(str.strip, DDL.split(";")):
                    self.conn.execute(statement)
                self.conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            return
        if app_id != APPLICATION_ID:
            shown = ", ".join(sorted(tables)[:6]) or "none"
            raise KvlabError(f"{self.path} is a SQLite database but not a kvlab result store (its tables: {shown}); "
                             "pass another path (a new file is created) or the results.db a kvlab run wrote")
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise KvlabError(f"{self.path} was written by a newer kvlab (schema {version}, this one reads up to "
                             f"{SCHEMA_VERSION}); upgrade kvlab")
        check = self.conn.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise KvlabError(f"{self.path} is corrupted (SQLite integrity check: {check}); restore a copy or "
                             "start a new results file")
        self.conn.execute("PRAGMA journal_mode = WAL")

    def _not_a_store(self, exc: Exception) -> KvlabError:
        return KvlabError(f"{self.path} is not a readable kvlab result store ({exc}); it may be corrupted or "
                          "another kind of file: pass a results.db written by `kvlab run`, or a new path")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on any error); SQLite errors become KvlabError."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as exc:
            raise self._not_a_store(exc) from None
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        try:
            self.conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise self._not_a_store(exc) from None

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        try:
            rows = self.conn.execute(sql, tuple(params)).fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._not_a_store(exc) from None
        return [_decode(dict(r)) for r in rows]

    # -- runs ----------------------------------------------------------------------------------

    def start_run(self, provenance: Mapping[str, Any], command: str = "") -> int:
        """Record one invocation with its provenance; returns the run id that samples refer to."""
        with self.transaction() as conn:
            cur = conn.execute("INSERT INTO runs (started_at, command, provenance) VALUES (?, ?, ?)",
                               (now(), command, json.dumps(dict(provenance), sort_keys=True, default=str)))
            return int(cur.lastrowid)

    def finish_run(self, run_id: int) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE runs SET finished_at = ? WHERE id = ?", (now(), run_id))

    def runs(self) -> list[dict[str, Any]]:
        return self._query("SELECT * FROM runs ORDER BY id")

    # -- cells ---------------------------------------------------------------------------------

    def ensure_cell(self, cell: Mapping[str, Any]) -> None:
        """Insert the cell if new (status ``pending``); otherwise raise its target sample count to ``n``."""
        missing = [c for c in ("key", "n", *CELL_CONFIG_COLUMNS) if c not in cell]
        assert not missing, f"cell record lacks {missing}"
        values = {c: cell[c] for c in CELL_CONFIG_COLUMNS}
        values["task_params"] = json.dumps(values["task_params"] or {}, sort_keys=True)
        stamp = now()
        with self.transaction() as conn:
            conn.execute(
                f"INSERT INTO cells (key, {', '.join(values)}, n_target, metric, family, created_at, updated_at) "
                f"VALUES (?, {', '.join('?' * len(values))}, ?, ?, ?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET n_target = MAX(n_target, excluded.n_target), "
                "metric = COALESCE(excluded.metric, metric), family = COALESCE(excluded.family, family)",
                (cell["key"], *values.values(), int(cell["n"]), cell.get("metric"), cell.get("family"), stamp, stamp),
            )

    def cell(self, key: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM cells WHERE key = ?", (key,))
        return rows[0] if rows else None

    def cells(self) -> list[dict[str, Any]]:
        return self._query("SELECT * FROM cells ORDER BY model, task, length, mode, method, budget, seed")

    def mark_cell(self, key: str, status: str, *, run_id: int | None = None, error: str | None = None,
                  model_name: str | None = None) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE cells SET status = ?, error = ?, run_id = COALESCE(?, run_id), "
                         "model_name = COALESCE(?, model_name), updated_at = ? WHERE key = ?",
                         (status, error, run_id, model_name, now(), key))

    def finish_cell(self, key: str) -> dict[str, Any]:
        """Compute the cell's aggregate from its samples and mark it ``done``; returns the aggregate."""
        agg = aggregate(self.samples(key))
        sets = ", ".join(f"{c} = ?" for c in AGGREGATE_COLUMNS)
        with self.transaction() as conn:
            conn.execute(f"UPDATE cells SET {sets}, status = 'done', error = NULL, updated_at = ? WHERE key = ?",
                         (*(agg[c] for c in AGGREGATE_COLUMNS), now(), key))
        return agg

    # -- samples -------------------------------------------------------------------------------

    def done_samples(self, key: str) -> set[int]:
        """Indices of the samples of cell ``key`` already in the store (all their queries are)."""
        return {r["sample_index"] for r in self._query(
            "SELECT DISTINCT sample_index FROM samples WHERE cell_key = ?", (key,))}

    def add_sample(self, key: str, run_id: int | None, rows: Iterable[Mapping[str, Any]]) -> int:
        """Commit all query rows of one sample in one transaction; rows already stored are left alone
        (``ON CONFLICT DO NOTHING``). Returns how many rows were written."""
        stamp, written = now(), 0
        with self.transaction() as conn:
            for r in rows:
                values = [r.get(c) for c in SAMPLE_COLUMNS]
                values[SAMPLE_COLUMNS.index("answers")] = json.dumps(list(r.get("answers") or []))
                values[SAMPLE_COLUMNS.index("metadata")] = json.dumps(r.get("metadata") or {}, sort_keys=True,
                                                                      default=str)
                cur = conn.execute(
                    f"INSERT INTO samples (cell_key, run_id, {', '.join(SAMPLE_COLUMNS)}, created_at) "
                    f"VALUES (?, ?, {', '.join('?' * len(SAMPLE_COLUMNS))}, ?) "
                    "ON CONFLICT(cell_key, sample_index, query_index) DO NOTHING",
                    (key, run_id, *values, stamp),
                )
                written += cur.rowcount
        return written

    def samples(self, key: str | None = None) -> list[dict[str, Any]]:
        if key is None:
            return self._query("SELECT * FROM samples ORDER BY cell_key, sample_index, query_index")
        return self._query("SELECT * FROM samples WHERE cell_key = ? ORDER BY sample_index, query_index", (key,))

    # -- bench ---------------------------------------------------------------------------------

    def add_bench(self, records: Iterable[Mapping[str, Any]], run_id: int | None = None) -> int:
        """Store speed/memory records (plain dicts from ``kvlab bench``). A record's key is the hash of
        its configuration fields (:data:`~kvlab.results.schema.BENCH_KEY_FIELDS` present in it), so
        measuring the same configuration again replaces the old record. Returns the count stored."""
        stamp, count = now(), 0
        with self.transaction() as conn:
            for rec in records:
                if "method" not in rec:
                    raise KvlabError("a bench record needs at least a 'method' field")
                config = {k: rec.get(k) for k in BENCH_KEY_FIELDS if k in rec}
                key = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:20]
                length = rec.get("length", rec.get("prompt_tokens"))
                conn.execute(
                    "INSERT INTO bench (key, run_id, model, method, budget, length, record, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET run_id = excluded.run_id, "
                    "record = excluded.record, created_at = excluded.created_at",
                    (key, run_id, rec.get("model"), str(rec["method"]),
                     None if rec.get("budget") is None else str(rec["budget"]),
                     None if length is None else int(length),
                     json.dumps(dict(rec), sort_keys=True, default=str), stamp),
                )
                count += 1
        return count

    def bench(self) -> list[dict[str, Any]]:
        return self._query("SELECT * FROM bench ORDER BY model, method, budget, length")

    def counts(self) -> dict[str, int]:
        """Rows per table, and cells per status."""
        out = {t: self._query(f"SELECT COUNT(*) AS n FROM {t}")[0]["n"] for t in ("runs", "cells", "samples", "bench")}
        for r in self._query("SELECT status, COUNT(*) AS n FROM cells GROUP BY status"):
            out[f"cells_{r['status']}"] = r["n"]
        return out


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    for column in JSON_COLUMNS & row.keys():
        if isinstance(row[column], str):
            row[column] = json.loads(row[column])
    return row


def open_store(path: str | os.PathLike, *, create: bool = True) -> ResultStore:
    """Open (or, with ``create``, create) the kvlab result store at ``path``."""
    return ResultStore(path, create=create)
