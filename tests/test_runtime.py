"""The one student runtime: evaluation and selection decode the same way; log-likelihoods are the
trainer's loss; the lm-eval style interface keeps prompt order and its settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cotdistill.evaluate import evaluate, read_predictions
from cotdistill.runtime import StudentRuntime
from cotdistill.select import score_model
from cotdistill.tasks import get_task

TRACES = "paper/SVAMP_ChatGPT_level3_ranked.json.gz"


@pytest.fixture(scope="module")
def model_dir(shared_data, tmp_path_factory) -> Path:
    from cotdistill.train import TrainConfig, train

    cfg = TrainConfig.scratch(max_steps=30, batch_size=8, learning_rate=3e-3, warmup_steps=0, threads=1)
    out = tmp_path_factory.mktemp("rt") / "model"
    return Path(train([shared_data / TRACES], "scratch:llama-xs", out, cfg, progress=False).model_dir)


@pytest.fixture(scope="module")
def items(shared_data):
    return get_task("svamp", data_dir=shared_data).load("test")[:24]


def test_select_scores_exactly_what_evaluate_answers(model_dir, items, tmp_path):
    evaluate(str(model_dir), items, out_dir=tmp_path / "ev", max_new_tokens=40, batch_size=5, progress=False)
    ev = {r["id"]: r for r in read_predictions(tmp_path / "ev" / "predictions.jsonl")}
    sel = score_model(model_dir, items, max_new_tokens=40, batch_size=7)
    assert len(sel["predictions"]) == len(items) == len(ev)
    for p in sel["predictions"]:
        e = ev[p["id"]]
        assert (p["output"], p["finish"], p["pred"], p["correct"]) == (e["output"], e["finish"], e["pred"], e["correct"])
    assert sel["accuracy"] == pytest.approx(sum(r["correct"] for r in ev.values()) / len(ev))


def test_loglikelihood_is_the_models_own_loss_and_batch_invariant(model_dir, items):
    rt = StudentRuntime.load(model_dir)
    reqs = [(rt.prompt_ids(e.question), rt.completion_ids(f"The answer is {e.answer}.", eos=True)) for e in items[:6]]
    batched = rt.loglikelihood(reqs, batch_size=6)
    single = [rt.loglikelihood([r], batch_size=1)[0] for r in reqs]
    for (a, n), (b, m), (ctx, cont) in zip(batched, single, reqs):
        assert n == m == len(cont) and a == pytest.approx(b, abs=1e-3) and a < 0
    # against transformers' own loss on the continuation tokens
    ctx, cont = reqs[0]
    ids = torch.tensor([ctx + cont], device=rt.device)
    labels = torch.tensor([[-100] * len(ctx) + cont], device=rt.device)
    with torch.no_grad():
        loss = rt.model(input_ids=ids, labels=labels).loss.item()
    assert -batched[0][0] / batched[0][1] == pytest.approx(loss, rel=1e-4)


def test_generate_until_keeps_prompt_order_and_restores_its_cap(model_dir, items):
    rt = StudentRuntime.load(model_dir, max_new_tokens=40)
    qs = [e.question for e in items[:9]]
    gens = rt.generate_until(qs, max_new_tokens=6, batch_size=4)
    assert rt.max_new_tokens == 40
    assert all(g.output_tokens <= 6 for g in gens)
    assert any(g.finish == "length" for g in gens)
    # the same prompt alone gives the same output (order kept, greedy batch-invariant)
    for q, g in zip(qs[:3], gens[:3]):
        assert rt.generate_until([q], max_new_tokens=6)[0] == g
