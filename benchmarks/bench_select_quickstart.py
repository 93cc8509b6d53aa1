"""Does `select` find the quickstart grid's best supervision, over 3 seeds and both students?

The acceptance test of `select`, run the way a user would: the quickstart study (``examples/quickstart.yaml``:
``arith``, lab teacher, levels 0/3/4 (0/2/3/4 in the runs recorded in docs/benchmarks.md), students ``scratch:llama-xxs`` and ``scratch:llama-xs``,
400 steps x 32) for seeds 0, 1, 2 is the grid; then, for every student and seed,
``cotdistill select --study STUDY --student S --seed N`` (budget 40 % of the grid's tokens,
validation carved from train) and the study's own comparison
(:func:`cotdistill.select.select_vs_grid`): is the choice the grid's best cell or within 2 test
accuracy points of it, and what share of the grid's training tokens did it spend?

A variant reruns ``select`` with other settings next to the default (its output directory gets
the variant's name), e.g. ``--variant halving-soft-wsd`` = successive halving ranked by P(gold) with
a constant learning rate until the last round, the method before this default: the baseline in
the same run.

    python benchmarks/bench_select_quickstart.py --study quickstart-out               # grid + default select
    python benchmarks/bench_select_quickstart.py --study quickstart-out --variant halving-soft-wsd
    python benchmarks/bench_select_quickstart.py --study quickstart-out --table-only

Cached: finished grid cells and selection rounds are reused, so a rerun after a change to the final
decision rule (``final``) only re-decides (each run then records ``select_wall_s`` of about 1 s; the
first record of a run has its training time). Appends the figures to
``benchmarks/results/select_quickstart.json`` (command, machine, load, per run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "select_quickstart.json"
sys.path.insert(0, str(HERE))
from calibrate_quickstart import cpu_name  # noqa: E402

VARIANTS = {
    # race, P(gold) score, cooldown every round, drop at z >= 2.58 and >= 0.05 below the leader
    "default": {},
    "race-hybrid": {"score": "hybrid"},
    # the first method: halving, P(gold), constant learning rate until the last round, no early drops
    "halving-soft-wsd": {"schedule": "halving", "score": "soft", "cooldown": "last", "drop_z": None},
    # the steps between (each measured once, see the README)
    "rejects-hybrid-wsd": {"schedule": "rejects", "score": "hybrid", "cooldown": "last", "drop_min_gap": 0.0},
    "rejects": {"schedule": "rejects", "score": "hybrid", "drop_min_gap": 0.0},
    "race-gap0": {"schedule": "race", "score": "hybrid", "drop_min_gap": 0.0},
    # the default with a larger budget: where does the later-learning student become reliable?
    "budget60": {"budget": 0.6},
    # screening at a smaller batch: the same tokens buy 4x the optimizer steps (does the later-learning
    # student pass its transition within the budget?); lr scaled by sqrt(8/32). Trains exactly what
    # `screen_batch: 0.25` trains (the same TrainConfig but for the checkpoint interval), measured
    # before that option existed; xxs seed 0 with both gave the same validation scores in every round
    "bs8": {"train": {"batch_size": 8, "max_steps": 1600, "save_steps": 400, "learning_rate": 2e-3}},
    "screen-quarter": {"screen_batch": 0.25},
}


def _one_select(study: str, student: str, seed: int, variant: str, threads: int) -> dict:
    from cotdistill.select import config_from_study, run_select

    over = dict(VARIANTS[variant])
    cfg = config_from_study(study, student=student, seed=seed, threads=threads, **over)
    if variant != "default":
        cfg = cfg.model_copy(update={"out": cfg.out + f"__{variant}"})
    t0 = time.time()
    load0 = os.getloadavg()[0]
    res = run_select(cfg, progress=False)
    return {"variant": variant, "student": student, "seed": seed, "out": cfg.out,
            "winner": res["winner"]["candidate"], "leader": res["winner"].get("leader"),
            "chosen_by": res["winner"].get("chosen_by"), "forecast": res["winner"].get("forecast"),
            "spent_tokens": res["spent_tokens"], "grid_tokens_est": res["grid_tokens"],
            "rounds": [{"steps": rd["steps"], "kept": rd["kept"],
                        "scores": {s["candidate"]: {"acc": round(s["accuracy"], 4), "p_gold": round(s["p_gold"], 4),
                                                    "hybrid": round(s.get("hybrid", float("nan")), 4)}
                                   for s in rd["scores"]}} for rd in res["rounds"]],
            "select_wall_s": res["wall_s"], "this_call_wall_s": round(time.time() - t0, 1), "load_at_start": load0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", default="quickstart-out", help="study directory (the grid; created if missing)")
    ap.add_argument("--config", default=str(ROOT / "examples" / "quickstart.yaml"))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--students", default="", help="comma-separated; default: the study's students")
    ap.add_argument("--variant", action="append", choices=sorted(VARIANTS), help="repeatable; default: default")
    ap.add_argument("--jobs", type=int, default=2, help="grid cells / selections in parallel (one torch thread each)")
    ap.add_argument("--table-only", action="store_true", help="print the table of what is there; run nothing")
    a = ap.parse_args()

    from cotdistill.select import select_vs_grid
    from cotdistill.study import load_study_config, run_study

    seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    variants = a.variant or ["default"]
    study = Path(a.study)
    command = " ".join([sys.executable, *sys.argv])
    machine = f"{cpu_name()}, {os.cpu_count()} cores"
    print("command:", command)
    print("machine:", machine, "| load average at start:", " ".join(f"{x:.2f}" for x in os.getloadavg()), flush=True)
    runs = []
    if not a.table_only:
        # the grid keeps the seeds it already has (results.jsonl lists the config's cells only)
        have = json.loads((study / "study.json").read_text()).get("seeds", []) if (study / "study.json").is_file() else []
        grid_seeds = sorted(set(have) | set(seeds))
        cfg = load_study_config(a.config, overrides={"output_dir": str(study), "seeds": grid_seeds})
        t0 = time.time()
        run_study(cfg, jobs=a.jobs, progress=True)
        print(f"grid: {time.time() - t0:.0f} s (cached cells are not retrained)", flush=True)
        students = [s for s in a.students.split(",") if s] or list(cfg.students)
        jobs = [(str(study), st, sd, v, 1) for v in variants for st in students for sd in seeds]
        with ProcessPoolExecutor(max_workers=a.jobs) as ex:
            for r in ex.map(_one_select, *zip(*jobs)):
                runs.append(r)
                print(f"{r['variant']} {r['student']} seed {r['seed']}: chose {r['winner']} with "
                      f"{r['spent_tokens']:,} tokens in {r['select_wall_s']:.0f} s", flush=True)
    cmp = select_vs_grid(study)
    rows = cmp["rows"]
    print("\n| variant | student | seed | grid best (test %) | select chose (test % in grid) | gap (pts) | within 2 pts | tokens vs grid |")
    print("|---|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["selection"], r["seed"])):
        variant = r["selection"].rsplit("__", 1)[-1] if Path(r["selection"]).name.count("__") > 1 else "default"
        ca = "—" if r["chosen_accuracy"] is None else f"{100 * r['chosen_accuracy']:.1f}"
        gap = "—" if r["gap"] is None else f"{100 * r['gap']:.1f}"
        print(f"| {variant} | {r['student']} | {r['seed']} | {r['grid_best']} ({100 * r['grid_best_accuracy']:.1f}) | "
              f"{r['chosen']} ({ca}) | {gap} | {'yes' if r['within_tolerance'] else 'no'} | "
              f"{100 * (r['fraction_of_grid'] or 0):.1f} % |")
    ok = [r for r in rows if r["within_tolerance"] and (r["fraction_of_grid"] or 1) <= 0.40 + 1e-9]
    print(f"\n{len(ok)} of {len(rows)} selections within 2 points of the grid's best at <= 40 % of its tokens")
    if runs:
        rec = json.loads(RESULTS.read_text()) if RESULTS.is_file() else []
        rec.append({"date": time.strftime("%Y-%m-%d %H:%M"), "command": command, "machine": machine,
                    "runs": runs, "vs_grid": rows})
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        tmp = RESULTS.with_suffix(".tmp")
        tmp.write_text(json.dumps(rec, indent=1) + "\n")
        os.replace(tmp, RESULTS)
        print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
