"""Progress for long steps: a rich bar on a terminal, plain lines everywhere else.

Outside a terminal (nohup, Slurm, ``| tee``, CI logs) a rich bar prints nothing until it stops,
so every long command reports through :class:`PlainProgress` there instead: one line per
``interval`` seconds (and the first and last) with the count, the rate and the ETA, e.g.::

    evaluate svamp: 120/300 (40 %) · 2.1/s · elapsed 57 s · eta 86 s
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO, Union

INTERVAL_S = float(os.environ.get("COTDISTILL_PROGRESS_INTERVAL", "30"))


def on_terminal(console: Any = None) -> bool:
    """Whether progress goes to a terminal (rich bars) or to a log (plain lines)."""
    if console is not None and hasattr(console, "is_terminal"):
        return bool(console.is_terminal)
    return sys.stderr.isatty()


def quiet_third_party() -> None:
    """Off a terminal, silence the progress bars of transformers, huggingface_hub, datasets and
    tqdm (weight loading, GGUF conversion, downloads): a log gets the toolkit's plain lines only.
    Set through the environment, so worker processes inherit it; a variable the user set wins."""
    if on_terminal():
        return
    for k in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS", "TQDM_DISABLE"):
        os.environ.setdefault(k, "1")
    if "transformers" in sys.modules and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1":
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def _dur(s: float) -> str:
    s = max(0.0, s)
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


class PlainProgress:
    """Plain progress lines on ``stream`` (stderr): count, rate over this run, ETA, extra fields."""

    def __init__(self, label: str, total: int, completed: int = 0, unit: str = "", interval: float | None = None,
                 stream: TextIO | None = None):
        self.label, self.total, self.unit = label, int(total), unit
        self.start_done = self.done = int(completed)
        self.interval = INTERVAL_S if interval is None else interval
        self.stream = stream
        self.t0 = time.monotonic()
        self.last = -float("inf")
        self.extra = ""

    def line(self) -> str:
        el = time.monotonic() - self.t0
        new = self.done - self.start_done
        rate = new / el if el > 0 else 0.0
        pct = f" ({100 * self.done / self.total:.0f} %)" if self.total else ""
        eta = f" · eta {_dur((self.total - self.done) / rate)}" if rate > 0 and self.done < self.total else ""
        unit = f" {self.unit}" if self.unit else ""
        extra = f" · {self.extra}" if self.extra else ""
        return (f"{self.label}: {self.done}/{self.total}{unit}{pct} · {rate:.2f}/s · elapsed {_dur(el)}{eta}{extra}")

    def emit(self) -> None:
        print(self.line(), file=self.stream or sys.stderr, flush=True)
        self.last = time.monotonic()

    def update(self, done: int | None = None, advance: int = 0, extra: str | None = None) -> None:
        self.done = int(done) if done is not None else self.done + advance
        if extra is not None:
            self.extra = extra
        if time.monotonic() - self.last >= self.interval:
            self.emit()

    def __enter__(self) -> "PlainProgress":
        self.emit()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.emit()


# ------------------------------------------------------------------------------------------
# library progress: callbacks for library users, rendering for the command line
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProgressEvent:
    """What a long library step reports: ``stage`` (``evaluate``, ``generate``, ``train``), what
    it runs on (``label``: a task, a teacher), ``done`` of ``total`` ``unit`` (items, calls, steps), the step's own figures in ``info`` (e.g. ``loss``,
    ``tokens_per_s``, ``failed``), and ``finished`` on the last event."""

    stage: str
    label: str
    done: int
    total: int
    unit: str
    elapsed_s: float
    info: dict[str, Any] = field(default_factory=dict)
    finished: bool = False


ProgressCallback = Callable[[ProgressEvent], None]
Progress = Union[bool, ProgressCallback]  # what library functions take as ``progress``


def _fmt(k: str, v: Any) -> str:
    if isinstance(v, float):
        v = f"{v:,.0f}" if abs(v) >= 100 else f"{v:.4f}"
    elif isinstance(v, int):
        v = f"{v:,}"
    return f"{k.replace('_per_s', '/s').replace('_', ' ')} {v}"


def info_text(info: dict[str, Any]) -> str:
    """The scalar figures of ``info`` as text (structured values are for callbacks)."""
    return " · ".join(_fmt(k, v) for k, v in info.items() if v is not None and not isinstance(v, (list, tuple, dict)))


class Reporter:
    """One long step's progress. ``progress`` is ``False`` (nothing), a callable (it receives a
    :class:`ProgressEvent` on every update, nothing is printed: the caller renders), or ``True``:
    a rich bar on a terminal, plain lines (:class:`PlainProgress`) in a log. With ``plain_line``
    (an event -> text function) a log gets that line at the start and at every :meth:`print_plain`
    instead."""

    def __init__(self, progress: Progress, stage: str, label: str, total: int, completed: int = 0, unit: str = "",
                 console: Any = None, plain_line: Callable[[ProgressEvent], str] | None = None):
        self.stage, self.label, self.total, self.unit = stage, label, int(total), unit
        self.done = int(completed)
        self.info: dict[str, Any] = {}
        self.t0 = time.monotonic()
        self.callback = progress if callable(progress) else None
        self.enabled = bool(progress)
        self.console = console
        self.plain_line = plain_line
        self._plain: PlainProgress | None = None
        self._rich: Any = None
        self._task: Any = None

    def event(self, finished: bool = False) -> ProgressEvent:
        return ProgressEvent(self.stage, self.label, self.done, self.total, self.unit, time.monotonic() - self.t0,
                             dict(self.info), finished)

    def __enter__(self) -> "Reporter":
        if self.callback is not None:
            self.callback(self.event())
        elif self.enabled and not on_terminal(self.console):
            if self.plain_line is not None:
                print(self.plain_line(self.event()), file=sys.stderr, flush=True)
            else:
                name = f"{self.stage} {self.label}".strip()
                self._plain = PlainProgress(name, self.total, completed=self.done, unit=self.unit)
                self._plain.__enter__()
        elif self.enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self._rich = RichProgress(
                TextColumn(f"[bold]{self.stage}[/] {{task.description}}"), BarColumn(), MofNCompleteColumn(),
                TextColumn(self.unit), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"), console=self.console or Console(stderr=True), transient=False)
            self._rich.start()
            self._task = self._rich.add_task(self.label, total=self.total, completed=self.done, info="")
        return self

    def update(self, done: int | None = None, advance: int = 0, **info: Any) -> None:
        self.done = int(done) if done is not None else self.done + advance
        self.info.update(info)
        if self.callback is not None:
            self.callback(self.event())
        elif self._plain is not None:
            self._plain.update(done=self.done, extra=info_text(self.info) or None)
        elif self._rich is not None:
            self._rich.update(self._task, completed=self.done, info=info_text(self.info))

    def set_total(self, total: int) -> None:
        """The step count changed (e.g. a schedule re-planned after a round)."""
        self.total = int(total)
        if self._plain is not None:
            self._plain.total = self.total
        elif self._rich is not None:
            self._rich.update(self._task, total=self.total)

    def print_plain(self) -> None:
        """Print the current plain line now (only when rendering plain lines with ``plain_line``)."""
        if self.enabled and self.callback is None and self._rich is None and self.plain_line is not None:
            print(self.plain_line(self.event()), file=sys.stderr, flush=True)

    def __exit__(self, *exc: Any) -> None:
        if self.callback is not None:
            self.callback(self.event(finished=True))
        elif self._plain is not None:
            self._plain.__exit__(*exc)
        elif self._rich is not None:
            self._rich.update(self._task, completed=self.done, info=info_text(self.info))
            self._rich.stop()
            self._rich = None
