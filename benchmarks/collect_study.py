"""Collect a finished study (and optional zero-shot evaluations) into one JSONL row per cell.

    python benchmarks/collect_study.py paper-svamp-smollm2-out \
        --zero-shot paper-svamp-smollm2-out/zero-shot --out benchmarks/results/paper_svamp_smollm2.jsonl

Each row: task, teacher, level, format, student, seed, n, accuracy (strict) with its 95 % interval,
accuracy_lenient, n_no_answer, mean_output_tokens, train_tokens, and the cell's train / evaluate
wall seconds. A zero-shot row has level "zero-shot" and no training.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _read(p: Path) -> dict:
    return json.loads(p.read_text()) if p.is_file() else {}


def collect(study: Path, zero_shot: list[Path]) -> list[dict]:
    rows = []
    for line in (study / "results.jsonl").read_text().splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        cdir = study / "cells" / r["cell"]
        m = _read(cdir / "eval" / "metrics.json")
        marks = _read(cdir / "stages.json")
        rows.append({
            "task": r["task"], "teacher": r["teacher"].rsplit("#", 1)[-1], "level": r["level"], "format": r["format"],
            "student": r["student"], "objective": r.get("objective", "sft"), "seed": r["seed"], "status": r.get("status", "ok"), "n": r.get("n"),
            "accuracy": r.get("accuracy"), "ci_low": r.get("ci_low"), "ci_high": r.get("ci_high"),
            "accuracy_lenient": m.get("accuracy_lenient"), "n_no_answer": m.get("n_no_answer"),
            "n_capped_without_answer": m.get("n_capped_without_answer"),
            "mean_output_tokens": r.get("mean_output_tokens"), "train_tokens": r.get("train_tokens"),
            "train_wall_s": (marks.get("train") or {}).get("wall_s"),
            "evaluate_wall_s": (marks.get("evaluate") or {}).get("wall_s"),
            "answer_checker": m.get("answer_checker"), "error": r.get("error"),
        })
    for z in zero_shot:
        m = _read(z / "metrics.json")
        if not m:
            raise SystemExit(f"{z}/metrics.json not found")
        rows.append({
            "task": m.get("task"), "teacher": None, "level": "zero-shot", "format": None, "student": m.get("model"),
            "seed": None, "status": "ok", "n": m["n"], "accuracy": m["accuracy"], "ci_low": m["ci_low"],
            "ci_high": m["ci_high"], "accuracy_lenient": m.get("accuracy_lenient"), "n_no_answer": m.get("n_no_answer"),
            "n_capped_without_answer": m.get("n_capped_without_answer"),
            "mean_output_tokens": m.get("mean_output_tokens"), "train_tokens": 0, "train_wall_s": 0,
            "evaluate_wall_s": m.get("wall_s"), "answer_checker": m.get("answer_checker"), "error": None,
        })
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("study", type=Path)
    ap.add_argument("--zero-shot", type=Path, action="append", default=[])
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    rows = collect(a.study, a.zero_shot)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print("| level | n | strict accuracy % (95 % CI) | lenient % | no answer | output tokens | train s | eval s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["status"] != "ok":
            print(f"| {r['level']} | failed: {r['error']} | | | | | | |")
            continue
        print(f"| {r['level']} | {r['n']} | {100 * r['accuracy']:.1f} ({100 * r['ci_low']:.1f}–{100 * r['ci_high']:.1f}) | "
              f"{100 * (r['accuracy_lenient'] or 0):.1f} | {r['n_no_answer']} | {r['mean_output_tokens']:.0f} | "
              f"{r['train_wall_s'] or 0:.0f} | {r['evaluate_wall_s'] or 0:.0f} |")


if __name__ == "__main__":
    main()
