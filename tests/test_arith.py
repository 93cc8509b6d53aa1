"""The procedural arith task and its exact lab rationales."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from cotdistill.answers import correct
from cotdistill.errors import UserError
from cotdistill.tasks import get_task, task_names
from cotdistill.tasks.arith import FORMATS, Example, generate, lab_rationale, signature

BEN = Example(
    id="ben", task="arith", split="test",
    question="Ben has 5 pens, doubles them, doubles them, finds 6. How many?", answer="26",
    answer_type="number",
    meta=dict(start=5, ops=["*", "*", "+"], operands=[2, 2, 6],
              clauses=["doubles them", "doubles them", "finds 6"], values=[10, 20, 26],
              name="Ben", item="pens", steps=3),
)


def test_registered_and_splits():
    assert "arith" in task_names()
    t = get_task("arith", n_train=2000)
    test, train = t.load("test"), t.load("train")
    assert len(test) == 300 and len(train) == 2000
    assert all(e.answer_type == "number" and e.task == "arith" for e in test)
    sigs = {signature(e.meta) for e in test}
    assert len(sigs) == 300, "test signatures must be distinct"
    assert not sigs & {signature(e.meta) for e in train}, "train must skip test signatures"
    assert len({e.id for e in train + test}) == 2300
    # chance level of a constant guess stays low
    assert Counter(e.answer for e in test).most_common(1)[0][1] / 300 < 0.1


def test_deterministic_and_seeded():
    a = generate("test", seed=0, n_test=50)
    b = generate("test", seed=0, n_test=50)
    c = generate("test", seed=1, n_test=50)
    assert [e.question for e in a] == [e.question for e in b]
    assert [e.question for e in a] != [e.question for e in c]


@pytest.mark.parametrize("steps", [1, 3, 5])
def test_values_in_range_and_answer_consistent(steps):
    for e in generate("train", steps=steps, n_train=500, n_test=50):
        m = e.meta
        assert len(m["ops"]) == steps
        assert all(0 <= v <= 99 for v in m["values"])
        assert e.answer == str(m["values"][-1])
        assert re.fullmatch(r"\w+ has \d \w+, .+\. How many\?", e.question)
        assert len(e.question) < 40 + 15 * steps


def test_levels_match_cpu_notes():
    assert lab_rationale(BEN, 0) == "The answer is 26."
    assert lab_rationale(BEN, 1) == "5 *2 *2 +6. The answer is 26."
    assert lab_rationale(BEN, 2) == "10. 20. 26. The answer is 26."
    assert lab_rationale(BEN, 3) == "5*2=10. 10*2=20. 20+6=26. The answer is 26."
    assert lab_rationale(BEN, 4) == ("Doubles them: 5*2=10. Doubles them: 10*2=20. Finds 6: 20+6=26. "
                                     "The answer is 26.")
    assert lab_rationale(BEN, 5).startswith("Ben starts with 5 pens. He doubles them, so he has 5*2=10 pens.")
    assert lab_rationale(BEN, 6).startswith("5*2: ones 5*2=10, carry 1, tens 0*2+1=1, so 10.")


def _check_equations(text: str) -> int:
    """Every a<op>b=c equation in a rationale is arithmetically right; returns how many."""
    n = 0
    for a, op, b, c in re.findall(r"(?<![\w.+*/-])(\d+)([-+*/])(\d+)=(\d+)", text):
        a, b, c = int(a), int(b), int(c)
        want = a + b if op == "+" else a - b if op == "-" else a * b if op == "*" else a // b
        assert want == c, text
        n += 1
    return n


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_level_and_format_is_correct(fmt):
    exs = generate("test", steps=3, n_test=100)
    lengths = []
    for lvl in range(7):
        total = 0
        for e in exs:
            r = lab_rationale(e, lvl, fmt)
            assert r.endswith(f"The answer is {e.answer}.")
            pred, ok = correct(r, e.answer, "number")
            assert ok, (lvl, fmt, r)
            if lvl >= 3:
                n = _check_equations(r)
                assert n >= 3 or (fmt == "sym" and len(re.findall(r"x\d=x\d[-+*/]\d", r)) == 3), r
            total += len(r)
        lengths.append(total)
    # granularity: level 0 is shortest, level 1-3 grow, level 6 is longer than level 3
    assert lengths[0] < lengths[1] and lengths[2] < lengths[3] < lengths[6]


def test_formats_differ():
    outs = {f: lab_rationale(BEN, 3, f) for f in FORMATS}
    assert len(set(outs.values())) == 4
    assert "Q1:" in outs["subq"] and "A3:" in outs["subq"]
    assert outs["rar"].startswith("Restated:")
    assert "x1=x0*2=10" in outs["sym"]


def test_bad_inputs():
    with pytest.raises(UserError, match="level 9"):
        lab_rationale(BEN, 9)
    with pytest.raises(UserError, match="level 'human'"):
        lab_rationale(BEN, "human")
    with pytest.raises(UserError, match="format"):
        lab_rationale(BEN, 3, "poem")
    other = Example(id="q", task="gsm8k", split="test", question="?", answer="1", answer_type="number")
    with pytest.raises(UserError, match="arith metadata"):
        lab_rationale(other, 3)
    with pytest.raises(UserError, match="unknown option"):
        get_task("arith", stepz=3).load("test")
