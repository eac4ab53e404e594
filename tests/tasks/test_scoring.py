"""Scorers against their published formulas on hand-made cases."""

from __future__ import annotations

import pytest

from kvlab.tasks.infinitebench import score_infinitebench
from kvlab.tasks.longbench import extract_choice
from kvlab.tasks.longbench_metrics import (
    classification_score,
    code_sim_score,
    count_score,
    normalize_answer,
    qa_f1_score,
    retrieval_score,
    rouge_score,
    score_longbench,
    similarity_ratio,
)
from kvlab.tasks.scoring import aggregate, postprocess, string_match_all, string_match_part


def test_string_match_all_is_fraction_of_references_found():
    assert string_match_all("The numbers are 123 and 456.", ["123", "456", "789", "000"]) == 0.5
    assert string_match_all("ABC-def", ["abc-DEF"]) == 1.0  # case-insensitive
    assert string_match_all("", ["1"]) == 0.0


def test_string_match_part_is_any_reference_found():
    assert string_match_part("It was Paris, France", ["London", "Paris"]) == 1.0
    assert string_match_part("It was Rome", ["London", "Paris"]) == 0.0
    # RULER's "part" differs from lm-eval's fraction: one of two references is a full point
    assert string_match_part("3,677 seated", ["3,677 seated", "3,677"]) == 1.0


def test_postprocess_and_aggregate_as_ruler():
    assert postprocess("  a\tb\x01c \n") == "a\nb\nc"
    assert aggregate([1.0, 0.5, 0.0]) == 50.0
    assert aggregate([1.0, 1.0, 0.0]) == 66.67  # rounded to 2 decimals


def test_longbench_normalisation_and_f1():
    assert normalize_answer("The  Eiffel-Tower, an icon!") == "eiffeltower icon"
    assert qa_f1_score("the Eiffel Tower", "Eiffel Tower.") == 1.0
    # prediction 4 tokens, truth 2, 1 shared: p = 1/4, r = 1/2, F1 = 1/3
    assert qa_f1_score("Paris is in France", "Paris city") == pytest.approx(1 / 3)
    assert qa_f1_score("an a the", "the") == 0.0  # nothing left after normalisation
    assert score_longbench("hotpotqa", "Paris city", ["London", "Paris city"]) == 1.0  # max over truths
    # triviaqa scores only the first line
    assert score_longbench("triviaqa", "\nParis\nLondon", ["London"]) == 0.0


def test_longbench_classification_retrieval_count():
    classes = ["Location", "Description", "Entity", "Abbreviation"]
    assert classification_score("Entity and Location", "Entity", all_classes=classes) == 0.5
    assert classification_score("Description", "Entity", all_classes=classes) == 0.0
    assert retrieval_score("Paragraph 12, not 3", "Paragraph 12") == 0.5
    assert count_score("I count 7 paragraphs", "7") == 1.0
    assert count_score("no number", "7") == 0.0


def test_code_similarity_is_indel_ratio_of_first_code_line():
    assert similarity_ratio("abc", "abd") == 67  # python-Levenshtein ratio: 2*2/6
    assert similarity_ratio("", "") == 100
    assert code_sim_score("# comment\nx = foo(1)\n", "x = foo(1)") == 1.0
    assert code_sim_score("```python\nreturn a\n", "return b") == 0.88  # 2*7/16 = 0.875 -> 88


def test_rouge_l_uses_the_rouge_package():
    pytest.importorskip("rouge")
    assert rouge_score("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1.0, abs=1e-6)
    assert rouge_score("", "the cat") == 0.0  # rouge raises on empty input; LongBench scores 0
    assert 0 < rouge_score("the cat sat", "the cat sat on the mat") < 1


def test_longbench_v2_answer_regex():
    assert extract_choice("The correct answer is (B).") == "B"
    assert extract_choice("**The correct answer is C**") == "C"
    assert extract_choice("I think it is B") is None


def test_infinitebench_scorers():
    assert score_infinitebench("passkey", " 71432. Remember", ["71432"]) == 1.0
    assert score_infinitebench("passkey", " the key 7143", ["71432"]) == 0.0
    assert score_infinitebench("kv_retrieval", ' "abc-1": "x"', ["abc-1"]) == 1.0
    assert score_infinitebench("longdialogue_qa_eng", " probably Hamlet.", ["HAMLET"]) == 1.0
    assert score_infinitebench("code_run", " value is 42", [42]) == 1.0
    assert score_infinitebench("math_find", " 17 is the", [17]) == 1.0
    assert score_infinitebench("math_calc", "[1, 4, 9, 3]", [[1, 4, 8, 3]]) == 0.5
    assert score_infinitebench("longbook_choice_eng", "B. the dog", ["the dog", "B"]) == 1.0
    assert score_infinitebench("longbook_choice_eng", "C", ["the dog", "B"]) == 0.0
    assert score_infinitebench("code_debug", "A.", ["func_a", "A"]) == 1.0
    assert score_infinitebench("longbook_qa_eng", "the old man", ["Old man"]) == 1.0
