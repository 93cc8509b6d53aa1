"""Batched evaluation vs one-prompt-at-a-time generation, same model, same items, one run.

Trains (or reuses) a scratch student on the procedural ``arith`` task with level-3 lab rationales
(``cotdistill.train.train``), so that it writes real rationales ending in ``The answer is X.``, then
generates greedy answers for the same test items with:

* ``single-dynamic``: one prompt per ``generate`` call, default growing KV cache (the naive baseline);
* ``single-static``: one prompt per call, static KV cache;
* ``batched-dynamic``: our batching (longest prompts first, left padding, auto batch size), growing cache;
* ``batched-static``: the same with a static KV cache;
* ``batched-auto``: what ``cotdistill evaluate`` does by default (``--cache auto``).

Prints items/s and output tokens/s for each, the throughput ratio to the baseline measured in the
same run, and whether every prediction is identical to the baseline's.

    python benchmarks/bench_evaluate.py --threads 2 --n 300 --n-single 100
    python benchmarks/bench_evaluate.py --model DIR --task svamp --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path


def train_student(out: Path, steps: int, level: int, threads: int) -> Path:
    from cotdistill.tasks import get_task
    from cotdistill.tasks.arith import lab_rationale
    from cotdistill.traces import Trace
    from cotdistill.train import TrainConfig, train

    train_ex = get_task("arith", n_train=steps * 32).load("train")
    traces = [Trace(id=e.id, task="arith", question=e.question, gold=e.answer, teacher="lab", level=level,
                    output=lab_rationale(e, level)) for e in train_ex]
    cfg = TrainConfig.scratch(max_steps=steps, threads=threads)
    res = train(traces, "scratch:llama-xs", out, cfg, progress=False)
    return Path(res.model_dir)


def run(gen, enc, batches) -> tuple[float, dict, int]:
    t0 = time.perf_counter()
    outs: dict[str, tuple] = {}
    tokens = 0
    for b in batches:
        for (ex, _), g in zip(b, gen.generate([p for _, p in b])):
            outs[ex.id] = (g.output, g.output_tokens)
            tokens += g.output_tokens
    return time.perf_counter() - t0, outs, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="existing model directory (default: train a scratch student on arith L3)")
    ap.add_argument("--task", default="arith")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--steps", type=int, default=400, help="training steps when training the student")
    ap.add_argument("--level", type=int, default=3)
    ap.add_argument("--n", type=int, default=300, help="items for the batched runs")
    ap.add_argument("--n-single", type=int, default=100, help="items (a prefix of the batched ones) for the one-at-a-time runs")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from cotdistill import answers
    from cotdistill.evaluate import HFGenerator, _batches, load_model, resolve_template
    from cotdistill.tasks import get_task

    print("command:", " ".join([Path(sys.executable).name] + sys.argv))
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {args.threads} threads, load average {os.getloadavg()[0]:.1f} "
          "(shared machine: other jobs were running)")

    tmp = tempfile.TemporaryDirectory()
    if args.model:
        model_dir = Path(args.model)
    else:
        t0 = time.perf_counter()
        model_dir = train_student(Path(tmp.name) / "student", args.steps, args.level, args.threads)
        print(f"trained scratch:llama-xs on arith L{args.level} for {args.steps} steps in {time.perf_counter() - t0:.0f} s")
    model, tok = load_model(model_dir)
    tpl, _ = resolve_template(None, model_dir, tok)
    items = get_task(args.task, data_dir=args.data_dir).load("test")[: args.n]

    results = {}
    ref = None
    configs = [("single-dynamic", 1, "dynamic"), ("single-static", 1, "static"),
               ("batched-dynamic", "auto", "dynamic"), ("batched-static", "auto", "static"),
               ("batched-auto", "auto", "auto")]
    for name, bs, cache in configs:
        gen = HFGenerator(model, tok, tpl, "greedy", args.max_new_tokens, cache_implementation=cache)
        n = args.n_single if bs == 1 else args.n
        enc = [(e, gen.prompt_ids(e.question)) for e in items[:n]]
        enc.sort(key=lambda x: -len(x[1]))
        batches = _batches(enc, bs, args.max_new_tokens, "transformers")
        secs, outs, tokens = run(gen, enc, batches)
        if ref is None:
            ref = outs
        same = all(outs[i] == ref[i] for i in ref if i in outs)
        acc = sum(answers.correct(outs[e.id][0], e.answer, e.answer_type)[1] for e in items[:n]) / n
        results[name] = {"items": n, "seconds": secs, "items_per_s": n / secs, "tokens_per_s": tokens / secs,
                         "mean_output_tokens": tokens / n, "accuracy": acc, "batches": len(batches),
                         "identical_to_baseline": same}
        print(f"{name:16s} {n:4d} items {secs:7.1f} s  {n / secs:7.2f} items/s  {tokens / secs:8.0f} tok/s  "
              f"acc {100 * acc:5.1f} %  identical to baseline on shared items: {same}", flush=True)
    base = results["single-dynamic"]["tokens_per_s"]
    print("\nthroughput ratio to single-dynamic (output tokens/s):")
    for name, r in results.items():
        r["ratio"] = r["tokens_per_s"] / base
        print(f"  {name:16s} {r['ratio']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
