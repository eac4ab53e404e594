"""Load test of ``kvlab serve`` on loopback: a bounded number of concurrent streamed chat requests.

Reports completed / rejected (429) / failed counts, latency and time-to-first-token percentiles
and generated tokens per second, and writes them as JSON. Not a timed test: the numbers depend
on the device and on what else runs on it.

    python bench/load_test.py --requests 16 --concurrency 4 --json bench/results/load_test_cpu.json
    python bench/load_test.py --url http://127.0.0.1:8000 ...      # against a server you started

Without ``--url`` it starts ``kvlab serve`` itself (``--method``/``--budget``/``--max-queue``) on a
free loopback port and stops it at the end. Only loopback addresses are accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import openai

TOPICS = ["the moon", "a lighthouse", "rain in the city", "a red bicycle", "the ocean", "winter mornings",
          "a small robot", "old libraries"]


@contextlib.contextmanager
def serve(extra: list[str], startup_s: float = 300.0):
    """Run ``kvlab serve`` on a free loopback port; yield its base URL; stop it on exit."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tempfile.NamedTemporaryFile(prefix="kvlab-serve-", suffix=".log", delete=False)
    cmd = [sys.executable, "-m", "kvlab.cli.main", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--log-level", "warning", *extra]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + startup_s
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"kvlab serve exited:\n{Path(log.name).read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > end:
                raise SystemExit(f"kvlab serve did not start in {startup_s} s")
            time.sleep(0.25)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        os.unlink(log.name)


def require_loopback(url: str) -> None:
    host = urlparse(url).hostname or ""
    try:
        ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise SystemExit(f"{url}: this load test only targets loopback addresses (127.0.0.1, localhost, ::1)")


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {"p50": round(statistics.median(ordered), 3), "p90": pick(0.9), "p99": pick(0.99),
            "max": round(ordered[-1], 3)}


async def one_request(client: openai.AsyncOpenAI, model: str, i: int, max_tokens: int) -> dict:
    start = time.perf_counter()
    first = None
    row: dict = {"index": i}
    try:
        stream = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": f"Write a short poem about {TOPICS[i % len(TOPICS)]}."}],
            max_tokens=max_tokens, temperature=0.7, seed=i, stream=True, stream_options={"include_usage": True})
        async for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - start
            if chunk.usage:
                row["completion_tokens"] = chunk.usage.completion_tokens
        row.update(status="completed", latency_s=time.perf_counter() - start, ttft_s=first)
    except openai.RateLimitError:
        row.update(status="rejected_429", latency_s=time.perf_counter() - start)
    except (openai.APIError, httpx.HTTPError) as exc:
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}", latency_s=time.perf_counter() - start)
    return row


async def run_load(url: str, api_key: str, requests: int, concurrency: int, max_tokens: int,
                   deadline_s: float) -> tuple[list[dict], float, str]:
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key=api_key, max_retries=0, timeout=deadline_s)
    model = (await client.models.list()).data[0].id
    gate = asyncio.Semaphore(concurrency)

    async def limited(i: int) -> dict:
        async with gate:
            return await one_request(client, model, i, max_tokens)

    start = time.perf_counter()
    rows = await asyncio.wait_for(asyncio.gather(*(limited(i) for i in range(requests))), deadline_s)
    wall = time.perf_counter() - start
    await client.close()
    return rows, wall, model


def summarize(rows: list[dict], wall: float) -> dict:
    done = [r for r in rows if r["status"] == "completed"]
    tokens = sum(r.get("completion_tokens", 0) for r in done)
    return {
        "requests": len(rows), "completed": len(done),
        "rejected_429": sum(r["status"] == "rejected_429" for r in rows),
        "failed": sum(r["status"] == "failed" for r in rows),
        "wall_seconds": round(wall, 3), "completion_tokens": tokens,
        "tokens_per_second": round(tokens / wall, 3) if wall else None,
        "requests_per_second": round(len(done) / wall, 4) if wall else None,
        "latency_s": percentiles([r["latency_s"] for r in done]),
        "ttft_s": percentiles([r["ttft_s"] for r in done if r.get("ttft_s") is not None]),
    }


def environment() -> dict:
    import torch

    git = ["git", "rev-parse", "--short", "HEAD"]
    sha = subprocess.run(git, capture_output=True, text=True, check=False).stdout.strip()
    return {"device": "cpu" if not torch.cuda.is_available() else torch.cuda.get_device_name(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "git_sha": sha or None,
            "load_average_1m": round(os.getloadavg()[0], 2),  # other work on the machine skews timings
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="a running server (loopback only); default: start one")
    p.add_argument("--api-key", default=os.environ.get("KVLAB_API_KEY", "none"))
    p.add_argument("--model", default="default", help="for the server this script starts")
    p.add_argument("--method", default="full")
    p.add_argument("--budget", default=None)
    p.add_argument("--max-queue", type=int, default=16, help="the started server's --max-queue")
    p.add_argument("--requests", type=int, default=16)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--deadline", type=float, default=900.0, help="give up after this many seconds")
    p.add_argument("--json", type=Path, default=Path("bench/results/load_test_cpu.json"))
    args = p.parse_args(argv)
    if not 1 <= args.requests <= 1000 or not 1 <= args.concurrency <= 64:
        p.error("--requests must be in [1, 1000] and --concurrency in [1, 64]")
    server_flags = ["--model", args.model, "--method", args.method, "--max-queue", str(args.max_queue),
                    *(["--budget", args.budget] if args.budget else [])]
    with contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(serve(server_flags))
        require_loopback(url)
        rows, wall, model = asyncio.run(run_load(url, args.api_key, args.requests, args.concurrency,
                                                 args.max_tokens, args.deadline))
        health = httpx.get(url + "/health", timeout=10).json()
    result = {"benchmark": "load_test", "model": model, "server": health.get("worker"),
              "method": health.get("method"), "budget": health.get("budget"),
              "config": {"requests": args.requests, "concurrency": args.concurrency, "max_tokens": args.max_tokens,
                         "server_started_by_script": not args.url},
              "summary": summarize(rows, wall), "environment": environment(), "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
