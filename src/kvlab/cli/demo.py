"""``kvlab demo``: a needle-in-a-haystack prompt on the embedded model, full cache vs SnapKV at 25%."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="run the demo on the embedded model",
                       description="Answer a ~3,000-token needle-in-a-haystack prompt with the full cache and "
                       "with SnapKV keeping 25%% of the KV cache; print answers and stats.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kvlab.cli.common import human_bytes
    from kvlab.engine import generate
    from kvlab.models import load_model
    from kvlab.prompting import PromptParts

    lm = load_model("default")
    noise = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.\n"
    lines = [noise] * 140
    lines.insert(70, "One of the special magic numbers for tender-jazz is: 4728193.\n")
    parts = PromptParts(
        context="A special magic number is hidden within the following text. Make sure to memorize it. "
        "I will quiz you about the number afterwards.\n" + "".join(lines)
        + "What is the special magic number for tender-jazz mentioned in the provided text?",
        answer_prefix=" The special magic number for tender-jazz mentioned in the provided text is",
    )
    print("needle: 4728193")
    for method, budget in (("full", None), ("snapkv", "25%")):
        out = generate(lm, parts, method=method, budget=budget, max_new_tokens=12)
        s = out.stats
        print(f"{method:8s} budget={s.budget:5s} answer={out.text.strip()!r} found={'4728193' in out.text} "
              f"prompt={s.prompt_tokens} tok KV={human_bytes(s.kv_bytes)} of {human_bytes(s.full_kv_bytes)} "
              f"prefill={s.prefill_seconds:.1f}s decode={s.decode_seconds:.1f}s")
    return 0
