"""Objectives that use a teacher model's distributions: logit-kd and on-policy (GKD)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cotdistill.errors import UserError
from cotdistill.objectives import generalized_jsd, kd_loss
from cotdistill.train import TrainConfig, train


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "cotdistill", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def arith_traces(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("kd") / "gen"
    r = _cli("generate", "--task", "arith", "--teacher", "lab", "--levels", "3", "--limit", "96", "--out", str(d))
    assert r.returncode == 0, r.stderr
    return d / "traces.jsonl"


@pytest.fixture(scope="module")
def teacher_dir(arith_traces, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("teacher") / "model"
    train([arith_traces], "scratch:llama-xs", out,
          TrainConfig.scratch(max_steps=12, batch_size=16, threads=1, warmup_steps=0), progress=False)
    return out


def test_losses_equal_trls_own_gkd_and_orpo_terms(monkeypatch):
    """The on-policy and preference objectives run inside cotdistill's packing trainer, but their
    losses are TRL's: GKDTrainer.generalized_jsd_loss and ORPOTrainer.odds_ratio_loss (TRL 1.x keeps
    both under trl.experimental), computed here on the same logits."""
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    gkd = pytest.importorskip("trl.experimental.gkd")
    orpo = pytest.importorskip("trl.experimental.orpo")
    from types import SimpleNamespace

    from cotdistill.objectives import preference_terms

    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(2, 6, 13, generator=g), torch.randn(2, 6, 13, generator=g)
    for beta in (0.0, 0.3, 0.5, 1.0):
        for temp in (1.0, 2.0):
            ours = generalized_jsd(s.reshape(-1, 13), t.reshape(-1, 13), beta=beta, temperature=temp)
            trls = gkd.GKDTrainer.generalized_jsd_loss(s, t, beta=beta, temperature=temp, reduction="sum")
            assert ours.item() == pytest.approx(trls.item(), rel=1e-5), (beta, temp)
    # ORPO: two chosen rows (4 and 3 tokens), two rejected rows paired with them (2 and 5 tokens)
    rows = torch.tensor([0] * 4 + [1] * 3 + [2] * 2 + [3] * 5)
    logits = torch.randn(len(rows), 17, generator=g)
    targets = torch.randint(0, 17, (len(rows),), generator=g)
    nll, odds = preference_terms(logits, targets, rows, n_chosen=2, pairs=[0, 1])
    token_lp = -torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    mean_lp = torch.stack([token_lp[rows == i].mean() for i in range(4)])  # ORPO averages log-probs per token
    stub = SimpleNamespace(beta=1.0, accelerator=SimpleNamespace(device="cpu"))
    ratio = orpo.ORPOTrainer.odds_ratio_loss(stub, mean_lp[:2], mean_lp[2:])[0]
    assert odds.item() == pytest.approx(-ratio.mean().item(), rel=1e-5)
    assert nll.item() == pytest.approx(-token_lp[:7].mean().item(), rel=1e-5)


def losses(d: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def test_divergences_match_their_definitions():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 11, generator=g), torch.randn(5, 11, generator=g)
    ps, pt = s.softmax(-1), t.softmax(-1)
    fwd = (pt * (pt.log() - ps.log())).sum()
    rev = (ps * (ps.log() - pt.log())).sum()
    assert generalized_jsd(s, t, beta=0.0).item() == pytest.approx(fwd.item(), rel=1e-5)
    assert generalized_jsd(s, t, beta=1.0).item() == pytest.approx(rev.item(), rel=1e-5)
    m = 0.5 * ps + 0.5 * pt
    jsd = 0.5 * (pt * (pt.log() - m.log())).sum() + 0.5 * (ps * (ps.log() - m.log())).sum()
    assert generalized_jsd(s, t, beta=0.5).item() == pytest.approx(jsd.item(), rel=1e-5)
    # top-k KL over every token = the full forward KL; over the top 3 = KL to the renormalised top 3
    lt = torch.log_softmax(t, -1)
    vals, idx = lt.topk(11, -1)
    assert kd_loss(s, idx, vals).item() == pytest.approx(fwd.item(), rel=1e-5)
    vals3, idx3 = lt.topk(3, -1)
    p3 = torch.softmax(vals3, -1)
    manual = (p3 * (p3.log() - torch.log_softmax(s, -1).gather(-1, idx3))).sum()
    assert kd_loss(s, idx3, vals3).item() == pytest.approx(manual.item(), rel=1e-5)


def test_logit_kd_targets_line_up_with_the_teachers_table(teacher_dir, arith_traces, tmp_path):
    """A student that IS its teacher (continued from the teacher's weights) has zero KL at the first
    step when the table keeps every token: the stored rows and the packed batch's targets line up."""
    vocab = json.loads((teacher_dir / "config.json").read_text())["vocab_size"]
    cfg = TrainConfig.scratch(objective="logit-kd", teacher_model=str(teacher_dir), kd_alpha=0.0, kd_top_k=vocab,
                              max_steps=1, batch_size=16, logging_steps=1, threads=1, precision="fp32",
                              kd_cache=str(tmp_path / "topk"), warmup_steps=0)
    res = train([arith_traces], str(teacher_dir), tmp_path / "self", cfg, progress=False)
    assert losses(tmp_path / "self")[0] == pytest.approx(0.0, abs=1e-4)
    assert res.summary["objective"] == "logit-kd" and res.summary["teacher_topk_reused"] is False


def test_logit_kd_trains_and_every_later_run_reuses_the_stored_teacher_table(teacher_dir, arith_traces, tmp_path):
    cfg = TrainConfig.scratch(objective="logit-kd", teacher_model=str(teacher_dir), max_steps=6, batch_size=16,
                              logging_steps=1, threads=1, warmup_steps=0)
    a = train([arith_traces], "scratch:llama-xxs", tmp_path / "a", cfg, progress=False).summary
    b = train([arith_traces], "scratch:llama-xxs", tmp_path / "b", cfg.with_overrides(seed=7), progress=False).summary
    assert Path(a["teacher_topk_file"]).parent == arith_traces.parent / "teacher-topk"
    assert a["teacher_topk_reused"] is False and a["teacher_forward_tokens"] > 0
    assert b["teacher_topk_reused"] is True and b["teacher_forward_tokens"] == 0
    assert a["compute_flops"] > b["compute_flops"]  # the teacher's pass is counted once
    la = losses(tmp_path / "a")
    assert la[-1] < la[0]
    sft = train([arith_traces], "scratch:llama-xxs", tmp_path / "sft", cfg.with_overrides(objective="sft"), progress=False)
    assert losses(tmp_path / "sft") != la  # the objective changes what is learned


def test_on_policy_samples_from_the_student_and_the_teacher_scores_them(teacher_dir, arith_traces, tmp_path):
    base = dict(objective="on-policy", teacher_model=str(teacher_dir), max_steps=3, batch_size=8, logging_steps=1,
                threads=1, warmup_steps=0)
    on = train([arith_traces], "scratch:llama-xxs", tmp_path / "on", TrainConfig.scratch(**base, on_policy_lambda=1.0),
               progress=False).summary
    off = train([arith_traces], "scratch:llama-xxs", tmp_path / "off", TrainConfig.scratch(**base, on_policy_lambda=0.0),
                progress=False).summary
    assert on["generated_tokens"] > 0 and off["generated_tokens"] == 0
    assert on["teacher_forward_tokens"] > 0 and on["on_policy_max_new_tokens"] > 0
    assert on["compute_flops"] > 6 * on["params"] * on["train_tokens"]
    assert all(x >= 0 for x in losses(tmp_path / "on") + losses(tmp_path / "off"))
    # a warm start: the first half of the steps are SFT on the traces (no samples, no teacher)
    warm = train([arith_traces], "scratch:llama-xxs", tmp_path / "warm",
                 TrainConfig.scratch(**{**base, "max_steps": 4}, on_policy_lambda=1.0, on_policy_warmup=0.5),
                 progress=False).summary
    assert warm["on_policy_warmup_steps"] == 2
    assert 0 < warm["teacher_forward_tokens"] < warm["train_tokens"] and warm["generated_tokens"] > 0
    # the model is a normal checkpoint
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / "on")


