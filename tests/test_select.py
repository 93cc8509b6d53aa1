"""select.py / mix.py: candidate names, validation carve, schedules, continuation, a tiny real selection."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cotdistill.errors import UserError
from cotdistill.mix import (Candidate, TraceSource, build_traces, curriculum_level, cyclic_slice, mix_levels,
                            parse_level_spec, phase_bounds, segment_pieces, teacher_members, train_pieces)
from cotdistill.select import (SelectConfig, _validated, candidates, item_score, paired_z, race_target, reject_sizes,
                               round_sizes,
                               run_select, score_model, select_vs_grid, select_vs_grid_markdown, solve_schedule,
                               plan_cost, split_train_val)
from cotdistill.tasks import get_task

OPTS = {"steps": 3, "seed": 0, "n_train": 400, "n_test": 30}
TINY_TRAIN = {"max_steps": 12, "batch_size": 8, "warmup_steps": 2, "logging_steps": 4, "save_steps": 100}


@pytest.fixture(scope="module")
def arith():
    t = get_task("arith", **OPTS)
    return t.load("train"), t.load("test")


# ---------------------------------------------------------------------------- names
@pytest.mark.parametrize("spec,expected", [
    (3, ("plain", 3)), ("4", ("plain", 4)), ("human", ("plain", "human")),
    ("mix:3-6", ("mix", (3, 6))), ("mix:difficulty", ("mix", (3, 6))), ("mix:2-4:loss", ("mix", (2, 4, "loss"))),
    ("mix:difficulty:loss", ("mix", (3, 6, "loss"))), ("mix:3-6:steps", ("mix", (3, 6))),
    ("curriculum:1-3", ("curriculum", [1, 2, 3])), ("curriculum:3,6", ("curriculum", [3, 6])),
])
def test_parse_level_spec(spec, expected):
    assert parse_level_spec(spec) == expected


@pytest.mark.parametrize("bad", [7, -1, True, "mix:6-3", "curriculum:4-4", "mixed:3-6", "curriculum:3,9", "fine",
                                 "mix:3-6:length"])
def test_parse_level_spec_rejects(bad):
    with pytest.raises(UserError):
        parse_level_spec(bad)


def test_union_teacher_and_candidates():
    assert teacher_members("union:lab+replay:x.jsonl") == ["lab", "replay:x.jsonl"]
    with pytest.raises(UserError):
        teacher_members("union:lab")
    cfg = SelectConfig(task="arith", student="scratch:llama-xxs", levels=[0, 3, "mix:difficulty"],
                       formats=["cot", "sym"], out="/tmp/unused")
    names = [c.name for c in candidates(cfg)]
    # level 0 has no format: one candidate, not two; the alias is normalised
    assert names == ["lab/L0/cot", "lab/L3/cot", "lab/L3/sym", "lab/mix:3-6/cot", "lab/mix:3-6/sym"]
    with pytest.raises(UserError, match="levels"):
        _validated({"task": "arith", "student": "scratch:llama-xxs", "levels": ["curriculum:5-2"], "out": "x"})
    with pytest.raises(UserError, match="unknown key"):
        _validated({"task": "arith", "student": "s", "out": "x", "budgett": 3})


# ---------------------------------------------------------------------------- data
def test_validation_is_carved_from_train_only(arith):
    train, test = arith
    tr, val = split_train_val(train, 50, seed=3)
    assert len(val) == 50 and len(tr) == len(train) - 50
    assert not {e.id for e in tr} & {e.id for e in val}
    assert all(e.split == "train" for e in val)
    assert [e.id for e in split_train_val(train, 50, seed=3)[1]] == [e.id for e in val]  # deterministic
    assert [e.id for e in split_train_val(train, 50, seed=4)[1]] != [e.id for e in val]
    with pytest.raises(UserError, match="val_size"):
        split_train_val(train[:60], 50, seed=0)


def test_mix_gives_fine_levels_to_harder_items(arith):
    train, _ = arith
    src = TraceSource()
    table = mix_levels(train, (3, 6), src, "lab")
    assert sorted(set(table.values())) == [3, 6]
    assert abs(sum(v == 6 for v in table.values()) - len(train) / 2) <= 1
    from cotdistill.tasks.arith import lab_rationale

    def mean_len(level):
        xs = [len(lab_rationale(e, 6)) for e in train if table[e.id] == level]
        return sum(xs) / len(xs)

    assert mean_len(6) > mean_len(3)  # the harder half has longer digit-level solutions
    traces = build_traces(Candidate.parse("lab", "mix:3-6"), train[:40], src, mix_table=table)
    assert [t.level for t in traces] == [table[e.id] for e in train[:40]]
    assert all(t.output.endswith(f"The answer is {t.gold}.") for t in traces)


def test_student_losses_equal_the_trainers_loss(tmp_path, arith):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cotdistill.mix import student_losses
    from cotdistill.tasks.arith import lab_rationale
    from cotdistill.template import PromptTemplate
    from cotdistill.train import TrainConfig

    train, _ = arith
    cand = Candidate.parse("lab", 2)
    pieces = segment_pieces(cand, train, TraceSource(), 0, 6, total_steps=6, batch_size=8, first=True, decay=True)
    train_pieces(pieces, "scratch:llama-xxs", tmp_path / "m", TrainConfig.scratch(**TINY_TRAIN, seed=0), seed=0)
    losses = student_losses(tmp_path / "m", train[:20], TraceSource(), "lab", 2, batch_size=7)
    assert set(losses) == {e.id for e in train[:20]} and len(set(losses.values())) > 1
    # the same number the model's own loss gives for that item, one at a time, unpadded
    tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m", dtype=torch.float32)
    tpl = PromptTemplate.load(tmp_path / "m") or PromptTemplate()
    for e in train[:3]:
        p = tok(tpl.render_prompt(e.question, tok))["input_ids"]
        c = tok(tpl.render_completion(lab_rationale(e, 2)), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        with torch.no_grad():
            ref = model(input_ids=torch.tensor([p + c]), labels=torch.tensor([[-100] * len(p) + c])).loss.item()
        assert losses[e.id] == pytest.approx(ref, rel=1e-4)


def test_loss_mix_gives_the_fine_level_to_the_students_harder_items(tmp_path, arith):
    from cotdistill.mix import loss_mix_table, train_candidate
    from cotdistill.train import TrainConfig

    train, _ = arith
    cand = Candidate.parse("lab", "mix:2-4:loss")
    assert cand.levels == [2, 4] and cand.name == "lab/mix:2-4:loss/cot"
    cfg = TrainConfig.scratch(**TINY_TRAIN, seed=0)
    table, probe = loss_mix_table(cand, train, "scratch:llama-xxs", tmp_path / "probe", cfg, TraceSource(), probe_steps=6)
    assert sorted(set(table.values())) == [2, 4] and abs(sum(v == 4 for v in table.values()) - len(train) / 2) <= 1
    assert probe["steps"] == 6 and probe["train_tokens"] > 0
    assert probe["mean_loss_hard_half"] > probe["mean_loss_easy_half"]
    # cached: a second call trains nothing
    stamp = (tmp_path / "probe" / "mix_table.json").stat().st_mtime
    assert loss_mix_table(cand, train, "scratch:llama-xxs", tmp_path / "probe", cfg, TraceSource(), probe_steps=6)[0] == table
    assert (tmp_path / "probe" / "mix_table.json").stat().st_mtime == stamp
    # without the student, build_traces gives the pool of both levels; with the table, one trace per item
    pool = build_traces(cand, train[:10], TraceSource())
    assert sorted(t.level for t in pool) == [2] * 10 + [4] * 10
    assert [t.level for t in build_traces(cand, train[:10], TraceSource(), mix_table=table)] == [table[e.id] for e in train[:10]]
    # train_candidate runs the probe (10 % of 12 steps) and counts its tokens
    info = train_candidate(cand, train, "scratch:llama-xxs", tmp_path / "run" / "model", cfg)
    assert info["probe"]["steps"] == 1 and info["steps"] == 12
    assert info["train_tokens"] > info["probe"]["train_tokens"] > 0
    assert (tmp_path / "run" / "model.probe" / "mix_table.json").is_file()


def test_curriculum_phases_and_pieces(arith):
    train, _ = arith
    assert phase_bounds([2, 3, 4], 12) == [0, 4, 8, 12]
    assert [curriculum_level([2, 3, 4], s, 12) for s in (0, 3, 4, 11)] == [2, 2, 3, 4]
    cand = Candidate.parse("lab", "curriculum:2-4")
    # a segment from step 2 to 10 of a 12-step run is cut at the phase boundaries 4 and 8
    pieces = segment_pieces(cand, train, TraceSource(), 2, 10, total_steps=12, batch_size=4, first=False, decay=True)
    assert [(p.steps, p.level) for p in pieces] == [(2, 2), (4, 3), (2, 4)]
    assert [p.schedule for p in pieces] == ["constant", "constant", "decay"]
    assert {t.level for t in pieces[1].traces} == {3}
    # step s trains on items [s*bs, (s+1)*bs): the segment continues where the previous one stopped
    assert [t.id for t in pieces[0].traces] == [e.id for e in train[8:16]]
    assert cyclic_slice([1, 2, 3], 2, 7) == [3, 1, 2, 3, 1]
    first = segment_pieces(Candidate.parse("lab", 3), train, TraceSource(), 0, 5, total_steps=12, batch_size=4,
                           first=True, decay=False)
    assert [(p.steps, p.schedule) for p in first] == [(5, "warmup")]


# ---------------------------------------------------------------------------- schedule
def test_schedule_spends_the_budget_geometrically():
    assert round_sizes(5, 2) == [5, 3, 2]
    assert round_sizes(5, 3) == [5, 2]
    assert round_sizes(1, 2) == [1]
    assert round_sizes(2, 2) == [2]
    budget = 0.4 * 5 * 400 * 1000.0  # 40 % of a 5-candidate grid at 1000 tokens per step
    cum = solve_schedule(budget, 0, [5, 3, 2], 1000.0, 2, 400, "continue")
    cost, _ = plan_cost(0, [5, 3, 2], 1000.0, 0, 2, 400, "continue")
    assert cum[0] < cum[1] < cum[2] <= 400
    used = 5 * cum[0] + 3 * (cum[1] - cum[0]) + 2 * (cum[2] - cum[1])
    assert 0.9 * budget / 1000 <= used <= budget / 1000
    assert (cum[1] - cum[0]) / cum[0] == pytest.approx(2, rel=0.1)
    # retraining costs the whole length again each round: a smaller schedule fits
    cum_rt = solve_schedule(budget, 0, [5, 3, 2], 1000.0, 2, 400, "retrain")
    assert cum_rt[-1] < cum[-1]
    # a fixed first round
    assert solve_schedule(budget, 0, [5, 3, 2], 1000.0, 2, 400, "continue", first=100)[0] == 100


def test_rejects_schedule_ends_rounds_in_inverse_proportion_to_survivors():
    assert reject_sizes(4) == [4, 3, 2] and reject_sizes(2) == [2] and reject_sizes(1) == [1]
    budget = 0.4 * 4 * 400 * 1000.0
    cum = solve_schedule(budget, 0, [4, 3, 2], 1000.0, 2, 400, "continue", shape="inverse")
    used = 4 * cum[0] + 3 * (cum[1] - cum[0]) + 2 * (cum[2] - cum[1])
    assert 0.97 * budget / 1000 <= used <= budget / 1000
    # round r ends at c / n_r: 1/4 : 1/3 : 1/2 of the same c
    assert cum[0] * 4 == pytest.approx(cum[1] * 3, rel=0.02) == pytest.approx(cum[2] * 2, rel=0.02)
    # the first decision comes later than halving's, the last one earlier
    halving = solve_schedule(budget, 0, round_sizes(4, 2), 1000.0, 2, 400, "continue")
    assert cum[0] > halving[0] and cum[-1] < halving[-1]
    # resolved from a later point (after a drop): never goes backwards, never past max_steps
    later = solve_schedule(budget, 150, [2], 1000.0, 2, 400, "continue", shape="inverse")
    assert 150 < later[0] <= 400


def test_race_checkpoints_double_until_the_budget_is_spent():
    budget = 0.4 * 4 * 400 * 1000.0
    assert race_target(budget, 0, 4, 1000.0, 400, "continue") == (40, False)
    assert race_target(budget, 0, 4, 1000.0, 400, "continue", first=25) == (25, False)
    left = budget - 4 * 40 * 1000
    assert race_target(left, 40, 4, 1000.0, 400, "continue") == (80, False)
    # nobody dropped: the budget ends at step 160 for all four (no tiny leftover round)
    left -= 4 * 40 * 1000
    assert race_target(left, 80, 4, 1000.0, 400, "continue") == (160, True)
    # two dropped at step 80: the freed budget carries the other two further
    t, last = race_target(left, 80, 2, 1000.0, 400, "continue")
    assert (t, last) == (160, False)
    assert race_target(left - 2 * 80 * 1000, 160, 2, 1000.0, 400, "continue") == (240, True)
    # never past the full run
    assert race_target(1e12, 300, 2, 1000.0, 400, "continue") == (400, True)
    # retraining pays the whole length again
    assert race_target(4 * 100 * 1000.0, 80, 4, 1000.0, 400, "retrain") == (100, True)


def test_item_scores_and_paired_z():
    right = {"correct": True, "p_gold": 0.4}
    wrong = {"correct": False, "p_gold": 0.3}
    assert item_score("hybrid", right) == 1.0 and item_score("hybrid", wrong) == 0.3
    assert item_score("soft", right) == 0.4 and item_score("accuracy", wrong) == 0.0
    a = [1.0] * 30 + [0.0] * 70
    b = [0.0] * 100
    assert paired_z(a, b) > 5 and paired_z(b, a) < -5
    assert paired_z(a, a) == 0.0
    # a small edge on noisy items is not evidence
    import random

    rnd = random.Random(0)
    x = [rnd.random() for _ in range(200)]
    y = [v + rnd.gauss(0, 0.3) - 0.01 for v in x]
    assert abs(paired_z(x, y)) < 2.58


# ---------------------------------------------------------------------------- training
def test_continuation_starts_from_the_previous_weights(tmp_path, arith):
    import torch
    from safetensors.torch import load_file

    from cotdistill.train import TrainConfig

    train, _ = arith
    cand = Candidate.parse("lab", 3)
    base = TrainConfig.scratch(**TINY_TRAIN, seed=1)
    p0 = segment_pieces(cand, train, TraceSource(), 0, 6, total_steps=12, batch_size=8, first=True, decay=False)
    a = train_pieces(p0, "scratch:llama-xxs", tmp_path / "a", base, seed=1)
    assert a["steps"] == 6 and a["train_tokens"] > 0
    # continue with a vanishing learning rate: the weights must stay those of run a
    frozen = base.with_overrides(learning_rate=1e-12)
    p1 = segment_pieces(cand, train, TraceSource(), 6, 8, total_steps=12, batch_size=8, first=False, decay=True)
    b = train_pieces(p1, "scratch:llama-xxs", tmp_path / "b", frozen, seed=2, init=str(tmp_path / "a"))
    assert b["steps"] == 2
    wa = load_file(tmp_path / "a" / "model.safetensors")
    wb = load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    # a fresh run with the same vanishing rate is a different (random-init) model
    train_pieces(p1, "scratch:llama-xxs", tmp_path / "c", frozen, seed=2)
    wc = load_file(tmp_path / "c" / "model.safetensors")
    assert not all(torch.allclose(wa[k], wc[k], atol=1e-3) for k in wa)
    assert json.loads((tmp_path / "b" / "pieces.json").read_text())["pieces"][0]["schedule"] == "decay"


@pytest.fixture(scope="module")
def selection(tmp_path_factory):
    out = tmp_path_factory.mktemp("sel") / "run"
    cfg = dict(task="arith", task_options=OPTS, student="scratch:llama-xxs", levels=[0, 3, "curriculum:2-3"],
               budget=0.5, out=str(out), val_size=20, seed=0, train=TINY_TRAIN, threads=1, eval_batch_size=20,
               drop_z=None, schedule="rejects")  # rounds of 3 then 2 candidates (race: test_race_*)
    return cfg, run_select(cfg, progress=False)


@pytest.mark.slow
def test_select_end_to_end(selection, arith):
    cfg, res = selection
    out = Path(cfg["out"])
    sel = json.loads((out / "selection.json").read_text())
    assert sel["status"] == "done" and sel["winner"]["candidate"] in sel["candidates"]
    assert len(sel["candidates"]) == 3
    r1, r2 = sel["rounds"]
    assert len(r1["scores"]) == 3 and len(r2["scores"]) == 2 and r1["steps"] < r2["steps"] <= 12
    assert set(r2["dropped"] + r2["kept"]) == set(r1["kept"]) and len(r2["kept"]) == 1
    for s in r1["scores"]:
        assert s["n"] == 20 and s["ci_low"] <= s["accuracy"] <= s["ci_high"]
        assert 0 <= s["p_gold_low"] <= s["p_gold"] <= s["p_gold_high"] <= 1
        assert s["accuracy"] <= s["hybrid"] and 0 <= s["hybrid_low"] <= s["hybrid"] <= s["hybrid_high"] <= 1
    assert [s["candidate"] for s in r1["scores"]] == sorted(
        (s["candidate"] for s in r1["scores"]), key=lambda c: -next(x["hybrid"] for x in r1["scores"] if x["candidate"] == c))
    # compute: the tokens the trainer reports, within the budget, well below the grid
    spent = sum(s["train_tokens"] for rd in sel["rounds"] for s in rd["scores"])
    assert sel["spent_tokens"] == spent and spent <= sel["budget_tokens"] * 1.05
    assert sel["fraction_of_grid"] < 0.6
    # validation predictions are training items, never test items
    _, test = arith
    val_ids = {json.loads(x)["id"] for x in next(out.glob("runs/*/r0-*/val_predictions.jsonl")).read_text().splitlines()}
    assert val_ids and all("-train-" in i for i in val_ids) and not val_ids & {e.id for e in test}
    # the winner's traces are ready for `cotdistill train`
    from cotdistill.train import load_traces

    tr = load_traces([out / "traces.jsonl"])
    assert len(tr) == OPTS["n_train"]
    assert "Chosen:" in (out / "summary.md").read_text()


@pytest.mark.slow
def test_select_resumes_without_retraining(selection):
    cfg, res = selection
    out = Path(cfg["out"])
    stamps = {p: p.stat().st_mtime for p in out.glob("runs/*/*/val.json")}
    again = run_select(cfg, progress=False)
    assert again["winner"] == res["winner"] and again["spent_tokens"] == res["spent_tokens"]
    assert {p: p.stat().st_mtime for p in out.glob("runs/*/*/val.json")} == stamps


@pytest.mark.slow
def test_score_model_reads_real_outputs(selection, arith):
    cfg, res = selection
    _, test = arith
    sc = score_model(res["winner"]["model"], test[:10], max_new_tokens=80, batch_size=4)
    assert sc["n"] == 10 and len(sc["predictions"]) == 10
    for p in sc["predictions"]:
        assert 0 <= p["p_gold"] <= 1
        from cotdistill import answers

        assert p["correct"] == answers.equal(p["pred"], next(e.answer for e in test if e.id == p["id"]), "number")


@pytest.mark.slow
def test_select_vs_grid_reads_a_study(tmp_path, selection):
    cfg, res = selection
    study = tmp_path / "study"
    assert select_vs_grid(study)["available"] is False
    (study / "select" / "x").mkdir(parents=True)
    (study / "select" / "x" / "selection.json").write_text((Path(cfg["out"]) / "selection.json").read_text())
    rows = []
    for lv, acc in ((0, 0.10), (3, 0.50), ("curriculum:2-3", 0.49)):
        rows.append({"task": "arith", "teacher": "lab", "level": lv, "format": "cot", "student": "scratch:llama-xxs",
                     "seed": 0, "status": "ok", "accuracy": acc, "train_tokens": 1000})
    (study / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    d = select_vs_grid(study)
    assert d["available"] and len(d["rows"]) == 1
    row = d["rows"][0]
    assert row["grid_best"] == "lab/L3/cot" and row["grid_best_accuracy"] == 0.5
    chosen = {"lab/L0/cot": 0.10, "lab/L3/cot": 0.50, "lab/curriculum:2-3/cot": 0.49}[res["winner"]["candidate"]]
    assert row["chosen_accuracy"] == chosen and row["within_tolerance"] == (0.5 - chosen <= 0.02)
    assert "n_seeds" not in row
    assert "Would `select` have found the best cell?" in select_vs_grid_markdown(study)
    # a second seed where the curriculum wins: on the seed mean it is the best cell
    for lv, acc in ((0, 0.12), (3, 0.40), ("curriculum:2-3", 0.55)):
        rows.append({"task": "arith", "teacher": "lab", "level": lv, "format": "cot", "student": "scratch:llama-xxs",
                     "seed": 1, "status": "ok", "accuracy": acc, "train_tokens": 1000})
    (study / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    row = select_vs_grid(study)["rows"][0]
    assert row["grid_best"] == "lab/L3/cot"  # seed 0's own best
    assert row["n_seeds"] == 2 and row["grid_best_mean"] == "lab/curriculum:2-3/cot"
    assert row["grid_best_mean_accuracy"] == pytest.approx(0.52)
    mean_chosen = {"lab/L0/cot": 0.11, "lab/L3/cot": 0.45, "lab/curriculum:2-3/cot": 0.52}[res["winner"]["candidate"]]
    assert row["chosen_mean_accuracy"] == pytest.approx(mean_chosen)
    assert row["within_tolerance_mean"] == (0.52 - mean_chosen <= 0.02)
    assert "averaged over its seeds" in select_vs_grid_markdown(study)
    # the grid against itself: seed 0's best (L3) is 15 points short on seed 1; seed 1's best
    # (the curriculum) is 1 point short on seed 0
    rep = select_vs_grid(study)["reproducibility"]
    assert len(rep) == 1 and (rep[0]["pairs"], rep[0]["hits"]) == (2, 1)
    assert rep[0]["best_per_seed"] == {0: "lab/L3/cot", 1: "lab/curriculum:2-3/cot"}
    assert "1 of 2 (50 %)" in select_vs_grid_markdown(study)
    # a grid cell the selection did not race (L4, one seed only) changes neither its best cell nor the seed mean
    rows.append({"task": "arith", "teacher": "lab", "level": 4, "format": "cot", "student": "scratch:llama-xxs",
                 "seed": 0, "status": "ok", "accuracy": 0.9, "train_tokens": 5000})
    (study / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    row2 = select_vs_grid(study)["rows"][0]
    assert row2["grid_best"] == "lab/L3/cot" and row2["n_seeds"] == 2 and row2["grid_tokens"] == 3000
    assert row2["grid_best_mean"] == "lab/curriculum:2-3/cot"
    # ... and the grid's self-agreement counts complete seeds only: seed 1 has no L4 cell, so no pair is left
    assert select_vs_grid(study)["reproducibility"] == []


def test_paired_test_between_grid_cells(tmp_path):
    """The grid's own paired test: 300 shared test items, cell a right on 30 more than cell b."""
    from cotdistill.select import _cells_paired_z

    def cell(name, correct):
        d = tmp_path / "cells" / name / "eval"
        d.mkdir(parents=True)
        (d / "predictions.jsonl").write_text("".join(json.dumps({"id": f"t{i}", "correct": c}) + "\n"
                                                     for i, c in enumerate(correct)))
        return {"cell": name}

    base = [i % 2 == 0 for i in range(300)]
    a = cell("a", [c or i < 60 for i, c in enumerate(base)])  # 30 more right (the odd items below 60)
    b = cell("b", base)
    z = _cells_paired_z(tmp_path, a, b)
    # 30 items differ, all favouring a: mean 0.1, sd sqrt(0.1*0.9*300/299)
    assert z == pytest.approx(0.1 / (((0.1 * 0.9 * 300 / 299) ** 0.5) / 300 ** 0.5), rel=1e-3)
    assert _cells_paired_z(tmp_path, b, a) == pytest.approx(-z)
    assert _cells_paired_z(tmp_path, a, {"cell": "missing"}) is None
    # a torn last line (an evaluation killed mid-write) is dropped, not a traceback in the report
    with open(tmp_path / "cells" / "b" / "eval" / "predictions.jsonl", "a") as f:
        f.write('{"id": "t299", "corr')
    assert _cells_paired_z(tmp_path, a, b) == pytest.approx(z)


