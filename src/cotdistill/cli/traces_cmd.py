"""``cotdistill import-paper``, ``cotdistill traces stats`` and ``cotdistill traces export``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from ._common import DataDirOpt, console, err_console, opt_path


def _fmt_level(level) -> str:
    return "human" if level == "human" else str(level)


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}"


def _wide():
    """The console for tables: piped output is not squeezed to 80 columns."""
    if console.is_terminal:
        return console
    from rich.console import Console

    return Console(width=200)


def register(app: typer.Typer) -> None:
    traces_app = typer.Typer(help="Inspect and export trace files (JSONL of Trace records).", no_args_is_help=True)
    app.add_typer(traces_app, name="traces")

    @app.command("import-paper")
    def import_paper_cmd(
        src: Path = typer.Argument(..., metavar="SRC", help="Directory of the released files (.json or .json.gz, names as released), or one file."),
        out: Path = typer.Option(..., "--out", "-o", help="Output directory; traces go to OUT/traces.jsonl (written atomically)."),
        data_dir: Optional[Path] = DataDirOpt,
        keep_test: bool = typer.Option(False, "--keep-test", help="Keep rows whose question is a test question of its task (test leakage; dropped by default)."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the totals (the per-file table and every problem go to OUT/import_report.json)."),
    ) -> None:
        """Import the paper's released CoT files into OUT/traces.jsonl, with a per-file report."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
        from rich.table import Table

        from ..paper import import_paper
        from ..traces import write_traces

        from ..artifacts import check as check_out, claim
        from ..traces import read_traces

        check_out(out, "import")  # before reading anything
        t0 = time.time()
        with Progress(TextColumn("[bold]import[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=err_console, transient=True,
                      disable=not err_console.is_terminal) as prog:
            bar = prog.add_task("", total=None)

            def on_file(name: str, i: int, n: int) -> None:
                prog.update(bar, total=n, completed=i, description=name)

            report = import_paper(src, opt_path(data_dir), keep_test=keep_test, on_file=on_file)
        path = Path(out) / "traces.jsonl"
        with claim(out, "import"):
            if path.exists() and path.is_dir():
                from ..errors import UserError

                raise UserError(f"{path} is a directory; pass another --out")
            traces = list(report.traces)
            kept = []
            if path.is_file():  # an earlier import into this directory: keep what this one does not replace
                new = {t.key for t in traces}
                kept = [t for t in read_traces(path, empty_ok=True) if t.key not in new]
            n = write_traces(path, kept + traces)
            import dataclasses
            import json

            from ..fileio import atomic_write_text

            rep_path = Path(out) / "import_report.json"
            atomic_write_text(rep_path, json.dumps({
                "source": str(src), "traces": len(traces),
                "files": [{**dataclasses.asdict(f), "correct_pct": f.correct_pct} for f in report.files],
                "problems": report.problems(), "warnings": report.warnings}, indent=1) + "\n")
            if kept:
                console.print(f"kept {len(kept):,} traces of earlier imports in {path}", markup=False, highlight=False)
        if not quiet:
            tab = Table(title=f"import-paper {src}", show_lines=False)
            for col in ("file", "task", "teacher", "level", "format", "rows", "kept", "correct %", "mean words", "problems"):
                tab.add_column(col, justify="right" if col in ("rows", "kept", "correct %", "mean words", "problems") else "left",
                               overflow="fold")
            for f in report.files:
                tab.add_row(f.file, f.task, f.teacher, _fmt_level(f.level), f.format, str(f.rows), str(f.kept),
                            _pct(f.correct_pct), f"{f.mean_words:.1f}", str(len(f.problems)))
            _wide().print(tab)
        probs = report.problems()
        if probs and quiet:
            console.print(f"{len(probs)} notes (mostly rows whose output disagrees with the gold answer, and test "
                          f"questions dropped): listed in {rep_path}", markup=False, highlight=False)
        elif probs:
            console.print(f"[bold]{len(probs)} problems found[/] (also in {rep_path}):")
            for p in probs:
                console.print(f"  - {p}", markup=False, highlight=False, soft_wrap=True)
        for w in report.warnings[:3] if quiet else report.warnings:
            err_console.print(f"warning: {w}", markup=False, highlight=False, soft_wrap=True)
        if quiet and len(report.warnings) > 3:
            err_console.print(f"warning: {len(report.warnings) - 3} more in {rep_path}", markup=False, highlight=False)
        console.print(f"wrote {n:,} traces from {len(report.files)} file cells to {path} in {time.time() - t0:.1f}s",
                      markup=False, highlight=False, soft_wrap=True)

    @traces_app.command("stats")
    def stats_cmd(
        file: Path = typer.Argument(..., metavar="TRACES", help="A traces.jsonl (or a directory holding one)."),
        tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="A tokenizer for exact token counts: a student name (smollm2-135m), a model directory or a hub name (default: regex word-piece proxy)."),
        json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the table as JSON to this file."),
    ) -> None:
        """Per (task, teacher, level, format): rows, correct %, words, tokens and steps."""
        import json

        from rich.table import Table

        from ..students import load_tokenizer
        from ..traces import read_traces, trace_stats

        tok = load_tokenizer(tokenizer) if tokenizer else None
        stats = trace_stats(read_traces(file), tokenizer=tok)
        unit = "tokens" if tok is not None else "tokens*"
        tab = Table(title=f"traces stats {file}")
        for col in ("task", "teacher", "level", "format", "rows", "correct %", "words mean", "words p90",
                    f"{unit} mean", f"{unit} p90", "steps mean"):
            tab.add_column(col, justify="left" if col in ("task", "teacher", "level", "format") else "right")
        for s in stats:
            tab.add_row(s.task, s.teacher, _fmt_level(s.level), s.format, f"{s.rows:,}", _pct(s.correct_pct),
                        f"{s.mean_words:.1f}", f"{s.p90_words:.0f}", f"{s.mean_tokens:.1f}", f"{s.p90_tokens:.0f}",
                        f"{s.mean_steps:.2f}")
        _wide().print(tab)
        if tok is None:
            console.print("* tokens: a regex proxy (letters in chunks of <= 6, digits in chunks of <= 3, each punctuation mark "
                          "one); pass --tokenizer NAME for exact counts. "
                          "steps: sub-questions for subq, else numbered items, else sentences (final answer excluded).",
                          markup=False, highlight=False, soft_wrap=True)
        if json_out:
            from ..fileio import atomic_write_text

            json_out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(json_out, json.dumps([s.as_dict() for s in stats], indent=2) + "\n")
            console.print(f"wrote {json_out}", markup=False, highlight=False)

    @traces_app.command("export")
    def export_cmd(
        file: Path = typer.Argument(..., metavar="TRACES", help="A traces.jsonl (or a directory holding one)."),
        to: str = typer.Option(..., "--to", help="llamafactory (alpaca JSON + dataset_info.json) | trl (prompt/completion JSONL) | hf (datasets save_to_disk)."),
        out: Path = typer.Option(..., "--out", "-o", help="Output directory."),
        template: str = typer.Option("plain", "--template", help="trl only: prompt template plain | qa | alpaca | chat (conversational)."),
    ) -> None:
        """Export traces for LLaMA-Factory, TRL or a saved datasets dataset."""
        from ..traces import EXPORT_FORMATS, export_traces, read_traces

        if to.lower() not in EXPORT_FORMATS:
            from ..errors import UserError

            raise UserError(f"unknown export format {to!r}; choose one of {', '.join(EXPORT_FORMATS)}")
        traces = read_traces(file)
        written = export_traces(traces, to, out, template=template)
        console.print(f"exported {len(traces):,} traces as {to} to {out} ({len(written)} file(s))", markup=False, highlight=False, soft_wrap=True)
