"""Curation: verify against gold, drop empty / truncated / duplicate rationales, decontaminate.

>>> kept, report = curate(traces, keep="correct")           # report.removed == {"incorrect": 12, ...}

Steps, in order (each trace is removed for the first reason that applies):

1. ``empty`` — no text.
2. ``no_final_answer`` — truncated or malformed: no ``The answer is X`` (level 0 and human
   rationales included; human rationales in imported data end with it too).
3. ``incorrect`` — the final answer disagrees with the gold (``keep="correct"`` or ``"best"``;
   ``pred``/``correct`` are recomputed with :func:`cotdistill.answers.correct`).
4. ``duplicate`` — same (task, question, teacher, level, format) and the same normalised output.
5. ``best_of_n`` — with ``keep="best"``, only the first correct sample of each
   (task, id, teacher, level, format) survives.
6. ``contaminated`` — the training question matches a test question of its task: exactly after
   normalisation, or with character n-gram Jaccard >= ``jaccard`` (default 0.9, 5-grams), found
   with prefix filtering so all pairs are never compared. Test questions come from
   ``get_task(task).load("test")`` when available, plus any ``test_questions`` given.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

from pydantic import ConfigDict, Field

from . import answers
from .errors import UserError, opt
from .spec import SectionAccess
from .traces import Trace

REASONS = ("empty", "no_final_answer", "incorrect", "duplicate", "best_of_n", "contaminated")
_FINAL = re.compile(r"answer is\s*:?\s*\S", re.I)


def normalize_text(text: str) -> str:
    """Lower-case, letters and digits only, single spaces."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


