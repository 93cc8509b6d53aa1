"""Scoring: graded predictions and metrics from stored responses (pure: no model, no decoding).

Evaluation decodes and stores each item's raw response (``output``, ``finish``, ``output_tokens``);
this step turns responses into predictions (:func:`score_output` per item, :func:`score_responses`
for a run) and predictions into metrics (:func:`summarize`). :func:`rescore` runs it on a stored
evaluation directory, so a new answer checker (:data:`cotdistill.answers.VERSION`) regrades old
evaluations - a single run, every cell of a cached study - without loading a model.

Strict scoring reads only the answer line the prompt asks for ("The answer is X", the last one);
the lenient score also takes fallbacks such as the last number and is reported beside it, never
instead of it. An output stopped by the token cap has an answer only if it wrote an answer line.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import answers
from .artifacts import claim
from .errors import UserError
from .records import (METRICS_FILE, PREDICTIONS_FILE, Prediction, read_metrics, read_predictions, write_metrics,
                      write_predictions)
from .stats import bootstrap_ci
from .tasks.base import Example

GRADE_FIELDS = ("pred", "correct", "rule", "pred_lenient", "correct_lenient", "reasoning_words")


def score_output(output: str, finish: str, ex: Example) -> dict:
    """Grade one output. ``pred``/``correct`` are strict (the answer line the prompt asks for, as
    the paper scores); ``pred_lenient``/``correct_lenient`` also accept the fallback rules (last
    number, ...). ``rule`` names the rule behind the lenient prediction. An output stopped by the
    token cap has an answer only if it wrote an answer line.

    A thinking student's output is graded on the text after its reasoning (after the last
    ``</think>``, also when the chat template opened ``<think>`` in the prompt); a reasoning block
    that never closes has no answer (``rule: unclosed_reasoning``), whatever it says inside."""
    reasoning_words = None
    if "</think>" in output:
        head, _, output = output.rpartition("</think>")
        reasoning_words = len(head.replace("<think>", " ").split())
    elif "<think>" in output:
        reasoning_words = len(output.split("<think>", 1)[1].split())
        return {"pred": None, "correct": False, "rule": "unclosed_reasoning", "pred_lenient": None,
                "correct_lenient": False, "reasoning_words": reasoning_words}
    lpred, lrule = answers.extract_with_rule(output, ex.answer_type, choices=ex.choices, mode="lenient")
    pred = lpred if lrule in answers.STRICT_RULES else None  # = extract_with_rule(..., mode="strict")
    if finish == "length" and lrule not in answers.STRICT_RULES:
        lpred, lrule = None, "capped"
    out = {
        "pred": pred, "correct": answers.equal(pred, ex.answer, ex.answer_type),
        "rule": lrule,
        "pred_lenient": lpred, "correct_lenient": answers.equal(lpred, ex.answer, ex.answer_type),
    }
    if reasoning_words is not None:
        out["reasoning_words"] = reasoning_words
    return out


def response(ex: Example, output: str, finish: str, output_tokens: int | None) -> Prediction:
    """An item's raw response as evaluation stores it before scoring (no grading fields)."""
    return Prediction.model_validate({"id": ex.id, "question": ex.question, "gold": ex.answer, "output": output,
                                      "output_tokens": output_tokens, "finish": finish})


def score_responses(rows: Sequence[Prediction], examples: Sequence[Example]) -> list[Prediction]:
    """Grade responses against their examples (matched by id, in the order of ``rows``); a row
    whose item is not among ``examples`` is returned as it is."""
    by_ex = {e.id: e for e in examples}
    return [r.graded(score_output(r.output, r.finish, by_ex[r.id])) if r.id in by_ex else r for r in rows]


