"""``kvlab eval``: run one benchmark task under a method and budget and print its score."""

from __future__ import annotations

import argparse
import json
import sys

from kvlab.cli.common import add_method_options, add_model_options, human_bytes, load
from kvlab.errors import KvlabError


def length(text: str) -> int:
    """``4096``, ``4k``, ``8K`` -> tokens."""
    t = text.strip().lower()
    try:
        value = int(float(t[:-1]) * 1024) if t.endswith("k") else int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"length must be a number of tokens such as 4096 or 4k, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("length must be >= 1 token")
    return value


def add_parser(sub) -> None:
    p = sub.add_parser(
        "eval", help="run one benchmark task and print its score",
        description="Generate --n samples of a task at --length tokens (prompt + chat template + generation "
        "budget, counted with the model's tokenizer), run them under --method/--budget and print the score. "
        "See `kvlab ls tasks` for the tasks; file-based suites need --task-arg path=FILE.",
        epilog="Examples: kvlab eval --task ruler/niah_single_2 --length 4096 -n 20 --method snapkv --budget 25%\n"
        "  kvlab eval --task niah/single --length 2k -n 11 --task-arg depths=0,10,20,30,40,50,60,70,80,90,100\n"
        "  kvlab eval --task shared/multikey --mode query_agnostic --method snapkv --budget 25%\n"
        "  kvlab eval --task ruler/qa_1 --task-arg path=dev-v2.0.json\n"
        "  kvlab eval --task perplexity --length 8k -n 2 --method streaming_llm --budget 1024",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--task", required=True, help="task name (see `kvlab ls tasks`)")
    p.add_argument("--task-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="task parameter, repeatable: path=FILE, depths=0,50,100, num_keys=8, bucket_size=1024 ...")
    p.add_argument("--length", type=length, default=4096,
                   help="target length in tokens, generation budget and chat template included (default: %(default)s)")
    p.add_argument("-n", "--num-samples", dest="n", type=int, default=20, help="samples to run (default: %(default)s)")
    p.add_argument("--seed", type=int, default=42, help="generator seed (default: %(default)s)")
    p.add_argument("--mode", choices=("query_aware", "query_agnostic"), default="query_aware",
                   help="query_aware: the question is prefilled with the context (single-request benchmarks); "
                   "query_agnostic: the context is compressed once before any question is seen and every "
                   "question is answered from a copy of that cache (default: %(default)s)")
    p.add_argument("--chat", choices=("template", "none"), default="template",
                   help="wrap the prompt in the model's chat template (the answer prefix then opens the "
                   "assistant turn) or use plain text (default: %(default)s)")
    add_model_options(p)
    add_method_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object (summary + every query) instead of text")
    p.add_argument("--output", metavar="FILE.jsonl", help="also write every query's record to this JSONL file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kvlab.budget import Budget
    from kvlab.methods import get_method
    from kvlab.tasks.registry import get_task, parse_task_args

    if args.n < 1:
        raise KvlabError("-n must be >= 1")
    get_method(args.method), Budget.parse(args.budget)  # fail before loading the model
    task = get_task(args.task, **parse_task_args(args.task_arg))
    lm = load(args)
    if getattr(task, "kind", None) == "perplexity":
        return _perplexity(args, task, lm)
    from tqdm import tqdm

    from kvlab.evaluate import run_sample, scores_by, summarize
    from kvlab.tasks.files import truncation_summary

    samples = task.samples(lm.tokenizer, args.length, args.n, args.seed, args.chat)
    results = []
    for sample in tqdm(samples, desc=args.task, unit="sample", file=sys.stderr, disable=not sys.stderr.isatty(),
                       leave=False):
        results += run_sample(lm, task, sample, args.method, args.budget, mode=args.mode, chat=args.chat,
                              chunk_size=args.chunk_size)
    summary = summarize(results)
    by_depth = scores_by(results, "depth") if any("depth" in r.metadata for r in results) else None
    truncation = truncation_summary(samples) if any("truncated" in s.metadata for s in samples) else None
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r.to_dict()) + "\n" for r in results)
    config = {"task": args.task, "task_args": parse_task_args(args.task_arg), "length": args.length, "n": args.n,
              "seed": args.seed, "mode": args.mode, "chat": args.chat, "method": args.method,
              "budget": str(Budget.parse(args.budget)), "chunk_size": args.chunk_size, "model": lm.name}
    if args.json:
        print(json.dumps({**config, "metric": task.metric, "summary": summary, "by_depth": by_depth,
                          "truncation": truncation, "results": [r.to_dict() for r in results]}))
        return 0
    s = summary
    full = sum(r.full_kv_bytes for r in results) / len(results)
    share = f" ({100 * s['mean_kv_bytes'] / full:.1f}% of full)" if full else ""
    print(f"{args.task}  length {args.length}  {args.method} budget={config['budget']}  mode={args.mode}  "
          f"chat={samples[0].metadata.get('chat', args.chat)}  model={lm.name}")
    print(f"score {s['score']:.2f} ({task.metric}) over {s['queries']} queries of {s['samples']} samples; "
          f"empty answers {100 * s['nulls']:.0f}%")
    print(f"prompt {s['mean_prompt_tokens']:.0f} tok (mean), KV kept {s['mean_kv_tokens']:.0f} tok/layer, "
          f"{human_bytes(s['mean_kv_bytes'])}{share}; prefill {s['prefill_seconds']:.1f} s, "
          f"decode {s['decode_seconds']:.1f} s in total")
    if by_depth and len(by_depth) > 1:
        print("by depth (%): " + ", ".join(f"{k}: {v:.0f}" for k, v in by_depth.items()))
    if truncation:
        kept = truncation["mean_kept_fraction_of_truncated"]
        print(f"truncated (middle) {truncation['truncated']} of {truncation['samples']} samples"
              + (f", keeping {100 * kept:.1f}% of their context on average" if kept is not None else ""))
    official = {s.metadata.get("official_chat") for s in samples} - {None}
    if official == {"none"} and args.chat == "template":
        print("note: LongBench runs this dataset without the chat template; pass --chat none to match", file=sys.stderr)
    return 0


def _perplexity(args: argparse.Namespace, task, lm) -> int:
    from kvlab.evaluate import run_perplexity

    if args.mode != "query_aware":
        raise KvlabError("perplexity has no questions; drop --mode")
    chunk = args.chunk_size or args.length
    records = run_perplexity(lm, task, args.length, args.method, args.budget, chunk, n=args.n, seed=args.seed)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in records)
    if args.json:
        print(json.dumps({"task": args.task, "length": args.length, "method": args.method,
                          "budget": str(args.budget or "full"), "records": records}))
        return 0
    import math

    print(f"{args.task}  length {args.length}  {args.method} budget={args.budget or 'full'}  chunk {chunk}  "
          f"{len(records)} windows  model={lm.name}")
    total = sum(r["nll"] * r["tokens"] for r in records) / sum(r["tokens"] for r in records)
    print(f"perplexity {math.exp(total):.3f} (mean NLL {total:.4f} nats/token)")
    print("bucket (positions)      NLL      ppl")
    for b, _ in enumerate(records[0]["buckets"]):
        rows = [r["buckets"][b] for r in records]
        nll = sum(x["nll"] * x["tokens"] for x in rows) / sum(x["tokens"] for x in rows)
        print(f"{rows[0]['first']:>6}-{rows[0]['last']:<14} {nll:8.4f} {math.exp(nll):8.3f}")
    return 0
