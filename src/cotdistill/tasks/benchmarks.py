"""Adapters for the seven benchmarks of the paper (arXiv 2502.18001), with the paper's splits.

Every adapter reads from the data directory (``--data-dir`` > ``$COTDISTILL_DATA`` >
``~/.cache/cotdistill/data``, as ``cotdistill data download`` writes it); a missing file is a one-line error
naming the file and both ways to provide it.

=============  ===========  =====================================================  ==========================================
task           answer type  train                                                  test
=============  ===========  =====================================================  ==========================================
gsm8k          number       benchmarks/gsm8k/train.jsonl.gz (7473)                 benchmarks/gsm8k/test.jsonl.gz (1319)
svamp          number       the 700 SVAMP items whose ``Body + " " + Question``     the other 300 SVAMP items
                            is an instruction of paper/SVAMP_only_ans
aqua           choice       paper/aqua_only_ans (6940, gold letter parsed from     benchmarks/aqua/test.json.gz (254)
                            the released answer)
math           math         paper/math_human, rows whose problem hashes to         the rest (~10 %); see :func:`math_split`
                            bucket >= 10 of 100 (~90 %)
csqa           choice       paper/commonsenseQA_onlyans (9740)                     benchmarks/csqa_test.json.gz (1221)
obqa           choice       paper/openbookQA_onlyans (4957)                        benchmarks/openbookQA_test.json.gz (500)
strategyqa     bool         paper/strategyQA_onlyans minus the test questions     benchmarks/strategyQA_test.json.gz (290)
=============  ===========  =====================================================  ==========================================

Question layouts (one per task; :meth:`Task.normalize_question` converts the others):

* csqa / obqa: ``Q: <stem> Answer choices: A: x, B: y, C: z`` (the layout of every released
  training file); the CSQA test layout ``<stem> Answer Choices:\\nA. x\\nB. y`` is converted.
* aqua: ``<stem> Answer Choices: (A) x (B) y ...`` (released layout); the AQuA test file's
  ``options: ["A)x", ...]`` are rendered into it.
* all tasks: runs of whitespace collapse to one space, except MATH, whose LaTeX / Asymptote
  problems keep their line breaks (only trailing spaces are stripped).

Example ids are stable and readable: ``svamp-chal-17`` (SVAMP's own ID), ``math-<row>`` (row of
``math_human``), otherwise ``<task>-<split>-<row>`` with the 0-based row of the source file.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from pathlib import Path

from ..errors import UserError
from ..paths import load_json_any, require
from .base import Example, Task, register

# --------------------------------------------------------------------------------------------
# text helpers


def collapse_ws(text: str) -> str:
    return " ".join(str(text).split())


def match_key(text: str) -> str:
    """Key used to join questions across files: whitespace-insensitive."""
    return " ".join(str(text).split())


def format_number(x) -> str:
    """``145.0`` -> ``"145"``, ``2.50`` -> ``"2.5"``, ``"1,234"`` -> ``"1234"``."""
    s = str(x).replace(",", "").strip()
    try:
        f = float(s)
    except ValueError:
        return s
    if f.is_integer():
        return str(int(f))
    return repr(f).rstrip("0").rstrip(".") if "e" not in repr(f) else s


LETTERS = "ABCDEFGH"

# CSQA / OBQA layout:  "Q: stem Answer choices: A: x, B: y, C: z"
_QA_CHOICES = re.compile(r"\s*Answer choices:\s*(A:.*)$", re.S)
_QA_SPLIT = re.compile(r"(?:^|,\s*)([A-H]):\s")
# CSQA test layout:   "stem Answer Choices:\nA. x\nB. y\n"
_CSQA_TEST = re.compile(r"^(.*?)\s*Answer Choices:\s*\n(.*)$", re.S)
_CSQA_TEST_ITEM = re.compile(r"^\s*([A-H])[.)]\s*(.*?)\s*$")
# AQuA layout:        "stem Answer Choices: (A) x (B) y"
_AQUA_CHOICES = re.compile(r"\s*Answer Choices:\s*(\(A\).*)$", re.S)
_AQUA_SPLIT = re.compile(r"\(([A-H])\)\s?")


def render_qa_choices(stem: str, choices: list[str]) -> str:
    stem = collapse_ws(stem)
    if not stem.startswith("Q:"):
        stem = "Q: " + stem
    opts = ", ".join(f"{LETTERS[i]}: {collapse_ws(c)}" for i, c in enumerate(choices))
    return f"{stem} Answer choices: {opts}"


def parse_qa_choices(text: str) -> list[str] | None:
    m = _QA_CHOICES.search(text)
    if not m:
        return None
    parts = _QA_SPLIT.split(m.group(1))
    # ['', 'A', 'x', 'B', 'y', ...]
    letters, vals = parts[1::2], parts[2::2]
    if not letters or "".join(letters) != LETTERS[: len(letters)]:
        return None
    return [v.strip() for v in vals]


def csqa_test_to_qa(text: str) -> str | None:
    """``stem Answer Choices:\\nA. x\\nB. y`` -> ``Q: stem Answer choices: A: x, B: y``."""
    m = _CSQA_TEST.match(text)
    if not m:
        return None
    choices = []
    for line in m.group(2).splitlines():
        if not line.strip():
            continue
        im = _CSQA_TEST_ITEM.match(line)
        if not im or im.group(1) != LETTERS[len(choices)]:
            return None
        choices.append(im.group(2))
    if not choices:
        return None
    return render_qa_choices(m.group(1), choices)


def render_aqua(stem: str, choices: list[str]) -> str:
    opts = " ".join(f"({LETTERS[i]}) {collapse_ws(c)}" for i, c in enumerate(choices))
    return f"{collapse_ws(stem)} Answer Choices: {opts}"


def parse_aqua_choices(text: str) -> list[str] | None:
    m = _AQUA_CHOICES.search(text)
    if not m:
        return None
    parts = _AQUA_SPLIT.split(m.group(1))
    letters, vals = parts[1::2], parts[2::2]
    if not letters or "".join(letters) != LETTERS[: len(letters)]:
        return None
    return [v.strip() for v in vals]


_AQUA_OPT = re.compile(r"^\s*\(?([A-H])\s*\)\s*(.*)$", re.S)


def aqua_options(options: list[str]) -> list[str]:
    out = []
    for o in options:
        m = _AQUA_OPT.match(o)
        out.append(m.group(2).strip() if m else str(o).strip())
    return out


# AQuA's released answer-only targets are mostly a bare letter but a few hundred are free text
# ("Option 'A'", ":(OptionC", "B 1/204", "is D.", "... Answer C"). Read the letter in order of
# reliability; None when it cannot be read.
_AQ_PATTERNS = [
    re.compile(r"^\W*([A-Ea-e])\W*$"),  # "B", "'E'", "- C", "D.", "a"
    re.compile(r"^\W*([A-E])(?![a-zA-Z])"),  # "A 230 m", "B138", "C. 7", "D, since ..."
    re.compile(r"(?:answer|ans|option|choice|OA)\s*(?:is|:|=|-|should be)?\s*\W{0,3}([A-E])\b", re.I),
    re.compile(r"\b(?:is|hence|therefore|so|in)\s*:?\s*([A-E])\b"),  # "isC", "is:B", "in C, ..."
    re.compile(r"\b([A-E])\W*$"),  # "... 8C3 = 56. E"
]


def aqua_letter(output: str) -> str | None:
    s = str(output).strip()
    for p in _AQ_PATTERNS:
        ms = list(p.finditer(s))
        if ms:
            return (ms[0] if p is _AQ_PATTERNS[1] else ms[-1]).group(1).upper()
    return None


# MATH: final answer of a human solution
def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` (brace-balanced), or None."""
    for macro in ("\\boxed", "\\fbox"):
        i = text.rfind(macro)
        if i < 0:
            continue
        j = i + len(macro)
        while j < len(text) and text[j] == " ":
            j += 1
        if j < len(text) and text[j] == "{":
            depth = 0
            for k in range(j, len(text)):
                if text[k] == "{":
                    depth += 1
                elif text[k] == "}":
                    depth -= 1
                    if depth == 0:
                        return text[j + 1 : k].strip()
            return None
        # "\boxed 5"
        m = re.match(r"\s*([^\s$]+)", text[j:])
        return m.group(1) if m else None
    return None


