"""The records the pipeline writes and reads back, each with one reader and one writer, and the
layout of a study directory in one place.

* :class:`Prediction` — one line of an evaluation's ``predictions.jsonl`` (the raw output and how it
  was graded); :func:`read_predictions`, :func:`append_predictions`, :func:`write_predictions`.
* :class:`Metrics` — an evaluation's ``metrics.json``; :func:`read_metrics`, :func:`write_metrics`.
* :class:`CellResult` — one study cell's row (``cells/<cell>/result.json``, ``results.jsonl``);
  :func:`read_cell_result`, :func:`write_cell_result`, :func:`read_results`, :func:`write_results`.
* :class:`Selection` — ``selection.json`` of ``cotdistill select``; :func:`read_selection`, :func:`write_selection`.
* :class:`StudyLayout` / :class:`CellLayout` — where a study keeps each of these.

Records keep fields they do not declare (``extra="allow"``): files written by newer or older
versions load, and every field written is read back.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from .errors import UserError, field_error
from .fileio import atomic_write_text

PREDICTIONS_FILE = "predictions.jsonl"
METRICS_FILE = "metrics.json"
SELECTION_FILE = "selection.json"


def _finite(o: Any) -> Any:
    """NaN and infinities as null (JSON has no NaN), through dicts and lists."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="python", exclude_unset=True)


class _Record(BaseModel):
    """A record that also reads like the dict it is stored as (``r["id"]``, ``r.get("rule")``):
    code written against the JSON files keeps working."""

    model_config = ConfigDict(extra="allow")

    def __getitem__(self, key: str) -> Any:
        if key in type(self).model_fields:
            return getattr(self, key)
        extra = self.__pydantic_extra__ or {}
        if key in extra:
            return extra[key]
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        """As ``dict.get`` on the stored JSON: a field the file did not hold gives ``default``."""
        if key in type(self).model_fields and key not in self.model_fields_set:
            return default
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return key in self.model_dump(exclude_unset=True)

    def keys(self):
        return self.model_dump(exclude_unset=True).keys()

    def to_dict(self) -> dict[str, Any]:
        return _dump(self)


# ------------------------------------------------------------------------------------------
# predictions
# ------------------------------------------------------------------------------------------
class Prediction(_Record):
    """One evaluated item: the model's raw ``output`` (``finish``: ``eos`` or ``length``; an
    evaluation stores these first) and its grading by the scoring step (:mod:`cotdistill.score`) — ``pred`` / ``correct`` strict (the answer line), ``pred_lenient`` / ``correct_lenient``
    with the fallback rules, ``rule`` the rule behind the lenient answer. ``question`` and ``gold``
    are kept beside them."""

    id: Annotated[str, BeforeValidator(lambda v: v if v is None else str(v))]  # numeric ids read as text
    question: str | None = None
    gold: Any = None
    output: Annotated[str, BeforeValidator(lambda v: "" if v is None else v)] = ""
    finish: Annotated[str, BeforeValidator(lambda v: "eos" if v is None else v)] = "eos"
    pred: Any = None
    correct: Annotated[bool, BeforeValidator(lambda v: bool(v) if v is None else v)] = False  # null: not correct
    rule: str | None = None
    pred_lenient: Any = None
    correct_lenient: bool | None = None
    output_tokens: int | None = None
    reasoning_words: int | None = None

    @property
    def is_graded(self) -> bool:
        """False for a raw response as evaluation stores it before the scoring step."""
        return bool({"correct", "rule"} & self.model_fields_set)

    def graded(self, grading: dict[str, Any]) -> "Prediction":
        """The same output graded again (``grading``: the fields of :func:`cotdistill.score.score_output`)."""
        data = _dump(self)
        data.pop("reasoning_words", None)
        return Prediction.model_validate({**data, **grading})

    def to_json(self) -> str:
        return json.dumps(_dump(self), ensure_ascii=False, default=_json_default)


