"""Study reports: tables in the paper's layout, plots, paired significance and written findings.

``write_report(study_dir)`` reads ``results.jsonl`` (and each cell's ``eval/predictions.jsonl``
for paired tests) and writes ``report.md``, ``report.html`` (self-contained: PNGs embedded as
data URIs) and the PNGs under ``figures/``. Everything in the findings section is computed from
the data; nothing is templated prose about results that were not measured.

Seeds are aggregated as mean ± sample standard deviation (``±0`` with one seed, flagged).
Paired significance between two levels of one (task, teacher, format, student) uses the
predictions of the same test items (and seeds): exact two-sided McNemar test on the discordant
pairs plus a paired-bootstrap 95 % interval of the accuracy difference.
"""

from __future__ import annotations

import base64
import html
import json
import re
import os
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .fileio import atomic_write_text
from .errors import UserError
from .paths import nearby
from .records import StudyLayout, read_predictions, read_results

GroupKey = tuple  # (task, teacher, format)


# ------------------------------------------------------------------------------------------
# loading and aggregation
# ------------------------------------------------------------------------------------------
def load_results(study_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of ``results.jsonl``; merged from the cells first when ``study.json`` is present."""
    d = Path(study_dir)
    if not d.is_dir():
        raise UserError(f"study directory {d} does not exist: pass the output_dir of a study")
    lay = StudyLayout(d)
    if lay.config.exists():
        from pydantic import ValidationError

        from .study import StudyConfig, merge_results

        try:
            cfg = StudyConfig.model_validate(json.loads(lay.config.read_text()))
        except (ValidationError, ValueError, OSError):
            cfg = None  # a study.json of another version: its results.jsonl is still read below
        if cfg is not None:
            cfg.output_dir = str(d.resolve())
            try:
                merge_results(cfg)
            except (UserError, OSError):
                pass  # e.g. a replay file moved since: results.jsonl as the study last wrote it
    if not lay.results.exists():
        raise UserError(f"{d} has no results.jsonl{nearby(d, 'study.json')}: pass a study's output_dir, "
                        "or run `cotdistill study CONFIG` first")
    rows = [r.to_dict() for r in read_results(lay.results)]
    for r in rows:  # an objective other than SFT is its own curve, compared with the student's SFT curve
        if r.get("objective", "sft") != "sft":
            r["student"] = f"{r['student']} [{r['objective']}]"
    return rows


def _lvl_sort(level: Any) -> tuple:
    if isinstance(level, int):
        return (0, level, "")
    if level in ("human", "raw"):
        return (1, 0 if level == "human" else 1, "")
    return (2, 0, str(level))  # then mixed / curriculum pseudo-levels


def _lvl_name(level: Any) -> str:
    if level == "raw":
        return "raw reasoning"
    if not isinstance(level, int):
        return str(level)  # "human", "mix:3-6", "curriculum:2-4"
    return "L0 (answer only)" if level == 0 else f"L{level}"


@dataclass
class Agg:
    mean: float
    sd: float
    n_seeds: int
    ci_low: float
    ci_high: float
    mean_output_tokens: float | None
    train_tokens: float | None
    cells: list[str]

    def fmt(self, pct: bool = True) -> str:
        m = self.mean * 100
        if self.n_seeds > 1:
            return f"{m:.1f} ± {self.sd * 100:.1f}"
        return f"{m:.1f}"


def aggregate(rows: list[dict[str, Any]]) -> dict[tuple, Agg]:
    """(task, teacher, format, student, level) -> mean ± sd over seeds (ok rows only)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if r.get("status", "ok") != "ok":
            continue
        groups[(r["task"], r["teacher"], r["format"], r["student"], r["level"])].append(r)
    out = {}
    for k, rs in groups.items():
        accs = [float(r["accuracy"]) for r in rs]
        toks = [float(r["mean_output_tokens"]) for r in rs if r.get("mean_output_tokens") is not None]
        tt = [float(r["train_tokens"]) for r in rs if r.get("train_tokens") is not None]
        out[k] = Agg(
            mean=statistics.fmean(accs), sd=statistics.stdev(accs) if len(accs) > 1 else 0.0, n_seeds=len(accs),
            ci_low=statistics.fmean(float(r["ci_low"]) for r in rs),
            ci_high=statistics.fmean(float(r["ci_high"]) for r in rs),
            mean_output_tokens=statistics.fmean(toks) if toks else None,
            train_tokens=statistics.fmean(tt) if tt else None,
            cells=[r.get("cell", "") for r in rs],
        )
    return out


# ------------------------------------------------------------------------------------------
# paired significance
# ------------------------------------------------------------------------------------------
def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts ``b`` (A right, B wrong) and ``c``
    (via :func:`cotdistill.stats.mcnemar_exact`)."""
    from .stats import mcnemar_exact as _mc

    return float(_mc([1] * b + [0] * c, [0] * b + [1] * c)["p_value"])


def paired_bootstrap(a: list[int], b: list[int], iters: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % paired-bootstrap interval of mean(b) - mean(a) over the same items (``cotdistill.stats``)."""
    from .stats import paired_bootstrap_ci

    if not a:
        return 0.0, 0.0
    return paired_bootstrap_ci(a, b, resamples=iters, seed=seed)


def _predictions(study_dir: Path, cell: str) -> dict[str, int] | None:
    p = StudyLayout(study_dir).cell(cell).predictions
    if not p.exists():
        return None
    return {r.id: int(r.correct) for r in read_predictions(p, graded=True)}


def paired_test(study_dir: Path, cells_a: list[str], cells_b: list[str]) -> dict[str, Any] | None:
    """McNemar + paired bootstrap between two settings over the same items and seeds (cells are
    matched by seed, the cell id suffix ``__s<seed>``)."""
    def by_seed(cells):  # the cell id's "__s<seed>" part (an objective may follow it)
        out = {}
        for c in cells:
            m = re.search(r"__s(-?\d+)(?:__|$)", c)
            out[m.group(1) if m else c.rsplit("__", 1)[-1]] = c
        return out

    A, B = by_seed(cells_a), by_seed(cells_b)
    va: list[int] = []
    vb: list[int] = []
    for s in sorted(set(A) & set(B)):
        pa, pb = _predictions(study_dir, A[s]), _predictions(study_dir, B[s])
        if pa is None or pb is None:
            continue
        for k in sorted(set(pa) & set(pb)):
            va.append(pa[k])
            vb.append(pb[k])
    if not va:
        return None
    b = sum(1 for x, y in zip(va, vb) if x and not y)
    c = sum(1 for x, y in zip(va, vb) if y and not x)
    from .stats import mcnemar_exact as _mc

    p = float(_mc(va, vb)["p_value"])
    lo, hi = paired_bootstrap(va, vb)
    return {"n": len(va), "a_only": b, "b_only": c, "diff": (sum(vb) - sum(va)) / len(va), "p": p,
            "diff_lo": float(lo), "diff_hi": float(hi)}


# ------------------------------------------------------------------------------------------
# figures
# ------------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    from .fileio import atomic_path

    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path


def _student_label(spec: str) -> str:
    """``smollm2-135m (SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized))``: what the student really was."""
    from .students import describe_student

    base = spec.partition(" [")[0]  # "student [objective]"
    desc = describe_student(base)
    return spec if not desc or desc == base else f"{spec} ({desc})"


def _short(name: str) -> str:
    if name.startswith("replay:"):
        return "replay:" + Path(name.split(":", 1)[1]).name
    return name


# ------------------------------------------------------------------------------------------
# the report
# ------------------------------------------------------------------------------------------
def _student_strength(rows: list[dict], study_dir: Path) -> dict[str, float]:
    """Parameter count of each student when known (from its trained model), else its mean accuracy."""
    params: dict[str, float] = {}
    for r in rows:
        if r.get("status", "ok") != "ok" or r["student"] in params:
            continue
        model = StudyLayout(study_dir).cell(r.get("cell", "")).model
        s = model / "train_summary.json"
        cand = list(model.glob("*summary*.json")) if r.get("cell") else []
        for p in [s, *cand]:
            try:
                v = json.loads(p.read_text()).get("params")
            except (OSError, json.JSONDecodeError):
                continue
            if v:
                params[r["student"]] = float(v)
                break
    return params


ALPHA = 0.05  # a finding claims an order only when its paired test has p below this


def _shape(num: list[int], vals: list[float], inc: bool, dec: bool, best: Any, tests: dict[str, dict]) -> str:
    """Accuracy over the granularity levels, claimed only as far as the paired tests (best level
    vs each other level) support it."""
    if len(num) < 2:
        return "not assessed (one level)"
    lo_lv = num[vals.index(min(vals))]
    t_lo = tests.get(str(lo_lv)) if lo_lv != best else None
    spread = max(vals) - min(vals)
    if best not in num or t_lo is None or t_lo["p"] >= ALPHA:
        p = f", McNemar p = {t_lo['p']:.2g}" if t_lo else ""
        return (f"no trend separated from noise (the levels span {spread * 100:.1f} points; "
                f"best vs worst level{p})")
    ends = [lv for lv in (num[0], num[-1]) if lv != best]
    t_ends = [tests.get(str(lv)) for lv in ends]
    if len(ends) == 2 and all(t and t["p"] < ALPHA for t in t_ends):
        return (f"not monotonic: L{best} is above both ends (L{num[0]} p = {t_ends[0]['p']:.2g}, "
                f"L{num[-1]} p = {t_ends[1]['p']:.2g})")
    if inc and best == num[-1]:
        return f"rising with finer granularity (L{lo_lv} → L{best}, p = {t_lo['p']:.2g})"
    if dec and best == num[0]:
        return f"falling with finer granularity (L{best} → L{lo_lv}, p = {t_lo['p']:.2g})"
    return (f"L{best} is above L{lo_lv} (p = {t_lo['p']:.2g}); the order of the other levels is not separated")


def build_report(study_dir: str | os.PathLike) -> dict[str, Any]:
    """Compute everything the report shows (tables, tests, findings) as plain data."""
    d = Path(study_dir)
    rows = load_results(d)
    ok = [r for r in rows if r.get("status", "ok") == "ok"]
    failed = [r for r in rows if r.get("status") == "failed"]
    agg = aggregate(rows)
    students = list(dict.fromkeys(r["student"] for r in ok))
    teachers = list(dict.fromkeys(r["teacher"] for r in ok))
    tasks = list(dict.fromkeys(r["task"] for r in ok))
    formats = list(dict.fromkeys(r["format"] for r in ok))
    levels = sorted({r["level"] for r in ok}, key=_lvl_sort)
    params = _student_strength(ok, d)

    # A teacher that only supplies answer-only (L0) or human-rationale cells (the paper's `human`
    # files) is a reference shared by every CoT teacher's curve, not a curve of its own.
    ref_teachers = [t for t in teachers if all(r["level"] in (0, "human") for r in ok if r["teacher"] == t)]
    if len(ref_teachers) < len(teachers):
        teachers = [t for t in teachers if t not in ref_teachers]
    else:
        ref_teachers = []

    # per (task, teacher, student, format): level -> Agg; answer-only (L0) and human rows are shared
    # by all formats (and by all teachers when a reference teacher supplies them)
    def cell_agg(task, teacher, fmt, student, level):
        a = agg.get((task, teacher, fmt, student, level))
        if a is None and (level == 0 or level == "human"):
            a = agg.get((task, teacher, "cot", student, level))
            for ref in ref_teachers:
                if a is None:
                    a = agg.get((task, ref, "cot", student, level))
            if a is None and " [" in student:  # answer only is the same for every objective: the SFT cell
                a = cell_agg(task, teacher, fmt, student.partition(" [")[0], level)
        return a

    findings: list[str] = []
    tests: list[dict[str, Any]] = []
    per_student: dict[tuple, dict[str, Any]] = {}
    for task in tasks:
        for teacher in teachers:
            for fmt in formats:
                for st in students:
                    curve = {lv: cell_agg(task, teacher, fmt, st, lv) for lv in levels}
                    curve = {lv: a for lv, a in curve.items() if a is not None}
                    nonzero = [lv for lv in curve if lv != 0]
                    if not nonzero or (fmt != "cot" and all(lv in (0, "human") for lv in curve)):
                        continue
                    best = max(curve, key=lambda lv: curve[lv].mean)
                    worst = min(curve, key=lambda lv: curve[lv].mean)
                    num = sorted(lv for lv in curve if isinstance(lv, int))  # the granularity axis only
                    vals = [curve[lv].mean for lv in num]
                    # a difference inside the seeds' spread is not a change of direction
                    tol = max([curve[lv].sd for lv in num] + [0.0])
                    inc = all(b >= a - tol for a, b in zip(vals, vals[1:]))
                    dec = all(b <= a + tol for a, b in zip(vals, vals[1:]))
                    jump = None
                    if len(num) >= 2:
                        j = max(range(len(num) - 1), key=lambda i: abs(vals[i + 1] - vals[i]))
                        jump = (num[j], num[j + 1], vals[j + 1] - vals[j])
                    # paired tests: the best level against every other level
                    mine: dict[str, dict] = {}
                    for other in [lv for lv in curve if lv != best]:
                        t = paired_test(d, curve[other].cells, curve[best].cells)
                        if t:
                            mine[str(other)] = t
                            tests.append({"task": task, "teacher": teacher, "format": fmt, "student": st,
                                          "a": other, "b": best, **t})
                    shape = _shape(num, vals, inc, dec, best, mine)
                    per_student[(task, teacher, fmt, st)] = {"curve": curve, "best": best, "shape": shape, "jump": jump,
                                                            "spread": curve[best].mean - curve[worst].mean}
    # written findings -------------------------------------------------------------------
    # Every order, best level or trend below is claimed only when a paired test on the same
    # test items separates it (McNemar p < ALPHA); otherwise the finding says "not separated".
    def pct(x):
        return f"{x * 100:.1f} %"

    def pts(x):
        return f"{'+' if x >= 0 else '−'}{abs(x) * 100:.1f} points"

    def test_of(key, a, b):
        return next((t for t in tests if (t["task"], t["teacher"], t["format"], t["student"]) == key
                     and {str(t["a"]), str(t["b"])} == {str(a), str(b)}), None)

    def p_of(t):
        return f"McNemar p = {t['p']:.2g}" if t else "no paired test"

    for key, info in per_student.items():
        task, teacher, fmt, st = key
        curve, best = info["curve"], info["best"]
        a = curve[best]
        ranked = sorted(curve, key=lambda lv: -curve[lv].mean)
        line = f"**{st}** ({task}, teacher {_short(teacher)}, format {fmt}): "
        seeds = f" (± {pct(a.sd)} over {a.n_seeds} seeds)" if a.n_seeds > 1 else ""
        if len(ranked) == 1:
            line += f"{_lvl_name(best)} at {pct(a.mean)}{seeds} (one level only)."
            info["best_supported"] = False
        else:
            second = ranked[1]
            t2 = test_of(key, second, best)
            sep = bool(t2 and t2["p"] < ALPHA)
            info["best_supported"] = sep
            if sep:
                line += (f"best supervision is {_lvl_name(best)} at {pct(a.mean)}{seeds}, ahead of the next best "
                         f"{_lvl_name(second)} by {pts(a.mean - curve[second].mean)} ({p_of(t2)})")
            else:
                line += (f"highest accuracy is {_lvl_name(best)} at {pct(a.mean)}{seeds}, not separated from "
                         f"{_lvl_name(second)} at {pct(curve[second].mean)} ({p_of(t2)}): no single best level is supported")
            base = curve.get(0)
            if base is not None and best != 0:
                t0 = test_of(key, 0, best)
                verdict = "above" if t0 and t0["p"] < ALPHA else "not separated from"
                line += f"; {_lvl_name(best)} is {verdict} answer-only ({pts(a.mean - base.mean)}, {p_of(t0)})"
            line += f"; over granularity: {info['shape']}."
        if a.n_seeds == 1:
            line += " One seed."
        findings.append(line)
        # mixed / curriculum supervision (cotdistill.mix) against the best single level
        plain = [lv for lv in curve if isinstance(lv, int)]
        mixed = [lv for lv in curve if not isinstance(lv, int) and lv not in ("human", "raw")]
        if plain and mixed:
            bp = max(plain, key=lambda lv: curve[lv].mean)
            bm = max(mixed, key=lambda lv: curve[lv].mean)
            diff = curve[bm].mean - curve[bp].mean
            t = paired_test(d, curve[bp].cells, curve[bm].cells)
            sig = t is not None and t["p"] < ALPHA
            verdict = ("helped" if diff > 0 and sig else "was worse" if diff < 0 and sig else "was not separated")
            others = ", ".join(f"{_lvl_name(lv)} {pct(curve[lv].mean)}" for lv in mixed if lv != bm)
            findings.append(
                f"Mixed / curriculum supervision for **{st}** ({task}, {_short(teacher)}, {fmt}): the best, "
                f"{_lvl_name(bm)} at {pct(curve[bm].mean)}, {verdict} against the best single level "
                f"{_lvl_name(bp)} at {pct(curve[bp].mean)} ({pts(diff)}, {p_of(t)})"
                + (f"; also {others}." if others else "."))
        # the teacher's raw (long) reasoning against its level-k rewrites / level-k traces
        rewrites = [lv for lv in curve if isinstance(lv, int) and lv > 0]
        if "raw" in curve and rewrites:
            br = max(rewrites, key=lambda lv: curve[lv].mean)
            diff = curve["raw"].mean - curve[br].mean
            t = test_of(key, "raw", br) or paired_test(d, curve[br].cells, curve["raw"].cells)
            sig = t is not None and t["p"] < ALPHA
            verdict = ("suits this student better than" if diff > 0 and sig else
                       "suits this student worse than" if diff < 0 and sig else "is not separated from")
            findings.append(
                f"Raw reasoning for **{st}** ({task}, {_short(teacher)}): {pct(curve['raw'].mean)}, which "
                f"{verdict} the best granularity level {_lvl_name(br)} at {pct(curve[br].mean)} ({pts(diff)}, {p_of(t)}).")
    # each non-SFT objective against the same student's SFT, level by level (same items, same seeds)
    for key, info in per_student.items():
        task, teacher, fmt, st = key
        if " [" not in st:
            continue
        base_st, obj = st.partition(" [")[0], st.partition(" [")[2].rstrip("]")
        base = per_student.get((task, teacher, fmt, base_st))
        if base is None:
            continue
        parts = []
        for lv in sorted(set(info["curve"]) & set(base["curve"]), key=_lvl_sort):
            if lv == 0 and obj == "step-by-step":
                continue
            a, b = base["curve"][lv], info["curve"][lv]
            if set(a.cells) == set(b.cells):
                continue  # the shared answer-only reference
            t = paired_test(d, a.cells, b.cells)
            sig = t is not None and t["p"] < ALPHA
            diff = b.mean - a.mean
            verdict = "helped" if diff > 0 and sig else "hurt" if diff < 0 and sig else "not separated"
            parts.append(f"{_lvl_name(lv)} {pct(b.mean)} vs {pct(a.mean)} ({pts(diff)}, {p_of(t)}: {verdict})")
        if parts:
            findings.append(f"Objective {obj} against SFT for **{base_st}** ({task}, {_short(teacher)}, {fmt}): "
                            + "; ".join(parts) + ".")
    # students compared with each other: under SFT (another objective is compared with its own SFT above)
    sft_students = [st for st in students if " [" not in st]
    # students differ in their best level?
    for task in tasks:
        for teacher in teachers:
            bests = {st: per_student[(task, teacher, "cot", st)]["best"] for st in sft_students
                     if (task, teacher, "cot", st) in per_student}
            if len(bests) > 1:
                supported = all(per_student[(task, teacher, "cot", st)].get("best_supported") for st in bests)
                peaks = ", ".join(f"{s} peaks at {_lvl_name(b)}" for s, b in bests.items())
                if len(set(map(str, bests.values()))) > 1:
                    if supported:
                        findings.append(
                            f"No single granularity is best for every student on {task} with {_short(teacher)}: "
                            + peaks + ", each separated from its next best level by a paired test "
                            "(the paper's finding that the best supervision depends on the student).")
                    else:
                        findings.append(
                            f"The students' highest levels differ on {task} with {_short(teacher)} ({peaks}), but not "
                            "every peak is separated from the student's next best level by a paired test: whether the "
                            "best supervision depends on the student is not settled by this study.")
                else:
                    findings.append(f"All students peak at the same level on {task} with {_short(teacher)} "
                                    f"({_lvl_name(next(iter(bests.values())))})"
                                    + ("." if supported else "; not every peak is separated from the next best level."))
    # where do the students differ most? (same test items: paired test across students)
    for task in tasks:
        for teacher in teachers:
            sts = [st for st in sft_students if (task, teacher, "cot", st) in per_student]
            if len(sts) < 2:
                continue
            gaps = []
            for lv in levels:
                accs = {st: per_student[(task, teacher, "cot", st)]["curve"].get(lv) for st in sts}
                accs = {k: v for k, v in accs.items() if v is not None}
                if len(accs) >= 2:
                    hi_s = max(accs, key=lambda k: accs[k].mean)
                    lo_s = min(accs, key=lambda k: accs[k].mean)
                    gaps.append((accs[hi_s].mean - accs[lo_s].mean, lv, hi_s, lo_s, accs))
            if gaps:
                g, lv, hi_s, lo_s, accs = max(gaps, key=lambda x: x[0])
                if g >= 0.05:
                    t = paired_test(d, accs[lo_s].cells, accs[hi_s].cells)
                    sep = bool(t and t["p"] < ALPHA)
                    findings.append(
                        f"The students differ most at {_lvl_name(lv)} on {task} ({_short(teacher)}): {hi_s} {pct(accs[hi_s].mean)} "
                        f"vs {lo_s} {pct(accs[lo_s].mean)} ({pts(accs[hi_s].mean - accs[lo_s].mean)}, {p_of(t)})"
                        + (": the same supervision that one student learns from, the other does not." if sep
                           else "; not separated by the paired test.")
                    )
                else:
                    findings.append(f"The students are within {g * 100:.1f} points of each other at every level on {task} "
                                    f"({_short(teacher)}).")
    # Matthew effect: gain of the best CoT over answer-only vs student strength
    matthew = []
    for task in tasks:
        for teacher in teachers:
            mpts = []
            for st in sft_students:
                info = per_student.get((task, teacher, "cot", st))
                if not info or 0 not in info["curve"]:
                    continue
                gain = max(a.mean for lv, a in info["curve"].items() if lv != 0) - info["curve"][0].mean
                strength = params.get(st)
                mpts.append((st, strength, gain))
            if len(mpts) >= 2:
                key = (lambda p: p[1]) if all(p[1] for p in mpts) else (lambda p: students.index(p[0]))
                mpts.sort(key=key)
                matthew.append({"task": task, "teacher": teacher, "points": mpts,
                                "by": "parameters" if all(p[1] for p in mpts) else "config order"})
                findings.append(
                    f"Gain of the best CoT over answer-only on {task} ({_short(teacher)}), students ordered by "
                    f"{matthew[-1]['by']}: " + ", ".join(f"{p[0]} {pts(p[2])}" for p in mpts)
                    + " (point estimates; whether the gain grows with student strength is not tested here)."
                )
    # teacher comparison: does the strongest teacher give the best student?
    teacher_cmp = []
    if len(teachers) == 1:
        findings.append(f"One teacher ({_short(teachers[0])}) in this study: whether the strongest teacher gives "
                        "the best student needs a study with two or more teachers.")
    for task in tasks:
        if len(teachers) < 2:
            continue
        tq = {}
        for teacher in teachers:
            ts = [r for r in ok if r["task"] == task and r["teacher"] == teacher]
            if ts:
                tq[teacher] = _teacher_accuracy(d, ts)
        best_student = {}
        best_agg = {}
        for teacher in teachers:
            accs = [a for (tk, te, f, s, lv), a in agg.items() if tk == task and te == teacher and lv != 0]
            if accs:
                best_agg[teacher] = max(accs, key=lambda a: a.mean)
                best_student[teacher] = best_agg[teacher].mean
        if len(best_student) >= 2:
            top_s = max(best_student, key=best_student.get)
            known = {t: q for t, q in tq.items() if q is not None}
            if known:
                top_t = max(known, key=known.get)
                if top_t == top_s:
                    runner = max((t for t in best_student if t != top_s), key=best_student.get)
                    t = paired_test(d, best_agg[runner].cells, best_agg[top_s].cells)
                    verdict = ("also gave the best student" if t and t["p"] < ALPHA else
                               f"gave the most accurate student, not separated from {_short(runner)}'s best")
                    diff = best_student[top_s] - best_student[runner]
                else:
                    t = paired_test(d, best_agg[top_t].cells, best_agg[top_s].cells)
                    verdict = (f"did not give the best student ({_short(top_s)} did)" if t and t["p"] < ALPHA else
                               f"gave a best student not separated from {_short(top_s)}'s")
                    diff = best_student[top_s] - best_student[top_t] if top_t != top_s else 0.0
                findings.append(
                    f"On {task}, the most accurate teacher ({_short(top_t)}, {pct(known[top_t])} of its traces correct) "
                    f"{verdict} ({pts(diff)}, {p_of(t)}).")
            teacher_cmp.append({"task": task, "teacher_acc": tq, "best_student": best_student})
    # formats
    fmt_cmp = []
    if len(formats) > 1:
        for task in tasks:
            for teacher in teachers:
                for st in students:
                    row = {}
                    row_agg = {}
                    for fmt in formats:
                        vals = [a for (tk, te, f, s, lv), a in agg.items()
                                if tk == task and te == teacher and f == fmt and s == st and lv not in (0, "human")]
                        if vals:
                            row_agg[fmt] = max(vals, key=lambda a: a.mean)
                            row[fmt] = row_agg[fmt].mean
                    if len(row) > 1:
                        fmt_cmp.append({"task": task, "teacher": teacher, "student": st, "best_by_format": row})
                        b = max(row, key=row.get)
                        nxt = max((f for f in row if f != b), key=row.get)
                        t = paired_test(d, row_agg[nxt].cells, row_agg[b].cells)
                        head = (f"best is {b} ({pct(row[b])})" if t and t["p"] < ALPHA else
                                f"the formats are not separated (highest {b} at {pct(row[b])})")
                        findings.append(f"Format on {task} for {st}: {head}; "
                                        + ", ".join(f"{f} {pct(v)}" for f, v in row.items() if f != b)
                                        + f" ({b} vs {nxt}: {pts(row[b] - row[nxt])}, {p_of(t)}).")
    if failed:
        findings.append(f"{len(failed)} cell(s) failed and are excluded from every finding above; "
                        "see 'Failed cells' for their errors.")
    return {"dir": str(d), "rows": rows, "ok": ok, "failed": failed, "agg": agg, "students": students,
            "teachers": teachers, "tasks": tasks, "formats": formats, "levels": levels, "tests": tests,
            "findings": findings, "per_student": per_student, "matthew": matthew, "teacher_cmp": teacher_cmp,
            "ref_teachers": ref_teachers,
            "fmt_cmp": fmt_cmp, "params": params}


def _teacher_accuracy(d: Path, rows: list[dict]) -> float | None:
    """Fraction of a teacher's traces that were correct (before curation), over the study's cells."""
    tot = cor = 0
    seen = set()
    for r in rows:
        cfgp = StudyLayout(d).cell(r.get("cell", "")).config
        try:
            key = json.loads(cfgp.read_text())["keys"]["generate"]
        except (OSError, KeyError, json.JSONDecodeError):
            continue
        if key in seen or r["level"] == 0:
            continue
        seen.add(key)
        p = StudyLayout(d).generate_dir(key) / "traces.jsonl"
        if not p.exists():
            continue
        for line in p.read_text(encoding="utf-8").splitlines():
            if line.strip():
                t = json.loads(line)
                if t.get("correct") is not None:
                    tot += 1
                    cor += bool(t["correct"])
    return cor / tot if tot else None


def _figures(rep: dict[str, Any], fig_dir: Path) -> list[tuple[str, Path]]:
    plt = _plt()
    figs: list[tuple[str, Path]] = []
    agg = rep["agg"]
    levels = rep["levels"]
    # 1. accuracy vs granularity per student (one figure per task x teacher x format)
    for (task, teacher, fmt), group in _group_curves(rep).items():
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        for st, curve in group.items():
            lv = [x for x in levels if x in curve]
            xs = [len(levels) - 1 if x == "human" else levels.index(x) for x in lv]
            ys = [curve[x].mean * 100 for x in lv]
            lo = [max(0.0, (curve[x].mean - curve[x].ci_low) * 100) for x in lv]
            hi = [max(0.0, (curve[x].ci_high - curve[x].mean) * 100) for x in lv]
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=st)
        ax.set_xticks(range(len(levels)), [f"L{x}" if isinstance(x, int) else str(x) for x in levels])
        ax.set_xlabel("granularity level (0 = answer only)")
        ax.set_ylabel("test accuracy % (95 % CI)")
        ax.set_title(f"{task} · teacher {_short(teacher)} · {fmt}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        name = f"granularity_{_safe(task)}_{_safe(_short(teacher))}_{fmt}.png"
        figs.append((f"Accuracy vs granularity: {task}, {_short(teacher)}, {fmt}", _save(fig, fig_dir / name)))
    # 2. format comparison
    if rep["fmt_cmp"]:
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        labels = [f"{r['student']}\n{r['task']}" for r in rep["fmt_cmp"]]
        fmts = rep["formats"]
        w = 0.8 / max(len(fmts), 1)
        for i, f in enumerate(fmts):
            ax.bar([k + i * w for k in range(len(labels))], [r["best_by_format"].get(f, 0) * 100 for r in rep["fmt_cmp"]], w, label=f)
        ax.set_xticks([k + w * (len(fmts) - 1) / 2 for k in range(len(labels))], labels, fontsize=7)
        ax.set_ylabel("best accuracy over levels %")
        ax.set_title("format comparison", fontsize=10)
        ax.legend(fontsize=8)
        figs.append(("Format comparison (best level per format)", _save(fig, fig_dir / "formats.png")))
    # 3. teacher comparison
    if len(rep["teachers"]) > 1:
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        sts, tes = rep["students"], rep["teachers"]
        w = 0.8 / len(tes)
        for i, te in enumerate(tes):
            vals = []
            for st in sts:
                c = [a.mean for (tk, t2, f, s, lv), a in agg.items() if t2 == te and s == st and lv != 0]
                vals.append(max(c) * 100 if c else 0)
            ax.bar([k + i * w for k in range(len(sts))], vals, w, label=_short(te))
        ax.set_xticks([k + w * (len(tes) - 1) / 2 for k in range(len(sts))], sts, fontsize=7)
        ax.set_ylabel("best accuracy over levels %")
        ax.set_title("teacher comparison", fontsize=10)
        ax.legend(fontsize=8)
        figs.append(("Teacher comparison", _save(fig, fig_dir / "teachers.png")))
    # 4. Matthew effect
    if rep["matthew"]:
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        for m in rep["matthew"]:
            pts = m["points"]
            xs = [p[1] for p in pts] if m["by"] == "parameters" else list(range(len(pts)))
            ax.plot(xs, [p[2] * 100 for p in pts], marker="o", label=f"{m['task']} · {_short(m['teacher'])}")
            for x, p in zip(xs, pts):
                ax.annotate(p[0].replace("scratch:", ""), (x, p[2] * 100), fontsize=7, xytext=(3, 3), textcoords="offset points")
            if m["by"] == "parameters":
                ax.set_xscale("log")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlabel("student parameters" if rep["matthew"][0]["by"] == "parameters" else "student (config order)")
        ax.set_ylabel("best CoT − answer-only (points)")
        ax.set_title("gain over answer-only vs student strength", fontsize=10)
        ax.legend(fontsize=8)
        figs.append(("Gain over answer-only vs student strength (Matthew effect)", _save(fig, fig_dir / "matthew.png")))
    return figs


def _safe(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in s)[:60]


def _group_curves(rep) -> dict[tuple, dict[str, dict]]:
    out: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for (task, teacher, fmt, st), info in rep["per_student"].items():
        out[(task, teacher, fmt)][st] = info["curve"]
    return out


def _tables_md(rep: dict[str, Any]) -> list[str]:
    lines = []
    levels = rep["levels"]
    for (task, teacher, fmt), group in _group_curves(rep).items():
        lines.append(f"### {task} · teacher `{_short(teacher)}` · format `{fmt}`")
        lines.append("")
        lines.append("Test accuracy % (mean ± sd over seeds); **bold** = best level of the student.")
        lines.append("")
        lines.append("| student | " + " | ".join(_lvl_name(lv) for lv in levels) + " |")
        lines.append("|---|" + "---|" * len(levels))
        for st, curve in group.items():
            best = max(curve, key=lambda lv: curve[lv].mean)
            cells = []
            for lv in levels:
                a = curve.get(lv)
                cells.append("—" if a is None else (f"**{a.fmt()}**" if lv == best else a.fmt()))
            lines.append(f"| {st} | " + " | ".join(cells) + " |")
        lines.append("")
        # output length row
        lines.append("| mean output tokens | " + " | ".join(
            (f"{statistics.fmean(c[lv].mean_output_tokens for c in group.values() if lv in c and c[lv].mean_output_tokens is not None):.0f}"
             if any(lv in c and c[lv].mean_output_tokens is not None for c in group.values()) else "—")
            for lv in levels) + " |")
        lines.append("|---|" + "---|" * len(levels))
        lines.append("")
    return lines


def write_report(study_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and ``figures/*.png``; returns their paths."""
    d = Path(study_dir)
    rep = build_report(d)
    out = Path(out_dir) if out_dir else d
    out.mkdir(parents=True, exist_ok=True)
    if not rep["ok"]:
        raise UserError(f"{d}/results.jsonl has no successful cells to report on"
                        + (f" ({len(rep['failed'])} failed; see cells/*/log.txt)" if rep["failed"] else ""))
    figs = _figures(rep, out / "figures")
    cfg = None
    if StudyLayout(d).config.exists():
        cfg = json.loads(StudyLayout(d).config.read_text())
    md: list[str] = [f"# Study report: {cfg.get('name', d.name) if cfg else d.name}", ""]
    n_seeds = len({r["seed"] for r in rep["ok"]})
    asked = [str(t) for t in (cfg or {}).get("teachers", [])] or list(rep["teachers"]) + list(rep.get("ref_teachers", []))
    with_ok = {r["teacher"] for r in rep["ok"]}
    shown = []
    for t in asked:
        name = _short(t)
        if not any(_short(x) == name for x in with_ok):
            name += " (no successful cell)"
        elif t in rep.get("ref_teachers", []) or any(_short(x) == _short(t) for x in rep.get("ref_teachers", [])):
            name += " (answer-only / human reference)"
        shown.append(name)
    md += [
        f"{len(rep['ok'])} cells ok, {len(rep['failed'])} failed · tasks {', '.join(rep['tasks'])} · "
        f"teachers {', '.join(shown)} · students {', '.join(_student_label(x) for x in rep['students'])} · "
        f"levels {', '.join(str(x) for x in rep['levels'])} · formats {', '.join(rep['formats'])} · {n_seeds} seed(s).",
        "",
        "## Findings",
        "",
    ]
    md += [f"- {f}" for f in rep["findings"]] + [""]
    md += ["## Tables", ""] + _tables_md(rep)
    md += ["## Figures", ""]
    for title, p in figs:
        md += [f"![{title}]({os.path.relpath(p, out)})", ""]
    if rep["tests"]:
        md += ["## Paired significance (best level vs each other level)", "",
               "Exact McNemar on the same test items (all seeds pooled); Δ = best − other, with a 95 % paired-bootstrap interval.", "",
               "| task | teacher | format | student | other | best | n | Δ points | 95 % CI | McNemar p |",
               "|---|---|---|---|---|---|---|---|---|---|"]
        for t in rep["tests"]:
            md.append(f"| {t['task']} | {_short(t['teacher'])} | {t['format']} | {t['student']} | {_lvl_name(t['a'])} | "
                      f"{_lvl_name(t['b'])} | {t['n']} | {t['diff'] * 100:+.1f} | [{t['diff_lo'] * 100:+.1f}, {t['diff_hi'] * 100:+.1f}] | {t['p']:.3g} |")
        md.append("")
    from .select import select_vs_grid_markdown

    sel = select_vs_grid_markdown(d)
    if sel:
        md += [sel]
    md += ["## All cells", "", "| cell | n | accuracy % | 95 % CI | output tokens | train tokens | wall s |",
           "|---|---|---|---|---|---|---|"]
    for r in rep["ok"]:
        md.append(f"| {r['cell']} | {r['n']} | {r['accuracy'] * 100:.1f} | [{r['ci_low'] * 100:.1f}, {r['ci_high'] * 100:.1f}] | "
                  f"{r.get('mean_output_tokens', '')} | {r.get('train_tokens', '')} | {r.get('wall_s', '')} |")
    md.append("")
    if rep["failed"]:
        md += ["## Failed cells", "", "Excluded from every table, figure and finding above; rerun the study to retry them.", "",
               "| cell | failed in stage | error |", "|---|---|---|"]
        for r in rep["failed"]:
            err = " ".join(str(r.get("error", "")).split()).replace("|", "\\|")
            md.append(f"| {r.get('cell')} | {r.get('stage', '')} | {html.escape(err)[:300]} |")
        md.append("")
    md_text = "\n".join(md)
    atomic_write_text(out / "report.md", md_text)
    atomic_write_text(out / "report.html", _to_html(md_text, out))
    return {"md": out / "report.md", "html": out / "report.html", "figures": out / "figures"}


def _inline(s: str) -> str:
    import re

    s = html.escape(s, quote=False)
    s = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", s)
    s = re.sub(r"`(.+?)`", r"<code>\1</code>", s)
    return s


def _to_html(md: str, base: Path) -> str:
    """A small Markdown subset -> one self-contained HTML page (images embedded as data URIs)."""
    import re

    out = ["<!doctype html><html><head><meta charset='utf-8'><title>cotdistill report</title><style>"
           "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}"
           "table{border-collapse:collapse;margin:.5em 0 1.2em}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
           "th{background:#f3f3f3}img{max-width:100%}code{background:#f3f3f3;padding:0 3px}</style></head><body>"]
    lines = md.splitlines()
    i = 0
    in_list = False
    while i < len(lines):
        ln = lines[i]
        if ln.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(lines[i])
                i += 1
            out.append("<table>")
            for k, r in enumerate(rows):
                cells = [c.strip() for c in r.strip().strip("|").split("|")]
                if all(re.fullmatch(r"-+", c) for c in cells):
                    continue
                tag = "th" if k == 0 else "td"
                out.append("<tr>" + "".join(f"<{tag}>{_inline(c)}</{tag}>" for c in cells) + "</tr>")
            out.append("</table>")
            continue
        if in_list and not ln.startswith("- "):
            out.append("</ul>")
            in_list = False
        m = re.fullmatch(r"!\[(.*?)\]\((.*?)\)", ln.strip())
        if m:
            p = base / m.group(2)
            data = base64.b64encode(p.read_bytes()).decode() if p.exists() else ""
            out.append(f"<figure><img alt='{html.escape(m.group(1))}' src='data:image/png;base64,{data}'>"
                       f"<figcaption>{html.escape(m.group(1))}</figcaption></figure>")
        elif ln.startswith("### "):
            out.append(f"<h3>{_inline(ln[4:])}</h3>")
        elif ln.startswith("## "):
            out.append(f"<h2>{_inline(ln[3:])}</h2>")
        elif ln.startswith("# "):
            out.append(f"<h1>{_inline(ln[2:])}</h1>")
        elif ln.startswith("- "):
            if not in_list:
                out.append("<ul>")
                in_list = True
            out.append(f"<li>{_inline(ln[2:])}</li>")
        elif ln.strip():
            out.append(f"<p>{_inline(ln)}</p>")
        i += 1
    if in_list:
        out.append("</ul>")
    out.append("</body></html>")
    return "\n".join(out)
