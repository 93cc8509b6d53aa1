"""Student training on real SVAMP traces with tiny scratch students (CPU, seconds each)."""

from __future__ import annotations

import gzip
import json
import os
import signal
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cotdistill.collate import (IGNORE, PackingCollator, PaddingCollator, TargetHead, encode_example, pack_rows,
                                packing_mode, target_head)
from cotdistill.errors import UserError
from cotdistill.students import make_scratch_student
from cotdistill.template import PromptTemplate
from cotdistill.traces import Trace, write_traces
from cotdistill.train import COMPLETE, TrainConfig, is_complete, load_traces, train

PAPER_FILE = "paper/SVAMP_gemini_level3_ranked.json.gz"


def svamp(shared: Path, n: int, shortest: bool = True) -> list[Trace]:
    rows = json.load(gzip.open(shared / PAPER_FILE, "rt"))
    idx = list(range(len(rows)))
    if shortest:
        idx.sort(key=lambda i: (len(rows[i]["instruction"]) + len(rows[i]["output"]), i))
    return [
        Trace(id=str(i), task="svamp", question=rows[i]["instruction"], gold="", teacher="gemini",
              level=3, output=rows[i]["output"], source=PAPER_FILE)
        for i in idx[:n]
    ]


def tiny_cfg(**kw) -> TrainConfig:
    base = dict(max_steps=20, batch_size=8, warmup_steps=3, logging_steps=2, save_steps=1000,
                threads=1, pack_length=512)
    base.update(kw)
    return TrainConfig.scratch(**base)


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "cotdistill", *args], capture_output=True, text=True, **kw)


# ------------------------------------------------------------------------------------------
# labels and packing
# ------------------------------------------------------------------------------------------
def test_labels_are_ignored_exactly_on_prompt_and_padding(shared_data):
    traces = svamp(shared_data, 6)
    tpl = PromptTemplate()
    texts = [tpl.render_prompt(t.question) + tpl.render_completion(t.output) for t in traces]
    _, tok = make_scratch_student("scratch:llama-xxs", texts)
    encs = []
    for t in traces:
        p, c = tpl.render_prompt(t.question), tpl.render_completion(t.output)
        e = encode_example(p, c, tok, 4096)
        n_p = len(tok(p)["input_ids"])
        assert e["labels"][:n_p] == [IGNORE] * n_p
        assert e["labels"][n_p:] == e["input_ids"][n_p:]
        assert e["input_ids"][-1] == tok.eos_token_id
        assert tok.decode(e["input_ids"][n_p:-1]) == c
        encs.append((e, n_p))
    feats = [e for e, _ in encs]
    for coll in (PackingCollator(tok.pad_token_id, 400), PaddingCollator(tok.pad_token_id)):
        b = coll(feats)
        is_target = b["labels"] != IGNORE
        # every target token is a completion token and every completion token is a target
        n_completion = sum(len(e["input_ids"]) - n_p for e, n_p in encs)
        assert int(is_target.sum()) == n_completion
        assert int(b["n_tokens"]) == sum(len(e["input_ids"]) for e in feats)
        # padding positions carry the pad id and no target
        if "attention_mask" in b and b["attention_mask"].dim() == 2:
            assert not is_target[b["attention_mask"] == 0].any()
    # truncation at the cutoff
    e = encode_example("Question: x\nAnswer:", " " + "y" * 50, tok, 16)
    assert len(e["input_ids"]) == 16


@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_packed_example_logits_equal_example_alone(shared_data, family):
    every = svamp(shared_data, 700)
    traces = every[:4] + every[-4:]  # short and long examples: packing pairs them up
    tpl = PromptTemplate()
    texts = [tpl.render_prompt(t.question) + tpl.render_completion(t.output) for t in traces]
    model, tok = make_scratch_student(f"scratch:{family}-xxs", texts, seed=1)
    model.eval()
    assert packing_mode(model) == "bool"
    feats = [encode_example(tpl.render_prompt(t.question), tpl.render_completion(t.output), tok, 4096) for t in traces]
    b = PackingCollator(tok.pad_token_id, 1024, "bool")(feats)
    assert b["input_ids"].shape[0] < len(feats)  # really packed
    b.pop("n_tokens")
    labels = b.pop("labels")
    with torch.no_grad():
        packed = model(**b).logits
        worst = 0.0
        for r in range(packed.shape[0]):
            starts = (b["position_ids"][r] == 0).nonzero().flatten().tolist()
            for s in starts:
                ids = b["input_ids"][r, s:]
                n = next((len(f["input_ids"]) for f in feats if f["input_ids"] == ids[: len(f["input_ids"])].tolist()), None)
                if n is None:
                    continue  # the padding tail
                alone = model(input_ids=ids[:n][None]).logits[0]
                worst = max(worst, (packed[r, s : s + n] - alone).abs().max().item())
    assert worst < 1e-5
    # without the 4-D mask (position ids only) packed examples leak into each other
    with torch.no_grad():
        leaky = model(input_ids=b["input_ids"], position_ids=b["position_ids"]).logits
    assert (leaky - packed).abs().max().item() > 1e-3
    assert labels.shape == b["input_ids"].shape