def read_predictions(path: str | os.PathLike, repair: bool = False, graded: bool = False) -> list[Prediction]:
    """Read ``predictions.jsonl`` (or the one in a directory). A torn last line (a crash mid-write)
    is dropped and, with ``repair``, removed from the file atomically; a bad line elsewhere is a
    one-line UserError naming it. With ``graded`` (readers of verdicts: compare, reports), rows
    not scored yet (an evaluation stopped before its scoring step) are a one-line UserError."""
    path = Path(path)
    if path.is_dir():
        path = path / PREDICTIONS_FILE
    if not path.exists():
        raise UserError(f"{path} does not exist: run `cotdistill evaluate --out {path.parent}` first")
    rows: list[Prediction] = []
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    torn = False
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError("not a prediction record")
            rows.append(Prediction.model_validate(obj))
        except (json.JSONDecodeError, ValueError) as e:
            if i == len(lines) and not line.endswith("\n"):
                torn = True
                break
            why = field_error(e) if isinstance(e, ValidationError) else str(e)
            raise UserError(f"{path}:{i}: malformed prediction ({why}); delete that line and rerun to regenerate it") from None
    if torn and repair:
        write_predictions(path, rows)
    if graded:
        raw = [r for r in rows if not r.is_graded]
        if raw:
            raise UserError(f"{path}: {len(raw)} of {len(rows)} outputs are not scored yet (the evaluation stopped before its "
                            f"scoring step, e.g. item {raw[0].id!r}): rerun the same `cotdistill evaluate` to finish it, "
                            f"or `cotdistill rescore {path.parent}`")
    return rows


def append_predictions(path: str | os.PathLike, rows: Iterable[Prediction | dict[str, Any]]) -> None:
    """Append rows and fsync (an evaluation appends as items finish; a rerun resumes after them)."""
    text = "".join(_as(Prediction, r).to_json() + "\n" for r in rows)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_predictions(path: str | os.PathLike, rows: Iterable[Prediction | dict[str, Any]]) -> None:
    """Replace ``predictions.jsonl`` atomically."""
    atomic_write_text(Path(path), "".join(_as(Prediction, r).to_json() + "\n" for r in rows))


def _as(cls, r):
    return r if isinstance(r, cls) else cls.model_validate(r)


# ------------------------------------------------------------------------------------------
# metrics
# ------------------------------------------------------------------------------------------
class Metrics(_Record):
    """An evaluation's summary: strict accuracy with its 95 % bootstrap interval, lenient accuracy,
    items without an answer line, capped outputs, the answer checker's version, and what was
    evaluated (model, task, split, decoding, ... kept as further fields)."""

    n: int = 0
    n_correct: int | None = None
    accuracy: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    accuracy_lenient: float | None = None
    n_no_answer: int | None = None
    n_length_capped: int | None = None
    mean_output_tokens: float | None = None
    answer_checker: str | None = None
    task: str | None = None
    split: str | None = None



def read_metrics(path: str | os.PathLike) -> Metrics | None:
    """``metrics.json`` (or the one in a directory); None when absent or unreadable (an
    interrupted evaluation is rerun, never trusted)."""
    p = Path(path)
    if p.is_dir():
        p = p / METRICS_FILE
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        return Metrics.model_validate(data) if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def write_metrics(path: str | os.PathLike, metrics: Metrics | dict[str, Any]) -> Metrics:
    """Write ``metrics.json`` atomically (NaN as null: strict JSON); returns the record."""
    p = Path(path)
    if p.is_dir():
        p = p / METRICS_FILE
    data = _finite(metrics.to_dict() if isinstance(metrics, Metrics) else dict(metrics))
    m = Metrics.model_validate(data)
    atomic_write_text(p, json.dumps(m.to_dict(), indent=2, default=_json_default) + "\n")
    return m


# ------------------------------------------------------------------------------------------
# study cells
# ------------------------------------------------------------------------------------------
class CellResult(_Record):
    """One study cell: its factors, ``status`` (``ok`` / ``failed``), and for a finished cell the
    test accuracy with its interval; for a failed one the ``stage`` and the first line of the ``error``.
    Every field may be missing from a row written by hand (a results.jsonl assembled elsewhere)."""

    task: str | None = None
    teacher: str | None = None
    level: int | str | None = None
    format: str | None = "cot"
    student: str | None = None
    seed: int | None = None
    objective: str = "sft"
    cell: str | None = None
    status: str = "ok"  # ok | failed (other values of hand-made rows are kept and count as not ok)
    n: int | None = None
    accuracy: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    stage: str | None = None
    error: str | None = None



def read_cell_result(path: str | os.PathLike) -> CellResult | None:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return CellResult.model_validate(data)
    except (OSError, ValueError):
        return None


