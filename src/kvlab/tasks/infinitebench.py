"""InfiniteBench (OpenBMB/InfiniteBench) from its per-task JSONL files.

Fields: ``id``, ``context``, ``input``, ``answer`` (list), ``options`` (choice tasks). Prompts are
the official ``yarn_mistral_templates`` of ``src/prompt.py`` (completion style, also used for Yi and
ChatGLM3); max new tokens from ``eval_utils.DATA_NAME_TO_MAX_NEW_TOKENS``; scorers from
``src/compute_scores.py``. The closing cue of a template (e.g. ``"The pass key is"``) becomes the
answer prefix, so with ``--chat none`` the text is the official prompt verbatim and with the chat
template it starts the assistant turn. Contexts are middle-truncated (the official rule).
``longbook_sum_eng`` scores ``rougeLsum`` and needs ``rouge-score`` (pip install rouge-score);
``math_calc`` asks for 30000 new tokens officially -- set ``max_new_tokens`` to fit your window.
"""

from __future__ import annotations

import re
from typing import Any

from kvlab.errors import KvlabError
from kvlab.tasks.base import Query
from kvlab.tasks.files import FileExample, FileTask, read_records, require
from kvlab.tasks.longbench_metrics import f1_tokens, normalize_answer, normalize_zh_answer

TEMPLATES = {  # src/prompt.py yarn_mistral_templates, verbatim
    "passkey": "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. I will quiz you about the important information.\n\n{context}\n\n{input}\n\nThe pass key is",
    "number_string": "There is an important info hidden inside a lot of irrelevant text. Find it. I will quiz you about the important information there.\n\n{context}\n\n{input}\n\nThe sequence of digits is",
    "kv_retrieval": "Extract the value corresponding to the specified key in the JSON object below.\n\n{context}\n\n{input}",
    "longbook_sum_eng": "Summarize the book below.\n\n{context}\n\nSummary:",
    "longbook_choice_eng": "Read the book and answer the question.\n\n{context}\n\nQuestion: {question}\nA. {OPTION_A}\nB. {OPTION_B}\nC. {OPTION_C}\nD. {OPTION_D}\n\nThe letter of the correct answer is",
    "longbook_qa_eng": "Read the book and answer the question. Be very concise in your answer.\n\n{context}\n\nQuestion: {question}\nAnswer:",
    "longbook_qa_chn": "阅读以下书籍然后回答问题。\n\n{context}\n\n问题：{question}\n答案：",
    "math_find": "{prefix}\n\n{context}\n\n{input}",
    "math_calc": "Let us calculate the intermediate values of an expression.\n\nExpression: 1 + 3 + 4\nValues: [1, 4, 8]\n\nExpression: 8 - 3 + 2 - 4\nValues: [8, 5, 7, 3]\n\nExpression: {context}\nValues:",
    "code_run": "There is a function called {func} in the following Python code.\n\n{context}\n\nPlease compute the exact value of {func_call}. The value of {func_call} is",
    "code_debug": "Following is a Python code where exactly one of the functions/methods has a deliberate error that makes it crash.\n\n{context}\n\nOptions:\nA. {OPTION_A}\nB. {OPTION_B}\nC. {OPTION_C}\nD. {OPTION_D}\n\nThe correct option is:",
    "longdialogue_qa_eng": "Below is a dialogue script where one random occurrence of a character name is replaced with \"$$MASK$$\", and you should try to guess who that character is.\n\n{context}\n\nThe name that has been replaced with $$MASK$$ is likely",
}
CUES = {"passkey": "The pass key is", "number_string": "The sequence of digits is", "longbook_sum_eng": "Summary:",
        "longbook_choice_eng": "The letter of the correct answer is", "longbook_qa_eng": "Answer:",
        "longbook_qa_chn": "答案：", "math_calc": "Values:", "code_run": "The value of {func_call} is",
        "code_debug": "The correct option is:",
        "longdialogue_qa_eng": "The name that has been replaced with $$MASK$$ is likely"}
MAX_NEW_TOKENS = {"passkey": 6, "number_string": 12, "kv_retrieval": 50, "longbook_sum_eng": 1200,
                  "longbook_choice_eng": 40, "longbook_qa_eng": 40, "longbook_qa_chn": 40, "longdialogue_qa_eng": 40,
                  "math_find": 3, "math_calc": 30000, "code_run": 5, "code_debug": 5}
