"""Every `kvlab ...` command line in the README and docs/ parses, and `kvlab bench` lines pass the
bench's own checks (window, methods, device): the documented commands stay runnable."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from kvlab.cli.main import COMMANDS, build_parser

ROOT = Path(__file__).resolve().parents[2]


def documented_commands() -> list[tuple[str, str]]:
    out = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = re.sub(r"\\\n\s*", " ", path.read_text(encoding="utf-8"))  # join continued lines
        for line in text.splitlines():
            words = line.strip().split()
            if len(words) < 2 or words[0] != "kvlab" or words[1] not in COMMANDS:
                continue
            command = line.split("#")[0].strip()
            if "[" in command or "|" in command or "..." in command:  # optional parts / alternatives
                continue
            out.append((path.name, command))
    return out


COMMAND_LINES = documented_commands()


def test_the_docs_have_commands():
    assert len(COMMAND_LINES) >= 20 and any(cmd.startswith("kvlab bench") for _, cmd in COMMAND_LINES)


@pytest.mark.parametrize("source,command", COMMAND_LINES)
def test_documented_command_parses(source, command):
    parser = build_parser()
    try:
        args = parser.parse_args(shlex.split(command)[1:])
    except SystemExit as exc:
        pytest.fail(f"{source}: `{command}` does not parse (exit {exc.code})")
    if args.command == "bench":
        from kvlab.cli.bench import config_from_args

        config_from_args(args)  # raises with the reason when a documented bench command cannot run