def test_teacher_objectives_refuse_a_missing_teacher_or_another_tokenizer(arith_traces, tmp_path, smollm2_path):
    r = _cli("train", "--traces", str(arith_traces), "--student", "scratch:llama-xxs", "--out", str(tmp_path / "m"),
             "--objective", "on-policy", "--max-steps", "2")
    assert r.returncode == 2 and "--teacher-model" in r.stderr and "Traceback" not in r.stderr
    r = _cli("train", "--traces", str(arith_traces), "--student", "scratch:llama-xxs", "--out", str(tmp_path / "m"),
             "--objective", "logit-kd", "--teacher-model", smollm2_path, "--max-steps", "2")
    assert r.returncode == 2 and "tokenizer differs" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()
    with pytest.raises(UserError, match="untrained scratch model"):
        train([arith_traces], "scratch:llama-xxs", tmp_path / "m2",
              TrainConfig.scratch(objective="logit-kd", teacher_model="scratch:llama-s", max_steps=1), progress=False)


def test_objectives_are_a_study_factor_with_a_shared_teacher_table(teacher_dir, tmp_path):
    from cotdistill.report import write_report
    from cotdistill.study import expand_cells, load_study_config, run_study

    base = {"name": "obj", "output_dir": str(tmp_path / "o"),
            "tasks": [{"name": "arith", "options": {"steps": 2, "n_train": 64, "n_test": 12}}],
            "teachers": ["lab"], "levels": [3], "students": ["scratch:llama-xxs"], "seeds": [0, 1],
            "objectives": ["sft", "logit-kd", "on-policy", "preference", "step-by-step"],
            "curate": {"decontaminate": False},
            "train": {"max_steps": 2, "batch_size": 8, "threads": 1, "teacher_model": str(teacher_dir),
                      "on_policy_max_new_tokens": 16},
            "eval": {"max_new_tokens": 8}}
    cfg = load_study_config(base)
    assert len(expand_cells(cfg)) == 10
    from cotdistill.study import stage_keys

    plain = load_study_config({**base, "objectives": ["sft"], "train": {k: v for k, v in base["train"].items()
                                                                          if k != "teacher_model"}})
    for c in expand_cells(plain):  # the teacher does not touch the SFT cells' keys: a cached grid is reused
        assert stage_keys(plain, c) == stage_keys(cfg, c)
    kd = next(c for c in expand_cells(cfg) if c.objective == "logit-kd")
    other = load_study_config({**base, "train": {**base["train"], "teacher_model": str(teacher_dir) + "-other"}})
    assert stage_keys(other, kd)["train"] != stage_keys(cfg, kd)["train"]
    s = run_study(cfg, jobs=1, progress=False)
    assert s.failed == 0
    tables = list((tmp_path / "o" / "cache" / "teacher-topk").glob("teacher-topk-*.pt"))
    assert len(tables) == 1  # both seeds' logit-kd cells read one table
    text = write_report(tmp_path / "o")["md"].read_text()
    objectives = ("logit-kd", "on-policy", "preference", "step-by-step")
    for obj in objectives:
        summary = json.loads(next((tmp_path / "o" / "cells").glob(f"*__s0__{obj}")).joinpath(
            "model", "train_summary.json").read_text())
        assert summary["objective"] == obj
        assert f"scratch:llama-xxs [{obj}]" in text
    for obj in objectives:  # each objective against the student's SFT, by a paired test
        line = next(x for x in text.splitlines() if f"Objective {obj} against SFT for **scratch:llama-xxs**" in x)
        assert "McNemar p" in line
    with pytest.raises(UserError, match="train.teacher_model"):
        load_study_config({**base, "output_dir": str(tmp_path / "p"), "train": {"max_steps": 2}})


