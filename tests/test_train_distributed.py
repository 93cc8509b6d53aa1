"""Two CPU processes (torchrun, gloo) train one model: identical weights on both ranks, and the
same weights as one process with the same effective batch."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
import yaml

from cotdistill.traces import Trace, write_traces
from cotdistill.train import TrainConfig, train

PAPER_FILE = "paper/SVAMP_gemini_level3_ranked.json.gz"


def _launch(cmd: list[str], timeout: float = 300) -> tuple[int, str]:
    """Run a multi-process launcher in its own process group, so a timeout kills the launcher AND
    its workers (no orphans); (exit code, stderr)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{' '.join(cmd[:4])} did not finish in {timeout:.0f} s")
    return proc.returncode, err


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(shared_data, tmp_path):
    if shutil.which("torchrun") is None:
        pytest.skip("torchrun not on PATH")
    # fp32 so that the only difference is the order of the gradient reduction; cutoff_len above every
    # example: none is dropped, so both runs see the same 24 (an odd count would make DistributedSampler
    # pad a rank with a repeated example)
    traces, tf, cfg, cfg_file = _svamp_traces(shared_data, tmp_path)

    ddp = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "cotdistill", "train", "--traces", str(tf), "--student", "scratch:llama-xxs",
           "--out", str(ddp), "--config", str(cfg_file), "--quiet"]
    rc, err = _launch(cmd)
    assert rc == 0, err[-3000:]
    s = json.loads((ddp / "train_summary.json").read_text())
    assert s["world_size"] == 2 and s["micro_batch_size"] == 4
    a, b = s["rank_param_checksums"]
    assert a == b  # both ranks hold the same model

    single = train(traces, "scratch:llama-xxs", tmp_path / "single", cfg, progress=False)
    assert single.train_tokens == s["train_tokens"]  # the same examples were seen
    from safetensors.torch import load_file

    w1 = load_file(str(tmp_path / "single" / "model.safetensors"))
    w2 = load_file(str(ddp / "model.safetensors"))
    worst = max((w1[k] - w2[k]).abs().max().item() for k in w1)
    assert worst < 1e-4, worst
    assert abs(single.final_loss - s["final_loss"]) < 1e-4


def _svamp_traces(shared_data, tmp_path, n=24):
    rows = json.load(gzip.open(shared_data / PAPER_FILE, "rt"))[:n]
    traces = [Trace(id=str(i), task="svamp", question=r["instruction"], gold="", teacher="gemini",
                    level=3, output=r["output"]) for i, r in enumerate(rows)]
    tf = tmp_path / "traces.jsonl"
    write_traces(tf, traces)
    cfg = TrainConfig.scratch(max_steps=4, batch_size=8, warmup_steps=1, precision="fp32",
                              threads=1, logging_steps=1, save_steps=1000, cutoff_len=4096)
    cfg_file = tmp_path / "train.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return traces, tf, cfg, cfg_file


@pytest.mark.slow
def test_train_distributed_ddp_preset_through_accelerate_matches_one_process(shared_data, tmp_path):
    """`cotdistill train --distributed ddp --nproc 2`: accelerate launch, two CPU processes (gloo),
    the loss and weights of one process with the same effective batch."""
    traces, tf, cfg, cfg_file = _svamp_traces(shared_data, tmp_path)
    cmd = [sys.executable, "-m", "cotdistill", "train", "--traces", str(tf), "--student", "scratch:llama-xxs",
           "--out", str(tmp_path / "ddp"), "--config", str(cfg_file), "--quiet", "--distributed", "ddp", "--nproc", "2"]
    rc, err = _launch(cmd)
    assert rc == 0, err[-3000:]
    s = json.loads((tmp_path / "ddp" / "train_summary.json").read_text())
    assert s["world_size"] == 2 and s["parallelism"] == "multi_cpu" and s["micro_batch_size"] == 4
    assert (tmp_path / "ddp.launch" / "accelerate-ddp.yaml").is_file()
    single = train(traces, "scratch:llama-xxs", tmp_path / "single", cfg, progress=False)
    assert abs(single.final_loss - s["final_loss"]) < 1e-4
    from safetensors.torch import load_file

    w1 = load_file(str(tmp_path / "single" / "model.safetensors"))
    w2 = load_file(str(tmp_path / "ddp" / "model.safetensors"))
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < 1e-4


