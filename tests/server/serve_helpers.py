"""Starting a real ``kvlab serve`` process on loopback with the embedded model, for the server tests.

The server requires an API key, lets one request wait behind the running one (``--max-queue 1``)
and caps prompts at ``MAX_PROMPT_TOKENS`` so the limit can be tested without running a long
prompt. Tests talk to it with the official ``openai`` client (``max_retries=0``, so a 429 is seen
as such) and with ``httpx`` for what the client cannot send (malformed JSON, no key).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

API_KEY = "sk-kvlab-test"
MODEL = "SmolLM2-135M-Instruct"
MAX_PROMPT_TOKENS = 2048
STARTUP_SECONDS = 240


@dataclass
class Server:
    base_url: str  # http://127.0.0.1:PORT
    log: Path
    process: subprocess.Popen

    def client(self, api_key: str = API_KEY, **kwargs) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url + "/v1", api_key=api_key, max_retries=0,
                             timeout=kwargs.pop("timeout", 120), **kwargs)

    def health(self) -> dict:
        return httpx.get(self.base_url + "/health", timeout=10).json()

    def wait_idle(self, deadline_s: float = 30.0) -> dict:
        """Poll /health until the worker is idle with nothing waiting; fail after ``deadline_s``."""
        end = time.monotonic() + deadline_s
        while True:
            state = self.health()
            if not state["worker"]["busy"] and state["worker"]["waiting"] == 0:
                return state
            if time.monotonic() > end:
                pytest.fail(f"the engine worker is still busy after {deadline_s} s: {state}")
            time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(*extra: str) -> Server:
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="kvlab-serve-", suffix=".log")[1])
    cmd = [sys.executable, "-m", "kvlab.cli.main", "serve", "--model", "default", "--device", "cpu",
           "--port", str(port), "--api-key", API_KEY, "--max-queue", "1", "--context-cache", "256MiB",
           "--max-prompt-tokens", str(MAX_PROMPT_TOKENS), "--log-level", "warning", *extra]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    with open(log, "wb") as fh:
        process = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    server = Server(f"http://127.0.0.1:{port}", log, process)
    end = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < end:
        if process.poll() is not None:
            pytest.fail(f"kvlab serve exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(server.base_url + "/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    stop_server(server)
    pytest.fail(f"kvlab serve did not answer /health within {STARTUP_SECONDS} s:\n{log.read_text()[-4000:]}")


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=10)
    server.log.unlink(missing_ok=True)


def contract(parties: tuple[str, str] = ("Northwind Traders", "Contoso Ltd"), clauses: int = 12) -> str:
    """A small synthetic contract (a few hundred tokens) used as the shared document."""
    a, b = parties
    lines = [f"SUPPLY AGREEMENT between {a} (the Supplier) and {b} (the Buyer)."]
    for i in range(1, clauses + 1):
        lines.append(f"Clause {i}. The Supplier delivers batch {i} of {100 * i} units to the Buyer's warehouse "
                     f"in week {2 * i}; the Buyer pays {250 * i} euros within {10 + i} days of delivery.")
    lines.append(f"The agreement is signed by Maria Lopez for {a} and by Tom Becker for {b}.")
    return "\n".join(lines)
