"""``cotdistill study``, ``cotdistill report`` and ``cotdistill quickstart``."""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path
from typing import List, Optional

import typer
import typer.core

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
    if cfg.cluster.executor != "local":
        if sh:
            from ..errors import UserError

            raise UserError(f"--shard splits a local run; --executor {cfg.cluster.executor} schedules every cell itself")
        return _submit(cfg, dry_run, report)
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
    from ..errors import Interrupted

    try:
        summary = run_study(cfg, jobs=jobs, shard=sh, progress=progress, console=err_console)
    except (Interrupted, KeyboardInterrupt) as e:
        where = f" ({e.for_cli().split('; resume with')[0]})" if isinstance(e, Interrupted) else ""
        raise Interrupted(f"study interrupted{where}; finished cells and stages are kept: rerun the same "
                          "`cotdistill study` command to resume (a cell in training continues from its checkpoint)",
                          getattr(e, "exit_code", 130) - 128) from None
    console.print(
        f"{summary.done}/{summary.cells} cells ok, {summary.failed} failed, {summary.stages_run} stage(s) run "
        f"in {time.time() - t0:.0f}s → {summary.results_path}"
    )
    if summary.busy:
        console.print(f"{summary.busy} cell(s) were being run by another process (a cluster job or another run) "
                      "and were left to it")
    if summary.failed:
        console.print("[yellow]failed cells are recorded in results.jsonl with their error; see cells/<cell>/log.txt[/yellow]")
    if report and summary.done:
        from ..report import write_report

        paths = write_report(cfg.output_dir)
        console.print(f"report: {paths['html']}")
    if summary.failed:  # scripts and CI see that the study is incomplete
        raise typer.Exit(1)


_RESOURCE_KEYS = ("partition", "account", "qos", "time", "mem", "cpus_per_task", "gpus_per_node", "constraint",
                  "array_parallelism")


def _print_jobs(cfg, sub) -> None:
    from rich.table import Table

    plan = sub.plan
    tab = Table(title=f"study {cfg.name}: {sub.executor} jobs → {cfg.output_dir}")
    for col in ("job", "tasks", "resources", "depends on"):
        tab.add_column(col, overflow="fold")
    for j in sub.jobs:
        p = j.get("params") or {}
        keys = _RESOURCE_KEYS if sub.executor == "slurm" else tuple(p)
        res = ", ".join(f"{k}={p[k]}" for k in keys if p.get(k) not in (None, ""))
        tab.add_row(f"{j['kind']}{' ' + str(j['job']) if j.get('job') else ''}", str(len(j.get("tasks") or [])), res,
                    str(j.get("dependency") or "—"))
    console.print(tab)
    console.print(f"{len(plan.complete)}/{plan.cells} cells done, {len(plan.active)} queued or running from an earlier "
                  f"submission, {plan.to_run} to run ({len(plan.prepare)} shared generation/curation task(s) first).")


def _submit(cfg, dry_run: bool, report: bool) -> None:
    from ..cluster import submit_study

    t0 = time.time()
    if dry_run:
        sub = submit_study(cfg, dry_run=True)
        _print_jobs(cfg, sub)
        if sub.script:
            console.print("one generated batch script (the last array):")
            print(sub.script, flush=True)
        console.print("nothing was submitted (dry run)")
        return
    from ..progress import on_terminal

    progress = LiveTable(err_console) if on_terminal(err_console) else True
    sub = submit_study(cfg, progress=progress, console=err_console)
    if cfg.cluster.executor == "slurm":
        _print_jobs(cfg, sub)
        if sub.jobs:
            console.print(f"submitted; follow it with `cotdistill study status {cfg.output_dir}`, stop it with "
                          f"`cotdistill study cancel {cfg.output_dir}`; submit again to run what is missing")
        else:
            console.print("nothing to submit: every cell is done or already queued")
        return
    results = (sub.jobs[0].get("results") or {}) if sub.jobs else {}
    failed = [k for k, v in results.items() if v.get("error")]
    console.print(f"ray: {len(results) - len(failed)} cell(s) ran, {len(failed)} failed, in {time.time() - t0:.0f}s")
    if report:
        from ..records import StudyLayout
        from ..report import write_report

        if StudyLayout(cfg.output_dir).results.exists():
            paths = write_report(cfg.output_dir)
            console.print(f"report: {paths['html']}")
    if failed:
        raise typer.Exit(1)


