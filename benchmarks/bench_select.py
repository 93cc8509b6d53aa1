"""Does `select` find the grid's best supervision with a fraction of its compute? Do mixed and
curriculum supervision beat the best single level?

For each seed, on the quickstart's arith task (steps 3, n_train 12800, 300 test problems) and one
scratch student, with the quickstart's training recipe (400 steps x 32, scratch defaults):

1. ``select`` over the quickstart levels (budget = a fraction of the grid's tokens), scored on a
   validation split carved from train;
2. the full grid: every level trained 400 steps, test accuracy (greedy, 300 problems);
3. extra candidates trained 400 steps: ``mix:3-6`` (per-item level by difficulty) and a
   coarse-to-fine curriculum.

Prints the command, the machine and a table; writes ``OUT/bench.json`` after every step (a rerun
reuses finished runs). Tokens are the trainer's own counts (prompt + completion, no padding).

    python benchmarks/bench_select.py --seed 0 --out bench-select-out [--student scratch:llama-xxs]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, action="append", help="repeatable; default 0")
    ap.add_argument("--out", default="bench-select-out")
    ap.add_argument("--student", default="scratch:llama-xxs")
    ap.add_argument("--levels", default="0,2,3,4,6")
    ap.add_argument("--extras", default="mix:3-6,curriculum:2-4")
    ap.add_argument("--budget", type=float, default=0.4)
    ap.add_argument("--mode", default="continue")
    ap.add_argument("--score", default="soft")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-extras", action="store_true")
    ap.add_argument("--only-extras", action="store_true", help="train and test the extras only (no select, no grid)")
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    from cotdistill.mix import Candidate, TraceSource, train_candidate
    from cotdistill.select import run_select, score_model
    from cotdistill.tasks import get_task
    from cotdistill.train import TrainConfig

    print("command:", " ".join([sys.executable, *sys.argv]))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {a.threads}; "
          f"load avg {os.getloadavg()[0]:.1f}")
    task_opts = {"steps": 3, "seed": 0, "n_train": 12800, "n_test": 300}
    task = get_task("arith", **task_opts)
    train_ex, test_ex = task.load("train"), task.load("test")
    levels = [int(x) for x in a.levels.split(",")]
    extras = [x for x in a.extras.split(",") if x] if not a.skip_extras else []
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    res_path = out / "bench.json"
    res = json.loads(res_path.read_text()) if res_path.exists() else {}

    def save():
        tmp = res_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(res, indent=2))
        os.replace(tmp, res_path)

    for seed in a.seed or [0]:
        key = f"{a.student}|s{seed}|{a.mode}|{a.score}|b{a.budget}"
        R = res.setdefault(key, {"seed": seed, "student": a.student, "grid": {}, "extras": {}})
        # 1. select
        if "select" not in R and not a.only_extras:
            t0 = time.time()
            sel = run_select(dict(task="arith", task_options=task_opts, student=a.student, teachers=["lab"],
                                  levels=levels, budget=a.budget, out=str(out / f"select-{a.student.split(':')[-1]}-s{seed}-{a.mode}-{a.score}"),
                                  seed=seed, mode=a.mode, score=a.score, threads=a.threads,
                                  train={"max_steps": 400, "batch_size": 32}), progress=False)
            R["select"] = {"winner_level": sel["winner"]["level"], "spent_tokens": sel["spent_tokens"],
                           "grid_tokens_est": sel["grid_tokens"], "rounds": [
                               {"steps": rd["steps"], "scores": {s["candidate"]: [round(s["accuracy"], 4), round(s["p_gold"], 4)]
                                                                 for s in rd["scores"]}, "kept": rd["kept"]}
                               for rd in sel["rounds"]], "wall_s": round(time.time() - t0, 1)}
            save()
            print(f"seed {seed}: select chose L{sel['winner']['level']} with {sel['spent_tokens']:,} tokens "
                  f"({100 * sel['fraction_of_grid']:.1f} % of the estimated grid) in {time.time() - t0:.0f}s", flush=True)
        # 2. grid and 3. extras
        for lv in ([] if a.only_extras else levels) + extras:
            bucket = R["grid"] if lv in levels else R["extras"]
            if str(lv) in bucket:
                continue
            t0 = time.time()
            cand = Candidate.parse("lab", lv, "cot")
            cfg = TrainConfig.scratch(max_steps=400, batch_size=32, seed=seed, threads=a.threads)
            mdir = out / "runs" / f"{a.student.split(':')[-1]}-s{seed}-{cand.slug}"
            info = train_candidate(cand, train_ex, a.student, mdir, cfg, TraceSource())
            maxlen = 400 if lv in (5, 6) or isinstance(lv, str) else 160
            sc = score_model(mdir, test_ex, max_new_tokens=maxlen)
            sc.pop("predictions")
            bucket[str(lv)] = {"accuracy": sc["accuracy"], "ci": [sc["ci_low"], sc["ci_high"]],
                               "train_tokens": info["train_tokens"], "wall_s": round(time.time() - t0, 1)}
            save()
            print(f"seed {seed}: {cand.name}: test accuracy {100 * sc['accuracy']:.1f} "
                  f"[{100 * sc['ci_low']:.1f}, {100 * sc['ci_high']:.1f}], {info['train_tokens']:,} tokens, "
                  f"{time.time() - t0:.0f}s", flush=True)
        if a.only_extras:
            continue
        g = R["grid"]
        best = max(g, key=lambda k: g[k]["accuracy"])
        chosen = str(R["select"]["winner_level"])
        grid_tok = sum(v["train_tokens"] for v in g.values())
        R["summary"] = {"grid_best": best, "grid_best_acc": g[best]["accuracy"], "chosen": chosen,
                        "chosen_acc": g.get(chosen, {}).get("accuracy"),
                        "gap_pts": round(100 * (g[best]["accuracy"] - g.get(chosen, {"accuracy": float("nan")})["accuracy"]), 2),
                        "fraction_of_grid_tokens": round(R["select"]["spent_tokens"] / grid_tok, 4)}
        save()
        print(f"seed {seed}: {json.dumps(R['summary'])}", flush=True)

    # table
    print("\n| seed | grid (test acc %) | grid best | select chose | gap (pts) | tokens vs grid | extras (test acc %) |")
    print("|---|---|---|---|---|---|---|")
    for key, R in res.items():
        if "summary" not in R or not key.startswith(a.student):
            continue
        g = " ".join(f"L{k}:{100 * v['accuracy']:.1f}" for k, v in R["grid"].items())
        e = " ".join(f"{k}:{100 * v['accuracy']:.1f}" for k, v in R["extras"].items())
        s = R["summary"]
        print(f"| {R['seed']} ({key.split('|', 2)[2]}) | {g} | L{s['grid_best']} | L{s['chosen']} | {s['gap_pts']} | "
              f"{100 * s['fraction_of_grid_tokens']:.1f} % | {e} |")


if __name__ == "__main__":
    main()
