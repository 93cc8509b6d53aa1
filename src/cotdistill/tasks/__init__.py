"""Benchmark tasks (gsm8k, svamp, aqua, math, csqa, obqa, strategyqa) and the procedural ``arith`` lab task."""

from .base import AnswerType, Example, Task, get_task, register, task_names

__all__ = ["AnswerType", "Example", "Task", "get_task", "register", "task_names"]