def test_row_length_balances_padding_against_dense_attention():
    """With a 4-D mask attention is dense over a row, so the collator packs into rows about as long
    as the longest example instead of filling pack_length; with position ids (varlen attention) it
    fills pack_length. Every example lands in exactly one row either way."""
    lengths = [400] * 4 + [50] * 28
    feats = [{"input_ids": list(range(1, n + 1)), "labels": list(range(1, n + 1))} for n in lengths]
    dense = PackingCollator(0, 4096, "bool", hidden_size=128)
    rows, T = dense.layout(lengths)
    assert T == 400 and len(rows) == 8  # 4 long rows + 28 short examples 8 to a row
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    def cost(rows, T):
        return len(rows) * T * (1 + T / (6 * 128))
    long_rows = pack_rows(lengths, 4096)
    assert cost(rows, T) < cost(long_rows, max(sum(lengths[i] for i in r) for r in long_rows)) / 2
    varlen_rows, varlen_T = PackingCollator(0, 4096, "position_ids", hidden_size=128).layout(lengths)
    assert len(varlen_rows) == 1 and varlen_T == sum(lengths)
    b = dense(feats)
    assert b["input_ids"].shape == (8, 400) and b["attention_mask"].shape == (8, 1, 400, 400)
    assert int(b["n_tokens"]) == sum(lengths) == int((b["labels"] != IGNORE).sum())


def test_one_example_per_row_needs_no_mask_and_matches_each_example_alone(shared_data):
    """Examples too long to share a row are laid out one per row, right-padded, with no 4-D mask
    (sdpa's causal path): each example's logits equal the example run alone."""
    traces = svamp(shared_data, 400)[-8:]  # similar lengths, none short
    tpl = PromptTemplate()
    texts = [tpl.render_prompt(t.question) + tpl.render_completion(t.output) for t in traces]
    model, tok = make_scratch_student("scratch:llama-xxs", texts, seed=2)
    model.eval()
    feats = [encode_example(tpl.render_prompt(t.question), tpl.render_completion(t.output), tok, 4096) for t in traces]
    top = max(len(f["input_ids"]) for f in feats)
    feats = [f for f in feats if 2 * len(f["input_ids"]) > top + 10]  # no two fit in one row
    lengths = [len(f["input_ids"]) for f in feats]
    assert len(feats) >= 3 and len(set(lengths)) > 1  # really padded
    b = PackingCollator(tok.pad_token_id, max(lengths) + 10, "bool", hidden_size=model.config.hidden_size)(feats)
    assert "attention_mask" not in b and b["input_ids"].shape == (len(feats), max(lengths))
    with torch.no_grad():
        out = model(input_ids=b["input_ids"], position_ids=b["position_ids"]).logits
        for r, f in enumerate(feats):
            n = len(f["input_ids"])
            assert b["input_ids"][r, :n].tolist() == f["input_ids"]
            alone = model(input_ids=torch.tensor([f["input_ids"]])).logits[0]
            assert (out[r, :n] - alone).abs().max().item() < 1e-5


