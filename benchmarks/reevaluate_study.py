"""Evaluate every finished cell of a study again with another decoding (e.g. the paper's ``beam:5``
for the commonsense sets) and report both decodings per cell, paired on the same items.

    python benchmarks/reevaluate_study.py paper-strategyqa-smollm2-out --decoding beam:5 \
        --json benchmarks/results/paper_strategyqa_smollm2_beam5.jsonl

Each cell's model is evaluated into ``cells/<id>/eval-<name>/`` (``name``: the decoding with ':'
removed, e.g. ``eval-beam5``; resumable, a `cotdistill evaluate` directory) with the study's own
evaluation settings otherwise. Rows: the cell's factors, the study's decoding and accuracy, this
decoding's accuracy and interval, the paired difference (this − study's) with its bootstrap
interval and exact McNemar p, and the evaluation's wall seconds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", type=Path, help="a study's output_dir")
    ap.add_argument("--decoding", required=True, help="e.g. beam:5")
    ap.add_argument("--json", type=Path, default=None, help="write the rows here (JSONL)")
    a = ap.parse_args()
    from cotdistill.evaluate import compare

    study = json.loads((a.study / "study.json").read_text())
    ev = dict(study.get("config", study).get("eval") or {})
    name = "eval-" + a.decoding.replace(":", "")
    if any(isinstance(t, dict) and t.get("options") for t in study.get("tasks", [])):
        sys.exit("error: a task with options (arith) is not re-evaluated here: `cotdistill evaluate` loads a task's default items")
    rows = []
    for line in (a.study / "results.jsonl").read_text().splitlines():
        r = json.loads(line) if line.strip() else None
        if not r or r.get("status", "ok") != "ok":
            continue
        cell = a.study / "cells" / r["cell"]
        if not (cell / "model").is_dir():
            print(f"skip {r['cell']}: no model kept", file=sys.stderr)
            continue
        base = json.loads((cell / "eval" / "metrics.json").read_text())
        out = cell / name
        cmd = [sys.executable, "-m", "cotdistill", "evaluate", "--model", str(cell / "model"), "--task", r["task"],
               "--out", str(out), "--decoding", a.decoding, "--quiet",
               "--max-new-tokens", str(ev.get("max_new_tokens", base.get("max_new_tokens", "auto")))]
        subprocess.run(cmd, check=True)
        m = json.loads((out / "metrics.json").read_text())
        c = compare(cell / "eval", out)
        rows.append({k: r.get(k) for k in ("task", "teacher", "level", "format", "student", "seed")} | {
            "teacher": str(r.get("teacher", "")).rsplit("#", 1)[-1],
            "study_decoding": base.get("decoding"), "study_accuracy": base["accuracy"],
            "decoding": a.decoding, "n": m["n"], "accuracy": m["accuracy"], "ci_low": m["ci_low"], "ci_high": m["ci_high"],
            "accuracy_lenient": m.get("accuracy_lenient"), "difference": c["difference"],
            "difference_ci": [c.get("ci_low"), c.get("ci_high")], "mcnemar_p": c["mcnemar_p"],
            "evaluate_wall_s": m.get("wall_s")})
        print(f"{r['cell']}: {base.get('decoding')} {100 * base['accuracy']:.1f} % -> {a.decoding} "
              f"{100 * m['accuracy']:.1f} % (p = {c['mcnemar_p']:.3g})", flush=True)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text("".join(json.dumps(x) + "\n" for x in rows))


if __name__ == "__main__":
    main()
