"""Answer-checking agreement on every released teacher output of the paper (arXiv 2502.18001).

    python benchmarks/answer_agreement.py [--data-dir ../shared/data] [--only SVAMP,GSM8K] [--max-list 50]

For every released file with rationales, each output is joined with its gold answer (the
answer-only file of the same dataset, by instruction text; MATH: the human ``solution``'s final
answer against the released ``output`` field) and scored with ``cotdistill.answers.correct``.

To judge the *extractor* rather than the teacher, each row is also classified by a deliberately
loose, independent reference reading of the teacher's stated answer (the text after its last
"answer is", up to the end of that line):

* ``stated right``  -- the gold value occurs in that text (a number equal to gold, the gold letter as
  a standalone token or the gold option text, the gold True/False word);
* ``stated wrong``  -- the teacher stated something, and the gold value is not in it, or the text
  is a refusal / negation (true teacher error, e.g. "The answer is 24" for gold 29, "The answer
  is not D", "The answer is none of the above");
* ``unstated``      -- no "answer is" at all (our fallback rules decide).

``agreement`` = fraction of *stated right* rows that ``correct()`` scores as correct; the issue
asks for >= 99.5 % on SVAMP, GSM8K, StrategyQA and OpenBookQA. Every stated-right row that
``correct()`` rejects is listed with an explanation (``KNOWN`` below, written after reading each
one by hand; unexplained ones are flagged ``UNEXPLAINED``), and so is every stated-wrong row
that ``correct()`` accepts.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from cotdistill.answers import correct, extract, extract_with_rule, equal

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("COTDISTILL_DATA") or ROOT.parent / "shared" / "data")

# dataset -> (answer type, gold file(s), regex selecting its rationale files)
DATASETS = {
    "SVAMP": ("number", ["SVAMP_only_ans"], r"^(SVAMP_(ChatGPT|gemini|llama)_level\d_ranked|0_SVAMP_.*|svamp_human_annotation)$"),
    "GSM8K": ("number", ["gsm_train_onlyans"], r"^gsm8k_.*_ranked$"),
    "StrategyQA": ("bool", ["strategyQA_onlyans", "@strategyQA_test"], r"^(strategyQA_chatgpt_.*|stqa_.*)$"),
    "OpenBookQA": ("choice", ["openbookQA_onlyans"], r"^(openbookQA_(ChatGPT|chatgpt)_.*|obqa_.*|openbookqa_chatgpt_.*)$"),
    "AQuA": ("choice", ["aqua_only_ans"], r"^aqua_human$"),
}
REQUIRED = ("SVAMP", "GSM8K", "StrategyQA", "OpenBookQA")
THRESHOLD = 0.995

# Disagreements read by hand: (file stem, row index) -> explanation. "teacher error" = the teacher's
# own final statement is not the gold; the loose reference only saw the gold somewhere in the line.
_DISOWN = "teacher error: states the gold, then disowns it ('... answer should be Y'); the last statement wins"
_MULTI = "teacher error: names several options ('A: ..., B: ...') instead of one; the first is read"
_GPT_MATH = "teacher error: GPT-4o's stated final value differs from the gold (checked by hand)"
KNOWN: dict[tuple[str, int], str] = {
    ("SVAMP_llama_level3_ranked", 234): "teacher error: 'The answer is 10, not 13' states 10; gold 13 is the rejected value",
    ("SVAMP_llama_level3_ranked", 526): "teacher error: states 4; gold 220 only appears in the next sentence's arithmetic",
    ("gsm8k_llama_level1_ranked", 2498): "teacher error / ambiguous: 'The answer is 23 no wait its 46' (self-correction after the phrase); 23 is read",
    ("gsm8k_llama_level1_ranked", 3196): "teacher error: states 79.5; gold 42 only in a comment '(round to 42)'",
    ("gsm8k_llama_level1_ranked", 5742): _DISOWN,
    ("gsm8k_llama_level2_ranked", 926): _DISOWN,
    ("gsm8k_llama_level2_ranked", 4800): _DISOWN,
    ("gsm8k_llama_level2_ranked", 6216): _DISOWN,
    ("gsm8k_llama_level2_ranked", 7263): _DISOWN,
    ("gsm8k_llama_level2_ranked", 5206): "teacher error: states 88; gold 400 only in a note ('The answer 400 is likely an error')",
    ("gsm8k_llama_level2_ranked", 5590): (
        "ambiguous / extractor limit: '0.2 x 0.8 = 0.16, or 16%' gives two values; the '=' chain result 0.16 "
        "is read (gold 16 means 16 %); accepting either value would also accept wrong answers elsewhere"
    ),
    ("openbookQA_ChatGPT_0_shot_without_gt_ranked", 659): _MULTI,
    ("openbookQA_ChatGPT_0_shot_without_gt_ranked", 1420): _MULTI,
    ("openbookQA_ChatGPT_0_shot_without_gt_ranked", 2006): _MULTI,
    # AQuA (not in the >= 99.5 % set): the answer-only file holds raw rationale tails, not letters
    ("aqua_human", 41): "gold error: aqua_only_ans gold is '0.40%', not a letter",
    ("aqua_human", 1539): "gold error: aqua_only_ans gold is '4.', not a letter",
    ("aqua_human", 5375): "gold error: aqua_only_ans gold is '4% of a.', not a letter (we read option text -> A)",
    ("aqua_human", 5885): "gold error: aqua_only_ans gold is '30cm'; the rationale never names a letter",
    ("aqua_human", 101): "annotator writes 'Answer: C' then 'Hence answer should be D'; the last statement (D) wins",
    ("aqua_human", 2557): "'The answer is 4 = ... = 89 So the OA is correct - A': the '=' chain inside the sentence yields E?; garbled human text",
    ("aqua_human", 4992): "'ANS B' is not a recognised phrase; the earlier 'The answer is 6' is a value, not a letter",
    ("aqua_human", 6093): "'The answer D' (no 'is') is not a recognised phrase; an earlier 'E(x)' is read",
    # MATH human solutions: 'the answer is' used in prose
    ("math_human[solution]", 226): "human solution: 'the answer is' names an intermediate count (28) that is halved later (14)",
    ("math_human[solution]", 503): "human solution: 'our answer is the number of integers between 0 and 24' (prose); the value 25 follows",
    ("math_human[solution]", 701): "human solution: 'the final answer is a common one' (prose, not an answer)",
    ("math_human[solution]", 755): "two \\boxed answers ((-2, 23) and (0, 1)); the released output keeps the first, we the last",
    ("math_human[solution]", 848): "human solution: 'the answer is $\\sum ...$' followed by '$= 704$' in later $...$ spans",
    ("math_human[solution]", 903): "human solution: 'our answer is 1155, and the remainder is 155' (the question asks for the remainder)",
    ("math_human[solution]", 969): "human solution: 'the answer: ... = 376320, and the three leftmost digits are 376'",
    ("math_human[solution]", 1236): "human solution: 'the answer would be greater than 999' (hypothetical)",
    ("math_human[solution]", 1277): "two \\boxed answers (20:34 or 8:34 p.m.); the released output keeps the first, we the last",
    ("math_human[chatgpt_output]", 834): "gold error: the released output is the template residue '\" + string(n) + \"'",
}
for _i in (59, 86, 120, 175, 255, 306, 327, 461, 542, 645, 668, 890, 916, 1007, 1014, 1050, 1051, 1129, 1130,
           1193, 1244, 1245, 1251, 1258):
    KNOWN[("math_human[chatgpt_output]", _i)] = _GPT_MATH
# Patterns explaining whole classes of stated-right disagreements (checked in order).
KNOWN_PATTERNS: list[tuple[str, str]] = []


def _load(path: Path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        text = f.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def _key(s: str) -> str:
    return " ".join(str(s).split())


def parse_choices(instruction: str) -> list[str] | None:
    """Option texts (A..E order) from an OBQA/CSQA ("A: x, B: y") or AQuA ("(A) x (B) y") prompt."""
    m = re.search(r"Answer [Cc]hoices:\s*(.*)$", instruction, re.DOTALL)
    if not m:
        return None
    body = m.group(1)
    if re.match(r"\s*\(A\)", body):
        parts = re.split(r"\s*\(([A-E])\)\s*", body)
    else:
        parts = re.split(r"(?:^|,\s*|\n)\s*([A-E])[:.]\s*", body)
    opts = {}
    for i in range(1, len(parts) - 1, 2):
        opts[parts[i]] = parts[i + 1].strip().rstrip(",")
    out = [opts.get(L) for L in "ABCDE" if L in opts]
    return out or None


# ----------------------------------------------------------------------------- reference reading

_STATED = re.compile(r"answer\s*is", re.IGNORECASE)


def stated_text(output: str) -> str | None:
    ms = list(_STATED.finditer(output))
    if not ms:
        return None
    rest = output[ms[-1].end() :]
    line = rest.split("\n", 1)[0]
    if not line.strip() and "\n" in rest:
        line = rest.split("\n", 2)[1]
    return line


def _ref_numbers(s: str) -> list[float]:
    s = s.replace(",", "").replace("−", "-")
    out = []
    for m in re.finditer(r"-?\d+(?:\.\d+)?(?:/\d+)?", s):
        t = m.group(0)
        try:
            if "/" in t:
                a, b = t.split("/")
                out.append(float(a) / float(b))
            out.append(float(t.split("/")[0]))
        except (ValueError, ZeroDivisionError):
            pass
    return out


# the stated text refuses or negates ("not D", "none of the above", "incorrect", "not 40, it's 50"):
# whatever letters or numbers follow, the teacher did not state the gold as its answer
_REFUSAL = re.compile(r"^\W*(?:not\b|none\b|neither\b|incorrect\b|undefined\b|unknown\b)", re.IGNORECASE)


def stated_contains_gold(span: str, gold: str, answer_type: str, choices: list[str] | None) -> bool:
    if answer_type == "number":
        try:
            g = float(str(gold).replace(",", ""))
        except ValueError:
            return False
        return any(abs(x - g) < 1e-6 * max(1, abs(g)) for x in _ref_numbers(span))
    if answer_type == "bool":
        g = str(gold).strip().lower()
        words = {"true": ("true", "yes"), "false": ("false", "no")}.get(g, (g,))
        return any(re.search(rf"(?<![a-z]){w}(?![a-z])", span, re.IGNORECASE) for w in words)
    g = str(gold)
    if re.search(rf"(?<![A-Za-z]){g}(?![a-z])", span):
        return True
    if choices and "ABCDE".find(g) < len(choices) and g in "ABCDE":
        opt = " ".join(re.sub(r"[^a-z0-9]+", " ", str(choices["ABCDE".index(g)]).lower()).split())
        sp = " ".join(re.sub(r"[^a-z0-9]+", " ", span.lower()).split())
        return bool(opt) and opt in sp
    return False


# ----------------------------------------------------------------------------- scoring


@dataclass
class FileResult:
    name: str
    dataset: str
    rows: int = 0
    joined: int = 0
    parsed: int = 0  # rule == answer_is
    correct: int = 0
    stated_right: int = 0
    agree: int = 0
    stated_wrong: int = 0
    wrong_but_scored_correct: int = 0
    unstated: int = 0
    unstated_correct: int = 0
    gold_truncated: int = 0
    rules: dict = field(default_factory=lambda: defaultdict(int))
    disagreements: list = field(default_factory=list)
    oddities: list = field(default_factory=list)

    @property
    def agreement(self) -> float:
        return self.agree / self.stated_right if self.stated_right else float("nan")


def explain(name: str, idx: int, output: str, gold: str, pred, rule: str) -> str:
    if (name, idx) in KNOWN:
        return KNOWN[(name, idx)]
    for pat, why in KNOWN_PATTERNS:
        if re.search(pat, output[-300:], re.IGNORECASE | re.DOTALL):
            return why
    return "UNEXPLAINED"


def score_file(path: Path, dataset: str, answer_type: str, gold: dict[str, str], max_rows: int | None = None) -> FileResult:
    name = path.name.removesuffix(".json.gz")
    data = _load(path)
    if max_rows:
        data = data[:max_rows]
    res = FileResult(name, dataset)
    for idx, row in enumerate(data):
        res.rows += 1
        ins, out = row.get("instruction", ""), row.get("output", "")
        g = gold.get(_key(ins))
        if g is None:
            continue
        res.joined += 1
        choices = parse_choices(ins) if answer_type == "choice" else None
        pred, rule = extract_with_rule(out, answer_type, choices=choices, mode="lenient")
        ok = equal(pred, g, answer_type)
        res.rules[rule] += 1
        res.parsed += rule == "answer_is"
        res.correct += ok
        span = stated_text(out)
        if span is None:
            res.unstated += 1
            res.unstated_correct += ok
        elif not _REFUSAL.match(span) and stated_contains_gold(span, g, answer_type, choices):
            res.stated_right += 1
            res.agree += ok
            if not ok:
                res.disagreements.append((idx, g, pred, rule, out, explain(name, idx, out, g, pred, rule)))
        else:
            res.stated_wrong += 1
            if ok:
                res.wrong_but_scored_correct += 1
                res.oddities.append((idx, g, pred, rule, out))
    return res


def _gold_letter(g: str) -> str:
    """AQuA's answer-only file holds raw tails ("30. i.e C", "Option B", ":(OptionC"): keep the letter."""
    s = str(g).strip()
    m = re.match(r"^\W*(?:option|answer)?\W*([A-Ea-e])(?![A-Za-z])", s, re.IGNORECASE)
    if m:
        return m.group(1).upper()
    ms = list(re.finditer(r"(?<![A-Za-z])([A-E])(?![A-Za-z])", s))
    return ms[-1].group(1) if ms else s