def test_packed_examples_attend_per_example_on_a_wide_model_and_padding_masks_still_apply():
    """A model wide enough for per-example attention on a CPU (hidden 512, grouped-query heads):
    `packing_mode` picks it, rows are filled and carry the examples' boundaries, and every packed
    example's logits equal the example run alone. With a padding mask (left-padded sampling, padded
    completion batches) the same attention gives sdpa's logits and greedy continuations."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from cotdistill.train import _cpu_attention

    torch.manual_seed(0)
    conf = LlamaConfig(vocab_size=96, hidden_size=512, intermediate_size=256, num_hidden_layers=2,
                       num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=256)
    conf._attn_implementation = "sdpa"
    model = LlamaForCausalLM(conf).eval()
    ids = torch.randint(4, 90, (3, 11))
    att = torch.ones(3, 11, dtype=torch.long)
    att[1, :4] = 0
    att[2, :7] = 0
    with torch.no_grad():
        plain = model(input_ids=ids, attention_mask=att).logits
        plain_gen = model.generate(input_ids=ids, attention_mask=att, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert _cpu_attention(model, TrainConfig.default(), "cpu") == "sdpa"
    assert packing_mode(model, segments=True) == "segments"
    with torch.no_grad():
        ours = model(input_ids=ids, attention_mask=att).logits
        assert torch.equal(model.generate(input_ids=ids, attention_mask=att, max_new_tokens=4, do_sample=False,
                                          pad_token_id=0), plain_gen)
    keep = att.bool()
    assert (ours[keep] - plain[keep]).abs().max().item() < 1e-4
    lengths = [23, 5, 40, 17, 9, 31]
    feats = [{"input_ids": torch.randint(4, 90, (n,)).tolist(), "labels": [IGNORE] + [1] * (n - 1)} for n in lengths]
    b = PackingCollator(0, 64, "segments", hidden_size=512)(feats)
    assert b["input_ids"].shape[0] < len(feats) and "attention_mask" not in b
    assert b["cu_seq_lens_q"].tolist()[-1] == b["input_ids"].numel()
    b.pop("n_tokens"), b.pop("labels")
    with torch.no_grad():
        packed = model(**b).logits
        worst, seen = 0.0, 0
        for r in range(packed.shape[0]):
            starts = (b["position_ids"][r] == 0).nonzero().flatten().tolist()
            for s in starts:
                f = next((f for f in feats if f["input_ids"] == b["input_ids"][r, s:s + len(f["input_ids"])].tolist()), None)
                if f is None:
                    continue  # the padding tail
                alone = model(input_ids=torch.tensor([f["input_ids"]])).logits[0]
                worst = max(worst, (packed[r, s:s + len(f["input_ids"])] - alone).abs().max().item())
                seen += 1
    assert seen == len(feats) and worst < 1e-4


def test_cpu_attention_runs_in_fp32_per_example_and_the_saved_model_keeps_sdpa(shared_data, tmp_path):
    """Training attention on a CPU: float32 under bf16 autocast; with the packed examples'
    boundaries (cu_seq_lens) each example attends only to itself, equal in values and gradients to
    sdpa with the dense block-causal mask (grouped-query heads, examples of mixed lengths, a
    padding tail); without them, plain sdpa. Recorded in the summary; the saved model loads with sdpa."""
    from transformers import AutoModelForCausalLM
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from cotdistill.collate import block_causal_mask, segment_kwargs
    from cotdistill.train import _cpu_sdpa

    g = torch.Generator().manual_seed(0)
    module = torch.nn.Module()
    module.is_causal, module.num_key_value_groups, module.scaling = True, 3, 0.125
    rows = [[5, 17, 9, 3], [30, 4]]  # per row: example lengths, the last one of row 0 a padding tail
    T = 34
    q = torch.randn(2, 6, T, 16, generator=g).requires_grad_()
    k, v = (torch.randn(2, 2, T, 16, generator=g).requires_grad_() for _ in range(2))
    seg = torch.tensor([sum(([i] * n for i, n in enumerate(r)), []) for r in rows])
    spans = [n for r in rows for n in r]
    out, _ = _cpu_sdpa(module, q, k, v, None, scaling=0.125, **segment_kwargs(spans))
    ref, _ = sdpa_attention_forward(module, q, k, v, block_causal_mask(seg), scaling=0.125)
    assert out.shape == ref.shape == (2, T, 6, 16)
    assert torch.allclose(out, ref, atol=1e-5)
    w = torch.randn(out.shape, generator=g)
    grads = torch.autograd.grad((out * w).sum(), (q, k, v))
    want = torch.autograd.grad((ref * w).sum(), (q, k, v))
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads, want))
    module.num_key_value_groups = 1
    q, k, v = (torch.randn(2, 4, 9, 32, generator=g).bfloat16().requires_grad_() for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = _cpu_sdpa(module, q, k, v, None)
    ref, _ = sdpa_attention_forward(module, q.float(), k.float(), v.float(), None)
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), ref.to(torch.bfloat16).float(), atol=1e-2)
    out.float().sum().backward()
    assert q.grad is not None and q.grad.abs().sum() > 0

    res = train(svamp(shared_data, 16), "scratch:llama-xxs", tmp_path / "m",
                tiny_cfg(max_steps=3, batch_size=4, precision="bf16"), progress=False)
    assert res.summary["attention"] == "sdpa (fp32 on CPU)"
    assert "cotdistill" not in (tmp_path / "m" / "config.json").read_text()
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert model.config._attn_implementation == "sdpa"
    fp32 = train(svamp(shared_data, 16), "scratch:llama-xxs", tmp_path / "f",
                 tiny_cfg(max_steps=3, batch_size=4, precision="fp32"), progress=False)
    assert fp32.summary["attention"] == "sdpa"


def test_bloom_falls_back_to_padding_and_eager_llama_gets_float_mask(shared_data):
    texts = [t.question for t in svamp(shared_data, 4)]
    bloom, _ = make_scratch_student("scratch:bloom-xxs", texts)
    assert packing_mode(bloom) is None  # ALiBi is built from a 2-D mask: no packing
    llama, _ = make_scratch_student("scratch:llama-xxs", texts)
    llama.config._attn_implementation = "eager"
    assert packing_mode(llama) == "float"


def test_target_head_gives_the_models_own_loss_and_gradients(shared_data):
    """The LM head on target positions only: the same loss and the same gradients as the model's
    full-logits loss, on a packed batch of real traces; an architecture that reshapes the head's
    output is detected and keeps the full logits."""
    from transformers import LlamaForCausalLM

    texts = [t.question for t in svamp(shared_data, 8)]
    model, tok = make_scratch_student("scratch:llama-xxs", texts)
    tpl = PromptTemplate()
    feats = [encode_example(tpl.render_prompt(t.question), tpl.render_completion(t.output), tok, 4096)
             for t in svamp(shared_data, 200, shortest=False)[::40]]  # varied lengths, so packing pays
    batch = PackingCollator(tok.pad_token_id, 4096)(feats)
    batch.pop("n_tokens")
    assert batch["input_ids"].shape[0] < len(feats)  # really packed
    th = target_head(model)
    assert isinstance(th, TargetHead)
    model.train()
    torch.manual_seed(0)
    ref = model(**batch).loss
    ref.backward()
    g_ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits, targets = th.logits(model, inputs, batch["labels"])
    assert logits.shape == (int((batch["labels"][:, 1:] != IGNORE).sum()), model.config.vocab_size)
    mine = torch.nn.functional.cross_entropy(logits.float(), targets)
    mine.backward()
    assert mine.item() == pytest.approx(ref.item(), rel=1e-5)
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, g_ref[n], rtol=1e-4, atol=1e-6), n
    th.remove()
    assert model(**batch).logits.dim() == 3  # hook gone

    class Reshaping(LlamaForCausalLM):  # reads the head's output as (rows, T, vocab)
        def forward(self, input_ids=None, **kw):
            out = super().forward(input_ids=input_ids, **kw)
            out.logits = out.logits.view(input_ids.shape[0], input_ids.shape[1], -1)
            return out

    other = Reshaping(model.config)
    assert target_head(other) is None
    assert other(input_ids=batch["input_ids"][:, :5]).logits.dim() == 3  # no hook left behind


def test_training_with_the_target_head_matches_full_logits(shared_data, tmp_path):
    traces = svamp(shared_data, 16)
    cfg = tiny_cfg(max_steps=6, batch_size=4, logging_steps=1, precision="fp32")
    a = train(traces, "scratch:llama-xxs", tmp_path / "a", cfg.with_overrides(lm_head="targets"), progress=False)
    b = train(traces, "scratch:llama-xxs", tmp_path / "b", cfg.with_overrides(lm_head="all"), progress=False)
    def losses(d):
        rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if "loss" in r]

    la, lb = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert len(la) == len(lb) >= 6
    assert la == pytest.approx(lb, rel=1e-4)
    assert a.summary["lm_head"] == "target positions" and b.summary["lm_head"] == "all positions"


# ------------------------------------------------------------------------------------------
# training runs
# ------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama", "gemma", "bloom"])
def test_loss_falls_on_svamp_traces(shared_data, tmp_path, family):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    traces = svamp(shared_data, 48)
    out = tmp_path / "model"
    res = train(traces, f"scratch:{family}-xxs", out, tiny_cfg(max_steps=24), progress=False)
    assert is_complete(out) and (out / COMPLETE).is_file()
    assert not out.with_name("model.partial").exists()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows]
    assert losses[0] > 4.0  # ~ln(vocab) at init
    assert losses[-1] < losses[0] - 1.0, losses
    assert res.final_loss == pytest.approx(losses[-1])
    assert res.steps == 24 and res.train_tokens > 0 and res.wall_s > 0
    s = json.loads((out / "train_summary.json").read_text())
    assert s["batching"].startswith("packed" if family != "bloom" else "padded")
    assert s["train_tokens"] == rows[-1]["tokens"]
    assert s["data_fingerprint"] == json.loads((out / "train_config.json").read_text())["data_fingerprint"]
    assert (out / "loss.png").stat().st_size > 1000
    assert PromptTemplate.load(out) == PromptTemplate()
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.eos_token_id == tok.eos_token_id


@pytest.mark.slow
def test_eos_is_learned_and_generation_stops(shared_data, tmp_path):
    traces = svamp(shared_data, 4)
    out = tmp_path / "m"
    train(traces, "scratch:llama-xxs", out,
          tiny_cfg(max_steps=120, batch_size=4, learning_rate=3e-3, warmup_steps=10), progress=False)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    tpl = PromptTemplate.load(out)
    for t in traces:
        ids = tok(tpl.render_prompt(t.question), return_tensors="pt")["input_ids"]
        target = tok(tpl.render_completion(t.output), add_special_tokens=False)["input_ids"]
        gen = model.generate(ids, max_new_tokens=len(target) + 40, do_sample=False,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)[0, ids.shape[1]:]
        assert gen[-1].item() == tok.eos_token_id, tok.decode(gen)
        assert len(gen) <= len(target) + 5


def test_same_config_same_weights_and_token_budget(shared_data, tmp_path):
    traces = svamp(shared_data, 16)
    cfg = tiny_cfg(max_steps=None, max_tokens=6000, batch_size=4)
    a = train(traces, "scratch:llama-xxs", tmp_path / "a", cfg, progress=False)
    b = train(traces, "scratch:llama-xxs", tmp_path / "b", cfg, progress=False)
    mean_len = a.train_tokens / (a.steps * 4)
    assert a.steps == pytest.approx(6000 / (mean_len * 4), abs=1.5)
    wa, wb = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # a finished directory is kept by resume, refused without --overwrite
    assert train(traces, "scratch:llama-xxs", tmp_path / "a", cfg, resume=True).steps == a.steps
    with pytest.raises(UserError, match="already exists"):
        train(traces, "scratch:llama-xxs", tmp_path / "a", cfg)


def test_lora_run_saves_merged_model_and_adapter(shared_data, tmp_path):
    from transformers import AutoModelForCausalLM

    traces = svamp(shared_data, 8)
    cfg = tiny_cfg(max_steps=3, batch_size=4, lora={"enabled": True, "r": 4, "alpha": 8})
    res = train(traces, "scratch:llama-xxs", tmp_path / "m", cfg, progress=False)
    assert (tmp_path / "m" / "adapter" / "adapter_config.json").is_file()
    assert res.summary["trainable_params"] < res.summary["params"]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert not any("lora" in n for n, _ in model.named_parameters())


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_final_weights(shared_data, tmp_path):
    traces = svamp(shared_data, 24)
    tf = tmp_path / "traces.jsonl"
    write_traces(tf, traces)
    steps, save = 24, 6
    cfg = tiny_cfg(max_steps=steps, batch_size=4, save_steps=save)
    ref = tmp_path / "ref"
    train(load_traces([tf]), "scratch:llama-xxs", ref, cfg, progress=False)

    out = tmp_path / "run"
    args = ["train", "--traces", str(tf), "--student", "scratch:llama-xxs", "--out", str(out),
            "--max-steps", str(steps), "--batch-size", "4", "--save-steps", str(save), "--threads", "1", "--quiet"]
    cfg_file = tmp_path / "cfg.yaml"
    import yaml

    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    args += ["--config", str(cfg_file)]
    proc = subprocess.Popen([sys.executable, "-m", "cotdistill", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = out.with_name("run.partial") / "checkpoints" / f"checkpoint-{save}" / "trainer_state.json"
    deadline = time.time() + 300
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists() and not is_complete(out)  # nothing a later stage could mistake

    r = _cli(*args)  # without --resume: refused, the interrupted run is kept
    assert r.returncode == 2 and "--resume" in r.stderr
    r = _cli(*args, "--resume", "--lr", "0.5")  # other settings: refused, naming what differs; the run is kept
    assert r.returncode == 2 and "with a different config:" in r.stderr and "--overwrite" in r.stderr
    assert json.loads((out.with_name("run.partial") / "run_key.json").read_text())["config"]["learning_rate"] == cfg.learning_rate
    r = _cli(*args, "--resume")
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "train_summary.json").read_text())
    assert s["resumed_from"].startswith("checkpoint-") and s["steps"] == steps
    wr, wo = weights(ref), weights(out)
    assert all(torch.equal(wr[k], wo[k]) for k in wr)


# ------------------------------------------------------------------------------------------
# configs and bad input
# ------------------------------------------------------------------------------------------
def test_default_config_is_the_papers():
    c = TrainConfig.default()
    assert (c.learning_rate, c.epochs, c.lr_scheduler, c.warmup_steps, c.batch_size, c.cutoff_len,
            c.seed, c.max_grad_norm) == (5e-5, 3, "cosine", 0, 64, 4096, 100, 1.0)
    assert c == TrainConfig()  # YAML and the pydantic defaults agree
    s = TrainConfig.scratch()
    assert (s.learning_rate, s.adam_beta2, s.weight_decay, s.warmup_steps, s.min_lr_ratio, s.batch_size) == (
        4e-3, 0.98, 0.01, 30, 0.05, 32)
    assert TrainConfig.for_student("scratch:gemma-xs") == s


def test_bad_config_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: 1e-4\nlerning_rate: 3\n")
    with pytest.raises(UserError, match="unknown key 'lerning_rate'"):
        TrainConfig.from_yaml(bad)
    bad.write_text("batch_size: many\n")
    with pytest.raises(UserError, match="batch_size"):
        TrainConfig.from_yaml(bad)
    with pytest.raises(UserError, match="does not exist"):
        TrainConfig.from_yaml(tmp_path / "none.yaml")


def test_bad_input_api_leaves_no_directory(shared_data, tmp_path):
    traces = svamp(shared_data, 4)
    out = tmp_path / "m"
    with pytest.raises(UserError, match="unknown scratch"):
        train(traces, "scratch:llama-huge", out, tiny_cfg())
    with pytest.raises(UserError, match="cannot load model"):
        train(traces, str(tmp_path / "no-such-model"), out, tiny_cfg())
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(UserError, match="no traces"):
        train([empty], "scratch:llama-xxs", out, tiny_cfg())
    with pytest.raises(UserError, match="multiple"):
        train(traces, "scratch:llama-xxs", out, tiny_cfg(batch_size=6, micro_batch_size=4))
    assert not out.exists() and not out.with_name("m.partial").exists()


@pytest.mark.parametrize(
    "case", ["missing_traces", "unknown_key", "wrong_type", "unknown_student"])
def test_bad_input_cli_one_line_exit_2(shared_data, tmp_path, case):
    tf = tmp_path / "t.jsonl"
    write_traces(tf, svamp(shared_data, 4))
    cfg = tmp_path / "c.yaml"
    cfg.write_text({"unknown_key": "max_stepz: 3\n", "wrong_type": "max_steps: three\n"}.get(case, "max_steps: 2\n"))
    out = tmp_path / "out"
    args = ["train", "--traces", str(tmp_path / "nope.jsonl") if case == "missing_traces" else str(tf),
            "--student", "scratch:llama-xl" if case == "unknown_student" else "scratch:llama-xxs",
            "--out", str(out), "--config", str(cfg)]
    r = _cli(*args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists() and not out.with_name("out.partial").exists()


# ------------------------------------------------------------------------------------------
# trackers, hub, progress outside a terminal
# ------------------------------------------------------------------------------------------
def test_tensorboard_logs_land_in_the_model_directory(shared_data, tmp_path):
    """report_to tensorboard (offline): event files in <out>/tensorboard hold the logged loss of
    every logging step."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_cfg(max_steps=6, logging_steps=2, report_to="tensorboard")
    res = train(svamp(shared_data, 16), "scratch:llama-xxs", tmp_path / "m", cfg, progress=False)
    tb = tmp_path / "m" / "tensorboard"
    assert list(tb.glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(tb))
    acc.Reload()
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 4, 6]
    assert loss[-1].value == pytest.approx(res.final_loss, rel=1e-4)
    assert TrainConfig.scratch(report_to="none").report_to == [] and TrainConfig.scratch(report_to=" tensorboard,none").report_to == ["tensorboard"]


