"""``kvlab generate``: one prompt under a method and a budget; prints the answer and its stats."""

from __future__ import annotations

import argparse
import json
import sys

from kvlab.cli.common import add_method_options, add_model_options, human_bytes, load, progress_bar, read_text
from kvlab.defaults import DECODE_MODES
from kvlab.errors import KvlabError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "generate", help="generate for one prompt under a method and budget",
        description="Prefill the prompt (chunked, compressed to the budget), then decode. With --question, "
        "the question is appended after the context is compressed (query-agnostic for prefill-time "
        "methods); without it the whole prompt is the context.",
    )
    add_model_options(p)
    add_method_options(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="the prompt (context) text")
    src.add_argument("--file", help="read the context from this UTF-8 file")
    p.add_argument("--question", help="appended after the compressed context")
    p.add_argument("--max-new-tokens", type=int, default=128, help="(default: %(default)s)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default: %(default)s)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default: %(default)s)")
    p.add_argument("--seed", type=int, default=None, help="seed for sampling")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--chat", choices=("template", "none"), default="template",
                   help="wrap the prompt in the model's chat template, or not (default: %(default)s)")
    p.add_argument("--decode", choices=DECODE_MODES, default="auto",
                   help="decoding steps: eager, static (fixed-capacity cache), graph (static + CUDA graphs), "
                   "compiled (static + torch.compile, + CUDA graphs on a GPU; the first step compiles); "
                   "auto = graph on CUDA; on CPU static for methods that evict while decoding, eager otherwise "
                   "(default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kvlab.budget import Budget
    from kvlab.engine import generate
    from kvlab.methods import get_method

    get_method(args.method), Budget.parse(args.budget)  # fail before loading the model
    context = read_text(args.file) if args.file else args.prompt
    if not context.strip():
        raise KvlabError("the prompt is empty")
    question = args.question or None
    lm = load(args)
    _say_when_decoding_compiles(args.decode, lm.device, get_method(args.method))
    update, close = progress_bar(0, "prefill")
    try:
        result = generate(
            lm, context, question=question, chat=args.chat, method=args.method, budget=args.budget,
            chunk_size=args.chunk_size, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
            top_p=args.top_p, seed=args.seed, stop=args.stop, on_chunk=update, decode=args.decode,
        )
    finally:
        close()
    s = result.stats
    if args.json:
        print(json.dumps({"text": result.text, "model": lm.name, **s.to_dict()}))
        return 0
    print(result.text)
    per_tok = _per_token(s)
    share = f"{100 * s.kv_bytes / s.full_kv_bytes:.1f}%" if s.full_kv_bytes else "-"
    print(
        f"[{s.method} budget={s.budget} chunk={s.chunk_size}] prompt {s.prompt_tokens} tok, "
        f"kept {s.kv_tokens:.0f} tok/layer, KV {human_bytes(s.kv_bytes)} of {human_bytes(s.full_kv_bytes)} "
        f"full ({share}), peak {human_bytes(s.peak_kv_bytes)}; prefill {s.prefill_seconds:.2f} s, "
        f"decode {s.decode_seconds:.2f} s for {s.new_tokens} tok ({per_tok}), finish={s.finish_reason}"
    )
    return 0


def _say_when_decoding_compiles(decode: str, device, method) -> None:
    """A compiled decoding step (or flex's compiled kernel) makes the first token wait: say so, and that
    the decode time printed at the end includes it."""
    from kvlab import decode_kernel
    from kvlab.decoding import resolve_mode

    mode = resolve_mode(decode, device, method)
    what = ("the decoding step (torch.compile)" if mode == "compiled" else
            "flex_attention's decode kernel" if decode_kernel.runs_flex(mode, method) else None)
    if what:
        print(f"kvlab: compiling {what} at the first token (a minute or two on CPU the first time, less with "
              "inductor's on-disk cache); the decode time below includes it", file=sys.stderr)


def _per_token(s) -> str:
    """Decode ms per token; where the first step took far longer than the others (a compile, a CUDA
    graph capture), the steady rate after it, with the first step's seconds said apart."""
    if not s.new_tokens:
        return "-"
    average = f"{1000 * s.decode_seconds / s.new_tokens:.1f} ms/tok"
    if s.decode_steps < 2:
        return average
    rest = (s.decode_seconds - s.first_step_seconds) / (s.decode_steps - 1)
    if s.first_step_seconds < 3 * rest:
        return average
    return f"{1000 * rest:.1f} ms/tok after a first step of {s.first_step_seconds:.1f} s"