def load_gold(data_dir: Path, sources: list[str], answer_type: str = "number") -> dict[str, str]:
    gold: dict[str, str] = {}
    for s in sources:
        if s.startswith("@"):
            p = data_dir / "benchmarks" / f"{s[1:]}.json.gz"
            for r in _load(p):
                gold.setdefault(_key(r["instruction"]), str(r["label"]))
        else:
            for r in _load(data_dir / "paper" / f"{s}.json.gz"):
                gold.setdefault(_key(r["instruction"]), str(r["output"]))
    if answer_type == "choice":
        gold = {k: _gold_letter(v) for k, v in gold.items()}
    return gold


def files_for(data_dir: Path, pattern: str) -> list[Path]:
    rx = re.compile(pattern)
    return sorted(p for p in (data_dir / "paper").glob("*.json.gz") if rx.match(p.name.removesuffix(".json.gz")))


def gold_truncated(gold: str) -> bool:
    """The released MATH ``output`` was cut at the first '}' by a naive extractor ("\\frac{1}")."""
    return gold.count("{") > gold.count("}") or bool(re.search(r"\\[dt]?frac\{[^{}]*\}$", gold))


def score_math(data_dir: Path) -> list[FileResult]:
    """MATH human file: final answer of ``solution`` (and of ``chatgpt_output``) vs ``output``.

    Rows whose released ``output`` is truncated ("\\frac{1}") cannot be judged and are counted
    apart; ``agreement`` is over rows with an intact gold and a stated answer (``\\boxed`` or
    "the answer is")."""
    rows = _load(data_dir / "paper" / "math_human.json.gz")
    out = []
    for field_name in ("solution", "chatgpt_output"):
        res = FileResult(f"math_human[{field_name}]", "MATH")
        for idx, r in enumerate(rows):
            text = r.get(field_name)
            if text is None:
                continue
            res.rows += 1
            res.joined += 1
            g = r["output"]
            pred, rule = extract_with_rule(text, "math", mode="lenient")
            ok = equal(pred, g, "math")
            res.rules[rule] += 1
            stated = rule in ("answer_is", "boxed")
            res.parsed += stated
            res.correct += ok
            if gold_truncated(g):
                res.gold_truncated += 1
                continue
            if not stated:
                res.unstated += 1
                res.unstated_correct += ok
                if not ok:
                    res.oddities.append((idx, g, pred, rule, text))
                continue
            res.stated_right += 1  # here: stated, intact gold
            res.agree += ok
            if not ok:
                res.disagreements.append((idx, g, pred, rule, text, KNOWN.get((res.name, idx), "UNEXPLAINED")))
        out.append(res)
    return out