def test_push_to_hub_failure_keeps_the_model(shared_data, tmp_path, monkeypatch):
    with pytest.raises(UserError, match="hub_model_id"):
        train(svamp(shared_data, 8), "scratch:llama-xxs", tmp_path / "a", tiny_cfg(max_steps=2, push_to_hub=True), progress=False)
    assert not (tmp_path / "a").exists()
    # an unreachable hub: one-line error naming the repo and how to upload later; the model is complete
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_TOKEN", "hf_test_not_a_real_token")
    cfg = tiny_cfg(max_steps=2, push_to_hub=True, hub_model_id="someone/tiny")
    with pytest.raises(UserError, match=r"someone/tiny.*huggingface-cli upload") as e:
        train(svamp(shared_data, 8), "scratch:llama-xxs", tmp_path / "b", cfg, progress=False)
    assert "hf_test_not_a_real_token" not in str(e.value)
    assert is_complete(tmp_path / "b")


def test_progress_lines_without_a_terminal(shared_data, tmp_path):
    """Under nohup / Slurm / a pipe, `cotdistill train` prints plain progress lines (step, loss,
    tokens/s, ETA) as it goes, not only at the end."""
    traces = tmp_path / "t.jsonl"
    write_traces(traces, svamp(shared_data, 16))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("max_steps: 6\nbatch_size: 4\nlogging_steps: 2\nsave_steps: 1000\nthreads: 1\npack_length: 512\nlearning_rate: 0.004\n")
    r = _cli("train", "--traces", str(traces), "--student", "scratch:llama-xxs", "--out", str(tmp_path / "m"), "--config", str(cfg), timeout=600)
    assert r.returncode == 0, r.stderr[-1000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("train: ")]
    assert lines[0] == "train: 0/6 steps"
    assert any(re.match(r"train: 6/6 steps  loss \d+\.\d+  [\d,]+ tok/s  elapsed \d+ s  eta 0 s", ln) for ln in lines), lines
    assert "\x1b[" not in r.stderr  # no terminal control codes in a log


