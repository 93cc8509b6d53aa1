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
    compare,
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

    cfg = TrainConfig.scratch(max_steps=steps, batch_size=batch, learning_rate=3e-3, warmup_steps=0, threads=1)
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
# decoding: every output runs to EOS or the cap; continuous batching changes nothing
# ------------------------------------------------------------------------------------------
def _one_at_a_time(model, tok, prompts, max_new_tokens, eos_ids=None):
    """Reference: plain ``model.generate`` on each prompt alone, to EOS or the cap."""
    import torch

    out = []
    for p in prompts:
        row = model.generate(torch.tensor([p]), max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=eos_ids or tok.eos_token_id)[0, len(p):].tolist()
        out.append(row)
    return out


@pytest.mark.slow
def test_continuous_batching_equals_one_prompt_at_a_time(smollm2, svamp_test):
    """Greedy decoding of SmolLM2-135M with 3 rows at a time over 9 real SVAMP prompts (finished
    rows are replaced by waiting prompts several times) gives exactly the tokens of
    ``model.generate`` run on each prompt alone, with exact token counts (EOS counted once, no
    padding), for rows that stop early and rows that run to the cap."""
    from cotdistill.decoding import greedy_stream

    model, tok = smollm2
    gen = HFGenerator(model, tok, PromptTemplate(kind="chat"), "greedy", 32)
    assert gen.streaming
    prompts = [gen.prompt_ids(e.question) for e in svamp_test[:9]]
    # the untuned model writes long answers: a period also ends a row here, so rows of many
    # lengths leave the batch early while others run to the cap
    stops = [*gen.eos_ids, tok.convert_tokens_to_ids(".")]
    ref = _one_at_a_time(model, tok, prompts, 14, stops)
    got = {i: (t, f) for i, t, f in greedy_stream(model, prompts, stops, 14, max_rows=3, pad_id=tok.pad_token_id)}
    assert sorted(got) == list(range(9))
    for i, r in enumerate(ref):
        toks, finish = got[i]
        assert toks == r
        assert finish == ("eos" if r[-1] in stops else "length")
    assert {f for _, f in got.values()} == {"eos", "length"}
    assert len({len(t) for t, _ in got.values()}) >= 3
    # the generator's texts and counts agree with plain generate (EOS only)
    gens = dict(gen.stream(prompts[:4], batch_size=2))
    for i, r in enumerate(_one_at_a_time(model, tok, prompts[:4], 32, gen.eos_ids)):
        assert gens[i].output_tokens == len(r)
        assert gens[i].output == tok.decode(r, skip_special_tokens=True).strip()


@pytest.mark.slow
def test_pad_equal_to_eos_counts_tokens_exactly(smollm2, svamp_test):
    """SmolLM2 ships pad id == EOS id: a padded ``model.generate`` batch counts each row's own
    tokens (its EOS once, never the padding after it), as one prompt at a time does."""
    model, tok = smollm2
    assert tok.pad_token_id == tok.eos_token_id
    gen = HFGenerator(model, tok, PromptTemplate(kind="chat"), "greedy", 14, cache_implementation="dynamic")
    gen.eos_ids = sorted({*gen.eos_ids, tok.convert_tokens_to_ids(".")})  # rows of several lengths
    prompts = [gen.prompt_ids(e.question) for e in svamp_test[:6]]
    ref = _one_at_a_time(model, tok, prompts, 14, gen.eos_ids)
    batched = gen.generate(prompts)
    assert [g.output_tokens for g in batched] == [len(r) for r in ref]
    assert len({len(r) for r in ref}) >= 2


