"""A fake task and a tiny random model over the embedded tokenizer, so sweeps run in milliseconds.

Also runnable as a script (the SIGKILL test runs it in a subprocess)::

    python sweep_fakes.py CONFIG.yaml DB [DELAY_SECONDS]
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
import time

from kvlab.tasks.base import Query, Sample

FAKE_TASK = "test/fake"
WORDS = ("apple", "river", "stone", "cloud", "maple", "ember", "quartz", "lantern", "harbor", "meadow")


class FakeTask:
    """Contexts of random words with two questions each; the score is a deterministic function of
    the prediction (a random model's output is meaningless, but it must be reproducible)."""

    source = "test"
    metric = "fake_parity"

    def __init__(self, name: str = FAKE_TASK, questions: int = 2, notes: str = ""):
        self.name, self.questions = name, int(questions)

    def samples(self, tokenizer, length, n, seed=42, chat="template"):
        out = []
        for i in range(n):
            rng = random.Random(f"{seed}|{i}")
            words = " ".join(rng.choice(WORDS) for _ in range(max(8, length // 3)))
            queries = tuple(Query(f" Question {q}: which word?", (rng.choice(WORDS),), " Answer:", 3,
                                  {"depth": (25 * i) % 100}) for q in range(self.questions))
            out.append(Sample(self.name, i, words, queries, {"length": length, "seed": seed}))
        return out

    def score(self, prediction, query):
        delay = float(os.environ.get("KVLAB_FAKE_DELAY", "0"))
        if delay:
            time.sleep(delay)
        return float(int(hashlib.sha256(prediction.encode()).hexdigest(), 16) % 2)


def register_fake_task() -> None:
    from kvlab.tasks.registry import TASKS, _load, register

    _load()
    if FAKE_TASK not in TASKS:
        register(FAKE_TASK, FakeTask, "test", "fake_parity", "a fake task for runner tests")


_TOKENIZER = None
_MODEL = None


def tiny_model(*_args):
    """A 2-layer random Llama over the embedded tokenizer (same weights every call: seed 0)."""
    global _TOKENIZER, _MODEL
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from kvlab.models.embedded import embedded_model_dir
    from kvlab.models.loading import LoadedModel
    from kvlab.models.spec import ModelSpec

    if _MODEL is None:
        _TOKENIZER = AutoTokenizer.from_pretrained(str(embedded_model_dir()))
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=len(_TOKENIZER), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=2048,
                             bos_token_id=_TOKENIZER.bos_token_id, eos_token_id=_TOKENIZER.eos_token_id)
        model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
        spec = ModelSpec.from_config(config, dtype=torch.float32, name="tiny-fake")
        _MODEL = LoadedModel(model=model, tokenizer=_TOKENIZER, spec=spec, name="tiny-fake", source="test")
    return _MODEL


def main(argv: list[str]) -> int:
    from kvlab.config import load_yaml, resolve
    from kvlab.results.store import ResultStore
    from kvlab.runner import run_sweep

    register_fake_task()
    config = resolve(load_yaml(argv[0]), {"db": argv[1]})
    if len(argv) > 2:
        os.environ["KVLAB_FAKE_DELAY"] = argv[2]
    with ResultStore(config.db) as store:
        summary = run_sweep(config, store, load=tiny_model, progress=False, log=lambda m: None)
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
