"""``arith``: a procedural word-problem task, learnable by tiny students in CPU minutes.

It is the lab of the project: every factor of a distillation study (granularity level, format,
student size) can be varied and measured on a laptop. The design follows a recipe measured to be
learnable by sub-million-parameter students in CPU minutes::

    Ben has 5 pens, doubles them, doubles them, finds 6. How many?

* a start value ``s`` in 1..9, then ``steps`` (K, the difficulty knob, default 3) clauses, each
  drawn among those that keep the running value in ``0..max_value`` (default 99): add
  ("gets/finds/buys x", x in 1..9), subtract ("loses/sells/gives away x", never below 1: a zero would make the
  remaining steps trivial and the answer 0 too common),
  multiply ("doubles them"/"triples them"), divide ("halves them", only when even). The
  operation kind is drawn uniformly among the kinds that are valid at that point, then the
  verb and operand uniformly.
* 6 names x 6 items. The *signature* of a problem is (start, ops, operands); names and items
  are surface form only.
* ``test``: ``n_test`` (300) problems with distinct signatures; ``train``: ``n_train`` problems
  (default 20 000, any size: they are generated) that never share a signature with the test
  split. Both are deterministic functions of ``seed``. With the defaults the most common test
  answer covers 7.7 % of the test split (the chance level of a constant guess).

Options (``get_task("arith", steps=3, seed=0, n_train=20000, n_test=300, max_value=99)``).

:func:`lab_rationale` writes an exact rationale for an example at granularity level 0..6 in
format ``cot``, ``subq``, ``rar`` or ``sym``; it is what the ``lab`` teacher returns.
"""

from __future__ import annotations

import random
import re
from typing import Any

from ..errors import UserError
from ..spec import FORMATS
from .base import Example, Task, register

NAMES = ("Ben", "Ann", "Tom", "Mia", "Sam", "Eva")
PRONOUN = {"Ben": "He", "Tom": "He", "Sam": "He", "Ann": "She", "Mia": "She", "Eva": "She"}
ITEMS = ("pens", "cups", "books", "coins", "eggs", "cards")
ADD_VERBS = ("gets", "finds", "buys")
SUB_VERBS = ("loses", "sells", "gives away")
MUL_WORDS = {2: "doubles them", 3: "triples them"}
DIV_WORDS = {2: "halves them"}

LEVELS = tuple(range(7))
DEFAULTS: dict[str, Any] = {"steps": 3, "seed": 0, "n_train": 20000, "n_test": 300, "max_value": 99}


def _apply(v: int, op: str, x: int) -> int:
    if op == "+":
        return v + x
    if op == "-":
        return v - x
    if op == "*":
        return v * x
    return v // x


def _draw_problem(rng: random.Random, steps: int, max_value: int) -> dict[str, Any]:
    start = rng.randint(1, 9)
    v = start
    ops: list[str] = []
    operands: list[int] = []
    clauses: list[str] = []
    values: list[int] = []
    for _ in range(steps):
        kinds = []
        if v + 1 <= max_value:
            kinds.append("+")
        if v >= 2:
            kinds.append("-")
        if v * 2 <= max_value:
            kinds.append("*")
        if v % 2 == 0 and v > 0:
            kinds.append("/")
        op = rng.choice(kinds)
        if op == "+":
            x = rng.randint(1, min(9, max_value - v))
            clause = f"{rng.choice(ADD_VERBS)} {x}"
        elif op == "-":
            x = rng.randint(1, min(9, v - 1))
            clause = f"{rng.choice(SUB_VERBS)} {x}"
        elif op == "*":
            x = rng.choice([k for k in MUL_WORDS if v * k <= max_value])
            clause = MUL_WORDS[x]
        else:
            x = 2
            clause = DIV_WORDS[2]
        v = _apply(v, op, x)
        ops.append(op)
        operands.append(x)
        clauses.append(clause)
        values.append(v)
    return {
        "start": start,
        "ops": ops,
        "operands": operands,
        "clauses": clauses,
        "values": values,
        "name": rng.choice(NAMES),
        "item": rng.choice(ITEMS),
        "steps": steps,
    }


