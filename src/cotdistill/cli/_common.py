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


def filter_cells(traces, teachers: str | None, levels: str | None, formats: str | None):
    """``--teachers/--levels/--formats``: the traces of the chosen (teacher, level, format) cells; a
    filter that matches nothing is a one-line error listing what the files hold."""
    if not (teachers or levels or formats):
        return traces
    from ..errors import UserError
    from ..spec import parse_formats, parse_levels
    from ..traces import composition, select_traces

    kept = select_traces(traces, teachers=[t.strip() for t in teachers.split(",")] if teachers else None,
                         levels=parse_levels(levels) if levels else None,
                         formats=parse_formats(formats) if formats else None)
    if not kept:
        raise UserError("no trace matches --teachers/--levels/--formats; the files hold: "
                        + ", ".join(f"{k} ({n})" for k, n in composition(traces).items()))
    return kept
