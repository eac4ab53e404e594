"""CLI errors: one clear line, exit status 2, no traceback; listings cover the registry."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kvlab.methods import METHODS


def kvlab(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvlab.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("args,needle", [
    (("generate", "--method", "snapk", "--prompt", "x"), "Did you mean 'snapkv'?"),
    (("generate", "--budget", "12q", "--prompt", "x"), "cannot parse budget '12q'"),
    (("generate", "--file", "/no/such/file.txt"), "no such file: /no/such/file.txt"),
    (("generate", "--model", "defualt", "--prompt", "x"), "Did you mean 'default'?"),
    (("generate", "--method", "snapkv:window=3", "--prompt", "x"), "bad parameter 'window=3'"),
])
def test_user_errors_are_one_line_exit_2(args, needle):
    result = kvlab(*args)
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_ls_methods_lists_the_registry_with_flags():
    out = kvlab("ls", "methods").stdout
    for name, cls in METHODS.items():
        line = next(row for row in out.splitlines() if row.split()[0] == name)
        assert cls.phase in line and cls.paper.split(",")[0] in line


def test_help_explains():
    out = kvlab("generate", "--help").stdout
    assert "--budget" in out and "25%" in out and "--chunk-size" in out and "--question" in out


def test_no_help_shows_a_doubled_percent_sign():
    """argparse %-formats argument help but prints descriptions and epilogs as written."""
    from kvlab.cli.main import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, sub in [("kvlab", parser), *commands.items()]:
        assert "%%" not in sub.format_help(), f"`{name} --help` prints '%%'"


@pytest.mark.parametrize("args,needle", [
    (("generate", "--device", "gpu0", "--prompt", "x"), "unknown device 'gpu0'"),
    (("bench", "--lengths", "100k"), "window of 8192 positions"),
    (("bench", "--threads", "0"), "--threads: must be >= 1"),
    (("bench", "--timeout", "-1"), "--timeout: must be > 0 seconds"),
    (("serve", "--port", "99999"), "a TCP port is 0-65535"),
])
def test_bad_options_fail_before_loading(args, needle):
    result = kvlab(*args, timeout=120)
    assert result.returncode == 2 and needle in result.stderr and "Traceback" not in result.stderr


def test_serve_on_a_taken_port_says_so_before_loading():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = kvlab("serve", "--port", str(taken.getsockname()[1]), timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "cannot listen on 127.0.0.1" in result.stderr and "another --port" in result.stderr


@pytest.mark.slow
def test_prompt_longer_than_the_window(tmp_path):
    doc = tmp_path / "long.txt"
    doc.write_text("All work and no play makes Jack a dull boy. " * 1200)
    result = kvlab("generate", "--file", str(doc), "--method", "snapkv", "--budget", "25%")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "window of 8192 positions" in result.stderr


@pytest.mark.slow
def test_generate_json_reports_the_stats():
    result = kvlab("generate", "--prompt", "Name three colours.", "--max-new-tokens", "8", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    for key in ("text", "method", "budget", "prompt_tokens", "kv_tokens", "kv_bytes", "peak_kv_bytes",
                "full_kv_bytes", "prefill_seconds", "decode_seconds", "new_tokens"):
        assert key in data
    assert data["method"] == "full" and data["kv_bytes"] == data["full_kv_bytes"]


def test_generate_says_when_the_first_token_waits_for_a_compile(capsys, monkeypatch):
    import torch

    from kvlab.cli.generate import _say_when_decoding_compiles
    from kvlab.methods import get_method

    cpu = torch.device("cpu")
    monkeypatch.delenv("KVLAB_DECODE_ATTENTION", raising=False)
    _say_when_decoding_compiles("auto", cpu, get_method("snapkv"))  # eager on CPU: nothing compiles
    assert capsys.readouterr().err == ""
    _say_when_decoding_compiles("compiled", cpu, get_method("snapkv"))
    assert "compiling the decoding step (torch.compile)" in capsys.readouterr().err
    monkeypatch.setenv("KVLAB_DECODE_ATTENTION", "flex")
    _say_when_decoding_compiles("static", cpu, get_method("streaming_llm"))
    assert "flex_attention's decode kernel" in capsys.readouterr().err
    _say_when_decoding_compiles("static", cpu, get_method("h2o"))  # keeps the matmul kernel
    assert capsys.readouterr().err == ""


def test_generate_reports_the_steady_rate_after_a_slow_first_step():
    from types import SimpleNamespace

    from kvlab.cli.generate import _per_token

    compiled = SimpleNamespace(new_tokens=6, decode_steps=5, decode_seconds=10.0, first_step_seconds=8.0)
    assert _per_token(compiled) == "500.0 ms/tok after a first step of 8.0 s"
    steady = SimpleNamespace(new_tokens=10, decode_steps=9, decode_seconds=1.0, first_step_seconds=0.11)
    assert _per_token(steady) == "100.0 ms/tok"
    assert _per_token(SimpleNamespace(new_tokens=0, decode_steps=0, decode_seconds=0.0, first_step_seconds=0.0)) == "-"
