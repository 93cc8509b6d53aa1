"""Prompt library: levels x formats x answer types, exemplars as data, `prompts show`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cotdistill import answers
from cotdistill.cli import app
from cotdistill.errors import UserError
from cotdistill.prompts import (
    ANSWER_FORMS, EXEMPLARS, FORMATS, LEVELS, QUESTIONS, answer_only, build_messages, exemplar,
    messages_to_text, parse_formats, parse_levels, render_question,
)
from cotdistill.tasks.base import Example

ATYPES = ("number", "choice", "bool", "math")


def _ex(atype: str, **kw) -> Example:
    q = QUESTIONS[atype]
    return Example(id="x", task="t", split="train", question=kw.get("question", "What is 2 + 2?"),
                   answer=kw.get("answer", str(q["answer"])), answer_type=atype, choices=kw.get("choices"))


def test_enough_own_exemplars_and_each_ends_with_the_right_answer():
    assert len(EXEMPLARS) >= 16
    for (atype, level, fmt), text in EXEMPLARS.items():
        gold = str(QUESTIONS[atype]["answer"])
        assert text.rstrip().endswith(f"The answer is {gold}."), (atype, level, fmt)
        pred, ok = answers.correct(text, gold, atype)
        assert ok, (atype, level, fmt, pred)
    # every answer type has all six cot levels, and they get longer with the level (roughly)
    for atype in ATYPES:
        lengths = [len(EXEMPLARS[(atype, lv, "cot")]) for lv in range(1, 7)]
        assert lengths[0] < lengths[2] < lengths[5], (atype, lengths)


@pytest.mark.parametrize("atype", ATYPES)
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_cell_builds_a_one_shot_chat(atype, fmt):
    for level in range(1, 7):
        msgs = build_messages(_ex(atype), level, fmt)
        assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
        sys_ = msgs[0]["content"]
        assert LEVELS[level] in sys_ and FORMATS[fmt] in sys_ and ANSWER_FORMS[atype] in sys_
        assert msgs[2]["content"] == exemplar(atype, level, fmt)[1]
        assert msgs[3]["content"] == "What is 2 + 2?"


def test_format_exemplars_look_like_their_format():
    for atype in ATYPES:
        for lv in (3, 5):
            assert "Q1:" in EXEMPLARS[(atype, lv, "subq")] and "A1:" in EXEMPLARS[(atype, lv, "subq")]
            assert EXEMPLARS[(atype, lv, "rar")].startswith("Rephrased:")
            assert "∴" in EXEMPLARS[(atype, lv, "sym")]


def test_nearest_level_fallback_prefers_the_finer_level():
    assert exemplar("number", 4, "subq")[1] == EXEMPLARS[("number", 5, "subq")]
    assert exemplar("number", 1, "sym")[1] == EXEMPLARS[("number", 3, "sym")]
    assert exemplar("number", 6, "rar")[1] == EXEMPLARS[("number", 5, "rar")]


def test_hint_gold_and_choices():
    ex = _ex("choice", question="Pick the prime.", answer="B", choices=["4", "5", "6"])
    msgs = build_messages(ex, 2, "cot", hint_gold=True)
    assert "Answer choices: A) 4 B) 5 C) 6" in msgs[-1]["content"]
    assert "The correct answer is B." in msgs[-1]["content"]
    assert "The correct answer" not in build_messages(ex, 2, "cot")[-1]["content"]
    # already-lettered choices and questions that carry their choices are left alone
    assert render_question("Q", ["A) x", "B) y"]).endswith("Answer choices: A) x B) y")
    assert render_question("Q Answer Choices: A. x", ["x"]) == "Q Answer Choices: A. x"


def test_level0_and_parsing():
    assert answer_only(_ex("bool", answer="True")) == "The answer is True."
    with pytest.raises(UserError):
        build_messages(_ex("number"), 0, "cot")
    with pytest.raises(UserError):
        build_messages(_ex("number"), 3, "poem")
    assert parse_levels("1-6") == [1, 2, 3, 4, 5, 6]
    assert parse_levels("5,0,3,3") == [0, 3, 5]
    assert parse_levels("human,2") == [2, "human"]
    for bad in ("7", "x", "1-9", ""):
        with pytest.raises(UserError):
            parse_levels(bad)
    assert parse_formats("cot,sym,cot") == ["cot", "sym"]
    with pytest.raises(UserError, match="unknown format"):
        parse_formats("cot,poem")


def test_plain_text_rendering_keeps_the_exemplar_pair():
    text = messages_to_text(build_messages(_ex("number"), 3, "cot"))
    assert "Question: Tom has 3 boxes" in text and "Solution: He has 3 * 12 = 36" in text
    assert text.endswith("Question: What is 2 + 2?\nSolution:")


def test_prompts_show_without_data_uses_a_sample_question(tmp_path, monkeypatch):
    monkeypatch.setenv("COTDISTILL_DATA", str(tmp_path))  # an empty data dir
    r = CliRunner().invoke(app, ["prompts", "show", "--task", "gsm8k", "--level", "3", "--format", "sym", "--json"])
    assert r.exit_code == 0, r.output
    start = r.stdout.index("[")
    msgs = json.loads(r.stdout[start:])
    assert msgs[0]["content"].startswith("You are an expert teacher")
    assert "Janet has 5 apples" in msgs[-1]["content"]
    assert "built-in sample" in r.stderr
    r = CliRunner().invoke(app, ["prompts", "show", "--task", "gsm8k", "--level", "2", "--hint-gold"])
    assert r.exit_code == 0 and "The correct answer is 17." in r.stdout
    r = CliRunner().invoke(app, ["prompts", "show", "--task", "strategyqa", "--level", "0"])
    assert "The answer is False." in r.stdout
    r = CliRunner().invoke(app, ["prompts", "show", "--format", "poem"])
    assert r.exit_code != 0


def test_prompts_show_uses_real_task_data_when_present():
    pytest.importorskip("cotdistill.tasks.arith")
    r = CliRunner().invoke(app, ["prompts", "show", "--task", "arith", "--level", "4", "--format", "subq", "--index", "2", "--json"])
    assert r.exit_code == 0, r.output
    msgs = json.loads(r.stdout)
    from cotdistill.tasks import get_task

    ex = get_task("arith").load("train")[2]
    assert msgs[-1]["content"] == ex.question
    assert "built-in sample" not in r.stderr
