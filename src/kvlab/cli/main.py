"""Entry point of the ``kvlab`` console script.

User mistakes (:class:`~kvlab.errors.KvlabError`) print one line and exit with status 2, without a
traceback. Subcommands are modules of this package listed in ``COMMANDS``; a module that is not
installed is skipped, so each part of kvlab adds its command by adding its file.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys

from kvlab.errors import KvlabError

COMMANDS = ("generate", "eval", "run", "report", "export", "serve", "bench", "ls", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvlab",
        description="Long-context inference under a KV-cache budget: methods, benchmarks, reports, serving.",
        epilog="Run `kvlab COMMAND --help` for a command's options. Budgets: tokens per layer ('1024'), "
        "a ratio of the prompt ('25%'), KV bytes ('64MiB') or 'full'.",
    )
    parser.add_argument("--version", action="version", version=f"kvlab {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        if importlib.util.find_spec(f"kvlab.cli.{name}") is None:
            continue
        module = importlib.import_module(f"kvlab.cli.{name}")
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KvlabError as exc:
        print(f"kvlab: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"kvlab: error: no such file: {exc.filename or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kvlab: interrupted", file=sys.stderr)
        return 130


def _version() -> str:
    from kvlab import __version__

    return __version__


if __name__ == "__main__":
    sys.exit(main())
