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


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(shared_data, tmp_path):
    if shutil.which("torchrun") is None:
        pytest.skip("torchrun not on PATH")
    rows = json.load(gzip.open(shared_data / PAPER_FILE, "rt"))[:24]
    traces = [Trace(id=str(i), task="svamp", question=r["instruction"], gold="", teacher="gemini",
                    level=3, output=r["output"]) for i, r in enumerate(rows)]
    tf = tmp_path / "traces.jsonl"
    write_traces(tf, traces)
    # fp32 so that the only difference is the order of the gradient reduction
    # cutoff_len above every example: none is dropped, so both runs see the same 24 (an odd count
    # would make DistributedSampler pad a rank with a repeated example)
    cfg = TrainConfig.scratch(max_steps=4, batch_size=8, warmup_steps=1, precision="fp32",
                              threads=1, logging_steps=1, save_steps=1000, cutoff_len=4096)
    cfg_file = tmp_path / "train.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))

    ddp = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "cotdistill", "train", "--traces", str(tf), "--student", "scratch:llama-xxs",
           "--out", str(ddp), "--config", str(cfg_file), "--quiet"]
    # own process group, so a timeout kills the launcher AND its workers (no orphans)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("two-process training did not finish in 300 s")
    r = subprocess.CompletedProcess(cmd, proc.returncode, "", err)
    assert r.returncode == 0, r.stderr[-3000:]
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
