"""Shared CLI helpers: console, common options."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)

DataDirOpt = typer.Option(
    None,
    "--data-dir",
    help="Data directory (layout of shared/data). Default: $COTDISTILL_DATA, else ~/.cache/cotdistill/data.",
)


def opt_path(p: Optional[Path]) -> Optional[str]:
    return str(p) if p is not None else None


def filter_cells(traces, teachers: str | None, levels: str | None, formats: str | None, tasks: str | None = None):
    """``--teachers/--levels/--formats/--tasks``: the traces of the chosen (teacher, level, format) cells
    and tasks; a filter that matches nothing is a one-line error listing what the files hold."""
    if not (teachers or levels or formats or tasks):
        return traces
    from ..errors import UserError
    from ..spec import parse_formats, parse_levels
    from ..traces import composition, select_traces

    kept = select_traces(traces, teachers=[t.strip() for t in teachers.split(",")] if teachers else None,
                         levels=parse_levels(levels) if levels else None,
                         formats=parse_formats(formats) if formats else None,
                         tasks=[t.strip().lower() for t in tasks.split(",") if t.strip()] if tasks else None)
    if not kept:
        held = sorted({t.task for t in traces})
        raise UserError("no trace matches --teachers/--levels/--formats/--tasks; the files hold: "
                        + ", ".join(f"{k} ({n})" for k, n in composition(traces).items()) + f" of tasks {', '.join(held)}")
    return kept
