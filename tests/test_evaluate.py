"""Evaluation harness: a tiny scratch student trained on real SVAMP traces, evaluated end to end on
the real SVAMP test split; batch invariance of greedy decoding; metrics recounted from the
predictions file; resume; paired comparison; CLI behaviour (real subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cotdistill import answers
from cotdistill.errors import UserError
from cotdistill.evaluate import (
    EvalConfig,
    HFGenerator,
    _stopping_criterion,
    answer_done,
    compare,
    cut_after_answer,
    evaluate,
    read_predictions,
    summarize,
)
from cotdistill.stats import bootstrap_ci, mcnemar_exact, paired_bootstrap_ci
from cotdistill.tasks import get_task
from cotdistill.template import PromptTemplate

TRACES = "paper/SVAMP_llama_level1_ranked.json.gz"


# ------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------
def _train_tiny_student(traces_path: Path, out: Path, steps: int = 40, batch: int = 8) -> Path:
    """A scratch llama-xs trained by ``cotdistill.train.train`` for a few dozen steps on real SVAMP
    traces (saved with tokenizer and prompt template, as every trained model is)."""
    from cotdistill.train import TrainConfig, train

    cfg = TrainConfig.scratch(max_steps=steps, batch_size=batch, learning_rate=1e-2, warmup_steps=0, threads=1)
    return Path(train([traces_path], "scratch:llama-xs", out, cfg, progress=False).model_dir)


@pytest.fixture(scope="session")
def student_dir(shared_data, tmp_path_factory) -> Path:
    return _train_tiny_student(shared_data / TRACES, tmp_path_factory.mktemp("student") / "model")


@pytest.fixture(scope="session")
def svamp_test(shared_data):
    return get_task("svamp", data_dir=shared_data).load("test")


# ------------------------------------------------------------------------------------------
# statistics
# ------------------------------------------------------------------------------------------
def test_bootstrap_ci_deterministic_and_sane():
    x = [1] * 70 + [0] * 30
    lo, hi = bootstrap_ci(x)
    assert (lo, hi) == bootstrap_ci(x)  # fixed seed
    assert 0.6 < lo < 0.7 < hi < 0.8
    # normal approximation: half-width ~ 1.96 * sqrt(.21/100) = 0.0898
    assert abs((hi - lo) / 2 - 0.0898) < 0.012
    assert bootstrap_ci([1, 1, 1]) == (1.0, 1.0)


def test_mcnemar_exact_known_values():
    # only_b = 5, only_a = 0 -> p = 2 * (1/2)^5
    r = mcnemar_exact([0] * 5 + [1] * 3, [1] * 5 + [1] * 3)
    assert (r["only_a"], r["only_b"]) == (0, 5)
    assert r["p_value"] == pytest.approx(0.0625)
    # 1 vs 9 discordant: 2 * (C(10,0) + C(10,1)) / 2^10
    a = [1] + [0] * 9
    b = [0] + [1] * 9
    assert mcnemar_exact(a, b)["p_value"] == pytest.approx(22 / 1024)
    assert mcnemar_exact([1, 0], [1, 0])["p_value"] == 1.0
    # large n stays finite and symmetric
    big = mcnemar_exact([1] * 600 + [0] * 400, [0] * 600 + [1] * 400)
    assert 0 < big["p_value"] < 1e-9


def test_paired_bootstrap_interval_of_difference():
    a = [1] * 50 + [0] * 50
    b = [1] * 50 + [1] * 20 + [0] * 30  # b adds 20 correct items
    lo, hi = paired_bootstrap_ci(a, b)
    assert lo > 0.1 and hi < 0.3 and lo < 0.2 < hi
    assert paired_bootstrap_ci(a, a) == (0.0, 0.0)


# ------------------------------------------------------------------------------------------
# stopping rule
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, done, cut",
    [
        ("5*2=10. The answer is 26. Question: next", True, "5*2=10. The answer is 26."),
        ("The answer is 26.\nQuestion", True, "The answer is 26."),
        ("The answer is 26\nmore", True, "The answer is 26"),
        ("The answer is 14.5", False, None),  # may still be growing
        ("The answer is 14.", False, None),  # could become 14.5
        ("The answer is 14.5. ", True, "The answer is 14.5."),
        ("The answer is\n", False, None),  # no answer yet
        ("The answer is: (B).\n", True, "The answer is: (B)."),
        ("the answer is True. ", True, "the answer is True."),
        ("We add 3 and 4. So 7. ", False, None),
        ("The final answer is $\\frac{1}{2}$. ", True, "The final answer is $\\frac{1}{2}$."),
    ],
)
def test_answer_line_rule(text, done, cut):
    assert answer_done(text) is done
    got, was_cut = cut_after_answer(text)
    assert was_cut is done
    if done:
        assert got == cut


def test_stop_rule_cuts_real_teacher_outputs(shared_data):
    """Every released GPT-4o level-3 SVAMP rationale + a continuation is cut back to the rationale
    (modulo a missing final period) and scores like the original."""
    import gzip

    rows = json.load(gzip.open(shared_data / "paper/SVAMP_ChatGPT_level3_ranked.json.gz", "rt"))[:200]
    n_cut = 0
    for r in rows:
        out = r["output"].strip()
        text, cut = cut_after_answer(out + ".\nQuestion: something else. The answer is 0.")
        assert cut
        n_cut += 1
        assert text.startswith(out[: out.find("The answer is")] if "The answer is" in out else "")
        assert answers.extract(text, "number") == answers.extract(out, "number")
    assert n_cut == 200


def test_stopping_criterion_per_row_with_real_tokenizer(student_dir):
    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(student_dir)
    prompt = tok("Question: q\nAnswer:", add_special_tokens=False)["input_ids"]
    gens = [" 3+4=7. The answer is 7. Q", " 3+4=7. The answer is 7", " The answer is 7.5"]
    rows = [prompt + tok(g, add_special_tokens=False)["input_ids"] for g in gens]
    T = max(map(len, rows))
    ids = torch.tensor([r + [tok.pad_token_id] * (T - len(r)) for r in rows])
    crit = _stopping_criterion(tok, len(prompt))
    assert crit(ids, None).tolist() == [True, False, False]


# ------------------------------------------------------------------------------------------
# end to end on the real SVAMP test split
# ------------------------------------------------------------------------------------------
def _recount(pred_path: Path, examples) -> dict:
    rows = read_predictions(pred_path)
    by_id = {e.id: e for e in examples}
    for r in rows:  # stored scores agree with a fresh scoring of the stored output
        ex = by_id[r["id"]]
        pred, ok = answers.correct(r["output"], ex.answer, ex.answer_type, choices=ex.choices)
        assert (pred, ok) == (r["pred"], r["correct"])
        assert r["gold"] == ex.answer and r["question"] == ex.question
    return summarize(rows)


@pytest.mark.slow
def test_end_to_end_batch_invariance_and_recount(student_dir, svamp_test, tmp_path):
    items = svamp_test[:16]
    outs = {}
    for bs in (16, 1):
        d = tmp_path / f"bs{bs}"
        m = evaluate(str(student_dir), items, out_dir=d, batch_size=bs, max_new_tokens=48, progress=False)
        rows = read_predictions(d / "predictions.jsonl")
        assert sorted(r["id"] for r in rows) == sorted(e.id for e in items)
        outs[bs] = {r["id"]: (r["output"], r["pred"], r["output_tokens"]) for r in rows}
        on_disk = json.loads((d / "metrics.json").read_text())
        assert on_disk == pytest.approx(m) or on_disk == json.loads(json.dumps(m))
        re = _recount(d / "predictions.jsonl", items)
        for k in ("n", "n_correct", "accuracy", "ci_low", "ci_high", "parse_failure_rate", "mean_output_tokens"):
            assert re[k] == pytest.approx(m[k]), k
        assert m["n"] == 16 and m["task"] == "svamp" and m["decoding"] == "greedy"
        assert m["template"] == "saved" and m["tokens_per_s"] > 0 and m["wall_s"] > 0
        assert m["ci_low"] <= m["accuracy"] <= m["ci_high"]
    # left padding changes nothing: identical greedy outputs at batch 1 and 16
    assert outs[1] == outs[16]
    # and the check is not vacuous: outputs depend on the prompt
    assert len({o for o, _, _ in outs[1].values()}) > 4


@pytest.mark.slow
def test_resume_skips_done_ids_and_repairs_torn_line(student_dir, svamp_test, tmp_path):
    items = svamp_test[:8]
    full = evaluate(str(student_dir), items, out_dir=tmp_path / "full", batch_size=4, max_new_tokens=24, progress=False)
    d = tmp_path / "resumed"
    first = evaluate(str(student_dir), items[:5], out_dir=d, batch_size=4, max_new_tokens=24, progress=False)
    assert first["n"] == 5 and first["n_generated_this_run"] == 5
    # simulate a crash in the middle of writing a line
    with open(d / "predictions.jsonl", "a") as f:
        f.write('{"id": "svamp-half')
    second = evaluate(str(student_dir), items, out_dir=d, batch_size=4, max_new_tokens=24, progress=False)
    assert second["n"] == 8 and second["n_generated_this_run"] == 3
    a = {r["id"]: r for r in read_predictions(tmp_path / "full")}
    b = {r["id"]: r for r in read_predictions(d)}
    assert a == b
    assert second["accuracy"] == full["accuracy"]
    # a rerun with nothing left to do generates nothing
    third = evaluate(str(student_dir), items, out_dir=d, batch_size=4, max_new_tokens=24, progress=False)
    assert third["n_generated_this_run"] == 0 and third["n"] == 8
    # other settings in the same directory are refused, not mixed in
    with pytest.raises(UserError, match="max_new_tokens"):
        evaluate(str(student_dir), items, out_dir=d, max_new_tokens=25, progress=False)
    # --overwrite starts over
    fresh = evaluate(str(student_dir), items[:2], out_dir=d, max_new_tokens=25, progress=False, overwrite=True)
    assert fresh["n"] == 2 and len(read_predictions(d)) == 2


def test_loaded_model_any_task_and_beam(student_dir, tmp_path):
    """Python API with a loaded model and examples from the procedural arith task; beam:1 equals
    greedy; beam:3 runs; no files without out_dir."""
    from cotdistill.students import load_pretrained

    model, tok = load_pretrained(str(student_dir))
    items = get_task("arith").load("test")[:3]
    g = evaluate(model, items, tokenizer=tok, max_new_tokens=12, progress=False)
    assert g["n"] == 3 and g["task"] == "arith" and g["template"] == "saved"
    c = evaluate(model, items, tokenizer=tok, config=EvalConfig(max_new_tokens=4, batch_size=2), progress=False)
    assert (c["max_new_tokens"], c["batch_size"]) == (4, 2) and c["mean_output_tokens"] <= 4
    gen1 = HFGenerator(model, tok, PromptTemplate(), "greedy", 12, cache_implementation="dynamic")
    gens = HFGenerator(model, tok, PromptTemplate(), "greedy", 12, cache_implementation="static")
    genb = HFGenerator(model, tok, PromptTemplate(), "beam:1", 12)
    prompts = [gen1.prompt_ids(e.question) for e in items]
    ref = gen1.generate(prompts)
    assert ref == gens.generate(prompts) == genb.generate(prompts)
    # auto switches to the static cache once outputs fill the cap (this student never stops in 12 tokens)
    gena = HFGenerator(model, tok, PromptTemplate(), "greedy", 12, cache_implementation="auto")
    assert not gena._use_static and gena.generate(prompts) == ref and gena._use_static
    beam = evaluate(model, items, tokenizer=tok, decoding="beam:3", max_new_tokens=8, out_dir=tmp_path / "b", progress=False)
    assert beam["decoding"] == "beam:3"
    assert all(r["output_tokens"] <= 8 for r in read_predictions(tmp_path / "b"))


def test_bad_inputs_are_one_line_user_errors(student_dir, svamp_test, tmp_path):
    with pytest.raises(UserError, match="beam:N"):
        evaluate(str(student_dir), svamp_test[:1], decoding="nucleus", progress=False)
    with pytest.raises(UserError, match="unknown template"):
        evaluate(str(student_dir), svamp_test[:1], template="nope", progress=False)
    with pytest.raises(UserError, match="duplicate example id"):
        evaluate(str(student_dir), [svamp_test[0], svamp_test[0]], progress=False)
    with pytest.raises(UserError, match="not a model directory"):
        evaluate(str(tmp_path), svamp_test[:1], progress=False)
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match=r"pip install 'cotdistill\[vllm\]'"):
            evaluate(str(student_dir), svamp_test[:1], backend="vllm", out_dir=tmp_path / "v", progress=False)
        assert not (tmp_path / "v").exists()  # nothing written


def test_compare_paired(tmp_path):
    def write(d, correct):
        d.mkdir()
        with open(d / "predictions.jsonl", "w") as f:
            for i, c in enumerate(correct):
                f.write(json.dumps({"id": f"x{i}", "output": "", "pred": None, "correct": bool(c)}) + "\n")
        (d / "metrics.json").write_text("{}")

    write(tmp_path / "a", [1] * 40 + [0] * 60)
    write(tmp_path / "b", [1] * 40 + [1] * 12 + [0] * 47 + [1])  # 13 more right, none fewer
    r = compare(tmp_path / "a" / "metrics.json", tmp_path / "b")
    assert r["n_shared"] == 100
    assert r["difference"] == pytest.approx(0.13)
    assert (r["only_a_correct"], r["only_b_correct"]) == (0, 13)
    assert r["mcnemar_p"] == pytest.approx(2 / 2**13)
    assert 0 < r["ci_low"] < 0.13 < r["ci_high"]
    with pytest.raises(UserError, match="no predictions.jsonl"):
        compare(tmp_path / "a", tmp_path / "missing")


# ------------------------------------------------------------------------------------------
# CLI (real subprocesses)
# ------------------------------------------------------------------------------------------
def _cli(*args, env=None):
    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "cotdistill", *args], capture_output=True, text=True, env=e, timeout=300)


@pytest.mark.slow
def test_cli_evaluate_then_compare(student_dir, shared_data, tmp_path):
    common = ["--model", str(student_dir), "--task", "svamp", "--data-dir", str(shared_data),
              "--limit", "3", "--max-new-tokens", "8", "--quiet", "--threads", "1"]
    r = _cli("evaluate", *common, "--out", str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr
    assert "accuracy" in r.stdout
    m = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert m["n"] == 3 and m["split"] == "test" and m["max_new_tokens"] == 8
    # B: the same items through the Python API at batch size 1 (must agree item for item)
    evaluate(str(student_dir), get_task("svamp", data_dir=shared_data).load("test"), limit=3, max_new_tokens=8,
             batch_size=1, out_dir=tmp_path / "b", progress=False)
    r = _cli("compare", str(tmp_path / "a" / "metrics.json"), str(tmp_path / "b"), "--json")
    assert r.returncode == 0, r.stderr
    c = json.loads(r.stdout)
    assert c["n_shared"] == 3 and c["difference"] == 0.0 and c["mcnemar_p"] == 1.0


def test_cli_errors_are_one_line(student_dir, tmp_path):
    r = _cli("evaluate", "--model", str(student_dir), "--task", "svamp", "--out", str(tmp_path / "o"),
             "--batch-size", "zero")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1
    r = _cli("compare", str(tmp_path / "nope"), str(tmp_path / "nope2"))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "error:" in r.stderr


def test_hub_name_offline_fails_fast_with_hint(shared_data, tmp_path):
    t0 = time.perf_counter()
    r = _cli("evaluate", "--model", "meta-llama/Llama-3.2-1B", "--task", "svamp", "--data-dir", str(shared_data),
             "--limit", "1", "--out", str(tmp_path / "o"), "--quiet",
             env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--local-dir" in r.stderr and "--model" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert time.perf_counter() - t0 < 120  # no minutes of hub retries


def test_hub_probe_is_quick():
    from cotdistill.evaluate import hub_reachable

    t0 = time.perf_counter()
    hub_reachable(timeout=2.0)
    assert time.perf_counter() - t0 < 10


def test_eval_config_yaml(tmp_path):
    p = tmp_path / "eval.yaml"
    p.write_text("decoding: beam:5\nmax_new_tokens: 64\nbatch_size: 8\n")
    c = EvalConfig.from_yaml(p)
    assert (c.decoding, c.max_new_tokens, c.batch_size, c.cache) == ("beam:5", 64, 8, "auto")
    p.write_text("decodng: beam:5\n")
    with pytest.raises(UserError, match=r"eval.yaml: unknown key 'decodng'"):
        EvalConfig.from_yaml(p)
    p.write_text("decoding: nucleus\n")
    with pytest.raises(UserError, match=r"eval.yaml: field 'decoding'.*beam:N"):
        EvalConfig.from_yaml(p)