METRICS = {"passkey": "first integer = label", "number_string": "first integer = label",
           "kv_retrieval": "label among words", "longbook_sum_eng": "rougeLsum", "longbook_choice_eng": "choice",
           "longbook_qa_eng": "qa F1", "longbook_qa_chn": "char F1", "math_find": "first number = label",
           "math_calc": "prefix of correct values", "code_run": "last integer = label", "code_debug": "choice",
           "longdialogue_qa_eng": "label among upper-cased words"}
TASK_NAMES = tuple(TEMPLATES)
WHERE = "Get the task's <task>.jsonl from InfiniteBench (xinrongzhang2022/InfiniteBench on the Hugging Face hub)."


def _fields(task: str, record: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {"input": record.get("input", "")}
    if task in ("longbook_choice_eng", "code_debug"):
        options = record.get("options") or []
        if len(options) < 4:
            raise KvlabError(f"InfiniteBench {task}: an example has fewer than 4 options")
        fields.update({f"OPTION_{c}": options[i] for i, c in enumerate("ABCD")})
    if task.startswith("longbook_") and task != "longbook_sum_eng":
        fields["question"] = record.get("input", "")
    if task == "math_find":
        found = re.findall(r"The .+ of", fields["input"])
        if not found:
            raise KvlabError(f"InfiniteBench math_find: cannot find 'The ... of' in input {fields['input']!r}")
        fields["prefix"] = f"What is {found[0].lower()[:-3]} in the following list?"
    if task == "code_run":
        found = re.findall(r"func_[0-9]+\(\-?[0-9]+\)", fields["input"])
        if not found:
            raise KvlabError(f"InfiniteBench code_run: no func_N(x) call in input {fields['input']!r}")
        fields["func_call"], fields["func"] = found[0], found[0].split("(")[0]
    return fields


def _labels(task: str, record: dict[str, Any]) -> list[Any]:
    answer = record["answer"]
    if task in ("code_debug", "longbook_choice_eng"):  # eval_utils.get_answer
        first = answer if isinstance(answer, str) else answer[0]
        if isinstance(answer, list) and len(answer) == 2 and answer[1] in ("A", "B", "C", "D"):
            return list(answer)
        return [first, "ABCD"[record["options"].index(first)]]
    return answer if isinstance(answer, list) else [answer]


class InfiniteBench(FileTask):
    """One InfiniteBench task; see the module docstring."""

    def __init__(self, name: str, path: str | None = None, start: int = 0, shuffle: bool = False,
                 max_new_tokens: int = 0, notes: str = ""):
        super().__init__(path, start, shuffle)
        self.name, self.notes = name, notes
        self.task = name.split("/", 1)[1]
        if self.task not in TEMPLATES:
            raise KvlabError(f"unknown InfiniteBench task '{self.task}'; use one of {', '.join(TASK_NAMES)}")
        self.metric = METRICS[self.task]
        self.source = f"InfiniteBench {self.task} (JSONL file)"
        self.max_new_tokens = int(max_new_tokens) or MAX_NEW_TOKENS[self.task]

    def load(self) -> list[dict[str, Any]]:
        return read_records(self.path, self.name, WHERE)

    def example(self, record: dict[str, Any], index: int) -> FileExample:
        require(record, ("context", "answer"), self.name, index)
        fields = _fields(self.task, record)
        head, tail = TEMPLATES[self.task].split("{context}", 1)
        head, tail = head.format(**fields), tail.format(**fields)
        cue = CUES.get(self.task, "").format(**fields)
        question, prefix = (tail[:-len(cue)], cue) if cue and tail.endswith(cue) else (tail, "")
        labels = _labels(self.task, record)
        query = Query(question, tuple(str(x) for x in labels), prefix, self.max_new_tokens, {"labels": labels})
        return FileExample(head, str(record["context"]), query, {"id": record.get("id")})

    def score(self, prediction: str, query: Query) -> float:
        return float(score_infinitebench(self.task, prediction, query.metadata.get("labels", list(query.answers))))


def _first_int(pred: str) -> str:
    return next((x for x in re.split("[^0-9]", pred) if x), "")


def _words(pred: str, chars: str) -> list[str]:
    for c in chars:
        pred = pred.replace(c, " ")
    return pred.split()


def score_infinitebench(task: str, pred: str, labels: list[Any]) -> float:
    """``compute_scores.get_score_one`` for ``task`` (model-independent branches)."""
    label = labels[0] if labels else ""
    if task in ("passkey", "number_string"):
        return float(str(label) == _first_int(pred))
    if task == "kv_retrieval":
        return float(str(label) in _words(pred, "\n:\"'.,?!{}"))
    if task == "longdialogue_qa_eng":
        return float(str(label) in [w.upper() for w in _words(pred.strip(), "\n:\"'.,?!{}")])
    if task == "code_run":
        words = _words(pred.strip(), "\n.`'\":")
        try:
            return float(bool(words) and int(words[-1]) == int(label))
        except ValueError:
            return 0.0
    if task == "math_find":
        found = re.search(r"\d+\.\d+|\d+", pred)
        if found is None:
            return 0.0
        return float(float(found.group(0)) == float(label)) if isinstance(label, float) else float(
            int(float(found.group(0))) == int(label))
    if task == "math_calc":
        values = labels[0] if labels and isinstance(labels[0], list) else labels
        nums = [int(x) for x in re.split("[^0-9]", pred) if x]
        right = 0
        for i, value in enumerate(values):
            if i >= len(nums) or nums[i] != value:
                break
            right += 1
        return right / len(values) if values else 0.0
    if task == "longbook_qa_eng":
        return max((f1_tokens(normalize_answer(pred).split(), normalize_answer(str(t)).split()) for t in labels),
                   default=0.0)
    if task == "longbook_qa_chn":
        return max((f1_tokens(list(normalize_zh_answer(pred)), list(normalize_zh_answer(str(t)))) for t in labels),
                   default=0.0)
    if task == "longbook_choice_eng":
        return float(_choice(pred, [str(x) for x in labels]))
    if task == "code_debug":
        return float(_code_debug(pred, [str(x) for x in labels]))
    if task == "longbook_sum_eng":
        try:
            from rouge_score import rouge_scorer
        except ImportError:
            raise KvlabError("longbook_sum_eng scores rougeLsum: pip install rouge-score") from None
        scorer = rouge_scorer.RougeScorer(["rougeLsum"])
        return scorer.score(str(label), pred)["rougeLsum"].fmeasure
    raise KvlabError(f"no scorer for InfiniteBench task '{task}'")


def _choice(pred: str, label: list[str]) -> bool:
    pred = pred.strip()
    if not pred:
        return False
    if pred[0] in "ABCD":
        return pred[0] in label
    if pred in label:
        return True
    pred = _squeeze(pred, "\n\"'.,?!{}")
    for prefix in ("answer is:", "answer:", "answer is", "option is"):
        idx = pred.find(prefix)
        if idx == -1:
            continue
        if len(pred) < idx + len(prefix) + 1:
            return False
        after = pred[idx + len(prefix) + 1:]
        return any(after.startswith(s) for s in label)
    for word in pred.split():
        if word in "ABCD":
            return word in label
    return False


def _squeeze(pred: str, chars: str) -> str:
    for c in chars:
        pred = pred.replace(c, " ")
    while "  " in pred:
        pred = pred.replace("  ", " ")
    return pred


def _code_debug(pred: str, label: list[str]) -> bool:
    pred = pred.strip()
    fn_name, letter = label[0], label[1]
    if pred[:2] in (f"{letter}.", f"{letter}:"):
        return True
    for c in ("\n", "`", "'", '"', "-", "*", "Option", "option"):
        pred = pred.replace(c, " ")
    while "  " in pred:
        pred = pred.replace("  ", " ")
    for prefix in ("answer is:", "is:", "answer:", "correct option is:"):
        idx = pred.find(prefix)
        if idx == -1:
            continue
        if len(pred) < idx + len(prefix) + 1:
            return False
        rest = pred[idx + len(prefix) + 1:]
        return any(rest.startswith(s) for s in (letter, fn_name))
    return False
