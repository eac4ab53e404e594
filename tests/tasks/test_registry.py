"""The task registry and ``kvlab ls tasks``."""

from __future__ import annotations

import pytest

from kvlab.errors import KvlabError, UnknownNameError
from kvlab.tasks import get_task, task_names, task_rows
from kvlab.tasks.registry import parse_task_args

FILE_TASKS = ("ruler/qa_", "longbench", "infinitebench/")


def test_every_task_is_listed_and_builds():
    header, rows = task_rows()
    assert header == ("name", "source", "metric", "notes")
    names = [r[0] for r in rows]
    assert names == task_names() and len(names) == len(set(names))
    ruler = {n for n in names if n.startswith("ruler/")}
    assert len(ruler) == 13  # RULER's 13 tasks
    assert {"niah/single", "niah/multi", "shared/multikey", "shared/kv", "perplexity", "longbench_v2"} <= set(names)
    assert sum(n.startswith("longbench/") for n in names) == 21
    assert sum(n.startswith("infinitebench/") for n in names) == 12
    for name in names:
        if name.startswith(FILE_TASKS) and name.startswith("ruler/"):
            with pytest.raises(KvlabError, match="path=FILE"):
                get_task(name)
            continue
        task = get_task(name)
        assert task.name == name and task.metric and task.source


def test_unknown_task_and_parameter_errors():
    with pytest.raises(UnknownNameError, match="Did you mean 'ruler/niah_single_2'"):
        get_task("ruler/niah_singel_2")
    with pytest.raises(KvlabError, match="no parameter colour.*num_needle_k"):
        get_task("ruler/niah_single_2", colour="red")


def test_string_parameters_are_converted():
    task = get_task("shared/multikey", num_keys="6", num_queries="3")
    assert (task.num_keys, task.num_queries) == (6, 3)
    with pytest.raises(KvlabError, match="should be a int"):
        get_task("shared/multikey", num_keys="six")
    assert get_task("niah/single", depths="linspace:0:100:5").depths == (0, 25, 50, 75, 100)


def test_parse_task_args():
    assert parse_task_args(["path=a=b.json", "depths=0,50"]) == {"path": "a=b.json", "depths": "0,50"}
    with pytest.raises(KvlabError, match="KEY=VALUE"):
        parse_task_args(["path"])


def test_ls_tasks_cli(capsys):
    from kvlab.cli.main import main

    assert main(["ls", "tasks"]) == 0
    out = capsys.readouterr().out
    assert "ruler/niah_single_2" in out and "string_match_all" in out and "longbench/qasper" in out