class _StudyGroup(typer.core.TyperGroup):
    """``cotdistill study CONFIG ...`` runs a study (the ``run`` command); ``study status`` and
    ``study cancel`` follow and stop one."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


def _print_status(rows, out: Path) -> None:
    from rich.table import Table

    from ..cluster import read_submissions

    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    tab = Table(title=f"{out}: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    for col in ("cell", "state", "stage", "detail", "job", "for"):
        tab.add_column(col, overflow="fold")
    for r in rows:
        color = {"done": "green", "failed": "red", "running": "cyan", "stopped": "yellow"}.get(r.state, "")
        tab.add_row(r.cell, f"[{color}]{r.state}[/{color}]" if color else r.state, r.stage or "", r.detail,
                    r.job or "", f"{r.elapsed_s:.0f}s" if r.elapsed_s is not None else "")
    console.print(tab)
    for r in rows:
        if r.log_tail and r.state in ("failed", "stopped"):
            console.print(f"{r.cell} ({r.state} in {r.stage}), last lines of its log:", markup=False)
            for ln in r.log_tail:
                console.print("  " + ln, markup=False, highlight=False)
    subs = read_submissions(out)
    if subs:
        t0 = min(float(s.get("t", time.time())) for s in subs)
        jobs = sorted({str(s.get("job")) for s in subs})
        console.print(f"{len(subs)} submitted job(s) ({', '.join(jobs[-8:])}); first submitted {time.time() - t0:.0f}s ago")


def register(app: typer.Typer) -> None:
    study_app = typer.Typer(cls=_StudyGroup, no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                            help="Run a factor study (`cotdistill study CONFIG`), follow it (`study status DIR`), "
                                 "stop its jobs (`study cancel DIR`).")
    app.add_typer(study_app, name="study")

    @study_app.command("run")
    def study(
        config: Path = typer.Argument(..., metavar="CONFIG", help="study YAML (tasks, teachers, levels, formats, students, seeds, train, eval, output_dir)"),
        dry_run: bool = typer.Option(False, "--dry-run", help="print the cells, teacher calls and training tokens each needs, and what is done (with a cluster executor: the jobs, their resources and dependencies, and one batch script); run nothing"),
        jobs: int = typer.Option(1, "--jobs", "-j", help="cells run in parallel (worker processes of the local executor)"),
        shard: Optional[str] = typer.Option(None, "--shard", help="i/n: run every n-th cell starting at i (1-based), e.g. 1/2 and 2/2 on two machines sharing one output_dir"),
        student: Optional[List[str]] = typer.Option(None, "--student", help="replace the config's students (repeatable), e.g. --student scratch:llama-xs"),
        out: Optional[Path] = typer.Option(None, "--out", help="replace the config's output_dir"),
        seed: Optional[List[int]] = typer.Option(None, "--seed", help="replace the config's seeds (repeatable)"),
        report: bool = typer.Option(True, "--report/--no-report", help="write report.md/html after the run"),
        executor: Optional[str] = typer.Option(None, "--executor", help="where the cells run: local (worker processes here), slurm (job arrays through submitit) or ray [config: cluster.executor; default: local]"),
        partition: Optional[str] = typer.Option(None, "--partition", help="Slurm partition [config: cluster.partition]"),
        account: Optional[str] = typer.Option(None, "--account", help="Slurm account [config: cluster.account]"),
        qos: Optional[str] = typer.Option(None, "--qos", help="Slurm QOS [config: cluster.qos]"),
        time_limit: Optional[str] = typer.Option(None, "--time", help="time limit per cell job: minutes or [D-]HH:MM:SS [config: cluster.time; default: 4:00:00]"),
        mem: Optional[str] = typer.Option(None, "--mem", help="memory per cell job, e.g. 32G [config: cluster.mem]"),
        cpus_per_cell: Optional[int] = typer.Option(None, "--cpus-per-cell", help="CPU cores per cell job, also its torch threads [config: cluster.cpus_per_cell]"),
        gpus_per_cell: Optional[int] = typer.Option(None, "--gpus-per-cell", help="GPUs per cell job; above 1 a cell trains through `accelerate launch` [config: cluster.gpus_per_cell; default: 0]"),
        distributed: Optional[str] = typer.Option(None, "--distributed", help="how a cell with several GPUs trains: ddp, fsdp, deepspeed-zero2, deepspeed-zero3 [config: cluster.distributed; default: ddp]"),
        constraint: Optional[str] = typer.Option(None, "--constraint", help="Slurm node features [config: cluster.constraint]"),
        max_parallel: Optional[int] = typer.Option(None, "--max-parallel", help="at most this many cells at once [config: cluster.max_parallel]"),
        setup: Optional[List[str]] = typer.Option(None, "--setup", help="a shell line run before each job, e.g. 'source ~/venv/bin/activate' (repeatable) [config: cluster.setup]"),
        sbatch: Optional[List[str]] = typer.Option(None, "--sbatch", help="an extra sbatch option KEY=VALUE, e.g. --sbatch exclude=node3 (repeatable) [config: cluster.sbatch]"),
        ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster address [config: cluster.ray_address; default: $RAY_ADDRESS, else auto]"),
    ) -> None:
        """Run a factor study (generate → curate → train → evaluate per cell, cached and resumable)."""
        from ..errors import UserError
        from ..study import load_study_config

        cluster = {k: v for k, v in {
            "executor": executor, "partition": partition, "account": account, "qos": qos, "time": time_limit,
            "mem": mem, "cpus_per_cell": cpus_per_cell, "gpus_per_cell": gpus_per_cell, "distributed": distributed,
            "constraint": constraint,
            "max_parallel": max_parallel, "setup": list(setup) if setup else None, "ray_address": ray_address}.items()
            if v is not None}
        if sbatch:
            extra = {}
            for item in sbatch:
                k, sep, v = item.partition("=")
                if not sep or not k.strip():
                    raise UserError(f"--sbatch {item!r}: use KEY=VALUE, e.g. --sbatch exclude=node3")
                extra[k.strip()] = v.strip()
            cluster["sbatch"] = extra
        overrides = {"students": list(student) if student else None, "seeds": list(seed) if seed else None,
                     "output_dir": str(out.resolve()) if out else None, "cluster": cluster or None}
        cfg = load_study_config(config, overrides=overrides, create=not dry_run)
        _run(cfg, jobs, shard, dry_run, report)

    @study_app.command("status")
    def status_cmd(
        study_dir: Path = typer.Argument(..., metavar="STUDY_DIR", help="a study's output_dir"),
        as_json: bool = typer.Option(False, "--json", help="one JSON object per cell instead of the table"),
    ) -> None:
        """Every cell's state (pending, queued, running with the trainer's step and loss, done, failed
        with its stage and last log lines), the job ids and the elapsed time; local and cluster runs."""
        import json as _json

        from ..cluster import study_status

        rows = study_status(study_dir)
        if as_json:
            for r in rows:
                print(_json.dumps(r.as_dict()))
            return
        _print_status(rows, study_dir)

    @study_app.command("cancel")
    def cancel_cmd(study_dir: Path = typer.Argument(..., metavar="STUDY_DIR", help="a study's output_dir")) -> None:
        """Cancel the jobs submitted for this study that are still queued or running (finished cells
        are kept; submitting the study again resumes the rest)."""
        from ..cluster import cancel_study

        done = cancel_study(study_dir)
        console.print(("cancelled: " + ", ".join(done)) if done else "nothing to cancel: no job of this study is queued or running")

    @app.command("report")
    def report_cmd(
        study_dir: Path = typer.Argument(..., metavar="STUDY_DIR", help="a study's output_dir (holds results.jsonl)"),
        out: Optional[Path] = typer.Option(None, "--out", help="write the report here instead of STUDY_DIR"),
    ) -> None:
        """Write report.md and report.html (tables, plots, significance, findings) for a study."""
        from ..report import write_report
        from ..study import refresh_results

        refresh_results(study_dir)  # the cells finished so far, also while a study still runs
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
            cfg = load_study_config(p, overrides={"output_dir": str(out.resolve())}, create=not dry_run)
        t0 = time.time()
        _run(cfg, jobs, None, dry_run, report=True)
        if not dry_run:
            console.print(f"quickstart finished in {time.time() - t0:.0f}s; open {out / 'report.html'}")
