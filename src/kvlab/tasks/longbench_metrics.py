"""LongBench v1 metrics, as THUDM/LongBench ``LongBench/metrics.py`` computes them.

Each takes ``(prediction, ground_truth, all_classes=...)`` and returns a score in [0, 1]; a sample's
score is the max over its ground truths, and trec/triviaqa/samsum/lsht score only the first line
of the prediction (:func:`score_longbench`).

* ``qa_f1_score``: SQuAD normalisation (lower-case, drop punctuation, drop a/an/the, collapse
  whitespace), then bag-of-tokens F1.
* ``rouge_score``: ROUGE-L F of the ``rouge`` package (what LongBench imports; 0 when it raises).
* ``classification_score``: class names found in the prediction, minus those that are a proper
  substring of the truth; ``1/len(matches)`` if the truth is among them.
* ``retrieval_score`` / ``count_score``: share of the numbers in the prediction that equal the
  paragraph id / the count.
* ``code_sim_score``: first prediction line without a backtick, ``#`` or ``//``, then a
  Levenshtein-style similarity ratio ``round(100 * 2 * M / (len(a) + len(b))) / 100`` with ``M`` the
  longest common subsequence of characters -- what ``fuzzywuzzy.fuzz.ratio`` returns with
  python-Levenshtein installed (fuzzywuzzy itself is GPL-2, so kvlab does not import it).
* Chinese metrics (``qa_f1_zh_score``, ``rouge_zh_score``) need ``jieba`` (pip install jieba).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

from kvlab.errors import KvlabError

_ZH_PUNCT = "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏."


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lower, drop punctuation, drop articles, collapse whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def normalize_zh_answer(s: str) -> str:
    punct = set(string.punctuation + _ZH_PUNCT)
    return "".join("".join(ch for ch in s.lower() if ch not in punct).split())


def f1_tokens(prediction: Sequence[str], truth: Sequence[str]) -> float:
    same = sum((Counter(prediction) & Counter(truth)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(prediction), same / len(truth)
    return 2 * precision * recall / (precision + recall)


def qa_f1_score(prediction: str, ground_truth: str, **_) -> float:
    return f1_tokens(normalize_answer(prediction).split(), normalize_answer(ground_truth).split())


def _jieba():
    try:
        import jieba
    except ImportError:
        raise KvlabError("the Chinese LongBench metrics need jieba: pip install jieba") from None
    return jieba


def qa_f1_zh_score(prediction: str, ground_truth: str, **_) -> float:
    jieba = _jieba()
    pred = [t for t in (normalize_zh_answer(x) for x in jieba.cut(prediction, cut_all=False)) if t]
    truth = [t for t in (normalize_zh_answer(x) for x in jieba.cut(ground_truth, cut_all=False)) if t]
    return f1_tokens(pred, truth)


def rouge_score(prediction: str, ground_truth: str, **_) -> float:
    try:
        from rouge import Rouge
    except ImportError:
        raise KvlabError("LongBench's ROUGE-L needs the 'rouge' package: pip install 'kvlab[tasks]' (or rouge)") from None
    try:
        return float(Rouge().get_scores([prediction], [ground_truth], avg=True)["rouge-l"]["f"])
    except Exception:  # noqa: BLE001 -- LongBench scores 0 whenever rouge raises (e.g. empty text)
        return 0.0


def rouge_zh_score(prediction: str, ground_truth: str, **_) -> float:
    jieba = _jieba()
    return rouge_score(" ".join(jieba.cut(prediction, cut_all=False)), " ".join(jieba.cut(ground_truth, cut_all=False)))


def classification_score(prediction: str, ground_truth: str, all_classes: Sequence[str] = (), **_) -> float:
    matches = [c for c in all_classes if c in prediction]
    # LongBench removes while iterating over the same list (so it can skip an element); kept as is
    for term in matches:
        if term in ground_truth and term != ground_truth:
            matches.remove(term)
    return 1.0 / len(matches) if ground_truth in matches else 0.0


def _share_equal(prediction: str, target: str) -> float:
    numbers = re.findall(r"\d+", prediction)
    return 0.0 if not numbers else sum(1 for n in numbers if n == str(target)) / len(numbers)


def retrieval_score(prediction: str, ground_truth: str, **_) -> float:
    found = re.findall(r"Paragraph (\d+)", ground_truth)
    return _share_equal(prediction, found[0]) if found else 0.0


def retrieval_zh_score(prediction: str, ground_truth: str, **_) -> float:
    found = re.findall(r"段落(\d+)", ground_truth)
    return _share_equal(prediction, found[0]) if found else 0.0


def count_score(prediction: str, ground_truth: str, **_) -> float:
    return _share_equal(prediction, ground_truth)


def lcs_length(a: str, b: str) -> int:
    prev = [0] * (len(b) + 1)
    for ch in a:
        cur = [0]
        for j, other in enumerate(b):
            cur.append(prev[j] + 1 if ch == other else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def similarity_ratio(a: str, b: str) -> int:
    """Indel similarity in 0..100 (python-Levenshtein's ``ratio``, as fuzzywuzzy rounds it)."""
    if not a and not b:
        return 100
    return round(100 * 2 * lcs_length(a, b) / (len(a) + len(b)))


def code_sim_score(prediction: str, ground_truth: str, **_) -> float:
    line = next((x for x in prediction.lstrip("\n").split("\n") if "`" not in x and "#" not in x and "//" not in x), "")
    return similarity_ratio(line, ground_truth) / 100


DATASET_METRIC = {
    "narrativeqa": qa_f1_score, "qasper": qa_f1_score, "multifieldqa_en": qa_f1_score,
    "multifieldqa_zh": qa_f1_zh_score, "hotpotqa": qa_f1_score, "2wikimqa": qa_f1_score, "musique": qa_f1_score,
    "dureader": rouge_zh_score, "gov_report": rouge_score, "qmsum": rouge_score, "multi_news": rouge_score,
    "vcsum": rouge_zh_score, "trec": classification_score, "triviaqa": qa_f1_score, "samsum": rouge_score,
    "lsht": classification_score, "passage_retrieval_en": retrieval_score, "passage_count": count_score,
    "passage_retrieval_zh": retrieval_zh_score, "lcc": code_sim_score, "repobench-p": code_sim_score,
}
FIRST_LINE_ONLY = ("trec", "triviaqa", "samsum", "lsht")


def score_longbench(dataset: str, prediction: str, answers: Sequence[str], all_classes: Sequence[str] = ()) -> float:
    """LongBench's per-sample score: the max over ground truths (first line only for few-shot sets)."""
    if dataset in FIRST_LINE_ONLY:
        prediction = prediction.lstrip("\n").split("\n")[0]
    metric = DATASET_METRIC[dataset]
    return max((metric(prediction, truth, all_classes=all_classes) for truth in answers), default=0.0)