def test_one_supervision_cell_per_run_unless_mixing_is_asked(shared_data, tmp_path):
    """A trace file holding two (teacher, level, format) cells is refused with the cells listed;
    --levels picks one; --mix trains on both and the summary says so."""
    a = svamp(shared_data, 8)
    b = [t.model_copy(update={"level": 5, "output": t.output + " Check: done."}) for t in a]
    traces = tmp_path / "mixed.jsonl"
    write_traces(traces, a + b)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("max_steps: 2\nbatch_size: 4\nsave_steps: 1000\nthreads: 1\npack_length: 512\n")
    common = ["train", "--traces", str(traces), "--student", "scratch:llama-xxs", "--config", str(cfg), "--quiet"]
    r = _cli(*common, "--out", str(tmp_path / "refused"), timeout=600)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "2 supervision cells: gemini/L3/cot (8), gemini/L5/cot (8)" in r.stderr and "--mix" in r.stderr
    assert not (tmp_path / "refused").exists()
    r = _cli(*common, "--out", str(tmp_path / "l5"), "--levels", "5", timeout=600)
    assert r.returncode == 0, r.stderr[-800:]
    s = json.loads((tmp_path / "l5" / "train_summary.json").read_text())
    assert s["supervision"] == {"gemini/L5/cot": 8} and s["mixed"] is False and s["examples"] == 8
    r = _cli(*common, "--out", str(tmp_path / "none"), "--formats", "BSM", timeout=600)
    assert r.returncode == 2 and "no trace matches" in r.stderr and "gemini/L3/cot (8)" in r.stderr
    r = _cli(*common, "--out", str(tmp_path / "mix"), "--mix", timeout=600)
    assert r.returncode == 0, r.stderr[-800:]
    s = json.loads((tmp_path / "mix" / "train_summary.json").read_text())
    assert s["supervision"] == {"gemini/L3/cot": 8, "gemini/L5/cot": 8} and s["mixed"] is True