# ----------------------------------------------------------------------------- report


def _pct(a: int, b: int) -> str:
    return f"{100 * a / b:.2f}" if b else "-"


def table(results: list[FileResult]) -> str:
    lines = [
        "| file | rows | joined | parse % | teacher acc % | stated right | agreement % | stated wrong | wrong→scored ok | unstated (ok) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.rows} | {r.joined} | {_pct(r.parsed, r.joined)} | {_pct(r.correct, r.joined)} | "
            f"{r.stated_right} | {_pct(r.agree, r.stated_right)} | {r.stated_wrong} | {r.wrong_but_scored_correct} | "
            f"{r.unstated} ({r.unstated_correct}) |"
        )
    return "\n".join(lines)


def aggregate(results: list[FileResult]) -> dict[str, FileResult]:
    agg: dict[str, FileResult] = {}
    for r in results:
        a = agg.setdefault(r.dataset, FileResult(f"**{r.dataset} (all)**", r.dataset))
        for k in ("rows", "joined", "parsed", "correct", "stated_right", "agree", "stated_wrong", "wrong_but_scored_correct", "unstated", "unstated_correct"):
            setattr(a, k, getattr(a, k) + getattr(r, k))
    return agg


def run(data_dir: Path, only: list[str] | None = None, max_rows: int | None = None, progress: bool = True) -> list[FileResult]:
    jobs = []
    for ds, (atype, gsrc, pat) in DATASETS.items():
        if only and ds not in only:
            continue
        files = files_for(data_dir, pat)
        if files:
            jobs.append((ds, atype, gsrc, files))
    results: list[FileResult] = []
    total = sum(len(j[3]) for j in jobs)
    bar = None
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True)
        bar.start()
        tid = bar.add_task("scoring files", total=total + (0 if only and "MATH" not in only else 1))
    try:
        for ds, atype, gsrc, files in jobs:
            gold = load_gold(data_dir, gsrc, atype)
            for f in files:
                if bar:
                    bar.update(tid, description=f"scoring {f.name}")
                results.append(score_file(f, ds, atype, gold, max_rows))
                if bar:
                    bar.advance(tid)
        if not only or "MATH" in only:
            if (data_dir / "paper" / "math_human.json.gz").exists():
                results.extend(score_math(data_dir))
            if bar:
                bar.advance(tid)
    finally:
        if bar:
            bar.stop()
    return results


