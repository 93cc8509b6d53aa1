"""``lab`` — the programmatic teacher of the procedural ``arith`` task (exact rationales, no model).

Wraps :func:`cotdistill.tasks.arith.lab_rationale` (levels 0-6, every format). ``lab:think`` answers
like a reasoning model: a long reasoning trace (:func:`cotdistill.tasks.arith.lab_reasoning`:
exploration, a slip and a backtrack, checks) returned apart from its final response, the level-3
rationale, so the whole reasoning-teacher path runs offline. Asked to rewrite a trace
(``generate --from-traces``), both write their exact rationale at the level asked.
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
        from ..tasks.arith import lab_rationale, lab_reasoning

        if model not in ("", "think"):
            raise UserError(f"unknown lab teacher lab:{model}; use lab or lab:think")
        self._solve = lab_rationale
        self._think = lab_reasoning if model == "think" else None
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
                if self._think is not None and "source" not in r.meta:
                    out.append(Result(text=self._solve(r.example, 3, "cot"), reasoning=self._think(r.example),
                                      finish_reason="stop"))
                    continue
                text = self._solve(r.example, int(r.level), r.fmt)
            except (KeyError, ValueError) as e:
                out.append(TeacherError(f"lab_rationale failed: {e}"))
                continue
            out.append(Result(text=text, finish_reason="stop"))
        return out
