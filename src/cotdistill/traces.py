"""The Trace record: one teacher rationale for one question, stored as JSONL.

The same record serves imported paper data, generated data and replayed data::

    {id, task, question, gold, teacher, level, format, sample, output, pred, correct, usage?, source}

``level`` is 0 (answer only), 1..6 (granularity, coarse to fine) or ``"human"``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from .errors import UserError

Level = Union[int, Literal["human"]]
FORMATS = ("cot", "subq", "rar", "sym")


class Trace(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    task: str
    question: str
    gold: str
    teacher: str
    level: Level
    format: Literal["cot", "subq", "rar", "sym"] = "cot"
    sample: int = 0
    output: str
    pred: str | None = None
    correct: bool | None = None
    usage: dict[str, int] | None = None
    source: str = ""

    @field_validator("level")
    @classmethod
    def _level_range(cls, v):
        if isinstance(v, int) and not 0 <= v <= 6:
            raise ValueError("level must be 0..6 or 'human'")
        return v

    @property
    def key(self) -> tuple:
        """Identity of a trace inside one file (an example at one level/format/sample from one teacher)."""
        return (self.task, self.id, self.teacher, str(self.level), self.format, self.sample)


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err.get("loc", ())) or "record"
    return f"field {loc!r}: {err.get('msg')}"


def read_traces(path: str | os.PathLike) -> list[Trace]:
    return list(iter_traces(path))


def iter_traces(path: str | os.PathLike) -> Iterator[Trace]:
    """Yield validated traces; a bad line raises UserError naming file and line."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"trace file {path} does not exist: pass a traces.jsonl written by `cotdistill import-paper` or `cotdistill generate`")
    if path.is_dir():
        if (path / "traces.jsonl").exists():
            path = path / "traces.jsonl"
        else:
            raise UserError(f"{path} is a directory without traces.jsonl: pass the JSONL file itself")
    n = 0
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{i}: malformed JSON ({e.msg}); fix or delete that line") from None
            try:
                yield Trace.model_validate(obj)
            except ValidationError as e:
                raise UserError(f"{path}:{i}: invalid trace, {_first_error(e)}") from None
            n += 1
    if n == 0:
        raise UserError(f"{path} has no traces: it is empty; regenerate it or pass another file")


def write_traces(path: str | os.PathLike, traces: Iterable[Trace]) -> int:
    """Write traces atomically (temp file + rename): a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for t in traces:
            f.write(t.model_dump_json(exclude_none=True) + "\n")
            n += 1
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return n


def trace_to_dict(t: Trace) -> dict[str, Any]:
    return t.model_dump(exclude_none=True)
