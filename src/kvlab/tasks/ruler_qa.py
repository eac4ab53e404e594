"""RULER's QA tasks: ``qa_1`` (SQuAD v2 dev) and ``qa_2`` (HotpotQA dev, distractor setting), read
from local files (NVIDIA/RULER ``scripts/data/synthetic/qa.py``). No PyPI or Debian package ships
these data sets, and kvlab never downloads: without ``path`` the task raises a clear error.

SQuAD: answerable questions only; documents are the unique paragraphs. HotpotQA: documents are
``"{title}\\n{sentences}"``. Sample ``i`` asks question ``start + i`` (file order, as RULER): the gold
document(s) first, then other paragraphs of the same article (SQuAD), then random documents of
the pool; shuffled and written ``"Document {i}:\\n{doc}"`` joined by blank lines. The number of
documents is binary-searched so that the prompt fits the target -- whole documents, so a sample
lands within one document of the target. 32 tokens to generate; ``string_match_part``.
"""

from __future__ import annotations

import json
import random
from functools import lru_cache
from pathlib import Path
from typing import Any

from kvlab.errors import KvlabError
from kvlab.tasks.base import Query, Sample
from kvlab.tasks.fitting import Draft, check_request, fit_units, prompt_tokens, sample_metadata
from kvlab.tasks.scoring import string_match_part

TEMPLATE = ("Answer the question based on the given documents. Only give me the answer and do not output any other "
            "words.\n\nThe following are given documents.\n\n{context}\n\nAnswer the question based on the given "
            "documents. Only give me the answer and do not output any other words.\n\nQuestion: {query}")
ANSWER_PREFIX = " Answer:"
TOKENS_TO_GENERATE = 32
DOCUMENT = "Document {i}:\n{document}"
QUESTION_SPLIT = "\n\nQuestion: {query}"
WHERE = {"squad": "SQuAD v2 dev: dev-v2.0.json (from the SQuAD explorer site or the rajpurkar/squad_v2 dataset card)",
         "hotpotqa": "HotpotQA dev, distractor setting: hotpot_dev_distractor_v1.json (from the HotpotQA site)"}


@lru_cache(maxsize=4)
def read_qa(path: str, dataset: str) -> tuple[tuple[dict[str, Any], ...], tuple[str, ...]]:
    """(questions, documents) as RULER's ``read_squad`` / ``read_hotpotqa``."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise KvlabError(f"{path} is not valid JSON ({exc.msg}); expected {WHERE[dataset]}") from None
    try:
        if dataset == "squad":
            docs = sorted({p["context"] for d in data["data"] for p in d["paragraphs"]})
            index = {c: i for i, c in enumerate(docs)}
            qas = []
            for d in data["data"]:
                more = [index[p["context"]] for p in d["paragraphs"]]
                for p in d["paragraphs"]:
                    for qa in p["qas"]:
                        if not qa.get("is_impossible", False):
                            gold = index[p["context"]]
                            qas.append({"query": qa["question"], "outputs": [a["text"] for a in qa["answers"]],
                                        "context": [gold], "more_context": [i for i in more if i != gold]})
        else:
            docs = sorted({f"{t}\n{''.join(p)}" for d in data for t, p in d["context"]})
            index = {c: i for i, c in enumerate(docs)}
            qas = [{"query": d["question"], "outputs": [d["answer"]],
                    "context": [index[f"{t}\n{''.join(p)}"] for t, p in d["context"]], "more_context": []}
                   for d in data]
    except (KeyError, TypeError) as exc:
        raise KvlabError(f"{path} does not look like {WHERE[dataset]} (missing {exc})") from None
    if not qas:
        raise KvlabError(f"{path} has no answerable questions")
    return tuple(qas), tuple(docs)


class RulerQA:
    """RULER ``qa_1`` / ``qa_2``; see the module docstring."""

    metric = "string_match_part"

    def __init__(self, name: str, dataset: str = "squad", path: str | None = None, start: int = 0, notes: str = ""):
        if dataset not in WHERE:
            raise KvlabError(f"RULER QA dataset must be 'squad' or 'hotpotqa', not '{dataset}'")
        if not path:
            raise KvlabError(f"task '{name}' needs {WHERE[dataset]}, which kvlab does not ship or download: pass "
                             "path=FILE (kvlab eval --task-arg path=FILE); without it the task is skipped")
        if not Path(path).expanduser().is_file():
            raise KvlabError(f"task '{name}': file not found: {path}; expected {WHERE[dataset]}")
        self.name, self.dataset, self.path, self.start, self.notes = name, dataset, str(Path(path).expanduser()), int(start), notes
        self.source = f"RULER qa generator over {WHERE[dataset].split(':')[0]} (local file)"

    def samples(self, tokenizer: Any, length: int, n: int, seed: int = 42, chat: str = "template") -> list[Sample]:
        check_request(length, n, tokenizer)
        qas, docs = read_qa(self.path, self.dataset)
        out = []
        for i in range(n):
            qi = (self.start + i) % len(qas)
            key = f"{self.name}|{seed}|{i}"

            def draft(num_docs: int, qi: int = qi, key: str = key) -> Draft:
                return self.build(random.Random(key), qas[qi], docs, num_docs)

            def cost(num_docs: int, draft=draft) -> int:
                return prompt_tokens(tokenizer, draft(num_docs), chat)[1]

            minimum = len(qas[qi]["context"])
            num = fit_units(cost, length, minimum, max(minimum, len(docs)), max(minimum, length // 150))
            d = draft(num)
            prompt, total = prompt_tokens(tokenizer, d, chat)
            meta = {**sample_metadata(tokenizer, chat, length, seed), "haystack_units": num, "prompt_tokens": prompt,
                    "total_tokens": total, "max_new_tokens": TOKENS_TO_GENERATE, "question_index": qi, **d.metadata}
            out.append(Sample(self.name, i, d.context, d.queries, meta))
        return out

    def build(self, rng: random.Random, qa: dict[str, Any], docs: tuple[str, ...], num_docs: int) -> Draft:
        gold, more = list(qa["context"]), list(qa["more_context"])
        if num_docs - len(gold) > len(more):
            gold_or_more = set(gold + more)
            pool = [i for i in range(len(docs)) if i not in gold_or_more]
            chosen = gold + more + rng.sample(pool, min(len(pool), num_docs - len(gold) - len(more)))
        else:
            chosen = gold + rng.sample(more, num_docs - len(gold))
        texts = [docs[i] for i in chosen]
        rng.shuffle(texts)
        context = "\n\n".join(DOCUMENT.format(i=i + 1, document=d) for i, d in enumerate(texts))
        head = TEMPLATE.split(QUESTION_SPLIT)[0]
        gold_positions = [texts.index(docs[g]) + 1 for g in gold]
        return Draft(head.format(context=context),
                     (Query(QUESTION_SPLIT.format(query=qa["query"]), tuple(qa["outputs"]), ANSWER_PREFIX,
                            TOKENS_TO_GENERATE),),
                     {"num_docs": len(texts), "gold_documents": gold_positions,
                      "depth": round(100 * (gold_positions[0] - 1) / max(1, len(texts) - 1), 1)})

    def score(self, prediction: str, query: Query) -> float:
        return string_match_part(prediction, query.answers)
