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
