"""``kvlab bench``: speed and memory per method on this device (each case in its own process)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from kvlab.cli.common import add_model_options, chunk_size, non_negative_int, positive_int, positive_seconds
from kvlab.defaults import DECODE_KERNELS, DECODE_MODES, DEFAULT_CHUNK_SIZE
from kvlab.errors import KvlabError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "bench", help="speed and memory of methods on this device",
        description="Prefill(+compression) time, peak memory over the weights, KV bytes held, decode ms/token "
        "and its ratio to the device's bandwidth floor, per prompt length and method, each case in a fresh "
        "process, next to a plain-transformers baseline. Random token ids; weights may be random too.",
    )
    add_model_options(p)
    p.add_argument("--random-weights", metavar="SHAPE", default=None,
                   help="measure a random-weight model of a named shape (e.g. llama-3.1-8b; see `kvlab ls "
                   "models`) instead of --model")
    p.add_argument("--lengths", default="4k",
                   help="prompt lengths in tokens, e.g. 4k,8000 or 32k,130944; each plus the tokens a case "
                   "generates must fit the model's window, which is checked first (default: %(default)s)")
    p.add_argument("--methods", default="full,snapkv,streaming_llm",
                   help="methods, comma-separated, with optional parameters: "
                   "full,a_shape:n_init=64,n_local=1024,snapkv (default: %(default)s)")
    p.add_argument("--budget", default="10%", help="KV budget for compressing methods (default: %(default)s)")
    p.add_argument("--chunk-size", type=chunk_size, default=DEFAULT_CHUNK_SIZE,
                   help="prefill chunk; 'none' = one pass (default: %(default)s)")
    p.add_argument("--decode-tokens", type=positive_int, default=32, help="timed decoding steps (default: %(default)s)")
    p.add_argument("--warmup-steps", type=non_negative_int, default=2, help="untimed decoding steps first (default: %(default)s)")
    p.add_argument("--decode-mode", default="auto", choices=DECODE_MODES,
                   help="kvlab decoding path: eager, static, graph (CUDA graphs), compiled (torch.compile, "
                   "compiled during the warm-up steps); auto = graph on GPU; on CPU static for "
                   "methods that evict while decoding (h2o, tova, streaming_llm), eager otherwise")
    p.add_argument("--decode-attention", default=None, choices=DECODE_KERNELS,
                   help="decode attention kernel of the static, graph and compiled modes: matmul (kvlab's "
                   "decode_attention; one opaque operator inside the compiled step), inductor (--decode-mode "
                   "compiled only, its default: the same traced into the step, its passes fused by inductor) "
                   "or flex (flex_attention's fused decoding kernel, compiled; not for h2o/tova, which read the "
                   "attention probabilities); default: $KVLAB_DECODE_ATTENTION, else inductor for compiled "
                   "and matmul for the others")
    p.add_argument("--no-baseline", dest="baseline", action="store_false",
                   help="skip the plain-transformers baseline row")
    p.add_argument("--baseline-generate", action="store_true",
                   help="also time the baseline's decoding through model.generate() (slow at long lengths: it "
                   "builds an attention mask every step); the baseline's figure is a plain greedy loop")
    p.add_argument("--cudnn-decode", action="store_true",
                   help="keep cuDNN SDPA on while decoding (off by default: it re-plans at every new length)")
    p.add_argument("--warmup", default="auto", choices=("auto", "full", "short", "none"),
                   help="warm-up prefill per case: auto = full length on CUDA, 256 tokens on CPU")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch CPU threads in each case (default: torch's choice; 1 is steadier on a busy machine)")
    p.add_argument("--timeout", type=positive_seconds, default=3600, help="seconds per case (default: %(default)s)")
    p.add_argument("--json", metavar="PATH", help="write the full results as JSON ('-' = stdout)")
    p.add_argument("--store", metavar="DB", help="also add the records to this kvlab result store")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    from kvlab.bench import BenchConfig, parse_lengths
    from kvlab.budget import Budget
    from kvlab.decoding import resolve_mode
    from kvlab.methods import get_method
    from kvlab.models import ModelSpec
    from kvlab.models.loading import check_device, default_device, load_config

    model = args.model
    if args.random_weights:
        if model not in ("default", None):
            raise KvlabError("give either --model or --random-weights, not both")
        from kvlab.models import shapes

        shapes.config_for(args.random_weights)  # unknown shape -> UnknownNameError
        model = f"random:{args.random_weights}"
    methods = split_methods(args.methods)
    if not methods:
        raise KvlabError("no methods given; use e.g. --methods full,snapkv")
    for m in methods:
        get_method(m)  # unknown names and bad parameters fail here, before any case runs
    Budget.parse(args.budget)
    if args.decode_tokens < 1 or args.warmup_steps < 0:
        raise KvlabError("--decode-tokens must be >= 1 and --warmup-steps >= 0")
    if args.decode_mode == "compiled" and args.warmup_steps < 1:
        raise KvlabError("--decode-mode compiled compiles in its first step: use --warmup-steps 1 or more")
    lengths = parse_lengths(args.lengths)
    device = check_device(args.device or default_device())
    resolve_mode(args.decode_mode, device)  # 'graph' needs CUDA
    if args.decode_attention == "inductor" and args.decode_mode != "compiled":
        raise KvlabError("--decode-attention inductor traces decode attention into the compiled step: "
                         "add --decode-mode compiled")
    if args.decode_attention == "flex":
        eager = [m for m in methods if resolve_mode(args.decode_mode, device, get_method(m)) == "eager"]
        if eager:
            raise KvlabError(f"--decode-attention flex is the kernel of the static decode modes, but with "
                             f"--decode-mode {args.decode_mode} on {device.type} {', '.join(eager)} would decode "
                             "eagerly: add --decode-mode static (or compiled)")
    config = load_config(model)
    if config is not None:  # the window engine.check_fits applies in each case
        check_lengths_fit(lengths, args.warmup_steps + args.decode_tokens + 2,
                          ModelSpec.from_config(config).max_positions, model)
    return BenchConfig(model=model, lengths=lengths, methods=methods, budget=args.budget,
                       chunk_size=args.chunk_size, decode_tokens=args.decode_tokens, warmup_steps=args.warmup_steps,
                       decode_mode=args.decode_mode, decode_attention=args.decode_attention, baseline=args.baseline,
                       device=args.device, dtype=args.dtype,
                       cudnn_decode=args.cudnn_decode, warmup=args.warmup, threads=args.threads,
                       timeout=args.timeout, baseline_generate=args.baseline_generate)


def check_lengths_fit(lengths: list[int], generated: int, window: int | None, model: str) -> None:
    """Fail before any case runs when a prompt plus the tokens a case generates exceed the window."""
    if not window:
        return
    bad = [n for n in lengths if n + generated > window]
    if bad:
        raise KvlabError(
            f"the model '{model}' has a window of {window} positions and each case generates {generated} tokens "
            f"(warm-up + decode + 2), so prompts of {', '.join(map(str, bad))} tokens do not fit: use at most "
            f"{window - generated} (e.g. --lengths {window - generated}) or fewer --decode-tokens"
        )


def _write_json(path: str, result) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=1, default=str)
    os.replace(tmp, path)


def split_methods(text: str) -> list[str]:
    """``"full,a_shape:n_init=64,n_local=1024,snapkv"`` -> ``["full", "a_shape:n_init=64,n_local=1024", "snapkv"]``
    (an item with ``=`` but no ``:`` continues the previous method's parameters; ``;`` works too)."""
    out: list[str] = []
    for item in filter(None, (p.strip() for p in text.replace(";", ",").split(","))):
        if "=" in item and ":" not in item and out:
            out[-1] += "," + item
        else:
            out.append(item)
    return out


def run(args: argparse.Namespace) -> int:
    from kvlab.bench import format_table, run_bench, to_records

    config = config_from_args(args)
    print(f"kvlab bench: {len(config.cases())} cases on {config.model}, each in its own process", file=sys.stderr)

    def progress(row, result):
        what = row.get("method", row.get("method_spec"))
        status = f"error: {row['error']}" if "error" in row else (
            f"prefill {row['prefill_seconds']:.2f} s, decode {row['decode_ms_per_token']:.2f} ms/token")
        print(f"  {row.get('length')} {what}: {status}", file=sys.stderr, flush=True)
        if args.json and args.json != "-":  # rewritten after every case: a killed run keeps what it measured
            _write_json(args.json, result)

    result = run_bench(config, on_row=progress)
    if args.json == "-":
        json.dump(result, sys.stdout, indent=1, default=str)
        print()
    else:
        print(format_table(result))
        if args.json:
            _write_json(args.json, result)
    if args.store:
        from kvlab.results.store import open_store

        with open_store(args.store) as store:
            run_id = store.start_run({**result["provenance"], "device": result["device"]}, command="kvlab bench")
            store.add_bench(to_records(result), run_id)
            store.finish_run(run_id)
    return 1 if any("error" in r for r in result["rows"]) else 0