def test_one_task_per_run_and_tasks_pick_one(shared_data, tmp_path):
    """Traces of several tasks (an import-paper output holds seven) are refused in one line naming
    them; --tasks picks one for train and for curate."""
    a = svamp(shared_data, 8)
    b = [t.model_copy(update={"task": "gsm8k", "id": "g" + t.id}) for t in a]
    traces = tmp_path / "two.jsonl"
    write_traces(traces, a + b)
    common = ["train", "--traces", str(traces), "--student", "scratch:llama-xxs", "--max-steps", "1", "--batch-size", "4",
              "--quiet"]
    r = _cli(*common, "--out", str(tmp_path / "refused"), timeout=600)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "2 tasks: gsm8k (8), svamp (8); pick one with --tasks" in r.stderr and not (tmp_path / "refused").exists()
    r = _cli(*common, "--out", str(tmp_path / "m"), "--tasks", "svamp", timeout=600)
    assert r.returncode == 0, r.stderr[-800:]
    assert json.loads((tmp_path / "m" / "train_summary.json").read_text())["examples"] == 8
    r = _cli("curate", str(traces), "--out", str(tmp_path / "c"), "--tasks", "gsm8k", "--no-decontaminate", "--keep", "all")
    assert r.returncode == 0, r.stderr[-800:]
    kept = [json.loads(x) for x in (tmp_path / "c" / "traces.jsonl").read_text().splitlines()]
    assert len(kept) == 8 and {k["task"] for k in kept} == {"gsm8k"}
    r = _cli("curate", str(traces), "--out", str(tmp_path / "c2"), "--tasks", "math")
    assert r.returncode == 2 and "no trace matches" in r.stderr and "tasks gsm8k, svamp" in r.stderr


