"""``kvlab run`` / ``kvlab report`` / ``kvlab demo`` from the command line."""

from __future__ import annotations

import os
import sqlite3

import pytest

from kvlab.cli.main import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_dry_run_from_flags_lists_cells_without_loading_a_model(tmp_path, capsys):
    db = tmp_path / "r.db"
    code = main(["run", "--methods", "full,snapkv", "--budgets", "25%,50%", "--tasks", "niah/single",
                 "--lengths", "1k,2k", "--modes", "query_aware,query_agnostic", "-n", "5", "--db", str(db),
                 "--dry-run"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[-1] == f"12 cells, 60 samples to run -> {db}"  # (full + 2 budgets) x 2 lengths x 2 modes
    assert sum("snapkv@25%" in line for line in out) == 4
    assert not db.exists()  # a dry run creates nothing


def test_dry_run_of_the_demo_config_matches_the_demo(capsys):
    assert main(["run", os.path.join(ROOT, "configs", "demo.yaml"), "--db", "/nonexistent/x.db", "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "42 cells, 126 samples to run -> /nonexistent/x.db"


@pytest.mark.parametrize("argv, message", [
    (["run"], "give a sweep config"),
    (["run", "--tasks", "niah/single", "--methods", "snapkv,nope", "--budgets", "25%"], "unknown method 'nope'"),
    (["run", "--tasks", "niah/single", "--budgets", "lots"], "cannot parse budget 'lots'"),
    (["run", "--tasks", "niah/single", "--model", "gpt-17"], "unknown model 'gpt-17'"),
    (["run", "/no/such/sweep.yaml"], "no such config file"),
    (["run", "--task-arg", "depths=0"], "--task-arg applies to the tasks named with --tasks"),
    (["report", "/no/such/results.db"], "no such results file"),
])
def test_user_errors_are_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kvlab: error:") and message in err[0]


def test_help_explains_the_commands(capsys):
    for command in ("run", "report", "export", "demo"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "usage: kvlab " + command in capsys.readouterr().out


@pytest.mark.slow
def test_run_and_report_on_the_embedded_model(tmp_path, capsys):
    """A real (small) sweep through the CLI: two depths at 512 tokens, full vs SnapKV, both modes."""
    db, report = tmp_path / "r.db", tmp_path / "report"
    code = main(["run", "--methods", "full,snapkv", "--budgets", "50%", "--tasks", "niah/single",
                 "--task-arg", "depths=0,100", "--task-arg", "max_new_tokens=12", "--lengths", "512",
                 "--modes", "query_aware,query_agnostic", "-n", "2", "--db", str(db), "--report", str(report)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "4 cells (0 already done): ran 4, failed 0; wrote 8 query rows" in out
    assert f"report: {report / 'index.html'}" in out
    conn = sqlite3.connect(db)
    full = conn.execute("SELECT score, n_samples, mean_kv_bytes, mean_full_kv_bytes FROM cells "
                        "WHERE method = 'full'").fetchall()
    snap = conn.execute("SELECT mean_kv_bytes, mean_full_kv_bytes FROM cells WHERE method = 'snapkv'").fetchall()
    conn.close()
    assert all(n == 2 and kv == full_kv for _, n, kv, full_kv in full)
    assert all(score == 1.0 for score, *_ in full)  # the full cache finds a needle in 512 tokens
    assert all(0.4 < kv / full_kv < 0.6 for kv, full_kv in snap)  # 50% of the prompt held (plus the question)
    md = (report / "report.md").read_text()
    assert "## niah/single (SmolLM2-135M-Instruct)" in md
    # the same command again resumes: nothing left to run
    assert main(["run", "--methods", "full,snapkv", "--budgets", "50%", "--tasks", "niah/single",
                 "--task-arg", "depths=0,100", "--task-arg", "max_new_tokens=12", "--lengths", "512",
                 "--modes", "query_aware,query_agnostic", "-n", "2", "--db", str(db)]) == 0
    assert "4 cells (4 already done): ran 0, failed 0; wrote 0 query rows" in capsys.readouterr().out
