"""Registers every built-in task with :mod:`kvlab.tasks.registry` (imported on first use)."""

from __future__ import annotations

from kvlab.tasks.needle_grid import NeedleGrid
from kvlab.tasks.registry import register
from kvlab.tasks.ruler_niah import RulerNiah
from kvlab.tasks.ruler_vt import RulerVariableTracking
from kvlab.tasks.ruler_words import RulerCommonWords, RulerFrequentWords
from kvlab.tasks.shared_context import SharedKeyValue, SharedMultiKey

RULER = "RULER generator, Austen haystack"
RULER_NIAH = {  # RULER's synthetic.yaml
    "niah_single_1": {"haystack": "noise"},
    "niah_single_2": {"haystack": "essay"},
    "niah_single_3": {"haystack": "essay", "type_needle_v": "uuids"},
    "niah_multikey_1": {"haystack": "essay", "num_needle_k": 4},
    "niah_multikey_2": {"haystack": "needle"},
    "niah_multikey_3": {"haystack": "needle", "type_needle_k": "uuids", "type_needle_v": "uuids"},
    "niah_multivalue": {"haystack": "essay", "num_needle_v": 4},
    "niah_multiquery": {"haystack": "essay", "num_needle_q": 4},
}
NIAH_NOTES = {
    "niah_single_1": "1 needle (word key -> 7-digit number) in repeated noise sentences",
    "niah_single_2": "1 needle (word -> number) in essay text",
    "niah_single_3": "1 needle (word -> UUID) in essay text",
    "niah_multikey_1": "4 needles in essay, 1 asked",
    "niah_multikey_2": "haystack of distractor word->number needles",
    "niah_multikey_3": "haystack of distractor UUID->UUID needles",
    "niah_multivalue": "1 key with 4 values, all asked",
    "niah_multiquery": "4 keys, all asked",
}
for task, args in RULER_NIAH.items():
    register(f"ruler/{task}", RulerNiah, RULER, "string_match_all", NIAH_NOTES[task], **args)
register("ruler/vt", RulerVariableTracking, "RULER generator", "string_match_all",
         "variable tracking: 1 chain, 4 hops in noise; 1 in-context example")
register("ruler/cwe", RulerCommonWords, "RULER generator, wonderwords", "string_match_all",
         "10 most common words of a numbered list; 1 few-shot example")
register("ruler/fwe", RulerFrequentWords, "RULER generator", "string_match_all",
         "3 most frequent coded words (Zipf, alpha=2)")
register("niah/single", NeedleGrid, "needle grid, Austen haystack", "string_match_all",
         "depth x length grid; depths=0,10,..,100 (sample i -> depths[i % len])", num_needles=1)
register("niah/multi", NeedleGrid, "needle grid, Austen haystack", "string_match_all",
         "num_needles=4 from depth, evenly spaced; all asked", num_needles=4)
register("shared/multikey", SharedMultiKey, "SCBench-style shared context", "string_match_all",
         "8 needles, 4 questions on one context; use with both modes")
register("shared/kv", SharedKeyValue, "SCBench-style shared context", "string_match_all",
         "JSON store of UUID pairs, 4 questions on one context")

from kvlab.tasks.perplexity import Perplexity

register("perplexity", Perplexity, "Austen novels (or path=FILE)", "perplexity",
         "per-bucket NLL/perplexity (bucket_size=1024); run with kvlab.evaluate.run_perplexity")

from kvlab.tasks import infinitebench, longbench
from kvlab.tasks.ruler_qa import RulerQA

register("ruler/qa_1", RulerQA, "RULER generator over SQuAD v2 dev (path=FILE)", "string_match_part",
         "needs path=dev-v2.0.json; skipped with a message without it", dataset="squad")
register("ruler/qa_2", RulerQA, "RULER generator over HotpotQA dev (path=FILE)", "string_match_part",
         "needs path=hotpot_dev_distractor_v1.json", dataset="hotpotqa")
for _name in longbench.DATASETS:
    register(f"longbench/{_name}", longbench.LongBench, "LongBench v1 JSONL (path=FILE)",
             longbench.DATASET_METRIC[_name].__name__,
             f"max_new_tokens {longbench.MAX_NEW_TOKENS[_name]}; middle truncation"
             + ("; official: no chat template" if _name in longbench.NO_CHAT else ""))
register("longbench_v2", longbench.LongBenchV2, "LongBench v2 data.json (path=FILE)", "accuracy (answer regex)",
         "4-way multiple choice; middle truncation")
for _name in infinitebench.TASK_NAMES:
    register(f"infinitebench/{_name}", infinitebench.InfiniteBench, "InfiniteBench JSONL (path=FILE)",
             infinitebench.METRICS[_name], f"max_new_tokens {infinitebench.MAX_NEW_TOKENS[_name]}; middle truncation")
