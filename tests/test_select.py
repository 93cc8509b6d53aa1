"""select.py / mix.py: candidate names, validation carve, schedules, continuation, a tiny real selection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cotdistill.errors import UserError
from cotdistill.mix import (Candidate, TraceSource, build_traces, curriculum_level, cyclic_slice, mix_levels,
                            parse_level_spec, phase_bounds, segment_pieces, teacher_members, train_pieces)
from cotdistill.select import (SelectConfig, _validated, candidates, round_sizes, run_select, score_model,
                               select_vs_grid, select_vs_grid_markdown, solve_schedule, plan_cost, split_train_val)
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
    ("mix:3-6", ("mix", (3, 6))), ("mix:difficulty", ("mix", (3, 6))),
    ("curriculum:1-3", ("curriculum", [1, 2, 3])), ("curriculum:3,6", ("curriculum", [3, 6])),
])
def test_parse_level_spec(spec, expected):
    assert parse_level_spec(spec) == expected


@pytest.mark.parametrize("bad", [7, -1, True, "mix:6-3", "curriculum:4-4", "mixed:3-6", "curriculum:3,9", "fine"])
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
    c = train_pieces(p1, "scratch:llama-xxs", tmp_path / "c", frozen, seed=2)
    wc = load_file(tmp_path / "c" / "model.safetensors")
    assert not all(torch.allclose(wa[k], wc[k], atol=1e-3) for k in wa)
    assert json.loads((tmp_path / "b" / "pieces.json").read_text())["pieces"][0]["schedule"] == "decay"


@pytest.fixture(scope="module")
def selection(tmp_path_factory):
    out = tmp_path_factory.mktemp("sel") / "run"
    cfg = dict(task="arith", task_options=OPTS, student="scratch:llama-xxs", levels=[0, 3, "curriculum:2-3"],
               budget=0.5, out=str(out), val_size=20, seed=0, train=TINY_TRAIN, threads=1, eval_batch_size=20)
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
    assert "Would `select` have found the best cell?" in select_vs_grid_markdown(study)


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