_DOLLAR = re.compile(r"\$\$?([^$]+?)\$\$?")


def last_math_expression(text: str) -> str | None:
    """Heuristic final answer of a solution without ``\\boxed``: right-hand side of the last
    ``$...$`` expression, units in ``\\text{}`` removed."""
    xs = _DOLLAR.findall(text)
    if not xs:
        return None
    e = xs[-1].strip().rstrip(".").strip()
    e = e.split("=")[-1].strip()
    e = re.sub(r"\\(?:text|mbox|mathrm)\{\s*[a-zA-Z ]*\}", "", e).strip()
    return e or None


def math_split(problem: str, test_percent: int = 10) -> str:
    """Deterministic split of a MATH problem: ``test`` when ``sha1(problem) % 100 < test_percent``.

    Hash-based (not seeded shuffling) so that the split of a problem never depends on which
    other problems are in the file.
    """
    h = int(hashlib.sha1(problem.strip().encode("utf-8")).hexdigest(), 16)
    return "test" if h % 100 < test_percent else "train"


# --------------------------------------------------------------------------------------------
# shared loading (cached per resolved path)


@lru_cache(maxsize=64)
def _load_cached(path: str, mtime: float):
    return load_json_any(path)


def _load(root: Path, rel: str):
    p = require(root, rel)
    data = _load_cached(str(p), p.stat().st_mtime)
    if not isinstance(data, list):
        raise UserError(f"{p}: expected a JSON list of records; re-download it with `cotdistill data download`")
    return data, p


