"""``kvlab run``: run a sweep (YAML config and/or flags) into a SQLite result store, resuming where it stopped."""

from __future__ import annotations

import argparse
import shlex
import sys

from kvlab.errors import KvlabError

EPILOG = """\
examples:
  kvlab run configs/ruler_sweep.yaml
  kvlab run configs/needle_grid.yaml --methods full,snapkv --budgets 10%,25% -n 3   # flags override the file
  kvlab run --model default --methods full,snapkv,streaming_llm --budgets 25%,50% --tasks niah/single \\
      --lengths 1k,2k --modes query_aware,query_agnostic -n 5 --db results.db
  kvlab run configs/demo.yaml --dry-run      # print the cells and what is already stored; load nothing

Settings resolve as defaults < YAML < flags and are validated before anything runs. Every finished
sample is committed, so an interrupted run resumes where it stopped when the same command is run
again (finished cells and samples are skipped; rows are never duplicated). `full` is added as the
reference unless --no-reference. Then: kvlab report results.db -o report/
"""


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="run a sweep of methods x budgets x tasks x lengths into results.db",
                       description="Expand a sweep (model x method x budget x task x length x mode x seed x chunk "
                       "size x chat policy) into cells, run each through the engine and store every sample "
                       "in a SQLite file.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", help="a sweep YAML file (see configs/); optional when flags say it all")
    p.add_argument("--model", "--models", dest="models",
                   help="comma-separated: 'default' (embedded SmolLM2-135M-Instruct), local model dirs, .gguf "
                   "files or cached Hugging Face ids")
    p.add_argument("--methods", help="comma-separated method names, with parameters as name:key=value "
                   "(see `kvlab ls methods`)")
    p.add_argument("--budgets", help="comma-separated KV budgets: tokens per layer (512), ratio (25%%), bytes "
                   "(64MiB)")
    p.add_argument("--tasks", help="comma-separated task names (see `kvlab ls tasks`)")
    p.add_argument("--task-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="parameter for the tasks given with --tasks, repeatable (depths=0,50,100 ...)")
    p.add_argument("--lengths", help="comma-separated prompt lengths in tokens (1k, 4096 ...), chat template and "
                   "generation budget included")
    p.add_argument("--modes", help="query_aware and/or query_agnostic (comma-separated)")
    p.add_argument("--seeds", help="comma-separated generator seeds")
    p.add_argument("-n", "--num-samples", dest="n", type=int, help="samples per cell")
    p.add_argument("--chunk-size", "--chunk-sizes", dest="chunk_sizes",
                   help="prefill chunk size(s) in tokens, or 'none' for one pass")
    p.add_argument("--chat", help="chat policy/policies: template, none")
    p.add_argument("--dtype", help="float32, bfloat16, float16 (default: fp32 on CPU, bf16 on CUDA)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--db", help="the SQLite result store (default: results.db)")
    p.add_argument("--name", help="a label for this sweep, kept in the provenance")
    p.add_argument("--no-reference", action="store_true", help="do not add the full-cache reference cells")
    p.add_argument("--no-share-prefill", dest="share_prefill", action="store_false",
                   help="prefill every cell's contexts itself (by default, methods and budgets of one context "
                   "compress one recorded forward when the context fits in one chunk: same results, faster)")
    p.add_argument("--dry-run", action="store_true", help="print the cells and their stored samples; run nothing")
    p.add_argument("--report", metavar="DIR", help="write the report to DIR when the sweep ends")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    """Resolve defaults < YAML < flags into a validated SweepConfig."""
    from kvlab.config import load_yaml, resolve
    from kvlab.tasks.registry import parse_task_args

    yaml_values = load_yaml(args.config) if args.config else {}
    flags = {k: getattr(args, k) for k in ("models", "methods", "budgets", "lengths", "modes", "seeds", "n",
                                            "chunk_sizes", "chat", "dtype", "device", "db", "name")}
    if args.tasks:
        params = parse_task_args(args.task_arg)
        flags["tasks"] = [{"name": t, "params": params} for t in args.tasks.split(",") if t.strip()]
    elif args.task_arg:
        raise KvlabError("--task-arg applies to the tasks named with --tasks; add --tasks")
    if args.no_reference:
        flags["reference"] = False
    if not args.config and not args.tasks:
        raise KvlabError("give a sweep config (kvlab run configs/demo.yaml) or at least --tasks; "
                         "see `kvlab run --help`")
    return resolve(yaml_values, flags)


def run(args: argparse.Namespace) -> int:
    from kvlab.results.store import ResultStore
    from kvlab.runner import cell_label, plan, run_sweep

    config = config_from_args(args)
    if args.dry_run:
        import os

        store = ResultStore(config.db, create=False) if os.path.exists(config.db) else None
        cells = plan(config, store)
        for cell, done in cells:
            print(f"{cell.key}  {done:>3}/{cell.n:<3} {cell.model}  {cell_label(cell)}")
        todo = sum(max(0, c.n - done) for c, done in cells)
        print(f"{len(cells)} cells, {todo} samples to run -> {config.db}")
        return 0
    with ResultStore(config.db) as store:
        try:
            summary = run_sweep(config, store, command=shlex.join(sys.argv), share_prefill=args.share_prefill)
        except KeyboardInterrupt:
            print(f"\nkvlab: interrupted; every finished sample is in {config.db}: run the same command again to "
                  "resume", file=sys.stderr)
            return 130
    print(f"{summary.cells} cells ({summary.already_done} already done): ran {summary.ran}, "
          f"failed {len(summary.failed)}; wrote {summary.samples_written} query rows in {summary.seconds:.0f} s "
          f"-> {config.db}")
    if summary.prefills_replayed:
        print(f"shared prefill: {summary.prefills_recorded} contexts run through the model, "
              f"{summary.prefills_replayed} compressions replayed from them (--no-share-prefill to disable)")
    for _, label, error in summary.failed:
        print(f"  failed: {label}: {error}")
    if args.report:
        from kvlab.report import build_report

        paths = build_report(config.db, args.report)
        print(f"report: {paths.index}")
    else:
        print(f"next: kvlab report {config.db} -o report/")
    return 1 if summary.failed else 0
