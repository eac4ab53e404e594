"""Benchmarks: deterministic sample generators and scorers (RULER, needle grids, shared context,
LongBench v1/v2, InfiniteBench, perplexity). Use :func:`get_task`; ``kvlab ls tasks`` lists them."""

from kvlab.tasks.base import MODES, Query, Sample, Task
from kvlab.tasks.registry import TASKS, get_task, task_names, task_rows

__all__ = ["MODES", "TASKS", "Query", "Sample", "Task", "get_task", "task_names", "task_rows"]