def test_overlong_examples_are_dropped_or_keep_their_final_answer(shared_data, tmp_path):
    """Long traces are never trained with their final answer cut off: dropped (counted) by
    default, or truncated in the middle so the answer and EOS stay."""
    texts = [t.question for t in svamp(shared_data, 8)]
    _, tok = make_scratch_student("scratch:llama-xxs", texts)
    completion = "step " * 200 + "The answer is 42."
    assert encode_example("Q: x\nA:", completion, tok, 120, overlong="drop") is None
    enc = encode_example("Q: x\nA:", completion, tok, 120, overlong="truncate")
    assert len(enc["input_ids"]) == 120 and enc["truncated"]
    assert enc["input_ids"][-1] == tok.eos_token_id
    assert tok.decode(enc["input_ids"][-20:-1]).endswith("The answer is 42.")
    # through train(): the longest traces are dropped and counted
    traces = svamp(shared_data, 16)
    lens = sorted(len(t.question) + len(t.output) for t in traces)
    cut = lens[-4] + 20  # chars ~ tokens for the char-level scratch tokenizer, + template
    res = train(traces, "scratch:llama-xxs", tmp_path / "m", tiny_cfg(max_steps=2, batch_size=4, cutoff_len=cut),
                progress=False)
    assert 1 <= res.summary["dropped_overlong_examples"] <= 4 and res.summary["truncated_examples"] == 0
    with pytest.raises(UserError, match="longer than cutoff_len"):
        train(traces, "scratch:llama-xxs", tmp_path / "n", tiny_cfg(max_steps=2, batch_size=4, cutoff_len=10),
              progress=False)