def _field(p: Path, i: int, row, key: str):
    if not isinstance(row, dict) or key not in row:
        raise UserError(f"{p}: row {i} has no field {key!r}; the file is not in the expected format, re-download it")
    return row[key]


class _Benchmark(Task):
    """Common machinery: sources per split, question layout."""

    files: dict[str, list[str]] = {}

    def sources(self, split: str) -> list[str]:
        return list(self.files.get(split, []))

    def root(self) -> Path:
        from ..paths import data_dir

        return self.data_dir if self.data_dir is not None else data_dir(None)

    def normalize_question(self, text: str) -> str:
        return collapse_ws(text)

    def _ex(self, id: str, split: str, question: str, answer: str, choices=None, **meta) -> Example:
        return Example(
            id=id, task=self.name, split=split, question=question, answer=answer,
            answer_type=self.answer_type, choices=choices, meta=meta,
        )


# --------------------------------------------------------------------------------------------


@register
class GSM8K(_Benchmark):
    name = "gsm8k"
    answer_type = "number"
    description = "Grade-school math word problems (Cobbe et al. 2021)."
    files = {"train": ["benchmarks/gsm8k/train.jsonl.gz"], "test": ["benchmarks/gsm8k/test.jsonl.gz"]}

    def _load(self, split):
        rows, p = _load(self.root(), self.files[split][0])
        out = []
        for i, r in enumerate(rows):
            ans = str(_field(p, i, r, "answer"))
            if "####" not in ans:
                raise UserError(f"{p}: row {i} answer has no '#### <number>'; re-download the file")
            gold = format_number(ans.rsplit("####", 1)[1])
            out.append(self._ex(f"gsm8k-{split}-{i}", split, collapse_ws(_field(p, i, r, "question")), gold,
                                rationale=ans.rsplit("####", 1)[0].strip()))
        return out


@register
class SVAMP(_Benchmark):
    name = "svamp"
    answer_type = "number"
    description = "Simple variations on arithmetic math word problems (Patel et al. 2021); paper split 700/300."
    files = {
        "train": ["benchmarks/svamp/SVAMP.json.gz", "paper/SVAMP_only_ans.json.gz (defines the 700)"],
        "test": ["benchmarks/svamp/SVAMP.json.gz", "paper/SVAMP_only_ans.json.gz (the other 300)"],
    }

    def _load(self, split):
        root = self.root()
        rows, p = _load(root, "benchmarks/svamp/SVAMP.json.gz")
        train_rows, _ = _load(root, "paper/SVAMP_only_ans.json.gz")
        train_keys = {match_key(r.get("instruction", "")) for r in train_rows if isinstance(r, dict)}
        out = []
        for i, r in enumerate(rows):
            q = f"{_field(p, i, r, 'Body')} {_field(p, i, r, 'Question')}"
            s = "train" if match_key(q) in train_keys else "test"
            if s != split:
                continue
            out.append(self._ex(f"svamp-{r.get('ID', i)}", split, collapse_ws(q), format_number(_field(p, i, r, "Answer")),
                                equation=r.get("Equation"), type=r.get("Type")))
        return out


@register
class AQuA(_Benchmark):
    name = "aqua"
    answer_type = "choice"
    description = "AQuA-RAT algebraic multiple-choice problems (Ling et al. 2017)."
    files = {"train": ["paper/aqua_only_ans.json.gz"], "test": ["benchmarks/aqua/test.json.gz"]}

    def normalize_question(self, text: str) -> str:
        return collapse_ws(text)

    def _load(self, split):
        rows, p = _load(self.root(), self.files[split][0])
        out = []
        for i, r in enumerate(rows):
            if split == "test":
                choices = aqua_options(_field(p, i, r, "options"))
                q = render_aqua(_field(p, i, r, "question"), choices)
                gold = str(_field(p, i, r, "correct")).strip().upper()
                meta = {"rationale": r.get("rationale")}
            else:
                q = collapse_ws(_field(p, i, r, "instruction"))
                choices = parse_aqua_choices(q)
                raw = str(_field(p, i, r, "output"))
                gold = aqua_letter(raw)
                if gold is None and choices:  # "0.40%" -> the option with that text
                    from ..answers import normalize

                    gold = normalize(raw, "choice", choices=choices)
                if gold is None:  # unreadable released answer: not a usable example
                    continue
                meta = {} if raw.strip() == gold else {"released_answer": raw}
            out.append(self._ex(f"aqua-{split}-{i}", split, q, gold, choices, **meta))
        return out


