"""Which Hugging Face architectures kvlab runs: each model type as a tiny random-weight model on CPU.

    python scripts/check_architectures.py                      # the model types listed below
    python scripts/check_architectures.py qwen3 gemma2 --json out.json

For each model type (built from its config class with small sizes, no download), the checks are:

* ``apply``: ``model.generate`` under ``kvlab.apply(model, "full")`` gives the tokens of plain
  ``model.generate`` (kvlab's attention function in place of the model's);
* ``engine``: kvlab's own path (chunked prefill of 16-token chunks into the budgeted cache, then
  decoding) gives those tokens too, and so does snapkv with a budget above the prompt;
* ``compress``: snapkv, pyramidkv, streaming_llm and h2o at a 16-token budget leave no attention
  layer holding more than the budget after the prompt, and decode;
* ``sparse``: the sparse prefill methods (a_shape, lm_infinite, minference) run.

A check that fails prints the error kvlab (or transformers) raised, so unsupported architectures show
why. The prompt is 48 random tokens; where a model has a sliding window it is set to 24 so that it
binds. Random tiny models say nothing about quality, only that the mechanisms hold.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

import torch

PROMPT, NEW, BUDGET = 48, 6, 16
SMALL = {
    "vocab_size": 320, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 2048,
    "moe_intermediate_size": 32, "num_experts": 4, "num_local_experts": 4, "num_experts_per_tok": 2,
    "n_routed_experts": 4, "n_shared_experts": 1, "shared_expert_intermediate_size": 32,
    "first_k_dense_replace": 1, "n_group": 1, "topk_group": 1, "pad_token_id": 0, "bos_token_id": 1,
    "eos_token_id": None, "n_embd": 64, "n_layer": 4, "n_head": 4, "n_positions": 2048, "ffn_dim": 128,
    "word_embed_proj_dim": 64, "kv_lora_rank": 16, "q_lora_rank": 24, "qk_rope_head_dim": 8,
    "qk_nope_head_dim": 8, "v_head_dim": 16,
}
# per model type: config fields to change (None removes one of SMALL's)
OVERRIDES = {
    "mistral": {"sliding_window": 24}, "mixtral": {"sliding_window": 24}, "phi3": {"sliding_window": 24},
    "starcoder2": {"sliding_window": 24}, "gemma2": {"sliding_window": 24},
    "gemma3_text": {"sliding_window": 24}, "cohere2": {"sliding_window": 24},
    "exaone4": {"sliding_window": 24}, "olmo3": {"sliding_window": 24},
    "qwen2": {"sliding_window": 24, "use_sliding_window": True, "max_window_layers": 2},
    "falcon": {"head_dim": None}, "gptj": {"rotary_dim": 8}, "codegen": {"rotary_dim": 8},
    "llama4_text": {"attention_chunk_size": 32},
    "gemma4_text": {"head_dim": 16, "global_head_dim": 32, "sliding_window": 24},
    "granite_swa": {"sliding_window": 24}, "gpt_oss": {"sliding_window": 24},
    "falcon_h1": {"mamba_d_ssm": 64, "mamba_n_heads": 4, "mamba_d_head": 16, "mamba_d_state": 8, "mamba_n_groups": 1},
    # latent attention: keys of the rotary + plain parts (8 + 8), values of 8, one KV head per query head
    **{name: {"head_dim": None, "v_head_dim": 8, "num_key_value_heads": 4}
       for name in ("deepseek_v2", "deepseek_v3", "minicpm3")},
}
MODEL_TYPES = (
    "llama mistral mixtral qwen2 qwen2_moe qwen3 qwen3_moe qwen3_next qwen3_5_text gemma gemma2 "
    "gemma3_text gemma4_text phi phi3 cohere cohere2 stablelm olmo olmo2 olmo3 granite granitemoe "
    "gpt_neox falcon gpt2 gpt_bigcode gptj codegen opt persimmon nemotron internlm3 starcoder2 smollm3 "
    "glm glm4 deepseek_v2 deepseek_v3 minicpm3 helium exaone4 ernie4_5 seed_oss apertus ministral "
    "hunyuan_v1_dense llama4_text lfm2 falcon_h1 vaultgemma arcee dots1 biogpt bitnet gpt_oss "
    "granite_swa bloom mpt"
).split()


def build(model_type: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    from kvlab.models.loading import LoadedModel
    from kvlab.models.spec import ModelSpec

    fields = dict(SMALL)
    for key, value in OVERRIDES.get(model_type, {}).items():
        fields.pop(key, None) if value is None else fields.__setitem__(key, value)
    config = AutoConfig.for_model(model_type, **fields)
    torch.manual_seed(0)
    try:
        model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    except ValueError:  # no SDPA path in this architecture
        model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    model = model.float().eval()
    spec = ModelSpec.from_config(model.config, dtype=torch.float32, name=model_type)
    return LoadedModel(model=model, tokenizer=None, spec=spec, name=model_type, source="random")


def check(model_type: str) -> dict[str, str]:
    import kvlab

    results: dict[str, str] = {}

    def run(name, fn):
        try:
            results[name] = fn() or "ok"
        except Exception as exc:  # noqa: BLE001 - the point is to report whatever breaks
            results[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:240]}"

    lm = None

    def load():
        nonlocal lm
        lm = build(model_type)
    run("build", load)
    if lm is None:
        return results
    ids = torch.randint(3, 320, (1, PROMPT), generator=torch.Generator().manual_seed(1))

    def generate():
        out = lm.model.generate(ids, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False)
        return out[0, PROMPT:].tolist()

    with torch.no_grad():
        expected: list[int] = []

        def plain():
            expected[:] = generate()
        run("plain", plain)
        if not expected:
            return results

        def under_apply():
            with kvlab.apply(lm.model, "full"):
                got = generate()
            return None if got == expected else f"different tokens {got} != {expected}"

        def engine(method, budget, chunk=16):
            prefilled = kvlab.prefill_context(lm, ids[0].tolist(), method, budget, chunk)
            return prefilled, kvlab.continue_generation(prefilled, [], kvlab.SamplingParams(max_new_tokens=NEW))

        def same_as_plain(method, budget):
            def fn():
                got = engine(method, budget)[1].token_ids
                return None if got == expected else f"{method}: different tokens {got} != {expected}"
            return fn

        def compress():
            for method in ("snapkv", "pyramidkv", "streaming_llm", "h2o"):
                prefilled, out = engine(method, BUDGET)
                held = [int(layer.tokens_held().max()) for _, layer in prefilled.cache.kv_layers]
                if method != "pyramidkv" and max(held) > BUDGET + NEW:
                    return f"{method} holds {held} tokens per layer at a budget of {BUDGET}"
                if len(out.token_ids) != NEW:
                    return f"{method} decoded {len(out.token_ids)} tokens, not {NEW}"
            return None

        def sparse():
            for method in ("a_shape", "lm_infinite", "minference"):
                engine(method, None)

        run("apply", under_apply)
        run("engine", same_as_plain("full", None))
        run("budget>=prompt", same_as_plain("snapkv", 2 * PROMPT))
        run("compress", compress)
        run("sparse", sparse)
    return results


def summary(results: dict[str, str]) -> str:
    """``ok``, or the failed checks and the first error (later ones usually repeat it)."""
    bad = [name for name, result in results.items() if result != "ok"]
    return "ok" if not bad else f"FAILS {', '.join(bad)}: {results[bad[0]][:200]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_types", nargs="*", help="transformers model types (default: a list of ~60)")
    parser.add_argument("--json", help="write {model_type: {check: result}} here")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    import transformers

    transformers.logging.set_verbosity_error()
    report, start = {}, time.perf_counter()
    for model_type in args.model_types or MODEL_TYPES:
        report[model_type] = check(model_type)
        print(f"{model_type:18s} {summary(report[model_type])}", flush=True)
    passed = sum(all(v == "ok" for v in r.values()) for r in report.values())
    print(f"{passed}/{len(report)} model types pass every check ({time.perf_counter() - start:.0f} s, "
          f"transformers {transformers.__version__}, torch {torch.__version__})")
    if args.json:
        payload = {"transformers": transformers.__version__, "torch": torch.__version__, "results": report}
        with open(args.json, "w") as fh:
            json.dump(payload, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