def write_cell_result(path: str | os.PathLike, row: CellResult | dict[str, Any]) -> CellResult:
    r = _as(CellResult, row)
    atomic_write_text(Path(path), json.dumps(r.to_dict(), indent=2, default=_json_default) + "\n")
    return r


def read_results(path: str | os.PathLike) -> list[CellResult]:
    """The rows of a study's ``results.jsonl``; a bad line is a one-line UserError naming it."""
    p = Path(path)
    rows = []
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(CellResult.model_validate_json(line))
        except ValidationError as e:
            raise UserError(f"{p}:{i}: malformed cell result ({field_error(e)}); rerun the study to rewrite it") from None
    return rows


def write_results(path: str | os.PathLike, rows: Iterable[CellResult | dict[str, Any]]) -> Path:
    p = Path(path)
    atomic_write_text(p, "".join(json.dumps(_as(CellResult, r).to_dict(), default=_json_default) + "\n" for r in rows))
    return p


# ------------------------------------------------------------------------------------------
# selection
# ------------------------------------------------------------------------------------------
class Selection(_Record):
    """``selection.json``: the settings, the candidates, every round's scores and the winner."""

    status: Literal["running", "done"] = "done"
    config: dict[str, Any] = {}
    candidates: list[str] = []
    rounds: list[dict[str, Any]] = []
    winner: dict[str, Any] | None = None


def read_selection(path: str | os.PathLike) -> Selection:
    """A ``selection.json`` (or the one in a select run directory); a one-line UserError if it is
    missing or not a selection."""
    p = Path(path)
    if p.is_dir():
        p = p / SELECTION_FILE
    try:
        return Selection.model_validate_json(p.read_text(encoding="utf-8"))
    except OSError:
        raise UserError(f"{p} does not exist: run `cotdistill select --out {p.parent}` first") from None
    except ValidationError as e:
        raise UserError(f"{p}: not a selection ({field_error(e)})") from None


def write_selection(path: str | os.PathLike, selection: Selection | dict[str, Any]) -> Selection:
    """Write ``selection.json`` atomically (while running: its rounds so far; when done: everything)."""
    sel = _as(Selection, selection)
    atomic_write_text(Path(path), json.dumps(sel.to_dict(), indent=2, default=_json_default) + "\n")
    return sel


# ------------------------------------------------------------------------------------------
# the study directory
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CellLayout:
    """``STUDY/cells/<cell>/``: what one cell keeps."""

    dir: Path

    @property
    def config(self) -> Path:
        return self.dir / "config.json"

    @property
    def traces(self) -> Path:
        return self.dir / "traces.jsonl"

    @property
    def model(self) -> Path:
        return self.dir / "model"

    @property
    def eval(self) -> Path:
        return self.dir / "eval"

    @property
    def predictions(self) -> Path:
        return self.eval / PREDICTIONS_FILE

    @property
    def metrics(self) -> Path:
        return self.eval / METRICS_FILE

    @property
    def log(self) -> Path:
        return self.dir / "log.txt"

    @property
    def stages(self) -> Path:
        return self.dir / "stages.json"

    @property
    def result(self) -> Path:
        return self.dir / "result.json"

    @property
    def status(self) -> Path:
        return self.dir / "status.json"


@dataclass(frozen=True)
class StudyLayout:
    """A study's output directory::

        study.json                   the resolved config of the last run
        results.jsonl                one CellResult per cell (merged from cells/*/result.json)
        cache/generate/<key>/        teacher traces, shared by the cells that differ only by student / seed
        cache/curate/<key>.jsonl     curated traces (+ <key>.stats.json)
        cache/teacher-topk/          logit-kd teacher tables
        cells/<cell>/                a CellLayout
        select/<name>/               selections run against the study
    """

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / "study.json"

    @property
    def results(self) -> Path:
        return self.root / "results.jsonl"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    def generate_dir(self, key: str) -> Path:
        return self.cache / "generate" / key

    def curated(self, key: str) -> Path:
        return self.cache / "curate" / f"{key}.jsonl"

    @property
    def teacher_topk(self) -> Path:
        return self.cache / "teacher-topk"

    @property
    def cells(self) -> Path:
        return self.root / "cells"

    def cell(self, cell_id: str) -> CellLayout:
        return CellLayout(self.cells / cell_id)

    @property
    def selections(self) -> Path:
        return self.root / "select"