@register
class MATH(_Benchmark):
    name = "math"
    answer_type = "math"
    description = ("MATH competition problems (Hendrycks et al. 2021), the paper's 1297-problem subset; "
                   "deterministic ~90/10 split by sha1(problem) % 100 < 10 -> test.")
    files = {
        "train": ["paper/math_human.json.gz (sha1(problem) % 100 >= 10)"],
        "test": ["paper/math_human.json.gz (sha1(problem) % 100 < 10)"],
    }

    def normalize_question(self, text: str) -> str:
        return "\n".join(line.rstrip() for line in str(text).strip().splitlines())

    def _load(self, split):
        rows, p = _load(self.root(), "paper/math_human.json.gz")
        pct = int(self.options.get("test_percent", 10))
        out = []
        for i, r in enumerate(rows):
            problem = str(_field(p, i, r, "problem"))
            if math_split(problem, pct) != split:
                continue
            gold, _ = math_gold(r)
            out.append(self._ex(f"math-{i}", split, self.normalize_question(problem), gold,
                                level=r.get("level"), type=r.get("type"), solution=r.get("solution")))
        return out


def math_gold(row: dict) -> tuple[str, str | None]:
    """Gold answer of a ``math_human`` row and the solution's own final answer (for checking).

    Gold is the ``\\boxed{}`` answer of the human solution when there is one (the released
    ``output`` field truncates some of them, e.g. ``\\frac{1}`` for ``\\frac{1}{2}``), else the
    released ``output``. The second value is the solution's final answer (boxed, else the last
    ``$...$`` expression), None when none can be read.
    """
    sol = str(row.get("solution", ""))
    boxed = last_boxed(sol)
    if boxed:
        return boxed, boxed
    return str(row.get("output", "")).strip(), last_math_expression(sol)


class _ChoiceQA(_Benchmark):
    """CSQA / OBQA: ``Q: stem Answer choices: A: x, B: y`` layout."""

    answer_type = "choice"

    def normalize_question(self, text: str) -> str:
        conv = csqa_test_to_qa(str(text))
        return conv if conv is not None else collapse_ws(text)

    def _load(self, split):
        rows, p = _load(self.root(), self.files[split][0])
        out = []
        for i, r in enumerate(rows):
            q = self.normalize_question(_field(p, i, r, "instruction"))
            gold = str(_field(p, i, r, "label" if split == "test" else "output")).strip()
            out.append(self._ex(f"{self.name}-{split}-{i}", split, q, gold, parse_qa_choices(q)))
        return out


@register
class CSQA(_ChoiceQA):
    name = "csqa"
    description = "CommonsenseQA (Talmor et al. 2019); test = the paper's 1221-question evaluation set."
    files = {"train": ["paper/commonsenseQA_onlyans.json.gz"], "test": ["benchmarks/csqa_test.json.gz"]}


@register
class OBQA(_ChoiceQA):
    name = "obqa"
    description = "OpenBookQA (Mihaylov et al. 2018); test = the paper's 500-question evaluation set."
    files = {"train": ["paper/openbookQA_onlyans.json.gz"], "test": ["benchmarks/openbookQA_test.json.gz"]}


@register
class StrategyQA(_Benchmark):
    name = "strategyqa"
    answer_type = "bool"
    description = "StrategyQA implicit multi-hop yes/no questions (Geva et al. 2021); train excludes the 290 test questions."
    files = {
        "train": ["paper/strategyQA_onlyans.json.gz (minus test questions)"],
        "test": ["benchmarks/strategyQA_test.json.gz"],
    }

    def _load(self, split):
        root = self.root()
        test_rows, tp = _load(root, "benchmarks/strategyQA_test.json.gz")
        if split == "test":
            return [
                self._ex(f"strategyqa-test-{i}", "test", collapse_ws(_field(tp, i, r, "instruction")),
                         _bool(_field(tp, i, r, "label")))
                for i, r in enumerate(test_rows)
            ]
        test_keys = {match_key(r.get("instruction", "")) for r in test_rows}
        rows, p = _load(root, "paper/strategyQA_onlyans.json.gz")
        return [
            self._ex(f"strategyqa-train-{i}", "train", collapse_ws(_field(p, i, r, "instruction")),
                     _bool(_field(p, i, r, "output")))
            for i, r in enumerate(rows)
            if match_key(r.get("instruction", "")) not in test_keys
        ]


def _bool(v) -> str:
    s = str(v).strip().lower()
    if s in ("true", "yes", "1"):
        return "True"
    if s in ("false", "no", "0"):
        return "False"
    return str(v).strip()


PAPER_TASKS = ("gsm8k", "svamp", "aqua", "math", "csqa", "obqa", "strategyqa")
