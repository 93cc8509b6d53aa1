"""Task adapters on the real benchmark files (../shared/data): the paper's splits and layouts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cotdistill.errors import UserError
from cotdistill.tasks import get_task, task_names
from cotdistill.tasks.benchmarks import (
    aqua_letter,
    csqa_test_to_qa,
    last_boxed,
    math_split,
    parse_aqua_choices,
    parse_qa_choices,
)

PAPER_TASKS = ["gsm8k", "svamp", "aqua", "math", "csqa", "obqa", "strategyqa"]


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "cotdistill", *args], capture_output=True, text=True, env=env)


def test_registry_has_the_seven_tasks():
    assert set(PAPER_TASKS) <= set(task_names())


def test_unknown_task_is_one_line_error():
    with pytest.raises(UserError, match="unknown task 'gsm9k'"):
        get_task("gsm9k")


@pytest.mark.parametrize(
    "task,train,test",
    [("svamp", 700, 300), ("gsm8k", 7473, 1319), ("csqa", 9740, 1221), ("obqa", 4957, 500),
     ("strategyqa", 2000, 290)],
)
def test_split_sizes(shared_data, task, train, test):
    t = get_task(task, shared_data)
    tr, te = t.load("train"), t.load("test")
    assert (len(tr), len(te)) == (train, test)
    assert all(e.split == "train" for e in tr) and all(e.split == "test" for e in te)
    ids = [e.id for e in tr + te]
    assert len(set(ids)) == len(ids)
    assert all(e.answer for e in tr + te)


def test_aqua_splits_and_gold_letters(shared_data):
    t = get_task("aqua", shared_data)
    tr, te = t.load("train"), t.load("test")
    assert len(te) == 254
    # 6940 released rows; a handful have an unreadable free-text answer and are left out
    assert 6930 <= len(tr) <= 6940
    assert {e.answer for e in tr + te} <= set("ABCDE")
    # both splits use the released layout "... Answer Choices: (A) x (B) y"
    for e in (tr[0], te[0]):
        assert " Answer Choices: (A) " in e.question and len(e.choices) == 5
    assert te[0].choices[0] == "5(√3 + 1)"


def test_aqua_letter_reads_free_text_answers():
    assert aqua_letter("B") == "B"
    assert aqua_letter("Option 'A'") == "A"
    assert aqua_letter(":(OptionC") == "C"
    assert aqua_letter("B 1/204") == "B"
    assert aqua_letter("isD") == "D"
    assert aqua_letter("30cm") is None


def test_svamp_train_is_the_paper_700(shared_data):
    import gzip
    import json

    train = get_task("svamp", shared_data).load("train")
    released = {" ".join(r["instruction"].split())
                for r in json.load(gzip.open(shared_data / "paper/SVAMP_only_ans.json.gz", "rt"))}
    assert {e.question for e in train} == released
    e = next(x for x in train if x.id == "svamp-chal-1") if any(x.id == "svamp-chal-1" for x in train) else train[0]
    assert e.answer == e.answer.strip() and not e.answer.endswith(".0")


def test_csqa_one_layout_for_train_and_test(shared_data):
    t = get_task("csqa", shared_data)
    tr, te = t.load("train"), t.load("test")
    for e in tr[:50] + te:
        assert e.question.startswith("Q: ") and " Answer choices: A: " in e.question, e.question
        assert "\n" not in e.question and "Answer Choices" not in e.question
        assert e.choices and len(e.choices) == 5 and e.answer in "ABCDE"
    assert te[0].question == ("Q: A revolving door is convenient for two direction travel, but it also serves as a "
                              "security measure at a what? Answer choices: A: bank, B: library, C: department store, "
                              "D: mall, E: new york")
    # the same layout normaliser converts a raw test instruction
    assert t.normalize_question("Why? Answer Choices:\nA. x\nB. y, z\n") == "Q: Why? Answer choices: A: x, B: y, z"


def test_choice_parsers():
    assert parse_qa_choices("Q: s Answer choices: A: x, B: y y, C: z") == ["x", "y y", "z"]
    assert parse_aqua_choices("s Answer Choices: (A) 1 (B) 2.5 (C) none") == ["1", "2.5", "none"]
    assert csqa_test_to_qa("no choices here") is None


def test_obqa_layout_and_choices(shared_data):
    te = get_task("obqa", shared_data).load("test")
    assert all(e.question.startswith("Q: ") and e.choices and len(e.choices) == 4 for e in te)


def test_strategyqa_train_excludes_test(shared_data):
    t = get_task("strategyqa", shared_data)
    tr, te = t.load("train"), t.load("test")
    assert not {e.question for e in tr} & {e.question for e in te}
    assert {e.answer for e in tr + te} == {"True", "False"}
    assert all(e.answer_type == "bool" for e in te)


def test_math_split_deterministic_and_gold(shared_data):
    t = get_task("math", shared_data)
    tr, te = t.load("train"), t.load("test")
    assert len(tr) + len(te) == 1297
    assert 0.05 < len(te) / 1297 < 0.15
    assert {e.id for e in te} == {e.id for e in get_task("math", shared_data).load("test")}
    assert all(math_split(e.question) == "test" for e in te)
    # gold: the boxed answer of the solution where there is one (the released 'output' truncates some)
    boxed = [e for e in tr + te if "\\boxed" in e.meta["solution"]]
    assert boxed and all(e.answer == last_boxed(e.meta["solution"]) for e in boxed)
    assert last_boxed("so $\\boxed{\\frac{1}{2}}$.") == "\\frac{1}{2}"


def test_missing_file_names_file_and_both_fixes(tmp_path):
    t = get_task("gsm8k", tmp_path)
    with pytest.raises(UserError) as ei:
        t.load("test")
    msg = str(ei.value)
    assert "benchmarks/gsm8k/test.jsonl.gz" in msg and "cotdistill data download" in msg and "--data-dir" in msg
    assert "\n" not in msg


def test_unknown_split():
    with pytest.raises(UserError, match="no split 'dev'"):
        get_task("svamp").load("dev")


def test_cli_tasks_table(shared_data):
    r = run("tasks", "--data-dir", str(shared_data), "svamp", "csqa")
    assert r.returncode == 0, r.stderr
    assert "svamp" in r.stdout and "700" in r.stdout and "1,221" in r.stdout
    assert "SVAMP_only_ans" in r.stdout


def test_cli_unknown_task_exit_2():
    r = run("tasks", "nosuchtask")
    assert r.returncode == 2
    assert r.stderr.startswith("error: unknown task") and len(r.stderr.strip().splitlines()) == 1


def test_data_download_offline_one_line_error(tmp_path):
    import os

    env = dict(os.environ, HTTPS_PROXY="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")
    r = run("data", "download", "--data-dir", str(tmp_path), "--only", "benchmarks", "--timeout", "3", env=env)
    assert r.returncode == 2
    assert "fetch  https://raw.githubusercontent.com/openai/grade-school-math" in r.stdout
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot download") and "Traceback" not in r.stderr
    assert not list(tmp_path.rglob("*.gz"))  # nothing half-written


def test_data_download_skips_present_files(tmp_path, shared_data):
    import shutil

    (tmp_path / "benchmarks/gsm8k").mkdir(parents=True)
    shutil.copy(shared_data / "benchmarks/gsm8k/test.jsonl.gz", tmp_path / "benchmarks/gsm8k/test.jsonl.gz")
    r = run("data", "download", "--data-dir", str(tmp_path), "--only", "benchmarks", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "skip   benchmarks/gsm8k/test.jsonl.gz (present)" in r.stdout
    assert "would fetch https://s3.amazonaws.com/commensenseqa/dev_rand_split.jsonl" in r.stdout