def test_presets_generate_accelerate_and_trainer_configs():
    from cotdistill.distributed import PRESETS, accelerate_config, trainer_args

    assert PRESETS == ("ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3")
    gpu = {p: accelerate_config(p, 4, cpu=False) for p in PRESETS}
    assert {p: c["distributed_type"] for p, c in gpu.items()} == {
        "ddp": "MULTI_GPU", "fsdp": "FSDP", "deepspeed-zero2": "DEEPSPEED", "deepspeed-zero3": "DEEPSPEED"}
    assert all(c["num_processes"] == 4 and c["use_cpu"] is False for c in gpu.values())
    assert gpu["fsdp"]["fsdp_config"]["fsdp_version"] == 2
    assert gpu["deepspeed-zero2"]["deepspeed_config"]["zero_stage"] == 2
    assert gpu["deepspeed-zero3"]["deepspeed_config"]["zero3_save_16bit_model"] is True

    class M:
        _no_split_modules = ["LlamaDecoderLayer"]

    assert trainer_args(M(), "ddp") == {}
    f = trainer_args(M(), "fsdp")
    assert f["fsdp"] == "full_shard auto_wrap" and f["fsdp_config"]["transformer_layer_cls_to_wrap"] == ["LlamaDecoderLayer"]
    z3 = trainer_args(M(), "deepspeed-zero3")["deepspeed"]
    assert z3["zero_optimization"]["stage"] == 3 and z3["train_micro_batch_size_per_gpu"] == "auto"
    # the TrainingArguments accept them (DeepSpeed itself is only needed when training with it)
    from transformers import TrainingArguments

    TrainingArguments(output_dir="/tmp/x", **trainer_args(M(), "ddp"))


def test_sharding_presets_are_refused_on_a_cpu_in_one_line(tmp_path):
    """accelerate shards only on accelerators: fsdp / deepspeed on a CPU would quietly replicate."""
    tf = tmp_path / "t.jsonl"
    write_traces(tf, [Trace(id="0", task="svamp", question="q", gold="1", teacher="t", level=3, output="The answer is 1")])
    for preset, msg in (("fsdp", "needs GPUs"), ("deepspeed-zero3", "needs GPUs"), ("fdsp", "did you mean 'fsdp'")):
        r = subprocess.run([sys.executable, "-m", "cotdistill", "train", "--traces", str(tf), "--student", "scratch:llama-xxs",
                            "--out", str(tmp_path / "m"), "--distributed", preset], capture_output=True, text=True)
        assert r.returncode == 2 and msg in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "m").exists() and not (tmp_path / "m.launch").exists()


@pytest.mark.slow
def test_a_study_cell_with_two_gpus_trains_through_the_launcher(tmp_path):
    """gpus_per_cell > 1: the cell's training runs under accelerate launch (here 2 CPU processes)."""
    from cotdistill.study import load_study_config, run_study

    base = {"name": "g", "tasks": [{"name": "arith", "options": {"steps": 2, "n_train": 64, "n_test": 8}}],
            "teachers": ["lab"], "levels": [3], "students": ["scratch:llama-xxs"], "seeds": [0],
            "curate": {"decontaminate": False}, "threads": 1,
            "train": {"max_steps": 3, "batch_size": 8, "logging_steps": 1, "precision": "fp32"},
            "eval": {"max_new_tokens": 8}}
    two = run_study(load_study_config({**base, "output_dir": str(tmp_path / "two"),
                                       "cluster": {"gpus_per_cell": 2, "distributed": "ddp"}}), progress=False)
    one = run_study(load_study_config({**base, "output_dir": str(tmp_path / "one")}), progress=False)
    assert two.done == one.done == 1
    info = {k: json.loads(next((tmp_path / k / "cells").glob("*/stages.json")).read_text())["train"]["info"]
            for k in ("one", "two")}
    assert info["two"]["world_size"] == 2 and info["one"]["world_size"] == 1
    assert abs(info["two"]["final_loss"] - info["one"]["final_loss"]) < 1e-3
