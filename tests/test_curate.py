"""Curation: reasons for removal, near-duplicate search, decontamination on the paper's real data."""

from __future__ import annotations

import gzip
import json
import random
import re

import pytest
from typer.testing import CliRunner

from cotdistill.cli import app
from cotdistill.curate import NearDupIndex, char_ngrams, curate, jaccard
from cotdistill.traces import Trace, read_traces, write_traces


def _t(i, q="Sam has 3 cards and buys 4. How many?", out="3 + 4 = 7. The answer is 7.", gold="7", **kw) -> Trace:
    base = dict(id=f"e{i}", task="svamp", question=q, gold=gold, teacher="gpt-4o", level=3, format="cot", output=out)
    return Trace(**{**base, **kw})


def test_each_reason_removes_the_right_trace():
    test_q = "A baker made 24 cakes and sold 9 of them. How many cakes are left?"
    traces = [
        _t(0),                                                              # kept
        _t(1, out="   "),                                                   # empty
        _t(2, out="3 + 4 = 7, so the total is"),                            # truncated: no final answer
        _t(3, out="3 + 4 = 8. The answer is 8."),                           # incorrect
        _t(4, id="e0", out="3 + 4 = 7.  The answer is 7."),                 # duplicate of e0 (normalised)
        _t(5, q=test_q, gold="15", out="24 - 9 = 15. The answer is 15."),   # exact test question
        _t(6, q="The baker made 24 cakes and sold 9 of them. How many cakes are left?", gold="15",
           out="24 - 9 = 15. The answer is 15."),                           # near duplicate
        _t(7, q="Ann has 5 pens and loses 2. How many?", gold="3", out="5 - 2 = 3. The answer is 3.", sample=0),
        _t(8, id="e7", q="Ann has 5 pens and loses 2. How many?", gold="3", out="Five minus two. The answer is 3.", sample=1),
        _t(9, level="human", teacher="human", q="Ann has 5 pens and loses 2. How many?", gold="3",
           out="She keeps 3. The answer is 3."),
    ]
    kept, rep = curate(traces, test_questions=[test_q], use_task_test_split=False)
    assert [t.id for t in kept] == ["e0", "e7", "e7", "e9"]
    assert rep.removed == {"empty": 1, "no_final_answer": 1, "incorrect": 1, "duplicate": 1, "best_of_n": 0, "contaminated": 2}
    assert rep.examples["incorrect"][0]["pred"] == "8"
    assert rep.examples["contaminated"][1]["similarity"] < 1.0
    kept_best, rep_best = curate(traces, keep="best", test_questions=[test_q], use_task_test_split=False)
    assert [t.id for t in kept_best] == ["e0", "e7", "e9"] and rep_best.removed["best_of_n"] == 1
    # the options whole, as a config (a study's curate: section): the same result
    from cotdistill.curate import CurateOptions

    opts = CurateOptions(keep="best", test_questions=[test_q], use_task_test_split=False)
    assert [t.id for t in curate(traces, opts)[0]] == ["e0", "e7", "e9"]
    # a question that is not close enough stays
    far = _t(10, q="A baker made 24 cakes and sold 9 of them. How many cakes are still left?", gold="15",
             out="24 - 9 = 15. The answer is 15.")
    assert curate([far], test_questions=[test_q], use_task_test_split=False)[1].removed["contaminated"] == 0
    kept_all, rep_all = curate(traces, keep="all", decontaminate=False)
    assert len(kept_all) == 7 and rep_all.removed["incorrect"] == 0  # empty, truncated, duplicate still go
    # pred/correct are filled when missing
    assert kept[0].pred == "7" and kept[0].correct is True


def test_near_duplicate_index_equals_brute_force_on_real_questions(shared_data):
    rows = json.load(gzip.open(shared_data / "benchmarks" / "svamp" / "SVAMP.json.gz", "rt"))
    qs = [f"{r['Body']} {r['Question']}" for r in rows]
    rng = random.Random(0)
    test, train = qs[:300], qs[300:700]
    probes = []
    for q in rng.sample(test, 60):  # light edits: still >= 0.9 for long questions, not for short ones
        i = rng.randrange(len(q))
        probes.append(q[:i] + rng.choice("xyz") + q[i + 1 :])
    probes += train
    idx = NearDupIndex(test, threshold=0.9)
    sets = [char_ngrams(q) for q in test]
    found = 0
    for p in probes:
        ps = char_ngrams(p)
        brute = max(((j, jaccard(ps, s)) for j, s in enumerate(sets)), key=lambda x: x[1])
        m = idx.match(p)
        if brute[1] >= 0.9:
            found += 1
            assert m is not None and abs(m[1] - brute[1]) < 1e-12, p
        else:
            assert m is None, (p, m)
    assert found >= 40  # the index finds the edited copies