def signature(meta: dict[str, Any]) -> tuple:
    """The arithmetic identity of a problem: (start, ops, operands). Surface form is excluded."""
    return (meta["start"], tuple(meta["ops"]), tuple(meta["operands"]))


def question_text(meta: dict[str, Any]) -> str:
    return f"{meta['name']} has {meta['start']} {meta['item']}, {', '.join(meta['clauses'])}. How many?"


def _to_example(meta: dict[str, Any], split: str, idx: int, tag: str) -> Example:
    return Example(
        id=f"arith-{tag}-{split}-{idx}",
        task="arith",
        split=split,
        question=question_text(meta),
        answer=str(meta["values"][-1]),
        answer_type="number",
        meta=meta,
    )


def generate(split: str, *, steps: int = 3, seed: int = 0, n_train: int = 20000, n_test: int = 300,
             max_value: int = 99) -> list[Example]:
    """Generate one split deterministically (see module docstring)."""
    if steps < 1 or steps > 12:
        raise UserError(f"arith option steps={steps}: use 1..12")
    if max_value < 9:
        raise UserError(f"arith option max_value={max_value}: use at least 9")
    tag = f"k{steps}-s{seed}"
    rng_test = random.Random(f"arith-test-{seed}-{steps}-{max_value}")
    test: list[dict[str, Any]] = []
    seen: set[tuple] = set()
    tries = 0
    while len(test) < n_test:
        m = _draw_problem(rng_test, steps, max_value)
        tries += 1
        if tries > 200 * max(n_test, 1):
            raise UserError(f"arith: cannot draw {n_test} distinct test problems with steps={steps}; lower n_test")
        sig = signature(m)
        if sig in seen:
            continue
        seen.add(sig)
        test.append(m)
    if split == "test":
        return [_to_example(m, "test", i, tag) for i, m in enumerate(test)]
    rng_train = random.Random(f"arith-train-{seed}-{steps}-{max_value}")
    out: list[Example] = []
    while len(out) < n_train:
        m = _draw_problem(rng_train, steps, max_value)
        if signature(m) in seen:
            continue
        out.append(_to_example(m, "train", len(out), tag))
    return out


@register
class ArithTask(Task):
    name = "arith"
    answer_type = "number"
    description = "procedural K-step word problems (lab task; options steps, seed, n_train, n_test, max_value)"
    splits = ("train", "test")

    def _opts(self) -> dict[str, Any]:
        unknown = set(self.options) - set(DEFAULTS)
        if unknown:
            raise UserError(
                f"arith: unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(DEFAULTS)}"
            )
        out = dict(DEFAULTS)
        for k, v in self.options.items():
            try:
                out[k] = int(v)
            except (TypeError, ValueError):
                raise UserError(f"arith option {k}={v!r}: must be an integer") from None
        return out

    def _load(self, split: str) -> list[Example]:
        return generate(split, **self._opts())

    def sources(self, split: str) -> list[str]:
        return [f"generated ({', '.join(f'{k}={v}' for k, v in self._opts().items())})"]


# ------------------------------------------------------------------------------------------
# rationales
# ------------------------------------------------------------------------------------------
def _digits2(n: int) -> tuple[int, int]:
    return n // 10, n % 10


def _digit_step(a: int, op: str, x: int) -> str:
    """Digit-level computation of ``a op x`` (all values 0..99, x 1..9)."""
    r = _apply(a, op, x)
    at, ao = _digits2(a)
    if op == "+":
        s = ao + x
        c = s // 10
        return f"{a}+{x}: ones {ao}+{x}={s}, carry {c}, tens {at}+{c}={at + c}, so {r}."
    if op == "-":
        if ao >= x:
            return f"{a}-{x}: ones {ao}-{x}={ao - x}, borrow 0, tens {at}-0={at}, so {r}."
        return f"{a}-{x}: ones {ao + 10}-{x}={ao + 10 - x}, borrow 1, tens {at}-1={at - 1}, so {r}."
    if op == "*":
        p = ao * x
        c = p // 10
        return f"{a}*{x}: ones {ao}*{x}={p}, carry {c}, tens {at}*{x}+{c}={at * x + c}, so {r}."
    q1, r1 = divmod(at, x)
    q2 = (r1 * 10 + ao) // x
    return f"{a}/{x}: tens {at}/{x}={q1} rest {r1}, ones {r1 * 10 + ao}/{x}={q2}, so {r}."