def test_orpo_terms_match_their_definition():
    from cotdistill.objectives import preference_terms

    g = torch.Generator().manual_seed(1)
    logits = torch.randn(7, 13, generator=g)
    targets = torch.randint(0, 13, (7,), generator=g)
    rows = torch.tensor([0, 0, 0, 1, 1, 2, 2])  # chosen rows 0, 1; row 2 = a rejected sample paired with row 1
    nll, ratio = preference_terms(logits, targets, rows, n_chosen=2, pairs=[1])
    lp = torch.log_softmax(logits, -1)[torch.arange(7), targets]
    assert nll.item() == pytest.approx(-lp[:5].mean().item(), rel=1e-5)
    def log_odds(x):
        m = x.mean()
        return m - torch.log1p(-torch.exp(m))
    want = -torch.nn.functional.logsigmoid(log_odds(lp[3:5]) - log_odds(lp[5:7]))
    assert ratio.item() == pytest.approx(want.item(), rel=1e-5)
    assert preference_terms(logits[:5], targets[:5], rows[:5], n_chosen=2, pairs=[])[1].item() == 0.0


def test_preference_pairs_the_trace_with_the_students_own_wrong_samples(arith_traces, tmp_path):
    r = _cli("train", "--traces", str(arith_traces), "--student", "scratch:llama-xxs", "--out", str(tmp_path / "p"),
             "--objective", "preference", "--orpo-lambda", "0.2", "--max-steps", "3", "--batch-size", "8", "--threads", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((tmp_path / "p" / "train_summary.json").read_text())
    # an untrained student never writes the right answer line: every example gets a rejected sample
    assert s["preference_pairs"] == 3 * 8 and s["generated_tokens"] > 0 and s["orpo_lambda"] == 0.2
    assert s["compute_flops"] > 6 * s["params"] * s["train_tokens"]
    assert all(x > 0 for x in losses(tmp_path / "p"))


def test_select_races_objectives_as_candidates_and_names_the_winners_objective(teacher_dir, tmp_path):
    out = tmp_path / "sel"
    args = ["select", "--task", "arith", "--task-option", "steps=3", "--task-option", "n_train=200",
            "--student", "scratch:llama-xxs", "--levels", "3", "--objectives", "sft,logit-kd", "--budget", "60%",
            "--val-size", "20", "--max-steps", "8", "--drop-z", "1e9", "--threads", "1", "--out", str(out)]
    # logit-kd without a teacher model: refused before --out exists
    r = _cli(*args)
    assert r.returncode == 2 and "train.teacher_model" in r.stderr and "--teacher-model" in r.stderr
    assert not out.exists()
    r = _cli(*args, "--teacher-model", str(teacher_dir))
    assert r.returncode == 0, r.stderr[-2000:]
    sel = json.loads((out / "selection.json").read_text())
    assert sel["candidates"] == ["lab/L3/cot", "lab/L3/cot/logit-kd"]
    scores = {s["candidate"]: s for rd in sel["rounds"] for s in rd["scores"]}
    assert set(scores) == set(sel["candidates"])
    # the logit-kd candidate really trained against the teacher: its compute counts the teacher's forward passes
    sft, kd = scores["lab/L3/cot"], scores["lab/L3/cot/logit-kd"]
    n = json.loads(next(out.glob("runs/*/r0-*/model/train_summary.json")).read_text())["params"]
    assert sft["compute_flops"] == 6 * n * sft["train_tokens"]
    assert kd["compute_flops"] > 6 * n * kd["train_tokens"]
    kd_summary = json.loads(next(p for p in out.glob("runs/*/r0-*/model/train_summary.json")
                                 if json.loads(p.read_text())["objective"] == "logit-kd").read_text())
    assert kd_summary["teacher_model"] == str(teacher_dir)
    assert list((out / "cache" / "teacher-topk").glob("teacher-topk-*.pt"))
    w = sel["winner"]
    assert w["objective"] == ("logit-kd" if w["candidate"].endswith("/logit-kd") else "sft")
    text = (out / "summary.md").read_text()
    assert "Objectives compared: sft, logit-kd" in text and "train FLOPs" in text
    if w["objective"] == "logit-kd":
        said = " ".join(r.stdout.split())  # the console wraps long lines
        assert "--objective logit-kd" in said and f"--teacher-model {teacher_dir}" in said