def test_paper_strategyqa_human_annotation_leaks_exactly_the_290_test_questions(shared_data):
    rows = json.load(gzip.open(shared_data / "paper" / "stqa_human_annotation.json.gz", "rt"))
    test = json.load(gzip.open(shared_data / "benchmarks" / "strategyQA_test.json.gz", "rt"))
    traces = [Trace(id=f"stqa-{i}", task="strategyqa", question=r["instruction"],
                    gold=re.findall(r"True|False", r["output"])[-1], teacher="human", level="human", output=r["output"])
              for i, r in enumerate(rows)]
    kept, rep = curate(traces, test_questions=[t["instruction"] for t in test], use_task_test_split=False)
    assert rep.removed["contaminated"] == 290
    kept_ids = {t.id for t in kept}
    assert all(f"stqa-{i}" not in kept_ids for i in range(2000, 2290))
    assert rep.kept == 2290 - 290 - rep.removed["duplicate"]


def test_paper_svamp_split_is_clean_and_teacher_errors_are_dropped(shared_data, tmp_path):
    rows = json.load(gzip.open(shared_data / "paper" / "SVAMP_ChatGPT_level3_ranked.json.gz", "rt"))
    svamp = json.load(gzip.open(shared_data / "benchmarks" / "svamp" / "SVAMP.json.gz", "rt"))
    gold = {" ".join(f"{r['Body']} {r['Question']}".split()): r["Answer"] for r in svamp}
    train_q = {" ".join(r["instruction"].split()) for r in json.load(gzip.open(shared_data / "paper" / "SVAMP_only_ans.json.gz", "rt"))}
    test_q = [q for q in gold if q not in train_q]
    traces = [Trace(id=f"svamp-{i}", task="svamp", question=r["instruction"], teacher="gpt-4o", level=3,
                    gold=f"{gold[' '.join(r['instruction'].split())]:g}", output=r["output"])
              for i, r in enumerate(rows) if " ".join(r["instruction"].split()) in gold]
    assert len(traces) > 600
    write_traces(tmp_path / "in.jsonl", traces)
    (tmp_path / "test.json").write_text(json.dumps([{"question": q} for q in test_q]))
    r = CliRunner().invoke(app, ["curate", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "cur"),
                                 "--test-file", str(tmp_path / "test.json"), "--data-dir", str(tmp_path / "none")])
    assert r.exit_code == 0, r.output
    kept = read_traces(tmp_path / "cur" / "traces.jsonl")
    rep = json.loads((tmp_path / "cur" / "traces.curate.json").read_text())
    assert rep["removed"]["contaminated"] == 0  # the paper's SVAMP train/test split does not overlap
    assert 0 < rep["removed"]["incorrect"] < 0.15 * len(traces)  # the known 1-15% teacher errors
    assert all(t.correct for t in kept) and len(kept) == rep["kept"]
    assert "incorrect" in r.stdout and f"kept {len(kept)} of {len(traces)}" in r.stdout


def test_curate_cli_errors(tmp_path):
    write_traces(tmp_path / "a.jsonl", [_t(0)])
    r = CliRunner().invoke(app, ["curate", str(tmp_path / "a.jsonl"), "--out", str(tmp_path / "a.jsonl")])
    assert r.exit_code != 0
    r = CliRunner().invoke(app, ["curate", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")])
    assert r.exit_code != 0
    r = CliRunner().invoke(app, ["curate", str(tmp_path / "a.jsonl"), "--out", str(tmp_path / "o.jsonl"), "--keep", "most"])
    assert r.exit_code != 0


def test_decontamination_never_passes_traces_it_could_not_check(tmp_path):
    """A task whose test split does not load stops curate with one line naming the fix, instead of
    keeping the traces as if they had been checked; with given test questions it is reported."""
    from cotdistill.errors import UserError

    with pytest.raises(UserError, match=r"cannot decontaminate the svamp traces: its test split did not load .*"
                                        r"data_dir.*--no-decontaminate") as e:
        curate([_t(0)], data_dir=str(tmp_path / "none"))
    assert "--data-dir" in e.value.for_cli()
    kept, rep = curate([_t(0)], data_dir=str(tmp_path / "none"), test_questions=["What is 2 + 2?"])
    assert len(kept) == 1 and rep.test_sources["svamp"].startswith("test split not loaded") and "+ 1 given" in rep.test_sources["svamp"]
    assert len(curate([_t(0)], data_dir=str(tmp_path / "none"), decontaminate=False)[0]) == 1
