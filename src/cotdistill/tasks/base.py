"""Task adapters: a benchmark is a small declarative object in a registry.

Every stage speaks :class:`Example`. A task knows its answer type, its splits and how to load
them from the data directory; question text is normalised so that train and test prompts have
one layout per task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from ..errors import UserError
from ..registry import Registry

AnswerType = Literal["number", "choice", "bool", "math"]


class Example(BaseModel):
    """One benchmark item. ``answer`` is the gold answer as a string (number, letter, True/False, LaTeX)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    task: str
    split: str
    question: str
    answer: str
    answer_type: AnswerType
    choices: list[str] | None = None
    meta: dict[str, Any] = {}


@dataclass
class Task:
    """Base class of a task adapter. Subclasses set the class attributes and implement ``_load``."""

    name: ClassVar[str]
    answer_type: ClassVar[AnswerType]
    description: ClassVar[str] = ""
    splits: ClassVar[tuple[str, ...]] = ("train", "test")
    data_dir: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def load(self, split: str) -> list[Example]:
        if split not in self.splits:
            raise UserError(
                f"task {self.name!r} has no split {split!r}; choose one of {', '.join(self.splits)}"
            )
        return self._load(split)

    def _load(self, split: str) -> list[Example]:  # pragma: no cover - abstract
        raise NotImplementedError

    def sources(self, split: str) -> list[str]:
        """Human-readable list of the files a split is read from (for ``cotdistill tasks``)."""
        return []

    def normalize_question(self, text: str) -> str:
        """Bring a question (e.g. an imported instruction) into this task's single layout."""
        return " ".join(text.split())


TASKS = Registry("task", {
    "gsm8k": "cotdistill.tasks.benchmarks:GSM8K",
    "svamp": "cotdistill.tasks.benchmarks:SVAMP",
    "aqua": "cotdistill.tasks.benchmarks:AQuA",
    "math": "cotdistill.tasks.benchmarks:MATH",
    "csqa": "cotdistill.tasks.benchmarks:CSQA",
    "obqa": "cotdistill.tasks.benchmarks:OBQA",
    "strategyqa": "cotdistill.tasks.benchmarks:StrategyQA",
    "arith": "cotdistill.tasks.arith:ArithTask",
})

register = TASKS.decorator(lambda cls: cls.name)
"""Class decorator: add a Task subclass to the task registry under ``cls.name`` (your own tasks too)."""


def task_names() -> list[str]:
    return TASKS.names()


def get_task(name: str, data_dir: str | Path | None = None, **options: Any) -> Task:
    """Instantiate a task by name; unknown names give a one-line error listing the known ones."""
    from ..paths import data_dir as resolve

    return TASKS.get(name)(data_dir=resolve(data_dir), options=dict(options))
