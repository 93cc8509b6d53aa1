"""GPU check: bf16 training and batched evaluation of a 0.5 B SmolLM2-architecture model, with TRL beside it.

For a machine with one CUDA GPU and no internet (torch, transformers and accelerate installed;
pydantic and pyyaml are the only other imports of ``cotdistill train``/``evaluate``; TRL's
``SFTTrainer`` runs only when ``trl`` and ``datasets`` are importable). Everything is built
locally, nothing is downloaded:

1. a randomly initialised LlamaForCausalLM with SmolLM2's architecture widened to ~0.5 B
   parameters (hidden 1024, 40 layers, 16 heads / 4 KV heads, MLP 2816, vocab 49152, tied
   embeddings, rope theta 100000), saved as a model directory with a character tokenizer (the
   49152-row embedding and LM head cost what SmolLM2's tokenizer would; ``--tokenizer DIR`` uses a
   real tokenizer instead);
2. traces: the procedural ``arith`` task with the ``lab`` teacher's level-4 rationales;
3. ``cotdistill train`` (bf16, packed rows, ``--steps`` optimizer steps of ``--batch`` examples),
   tokens/s and MFU against the GPU's dense bf16 peak (known GPUs, or ``--peak-tflops``);
4. TRL ``SFTTrainer`` on the same prompt/completion pairs, the same batch and steps (its defaults
   and without gradient checkpointing), tokens/s;
5. ``cotdistill evaluate`` (continuous batching, bf16) of the trained model on ``--eval-items``
   test items, generated tokens/s;
6. each ``--distributed`` preset (``ddp``, ``fsdp``, ``deepspeed-zero2``, ``deepspeed-zero3``) through
   ``cotdistill train --distributed P --nproc N`` (N = the GPUs here) for a few steps: whether it
   trains, its loss, tokens/s and the parallelism the trainer used (DeepSpeed presets are reported as
   not run when ``deepspeed`` is not installed).

    python benchmarks/gpu_check.py --out $OUT/gpu_check.json          # on the GPU, < 10 minutes
    python benchmarks/gpu_check.py --tiny --out /tmp/gpu_check.json   # a CPU smoke run of the script

Writes one JSON with the command, the device, versions and every figure.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def build_model(out: Path, tiny: bool, tokenizer: str | None, texts: list[str]) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from cotdistill.students import build_char_tokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer) if tokenizer else build_char_tokenizer(texts)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    shape = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=352) if tiny else \
        dict(hidden_size=1024, num_hidden_layers=40, num_attention_heads=16, num_key_value_heads=4,
             intermediate_size=2816)
    cfg = LlamaConfig(vocab_size=max(49152, len(tok)), max_position_embeddings=8192, rope_theta=100000.0,
                      rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **shape)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def run_trl(traces, model_dir: Path, batch: int, steps: int, checkpointing: bool, tmp: Path) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from cotdistill.template import PromptTemplate

    tpl = PromptTemplate()
    ds = Dataset.from_dict({"prompt": [tpl.render_prompt(t.question) for t in traces],
                            "completion": [tpl.render_completion(t.output) for t in traces]})
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(model_dir)
    args = SFTConfig(output_dir=str(tmp / "trl"), report_to="none", save_strategy="no", max_steps=steps,
                     per_device_train_batch_size=batch, bf16=True, gradient_checkpointing=checkpointing,
                     disable_tqdm=True, logging_steps=1000, learning_rate=5e-5, use_cpu=not torch.cuda.is_available())
    tr = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    t = time.perf_counter()
    tr.train()
    wall = time.perf_counter() - t
    tokens = sum(len(x) for x in tr.train_dataset[: steps * batch]["input_ids"])
    return {"tokens": tokens, "train_wall_s": round(wall, 2), "tokens_per_s": round(tokens / wall, 1),
            "gradient_checkpointing": checkpointing}


def run_presets(traces, base: Path, tmp: Path, steps: int, batch: int) -> dict:
    """Each --distributed preset on every GPU of this machine, a few steps through the CLI."""
    import importlib.util
    import subprocess

    import torch
    import yaml

    from cotdistill.distributed import PRESETS
    from cotdistill.traces import write_traces
    from cotdistill.train import TrainConfig

    n = torch.cuda.device_count()
    tf = tmp / "preset-traces.jsonl"
    write_traces(tf, traces[: steps * batch])
    cfg = TrainConfig.default(max_steps=steps, epochs=1, batch_size=batch, precision="bf16", model_dtype="float32",
                              save_steps=10_000, logging_steps=1, template="plain", pack_length=4096)
    cfg_file = tmp / "preset-train.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    out: dict = {}
    for preset in PRESETS:
        if preset.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
            out[preset] = "not run: deepspeed is not installed"
            continue
        d = tmp / f"preset-{preset}"
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "cotdistill", "train", "--traces", str(tf), "--student", str(base),
                            "--out", str(d), "--config", str(cfg_file), "--quiet", "--distributed", preset,
                            "--nproc", str(n)], capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            out[preset] = {"ok": False, "error": (r.stderr or r.stdout).strip()[-1500:]}
        else:
            s = json.loads((d / "train_summary.json").read_text())
            out[preset] = {"ok": True, "processes": s.get("world_size"), "parallelism": s.get("parallelism"),
                           "final_loss": s.get("final_loss"), "tokens_per_s": s.get("tokens_per_s"),
                           "wall_s": round(time.perf_counter() - t0, 1)}
        print(f"preset {preset}: {out[preset]}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--eval-items", type=int, default=300)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--tokenizer", help="a local tokenizer directory (default: a character tokenizer)")
    ap.add_argument("--peak-tflops", type=float, help="device dense bf16 peak, when not a known GPU")
    ap.add_argument("--tiny", action="store_true", help="a 2-layer model: a smoke run of this script on a CPU")
    ap.add_argument("--skip-trl", action="store_true")
    ap.add_argument("--skip-presets", action="store_true", help="do not run the --distributed presets")
    ap.add_argument("--preset-steps", type=int, default=8)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    import torch
    import transformers

    from cotdistill.evaluate import evaluate
    from cotdistill.tasks import get_task
    from cotdistill.tasks.arith import lab_rationale
    from cotdistill.traces import Trace
    from cotdistill.train import TrainConfig, train

    n_train = args.steps * args.batch
    task = get_task("arith", n_train=max(n_train, 64))
    traces = [Trace(id=e.id, task="arith", question=e.question, gold=e.answer, teacher="lab", level=4,
                    output=lab_rationale(e, 4)) for e in task.load("train")[:n_train]]
    test = task.load("test")[: args.eval_items]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    report: dict = {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "device": device, "cpu": platform.processor() or platform.machine(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()},
        "steps": args.steps, "batch": args.batch,
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = tmp / "base"
        t0 = time.perf_counter()
        report["params"] = build_model(base, args.tiny, args.tokenizer, [t.question + t.output for t in traces])
        report["build_s"] = round(time.perf_counter() - t0, 1)
        print(f"model: {report['params'] / 1e6:.0f} M parameters on {device}", flush=True)

        cfg = TrainConfig.default(max_steps=args.steps, epochs=1, batch_size=args.batch, precision="bf16",
                                  model_dtype="float32", save_steps=10_000, logging_steps=10, template="plain",
                                  pack_length=4096, peak_tflops=args.peak_tflops)
        res = train(traces, str(base), tmp / "trained", cfg, progress=True)
        s = res.summary
        report["cotdistill_train"] = {k: s.get(k) for k in ("train_tokens", "train_wall_s", "tokens_per_s", "mfu",
                                                             "peak_flops", "batching", "precision", "device", "final_loss")}
        print(f"cotdistill train: {s['tokens_per_s']:,.0f} tokens/s, MFU {s.get('mfu')}", flush=True)

        if not args.skip_trl:
            try:
                import datasets  # noqa: F401
                import trl  # noqa: F401
            except ImportError as e:
                report["trl"] = f"not run: {e}"
            else:
                for ck in (True, False):
                    r = run_trl(traces, base, args.batch, args.steps, ck, tmp)
                    report[f"trl_{'checkpointing' if ck else 'no_checkpointing'}"] = r
                    print(f"TRL SFTTrainer (gradient checkpointing {ck}): {r['tokens_per_s']:,.0f} tokens/s", flush=True)
                ours = s["tokens_per_s"]
                report["ratio_vs_trl_default"] = round(ours / report["trl_checkpointing"]["tokens_per_s"], 2)
                report["ratio_vs_trl_no_checkpointing"] = round(ours / report["trl_no_checkpointing"]["tokens_per_s"], 2)

        t0 = time.perf_counter()
        m = evaluate(str(tmp / "trained"), test, max_new_tokens=args.max_new_tokens, dtype="bfloat16", progress=False)
        report["cotdistill_evaluate"] = {k: m.get(k) for k in ("n", "accuracy", "mean_output_tokens", "tokens_per_s",
                                                                "generate_s", "n_length_capped", "dtype", "device")}
        report["cotdistill_evaluate"]["wall_s"] = round(time.perf_counter() - t0, 1)
        print(f"cotdistill evaluate: {m['n']} items, {m['tokens_per_s']:,.0f} generated tokens/s", flush=True)
        if not args.skip_presets and torch.cuda.is_available():
            report["presets"] = run_presets(traces, base, tmp, args.preset_steps, args.batch)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
