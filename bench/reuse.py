"""Context reuse in ``kvlab serve``: time-to-first-token of a repeated long context vs a cold one.

For each method, in one run against one server: a cold request on document A (prefilled and
stored), warm requests on A with other questions (served from a copy of the stored compressed
context), and a cold request on document B (same length, never seen) as a second cold sample.
Each request is a streamed chat completion whose system message is the document (~3.5K tokens)
and whose user message is the question, so the document is compressed without the question.
TTFT is measured by the client, from sending the request to the first streamed content.

    python bench/reuse.py --json bench/results/reuse_cpu.json
    python bench/reuse.py --methods full,snapkv --budget 25% --clauses 80

Reports ``warm_over_cold`` = median warm TTFT / median cold TTFT (lower is better) per method.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import openai
from load_test import environment, require_loopback, serve

QUESTIONS = ["Who signs for the Buyer?", "How many units are in batch 7?", "When is batch 12 delivered?",
             "How much does the Buyer pay for batch 3?"]


def document(tag: str, clauses: int) -> str:
    """A synthetic supply contract; ~60 tokens per clause with the embedded model's tokenizer."""
    lines = [f"SUPPLY AGREEMENT {tag} between Northwind Traders (the Supplier) and Contoso Ltd (the Buyer)."]
    for i in range(1, clauses + 1):
        lines.append(f"Clause {i}. The Supplier delivers batch {i} of {37 * i + 11} units of part {tag}-{i:03d} to "
                     f"the Buyer's warehouse in week {(3 * i) % 52 + 1}; the Buyer pays {125 * i + 40} euros "
                     f"within {10 + i % 20} days of delivery.")
    lines.append("The agreement is signed by Maria Lopez for the Supplier and by Tom Becker for the Buyer.")
    return "\n".join(lines)


def timed_request(client: openai.OpenAI, model: str, doc: str, question: str, kvlab: dict, max_tokens: int) -> dict:
    messages = [{"role": "system", "content": doc}, {"role": "user", "content": question}]
    start = time.perf_counter()
    ttft = None
    info: dict = {}
    text = ""
    stream = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, temperature=0,
                                            stream=True, extra_body={"kvlab": kvlab})
    for chunk in stream:
        if not chunk.choices:
            continue
        if chunk.choices[0].delta.content:
            ttft = ttft if ttft is not None else time.perf_counter() - start
            text += chunk.choices[0].delta.content
        if chunk.choices[0].finish_reason:
            ttft = ttft if ttft is not None else time.perf_counter() - start  # no text at all: time to the end
            info = chunk.model_extra.get("kvlab") or {}
    return {"question": question, "ttft_s": round(ttft, 4), "total_s": round(time.perf_counter() - start, 4),
            "reused": info.get("reused"), "method": info.get("method"), "budget": info.get("budget"),
            "context_tokens": info.get("context_tokens"),
            "suffix_tokens": info.get("suffix_tokens"), "kv_bytes": info.get("kv_bytes"),
            "server_prefill_s": info.get("prefill_seconds"), "answer": text}


def run_method(client: openai.OpenAI, model: str, method: str, budget: str | None, clauses: int,
               warm: int, max_tokens: int) -> dict:
    kvlab = {"method": method, **({"budget": budget} if budget else {})}
    doc_a, doc_b = document(f"A-{method}", clauses), document(f"B-{method}", clauses)
    rows = [dict(timed_request(client, model, doc_a, QUESTIONS[0], kvlab, max_tokens), kind="cold")]
    for q in QUESTIONS[1:1 + warm]:
        rows.append(dict(timed_request(client, model, doc_a, q, kvlab, max_tokens), kind="warm"))
    rows.append(dict(timed_request(client, model, doc_b, QUESTIONS[0], kvlab, max_tokens), kind="cold"))
    expected = [r["kind"] == "warm" for r in rows]
    if [r["reused"] for r in rows] != expected:
        raise SystemExit(f"{method}: the server's reused flags {[r['reused'] for r in rows]} != {expected}")
    cold = statistics.median(r["ttft_s"] for r in rows if r["kind"] == "cold")
    hot = statistics.median(r["ttft_s"] for r in rows if r["kind"] == "warm")
    return {"method": rows[0]["method"], "budget": rows[0]["budget"], "context_tokens": rows[0]["context_tokens"],
            "cold_ttft_s": round(cold, 4), "warm_ttft_s": round(hot, 4), "warm_over_cold": round(hot / cold, 4),
            "speedup": round(cold / hot, 2), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="a running server (loopback only); default: start one")
    p.add_argument("--api-key", default="none")
    p.add_argument("--model", default="default", help="for the server this script starts")
    p.add_argument("--methods", default="full,snapkv")
    p.add_argument("--budget", default="25%", help="budget for every method ('' = the server's)")
    p.add_argument("--clauses", type=int, default=57,
                   help="document length (~60 tokens per clause; 57 = ~3.5K tokens)")
    p.add_argument("--warm", type=int, default=3, help="warm requests per method (at most 3)")
    p.add_argument("--max-tokens", type=int, default=8)
    p.add_argument("--json", type=Path, default=Path("bench/results/reuse_cpu.json"))
    args = p.parse_args(argv)
    with contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(serve(["--model", args.model, "--context-cache", "2GiB"]))
        require_loopback(url)
        client = openai.OpenAI(base_url=url + "/v1", api_key=args.api_key, max_retries=0, timeout=600)
        model = client.models.list().data[0].id
        results = [run_method(client, model, m.strip(), args.budget or None, args.clauses, min(args.warm, 3),
                              args.max_tokens) for m in args.methods.split(",")]
    out = {"benchmark": "context_reuse_ttft", "model": model, "environment": environment(), "methods": results}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    for r in results:
        print(f"{r['method']:>10} budget {r['budget']}: context {r['context_tokens']} tok, cold TTFT "
              f"{r['cold_ttft_s']:.2f} s, warm TTFT {r['warm_ttft_s']:.2f} s, warm/cold = {r['warm_over_cold']:.3f} "
              f"({r['speedup']}x)")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