def _sym(op: str) -> str:
    return op


def _steps(meta: dict[str, Any]) -> list[tuple[int, str, int, int, str]]:
    """(before, op, operand, after, clause) per step."""
    out = []
    v = meta["start"]
    for op, x, clause in zip(meta["ops"], meta["operands"], meta["clauses"]):
        r = _apply(v, op, x)
        out.append((v, op, x, r, clause))
        v = r
    return out


def _step_texts(meta: dict[str, Any], level: int) -> list[str]:
    """The body of a level-``level`` natural-language rationale, one string per step (or whole)."""
    st = _steps(meta)
    name, item = meta["name"], meta["item"]
    pron = PRONOUN.get(name, "They")
    if level == 1:
        return [f"{meta['start']} " + " ".join(f"{op}{x}" for _, op, x, _, _ in st) + "."]
    if level == 2:
        return [f"{r}." for _, _, _, r, _ in st]
    if level == 3:
        return [f"{a}{op}{x}={r}." for a, op, x, r, _ in st]
    if level == 4:
        return [f"{c[0].upper() + c[1:]}: {a}{op}{x}={r}." for a, op, x, r, c in st]
    if level == 5:
        first = f"{name} starts with {meta['start']} {item}."
        return [first] + [f"{pron} {c}, so {pron.lower()} has {a}{op}{x}={r} {item}." for a, op, x, r, c in st]
    if level == 6:
        return [_digit_step(a, op, x) for a, op, x, _, _ in st]
    return []


def _subq_pairs(meta: dict[str, Any], level: int) -> list[tuple[str, str]]:
    st = _steps(meta)
    texts = _step_texts(meta, level)
    if level == 1:
        return [("What expression gives the total?", texts[0])]
    if level == 5:
        pairs = [(f"How many {meta['item']} at the start?", texts[0])]
        return pairs + [(f"How many after {meta['name']} {c}?", t) for (_, _, _, _, c), t in zip(st, texts[1:])]
    return [(f"How many after {c}?", t) for (_, _, _, _, c), t in zip(st, texts)]


def _sym_texts(meta: dict[str, Any], level: int) -> list[str]:
    st = _steps(meta)
    k = len(st)
    if level == 1:
        return [f"x = {meta['start']} " + " ".join(f"{op}{x}" for _, op, x, _, _ in st) + "."]
    if level == 2:
        return [f"x{i + 1}={r}." for i, (_, _, _, r, _) in enumerate(st)]
    if level == 3:
        return [f"x0={meta['start']}."] + [f"x{i + 1}=x{i}{op}{x}={r}." for i, (_, op, x, r, _) in enumerate(st)]
    if level == 4:
        return [f"x0={meta['start']}."] + [
            f"{c}: x{i + 1}=x{i}{op}{x}={a}{op}{x}={r}." for i, (a, op, x, r, c) in enumerate(st)
        ]
    if level == 5:
        return [f"Let x0 be the {meta['item']} {meta['name']} starts with, x0={meta['start']}."] + [
            f"After {meta['name']} {c}, x{i + 1}=x{i}{op}{x}={a}{op}{x}={r}." for i, (a, op, x, r, c) in enumerate(st)
        ] + [f"So x{k}={st[-1][3]}."]
    if level == 6:
        return [f"x0={meta['start']}."] + [
            f"x{i + 1}=x{i}{op}{x}, " + _digit_step(a, op, x) for i, (a, op, x, r, c) in enumerate(st)
        ]
    return []


def _restatement(meta: dict[str, Any]) -> str:
    ops = ", then ".join(meta["clauses"])
    return f"Restated: {meta['name']} starts with {meta['start']} {meta['item']}, then {ops}; how many {meta['item']} at the end?"


