"""Distillation objectives against SFT for the two quickstart students, on `arith`, offline.

    python benchmarks/compare_objectives.py --out objectives-out \
        --json benchmarks/results/objectives_arith.jsonl

1. Level-3 `lab` traces of the quickstart's `arith` task (12,800 problems, 3 steps).
2. A teacher model for the logit objectives: `scratch:llama-xs` trained for 800 steps (two passes)
   on those traces with `cotdistill train` (the students' character tokenizer), evaluated on the
   test split. (`scratch:llama-s` at 400 steps stayed at 9.3 %: a teacher below its students.)
3. A study over objectives [sft, logit-kd, on-policy, preference, step-by-step] x students [scratch:llama-xxs,
   scratch:llama-xs] x seeds, every cell with the quickstart recipe (400 steps x 32 examples) on
   the same traces; the report compares each objective's curve with the student's SFT by paired
   tests on the same 300 test items.

Compute is counted per cell in FLOPs (`compute_flops` in each cell's train_summary.json): student
forward+backward 6 N per trained token, teacher forward 2 N_t per scored token, sampling 2 N per
generated token. The logit-kd table is one teacher pass over the traces, paid by the first cell
that needs it and reused by every other; on-policy pays a teacher forward and student sampling
at every step. Steps and examples are equal across objectives; compute is not, and is reported.
`--equal-compute logit-kd` adds the equal-compute arm: SFT trained for as many steps as the
objective's mean compute per cell buys (the teacher table charged in full to every cell, or with
`--table-charge shared` split over the cells that read it), tested against the objective's cells
on the same (seed, test item) pairs.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

TASK = {"name": "arith", "options": {"steps": 3, "seed": 0, "n_train": 12800, "n_test": 300}}
RECIPE = {"max_steps": 400, "batch_size": 32, "save_steps": 100}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="objectives-out")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--teacher", default="scratch:llama-xs", help="the teacher model's architecture")
    ap.add_argument("--teacher-steps", type=int, default=800)
    ap.add_argument("--objectives", default="sft,logit-kd,on-policy,preference,step-by-step")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--on-policy-warmup", type=float, default=0.5,
                    help="on-policy: fraction of steps of SFT before the student samples (a scratch student's "
                         "samples are noise at first)")
    ap.add_argument("--equal-compute", default="",
                    help="objectives (comma-separated) also compared with SFT at equal compute: SFT trained for the "
                         "steps the objective's mean compute per cell buys (the logit-kd teacher table charged as "
                         "--table-charge says)")
    ap.add_argument("--table-charge", choices=["full", "shared"], default="full",
                    help="equal compute: charge the logit-kd teacher table in full to every cell (full), or split "
                         "over the cells that read it (shared)")
    ap.add_argument("--json", default=None, help="write one row per cell here")
    a = ap.parse_args()

    from cotdistill.generate import GenerateConfig, generate
    from cotdistill.report import write_report
    from cotdistill.study import load_study_config, run_study
    from cotdistill.tasks import get_task
    from cotdistill.train import TrainConfig, is_complete, train

    out = Path(a.out).resolve()
    t0 = time.perf_counter()
    traces = out / "teacher-data" / "traces.jsonl"
    if not traces.exists():
        exs = get_task("arith", **TASK["options"]).load("train")
        generate(exs, traces.parent, GenerateConfig(teacher="lab", levels=[3]), progress=False)
    teacher = out / "teacher"
    t_teacher = time.perf_counter()
    if not is_complete(teacher):
        train([traces], a.teacher, teacher, TrainConfig.scratch(max_steps=a.teacher_steps, batch_size=32,
                                                               save_steps=100), progress=True, resume=True)
    t_teacher = time.perf_counter() - t_teacher
    from cotdistill.evaluate import evaluate

    teacher_eval = evaluate(str(teacher), get_task("arith", **TASK["options"]).load("test"), out_dir=out / "teacher-eval",
                            progress=False)
    cfg = load_study_config({
        "name": "objectives-arith", "output_dir": str(out / "study"), "tasks": [TASK], "teachers": ["lab"],
        "levels": [3], "formats": ["cot"], "students": ["scratch:llama-xxs", "scratch:llama-xs"],
        "seeds": list(range(a.seeds)), "objectives": a.objectives.split(","),
        "curate": {"keep": "correct", "decontaminate": False},
        "train": {**RECIPE, "teacher_model": str(teacher), "on_policy_warmup": a.on_policy_warmup}, "eval": {},
    })
    t_study = time.perf_counter()
    summary = run_study(cfg, jobs=a.jobs, progress=True)
    t_study = time.perf_counter() - t_study
    write_report(out / "study")
    rows = []
    for line in (out / "study" / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        s = json.loads((out / "study" / "cells" / r["cell"] / "model" / "train_summary.json").read_text()) \
            if r.get("status", "ok") == "ok" else {}
        rows.append({k: r.get(k) for k in ("cell", "student", "objective", "seed", "n", "accuracy", "ci_low", "ci_high",
                                           "mean_output_tokens", "status", "error")}
                    | {k: s.get(k) for k in ("train_tokens", "compute_flops", "teacher_forward_tokens", "generated_tokens",
                                             "teacher_params", "params", "train_wall_s")})
    t_equal = time.perf_counter()
    equal = [equal_compute(out, rows, obj, student, a.jobs, a.table_charge)
             for obj in filter(None, a.equal_compute.split(",")) for student in cfg.students]
    t_equal = time.perf_counter() - t_equal
    meta = {"command": "python benchmarks/compare_objectives.py " + " ".join(
                f"--{k.replace('_', '-')} {v}" for k, v in vars(a).items() if v is not None),
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "teacher": a.teacher, "teacher_steps": a.teacher_steps, "teacher_accuracy": teacher_eval["accuracy"],
            "teacher_train_s": round(t_teacher, 1), "study_wall_s": round(t_study, 1),
            "equal_compute_wall_s": round(t_equal, 1),
            "total_wall_s": round(time.perf_counter() - t0, 1), "failed_cells": summary.failed}
    print(json.dumps(meta))
    for r in rows + equal:
        print(json.dumps(r))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text("".join(json.dumps(r) + "\n" for r in [{"meta": meta}] + rows + equal))


def equal_compute(out: Path, rows: list[dict], objective: str, student: str, jobs: int, charge: str = "full") -> dict:
    """SFT for ``student`` trained with the compute ``objective`` used per cell (mean over seeds),
    against the objective's cells by an exact McNemar test on the same (seed, test item) pairs."""
    from cotdistill.evaluate import read_predictions
    from cotdistill.stats import mcnemar_exact
    from cotdistill.study import load_study_config, run_study

    cells = [r for r in rows if r["student"] == student and r["status"] == "ok"]
    sft = [r for r in cells if r["objective"] == "sft"]
    obj = [r for r in cells if r["objective"] == objective]
    if not sft or not obj:
        raise SystemExit(f"--equal-compute {objective}: {student} needs finished sft and {objective} cells "
                         "(give both in --objectives)")
    per_step = sum(r["compute_flops"] for r in sft) / len(sft) / RECIPE["max_steps"]
    # the logit-kd table is one teacher pass over the traces, paid by the first cell that needs it
    # and reused by the rest (one table serves every student: the same traces and tokenizer);
    # --table-charge full charges the whole pass to every cell, shared splits it over the readers
    table = max((2 * (r["teacher_params"] or 0) * (r["teacher_forward_tokens"] or 0) for r in rows
                 if r["objective"] == objective and r["status"] == "ok"), default=0)
    if objective == "logit-kd" and not table:
        raise SystemExit("--equal-compute logit-kd: no cell of this study computed the teacher table (it was "
                         "cached before), so its cost is unknown; run the study into a fresh --out")
    readers = sum(1 for r in rows if r["objective"] == objective and r["status"] == "ok")
    if objective == "logit-kd":  # first take the table out of the cell that paid it, then charge it
        share = table if charge == "full" else table / readers
        charged = [r["compute_flops"] - (table if r["teacher_forward_tokens"] else 0) + share for r in obj]
    else:
        charged = [r["compute_flops"] for r in obj]
    steps = round(sum(charged) / len(charged) / per_step)
    slug = student.replace(":", "-") + ("" if charge == "full" or objective != "logit-kd" else "-shared-table")
    cfg = load_study_config({
        "name": f"equal-compute-{objective}-{slug}", "output_dir": str(out / f"equal-compute-{objective}-{slug}"),
        "tasks": [TASK], "teachers": ["lab"], "levels": [3], "formats": ["cot"], "students": [student],
        "seeds": sorted(r["seed"] for r in obj), "objectives": ["sft"],
        "curate": {"keep": "correct", "decontaminate": False},
        "train": {**RECIPE, "max_steps": steps}, "eval": {},
    })
    if run_study(cfg, jobs=jobs, progress=True).failed:
        raise SystemExit(f"equal-compute SFT cells failed: see {cfg.output_dir}/results.jsonl")
    study = out / "study"
    eq = {json.loads(x)["seed"]: json.loads(x) for x in (Path(cfg.output_dir) / "results.jsonl").read_text().splitlines()}
    ours, theirs, accs = [], [], []
    for r in obj:
        mine = {p["id"]: bool(p["correct"]) for p in
                read_predictions(study / "cells" / r["cell"] / "eval" / "predictions.jsonl")}
        other = {p["id"]: bool(p["correct"]) for p in
                 read_predictions(Path(cfg.output_dir) / "cells" / eq[r["seed"]]["cell"] / "eval" / "predictions.jsonl")}
        ids = sorted(set(mine) & set(other))
        ours += [mine[i] for i in ids]
        theirs += [other[i] for i in ids]
        accs.append(eq[r["seed"]]["accuracy"])
    test = mcnemar_exact(ours, theirs)
    return {"arm": "equal-compute", "student": student, "objective": objective, "table_charge": charge,
            "sft_steps": steps,
            "objective_steps": RECIPE["max_steps"], "objective_compute_flops": round(sum(charged) / len(charged)),
            "sft_compute_flops": round(sum(json.loads((Path(cfg.output_dir) / "cells" / eq[s]["cell"] / "model" /
                                                        "train_summary.json").read_text())["compute_flops"]
                                           for s in eq) / len(eq)),
            "objective_accuracy": sum(ours) / len(ours), "sft_accuracy": sum(theirs) / len(theirs),
            "sft_accuracy_per_seed": accs, "pairs": len(ours), "only_objective": test["only_a"],
            "only_sft": test["only_b"], "mcnemar_p": test["p_value"]}


if __name__ == "__main__":
    main()
