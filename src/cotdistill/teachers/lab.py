"""``lab`` — the programmatic teacher of the procedural ``arith`` task (exact rationales, no model).

Wraps :func:`cotdistill.tasks.arith.lab_rationale` (levels 0-6, every format).
"""

from __future__ import annotations

from ..errors import UserError
from .base import Request, Result, Teacher, TeacherConfig, TeacherError


class LabTeacher(Teacher):
    backend = "lab"
    cacheable = False
    needs_messages = False

    def __init__(self, model: str = "", config: TeacherConfig | None = None):
        super().__init__(model, config)
        try:
            from ..tasks.arith import lab_rationale
        except ImportError:
            raise UserError("the lab teacher needs cotdistill.tasks.arith, which is not available in this install") from None
        self._solve = lab_rationale
        self.batch_size = 10_000

    def params(self) -> dict:
        return {}

    def generate_batch(self, requests: list[Request]) -> list[Result | Exception]:
        out: list[Result | Exception] = []
        for r in requests:
            if r.example.task != "arith":
                raise UserError(f"the lab teacher only solves the arith task, not {r.example.task!r}: use another teacher")
            if r.level == "human":
                out.append(TeacherError("the lab teacher has no human rationales"))
                continue
            try:
                text = self._solve(r.example, int(r.level), r.fmt)
            except (KeyError, ValueError) as e:
                out.append(TeacherError(f"lab_rationale failed: {e}"))
                continue
            out.append(Result(text=text, finish_reason="stop"))
        return out
