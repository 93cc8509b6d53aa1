"""Task adapters: a benchmark is a small declarative object in a registry.

Every stage speaks :class:`Example`. A task knows its answer type, its splits and how to load
them from the data directory; question text is normalised so that train and test prompts have
one layout per task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from ..errors import UserError

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


_REGISTRY: dict[str, Callable[..., Task]] = {}


def register(cls):
    """Class decorator: add a Task subclass to the registry under ``cls.name``."""
    _REGISTRY[cls.name] = cls
    return cls


def task_names() -> list[str]:
    _ensure_loaded()
    return sorted(_REGISTRY)


def get_task(name: str, data_dir: str | Path | None = None, **options: Any) -> Task:
    """Instantiate a task by name; unknown names give a one-line error listing the known ones."""
    _ensure_loaded()
    from ..paths import data_dir as resolve

    key = name.strip().lower()
    if key not in _REGISTRY:
        raise UserError(f"unknown task {name!r}; known tasks: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[key](data_dir=resolve(data_dir), options=dict(options))


def _ensure_loaded() -> None:
    # importing the adapter modules registers them
    from . import arith, benchmarks  # noqa: F401
