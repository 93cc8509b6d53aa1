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
from typing import Any, TextIO

INTERVAL_S = float(os.environ.get("COTDISTILL_PROGRESS_INTERVAL", "30"))


def on_terminal(console: Any = None) -> bool:
    """Whether progress goes to a terminal (rich bars) or to a log (plain lines)."""
    if console is not None and hasattr(console, "is_terminal"):
        return bool(console.is_terminal)
    return sys.stderr.isatty()


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
