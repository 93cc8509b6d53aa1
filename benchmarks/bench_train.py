"""Training throughput: `cotdistill train` vs TRL's SFTTrainer on the same student and traces.

Scratch students (default): the same llama student (char tokenizer, same init) and the same SVAMP
traces (paper, Gemini level 3), one epoch each.

Pretrained students (`--student smollm2-135m`, a .gguf file or a model directory): the released
GPT-4o SVAMP level-3 traces, the student's own chat template on both sides (TRL gets conversational
prompt/completion records, cotdistill its chat template), batch 8, one epoch, against TRL's
defaults (gradient checkpointing, bf16) and TRL without gradient checkpointing. MFU is
6 * parameters * tokens/s over a bf16 matmul peak this script measures itself (2048^3 GEMM on the
same threads). The last row, "matmuls alone (ceiling)", times only the model's own matmuls (every
projection and the LM head, forward and both backward products, bf16) at the shapes of cotdistill's
run: the throughput and MFU a trainer would reach if everything else (attention, element-wise work,
the optimizer) were free.

The figure is non-pad tokens (prompt + completion + EOS) per second of `trainer.train()`; the
configurations are interleaved (A B C A B C ...) so machine load affects all alike.

    python benchmarks/bench_train.py [--data svamp|arith] [--size xs] [--traces 128] [--repeats 2] [--threads 2]
    python benchmarks/bench_train.py --student smollm2-135m --traces 128 --repeats 2 [--json out.json]
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
DATA = Path(os.environ.get("COTDISTILL_DATA") or ROOT.parent / "shared" / "data")


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


def load_gpt4o_l3(n):
    from cotdistill.traces import Trace

    rows = json.load(gzip.open(DATA / "paper/SVAMP_ChatGPT_level3_ranked.json.gz", "rt"))[:n]
    return [Trace(id=str(i), task="svamp", question=r["instruction"], gold="", teacher="gpt-4o", level=3,
                  output=r["output"]) for i, r in enumerate(rows)]


def bf16_peak(threads, n=2048, reps=10):
    """Measured bf16 matmul peak (FLOP/s) of this device on `threads` threads."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    a = torch.randn(n, n, dtype=torch.bfloat16, device=dev)
    b = torch.randn(n, n, dtype=torch.bfloat16, device=dev)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(3):
        if dev == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        if dev == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t) / reps)
    return 2 * n**3 / best


