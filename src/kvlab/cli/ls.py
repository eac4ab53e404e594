"""``kvlab ls methods|tasks|models``."""

from __future__ import annotations

import argparse
import importlib.util


def add_parser(sub) -> None:
    p = sub.add_parser("ls", help="list methods, tasks or models",
                       description="List the registered methods (with family, phase, query-awareness and "
                       "paper), benchmark tasks, or loadable models.")
    p.add_argument("what", choices=("methods", "tasks", "models"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rows: list[tuple[str, ...]]
    if args.what == "methods":
        from kvlab.methods import METHODS

        header = ("name", "family", "phase", "query-aware", "paper")
        rows = [(n, c.family, c.phase, "yes" if c.query_aware else "no", c.paper) for n, c in METHODS.items()]
    elif args.what == "tasks":
        if importlib.util.find_spec("kvlab.tasks.registry") is None:
            print("no tasks are installed")
            return 0
        from kvlab.tasks.registry import task_rows

        header, rows = task_rows()
    else:
        from kvlab.models.loading import DEFAULT_ALIASES
        from kvlab.models.shapes import SHAPES

        header = ("name", "what")
        rows = [("default", f"embedded SmolLM2-135M-Instruct (aliases: {', '.join(DEFAULT_ALIASES[1:])})")]
        rows += [(f"random:{n}", f"random weights, {s['num_hidden_layers']} layers, hidden {s['hidden_size']}")
                 for n, s in sorted(SHAPES.items())]
        rows += [("PATH", "a local HF directory (safetensors) or a .gguf file"),
                 ("ORG/NAME", "a Hugging Face id already in the local cache (kvlab never downloads)")]
    print_table(header, rows)
    return 0


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
