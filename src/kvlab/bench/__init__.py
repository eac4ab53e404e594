"""The speed/memory benchmark behind ``kvlab bench``.

``run_bench(BenchConfig(...))`` measures, for each prompt length and method, prefill (+compression)
time, peak memory over the weights, KV bytes held, decode ms/token and its ratio to the device's
bandwidth floor, each case in a fresh process, next to a plain-transformers baseline.
``to_records(result)`` flattens the result for the result store. See docs/performance.md.
"""

from kvlab.bench.records import RECORD_FIELDS, format_table, to_records
from kvlab.bench.runner import BenchConfig, parse_lengths, run_bench

__all__ = ["RECORD_FIELDS", "BenchConfig", "format_table", "parse_lengths", "run_bench", "to_records"]
