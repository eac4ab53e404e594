"""``kvlab serve``: the OpenAI-compatible server (see docs/serving.md)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys

from kvlab.cli.common import add_method_options, add_model_options, human_bytes, load, non_negative_int, port, positive_int
from kvlab.errors import KvlabError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "serve", help="OpenAI-compatible server under a method and budget",
        description="Serve /v1/chat/completions, /v1/completions and /v1/models (streaming and not) with the "
        "model running under --method and --budget; requests may override them with "
        '"kvlab": {"method": ..., "budget": ...}. One engine worker with a bounded queue (429 beyond it); '
        "prefilled contexts are kept in a byte-bounded LRU and reused by requests sharing them.",
    )
    add_model_options(p)
    add_method_options(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, loopback only)")
    p.add_argument("--port", type=port, default=8000, help="(default: %(default)s)")
    p.add_argument("--api-key", default=os.environ.get("KVLAB_API_KEY"),
                   help="require 'Authorization: Bearer KEY' on /v1 routes (default: $KVLAB_API_KEY, else none)")
    p.add_argument("--served-model-name", default=None,
                   help="the model id clients send and /v1/models lists (default: the model's name)")
    p.add_argument("--max-queue", type=non_negative_int, default=16,
                   help="requests that may wait behind the running one; more get HTTP 429 (default: %(default)s)")
    p.add_argument("--context-cache", default="512MiB",
                   help="memory for reusable prefilled contexts (LRU), e.g. 1GiB; 0 disables (default: %(default)s)")
    p.add_argument("--max-prompt-tokens", type=positive_int, default=None,
                   help="reject longer prompts with 400 (default: the model's window)")
    p.add_argument("--max-tokens", type=positive_int, default=256,
                   help="tokens to generate when a request gives no max_tokens (default: %(default)s)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from kvlab.server import ServerSettings, create_app
    except ImportError as exc:
        raise KvlabError(f"kvlab serve needs the 'serve' extra ({exc.name} is missing): "
                         "pip install 'kvlab[serve]'") from None
    from kvlab.budget import Budget
    from kvlab.methods import get_method
    from kvlab.models.loading import DEFAULT_ALIASES

    method, budget = get_method(args.method), Budget.parse(args.budget)  # fail before loading the model
    cache_bytes = context_cache_bytes(args.context_cache)
    _check_can_listen(args.host, args.port)  # before the model loads: a taken port fails in a second
    lm = load(args)
    if lm.tokenizer is None:
        raise KvlabError(f"{lm.name} has no tokenizer (random weights); kvlab serve needs a model with one")
    model_id = args.served_model_name or lm.name
    aliases = {lm.name, args.model} | (set(DEFAULT_ALIASES) if args.model.lower() in DEFAULT_ALIASES else set())
    settings = ServerSettings(
        model_id=model_id, method=method, budget=budget, chunk_size=args.chunk_size,
        aliases=tuple(sorted(aliases - {model_id})), api_key=args.api_key or None, max_queue=args.max_queue,
        context_cache_bytes=cache_bytes, max_prompt_tokens=args.max_prompt_tokens, max_tokens=args.max_tokens,
    )
    if not _is_loopback(args.host) and not settings.api_key:
        print(f"kvlab serve: warning: listening on {args.host} without --api-key; anyone who can reach this "
              "address can use the model", file=sys.stderr)
    print(f"kvlab serve: {model_id} with {method.describe()} (budget {budget}, chunk {args.chunk_size}), "
          f"queue {args.max_queue}, context cache {human_bytes(cache_bytes) if cache_bytes else 'off'}, "
          f"http://{args.host}:{args.port}/v1", file=sys.stderr, flush=True)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s: %(name)s: %(message)s")
    _warm_up(lm, settings)
    uvicorn.run(create_app(lm, settings), host=args.host, port=args.port, log_level=args.log_level,
                timeout_graceful_shutdown=5)
    return 0


def _warm_up(lm, settings) -> None:
    """One tiny generation before accepting requests, so the first client does not pay for the
    kernels' first-call set-up (seconds on CPU)."""
    from kvlab.engine import generate

    generate(lm, "Hello", method=settings.method, budget=settings.budget, chunk_size=settings.chunk_size,
             max_new_tokens=2)


def context_cache_bytes(text: str) -> int:
    """``512MiB``, ``1GiB``, ``0``/``off`` -> bytes."""
    from kvlab.budget import Budget

    if text.strip().lower() in ("0", "off", "none", "0b"):
        return 0
    try:
        parsed = Budget.parse(text)
    except KvlabError:
        parsed = None
    if parsed is None or parsed.kind != "bytes":
        raise KvlabError(f"--context-cache {text!r}: give an amount of memory such as 512MiB or 2GiB, "
                         "or 0 to disable")
    return int(parsed.value)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_can_listen(host: str, port: int) -> None:
    """Raise a clear error when ``host:port`` cannot be bound (taken, or not an address of this machine)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise KvlabError(f"cannot resolve --host {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind(address)
        except OSError as exc:
            raise KvlabError(f"cannot listen on {host}:{port}: {exc.strerror}; pick another --port "
                             "or stop what holds it") from None