def test_reasoning_target_wraps_the_thinking_in_think_tags():
    from cotdistill.train import target_text

    t = Trace(id="1", task="svamp", question="q", gold="8", teacher="openai:r1", level="human",
              output="The answer is 8.", reasoning="5 + 3 = 8, checked.")
    assert target_text(t, "response") == "The answer is 8."
    assert target_text(t, "reasoning+response") == "<think>\n5 + 3 = 8, checked.\n</think>\n\nThe answer is 8."
    plain = t.model_copy(update={"reasoning": None})
    assert target_text(plain, "reasoning+response") == "The answer is 8."


def test_step_by_step_objective_trains_two_tasks_and_answers_the_label_task(shared_data, tmp_path):
    """Distilling step-by-step: each trace gives a '[label] ' example (the answer) and a
    '[rationale] ' example (the rationale); the saved template asks the label task, so the trained
    model answers without writing a rationale."""
    traces = svamp(shared_data, 8)
    out = tmp_path / "m"
    write_traces(tmp_path / "traces.jsonl", traces)
    r = _cli("train", "--traces", str(tmp_path / "traces.jsonl"), "--student", "scratch:llama-xxs", "--out", str(out),
             "--objective", "step-by-step", "--max-steps", "2", "--batch-size", "4", "--threads", "1", "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["objective"] == "step-by-step"
    tpl = PromptTemplate.load(out)
    assert tpl.question_prefix == "[label] " and tpl.render_prompt("q") == "Question: [label] q\nAnswer:"
    sft = train(traces, "scratch:llama-xxs", tmp_path / "s", tiny_cfg(max_steps=2, batch_size=4), progress=False)
    # twice the examples per epoch: the label and the rationale task
    assert summary["examples"] == 2 * sft.summary["examples"]


def test_command_line_flags_join_the_yaml_before_validation(tmp_path):
    """`--config train.yaml` with `objective: logit-kd` and `--teacher-model DIR` on the command line
    is one valid config (the rule linking the two sees both), and a flag overrides the file."""
    p = tmp_path / "train.yaml"
    p.write_text("objective: logit-kd\nlearning_rate: 1.0e-4\nlora: {r: 4}\n")
    with pytest.raises(UserError, match="teacher_model"):
        TrainConfig.from_yaml(p)
    cfg = TrainConfig.from_yaml(p, teacher_model=str(tmp_path), learning_rate=3e-4, lora=True, seed=None)
    assert cfg.teacher_model == str(tmp_path) and cfg.learning_rate == 3e-4 and cfg.objective == "logit-kd"
    assert cfg.lora.enabled and cfg.lora.r == 4
    q = tmp_path / "short.yaml"
    q.write_text("lr: 1.0e-4\n")  # the short spelling in the file, the flag on the command line: the flag wins
    assert TrainConfig.from_yaml(q, learning_rate=5e-4).learning_rate == 5e-4 and TrainConfig.from_yaml(q).learning_rate == 1e-4
    with pytest.raises(UserError, match=r"short.yaml \(with the command-line options\): field 'kd_alpha'"):
        TrainConfig.from_yaml(q, kd_alpha=2.0)
    r = _cli("train", "--traces", str(tmp_path / "none.jsonl"), "--student", "scratch:llama-xxs", "--config", str(p),
             "--teacher-model", str(tmp_path / "teacher"), "--out", str(tmp_path / "m"))
    assert r.returncode == 2 and "none.jsonl does not exist" in r.stderr, r.stderr  # past the config, to the data


def test_the_last_step_is_logged_so_the_final_loss_is_the_last_steps(shared_data, tmp_path):
    """A run shorter than logging_steps reports its last step's loss as the final loss (not the
    first step's, which every run of the same student and data shares)."""
    res = train(svamp(shared_data, 16), "scratch:llama-xxs", tmp_path / "m",
                tiny_cfg(max_steps=5, logging_steps=10, learning_rate=0.01), progress=False)
    logged = [json.loads(x) for x in (tmp_path / "m" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in logged if "loss" in r]
    assert steps == [1, 5] and res.final_loss == [r for r in logged if "loss" in r][-1]["loss"]
    assert res.final_loss != [r for r in logged if "loss" in r][0]["loss"]
