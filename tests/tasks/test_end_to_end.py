"""A couple of short runs on the embedded model (marked slow)."""

from __future__ import annotations

import json

import pytest

from kvlab.evaluate import run_sample, summarize
from kvlab.tasks import get_task

pytestmark = pytest.mark.slow


def test_embedded_model_finds_needles_with_full_cache(embedded):
    task = get_task("niah/single", depths="20,80")
    results = []
    for sample in task.samples(embedded.tokenizer, 1024, 2, seed=42):
        results += run_sample(embedded, task, sample, "full", mode="query_agnostic")
    summary = summarize(results)
    assert summary["score"] >= 50, [r.prediction for r in results]
    assert all(r.prompt_tokens + 32 <= 1024 for r in results)
    assert all(r.kv_tokens == r.prompt_tokens for r in results)  # full cache keeps everything


def test_kvlab_eval_cli_json(capsys):
    from kvlab.cli.main import main

    code = main(["eval", "--task", "ruler/niah_single_1", "--length", "1k", "-n", "1", "--method", "snapkv",
                 "--budget", "50%", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["task"] == "ruler/niah_single_1" and out["budget"] == "50%"
    assert 0 <= out["summary"]["score"] <= 100 and out["summary"]["queries"] == 1
    (result,) = out["results"]
    assert result["metadata"]["length"] == 1024 and result["metadata"]["chat"] == "template"
    assert result["kv_tokens"] < result["context_tokens"]
