"""LongBench v1 (21 datasets, JSONL) and LongBench v2 (multiple choice, JSON) from local files.

**v1** (THUDM/LongBench ``LongBench/``): one JSONL per dataset with ``input``, ``context``,
``answers``, ``all_classes``, ``length``, ``_id`` (the ``data.zip`` of the dataset card). Prompts
and max new tokens are the official ``dataset2prompt.json`` / ``dataset2maxlen.json``; metrics in
:mod:`kvlab.tasks.longbench_metrics`. ``longbench/<dataset>`` with ``path=<dataset>.jsonl``.
LongBench runs trec, triviaqa, samsum, lsht, lcc and repobench-p *without* the chat wrapper; their
samples record ``official_chat: "none"`` (pass ``--chat none`` to match).

**v2** (THUDM/LongBench top level): ``data.json`` with ``question``, ``choice_A``..``choice_D``,
``answer`` (A-D), ``context``, ``difficulty``, ``length``, ``domain``. Prompt ``prompts/0shot.txt``;
the answer is read with the official regex ``The correct answer is \\(([A-D])\\)`` (falling back to
``The correct answer is ([A-D])``) after removing ``*``; accuracy. Official decoding samples at
temperature 0.1; kvlab decodes greedily.

Both middle-truncate the context to the target length (:mod:`kvlab.tasks.files`).
"""

from __future__ import annotations

import re
from typing import Any

from kvlab.errors import KvlabError
from kvlab.tasks.base import Query
from kvlab.tasks.files import FileExample, FileTask, read_records, require, split_template
from kvlab.tasks.longbench_metrics import DATASET_METRIC, score_longbench

PROMPTS = {  # LongBench/config/dataset2prompt.json, verbatim
    'narrativeqa': 'You are given a story, which can be either a novel or a movie script, and a question. Answer the question asconcisely as you can, using a single phrase if possible. Do not provide any explanation.\n\nStory: {context}\n\nNow, answer the question based on the story asconcisely as you can, using a single phrase if possible. Do not provide any explanation.\n\nQuestion: {input}\n\nAnswer:',
    'qasper': 'You are given a scientific article and a question. Answer the question as concisely as you can, using a single phrase or sentence if possible. If the question cannot be answered based on the information in the article, write "unanswerable". If the question is a yes/no question, answer "yes", "no", or "unanswerable". Do not provide any explanation.\n\nArticle: {context}\n\n Answer the question based on the above article as concisely as you can, using a single phrase or sentence if possible. If the question cannot be answered based on the information in the article, write "unanswerable". If the question is a yes/no question, answer "yes", "no", or "unanswerable". Do not provide any explanation.\n\nQuestion: {input}\n\nAnswer:',
    'multifieldqa_en': 'Read the following text and answer briefly.\n\n{context}\n\nNow, answer the following question based on the above text, only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:',
    'multifieldqa_zh': '阅读以下文字并用中文简短回答：\n\n{context}\n\n现在请基于上面的文章回答下面的问题，只告诉我答案，不要输出任何其他字词。\n\n问题：{input}\n回答：',
    'hotpotqa': 'Answer the question based on the given passages. Only give me the answer and do not output any other words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the given passages. Only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:',
    '2wikimqa': 'Answer the question based on the given passages. Only give me the answer and do not output any other words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the given passages. Only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:',
    'musique': 'Answer the question based on the given passages. Only give me the answer and do not output any other words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the given passages. Only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:',
    'dureader': '请基于给定的文章回答下述问题。\n\n文章：{context}\n\n请基于上述文章回答下面的问题。\n\n问题：{input}\n回答：',
    'gov_report': 'You are given a report by a government agency. Write a one-page summary of the report.\n\nReport:\n{context}\n\nNow, write a one-page summary of the report.\n\nSummary:',
    'qmsum': 'You are given a meeting transcript and a query containing a question or instruction. Answer the query in one or more sentences.\n\nTranscript:\n{context}\n\nNow, answer the query based on the above meeting transcript in one or more sentences.\n\nQuery: {input}\nAnswer:',
    'multi_news': 'You are given several news passages. Write a one-page summary of all news. \n\nNews:\n{context}\n\nNow, write a one-page summary of all the news.\n\nSummary:',
    'vcsum': '下面有一段会议记录，请你阅读后，写一段总结，总结会议的内容。\n会议记录：\n{context}\n\n会议总结：',
    'trec': 'Please determine the type of the question below. Here are some examples of questions.\n\n{context}\n{input}',
    'triviaqa': 'Answer the question based on the given passage. Only give me the answer and do not output any other words. The following are some examples.\n\n{context}\n\n{input}',
    'samsum': 'Summarize the dialogue into a few short sentences. The following are some examples.\n\n{context}\n\n{input}',
    'lsht': '请判断给定新闻的类别，下面是一些例子。\n\n{context}\n{input}',
    'passage_count': 'There are some paragraphs below sourced from Wikipedia. Some of them may be duplicates. Please carefully read these paragraphs and determine how many unique paragraphs there are after removing duplicates. In other words, how many non-repeating paragraphs are there in total?\n\n{context}\n\nPlease enter the final count of unique paragraphs after removing duplicates. The output format should only contain the number, such as 1, 2, 3, and so on.\n\nThe final answer is: ',
    'passage_retrieval_en': 'Here are 30 paragraphs from Wikipedia, along with an abstract. Please determine which paragraph the abstract is from.\n\n{context}\n\nThe following is an abstract.\n\n{input}\n\nPlease enter the number of the paragraph that the abstract is from. The answer format must be like "Paragraph 1", "Paragraph 2", etc.\n\nThe answer is: ',
    'passage_retrieval_zh': '以下是若干段落文字，以及其中一个段落的摘要。请确定给定的摘要出自哪一段。\n\n{context}\n\n下面是一个摘要\n\n{input}\n\n请输入摘要所属段落的编号。答案格式必须是"段落1"，"段落2"等格式\n\n答案是：',
    'lcc': 'Please complete the code given below. \n{context}Next line of code:\n',
    'repobench-p': 'Please complete the code given below. \n{context}{input}Next line of code:\n',
}
MAX_NEW_TOKENS = {  # LongBench/config/dataset2maxlen.json
    'narrativeqa': 128, 'qasper': 128, 'multifieldqa_en': 64, 'multifieldqa_zh': 64, 'hotpotqa': 32, '2wikimqa': 32, 'musique': 32, 'dureader': 128, 'gov_report': 512, 'qmsum': 512, 'multi_news': 512, 'vcsum': 512, 'trec': 64, 'triviaqa': 32, 'samsum': 128, 'lsht': 64, 'passage_count': 32, 'passage_retrieval_en': 32, 'passage_retrieval_zh': 32, 'lcc': 64, 'repobench-p': 64,
}
V2_PROMPT = 'Please read the following text and answer the question below.\n\n<text>\n$DOC$\n</text>\n\nWhat is the correct answer to this question: $Q$\nChoices:\n(A) $C_A$\n(B) $C_B$\n(C) $C_C$\n(D) $C_D$\n\nFormat your response as follows: "The correct answer is (insert answer here)".'  # prompts/0shot.txt
NO_CHAT = ("trec", "triviaqa", "samsum", "lsht", "lcc", "repobench-p")
DATASETS = tuple(PROMPTS)
WHERE_V1 = "Get LongBench v1's data.zip (THUDM/LongBench on the Hugging Face hub) and unzip it; each dataset is <name>.jsonl."
WHERE_V2 = "Get LongBench v2's data.json (THUDM/LongBench-v2 on the Hugging Face hub)."


