"""The study report: aggregation over seeds, paired significance, findings, self-contained HTML."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest

from cotdistill.errors import UserError
from cotdistill.report import build_report, mcnemar_exact, paired_bootstrap, write_report

N = 200


def _make_study(root: Path, acc: dict[tuple[str, int, int], float], teachers=("lab",), fail: bool = False) -> Path:
    """A study directory as the runner writes it: cells/<id>/eval/predictions.jsonl + results.jsonl.

    ``acc[(student, level, seed)]`` is the fraction of the N items answered correctly; items are
    nested (an item right at a lower accuracy is right at every higher one), as for real students
    that learn the easy items first."""
    rows = []
    for teacher in teachers:
        for (student, level, seed), a in acc.items():
            tag = f"L{level}" if isinstance(level, int) else level.replace(":", "-")  # mix:3-6 -> mix-3-6
            ln = level if isinstance(level, int) else 4
            cell = f"arith__{teacher}__{tag}__cot__{student.replace(':', '-')}__s{seed}"
            d = root / "cells" / cell / "eval"
            d.mkdir(parents=True)
            k = round(a * N)
            order = list(range(N))
            random.Random(seed).shuffle(order)
            right = set(order[:k])
            with open(d / "predictions.jsonl", "w") as f:
                for i in range(N):
                    f.write(json.dumps({"id": f"q{i}", "correct": i in right, "output": "x"}) + "\n")
            lo, hi = max(0, a - 0.06), min(1, a + 0.06)
            rows.append({"task": "arith", "teacher": teacher, "level": level, "format": "cot", "student": student,
                         "seed": seed, "cell": cell, "status": "ok", "n": N, "accuracy": k / N, "ci_low": lo,
                         "ci_high": hi, "mean_output_tokens": 10 + 5 * ln, "train_tokens": 1000 * (ln + 1),
                         "wall_s": 1.0})
    if fail:
        rows.append({"task": "arith", "teacher": "lab", "level": 5, "format": "cot", "student": "scratch:llama-xs",
                     "seed": 0, "cell": "arith__lab__L5__cot__x__s0", "status": "failed", "stage": "train",
                     "error": "out of memory"})
    (root / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


ACC = {
    # weak student: peaks at L3, collapses on long rationales
    ("scratch:llama-xxs", 0, 0): 0.10, ("scratch:llama-xxs", 3, 0): 0.50, ("scratch:llama-xxs", 6, 0): 0.15,
    ("scratch:llama-xxs", 0, 1): 0.12, ("scratch:llama-xxs", 3, 1): 0.46, ("scratch:llama-xxs", 6, 1): 0.20,
    # stronger student: keeps improving with finer rationales
    ("scratch:llama-xs", 0, 0): 0.10, ("scratch:llama-xs", 3, 0): 0.60, ("scratch:llama-xs", 6, 0): 0.80,
    ("scratch:llama-xs", 0, 1): 0.09, ("scratch:llama-xs", 3, 1): 0.55, ("scratch:llama-xs", 6, 1): 0.75,
}


def test_mcnemar_exact_known_values():
    assert mcnemar_exact(0, 0) == 1.0
    # two-sided exact binomial: b=1, c=9 -> 2 * P(X<=1 | n=10, 1/2) = 2 * 11/1024
    assert math.isclose(mcnemar_exact(1, 9), 22 / 1024)
    assert math.isclose(mcnemar_exact(9, 1), 22 / 1024)
    assert mcnemar_exact(5, 5) == 1.0


def test_paired_bootstrap_interval():
    a = [0] * 50 + [1] * 50
    b = [1] * 100
    lo, hi = paired_bootstrap(a, b, iters=500)
    assert 0.35 < lo <= 0.5 <= hi < 0.65
    assert paired_bootstrap(a, a, iters=200) == (0.0, 0.0)


def test_findings_from_data(tmp_path):
    d = _make_study(tmp_path / "s", ACC)
    rep = build_report(d)
    text = "\n".join(rep["findings"])
    # best level per student, seeds aggregated
    assert "**scratch:llama-xxs** (arith, teacher lab, format cot): best supervision is L3 at 48.0 %" in text
    assert "**scratch:llama-xs** (arith, teacher lab, format cot): best supervision is L6 at 77.5 %" in text
    # monotonicity
    xxs = rep["per_student"][("arith", "lab", "cot", "scratch:llama-xxs")]
    xs = rep["per_student"][("arith", "lab", "cot", "scratch:llama-xs")]
    assert xxs["shape"].startswith("not monotonic: L3 is above both ends (L0 p = ")
    assert xs["shape"].startswith("rising with finer granularity (L0 → L6, p = ")
    assert "No single granularity is best for every student" in text and "separated from its next best" in text
    # effect sizes in points, never as "%"
    assert "ahead of the next best L6 by +30.5 points" in text
    # the gain over answer-only per student is reported, the trend across students is not claimed
    assert "whether the gain grows with student strength is not tested here" in text
    assert "(the 'Matthew effect')" not in text
    # paired tests: best vs answer-only is highly significant, items pooled over 2 seeds
    t = next(t for t in rep["tests"] if t["student"] == "scratch:llama-xs" and t["a"] == 0)
    assert t["n"] == 2 * N and t["p"] < 1e-10 and t["diff"] > 0.6
    agg = rep["agg"][("arith", "lab", "cot", "scratch:llama-xs", 6)]
    assert agg.n_seeds == 2 and math.isclose(agg.mean, 0.775) and math.isclose(agg.sd, 0.0353553, rel_tol=1e-4)


def test_write_report_md_html_and_failed_cells(tmp_path):
    d = _make_study(tmp_path / "s", ACC, teachers=("lab", "openai:gpt-4o-mini"), fail=True)
    paths = write_report(d)
    md = paths["md"].read_text()
    html = paths["html"].read_text()
    assert "| student | L0 (answer only) | L3 | L6 |" in md
    assert "**77.5 ± 3.5**" in md  # best level bold, mean ± sd over seeds
    assert "1 cell(s) failed" in md and "out of memory" in md
    figs = sorted(p.name for p in paths["figures"].glob("*.png"))
    assert any(f.startswith("granularity_") for f in figs) and "matthew.png" in figs and "teachers.png" in figs
    # self-contained: every figure embedded, no external references
    assert html.count("data:image/png;base64,") == md.count("![")
    assert "src='figures/" not in html and "<table>" in html


def test_report_cli(tmp_path):
    d = _make_study(tmp_path / "s", ACC)
    r = subprocess.run([sys.executable, "-m", "cotdistill", "report", str(d)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (d / "report.html").exists()
    r = subprocess.run([sys.executable, "-m", "cotdistill", "report", str(tmp_path / "nope")], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "does not exist" in r.stderr


def test_report_without_results(tmp_path):
    (tmp_path / "e").mkdir()
    with pytest.raises(UserError, match="no results.jsonl"):
        write_report(tmp_path / "e")


def test_findings_say_whether_mixed_supervision_helped(tmp_path):
    acc = dict(ACC)
    acc.update({("scratch:llama-xxs", "mix:3-6", 0): 0.62, ("scratch:llama-xxs", "mix:3-6", 1): 0.60,
                ("scratch:llama-xs", "curriculum:3-6", 0): 0.40, ("scratch:llama-xs", "curriculum:3-6", 1): 0.42})
    rep = build_report(_make_study(tmp_path / "s", acc))
    text = "\n".join(rep["findings"])
    assert ("Mixed / curriculum supervision for **scratch:llama-xxs** (arith, lab, cot): the best, mix:3-6 at "
            "61.0 %, helped against the best single level L3 at 48.0 % (+13.0 points") in text
    assert ("Mixed / curriculum supervision for **scratch:llama-xs** (arith, lab, cot): the best, curriculum:3-6 "
            "at 41.0 %, was worse against the best single level L6 at 77.5 % (−36.5 points") in text
    # the granularity shape is judged on the numeric levels only
    assert rep["per_student"][("arith", "lab", "cot", "scratch:llama-xs")]["shape"].startswith("rising")


def test_no_claim_that_the_paired_tests_do_not_support(tmp_path):
    """Close levels on one seed: no best level, no trend, no student-dependence is claimed."""
    acc = {("scratch:llama-xxs", 0, 0): 0.31, ("scratch:llama-xxs", 3, 0): 0.325, ("scratch:llama-xxs", 6, 0): 0.32,
           ("scratch:llama-xs", 0, 0): 0.31, ("scratch:llama-xs", 3, 0): 0.32, ("scratch:llama-xs", 6, 0): 0.325}
    rep = build_report(_make_study(tmp_path / "s", acc))
    text = "\n".join(rep["findings"])
    assert "best supervision is" not in text and "No single granularity" not in text
    assert "highest accuracy is L3 at 32.5 %, not separated from L6 at 32.0 % (McNemar p = " in text
    assert "is not settled by this study" in text
    for info in rep["per_student"].values():
        assert info["shape"].startswith("no trend separated from noise")
    assert "monoton" not in text and "rising" not in text
