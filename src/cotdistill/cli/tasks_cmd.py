"""``cotdistill tasks`` and ``cotdistill data download``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ._common import DataDirOpt, console, err_console, opt_path


def _wide():
    """The console for tables: piped output is not squeezed to 80 columns."""
    if console.is_terminal:
        return console
    from rich.console import Console

    return Console(width=200)


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(help="Benchmark and released-paper data files.", no_args_is_help=True)
    app.add_typer(data_app, name="data")

    @app.command("tasks")
    def tasks_cmd(
        data_dir: Optional[Path] = DataDirOpt,
        names: Optional[List[str]] = typer.Argument(None, metavar="TASK", help="Tasks to show (default: all)."),
    ) -> None:
        """List the tasks: answer type, split sizes and the files each split is read from."""
        from rich.table import Table

        from ..errors import UserError
        from ..paths import data_dir as resolve
        from ..tasks import get_task, task_names

        root = resolve(opt_path(data_dir))
        tab = Table(title=f"tasks (data: {root})")
        for col in ("task", "answer type", "split", "size", "read from"):
            tab.add_column(col, justify="right" if col == "size" else "left", overflow="fold")
        missing = []
        for name in names or task_names():
            task = get_task(name, root)
            for i, split in enumerate(task.splits):
                try:
                    size = f"{len(task.load(split)):,}"
                except UserError as e:
                    size = "missing"
                    missing.append(str(e))
                srcs = task.sources(split) or ["(generated)"]
                tab.add_row(task.name if i == 0 else "", task.answer_type if i == 0 else "", split, size, "\n".join(srcs))
            tab.add_section()
        _wide().print(tab)
        for m in dict.fromkeys(missing):
            err_console.print(f"warning: {m}", markup=False, highlight=False, soft_wrap=True)

    @data_app.command("download")
    def download_cmd(
        data_dir: Optional[Path] = DataDirOpt,
        only: Optional[List[str]] = typer.Option(None, "--only", help="Download only these groups: benchmarks, paper (default: both)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be fetched, fetch nothing."),
        timeout: float = typer.Option(30.0, "--timeout", help="Per-request timeout in seconds."),
    ) -> None:
        """Fill the data directory from the public sources (needs internet); skips files present."""
        from ..download import download_all
        from ..progress import on_terminal

        # a bar on a terminal; in a log the per-file lines are the progress
        download_all(opt_path(data_dir), groups=only or None, dry_run=dry_run, timeout=timeout, console=console,
                     progress=on_terminal())