def matmul_ceiling(config, tokens, target_tokens, steps, threads, reps=3):
    """Seconds the model's own matmuls take for a run of `steps` optimizer steps of `tokens` tokens
    (`target_tokens` of them through the LM head, as cotdistill computes it), forward and backward
    (input and weight gradients), in bf16 on this device, with nothing else: every projection of
    every layer plus the LM head, at the shapes training gives them. 6 x parameters x tokens over
    this time (and the peak) is the MFU a trainer would reach if everything but its matmuls were
    free."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    h = config.hidden_size
    d = getattr(config, "head_dim", None) or h // config.num_attention_heads
    kv = config.num_key_value_heads * d
    shapes = [(h, config.num_attention_heads * d), (h, kv), (h, kv), (config.num_attention_heads * d, h),
              (h, config.intermediate_size), (h, config.intermediate_size), (config.intermediate_size, h)]
    n = tokens // steps

    def layer_set(rows, pairs):
        xs = [torch.randn(rows, k, dtype=torch.bfloat16, device=dev) for k, _ in pairs]
        ws = [torch.randn(k, m, dtype=torch.bfloat16, device=dev) for k, m in pairs]
        gs = [torch.randn(rows, m, dtype=torch.bfloat16, device=dev) for _, m in pairs]
        return xs, ws, gs

    # every layer its own tensors, as in training (no layer finds another's data in cache)
    sets = [layer_set(n, shapes) for _ in range(config.num_hidden_layers)]
    sets.append(layer_set(target_tokens // steps, [(h, config.vocab_size)]))

    def one_step():
        for xs, ws, gs in sets:
            for x, w, g in zip(xs, ws, gs):
                x @ w          # forward
                g @ w.t()      # input gradient
                x.t() @ g      # weight gradient

    one_step()
    best = float("inf")
    for _ in range(reps):
        if dev == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        one_step()
        if dev == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best * steps


def run_cotdistill_pretrained(traces, model_dir, batch, tmp, **overrides):
    from cotdistill.train import TrainConfig, train

    out = Path(tmp) / f"cd-{time.time_ns()}"
    cfg = TrainConfig.default(max_steps=None, epochs=1, batch_size=batch, learning_rate=2e-5, save_steps=10_000,
                              logging_steps=1000, **overrides)
    r = train(traces, str(model_dir), out, cfg, progress=False)
    shutil.rmtree(out, ignore_errors=True)
    run_cotdistill_pretrained.last = r.summary
    return r.train_tokens, r.summary["train_wall_s"]


def run_trl_pretrained(traces, model_dir, batch, tmp, checkpointing):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ds = Dataset.from_dict({
        "prompt": [[{"role": "user", "content": t.question}] for t in traces],
        "completion": [[{"role": "assistant", "content": t.output.strip()}] for t in traces],
    })
    kw = {} if checkpointing else {"gradient_checkpointing": False}
    args = SFTConfig(output_dir=str(Path(tmp) / "trl"), use_cpu=not torch.cuda.is_available(), report_to="none",
                     save_strategy="no", num_train_epochs=1, per_device_train_batch_size=batch, disable_tqdm=True,
                     logging_steps=1000, **kw)
    tr = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    tokens = sum(len(x) for x in tr.train_dataset["input_ids"])
    t = time.perf_counter()
    tr.train()
    return tokens, time.perf_counter() - t


def main_pretrained(a):
    import transformers

    from cotdistill.students import count_params, describe_student, load_pretrained

    transformers.logging.set_verbosity_error()
    traces = load_gpt4o_l3(a.traces)
    peak = bf16_peak(a.threads)
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "student"  # a plain model directory both trainers load alike
        model, tok = load_pretrained(a.student)
        n_params = count_params(model)
        config = model.config
        model.save_pretrained(model_dir)
        tok.save_pretrained(model_dir)
        del model
        configs = {
            "trl_sft_default": lambda: run_trl_pretrained(traces, model_dir, a.batch, tmp, True),
            "trl_sft_no_checkpointing": lambda: run_trl_pretrained(traces, model_dir, a.batch, tmp, False),
            "cotdistill": lambda: run_cotdistill_pretrained(traces, model_dir, a.batch, tmp),
        }
        if a.ablations:
            configs["cotdistill_lm_head_all"] = lambda: run_cotdistill_pretrained(traces, model_dir, a.batch, tmp, lm_head="all")
            configs["cotdistill_adamw_unfused"] = lambda: run_cotdistill_pretrained(traces, model_dir, a.batch, tmp, optim="adamw_torch")
        res = {k: [] for k in configs}
        for rep in range(a.repeats):
            for k, fn in configs.items():
                tok_n, wall = fn()
                res[k].append(tok_n / wall)
                print(f"rep {rep} {k:28s} {tok_n:8d} tokens {wall:7.2f} s {tok_n / wall:9.1f} tok/s", flush=True)
    base = statistics.median(res["trl_sft_default"])
    base_nc = statistics.median(res["trl_sft_no_checkpointing"])
    # the matmul-only ceiling at the shapes of cotdistill's run (its tokens, steps and LM-head rows)
    last = run_cotdistill_pretrained.last
    ceiling_s = matmul_ceiling(config, last["train_tokens"], last["completion_tokens"], last["steps"], a.threads)
    ceiling = last["train_tokens"] / ceiling_s
    rows = []
    for k, v in res.items():
        m = statistics.median(v)
        rows.append({"configuration": k, "tokens_per_s": round(m, 1), "vs_trl_default": round(m / base, 3),
                     "vs_trl_no_checkpointing": round(m / base_nc, 3), "mfu": round(6 * n_params * m / peak, 4)})
    rows.append({"configuration": "matmuls alone (ceiling)", "tokens_per_s": round(ceiling, 1),
                 "vs_trl_default": round(ceiling / base, 3), "vs_trl_no_checkpointing": round(ceiling / base_nc, 3),
                 "mfu": round(6 * n_params * ceiling / peak, 4)})
    machine = machine_line(a.threads)
    print()
    print("command:", " ".join([sys.executable, *sys.argv]))
    print("machine:", machine)
    print(f"student {describe_student(a.student)} ({n_params / 1e6:.1f} M parameters), {len(traces)} GPT-4o SVAMP "
          f"level-3 traces, batch {a.batch}, 1 epoch each; median of {a.repeats} interleaved runs; "
          f"bf16 matmul peak measured {peak / 1e9:.0f} GFLOP/s")
    print("| configuration | non-pad tokens/s | vs TRL default | vs TRL without checkpointing | MFU (bf16 peak) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['configuration']} | {r['tokens_per_s']:,.1f} | {r['vs_trl_default']:.2f}x | "
              f"{r['vs_trl_no_checkpointing']:.2f}x | {100 * r['mfu']:.1f} % |")
    if a.json:
        Path(a.json).write_text(json.dumps({
            "command": " ".join(["python", *sys.argv]), "machine": machine, "student": describe_student(a.student),
            "parameters": n_params, "traces": len(traces), "batch": a.batch, "repeats": a.repeats,
            "bf16_peak_flops": peak, "runs_tokens_per_s": res, "results": rows}, indent=2) + "\n")


def machine_line(threads):
    import transformers

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from calibrate_quickstart import cpu_name

    flags = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    isa = ", ".join(f for f in ("avx512_bf16", "amx_bf16") if f in flags) or "no bf16 matmul units"
    return (f"{cpu_name()} ({isa}), {os.cpu_count()} cpus, torch threads {threads}, torch {torch.__version__}, "
            f"transformers {transformers.__version__}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="xs")
    ap.add_argument("--traces", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", choices=["svamp", "arith"], default="svamp")
    ap.add_argument("--student", default=None, help="a pretrained student (smollm2-135m, a .gguf file, a model directory)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--ablations", action="store_true", help="also cotdistill with the full LM head and unfused AdamW")
    ap.add_argument("--json", default=None, help="write the results here")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.student:
        return main_pretrained(a)
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
