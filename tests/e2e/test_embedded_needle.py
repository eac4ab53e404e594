"""End to end on the embedded SmolLM2-135M-Instruct: a ~3,000-token needle prompt and the CLI's byte accounting."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

import kvlab
from kvlab.prompting import PromptParts

pytestmark = pytest.mark.slow

NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.\n"
KEYS = ["tender-jazz", "silent-harbor", "crimson-ledger", "quiet-orchard", "brisk-lantern", "hollow-meadow"]


def needle_prompt(seed: int, lines: int = 115) -> tuple[PromptParts, str]:
    """A RULER niah_single_1-style prompt (~3,000 tokens) with a random key, value and depth."""
    rng = random.Random(seed)
    key, value = rng.choice(KEYS), str(rng.randint(10**6, 10**7 - 1))
    depth = rng.choice([0.2, 0.4, 0.6, 0.8])
    hay = [NOISE] * lines
    hay.insert(int(depth * lines), f"One of the special magic numbers for {key} is: {value}.\n")
    context = ("A special magic number is hidden within the following text. Make sure to memorize it. "
               "I will quiz you about the number afterwards.\n" + "".join(hay)
               + f"What is the special magic number for {key} mentioned in the provided text?")
    prefix = f" The special magic number for {key} mentioned in the provided text is"
    return PromptParts(context=context, answer_prefix=prefix), value


@pytest.mark.parametrize("seed", [3, 8])
def test_needle_is_found_with_full_and_snapkv_at_25_percent(embedded, seed):
    parts, value = needle_prompt(seed)
    for method, budget in (("full", None), ("snapkv", "25%")):
        out = kvlab.generate(embedded, parts, method=method, budget=budget, max_new_tokens=12)
        assert 2800 <= out.stats.prompt_tokens <= 3400
        assert value in out.text, f"{method}: {out.text!r}"
        if method == "snapkv":
            assert out.stats.kv_bytes <= 0.25 * out.stats.full_kv_bytes + embedded.spec.kv_bytes_per_token


def run_cli(*args: str) -> dict:
    result = subprocess.run([sys.executable, "-m", "kvlab.cli.main", "generate", *args, "--json"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_cli_json_bytes_and_bounded_peak(embedded, tmp_path):
    parts, value = needle_prompt(5)
    doc = tmp_path / "haystack.txt"
    doc.write_text(parts.context)
    per_token = embedded.spec.kv_bytes_per_token
    window = 32  # SnapKV's observation window
    data = run_cli("--file", str(doc), "--method", "snapkv", "--budget", "25%", "--max-new-tokens", "4")
    assert data["kv_bytes"] <= 0.25 * data["full_kv_bytes"] + window * per_token
    assert data["full_kv_bytes"] == data["prompt_tokens"] * per_token
    data = run_cli("--file", str(doc), "--method", "snapkv", "--budget", "256", "--chunk-size", "512",
                   "--max-new-tokens", "4")
    assert data["kv_tokens"] == 256
    assert data["peak_kv_bytes"] <= (256 + 512) * per_token