_BOOTSTRAP_ANSWER_IS = re.compile(r"[Tt]he answer is[:\s]*(.+?)(?:\.\s*$|\n|$)")


def _bootstrap_extract(text: str, answer_type: str):
    """The one-regex extractor this module replaced (the speed baseline)."""
    m = list(_BOOTSTRAP_ANSWER_IS.finditer(text or ""))
    if m:
        return m[-1].group(1).strip().rstrip(".")
    if answer_type == "number":
        nums = re.findall(r"-?\d+(?:\.\d+)?", (text or "").replace(",", ""))
        return nums[-1] if nums else None
    return None


def speed(data_dir: Path, reps: int = 3) -> str:
    """Extraction cost per output vs the bootstrap one-regex extractor, same texts, same run."""
    jobs = []
    for ds, (atype, _g, pat) in DATASETS.items():
        for f in files_for(data_dir, pat)[:4]:
            for r in _load(f):
                ch = parse_choices(r["instruction"]) if atype == "choice" else None
                jobs.append((r["output"], atype, ch))
    best_new = best_old = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        for out, at, ch in jobs:
            extract_with_rule(out, at, choices=ch)
        best_new = min(best_new, time.perf_counter() - t0)
        t0 = time.perf_counter()
        for out, at, ch in jobs:
            _bootstrap_extract(out, at)
        best_old = min(best_old, time.perf_counter() - t0)
    n = len(jobs)
    return (
        f"speed over {n} outputs (first 4 files per dataset, best of {reps}): extract_with_rule "
        f"{1e6 * best_new / n:.1f} µs/output, bootstrap one-regex extractor {1e6 * best_old / n:.1f} µs/output "
        f"-> {best_new / best_old:.1f}x the baseline's cost"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="directory with paper/ and benchmarks/ (default ../shared/data)")
    ap.add_argument("--only", default="", help="comma-separated datasets (SVAMP,GSM8K,StrategyQA,OpenBookQA,AQuA,MATH)")
    ap.add_argument("--max-list", type=int, default=1000, help="list at most this many disagreements per file")
    ap.add_argument("--max-rows", type=int, default=None, help="score only the first N rows per file (quick look)")
    ap.add_argument("--speed", action="store_true", help="also time extraction against the bootstrap extractor")
    args = ap.parse_args(argv)
    if not (args.data_dir / "paper").is_dir():
        print(f"error: {args.data_dir}/paper not found: pass --data-dir pointing at the shared data", file=sys.stderr)
        return 2
    only = [s.strip() for s in args.only.split(",") if s.strip()] or None
    t0 = time.perf_counter()
    results = run(args.data_dir, only, args.max_rows)
    wall = time.perf_counter() - t0
    n_rows = sum(r.joined for r in results)

    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {platform.node()} {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus, python {platform.python_version()} load avg {os.getloadavg()[0]:.1f}")
    print(f"scored {n_rows} joined rows in {wall:.1f} s ({1e6 * wall / max(n_rows, 1):.0f} µs/row incl. loading)\n")
    main_res = [r for r in results if r.dataset != "MATH"]
    math_res = [r for r in results if r.dataset == "MATH"]
    print(table(main_res))
    agg = aggregate(main_res)
    print("\nPer dataset:\n")
    print(table(list(agg.values())))

    if math_res:
        print("\nMATH (human solutions and GPT-4o outputs vs the released final answer):\n")
        print("| source | rows | stated % (boxed / answer is) | gold truncated | stated, intact gold | agreement % | unstated (ok) |")
        print("|---|---|---|---|---|---|---|")
        for r in math_res:
            print(f"| {r.name} | {r.rows} | {_pct(r.parsed, r.rows)} | {r.gold_truncated} | {r.stated_right} | {_pct(r.agree, r.stated_right)} | {r.unstated} ({r.unstated_correct}) |")

    print("\nDisagreements (teacher's stated answer contains gold, correct() says wrong):")
    n_unexplained = 0
    for r in results:
        for idx, g, pred, rule, out, why in r.disagreements[: args.max_list]:
            n_unexplained += why == "UNEXPLAINED"
            tail = " ".join(out[-160:].split())
            print(f"- {r.name}#{idx}: gold={g!r} pred={pred!r} rule={rule} -- {why}\n    ...{tail}")
    print("\nStated-wrong rows that correct() accepts (our fallback found the gold; MATH: first 10 unstated rows that miss):")
    for r in results:
        for idx, g, pred, rule, out in r.oddities[: min(args.max_list, 10 if r.dataset == "MATH" else args.max_list)]:
            tail = " ".join(out[-160:].split())
            print(f"- {r.name}#{idx}: gold={g!r} pred={pred!r} rule={rule}\n    ...{tail}")

    print()
    fails = []
    for ds in REQUIRED:
        if ds in agg:
            a = agg[ds].agreement
            worst = min((r for r in results if r.dataset == ds), key=lambda r: r.agreement)
            ok = a >= THRESHOLD and worst.agreement >= THRESHOLD
            print(f"{ds}: agreement {100 * a:.2f} % overall, worst file {worst.name} {100 * worst.agreement:.2f} % -> {'OK' if ok else 'BELOW 99.5 %'}")
            if not ok:
                fails.append(ds)
    print(f"unexplained disagreements: {n_unexplained}")
    if args.speed:
        print(speed(args.data_dir))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