@pytest.mark.parametrize("output, finish, pred, correct, lenient, rule", [
    ("5 + 3 = 8. The answer is 8.", "eos", "8", True, "8", "answer_is"),
    ("5 + 3 = 8. So 8 apples.", "eos", None, False, "8", "last_number"),
    ("2=1=1. 1=2. 1. 1. 3=1.", "eos", None, False, "1", "last_number"),
    ("8. 8. 8. 8. 8. 8", "length", None, False, None, "capped"),
    ("The answer is 8. The answer is 8. The answer", "length", "8", True, "8", "answer_is"),
    ("He had 12 and gave 4. The answer is 12 - 4.", "eos", "8", True, "8", "answer_is"),
    ("The answer is 4 - 3. Then the answer is 8.", "eos", "8", True, "8", "answer_is"),
    # thinking students: graded after the reasoning; an unclosed block has no answer
    ("<think>maybe the answer is 3</think>\nThe answer is 8.", "eos", "8", True, "8", "answer_is"),
    ("the template opened it; the answer is 3\n</think>\nThe answer is 8.", "eos", "8", True, "8", "answer_is"),
    ("<think>the answer is 8 ... still thinking", "length", None, False, None, "unclosed_reasoning"),
    ("<think>the answer is 3</think> So 8 apples.", "eos", None, False, "8", "last_number"),
])
def test_score_output_strict_lenient_and_capped(output, finish, pred, correct, lenient, rule):
    from cotdistill.evaluate import score_output
    from cotdistill.tasks.base import Example

    ex = Example(id="x", task="svamp", split="test", question="q", answer="8", answer_type="number")
    s = score_output(output, finish, ex)
    assert (s["pred"], s["correct"], s["pred_lenient"], s["rule"]) == (pred, correct, lenient, rule)
    assert s["correct_lenient"] == (lenient == "8")


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
        assert on_disk == json.loads(json.dumps(m))
        re = _recount(d / "predictions.jsonl", items)
        for k in ("n", "n_correct", "accuracy", "ci_low", "ci_high", "parse_failure_rate", "mean_output_tokens"):
            assert re[k] == pytest.approx(m[k]), k
        assert m["n"] == 16 and m["task"] == "svamp" and m["decoding"] == "greedy"
        assert m["template_source"] == "saved" and m["tokens_per_s"] > 0 and m["wall_s"] > 0
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
    assert g["n"] == 3 and g["task"] == "arith" and g["template_source"] == "saved"
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
    # what the run was limited to is in its files, and the summary says it
    assert m["limit"] == 3 and m["n_split"] == 300 and m["template_source"] == "saved" and m["template"] in ("chat", "plain")
    assert json.loads((tmp_path / "a" / "eval_config.json").read_text())["limit"] == 3
    assert "first 3 of the split's 300 items" in " ".join(r.stdout.split())
    # a rerun without --limit extends the same run (the limit is recorded, not part of its identity)
    r = _cli("evaluate", *[x for x in common if x not in ("--limit", "3")], "--limit", "4", "--out", str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert m["n"] == 4 and m["n_generated_this_run"] == 1 and m["limit"] == 4
    assert json.loads((tmp_path / "a" / "eval_config.json").read_text())["limit"] == 4
    # B: the same items through the Python API at batch size 1 (must agree item for item)
    evaluate(str(student_dir), get_task("svamp", data_dir=shared_data).load("test"), limit=3, max_new_tokens=8,
             batch_size=1, out_dir=tmp_path / "b", progress=False)
    r = _cli("compare", str(tmp_path / "a" / "metrics.json"), str(tmp_path / "b"), "--json")
    assert r.returncode == 0, r.stderr
    c = json.loads(r.stdout)
    assert c["n_shared"] == 3 and c["difference"] == 0.0 and c["mcnemar_p"] == 1.0
    # without a terminal and without --quiet: plain progress lines (count, rate), first and last
    r = _cli("evaluate", *[x for x in common if x != "--quiet"], "--out", str(tmp_path / "c"))
    assert r.returncode == 0, r.stderr
    assert "evaluate svamp: 0/3 items (0 %)" in r.stderr and "evaluate svamp: 3/3 items (100 %)" in r.stderr


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
    # `evaluate --config FILE` with flags on top: the flags win, validated together
    p.write_text("decoding: beam:5\nmax_new_tokens: 64\n")
    c = EvalConfig.load(p, max_new_tokens=32, batch_size=None)
    assert (c.decoding, c.max_new_tokens, c.batch_size) == ("beam:5", 32, "auto")
    with pytest.raises(UserError, match=r"eval.yaml \(with the command-line options\): field 'cache'"):
        EvalConfig.load(p, cache="warm")


def test_rescore_grades_stored_outputs_with_the_current_checker(tmp_path):
    """Outputs stored under an older checker are graded again without a model: predictions and
    metrics rewritten, the checker version recorded; the CLI does the same from the directory."""
    import subprocess
    import sys

    from cotdistill import answers
    from cotdistill.evaluate import rescore
    from cotdistill.tasks import get_task

    exs = get_task("arith").load("test")[:4]
    d = tmp_path / "ev"
    d.mkdir()
    outs = [f"So the answer is {exs[0].answer}.", f"The answer is {exs[1].answer}.",
            f"{exs[2].answer}", "The answer is 4 - x."]
    rows = [{"id": e.id, "question": e.question, "gold": e.answer, "output": o, "pred": None, "correct": False,
             "output_tokens": 5, "finish": "eos"} for e, o in zip(exs, outs)]
    (d / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "metrics.json").write_text(json.dumps({"task": "arith", "split": "test", "accuracy": 0.0,
                                                "answer_checker": "0", "tokens_per_s": 12.5}))
    m = rescore(d, exs)
    assert m["answer_checker"] == answers.VERSION and m["tokens_per_s"] == 12.5
    got = [json.loads(x) for x in (d / "predictions.jsonl").read_text().splitlines()]
    assert [r["correct"] for r in got] == [True, True, True, False]
    assert m["accuracy"] == 0.75 and m["n_no_answer"] == 1
    with pytest.raises(UserError, match="not among the examples"):
        rescore(d, exs[:2])
    (d / "metrics.json").write_text(json.dumps({"task": "arith", "split": "test", "accuracy": 0.0, "answer_checker": "0"}))
    r = subprocess.run([sys.executable, "-m", "cotdistill", "rescore", str(d)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "accuracy 75.00 % (was 0.00 %)" in r.stdout
    assert json.loads((d / "metrics.json").read_text())["answer_checker"] == answers.VERSION


def test_select_scores_exactly_as_evaluate_does(student_dir, svamp_test, tmp_path):
    """One student runtime: select's validation scoring decodes and grades the same items to the
    same outputs, finish reasons and verdicts as `cotdistill evaluate`."""
    from cotdistill.select import score_model

    items = svamp_test[:12]
    m = evaluate(str(student_dir), items, out_dir=tmp_path / "e", max_new_tokens=40, progress=False)
    ev = {r["id"]: r for r in read_predictions(tmp_path / "e")}
    sc = score_model(student_dir, items, max_new_tokens=40, batch_size=5)
    assert len(sc["predictions"]) == 12
    for p in sc["predictions"]:
        r = ev[p["id"]]
        assert (p["output"], p["finish"], p["pred"], p["correct"]) == (r["output"], r["finish"], r["pred"], r["correct"])
    assert sc["accuracy"] == m["accuracy"]


# ------------------------------------------------------------------------------------------
# the generation cap
# ------------------------------------------------------------------------------------------
def test_max_new_tokens_defaults_from_the_training_lengths(shared_data, student_dir, svamp_test, tmp_path):
    """Unset, the cap is 1.5 x the longest completion the model was trained on + 16, measured on
    the real traces with the saved tokenizer and template; a model without training lengths gets
    512; a bad value is one line, exit 2."""
    import shutil

    from transformers import AutoTokenizer

    from cotdistill.collate import encode_example
    from cotdistill.train import load_traces

    tok = AutoTokenizer.from_pretrained(student_dir)
    tpl = PromptTemplate.load(student_dir)
    longest = max(
        sum(1 for x in encode_example(tpl.render_prompt(t.question, tok), tpl.render_completion(t.output), tok, 4096)["labels"]
            if x != -100)
        for t in load_traces([shared_data / TRACES]))
    assert json.loads((student_dir / "train_summary.json").read_text())["longest_completion_tokens"] == longest
    m = evaluate(str(student_dir), svamp_test[:2], out_dir=tmp_path / "auto", progress=False)
    assert m["max_new_tokens"] == int(1.5 * longest) + 16
    assert f"({longest})" in m["max_new_tokens_source"]
    rows = [json.loads(x) for x in (tmp_path / "auto" / "predictions.jsonl").read_text().splitlines()]
    assert all(r["output_tokens"] <= m["max_new_tokens"] for r in rows)
    assert all(r["finish"] == "eos" or r["output_tokens"] == m["max_new_tokens"] for r in rows)
    # rerun with the default resumes the same evaluation (the cap resolves the same way)
    again = evaluate(str(student_dir), svamp_test[:2], out_dir=tmp_path / "auto", progress=False)
    assert again["n_generated_this_run"] == 0
    bare = tmp_path / "bare"
    shutil.copytree(student_dir, bare)
    (bare / "train_summary.json").unlink()
    m2 = evaluate(str(bare), svamp_test[:1], progress=False)
    assert m2["max_new_tokens"] == 512 and "default 512" in m2["max_new_tokens_source"]
    assert evaluate(str(student_dir), svamp_test[:1], max_new_tokens=7, progress=False)["max_new_tokens"] == 7
    for bad in ("0", "many", "2.5"):
        r = subprocess.run([sys.executable, "-m", "cotdistill", "evaluate", "--model", str(student_dir), "--task", "svamp",
                            "--out", str(tmp_path / f"bad{bad}"), "--max-new-tokens", bad, "--data-dir", str(shared_data)],
                           capture_output=True, text=True)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "--max-new-tokens" in r.stderr and "auto or a positive integer" in r.stderr
        assert not (tmp_path / f"bad{bad}").exists()


def test_instruction_and_fewshot_baseline_use_the_train_split_only(student_dir, shared_data, svamp_test, tmp_path):
    """An untuned model's fair baseline: the answer form asked for, and solved train examples shown
    before each question; both are part of the evaluation's identity and its recorded template."""
    r = _cli("evaluate", "--model", str(student_dir), "--task", "svamp", "--data-dir", str(shared_data), "--limit", "2",
             "--max-new-tokens", "4", "--quiet", "--instruction", "answer", "--fewshot", "3", "--out", str(tmp_path / "fs"))
    assert r.returncode == 0, r.stderr
    rec = json.loads((tmp_path / "fs" / "eval_config.json").read_text())
    tpl = rec["template"]
    assert tpl["instruction"].startswith("Solve the problem step by step") and len(tpl["exemplars"]) == 3
    train_q = {e.question: e.answer for e in get_task("svamp", data_dir=shared_data).load("train")}
    test_q = {e.question for e in svamp_test}
    for q, a in tpl["exemplars"]:
        assert q in train_q and q not in test_q and a == f"The answer is {train_q[q]}."
    m = json.loads((tmp_path / "fs" / "metrics.json").read_text())
    assert m["template_source"] == "saved + instruction + 3-shot"
    from cotdistill.template import PromptTemplate

    text = PromptTemplate(**tpl).render_prompt(svamp_test[0].question)
    assert text.count("Solve the problem step by step") == 4 and tpl["exemplars"][0][0] in text
    # the same directory with another prompt is another evaluation: refused, not mixed
    r = _cli("evaluate", "--model", str(student_dir), "--task", "svamp", "--data-dir", str(shared_data), "--limit", "2",
             "--max-new-tokens", "4", "--quiet", "--out", str(tmp_path / "fs"))
    assert r.returncode == 2 and "another evaluation" in r.stderr
    r = _cli("evaluate", "--model", str(student_dir), "--task", "svamp", "--data-dir", str(shared_data), "--split", "train",
             "--limit", "2", "--fewshot", "2", "--out", str(tmp_path / "tr"))
    assert r.returncode == 2 and "train split" in r.stderr
