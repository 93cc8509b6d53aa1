"""``cotdistill study``, ``cotdistill report`` and ``cotdistill quickstart``."""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path
from typing import List, Optional

import typer

from ._common import console, err_console


def _print_plan(cfg, plans) -> None:
    from rich.table import Table

    from ..study import STAGES

    tab = Table(title=f"study {cfg.name}: {len(plans)} cells → {cfg.output_dir}", show_lines=False)
    for col in ("cell", "teacher calls", "train tokens", "done"):
        tab.add_column(col, justify="right" if col != "cell" else "left", overflow="fold")
    tot_calls = tot_tok = 0
    unknown = False
    complete = 0
    seen: set[str] = set()
    for p in plans:
        done = "all" if p.complete else (",".join(p.done) or "—")
        complete += p.complete
        if p.teacher_calls is None or p.train_tokens is None:
            unknown = True
        shared = p.keys["generate"] in seen
        seen.add(p.keys["generate"])
        if not shared:
            tot_calls += p.teacher_calls or 0
        tot_tok += (p.train_tokens or 0) if "train" not in p.done else 0
        calls = "shared" if shared else ("?" if p.teacher_calls is None else f"{p.teacher_calls:,}")
        tab.add_row(p.cell.id, calls, "?" if p.train_tokens is None else f"{p.train_tokens:,}", done)
    console.print(tab)
    console.print(
        f"{complete}/{len(plans)} cells complete; still to do: {tot_calls:,} teacher calls, "
        f"{tot_tok:,} training tokens{' (+ unknown: ? = needs generation first)' if unknown else ''}. "
        f"Stages: {' → '.join(STAGES)}; cells that share traces (same task, teacher, level, format) "
        "share the teacher calls (\"shared\")."
    )


class LiveTable:
    """The study's progress on a terminal: a bar over the cells and a table of the running cells
    (stage, the trainer's step / loss / tokens/s) and the failed ones, drawn from the study's
    progress events (:class:`cotdistill.progress.ProgressEvent`)."""

    def __init__(self, console):
        self.console = console
        self.live = None

    def _render(self, ev):
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        i = ev.info
        eta = f"{i['eta_s']}s" if i.get("eta_s") is not None else "?"
        running = i.get("running") or []
        head = Table.grid(padding=(0, 1))
        head.add_row(ProgressBar(total=max(ev.total, 1), completed=ev.done, width=40),
                     f"{ev.done}/{ev.total} cells  done {i.get('ok', 0)}  running {len(running)}  failed {i.get('failed', 0)}  "
                     f"elapsed {ev.elapsed_s:.0f}s  eta {eta}")
        tab = Table(show_header=True, header_style="bold", box=None)
        tab.add_column("cell")
        tab.add_column("stage")
        tab.add_column("for")
        for cid, stage, secs in running[:12]:
            tab.add_row(cid, stage, f"{secs}s")
        for cid, stage, err in (i.get("failures") or [])[:6]:
            tab.add_row(f"[red]{cid}[/red]", f"[red]failed in {stage}[/red]", err[:60])
        return Group(head, tab)

    def __call__(self, ev) -> None:
        from rich.live import Live

        if self.live is None:
            self.live = Live(self._render(ev), console=self.console, refresh_per_second=2, transient=False)
            self.live.__enter__()
        else:
            self.live.update(self._render(ev))
        if ev.finished:
            self.live.__exit__(None, None, None)
            self.live = None


def _run(cfg, jobs: int, shard: Optional[str], dry_run: bool, report: bool) -> None:
    from ..study import parse_shard, plan_study, run_study

    sh = parse_shard(shard)
    if dry_run:
        from ..study import shard_cells

        plans = plan_study(cfg)
        if sh:
            ids = {c.id for c in shard_cells([p.cell for p in plans], sh)}
            plans = [p for p in plans if p.cell.id in ids]
        _print_plan(cfg, plans)
        return
    t0 = time.time()
    from ..progress import on_terminal

    # a live table on a terminal; plain progress lines in a log
    progress = LiveTable(err_console) if on_terminal(err_console) else True
    summary = run_study(cfg, jobs=jobs, shard=sh, progress=progress, console=err_console)
    console.print(
        f"{summary.done}/{summary.cells} cells ok, {summary.failed} failed, {summary.stages_run} stage(s) run "
        f"in {time.time() - t0:.0f}s → {summary.results_path}"
    )
    if summary.failed:
        console.print("[yellow]failed cells are recorded in results.jsonl with their error; see cells/<cell>/log.txt[/yellow]")
    if report and summary.done:
        from ..report import write_report

        paths = write_report(cfg.output_dir)
        console.print(f"report: {paths['html']}")
    if summary.failed:  # scripts and CI see that the study is incomplete
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    @app.command("study")
    def study(
        config: Path = typer.Argument(..., help="study YAML (tasks, teachers, levels, formats, students, seeds, train, eval, output_dir)"),
        dry_run: bool = typer.Option(False, "--dry-run", help="print the cells, teacher calls and training tokens each needs, and what is done; run nothing"),
        jobs: int = typer.Option(1, "--jobs", "-j", help="cells run in parallel (worker processes)"),
        shard: Optional[str] = typer.Option(None, "--shard", help="i/n: run every n-th cell starting at i (1-based), e.g. 1/2 and 2/2 on two machines sharing one output_dir"),
        student: Optional[List[str]] = typer.Option(None, "--student", help="replace the config's students (repeatable), e.g. --student scratch:llama-xs"),
        out: Optional[Path] = typer.Option(None, "--out", help="replace the config's output_dir"),
        seed: Optional[List[int]] = typer.Option(None, "--seed", help="replace the config's seeds (repeatable)"),
        report: bool = typer.Option(True, "--report/--no-report", help="write report.md/html after the run"),
    ) -> None:
        """Run a factor study (generate → curate → train → evaluate per cell, cached and resumable)."""
        from ..study import load_study_config

        overrides = {"students": list(student) if student else None, "seeds": list(seed) if seed else None,
                     "output_dir": str(out.resolve()) if out else None}
        cfg = load_study_config(config, overrides=overrides)
        _run(cfg, jobs, shard, dry_run, report)

    @app.command("report")
    def report_cmd(
        study_dir: Path = typer.Argument(..., help="a study's output_dir (holds results.jsonl)"),
        out: Optional[Path] = typer.Option(None, "--out", help="write the report here instead of STUDY_DIR"),
    ) -> None:
        """Write report.md and report.html (tables, plots, significance, findings) for a study."""
        from ..report import write_report

        paths = write_report(study_dir, out)
        console.print(f"wrote {paths['md']} and {paths['html']}")

    @app.command("quickstart")
    def quickstart(
        out: Path = typer.Option(Path("quickstart-out"), "--out", help="output directory"),
        jobs: int = typer.Option(2, "--jobs", "-j", help="cells in parallel, one torch thread each on 2 cores (as fast as one 2-thread job when the cores are free, much faster when they are shared)"),
        dry_run: bool = typer.Option(False, "--dry-run", help="print the cells and run nothing"),
    ) -> None:
        """Run the embedded study (arith, lab teacher, two scratch students; CPU only) and write its report."""
        from ..study import load_study_config

        cfg_path = resources.files("cotdistill") / "configs" / "quickstart.yaml"
        with resources.as_file(cfg_path) as p:
            cfg = load_study_config(p, overrides={"output_dir": str(out.resolve())})
        t0 = time.time()
        _run(cfg, jobs, None, dry_run, report=True)
        if not dry_run:
            console.print(f"quickstart finished in {time.time() - t0:.0f}s; open {out / 'report.html'}")
