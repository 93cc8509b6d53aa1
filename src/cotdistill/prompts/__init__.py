"""Prompt library: granularity levels 0-6 x formats (cot, subq, rar, sym) x answer types.

A teacher prompt is a short chat: a system message with the instructions (level, format, answer
form), one exemplar turn pair (our own exemplars, :mod:`cotdistill.prompts.exemplars`), and the
question. Level 0 is answer-only and needs no teacher: :func:`answer_only` writes
``The answer is X.`` from the gold answer.

>>> msgs = build_messages(example, level=3, fmt="sym")          # list of {"role", "content"}
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import UserError
from ..spec import FORMAT_ALIASES, parse_formats, parse_levels  # noqa: F401  (re-exported)
from ..spec import FORMATS as _FORMAT_NAMES
from .exemplars import EXEMPLARS, QUESTIONS, exemplar

LEVELS: dict[int, str] = {
    0: "Answer only, no rationale.",
    1: "Give only a one-sentence hint at the method; do not compute intermediate results.",
    2: "Write only the bare equations or key facts, one after another, with no explanation.",
    3: "Write one short sentence per step.",
    4: "Write every step and restate the quantities that each step uses.",
    5: "Write numbered, detailed steps that explain each operation.",
    6: (
        "Write the most detailed solution: numbered steps with every sub-computation spelled out, "
        "then a check of the result."
    ),
}

FORMATS: dict[str, str] = {
    "cot": "Reason in natural language.",
    "subq": (
        "Decompose the problem into sub-questions, from the simplest to the final one (least-to-most): "
        "write each as 'Q1: ...' followed by its answer 'A1: ...'."
    ),
    "rar": "First rephrase and expand the question in your own words ('Rephrased: ...'), then respond ('Response: ...').",
    "sym": "Write the reasoning with symbols and variables (let x = ..., =, ⇒, ∴) instead of prose.",
}

assert tuple(FORMATS) == _FORMAT_NAMES, "every format has its instruction"

ANSWER_FORMS: dict[str, str] = {
    "number": "End with 'The answer is X.' where X is a number only (no units, no commas).",
    "choice": "End with 'The answer is X.' where X is a single letter from the answer choices (A-E).",
    "bool": "End with 'The answer is True.' or 'The answer is False.'",
    "math": "End with 'The answer is X.' where X is the final answer in LaTeX (no $ signs, no \\boxed).",
}

SYSTEM = "You are an expert teacher who writes worked solutions that students learn to reason from."

# answer types of the paper's tasks, used when the task registry does not know a task (yet)
KNOWN_ANSWER_TYPES = {
    "gsm8k": "number", "svamp": "number", "arith": "number", "aqua": "choice", "csqa": "choice",
    "obqa": "choice", "strategyqa": "bool", "math": "math",
}

_LETTERS = "ABCDEFGHIJ"
_HAS_LETTER = re.compile(r"^\s*\(?[A-J][).:]\s*")


def render_question(question: str, choices: list[str] | None = None) -> str:
    """The question as shown to the teacher (choices appended as ``A) x B) y`` unless already there)."""
    q = question.strip()
    if choices and not re.search(r"answer choices", q, re.I):
        opts = [c if _HAS_LETTER.match(c) else f"{_LETTERS[i]}) {c}" for i, c in enumerate(choices)]
        q += "\nAnswer choices: " + " ".join(opts)
    return q


def instructions(level: int, fmt: str, answer_type: str) -> str:
    return (
        f"{SYSTEM}\nSolve the question step by step, at this level of detail: {LEVELS[level]}\n"
        f"Format: {FORMATS[fmt]}\n{ANSWER_FORMS[answer_type]}\n"
        "Follow the style and length of the example exactly."
    )


def build_messages(example: Any, level: int, fmt: str = "cot", hint_gold: bool = False) -> list[dict[str, str]]:
    """Chat messages for one (example, level, format).

    ``example`` is a :class:`cotdistill.tasks.Example` (or anything with ``question``, ``answer``,
    ``answer_type`` and optional ``choices``). ``hint_gold`` shows the gold answer to the teacher
    (the paper's "with ground truth" setting).
    """
    if level == 0 or level == "human":
        raise UserError(f"level {level!r} needs no teacher prompt (level 0 is the gold answer; human is imported)")
    if level not in LEVELS:
        raise UserError(f"level {level!r} out of range: levels are 1-6")
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    atype = example.answer_type
    if atype not in ANSWER_FORMS:
        raise UserError(f"unknown answer type {atype!r}; one of {', '.join(ANSWER_FORMS)}")
    ex_q, ex_r = exemplar(atype, level, fmt)
    user = render_question(example.question, getattr(example, "choices", None))
    if hint_gold:
        user += f"\n(The correct answer is {example.answer}. Write a solution that arrives at it.)"
    return [
        {"role": "system", "content": instructions(level, fmt, atype)},
        {"role": "user", "content": render_question(str(ex_q["question"]), ex_q.get("choices"))},  # type: ignore[arg-type]
        {"role": "assistant", "content": ex_r},
        {"role": "user", "content": user},
    ]


def build_rewrite_messages(example: Any, level: int, fmt: str, source: str, hint_gold: bool = False) -> list[dict[str, str]]:
    """Chat messages that ask a teacher to rewrite an existing (often long) rationale at one
    granularity level and format, keeping its final answer: the level's instructions and exemplar
    as in :func:`build_messages`, then the question with the solution to rewrite."""
    msgs = build_messages(example, level, fmt, hint_gold=hint_gold)
    msgs[0] = {"role": "system", "content": msgs[0]["content"].replace(
        "Solve the question step by step, at this level of detail:",
        "Rewrite the given solution of the question at this level of detail, keeping its final answer:")}
    msgs[-1] = {"role": "user", "content": (
        f"{msgs[-1]['content']}\n\nA solution to rewrite (it may be long and exploratory; keep its correct "
        f"reasoning and its final answer, drop detours):\n{source.strip()}")}
    return msgs


def answer_only(example: Any) -> str:
    """Level 0 target: ``The answer is X.`` from the gold answer (no teacher call)."""
    return f"The answer is {example.answer}."


def messages_to_text(messages: list[dict[str, str]]) -> str:
    """Plain-text rendering for models without a chat template."""
    parts = []
    for m in messages:
        if m["role"] == "system":
            parts.append(m["content"])
        elif m["role"] == "user":
            parts.append(f"Question: {m['content']}\nSolution:")
        else:
            parts[-1] += " " + m["content"]
    return "\n\n".join(parts)


__all__ = [
    "ANSWER_FORMS", "EXEMPLARS", "FORMATS", "KNOWN_ANSWER_TYPES", "LEVELS", "QUESTIONS", "answer_only",
    "SAMPLE_QUESTIONS", "build_messages", "exemplar", "instructions", "messages_to_text", "parse_formats", "parse_levels",
    "render_question",
]

# built-in sample questions for `cotdistill prompts show` when a task's data is missing
SAMPLE_QUESTIONS: dict[str, dict[str, Any]] = {
    "number": {"question": "Janet has 5 apples. She buys 3 bags with 4 apples in each bag. How many apples does she have now?", "answer": "17"},
    "choice": {"question": "A train travels 60 km in 45 minutes. What is its speed in km per hour?",
               "choices": ["45", "60", "75", "80", "90"], "answer": "D"},
    "bool": {"question": "Could a sloth climb Mount Everest in a single day?", "answer": "False"},
    "math": {"question": "Simplify $\\sqrt{50}$.", "answer": "5\\sqrt{2}"},
}
