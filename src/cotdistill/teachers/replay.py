"""``replay:FILE`` — answers from an existing trace file (imported paper data or an earlier run).

Traces are matched by (task, example id, level, format, sample), then by (task, normalised
question, level, format, sample), optionally restricted to one teacher (``replay_teacher``).
The replayed trace keeps its original teacher name and source, so a study runs on the released
data with no API. Items not in the file fail with "not in replay file" and are reported; nothing
is invented.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import UserError
from ..traces import Trace, read_traces
from .base import Request, Result, Teacher, TeacherConfig, TeacherError


def normalize_question(text: str) -> str:
    """Lower-case, letters and digits only, single spaces (layout differences do not matter)."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


class ReplayTeacher(Teacher):
    backend = "replay"
    cacheable = False
    needs_messages = False

    def __init__(self, model: str, config: TeacherConfig | None = None):
        super().__init__(model, config)
        paths = [Path(p) for p in model.split(",") if p]
        traces: list[Trace] = []
        for p in paths:
            traces.extend(read_traces(p))
        want = self.config.replay_teacher
        teachers = sorted({t.teacher for t in traces})
        if want is not None:
            traces = [t for t in traces if t.teacher == want]
            if not traces:
                raise UserError(f"replay file {model} has no traces of teacher {want!r}; it has {', '.join(teachers)}")
        self._by_id: dict[tuple, Trace] = {}
        self._by_q: dict[tuple, Trace] = {}
        self._ambiguous: set[tuple] = set()
        for t in traces:
            cell = (str(t.level), t.format, t.sample)
            k1 = (t.task, t.id, *cell)
            if k1 in self._by_id and self._by_id[k1].teacher != t.teacher:
                self._ambiguous.add(k1)
            self._by_id.setdefault(k1, t)
            self._by_q.setdefault((t.task, normalize_question(t.question), *cell), t)
        self.teachers = teachers
        self.batch_size = 100_000

    def params(self) -> dict:
        return {}

    def lookup(self, r: Request) -> Trace | None:
        ex = r.example
        cell = (str(r.level), r.fmt, r.sample)
        k1 = (ex.task, ex.id, *cell)
        if k1 in self._ambiguous:
            raise UserError(
                f"replay file {self.model} holds several teachers for {ex.task}/{ex.id} ({', '.join(self.teachers)}): "
                "choose one with --replay-teacher"
            )
        t = self._by_id.get(k1)
        if t is not None and normalize_question(t.question) == normalize_question(ex.question):
            return t
        return self._by_q.get((ex.task, normalize_question(ex.question), *cell))

    def generate_batch(self, requests: list[Request]) -> list[Result | Exception]:
        out: list[Result | Exception] = []
        for r in requests:
            t = self.lookup(r)
            if t is None:
                out.append(TeacherError(
                    f"not in replay file: {r.example.task}/{r.example.id} level {r.level} format {r.fmt} sample {r.sample}"
                ))
            else:
                out.append(Result(text=t.output, usage=t.usage, finish_reason="stop", teacher=t.teacher, source=t.source))
        return out
