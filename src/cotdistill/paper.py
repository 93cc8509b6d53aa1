"""Import of the paper's released SFT files (arXiv 2502.18001) into :class:`~cotdistill.traces.Trace` records.

The released files are LLaMA-Factory alpaca lists (``{"instruction", "output"}``; MATH:
``{"problem", "solution", "output", ...}``) whose *names* carry the cell: dataset, teacher,
granularity level and format. :func:`parse_file_name` reads the naming zoo::

    SVAMP_ChatGPT_level3_ranked        svamp  gpt-4o            3      cot
    0_SVAMP_chatgpt_level5BSM          svamp  gpt-4o            5      subq   (BSM -> subq, RaR -> rar, SYM -> sym)
    openbookqa_chatgpt_rar_level3_ranked obqa gpt-4o            3      rar
    stqa_gemini_level2_ranked          strategyqa gemini-1.5-flash 2   cot
    gsm8k_llama_level1_ranked          gsm8k  llama-3-70b       1      cot
    commonsenseQA_onlyans / SVAMP_only_ans / gsm_train_onlyans
                                       <task> human             0      cot    (answer only; the gold answer)
    stqa_human_annotation / aqua_human / svamp_human_annotation / math_human
                                       <task> human             human  cot
    openbookQA_ChatGPT_0_shot_with_gt_ranked     obqa gpt-4o-0shot-gt 3 cot
    openbookQA_ChatGPT_0_shot_without_gt_ranked  obqa gpt-4o-0shot    3 cot

The two zero-shot OpenBookQA files were generated without a granularity instruction (with /
without the gold answer shown to GPT-4o). They are kept under their own teacher names so they never
mix with the leveled GPT-4o cells; their ``level`` is the placeholder :data:`ZERO_SHOT_LEVEL` (3,
the middle of the scale) because a Trace needs one. Select them by teacher, not by level.

``math_human`` yields two traces per row: the human ``solution`` (level ``human``) and the released
answer-only ``output`` (level 0), as in the authors' ``dataset_info.json`` (``math_human`` /
``math_onlyans``). Its ``chatgpt_output`` column (a GPT CoT of unknown level) is not imported.

Each trace gets the id of the task :class:`~cotdistill.tasks.Example` with the same question (after
the task's layout normalisation), that example's gold answer, and ``pred``/``correct`` from
:func:`cotdistill.answers.correct`. Rows that are *test* questions of their task are test leakage:
they are reported and dropped unless ``keep_test=True`` (the StrategyQA human file holds all 290
StrategyQA test questions in rows 2000-2289).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .paths import load_json_any
from .spec import FORMAT_ALIASES
from .traces import Trace

TEACHERS = {
    "chatgpt": "gpt-4o",
    "gpt4o": "gpt-4o",
    "gpt-4o": "gpt-4o",
    "gemini": "gemini-1.5-flash",
    "llama": "llama-3-70b",
    "human": "human",
}
ZERO_SHOT_LEVEL = 3

# dataset prefix (lower case) -> task name; longest first so "gsm8k" wins over "gsm"
_TASK_ALIASES = [
    ("commonsenseqa", "csqa"),
    ("openbookqa", "obqa"),
    ("strategyqa", "strategyqa"),
    ("svamp", "svamp"),
    ("gsm8k", "gsm8k"),
    ("aqua", "aqua"),
    ("auqa", "aqua"),
    ("math", "math"),
    ("csqa", "csqa"),
    ("ecqa", "csqa"),
    ("obqa", "obqa"),
    ("stqa", "strategyqa"),
    ("gsm", "gsm8k"),
    ("cqa", "csqa"),
]
# leftovers of the authors' prompt templates ("<Solution Path>"), not HTML-ish math like "<5>"
_TEMPLATE_LEFTOVER = re.compile(r"<(?:Solution Path|[A-Z][a-z]+(?: [A-Z]?[a-z]+){1,3})>")
_ANSWER_IS = re.compile(r"answer is", re.I)


@dataclass(frozen=True)
class FileSpec:
    """The cell a released file belongs to, read from its name."""

    task: str
    teacher: str
    level: int | str
    format: str = "cot"
    prompt_key: str = "instruction"
    response_key: str = "output"


def _stem(name: str) -> str:
    n = os.path.basename(name)
    for suf in (".gz", ".json", ".jsonl"):
        if n.endswith(suf):
            n = n[: -len(suf)]
    return n


def parse_file_name(name: str) -> list[FileSpec]:
    """Cells of a released file from its name (``.json``/``.json.gz``); ``[]`` when unknown.

    Usually one cell; ``math_human`` gives two (human solution and answer only).
    """
    stem = _stem(name)
    s = stem.lower()
    s = s[2:] if s.startswith("0_") else s
    task = None
    for alias, t in _TASK_ALIASES:
        if s == alias or s.startswith(alias + "_"):
            task, rest = t, s[len(alias) + 1 :]
            break
    if task is None:
        return []
    tokens = rest.split("_")
    is_math = task == "math"
    pk = "problem" if is_math else "instruction"

    if re.search(r"(?:^|_)only_?ans(?:_|$)", rest) or rest in ("train_onlyans",):
        return [FileSpec(task, "human", 0, "cot", pk, "output")]
    if "human" in tokens or (task == "csqa" and s.startswith("ecqa")):
        if is_math:
            return [FileSpec(task, "human", "human", "cot", pk, "solution"),
                    FileSpec(task, "human", 0, "cot", pk, "output")]
        return [FileSpec(task, "human", "human", "cot", pk, "output")]
    zs = re.search(r"0_shot_(with|without)_gt", rest)
    if zs:
        teacher = "gpt-4o-0shot-gt" if zs.group(1) == "with" else "gpt-4o-0shot"
        return [FileSpec(task, teacher, ZERO_SHOT_LEVEL, "cot", pk, "output")]
    teacher = next((TEACHERS[t] for t in tokens if t in TEACHERS), None)
    if teacher is None and is_math and tokens and tokens[0] == "mix":
        teacher = "gpt-4o"
    lv = re.search(r"level_?([1-6])(?!\d)", rest)
    if teacher is None or lv is None:
        return []
    fm = re.search(r"(?:^|_|\d)(bsm|rar|symbolic|sym)(?:_|$)", rest)
    fmt = FORMAT_ALIASES[fm.group(1)] if fm else "cot"
    rk = "output"
    if is_math:
        rk = {"gpt-4o": "chatgpt_output", "gemini-1.5-flash": "gemini_output", "llama-3-70b": "llama_output"}[teacher]
    return [FileSpec(task, teacher, int(lv.group(1)), fmt, pk, rk)]


# --------------------------------------------------------------------------------------------


@dataclass
class FileSummary:
    """What one released file (one cell) contributed, and every problem found in it."""

    file: str
    task: str
    teacher: str
    level: int | str
    format: str
    rows: int = 0
    kept: int = 0
    scored: int = 0
    correct: int = 0
    words: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def correct_pct(self) -> float | None:
        return 100.0 * self.correct / self.scored if self.scored else None

    @property
    def mean_words(self) -> float:
        return self.words / self.kept if self.kept else 0.0


@dataclass
class ImportReport:
    traces: list[Trace]
    files: list[FileSummary]
    warnings: list[str] = field(default_factory=list)

    def __iter__(self):
        """Iterating a report iterates its traces (``list(import_paper(...))``)."""
        return iter(self.traces)

    def __len__(self) -> int:
        return len(self.traces)

    def problems(self) -> list[str]:
        """Every problem, one line each (``FILE: message``), warnings first."""
        multi = {n for n, c in Counter(f.file for f in self.files).items() if c > 1}

        def label(f: FileSummary) -> str:
            return f"{f.file} (level {f.level})" if f.file in multi else f.file

        return list(self.warnings) + [f"{label(f)}: {p}" for f in self.files for p in f.problems]


class _TaskIndex:
    """Question -> (Example, split) for one task, both splits; empty if the task data is missing."""

    def __init__(self, task_name: str, data_dir):
        from .tasks import get_task

        self.task = get_task(task_name, data_dir)
        self.by_key: dict[str, object] = {}
        self.error: str | None = None
        try:
            for split in ("test", "train"):  # train wins on (rare) duplicates across splits
                for ex in self.task.load(split):
                    self.by_key[self.key(ex.question)] = ex
        except UserError as e:
            self.error = str(e)

    def key(self, question: str) -> str:
        return " ".join(self.task.normalize_question(question).split())


def _short(path: str) -> str:
    return _stem(path) + ".json"


def _candidate_files(src: Path) -> list[Path]:
    if src.is_file():
        return [src]
    if not src.is_dir():
        raise UserError(f"{src} does not exist: pass the directory of the released files (e.g. DATA/paper)")
    return sorted(p for p in src.iterdir() if p.is_file() and re.search(r"\.jsonl?(\.gz)?$", p.name))


def import_paper(
    src: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    *,
    keep_test: bool = False,
    on_file: Callable[[str, int, int], None] | None = None,
) -> ImportReport:
    """Read the released files in ``src`` (a directory or one file) into traces.

    ``data_dir`` locates the benchmark files used to join ids and gold answers (see
    :func:`cotdistill.paths.data_dir`). ``on_file(name, i, n)`` is called before each file (progress).
    Unknown file names, empty or malformed files are skipped with a warning; an import that yields
    no trace at all is a :class:`UserError`.
    """
    from . import answers

    src = Path(src)
    files = _candidate_files(src)
    report = ImportReport(traces=[], files=[])
    indexes: dict[str, _TaskIndex] = {}
    for i, path in enumerate(files):
        name = _short(path.name)
        if on_file:
            on_file(name, i, len(files))
        if _stem(path.name) == "dataset_info":
            continue  # the LLaMA-Factory registry, not data
        specs = parse_file_name(path.name)
        if not specs:
            report.warnings.append(
                f"{name}: unknown file name, skipped (expected a released name such as "
                f"SVAMP_gemini_level3_ranked.json; rename it to the released name)"
            )
            continue
        try:
            rows = load_json_any(path)
        except UserError as e:
            report.warnings.append(f"{name}: skipped, {e}")
            continue
        if not isinstance(rows, list) or not rows:
            report.warnings.append(f"{name}: skipped, no records (expected a JSON list of {{instruction, output}})")
            continue
        for spec in specs:
            if spec.task not in indexes:
                indexes[spec.task] = _TaskIndex(spec.task, data_dir)
                if indexes[spec.task].error:
                    report.warnings.append(
                        f"task {spec.task}: benchmark data unavailable, ids are hashes and gold is missing "
                        f"({indexes[spec.task].error})"
                    )
            summ = _import_rows(name, rows, spec, indexes[spec.task], keep_test, report.traces, answers)
            report.files.append(summ)
    if not report.traces:
        readable = [w for w in report.warnings if "unknown file name" not in w]
        if readable:  # released names, but nothing usable in them
            raise UserError(f"no traces imported from {src}: {len(readable)} released file(s) could not be used; "
                            f"first: {readable[0]}")
        raise UserError(
            f"no traces imported from {src}: it has no released file with a known name "
            f"(e.g. SVAMP_gemini_level3_ranked.json.gz); point SRC at the paper directory"
            + (f" (did you mean {src / 'paper'}?)" if (src / "paper").is_dir() else "")
        )
    return report


def _import_rows(name, rows, spec: FileSpec, index: _TaskIndex, keep_test, out, answers) -> FileSummary:
    from .tasks.benchmarks import math_gold

    task = index.task
    atype = task.answer_type
    s = FileSummary(name, spec.task, spec.teacher, spec.level, spec.format, rows=len(rows))
    bad_rows, no_match, leaked, leftovers, no_answer_is, empty = [], [], [], [], [], []
    leak_ids: list[str] = []
    math_disagree: list[int] = []
    seen: Counter = Counter()
    unreadable = 0
    is_cot = spec.level != 0
    for r, row in enumerate(rows):
        if not isinstance(row, dict):
            bad_rows.append(r)
            continue
        q = row.get(spec.prompt_key, row.get("instruction", row.get("problem")))
        out_text = row.get(spec.response_key)
        if not isinstance(q, str) or not isinstance(out_text, str):
            bad_rows.append(r)
            continue
        if not out_text.strip():
            empty.append(r)
        key = index.key(q)
        seen[key] += 1
        ex = index.by_key.get(key)
        if ex is not None and ex.split == "test":
            leaked.append(r)
            leak_ids.append(ex.id)
            if not keep_test:
                continue
        if ex is None:
            no_match.append(r)
            tid = f"{spec.task}-q{hashlib.sha1(key.encode()).hexdigest()[:10]}"
            question, gold, choices = task.normalize_question(q), "", None
        else:
            tid, question, gold, choices = ex.id, ex.question, ex.answer, ex.choices
        if spec.task == "math" and spec.level == "human":
            g, final = math_gold(row)
            if ex is None:
                gold = g
            released = str(row.get("output", "")).strip()
            if final is None or not answers.equal(final, released, "math"):
                math_disagree.append(r)
        if is_cot:
            if _TEMPLATE_LEFTOVER.search(out_text):
                leftovers.append(r)
            if not (spec.task == "math" and spec.level == "human") and not _ANSWER_IS.search(out_text):
                no_answer_is.append(r)
        pred, ok = (None, None)
        if gold:
            pred, ok = answers.correct(out_text, gold, atype, choices=choices)
            s.scored += 1
            s.correct += bool(ok)
            unreadable += pred is None
        t = Trace(
            id=tid, task=spec.task, question=question, gold=gold, answer_type=atype if gold else None,
            teacher=spec.teacher,
            level=spec.level, format=spec.format, output=out_text, pred=pred,
            correct=ok if gold else None, source=f"{name}#{r}",
        )
        out.append(t)
        s.kept += 1
        s.words += len(out_text.split())

    def rows_(xs, k=3):
        return ", ".join(map(str, xs[:k])) + (", ..." if len(xs) > k else "")

    if bad_rows:
        s.problems.append(f"{len(bad_rows)} malformed rows skipped (rows {rows_(bad_rows)}): missing "
                          f"{spec.prompt_key!r}/{spec.response_key!r} text fields")
    if leaked:
        lo, hi = leaked[0], leaked[-1]
        span = f"rows {lo}-{hi}" if hi - lo + 1 == len(leaked) else f"rows {rows_(leaked)}"
        fate = "kept (keep_test)" if keep_test else "dropped (use --keep-test to keep them)"
        s.problems.append(f"test leakage: {len(leaked)} rows are {spec.task} TEST questions ({span}); {fate}")
    if no_match:
        s.problems.append(f"{len(no_match)} rows match no {spec.task} example and have no gold (rows {rows_(no_match)})")
    dups = sum(c - 1 for c in seen.values() if c > 1)
    if dups:
        s.problems.append(f"{dups} duplicate questions in the file")
    if empty:
        s.problems.append(f"{len(empty)} empty outputs (rows {rows_(empty)})")
    if leftovers:
        s.problems.append(f"{len(leftovers)} outputs contain a template leftover such as '<Solution Path>' (rows {rows_(leftovers)})")
    if no_answer_is:
        s.problems.append(f"{len(no_answer_is)} outputs lack 'The answer is' (rows {rows_(no_answer_is)})")
    if math_disagree:
        s.problems.append(
            f"{len(math_disagree)} rows: the final answer of the human solution (\\boxed{{}}, else the last $...$) "
            f"disagrees with the released 'output' (rows {rows_(math_disagree)}); gold = \\boxed{{}} answer when present, else 'output'"
        )
    if s.scored and s.correct < s.scored:
        s.problems.append(
            f"{s.scored - s.correct} outputs ({100 - s.correct_pct:.2f} %) disagree with the gold answer"
            + (f" ({unreadable} of them with no answer the answers module can read)" if unreadable else "")
        )
    return s