class LongBench(FileTask):
    """One LongBench v1 dataset; see the module docstring."""

    metric = "longbench"

    def __init__(self, name: str, path: str | None = None, start: int = 0, shuffle: bool = False, notes: str = ""):
        super().__init__(path, start, shuffle)
        self.name, self.notes = name, notes
        self.dataset = name.split("/", 1)[1]
        if self.dataset not in PROMPTS:
            raise KvlabError(f"unknown LongBench dataset '{self.dataset}'; use one of {', '.join(DATASETS)}")
        self.metric = DATASET_METRIC[self.dataset].__name__
        self.source = f"LongBench v1 {self.dataset} (JSONL file)"

    def load(self) -> list[dict[str, Any]]:
        return read_records(self.path, self.name, WHERE_V1)

    def example(self, record: dict[str, Any], index: int) -> FileExample:
        require(record, ("context", "input", "answers"), self.name, index)
        head, tail = split_template(PROMPTS[self.dataset], input=record["input"])
        answers = record["answers"] if isinstance(record["answers"], list) else [record["answers"]]
        meta = {"all_classes": list(record.get("all_classes") or [])}
        query = Query(tail, tuple(str(a) for a in answers), "", MAX_NEW_TOKENS[self.dataset], meta)
        extra = {"id": record.get("_id"), "source_length": record.get("length"), "dataset": self.dataset,
                 "official_chat": "none" if self.dataset in NO_CHAT else "template"}
        return FileExample(head, str(record["context"]), query, extra)

    def score(self, prediction: str, query: Query) -> float:
        return score_longbench(self.dataset, prediction, query.answers, query.metadata.get("all_classes", ()))


ANSWER = (re.compile(r"The correct answer is \(([A-D])\)"), re.compile(r"The correct answer is ([A-D])"))


def extract_choice(response: str) -> str | None:
    """LongBench v2's ``extract_answer``: the letter after "The correct answer is"."""
    response = response.replace("*", "")
    for pattern in ANSWER:
        match = pattern.search(response)
        if match:
            return match.group(1)
    return None


class LongBenchV2(FileTask):
    """LongBench v2 multiple choice; see the module docstring."""

    source = "LongBench v2 (JSON file)"
    metric = "accuracy (answer regex)"

    def __init__(self, name: str = "longbench_v2", path: str | None = None, start: int = 0, shuffle: bool = False,
                 max_new_tokens: int = 128, notes: str = ""):
        super().__init__(path, start, shuffle)
        self.name, self.notes, self.max_new_tokens = name, notes, int(max_new_tokens)

    def load(self) -> list[dict[str, Any]]:
        return read_records(self.path, self.name, WHERE_V2)

    def example(self, record: dict[str, Any], index: int) -> FileExample:
        require(record, ("context", "question", "choice_A", "choice_B", "choice_C", "choice_D", "answer"),
                self.name, index)
        prompt = V2_PROMPT.replace("$Q$", record["question"].strip())
        for letter in "ABCD":
            prompt = prompt.replace(f"$C_{letter}$", record[f"choice_{letter}"].strip())
        head, tail = prompt.split("$DOC$", 1)
        query = Query(tail, (str(record["answer"]).strip(),), "", self.max_new_tokens)
        extra = {"id": record.get("_id"), "difficulty": record.get("difficulty"),
                 "length_bucket": record.get("length"), "domain": record.get("domain")}
        return FileExample(head, str(record["context"]).strip(), query, extra)

    def score(self, prediction: str, query: Query) -> float:
        return 1.0 if extract_choice(prediction) == query.answers[0] else 0.0
