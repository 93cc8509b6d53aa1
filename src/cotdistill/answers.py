"""Answer extraction and equivalence: pure functions shared by every stage.

``extract(text, answer_type)`` reads the answer a model or teacher wrote; ``equal(pred, gold,
answer_type)`` decides whether it matches the gold answer. (Bootstrap version: the foundation
issue replaces this with the full, table-tested implementation.)
"""

from __future__ import annotations

import re

_ANSWER_IS = re.compile(r"[Tt]he answer is[:\s]*(.+?)(?:\.\s*$|\n|$)")


def extract(text: str, answer_type: str) -> str | None:
    m = list(_ANSWER_IS.finditer(text or ""))
    if m:
        return m[-1].group(1).strip().rstrip(".")
    if answer_type == "number":
        nums = re.findall(r"-?\d+(?:\.\d+)?", (text or "").replace(",", ""))
        return nums[-1] if nums else None
    return None


def equal(pred: str | None, gold: str, answer_type: str) -> bool:
    if pred is None:
        return False
    if answer_type == "number":
        try:
            return abs(float(str(pred).replace(",", "")) - float(str(gold).replace(",", ""))) < 1e-6
        except ValueError:
            return False
    return str(pred).strip().lower() == str(gold).strip().lower()


def correct(text: str, gold: str, answer_type: str) -> tuple[str | None, bool]:
    """``(pred, is_correct)`` for a full output text."""
    pred = extract(text, answer_type)
    return pred, equal(pred, gold, answer_type)