def test_cli_errors_are_one_line(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for args, msg in (
        (["--task", "arith", "--student", "scratch:llama-xxs", "--out", str(tmp_path), "--levels", "mix:6-1"], "mix:A-B"),
        (["--task", "arith", "--student", "scratch:llama-xxs", "--out", str(tmp_path), "--budget", "lots"], "--budget"),
        (["--student", "scratch:llama-xxs"], "--task"),
        (["--study", str(tmp_path / "nope")], "not a study directory"),
    ):
        p = subprocess.run([sys.executable, "-m", "cotdistill", "select", *args], capture_output=True, text=True, env=env)
        assert p.returncode == 2, p.stderr
        assert p.stderr.strip().startswith("error:") and msg in p.stderr and "Traceback" not in p.stderr
    # settings refused before anything is written: --out is neither created nor claimed
    for bad, msg in ((["--screen-batch", "64"], "above the training batch 32"), (["--val-size", "300"], "lower val_size")):
        p = subprocess.run([sys.executable, "-m", "cotdistill", "select", "--task", "arith", "--task-option", "n_train=400",
                            "--student", "scratch:llama-xxs", "--out", str(tmp_path / "new"), *bad],
                           capture_output=True, text=True, env=env)
        assert p.returncode == 2 and msg in p.stderr and "Traceback" not in p.stderr
        assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_a_budget_too_small_for_one_round_is_refused_and_leaves_out_free(tmp_path):
    cfg = dict(task="arith", task_options=OPTS, student="scratch:llama-xxs", levels=[0, 3], out=str(tmp_path / "b"),
               val_size=20, seed=0, train=TINY_TRAIN, threads=1, eval_batch_size=20)
    # the Python API names the settings as fields, the CLI as flags
    with pytest.raises(UserError, match=r"select: budget 40 \(did you mean budget 40%\?\) leaves 39 training tokens") as ei:
        run_select({**cfg, "budget": 40}, progress=False)
    assert ei.value.for_cli().startswith("select: --budget 40 (did you mean --budget 40%?) leaves 39 training tokens")
    assert not (tmp_path / "b" / "selection.json").exists() and not (tmp_path / "b" / "settings.json").exists()
    with pytest.raises(UserError, match="with first_steps 11.*lower first_steps"):
        run_select({**cfg, "levels": [0, 3, 4], "schedule": "halving", "first_steps": 11}, progress=False)
    with pytest.raises(UserError, match="field 'budget'"):
        _validated({**cfg, "budget": float("inf")})
    # the corrected budget runs in the same directory
    res = run_select({**cfg, "budget": 0.5}, progress=False)
    assert res["rounds"] and res["spent_tokens"] > 0


@pytest.mark.slow
def test_clearly_worse_candidates_are_dropped_early(tmp_path):
    # a near-zero drop_z makes every kept candidate below the leader "clearly worse": one round decides
    cfg = dict(task="arith", task_options=OPTS, student="scratch:llama-xxs", levels=[0, 3, 4], budget=0.5,
               out=str(tmp_path / "sel"), val_size=20, seed=0, train=TINY_TRAIN, threads=1, eval_batch_size=20,
               drop_z=1e-9, drop_min_gap=0.0)
    res = run_select(cfg, progress=False)
    r1 = res["rounds"][0]
    assert len(res["rounds"]) == 1 and r1["kept"] == [res["winner"]["candidate"]]
    # racing keeps everyone it has no evidence against; here both others are "clearly" worse
    assert sorted(r1["dropped_clearly_worse"]) == sorted(r1["dropped"]) and len(r1["dropped"]) == 2
    z = {s["candidate"]: s["z_below_leader"] for s in r1["scores"]}
    assert z[r1["kept"][0]] is None and all(z[c] > 0 for c in r1["dropped_clearly_worse"])
    assert "clearly worse" in (tmp_path / "sel" / "summary.md").read_text()
    # significance without a real gap is not enough: no score differs by a whole point
    res = run_select({**cfg, "drop_min_gap": 1.0, "out": str(tmp_path / "gap")}, progress=False)
    assert res["rounds"][0]["dropped_clearly_worse"] == []


@pytest.mark.slow
def test_select_with_a_loss_mix_counts_the_probe_and_writes_its_traces(tmp_path):
    from cotdistill.train import load_traces

    cfg = dict(task="arith", task_options=OPTS, student="scratch:llama-xxs", levels=[3, "mix:2-4:loss"], budget=0.5,
               out=str(tmp_path / "sel"), val_size=20, seed=0, train=TINY_TRAIN, threads=1, eval_batch_size=20,
               drop_z=None)
    res = run_select(cfg, progress=False)
    probe = res["probe_tokens"]["lab/mix:2-4:loss/cot"]
    assert probe > 0
    assert res["spent_tokens"] == probe + sum(s["train_tokens"] for rd in res["rounds"] for s in rd["scores"])
    assert (tmp_path / "sel" / "probes").is_dir()
    # a loss mix that wins writes one trace per item, each at the level the student's loss chose
    one = run_select({**cfg, "levels": ["mix:2-4:loss"], "out": str(tmp_path / "one")}, progress=False)
    assert one["winner"]["candidate"] == "lab/mix:2-4:loss/cot"
    tr = load_traces([tmp_path / "one" / "traces.jsonl"])
    assert len(tr) == OPTS["n_train"] and {t.level for t in tr} == {2, 4}


@pytest.mark.slow
def test_rerun_with_other_settings_is_refused_not_mixed(selection):
    cfg, res = selection
    with pytest.raises(UserError, match=r"other settings \(cooldown, score\)"):
        run_select({**cfg, "score": "hybrid", "cooldown": "last"}, progress=False)
    # runtime-only settings are fine (threads, evaluation batch size)
    again = run_select({**cfg, "eval_batch_size": 7}, progress=False)
    assert again["winner"] == res["winner"]


@pytest.mark.slow
def test_race_drops_nobody_without_evidence(tmp_path):
    cfg = dict(task="arith", task_options=OPTS, student="scratch:llama-xxs", levels=[0, 3, 4], budget=0.5,
               out=str(tmp_path / "race"), val_size=20, seed=0, train=TINY_TRAIN, threads=1, eval_batch_size=20,
               schedule="race", drop_z=1e6)
    res = run_select(cfg, progress=False)
    rounds = res["rounds"]
    # no candidate is ever 1e6 standard errors below the leader: all three run every round, the last picks
    assert len(rounds) >= 2 and all(len(rd["scores"]) == 3 for rd in rounds)
    assert all(rd["dropped"] == [] for rd in rounds[:-1]) and len(rounds[-1]["kept"]) == 1
    assert [rd["steps"] for rd in rounds] == sorted({rd["steps"] for rd in rounds})
    assert res["spent_tokens"] <= res["budget_tokens"] * 1.05 and "racing" in res["method"]
    # nothing separated the others from the winner: the result says so
    close = {c["candidate"] for c in res["winner"]["not_separated_from"]}
    assert close == {s["candidate"] for s in rounds[-1]["scores"]} - {res["winner"]["candidate"]}
    # final: trend (default) chose the best forecast among them (all three are tied with the leader)
    w = res["winner"]
    assert w["forecast"] and w["candidate"] == max(w["forecast"], key=w["forecast"].get)
    leader = rounds[-1]["kept"][0]
    assert w["leader"] == leader and w["chosen_by"] == ("leader" if w["candidate"] == leader else "trend")
    # the rule only decides: a rerun with final: leader trains nothing and picks the last leader
    stamps = {p: p.stat().st_mtime for p in (tmp_path / "race").glob("runs/*/*/val.json")}
    again = run_select({**cfg, "final": "leader"}, progress=False)
    assert again["winner"]["candidate"] == leader and not again["winner"]["forecast"]
    assert {p: p.stat().st_mtime for p in (tmp_path / "race").glob("runs/*/*/val.json")} == stamps
    assert "**Uncertain:**" in (tmp_path / "race" / "summary.md").read_text()


def test_trend_forecast_extends_the_last_two_decayed_checkpoints():
    from cotdistill.select import trend_forecast

    def rd(steps, scores, decayed=True):
        return {"steps": steps, "decayed": decayed,
                "scores": [{"candidate": c, "p_gold": v, "accuracy": 0.0} for c, v in scores.items()]}

    rounds = [rd(40, {"A": 0.04, "B": 0.03, "C": 0.02}), rd(80, {"A": 0.10, "B": 0.05, "C": 0.03}),
              rd(160, {"A": 0.11, "B": 0.10})]
    f = trend_forecast(rounds, "soft", 400)
    assert set(f) == {"A", "B"}  # the last round's candidates
    assert f["A"] == pytest.approx(0.11 + 0.01 / 80 * 240) and f["B"] == pytest.approx(0.10 + 0.05 / 80 * 240)
    assert f["B"] > f["A"]  # behind now, ahead at the end of the run
    # constant-rate checkpoints are not on the decayed curve: no forecast
    assert trend_forecast([rounds[0], rd(80, {"A": 0.1, "B": 0.05}, decayed=False), rounds[2]], "soft", 400) == {}
    assert trend_forecast([rd(40, {"A": 0.2})], "soft", 400) == {"A": 0.2}


def test_screening_config_buys_more_steps_for_the_same_tokens():
    from cotdistill.select import SelectConfig, screening_config
    from cotdistill.train import TrainConfig

    full = TrainConfig.scratch(**{**TINY_TRAIN, "learning_rate": 4e-3, "micro_batch_size": 8})
    cfg = SelectConfig(task="arith", student="scratch:llama-xxs", out="x", screen_batch=0.25)
    scr, steps = screening_config(cfg, full, 12)
    assert (scr.batch_size, steps) == (2, 48) and scr.batch_size * steps == full.batch_size * 12
    assert scr.learning_rate == pytest.approx(2e-3) and scr.micro_batch_size is None
    assert scr.warmup_steps == full.warmup_steps and scr.lr_scheduler == full.lr_scheduler
    # a count of examples; the training batch itself leaves the config as it is
    assert screening_config(cfg.model_copy(update={"screen_batch": 4}), full, 12)[1] == 24
    assert screening_config(cfg.model_copy(update={"screen_batch": 1.0}), full, 12) == (full, 12)
    assert screening_config(cfg.model_copy(update={"screen_batch": 8}), full, 12) == (full, 12)
    with pytest.raises(UserError, match="screen_batch.*above the training batch 8"):
        screening_config(cfg.model_copy(update={"screen_batch": 16}), full, 12)
    with pytest.raises(UserError, match="field 'screen_batch': 8.5 is neither a share"):
        _validated({"task": "arith", "student": "scratch:llama-xxs", "out": "x", "screen_batch": 8.5})


def test_select_refuses_a_token_length_for_the_full_run(tmp_path):
    with pytest.raises(UserError, match="field 'train.max_tokens'.*give train.max_steps"):
        run_select(dict(task="arith", task_options=OPTS, student="scratch:llama-xxs", out=str(tmp_path / "t"),
                        train={"max_tokens": 100000, "max_steps": None}), progress=False)
    assert not (tmp_path / "t").exists()


@pytest.mark.slow
def test_select_screens_at_a_smaller_batch(tmp_path):
    cfg = dict(task="arith", task_options=OPTS, student="scratch:llama-xxs", levels=[0, 3], budget=0.5,
               out=str(tmp_path / "scr"), val_size=20, seed=0, train=TINY_TRAIN, threads=1, eval_batch_size=20,
               schedule="race", drop_z=None, screen_batch=0.5)
    res = run_select(cfg, progress=False)
    scr = res["screening"]
    assert (scr["batch_size"], scr["max_steps"], scr["train_batch_size"], scr["train_max_steps"]) == (4, 24, 8, 12)
    assert res["max_steps"] == 24
    # the trainer ran the rounds at batch 4: twice the steps for about the tokens a batch-8 run spends
    plain = run_select({**cfg, "screen_batch": 1.0, "out": str(tmp_path / "plain")}, progress=False)
    assert res["grid_tokens"] == pytest.approx(plain["grid_tokens"], rel=0.02)
    assert res["spent_tokens"] <= res["budget_tokens"] * 1.05
    first, first_plain = res["rounds"][0], plain["rounds"][0]
    assert first["steps"] == 2 * first_plain["steps"]
    tok = {s["candidate"]: s["train_tokens"] for s in first["scores"]}
    tok_plain = {s["candidate"]: s["train_tokens"] for s in first_plain["scores"]}
    assert all(tok[c] == pytest.approx(tok_plain[c], rel=0.1) for c in tok)
    assert all(s["steps_this_round"] == first["steps"] for s in first["scores"])
    assert "Screened at batch 4" in (tmp_path / "scr" / "summary.md").read_text()
    # an older selection directory (no screen_batch in its settings) reruns with the old behaviour
    settings = tmp_path / "plain" / "settings.json"
    old = json.loads(settings.read_text())
    del old["screen_batch"]
    settings.write_text(json.dumps(old))
    assert run_select({**cfg, "screen_batch": 1.0, "out": str(tmp_path / "plain")}, progress=False)["winner"] == plain["winner"]
    with pytest.raises(UserError, match=r"other settings \(screen_batch\)"):
        run_select({**cfg, "out": str(tmp_path / "plain")}, progress=False)


def test_api_teacher_rationales_for_any_slice_one_call_per_item(tmp_path, arith):
    """TraceSource over a real local OpenAI-protocol server: a later slice of items gets its own
    rationales (not only the first slice asked for), and no item is called twice."""
    sys.path.insert(0, str(Path(__file__).parent))
    from openai_server import FakeOpenAIServer

    train, _ = arith
    with FakeOpenAIServer() as srv:
        src = TraceSource(tmp_path / "cache", {"base_url": srv.base_url, "api_key": "k", "hint_gold": True})
        cand = Candidate("openai:fake", 3, "cot")
        a = build_traces(cand, train[:40], src)
        b = build_traces(cand, train[30:90], src)  # 10 items seen, 50 new
        assert [t.id for t in a] == [e.id for e in train[:40]] and [t.id for t in b] == [e.id for e in train[30:90]]
        assert len(srv.outcomes("ok")) == len(set(srv.outcomes("ok"))) == 90
        # a new process (a rerun) reads the same directory's call store: no call
        again = build_traces(cand, train[:90], TraceSource(tmp_path / "cache", {"base_url": srv.base_url, "api_key": "k",
                                                                                  "hint_gold": True}))
        assert len(again) == 90 and len(srv.log) == 90


@pytest.mark.slow
def test_select_with_an_api_teacher_asks_each_item_once(tmp_path):
    """select with a teacher behind a real local OpenAI-protocol server: every item it trains on,
    validates on or writes for the winner gets its rationale from one call; a rerun calls nothing."""
    sys.path.insert(0, str(Path(__file__).parent))
    from openai_server import FakeOpenAIServer

    from cotdistill.train import load_traces

    key = "sk-test-0123456789SECRET"
    with FakeOpenAIServer(api_key=key) as srv:
        cfg = dict(task="arith", task_options={**OPTS, "n_train": 700}, student="scratch:llama-xxs",
                   teachers=["openai:fake"], levels=[3], budget=0.5, out=str(tmp_path / "sel"), val_size=20, seed=0,
                   train=TINY_TRAIN, threads=1, eval_batch_size=20,
                   generate={"base_url": srv.base_url, "api_key": key, "hint_gold": True})
        res = run_select(cfg, progress=False)
        calls = srv.outcomes("ok")
        assert len(calls) == len(set(calls)) == 700  # every item of the training split (with validation), once
        assert res["winner"]["candidate"] == "openai:fake/L3/cot"
        assert len(load_traces([tmp_path / "sel" / "traces.jsonl"])) == 700
        n = len(srv.log)
        again = run_select(cfg, progress=False)
        assert len(srv.log) == n and again["winner"] == res["winner"]
    text = "".join(p.read_text(errors="replace") for p in (tmp_path / "sel").rglob("*") if p.is_file()
                   and p.suffix in (".json", ".jsonl", ".md", ".txt"))
    assert key not in text


def test_select_from_a_study_keeps_its_training_settings_under_overrides(tmp_path):
    from cotdistill.select import config_from_study

    study = {"tasks": [{"name": "arith", "options": {"n_train": 400}}], "students": ["scratch:llama-xxs"], "seeds": [3],
             "teachers": ["lab"], "levels": [0, 3], "formats": ["cot"],
             "train": {"max_steps": 400, "batch_size": 32, "learning_rate": 1e-3}}
    (tmp_path / "study.json").write_text(json.dumps(study))
    cfg = config_from_study(tmp_path, train={"max_steps": 200})  # what `select --study S --max-steps 200` passes
    assert cfg.train == {"max_steps": 200, "batch_size": 32, "learning_rate": 1e-3}
    assert cfg.seed == 3 and cfg.out.endswith("scratch-llama-xxs__s3")


@pytest.mark.slow
def test_select_prints_plain_progress_with_an_eta_and_reports_wall_time_beside_the_grid(tmp_path, capsys):
    from cotdistill.select import summary_markdown

    cfg = dict(task="arith", task_options=OPTS, student="scratch:llama-xxs", levels=[0, 3], out=str(tmp_path / "p"),
               val_size=20, seed=0, train=TINY_TRAIN, threads=1, eval_batch_size=20, budget=0.5)
    res = run_select(cfg, progress=True)  # pytest's stderr is not a terminal: plain lines
    err = capsys.readouterr().err
    assert "select: 2 candidates, budget" in err and "% of the grid's" in err
    assert re.search(r"select: round 1, .* scored \(1/2\) · spent \d+ % of the budget · eta \d+ s", err), err
    assert res["train_wall_s"] > 0 and res["grid_train_wall_est_s"] > res["train_wall_s"]
    assert "Wall time:" in summary_markdown(res) and "the full grid's training alone would take about" in summary_markdown(res)


def test_objectives_default_to_the_training_objective_and_old_selections_resume(tmp_path):
    from cotdistill.select import _claim_out_dir

    base = dict(task="arith", student="scratch:llama-xxs", out=str(tmp_path / "s"))
    cfg = _validated({**base, "train": {"objective": "step-by-step"}})
    assert cfg.objectives == ["step-by-step"] and [c.name for c in candidates(cfg)][0].endswith("/step-by-step")
    assert _validated(base).objectives == ["sft"]
    with pytest.raises(UserError, match="train.objective"):
        _validated({**base, "objectives": ["sft"], "train": {"objective": "step-by-step"}})
    # a selection directory written before `objectives` existed trained train.objective: it resumes
    out = tmp_path / "s"
    out.mkdir()
    old = cfg.model_dump(mode="json", exclude={"threads", "eval_batch_size", "out", "final", "objectives"})
    (out / "settings.json").write_text(json.dumps(old))
    _claim_out_dir(out, cfg)
    with pytest.raises(UserError, match="objectives"):
        _claim_out_dir(out, _validated({**base, "objectives": ["sft", "step-by-step"],
                                        "train": {"objective": "step-by-step"}}))
