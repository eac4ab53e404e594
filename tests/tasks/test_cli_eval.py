"""``kvlab eval`` with the tiny model standing in for the embedded one (fast)."""

from __future__ import annotations

import json

import pytest

from kvlab.cli.main import main


@pytest.fixture
def tiny_cli(monkeypatch, tiny_with_tokenizer):
    import kvlab.cli.eval as cli_eval

    monkeypatch.setattr(cli_eval, "load", lambda args: tiny_with_tokenizer)
    return tiny_with_tokenizer


def test_eval_prints_score_and_depth_breakdown(tiny_cli, capsys, tmp_path):
    out_file = tmp_path / "records.jsonl"
    code = main(["eval", "--task", "niah/single", "--length", "600", "-n", "2", "--task-arg", "depths=0,100",
                 "--task-arg", "max_new_tokens=2", "--method", "snapkv", "--budget", "25%", "--chunk-size", "256",
                 "--output", str(out_file)])
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith("niah/single  length 600  snapkv budget=25%  mode=query_aware  chat=template")
    assert "score " in out and "over 2 queries of 2 samples" in out and "by depth (%): 0.0:" in out
    records = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert [r["metadata"]["depth"] for r in records] == [0.0, 100.0]


def test_eval_json_query_agnostic(tiny_cli, capsys):
    code = main(["eval", "--task", "shared/kv", "--length", "1k", "-n", "1", "--mode", "query_agnostic",
                 "--task-arg", "max_new_tokens=2", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mode"] == "query_agnostic" and out["length"] == 1024
    assert out["summary"]["queries"] == 4 and {r["mode"] for r in out["results"]} == {"query_agnostic"}


def test_eval_perplexity_prints_buckets(tiny_cli, capsys):
    code = main(["eval", "--task", "perplexity", "--length", "700", "-n", "1", "--task-arg", "bucket_size=256",
                 "--chunk-size", "256"])
    assert code == 0
    out = capsys.readouterr().out
    assert "perplexity " in out and "1-255" in out and "512-699" in out


@pytest.mark.parametrize("argv,message", [
    (["--task", "ruler/qa_1"], "pass path=FILE"),
    (["--task", "niah/single", "--task-arg", "depths=abc"], "depths must be numbers"),
    (["--task", "niah/single", "--task-arg", "bogus=1"], "has no parameter bogus"),
    (["--task", "niah/single", "-n", "0"], "-n must be >= 1"),
])
def test_eval_user_errors_exit_2_with_one_line(capsys, argv, message):
    assert main(["eval", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
