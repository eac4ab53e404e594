#!/usr/bin/env python
"""Check kvlab's eviction methods against NVIDIA kvpress (the reference implementation) on the same inputs.

What it does:

1. builds tiny random Llama models (GQA: 4 layers, 8 query / 2 KV heads, head_dim 32, fixed seeds) and
   saves them as safetensors in a temporary directory. Two weight scales: ``sharp`` (q/k projections
   with std 0.1: peaked attention, like a trained model) and ``flat`` (the default init, std 0.02:
   near-uniform attention, where scores are close and rounding decides more of the ranking);
2. runs every kvpress press on random prompts (512 and 777 tokens) at compression ratios 0.25, 0.5
   and 0.75 in a subprocess with kvpress's own Python (kvpress 0.5.5 needs transformers < 5.3, so it
   lives in a separate virtual environment, never in kvlab's), and records, per layer and KV head, the
   original positions kvpress kept (kept keys matched exactly against the full cache's keys; for
   AdaKVPress, the complement of ``module.masked_key_indices``) plus the scores it ranked them by;
3. runs kvlab on the same model and prompt with ``kvlab.engine.prefill_context(..., chunk_size=None)``
   (the whole prompt in one forward, compressed once at its end, as kvpress does) with a budget of
   ``int(n * (1 - ratio))`` tokens per layer -- the number kvpress keeps, observation window included
   on both sides -- and reads the kept positions from ``cache.layers[i].positions``;
4. reports, per method, exact-set agreement and the Jaccard index per (layer, KV head), plus
   diagnostics that explain the differences (per-layer sizes, the top-k of kvpress's own scores at
   kvlab's sizes, the score gap at the swapped boundary tokens, and the allocation rules of the
   papers' repositories applied to kvpress's scores).

Pairs compared (kvlab method <-> kvpress press, same hyperparameters):

    snapkv        SnapKVPress(window_size=32, kernel_size=5)      (kvpress's default window is 64)
    pyramidkv     PyramidKVPress(window_size=32, kernel_size=5, beta=20)
    knorm         KnormPress()
    streaming_llm StreamingLLMPress(n_sink=4)
    tova          TOVAPress()
    adakv         AdaKVPress(SnapKVPress(window_size=32, kernel_size=5), alpha_safeguard=0.2)
    h2o           ObservedAttentionPress()  (eager attention; the closest kvpress has)
    h2o           "h2o_rule": the FMInference/H2O real-drop rule (accumulated attention summed over
                  queries, heavy hitters + recent window) written here as a kvpress ScorerPress over
                  kvpress's own eager attention weights -- a re-statement of the H2O repository's
                  rule, not code from it

Run (from the repository root; kvpress's environment is built outside the repository, see
docs/reference-check.md)::

    nice -n 10 .venv/bin/python scripts/compare_kvpress.py --kvpress-python /work/kvpress-env/bin/python

Writes ``bench/results/kvpress_agreement.json`` and prints a Markdown table. Nothing of kvpress is
imported by kvlab: the kvpress side runs in another interpreter (this same file, ``kvpress-worker``
mode, which imports only the standard library at module level).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WINDOW = 32  # SnapKV / PyramidKV / AdaKV observation window, both sides (kvlab's default)
KERNEL = 5
BETA = 20
N_SINK = 4
ALPHA = 0.2

MODELS = {
    # name: (seed, std of the q_proj / k_proj weights or None for the default init)
    "sharp": (0, 0.1),
    "flat": (1, None),
}
PROMPTS = {"p512": (512, 11), "p777": (777, 12)}  # name: (tokens, seed)
RATIOS = (0.25, 0.5, 0.75)
VOCAB = 1024

# comparison key -> (kvlab method spec, kvpress press class, kvpress kwargs, attention implementation)
PAIRS = {
    "snapkv": ("snapkv", "SnapKVPress", {"window_size": WINDOW, "kernel_size": KERNEL}, "sdpa"),
    "pyramidkv": ("pyramidkv", "PyramidKVPress", {"window_size": WINDOW, "kernel_size": KERNEL, "beta": BETA},
                  "sdpa"),
    "knorm": ("knorm", "KnormPress", {}, "sdpa"),
    "streaming_llm": ("streaming_llm", "StreamingLLMPress", {"n_sink": N_SINK}, "sdpa"),
    "tova": ("tova", "TOVAPress", {}, "sdpa"),
    "adakv": ("adakv", "AdaKVPress", {"alpha_safeguard": ALPHA}, "sdpa"),
    "h2o~observed": ("h2o", "ObservedAttentionPress", {}, "eager"),
    "h2o~h2o_rule": ("h2o", "H2ORulePress", {"heavy_ratio": 0.5}, "eager"),
}


# pairs whose kvpress selection is a per-head top-k of the captured scores (k-th gap is meaningful)
PER_HEAD_TOPK = ("snapkv", "pyramidkv", "knorm", "tova", "h2o~h2o_rule")


def n_kept(n: int, ratio: float) -> int:
    """What kvpress keeps per layer and head (``kvpress.utils.compute_n_kept``)."""
    return max(1, int(n * (1 - ratio)))


# ------------------------------------------------------------------------------------------------
# The kvpress side (runs in kvpress's interpreter)
# ------------------------------------------------------------------------------------------------


def kvpress_worker(job_path: str, out_path: str) -> None:
    import importlib.util
    import warnings

    warnings.filterwarnings("ignore")
    if importlib.util.find_spec("datasets") is None:  # kvpress imports it at top level; a stub is enough
        stub = Path(job_path).resolve().parent / "stub"  # inside the run's temporary directory
        stub.mkdir(exist_ok=True)
        (stub / "datasets.py").write_text("def load_dataset(*args, **kwargs):\n    raise RuntimeError('stub')\n")
        sys.path.insert(0, str(stub))

    from dataclasses import dataclass

    import kvpress
    import torch
    import transformers
    from kvpress import ScorerPress
    from kvpress.utils import compute_n_kept
    from transformers import AutoModelForCausalLM, DynamicCache

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

    @dataclass
    class H2ORulePress(ScorerPress):
        """The FMInference/H2O real-drop rule over kvpress's eager attention weights.

        hh_score = attention summed over the prompt's queries (H2OKVCache_LayerWise._update_hh_score);
        the last ``recent`` tokens are kept, the heavy hitters are the top of the rest. With GQA the
        score is summed over the group (the H2O repository handles MHA only; kvlab sums the group).
        """

        heavy_ratio: float = 0.5

        def score(self, module, hidden_states, keys, values, attentions, kwargs):
            b, hkv, n, _ = keys.shape
            acc = attentions.float().sum(2)  # (B, Hq, n): summed over queries
            acc = acc.view(b, hkv, -1, n).sum(2)
            kept = compute_n_kept(n, self.compression_ratio)
            recent = kept - int(kept * self.heavy_ratio)
            if recent:
                acc[..., n - recent:] = float("inf")
            return acc

    job = json.loads(Path(job_path).read_text())
    out: dict = {
        "versions": {"kvpress": kvpress.__version__ if hasattr(kvpress, "__version__") else _dist_version("kvpress"),
                     "torch": torch.__version__, "transformers": transformers.__version__,
                     "python": sys.version.split()[0]},
        "cells": {},
    }
    if out["versions"]["kvpress"] is None:
        out["versions"]["kvpress"] = _dist_version("kvpress")

    def build(press_cls: str, kwargs: dict, ratio: float):
        if press_cls == "H2ORulePress":
            return H2ORulePress(compression_ratio=ratio, **kwargs)
        if press_cls == "AdaKVPress":
            inner = kvpress.SnapKVPress(compression_ratio=ratio, window_size=job["window"], kernel_size=job["kernel"])
            return kvpress.AdaKVPress(press=inner, **kwargs)
        return getattr(kvpress, press_cls)(compression_ratio=ratio, **kwargs)

    def match(full: torch.Tensor, kept: torch.Tensor) -> list[list[int]]:
        """Original positions of the kept keys: ``full (1, H, n, D)``, ``kept (1, H, k, D)``."""
        heads = []
        for h in range(full.shape[1]):
            eq = (kept[0, h, :, None, :] == full[0, h, None, :, :]).all(-1)  # (k, n)
            if not bool((eq.sum(-1) == 1).all()):
                raise RuntimeError("a kept key matches no or several positions of the full cache")
            heads.append(sorted(eq.float().argmax(-1).tolist()))
        return heads

    for model_name, model_dir in job["models"].items():
        models = {}
        for impl in ("sdpa", "eager"):
            models[impl] = AutoModelForCausalLM.from_pretrained(
                model_dir, dtype=torch.float32, attn_implementation=impl).eval()
        for prompt_name, ids in job["prompts"].items():
            input_ids = torch.tensor([ids], dtype=torch.long)
            for ratio in job["ratios"]:
                for key, (press_cls, kwargs, impl) in job["presses"].items():
                    press = build(press_cls, kwargs, ratio)
                    kept_by_layer: dict[int, list[list[int]]] = {}
                    scores_by_layer: dict[int, list[list[float]]] = {}
                    scorer = press.press if press_cls == "AdaKVPress" else press
                    inner_score = scorer.score

                    def score(module, hidden_states, keys, values, attentions, kw, _inner=inner_score,
                              _store=scores_by_layer):
                        s = _inner(module, hidden_states, keys, values, attentions, kw)
                        _store[module.layer_idx] = s[0].detach().float().clone().tolist()
                        return s

                    scorer.score = score
                    inner_compress = press.compress

                    def compress(module, hidden_states, keys, values, attentions, kw, _inner=inner_compress,
                                 _store=kept_by_layer, _ada=press_cls == "AdaKVPress"):
                        k2, v2 = _inner(module, hidden_states, keys, values, attentions, kw)
                        if _ada:  # AdaKV keeps the keys and masks the pruned ones at decoding time
                            _, heads, seq = module.masked_key_indices
                            n = keys.shape[2]
                            pruned = torch.zeros(keys.shape[1], n, dtype=torch.bool)
                            pruned[heads.cpu(), seq.cpu()] = True
                            _store[module.layer_idx] = [torch.nonzero(~pruned[h]).flatten().tolist()
                                                        for h in range(keys.shape[1])]
                        else:
                            _store[module.layer_idx] = match(keys, k2)
                        return k2, v2

                    press.compress = compress
                    model = models[impl]
                    cache = DynamicCache()
                    start = time.perf_counter()
                    with torch.no_grad(), press(model):
                        model(input_ids=input_ids, past_key_values=cache, use_cache=True)
                    layers = model.config.num_hidden_layers
                    out["cells"][f"{model_name}/{prompt_name}/{ratio}/{key}"] = {
                        "kept": [kept_by_layer[i] for i in range(layers)],
                        "scores": [scores_by_layer[i] for i in range(layers)],
                        "seconds": round(time.perf_counter() - start, 4),
                    }
    Path(out_path).write_text(json.dumps(out))


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


# ------------------------------------------------------------------------------------------------
# The kvlab side and the comparison
# ------------------------------------------------------------------------------------------------


def build_models(tmp: Path) -> dict[str, str]:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    dirs = {}
    for name, (seed, qk_std) in MODELS.items():
        torch.manual_seed(seed)
        config = LlamaConfig(vocab_size=VOCAB, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                             num_attention_heads=8, num_key_value_heads=2, head_dim=32,
                             max_position_embeddings=4096)
        model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
        if qk_std is not None:
            with torch.no_grad():
                for layer in model.model.layers:
                    layer.self_attn.q_proj.weight.normal_(0.0, qk_std)
                    layer.self_attn.k_proj.weight.normal_(0.0, qk_std)
        path = tmp / f"tiny-llama-gqa-{name}"
        model.save_pretrained(str(path), safe_serialization=True)
        dirs[name] = str(path)
    return dirs


def make_prompts() -> dict[str, list[int]]:
    import torch

    out = {}
    for name, (n, seed) in PROMPTS.items():
        g = torch.Generator().manual_seed(seed)
        out[name] = torch.randint(0, VOCAB, (n,), generator=g).tolist()
    return out


def run_kvlab(model_dirs: dict[str, str], prompts: dict[str, list[int]]) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from kvlab.engine import prefill_context
    from kvlab.models.loading import LoadedModel
    from kvlab.models.spec import ModelSpec

    cells = {}
    methods = {spec for spec, *_ in PAIRS.values()}
    for model_name, path in model_dirs.items():
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa").eval()
        spec = ModelSpec.from_config(model.config, dtype=torch.float32, name=f"tiny-llama-gqa-{model_name}")
        loaded = LoadedModel(model=model, tokenizer=None, spec=spec, name=spec.name, source="compare_kvpress")
        for prompt_name, ids in prompts.items():
            for ratio in RATIOS:
                budget = n_kept(len(ids), ratio)
                for method in sorted(methods):
                    start = time.perf_counter()
                    pre = prefill_context(loaded, ids, method, budget, chunk_size=None)
                    kept = []
                    for layer in pre.cache.layers:
                        pos = layer.positions[0]
                        kept.append([sorted(int(p) for p in row if p >= 0) for row in pos.tolist()])
                    cells[f"{model_name}/{prompt_name}/{ratio}/{method}"] = {
                        "kept": kept, "budget": budget, "seconds": round(time.perf_counter() - start, 4)}
    return cells


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if (a or b) else 1.0


def topk_positions(scores: list[float], k: int) -> set[int]:
    import torch

    return set(torch.tensor(scores).topk(k).indices.tolist())


def pyramid_repo_sizes(budget: int, n: int, layers: int, w: int = WINDOW, beta: int = BETA) -> list[int]:
    """Per-layer kept tokens of Zefan-Cai/PyramidKV ``PyramidKVCluster.update_kv`` (budget incl. window)."""
    if n < budget:
        return [n] * layers
    if n < (budget - w) * 2:  # the reference falls back to a uniform SnapKV budget
        return [budget] * layers
    min_num = (budget - w) // beta
    max_num = (budget - w) * 2 - min_num
    if max_num >= n - w:
        max_num = n - w
        min_num = (budget - w) * 2 - max_num
    steps = (max_num - min_num) // (layers - 1)
    return [max_num - i * steps + w for i in range(layers)]


def adakv_repo_selection(scores: list[list[float]], budget: int, n: int, w: int = WINDOW,
                         alpha: float = ALPHA) -> list[set[int]]:
    """FFY0/AdaKV ``AdaptiveSnapKVCluster.update_kv_gqa`` allocation applied to per-KV-head scores.

    Global top ``H * (budget - w)`` prefix tokens give each head a count c_h; the head keeps its own top
    ``round(c_h * (1 - alpha) + int((budget - w) * alpha))`` prefix tokens plus the window.
    """
    import torch

    s = torch.tensor(scores)[:, : n - w]  # prefix scores (kvpress pads the window with max + 1)
    heads, length = s.shape
    base = budget - w
    floor = int(base * alpha)
    order = s.sort(dim=-1, descending=True)
    top = torch.topk(order.values.reshape(-1), heads * base).indices // length
    counts = torch.zeros(heads, dtype=torch.long).scatter_add_(0, top, torch.ones_like(top))
    caps = torch.round(counts * (1 - alpha) + floor).int()
    window = set(range(n - w, n))
    return [set(order.indices[h, : int(caps[h])].tolist()) | window for h in range(heads)]


def compare(kvp: dict, kvl: dict, prompts: dict[str, list[int]]) -> dict:
    rows = {}
    for key, (method, press_cls, _kw, _impl) in PAIRS.items():
        per_cell = []
        for model_name in MODELS:
            for prompt_name, ids in prompts.items():
                n = len(ids)
                for ratio in RATIOS:
                    a = kvp[f"{model_name}/{prompt_name}/{ratio}/{key}"]
                    b = kvl[f"{model_name}/{prompt_name}/{ratio}/{method}"]
                    cell = {"model": model_name, "prompt": prompt_name, "tokens": n, "ratio": ratio,
                            "budget": n_kept(n, ratio), "layers": []}
                    for li, (ka, kb) in enumerate(zip(a["kept"], b["kept"])):
                        layer = {"kvpress_sizes": [len(x) for x in ka], "kvlab_sizes": [len(x) for x in kb],
                                 "jaccard": [], "exact": [], "aligned_jaccard": [], "boundary_rel_gap": []}
                        for h, (sa, sb) in enumerate(zip(ka, kb)):
                            sa, sb = set(sa), set(sb)
                            layer["jaccard"].append(round(jaccard(sa, sb), 6))
                            layer["exact"].append(sa == sb)
                            scores = a["scores"][li][h] if a.get("scores") else None
                            if scores is not None and len(sb) <= len(scores):
                                # kvpress's own scores, top-k at kvlab's size: separates allocation from ranking
                                aligned = topk_positions(scores, len(sb))
                                layer["aligned_jaccard"].append(round(jaccard(aligned, sb), 6))
                                swapped = aligned ^ sb
                                if swapped:  # how far from kvpress's threshold the disputed tokens score
                                    srt = sorted(scores, reverse=True)
                                    thr = srt[len(sb) - 1]
                                    finite = [abs(scores[p] - thr) / (abs(thr) or 1.0) for p in swapped
                                              if math.isfinite(scores[p])]
                                    layer["boundary_rel_gap"].append(max(finite) if finite else None)
                                if key in PER_HEAD_TOPK and len(sb) < len(scores):
                                    # closest call: relative gap between kvpress's k-th and (k+1)-th scores
                                    srt = sorted((x for x in scores if math.isfinite(x)), reverse=True)
                                    k = len(sb) - (len(scores) - len(srt))  # ranks among the finite scores
                                    if 0 < k < len(srt):
                                        gap = (srt[k - 1] - srt[k]) / (abs(srt[k - 1]) or 1.0)
                                        layer.setdefault("kth_rel_gap", []).append(gap)
                        if method == "pyramidkv" and a.get("scores"):
                            size = pyramid_repo_sizes(n_kept(n, ratio), n, len(a["kept"]))[li]
                            layer["repo_size"] = size
                            repo = [topk_positions(s, size) for s in a["scores"][li]]
                            layer["repo_rule_jaccard_vs_kvlab"] = [round(jaccard(r, set(s)), 6)
                                                                   for r, s in zip(repo, kb)]
                            layer["repo_rule_jaccard_vs_kvpress"] = [round(jaccard(r, set(s)), 6)
                                                                     for r, s in zip(repo, ka)]
                        if key == "h2o~observed" and a.get("scores"):
                            # kvpress's mean-attention score with H2O's recent window added back
                            budget = n_kept(n, ratio)
                            recent = budget - int(budget * 0.5)
                            mixed = []
                            for s, kl in zip(a["scores"][li], kb):
                                s = list(s)
                                for p in range(n - recent, n):
                                    s[p] = float("inf")
                                mixed.append(round(jaccard(topk_positions(s, budget), set(kl)), 6))
                            layer["observed_plus_recent_jaccard_vs_kvlab"] = mixed
                        if method == "adakv" and a.get("scores"):
                            repo = adakv_repo_selection(a["scores"][li], n_kept(n, ratio), n)
                            layer["repo_rule_jaccard_vs_kvlab"] = [round(jaccard(r, set(s)), 6)
                                                                   for r, s in zip(repo, kb)]
                            layer["repo_rule_jaccard_vs_kvpress"] = [round(jaccard(r, set(s)), 6)
                                                                     for r, s in zip(repo, ka)]
                            layer["repo_rule_sizes"] = [len(r) for r in repo]
                        cell["layers"].append(layer)
                    per_cell.append(cell)
        rows[key] = {"kvlab": method, "kvpress": press_cls, "cells": per_cell, "summary": summarize(per_cell)}
    return rows


def summarize(cells: list[dict]) -> dict:
    def stats(sel):
        jac = [j for c in sel for layer in c["layers"] for j in layer["jaccard"]]
        ex = [e for c in sel for layer in c["layers"] for e in layer["exact"]]
        al = [j for c in sel for layer in c["layers"] for j in layer["aligned_jaccard"]]
        return {"heads": len(jac), "exact": sum(ex), "exact_frac": round(sum(ex) / len(ex), 4),
                "jaccard_mean": round(sum(jac) / len(jac), 4), "jaccard_min": round(min(jac), 4),
                "aligned_jaccard_mean": round(sum(al) / len(al), 4) if al else None,
                "aligned_jaccard_min": round(min(al), 4) if al else None}

    out = {"all": stats(cells)}
    for extra in ("repo_rule_jaccard_vs_kvlab", "repo_rule_jaccard_vs_kvpress",
                  "observed_plus_recent_jaccard_vs_kvlab"):
        for group in ("all",) + tuple(f"ratio={r}" for r in RATIOS):
            sel = cells if group == "all" else [c for c in cells if f"ratio={c['ratio']}" == group]
            vals = [j for c in sel for layer in c["layers"] for j in layer.get(extra, [])]
            if vals:
                out.setdefault(extra, {})[group] = {"mean": round(sum(vals) / len(vals), 4),
                                                    "min": round(min(vals), 4)}
    gaps = [g for c in cells for layer in c["layers"] for g in layer.get("kth_rel_gap", [])]
    if gaps:
        out["closest_kth_rel_gap"] = {m: min(g for c in cells if c["model"] == m for layer in c["layers"]
                                             for g in layer.get("kth_rel_gap", [])) for m in MODELS}
    for model in MODELS:
        out[model] = stats([c for c in cells if c["model"] == model])
    for ratio in RATIOS:
        out[f"ratio={ratio}"] = stats([c for c in cells if c["ratio"] == ratio])
    return out


def markdown(rows: dict) -> str:
    header = ("| kvlab | kvpress | (layer, head) sets | identical | Jaccard mean | Jaccard min | "
              "J: kvpress scores, top-k at kvlab's sizes | identical: sharp / flat |")
    lines = [header, "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows.values():
        s = row["summary"]
        a, sh, fl = s["all"], s["sharp"], s["flat"]
        al = f"{a['aligned_jaccard_mean']:.4f}" if a["aligned_jaccard_mean"] is not None else "-"
        lines.append(f"| {row['kvlab']} | {row['kvpress']} | {a['heads']} | {a['exact']}/{a['heads']} | "
                     f"{a['jaccard_mean']:.4f} | {a['jaccard_min']:.4f} | {al} | "
                     f"{sh['exact']}/{sh['heads']} / {fl['exact']}/{fl['heads']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd")
    w = sub.add_parser("kvpress-worker", help="internal: the kvpress side (run with kvpress's interpreter)")
    w.add_argument("job")
    w.add_argument("out")
    ap.add_argument("--kvpress-python", default=os.environ.get("KVPRESS_PYTHON", "/work/kvpress-env/bin/python"),
                    help="Python of an environment with kvpress 0.5.5 and transformers 5.2 (outside the repo)")
    ap.add_argument("--out", default=str(ROOT / "bench/results/kvpress_agreement.json"))
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temporary models and raw dumps")
    ap.add_argument("--reuse", help="a directory kept by --keep-tmp: re-analyse its raw dumps without re-running")
    args = ap.parse_args(argv)
    if args.cmd == "kvpress-worker":
        kvpress_worker(args.job, args.out)
        return 0

    import torch
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    reuse = Path(args.reuse) if args.reuse else None
    tmp = reuse or Path(tempfile.mkdtemp(prefix="kvlab-kvpress-"))
    keep = args.keep_tmp or reuse is not None
    try:
        prompts = make_prompts()
        if reuse is not None and (tmp / "kvpress.json").exists():  # re-analyse a kept run
            model_dirs = json.loads((tmp / "job.json").read_text())["models"]
            kvpress_seconds = kvlab_seconds = float("nan")
        else:
            model_dirs = build_models(tmp)
            job = {"models": model_dirs, "prompts": prompts, "ratios": list(RATIOS), "window": WINDOW,
                   "kernel": KERNEL, "presses": {k: [v[1], v[2], v[3]] for k, v in PAIRS.items()}}
            (tmp / "job.json").write_text(json.dumps(job))
            start = time.perf_counter()
            env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
            env.update(TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
            subprocess.run([args.kvpress_python, str(Path(__file__).resolve()), "kvpress-worker",
                            str(tmp / "job.json"), str(tmp / "kvpress.json")], check=True, env=env, cwd=str(tmp))
            kvpress_seconds = time.perf_counter() - start
        kvp = json.loads((tmp / "kvpress.json").read_text())
        if reuse is not None and (tmp / "kvlab.json").exists():
            kvl = json.loads((tmp / "kvlab.json").read_text())
        else:
            start = time.perf_counter()
            kvl = run_kvlab(model_dirs, prompts)
            kvlab_seconds = time.perf_counter() - start
            (tmp / "kvlab.json").write_text(json.dumps(kvl))
        rows = compare(kvp["cells"], kvl, prompts)
        import kvlab

        result = {
            "command": "nice -n 10 .venv/bin/python scripts/compare_kvpress.py --kvpress-python "
                       "/work/kvpress-env/bin/python",
            "kvpress_side": kvp["versions"],
            "kvlab_side": {"kvlab": getattr(kvlab, "__version__", None), "torch": torch.__version__,
                           "transformers": transformers.__version__, "python": sys.version.split()[0]},
            "models": {name: {"seed": seed, "qk_proj_std": std, "layers": 4, "q_heads": 8, "kv_heads": 2,
                              "head_dim": 32, "hidden": 256, "vocab": VOCAB, "dtype": "float32"}
                       for name, (seed, std) in MODELS.items()},
            "prompts": {name: {"tokens": n, "seed": seed} for name, (n, seed) in PROMPTS.items()},
            "ratios": list(RATIOS),
            "budget_rule": "kvlab budget = int(n * (1 - ratio)) tokens per layer (= kvpress's n_kept, "
                           "observation window included on both sides); chunk_size=None",
            "hyperparameters": {"window": WINDOW, "kernel": KERNEL, "pooling": "avgpool", "beta": BETA,
                                "n_sink": N_SINK, "alpha_safeguard": ALPHA, "h2o_heavy_ratio": 0.5},
            "seconds": {"kvpress": round(kvpress_seconds, 1), "kvlab": round(kvlab_seconds, 1)}
            if reuse is None else None,
            "summary": {k: {"kvlab": r["kvlab"], "kvpress": r["kvpress"], **r["summary"]} for k, r in rows.items()},
            "cells": {k: r["cells"] for k, r in rows.items()},
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        print(markdown(rows))
        print(f"\nwrote {args.out}")
    finally:
        if keep:
            print(f"temporary files kept in {tmp}")
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
