"""The untuned student's baselines on a task: strict zero-shot, with the answer form asked for
(``--instruction answer``), and with solved train-split examples shown (``--fewshot N``), each with
its strict and lenient accuracy. Resumable (each is a `cotdistill evaluate` directory).

    python benchmarks/untuned_baselines.py --model smollm2-135m --task svamp --out paper-svamp-smollm2-out/baselines \
        --json benchmarks/results/untuned_baselines_smollm2.jsonl

Rows: task, model, variant (zero-shot | instructed | N-shot), n, accuracy (strict) with its 95 %
interval, accuracy_lenient, n_no_answer, mean_output_tokens, template_source, evaluate wall seconds,
the command and the machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from calibrate_quickstart import cpu_name  # (benchmarks/ is on the path of a script run from it)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="svamp")
    ap.add_argument("--out", type=Path, required=True, help="one evaluation directory per variant below it")
    ap.add_argument("--fewshot", type=int, default=4)
    ap.add_argument("--max-new-tokens", default="512")
    ap.add_argument("--json", type=Path, default=None, help="write the rows here (JSONL)")
    a = ap.parse_args()
    variants = {
        "zero-shot": [],
        "instructed": ["--instruction", "answer"],
        f"{a.fewshot}-shot": ["--instruction", "answer", "--fewshot", str(a.fewshot)],
    }
    rows = []
    for name, extra in variants.items():
        d = a.out / name
        cmd = [sys.executable, "-m", "cotdistill", "evaluate", "--model", a.model, "--task", a.task, "--out", str(d),
               "--max-new-tokens", a.max_new_tokens, "--quiet", *extra]
        t0 = time.time()
        subprocess.run(cmd, check=True)
        m = json.loads((d / "metrics.json").read_text())
        rows.append({"task": a.task, "model": a.model, "variant": name, "n": m["n"], "accuracy": m["accuracy"],
                     "ci_low": m["ci_low"], "ci_high": m["ci_high"], "accuracy_lenient": m["accuracy_lenient"],
                     "n_no_answer": m["n_no_answer"], "mean_output_tokens": m["mean_output_tokens"],
                     "template_source": m.get("template_source"), "evaluate_wall_s": m.get("wall_s"),
                     "this_call_s": round(time.time() - t0, 1), "command": " ".join(["cotdistill", *cmd[3:]]),
                     "machine": {"cpu": cpu_name(), "cores": __import__("os").cpu_count()}})
        print(f"{name:>10}: strict {100 * m['accuracy']:.1f} % [{100 * m['ci_low']:.1f}, {100 * m['ci_high']:.1f}], "
              f"lenient {100 * m['accuracy_lenient']:.1f} %, no answer line {m['n_no_answer']}/{m['n']}", flush=True)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