def char_ngrams(text: str, n: int = 5) -> set[str]:
    t = normalize_text(text)
    if len(t) < n:
        return {t} if t else set()
    return {t[i : i + n] for i in range(len(t) - n + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


class NearDupIndex:
    """Near-duplicate lookup of texts by character n-gram Jaccard >= threshold (exact, prefix-filtered).

    Every set is ordered by global n-gram rarity; two sets with Jaccard >= t must share one of
    the first ``|A| - ceil(t * |A|) + 1`` n-grams of each, so only those prefixes are indexed.
    """

    def __init__(self, texts: Iterable[str], threshold: float = 0.9, n: int = 5):
        self.t = threshold
        self.n = n
        self.texts = list(texts)
        self.sets = [char_ngrams(x, n) for x in self.texts]
        self.exact = {normalize_text(x): i for i, x in enumerate(self.texts)}
        self.freq: Counter[str] = Counter()
        for s in self.sets:
            self.freq.update(s)
        self.index: dict[str, list[int]] = defaultdict(list)
        for i, s in enumerate(self.sets):
            for g in self._prefix(s):
                self.index[g].append(i)

    def _prefix(self, s: set[str]) -> list[str]:
        k = len(s) - math.ceil(self.t * len(s)) + 1
        return sorted(s, key=lambda g: (self.freq.get(g, 0), g))[: max(k, 1)]

    def match(self, text: str) -> tuple[int, float] | None:
        """``(index of the matching text, similarity)`` or None. Exact normalised match scores 1.0."""
        i = self.exact.get(normalize_text(text))
        if i is not None:
            return i, 1.0
        s = char_ngrams(text, self.n)
        if not s:
            return None
        best: tuple[int, float] | None = None
        seen: set[int] = set()
        for g in self._prefix(s):
            for j in self.index.get(g, ()):
                if j in seen:
                    continue
                seen.add(j)
                other = self.sets[j]
                if min(len(s), len(other)) < self.t * max(len(s), len(other)):
                    continue
                sim = jaccard(s, other)
                if sim >= self.t and (best is None or sim > best[1]):
                    best = (j, sim)
        return best


@dataclass
class CurateReport:
    total: int = 0
    kept: int = 0
    removed: dict[str, int] = field(default_factory=lambda: {r: 0 for r in REASONS})
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # a few removed items per reason
    test_sources: dict[str, str] = field(default_factory=dict)  # task -> where its test questions came from

    def as_dict(self) -> dict[str, Any]:
        return {"total": self.total, "kept": self.kept, "removed": self.removed, "examples": self.examples,
                "test_sources": self.test_sources}


def load_test_questions(tasks: Iterable[str], data_dir: Any = None,
                        optional: Iterable[str] = ()) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Test questions per task via ``get_task(task).load("test")``. A test split that cannot be
    loaded (data missing, unknown task) is a one-line UserError - traces are never passed as
    decontaminated without having been checked - unless the task is ``optional`` (test questions
    for it were given): then the report says the split was not loaded."""
    optional = set(optional)
    from .tasks import get_task

    out: dict[str, list[str]] = {}
    info: dict[str, str] = {}
    for task in sorted(set(tasks)):
        try:
            t = get_task(task, data_dir)
            if "test" not in t.splits:
                info[task] = "no test split"
                continue
            out[task] = [e.question for e in t.load("test")]
        except Exception as e:  # noqa: BLE001 - data missing, unknown task, a broken file: one line, never silent
            if task in optional:
                info[task] = f"test split not loaded ({' '.join(str(e).split())[:160]})"
                continue
            raise UserError(f"cannot decontaminate the {task} traces: its test split did not load ({e}); point "
                            f"{opt('data_dir')} at the data, or skip the check (decontaminate: false, --no-decontaminate)") from None
        info[task] = f"{len(out[task])} test questions from the task's test split"
    return out, info


class CurateOptions(SectionAccess):  # (a pydantic model)
    """The keyword options of :func:`curate` as a config section (a study's ``curate:``)."""

    model_config = ConfigDict(extra="forbid")

    keep: Literal["correct", "best", "all"] = Field(
        "correct", description="correct: every trace whose answer is right; best: one right sample per item; all: no answer check")
    decontaminate: bool = Field(True, description="remove training questions that (nearly) appear in a test split")
    test_questions: Union[dict[str, list[str]], list[str], None] = Field(
        None, description="extra test questions to decontaminate against: per task, or one list for all tasks")
    use_task_test_split: bool = Field(True, description="decontaminate against each task's own test split")
    data_dir: Optional[str] = Field(None, description="data directory of the test splits (default: $COTDISTILL_DATA, else the user cache)")
    threshold: float = Field(0.9, gt=0, le=1, description="near-duplicate threshold on character n-gram Jaccard similarity")
    ngram: int = Field(5, ge=1, description="character n-gram size of the near-duplicate check")
    n_examples: int = Field(3, ge=0, description="removed traces kept as examples per reason in the report")


def curate(
    traces: Iterable[Trace],
    config: CurateOptions | None = None,
    *,
    keep: Literal["correct", "best", "all"] = "correct",
    decontaminate: bool = True,
    test_questions: dict[str, list[str]] | list[str] | None = None,
    use_task_test_split: bool = True,
    data_dir: Any = None,
    threshold: float = 0.9,
    ngram: int = 5,
    n_examples: int = 3,
) -> tuple[list[Trace], CurateReport]:
    """Filter traces; returns ``(kept, report)``. ``test_questions``: per task, or a list for all tasks.
    The options come from the keywords, or all at once from ``config`` (a :class:`CurateOptions`, e.g.
    a study's ``curate:`` section), which then takes precedence."""
    if config is not None:
        keep, decontaminate, test_questions = config.keep, config.decontaminate, config.test_questions
        use_task_test_split, data_dir, threshold = config.use_task_test_split, config.data_dir, config.threshold
        ngram, n_examples = config.ngram, config.n_examples
    traces = list(traces)
    rep = CurateReport(total=len(traces))

    def drop(reason: str, t: Trace, **extra: Any) -> None:
        rep.removed[reason] += 1
        lst = rep.examples.setdefault(reason, [])
        if len(lst) < n_examples:
            lst.append({"task": t.task, "id": t.id, "level": t.level, "format": t.format, "sample": t.sample,
                        "question": t.question[:120], "output": t.output[-120:], **extra})

    # test questions per task
    tests: dict[str, list[str]] = defaultdict(list)
    if decontaminate:
        if use_task_test_split:
            given = ({t.task for t in traces} if isinstance(test_questions, list) and test_questions
                     else set(test_questions or {}))
            loaded, info = load_test_questions({t.task for t in traces}, data_dir, optional=given)
            for k, v in loaded.items():
                tests[k].extend(v)
            rep.test_sources.update(info)
        if isinstance(test_questions, dict):
            for k, v in test_questions.items():
                tests[k].extend(v)
                rep.test_sources[k] = rep.test_sources.get(k, "") + f" + {len(v)} given test questions"
        elif test_questions:
            for task in {t.task for t in traces}:
                tests[task].extend(test_questions)
                rep.test_sources[task] = rep.test_sources.get(task, "") + f" + {len(test_questions)} given test questions"
    indexes = {task: NearDupIndex(qs, threshold, ngram) for task, qs in tests.items() if qs}
    contam_cache: dict[tuple[str, str], tuple[int, float] | None] = {}

    kept: list[Trace] = []
    seen_out: set[tuple] = set()
    best_taken: set[tuple] = set()
    for t in traces:
        if not t.output.strip():
            drop("empty", t)
            continue
        if not _FINAL.search(t.output):
            drop("no_final_answer", t)
            continue
        if t.correct is None or t.pred is None:
            atype = _answer_type(t)
            pred, ok = answers.correct(t.output, t.gold, atype)
            t = t.model_copy(update={"pred": pred, "correct": ok})
        if keep in ("correct", "best") and t.level != "human" and not t.correct:
            drop("incorrect", t, pred=t.pred, gold=t.gold)
            continue
        dkey = (t.task, normalize_text(t.question), t.teacher, str(t.level), t.format, normalize_text(t.output))
        if dkey in seen_out:
            drop("duplicate", t)
            continue
        seen_out.add(dkey)
        if keep == "best":
            gkey = (t.task, t.id, t.teacher, str(t.level), t.format)
            if gkey in best_taken:
                drop("best_of_n", t)
                continue
            best_taken.add(gkey)
        idx = indexes.get(t.task)
        if idx is not None:
            ck = (t.task, t.question)
            if ck not in contam_cache:
                contam_cache[ck] = idx.match(t.question)
            m = contam_cache[ck]
            if m is not None:
                drop("contaminated", t, test_question=idx.texts[m[0]][:120], similarity=round(m[1], 3))
                continue
        kept.append(t)
    rep.kept = len(kept)
    return kept, rep


_TYPE_BY_TASK = {"gsm8k": "number", "svamp": "number", "arith": "number", "aqua": "choice", "csqa": "choice",
                 "obqa": "choice", "strategyqa": "bool", "math": "math"}


def _answer_type(t: Trace) -> str:
    """The trace's own answer type; traces written before it was recorded: the task's, else a guess from the gold."""
    return t.answer_type or _task_answer_type(t.task) or _gold_answer_type(t.gold)


@functools.lru_cache(maxsize=None)
def _task_answer_type(task: str) -> str | None:
    try:
        from .tasks import get_task

        return get_task(task).answer_type
    except Exception:
        return _TYPE_BY_TASK.get(task)


def _gold_answer_type(gold: str) -> str:
    if True:
        g = gold.strip()
        if g in ("True", "False"):
            return "bool"
        if re.fullmatch(r"[A-E]", g):
            return "choice"
        if re.fullmatch(r"-?[\d,]*\.?\d+", g):
            return "number"
        return "math"