def lab_rationale(example: Example, level: int, fmt: str = "cot") -> str:
    """Exact rationale for an ``arith`` example at granularity ``level`` (0..6) in format ``fmt``.

    Level 0 is answer only; 1 the bare expression; 2 the intermediate results; 3 one equation per
    step; 4 each clause restated with its equation; 5 full sentences; 6 digit-level arithmetic.
    Formats: ``cot`` (plain steps), ``subq`` (sub-question / answer pairs), ``rar`` (rephrase the
    question, then respond), ``sym`` (variables x0, x1, ...). Every rationale ends with
    ``The answer is X.``

    >>> ex = generate("test", n_test=1)[0]
    >>> lab_rationale(ex, 0).startswith("The answer is")
    True
    """
    if isinstance(level, bool) or not isinstance(level, int) or level not in LEVELS:
        raise UserError(f"lab teacher: level {level!r} is not available for arith; use 0..6")
    if fmt not in FORMATS:
        raise UserError(f"lab teacher: unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    meta = example.meta or {}
    if not all(k in meta for k in ("start", "ops", "operands", "clauses")):
        raise UserError(
            f"lab teacher: example {example.id!r} has no arith metadata (start, ops, operands, clauses); "
            "the lab teacher only works on the arith task"
        )
    answer = f"The answer is {example.answer}."
    if level == 0:
        return answer
    if fmt == "cot":
        body = " ".join(_step_texts(meta, level))
    elif fmt == "subq":
        body = " ".join(f"Q{i}: {q} A{i}: {a}" for i, (q, a) in enumerate(_subq_pairs(meta, level), 1))
    elif fmt == "rar":
        body = _restatement(meta) + " " + " ".join(_step_texts(meta, level))
    else:
        body = " ".join(_sym_texts(meta, level))
    return f"{body} {answer}"


def lab_reasoning(example: Example) -> str:
    """A long reasoning trace for an ``arith`` example in the style of a reasoning model: it
    explores, makes a slip on one step and backtracks, checks each step, and only then concludes
    (deterministic; the final response is given apart, see the ``lab:think`` teacher)."""
    steps = [s for s in lab_rationale(example, 4).split(". ") if s and not s.startswith("The answer is")]
    lines = [f"Let me read the question carefully: {example.question}",
             "I need to follow each change to the count in order."]
    for i, step in enumerate(steps):
        clause, _, eq = step.partition(": ")
        eq = eq or clause
        lhs, _, rhs = eq.partition("=")
        lines.append(f"Next: {clause.lower()}." if eq != clause else "Next step.")
        if i == 0 and rhs.strip().isdigit():  # one slip, noticed and corrected
            wrong = int(rhs.strip()) + 1
            lines.append(f"That gives {lhs.strip()} = {wrong}. Wait, let me recompute: {lhs.strip()} = {rhs.strip()}, "
                         f"not {wrong}. I backtrack and use {rhs.strip()}.")
        else:
            lines.append(f"So {lhs.strip()} = {rhs.strip()}.")
        lines.append(f"Check: {eq.strip()} holds.")
    lines.append(f"Every step is checked, so the final count is {example.answer}.")
    return "\n".join(lines)


def recover(example_id: str, question: str) -> Example | None:
    """The ``arith`` example behind ``example_id`` (``arith-k{steps}-s{seed}-{split}-{index}``), with
    its metadata, when regenerating it (default ``n_test`` and ``max_value``) gives the same
    question; None otherwise. Lets the lab teacher work on examples read back from trace files."""
    m = re.fullmatch(r"arith-k(\d+)-s(\d+)-(train|test)-(\d+)", example_id)
    if not m:
        return None
    steps, seed, split, idx = int(m[1]), int(m[2]), m[3], int(m[4])
    try:
        exs = generate(split, steps=steps, seed=seed, n_train=idx + 1 if split == "train" else 1)
    except UserError:
        return None
    if idx >= len(exs) or exs[idx].question != question:
        return None
    return exs[idx]
