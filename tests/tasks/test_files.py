"""File-based suites on small fixture files written by the tests."""

from __future__ import annotations

import json

import pytest

from kvlab.errors import KvlabError
from kvlab.prompting import PromptParts, render
from kvlab.tasks import get_task
from kvlab.tasks.files import truncation_summary

FILLER = "The quick brown fox jumps over the lazy dog near the river bank. "


def plain(tokenizer, sample):
    q = sample.queries[0]
    return render(tokenizer, PromptParts(sample.context + q.question, "", q.answer_prefix), "none").text


@pytest.fixture
def longbench_file(tmp_path):
    rows = [
        {"input": "Where does the fox live?", "context": "START " + FILLER * 300 + "The fox lives in Oslo. END",
         "answers": ["Oslo"], "length": 3000, "dataset": "hotpotqa", "all_classes": None, "_id": "a"},
        {"input": "Who?", "context": "Bob wrote it.", "answers": ["Bob"], "length": 3, "dataset": "hotpotqa",
         "all_classes": None, "_id": "b"},
    ]
    path = tmp_path / "hotpotqa.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_longbench_middle_truncation_reported(tokenizer, longbench_file):
    task = get_task("longbench/hotpotqa", path=str(longbench_file))
    long, short = task.samples(tokenizer, 1024, 5)  # only two examples in the file
    assert long.metadata["truncated"] and not short.metadata["truncated"]
    assert long.metadata["total_tokens"] <= 1024 and 1024 - long.metadata["total_tokens"] <= 10
    assert long.metadata["context_tokens_kept"] < long.metadata["context_tokens"]
    text = plain(tokenizer, long)
    assert text.startswith("Answer the question based on the given passages.") and "START" in text and "END" in text
    assert text.endswith("Question: Where does the fox live?\nAnswer:")  # instructions and question never cut
    assert long.queries[0].max_new_tokens == 32
    summary = truncation_summary([long, short])
    assert summary["samples"] == 2 and summary["truncated"] == 1
    assert 0 < summary["mean_kept_fraction_of_truncated"] < 1
    assert task.score("It is Oslo.", long.queries[0]) == pytest.approx(0.5)  # p = 1/3, r = 1


def test_longbench_prompt_is_official_when_it_fits(tokenizer, longbench_file):
    from kvlab.tasks.longbench import PROMPTS

    task = get_task("longbench/hotpotqa", path=str(longbench_file), start=1)
    (s,) = task.samples(tokenizer, 1024, 1)
    assert plain(tokenizer, s) == PROMPTS["hotpotqa"].format(context="Bob wrote it.", input="Who?")


def test_longbench_records_official_chat_policy(tokenizer, tmp_path):
    path = tmp_path / "trec.jsonl"
    path.write_text(json.dumps({"input": "What is X?", "context": "Q: a\nType: Entity", "answers": ["Entity"],
                                "all_classes": ["Entity", "Location"], "_id": "t"}) + "\n")
    (s,) = get_task("longbench/trec", path=str(path)).samples(tokenizer, 512, 1)
    assert s.metadata["official_chat"] == "none"
    assert get_task("longbench/trec", path=str(path)).score("Entity\nLocation", s.queries[0]) == 1.0


def test_longbench_v2(tokenizer, tmp_path):
    rows = [{"_id": "x", "domain": "d", "difficulty": "easy", "length": "short", "question": "Which?",
             "choice_A": "one", "choice_B": "two", "choice_C": "three", "choice_D": "four", "answer": "C",
             "context": FILLER * 50}]
    path = tmp_path / "data.json"
    path.write_text(json.dumps(rows))
    task = get_task("longbench_v2", path=str(path))
    (s,) = task.samples(tokenizer, 512, 1)
    text = plain(tokenizer, s)
    assert text.startswith("Please read the following text and answer the question below.\n\n<text>\n")
    assert "(C) three" in text and text.endswith('"The correct answer is (insert answer here)".')
    assert s.metadata["truncated"]
    assert task.score("The correct answer is (C)", s.queries[0]) == 1.0
    assert task.score("The correct answer is (A)", s.queries[0]) == 0.0


def test_infinitebench_passkey(tokenizer, tmp_path):
    from kvlab.tasks.infinitebench import TEMPLATES

    noise = "The grass is green. The sky is blue. " * 20
    row = {"id": 0, "context": noise + "The pass key is 71432. Remember it. 71432 is the pass key. " + noise,
           "input": "What is the pass key?", "answer": ["71432"], "options": []}
    path = tmp_path / "passkey.jsonl"
    path.write_text(json.dumps(row) + "\n")
    task = get_task("infinitebench/passkey", path=str(path))
    (s,) = task.samples(tokenizer, 2048, 1)
    assert plain(tokenizer, s) == TEMPLATES["passkey"].format(context=row["context"], input=row["input"])
    assert s.queries[0].answer_prefix == "The pass key is" and s.queries[0].max_new_tokens == 6
    assert task.score(" 71432.", s.queries[0]) == 1.0


def squad_fixture(path):
    def para(i, answerable=True):
        qa = {"question": f"What is item {i}?", "answers": [{"text": f"answer-{i}"}, {"text": f"ans {i}"}],
              "is_impossible": not answerable, "id": str(i)}
        return {"context": f"Paragraph {i}. " + FILLER * 3 + f"Item {i} is answer-{i}.", "qas": [qa]}

    data = {"data": [{"title": f"T{a}", "paragraphs": [para(a * 10 + p, answerable=p != 1) for p in range(5)]}
                     for a in range(8)]}
    path.write_text(json.dumps(data))


def test_ruler_qa_squad(tokenizer, tmp_path):
    path = tmp_path / "dev-v2.0.json"
    squad_fixture(path)
    task = get_task("ruler/qa_1", path=str(path))
    samples = task.samples(tokenizer, 1024, 3)
    for s in samples:
        q = s.queries[0]
        assert s.metadata["total_tokens"] <= 1024
        assert all(a in s.context for a in q.answers[:1])
        assert s.context.count("Document 1:\n") == 1 and q.answer_prefix == " Answer:"
        assert q.question.startswith("\n\nQuestion: What is item")
    assert [s.queries[0].question for s in samples][1] == "\n\nQuestion: What is item 2?"  # item 1 unanswerable
    assert task.score("It is ANS 0", samples[0].queries[0]) == 1.0  # any reference (string_match_part)


def test_ruler_qa_hotpot(tokenizer, tmp_path):
    rows = [{"question": f"Q{i}?", "answer": f"A{i}",
             "context": [[f"Title {i}-{j}", [f"Sentence {j} about {i}. ", "More. "]] for j in range(10)]}
            for i in range(4)]
    path = tmp_path / "hotpot.json"
    path.write_text(json.dumps(rows))
    (s,) = get_task("ruler/qa_2", path=str(path)).samples(tokenizer, 2048, 1)
    for j in range(10):  # all ten paragraphs of the question are kept
        assert f"Title 0-{j}\nSentence {j} about 0. More. " in s.context


def test_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(KvlabError, match="path=FILE"):
        get_task("ruler/qa_2")
    with pytest.raises(KvlabError, match="not found"):
        get_task("ruler/qa_1", path=str(tmp_path / "nope.json"))
    with pytest.raises(KvlabError, match="path=FILE"):
        get_task("longbench/qasper").samples(object(), 1024, 1)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": 1}\n')
    with pytest.raises(KvlabError, match="no field"):
        get_task("longbench/qasper", path=str(bad)).samples(object(), 1024, 1)
