"""Teacher backends behind one interface (see :mod:`cotdistill.teachers.base`)."""

from .base import (
    BACKENDS,
    FatalTeacherError,
    Request,
    Result,
    Teacher,
    TeacherConfig,
    TeacherError,
    make_teacher,
)

__all__ = ["BACKENDS", "FatalTeacherError", "Request", "Result", "Teacher", "TeacherConfig", "TeacherError", "make_teacher"]
