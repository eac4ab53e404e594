"""The result store (SQLite, WAL): runs with provenance, cells, samples and bench records.

``open_store("results.db")`` returns a :class:`ResultStore`; :mod:`kvlab.results.export` writes
CSV/Parquet; :mod:`kvlab.results.stats` has the confidence intervals. This package never imports
methods or the engine: it stores plain records.
"""

from kvlab.results.aggregate import aggregate, sample_scores
from kvlab.results.stats import Interval, mean_ci, wilson
from kvlab.results.store import ResultStore, open_store

__all__ = ["Interval", "ResultStore", "aggregate", "mean_ci", "open_store", "sample_scores", "wilson"]