def summarize(predictions: Sequence[Prediction | dict]) -> dict:
    """Accuracy (strict, with its 95 % bootstrap interval, and lenient), no-answer rate, capped
    outputs and mean output tokens of graded predictions."""
    rows = [r.model_dump() if isinstance(r, Prediction) else r for r in predictions]
    n = len(rows)
    corr = [1.0 if r["correct"] else 0.0 for r in rows]
    lo, hi = bootstrap_ci(corr)
    rules: dict[str, int] = {}
    for r in rows:
        rule = r.get("rule") or "unknown"
        rules[rule] = rules.get(rule, 0) + 1
    return {
        "n": n,
        "n_correct": int(sum(corr)),
        "accuracy": (sum(corr) / n) if n else math.nan,
        "ci_low": lo,
        "ci_high": hi,
        "ci": "95% percentile bootstrap, 10000 resamples, seed 0",
        "scoring": "strict: the answer line ('The answer is X') only",
        "accuracy_lenient": (sum(1 for r in rows if (r["correct"] if r.get("correct_lenient") is None else r["correct_lenient"]))
                             / n) if n else math.nan,
        "parse_failure_rate": (sum(1 for r in rows if r.get("pred") is None) / n) if n else math.nan,
        "n_no_answer": sum(1 for r in rows if r.get("pred") is None),
        "n_length_capped": sum(1 for r in rows if r.get("finish") == "length"),
        "n_capped_without_answer": sum(1 for r in rows if r.get("finish") == "length" and r.get("pred") is None),
        "rules": dict(sorted(rules.items())),
        "mean_output_tokens": (sum(r.get("output_tokens") or 0 for r in rows) / n) if n else math.nan,
        # thinking students: the length of the reasoning beside the accuracy
        "mean_reasoning_words": (statistics.fmean(r["reasoning_words"] for r in rows if r.get("reasoning_words") is not None)
                                 if any(r.get("reasoning_words") is not None for r in rows) else None),
        "n_unclosed_reasoning": sum(1 for r in rows if r.get("rule") == "unclosed_reasoning"),
        "answer_checker": answers.VERSION,
    }


def score_run(out_dir: str | os.PathLike, examples: Sequence[Example], keep_others: bool = False,
              extra: dict[str, Any] | None = None) -> dict:
    """Grade the stored responses of an evaluation directory: rewrites ``predictions.jsonl`` (graded,
    atomically) and ``metrics.json`` (the metrics of the items in ``examples``, in their order, over
    the earlier metrics' other fields and ``extra``) and returns the metrics. Items in the file but
    not in ``examples`` are an error unless ``keep_others`` (they then stay as they are)."""
    out = Path(out_dir)
    rows = list({r.id: r for r in read_predictions(out / PREDICTIONS_FILE, repair=True)}.values())  # one row per item
    order = {e.id: i for i, e in enumerate(examples)}
    missing = [r.id for r in rows if r.id not in order]
    if missing and not keep_others:
        raise UserError(f"{out / PREDICTIONS_FILE}: item {missing[0]!r} is not among the examples given "
                        f"({len(missing)} of {len(rows)} missing): rescore with the task and split it was evaluated on")
    rows = score_responses(rows, examples)
    write_predictions(out / PREDICTIONS_FILE, rows)
    old = read_metrics(out)
    m: dict = old.to_dict() if old is not None else {}
    m.update(extra or {})
    m.update(summarize(sorted((r for r in rows if r.id in order), key=lambda r: order[r.id])))
    write_metrics(out / METRICS_FILE, m)
    return m


def rescore(out_dir: str | os.PathLike, examples: Sequence[Example], keep_others: bool = False) -> dict:
    """Grade the stored outputs of an evaluation again with the current answer checker (no model,
    no decoding): rewrites ``predictions.jsonl`` and ``metrics.json`` (their ``answer_checker``
    becomes :data:`cotdistill.answers.VERSION`) and returns the new metrics. A fixed checker thus
    regrades old evaluations, e.g. every cell of a cached study, in seconds. The directory is claimed
    as an evaluate run for the duration: an evaluation writing into it is refused, not raced."""
    with claim(out_dir, "evaluate"):
        return score_run(out_dir, examples, keep_others=keep_others)
