"""Training throughput: `cotdistill train` vs a plain TRL SFTTrainer run with default settings.

Same scratch student (llama, char tokenizer, same init), same SVAMP traces (paper, Gemini level 3),
one epoch each, so both see exactly the same examples; the figure is non-pad tokens (prompt +
completion + EOS) per second of `trainer.train()`, and the ratio is measured within one run with
the configurations interleaved (A B A B ...) so machine load affects both alike.

    python benchmarks/bench_train.py [--data svamp|arith] [--size xs] [--traces 128] [--repeats 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("COTDISTILL_SHARED_DATA", ROOT.parent / "shared" / "data"))


def load(n, data="svamp"):
    from cotdistill.traces import Trace

    if data == "arith":  # the quickstart's workload: procedural problems, lab rationales at level 3
        from cotdistill.tasks.arith import generate, lab_rationale

        exs = generate("train", n_train=n)[:n]
        return [Trace(id=e.id, task="arith", question=e.question, gold=e.answer, teacher="lab", level=3,
                      output=lab_rationale(e, 3)) for e in exs]
    rows = json.load(gzip.open(DATA / "paper/SVAMP_gemini_level3_ranked.json.gz", "rt"))[:n]
    return [Trace(id=str(i), task="svamp", question=r["instruction"], gold="", teacher="gemini", level=3,
                  output=r["output"]) for i, r in enumerate(rows)]


def run_cotdistill(traces, student, batch, packing, precision, tmp):
    from cotdistill.train import TrainConfig, train

    out = Path(tmp) / f"cd-{time.time_ns()}"
    cfg = TrainConfig.scratch(max_steps=None, epochs=1, batch_size=batch, packing=packing, precision=precision,
                              save_steps=10_000, logging_steps=1000)
    r = train(traces, student, out, cfg, progress=False)
    shutil.rmtree(out, ignore_errors=True)
    return r.train_tokens, r.summary["train_wall_s"]


def run_trl(traces, student, tmp):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from cotdistill.students import make_scratch_student
    from cotdistill.template import PromptTemplate

    tpl = PromptTemplate()
    prompts = [tpl.render_prompt(t.question) for t in traces]
    comps = [tpl.render_completion(t.output) for t in traces]
    model, tok = make_scratch_student(student, [p + c for p, c in zip(prompts, comps)], seed=100)
    ds = Dataset.from_dict({"prompt": prompts, "completion": comps})
    args = SFTConfig(output_dir=str(Path(tmp) / "trl"), use_cpu=True, report_to="none", save_strategy="no",
                     num_train_epochs=1, disable_tqdm=True, logging_steps=1000)
    tr = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    tokens = sum(len(x) for x in tr.train_dataset["input_ids"])
    t = time.perf_counter()
    tr.train()
    return tokens, time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="xs")
    ap.add_argument("--traces", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", choices=["svamp", "arith"], default="svamp")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    import transformers

    transformers.logging.set_verbosity_error()
    student = f"scratch:llama-{a.size}"
    traces = load(a.traces, a.data)
    configs = {
        "trl_sft_default": lambda tmp: run_trl(traces, student, tmp),
        "cotdistill_b8_packed_bf16": lambda tmp: run_cotdistill(traces, student, 8, "auto", "bf16", tmp),
        "cotdistill_b8_padded_bf16": lambda tmp: run_cotdistill(traces, student, 8, "off", "bf16", tmp),
        "cotdistill_b8_packed_fp32": lambda tmp: run_cotdistill(traces, student, 8, "auto", "fp32", tmp),
        "cotdistill_b32_packed_bf16": lambda tmp: run_cotdistill(traces, student, 32, "auto", "bf16", tmp),
    }
    res = {k: [] for k in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(a.repeats):
            for k, fn in configs.items():
                tok, wall = fn(tmp)
                res[k].append(tok / wall)
                print(f"rep {rep} {k:28s} {tok:8d} tokens {wall:7.2f} s {tok / wall:9.0f} tok/s", flush=True)
    base = statistics.median(res["trl_sft_default"])
    print()
    print("command:", " ".join([sys.executable, *sys.argv]))
    print("machine:", platform.processor() or platform.machine(), f"{os.cpu_count()} cpus,",
          f"load avg {os.getloadavg()[0]:.1f},", f"torch threads {a.threads},",
          f"torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"student {student}, {len(traces)} {a.data} traces, 1 epoch each; median of {a.repeats} interleaved runs")
    print(f"| configuration | non-pad tokens/s | ratio vs TRL SFTTrainer default |")
    print(f"|---|---|---|")
    for k, v in res.items():
        m = statistics.median(v)
        print(f"| {k} | {m:,.0f} | {m / base:.2f}x |")


if __name__ == "__main__":
    main()
