"""CLI: ``generate`` (teacher rationales), ``prompts show`` (the exact messages), ``curate`` (filter traces)."""

from __future__ import annotations

import contextlib

import json
from pathlib import Path
from typing import Any, Optional

import typer

from ..errors import UserError, validation_error
from ..fileio import load_yaml_mapping
from ..curate import CurateOptions  # (light: pydantic only) the flags' help comes from their fields
from ..generate import GenerateConfig
from ._common import DataDirOpt, console, err_console, field_option, opt_path


def _config(base: dict[str, Any], overrides: dict[str, Any], source: str):
    from pydantic import ValidationError

    from ..generate import GenerateConfig

    merged = {**base, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return GenerateConfig(**merged)
    except ValidationError as e:
        raise validation_error(e, source, GenerateConfig) from None


def load_examples(task: str, split: str, data_dir: Optional[str], limit: Optional[int]):
    from ..tasks import get_task

    exs = get_task(task, data_dir).load(split)
    if limit is not None:
        exs = exs[:limit]
    return exs


def _fmt_level(lv: Any) -> str:
    return str(lv)


def print_summary(res: Any, config: Any) -> None:
    from rich.table import Table

    show_cost = config.prices() is not None
    tab = Table(title=f"generate · {config.teacher}", title_justify="left")
    for col in ("level", "format", "rows", "failed", "correct %", "mean words", "tokens in", "tokens out"):
        tab.add_column(col, justify="right" if col not in ("format",) else "left")
    if show_cost:
        tab.add_column("cost $", justify="right")
    for r in res.summary:
        row = [_fmt_level(r["level"]), r["format"], str(r["rows"]), str(r["failed"]),
               "-" if r["correct_pct"] is None else f"{r['correct_pct']:.1f}",
               "-" if r["mean_words"] is None else f"{r['mean_words']:.1f}",
               f"{r['prompt_tokens']:,}" if r["prompt_tokens"] or r["completion_tokens"] else "-",
               f"{r['completion_tokens']:,}" if r["prompt_tokens"] or r["completion_tokens"] else "-"]
        if show_cost:
            row.append("-" if r["cost"] is None else f"{r['cost']:.4f}")
        tab.add_row(*row)
    console.print(tab)
    console.print(
        f"wrote {res.traces_path} ({len(res.traces)} traces) · calls: {res.done} new, {res.cached} cached, "
        f"{len(res.failed)} failed · {res.wall_s:.1f}s"
    )
    if res.cost is not None:
        console.print(f"cost of this run ${res.cost:.4f} ({config.prices()[2]})", markup=False)
    if res.stopped_at_max_cost:
        err_console.print(f"stopped before --max-cost ${config.max_cost:g} would be exceeded: ${res.cost:.4f} spent; the "
                          "calls made are stored, rerun with a higher --max-cost to continue", style="yellow", markup=False)
    if res.failed:
        first = res.failed[0]
        what = ("are not in the replay file and were left out (nothing is invented)"
                if config.teacher.startswith("replay:") else "failed; rerun the same command to retry them")
        err_console.print(
            f"{len(res.failed)} items {what}. Listed in {res.out_dir / 'failed.jsonl'}; first: "
            f"{first['task']}/{first['id']} level {first['level']} {first['format']}: {first['error']}",
            style="yellow", markup=False,
        )


def register(app: typer.Typer) -> None:
    @app.command("generate")
    def generate_cmd(
        out: Path = typer.Option(..., "--out", "-o", help="Output directory (traces.jsonl, calls.jsonl store, summary)."),
        task: Optional[str] = typer.Option(None, "--task", help="Task name (see `cotdistill tasks`); not with --from-traces."),
        from_traces: Optional[Path] = typer.Option(None, "--from-traces", help="Rewrite the rationales of this trace file (one cell, e.g. long reasoning traces) at --levels, keeping each final answer."),
        split: str = typer.Option("train", "--split", help="Split to generate for."),
        teacher: Optional[str] = field_option(GenerateConfig, "teacher", "--teacher", "-t"),
        levels: Optional[str] = field_option(GenerateConfig, "levels", note="E.g. 1-6 or 0,3,5."),
        formats: Optional[str] = field_option(GenerateConfig, "formats", note="Comma-separated."),
        samples: Optional[int] = field_option(GenerateConfig, "samples"),
        concurrency: Optional[int] = field_option(GenerateConfig, "concurrency"),
        limit: Optional[int] = typer.Option(None, "--limit", help="Use only the first N examples."),
        temperature: Optional[float] = field_option(GenerateConfig, "temperature"),
        max_tokens: Optional[int] = field_option(GenerateConfig, "max_tokens"),
        timeout: Optional[float] = field_option(GenerateConfig, "timeout"),
        max_retries: Optional[int] = field_option(GenerateConfig, "max_retries"),
        rpm: Optional[float] = field_option(GenerateConfig, "rpm"),
        tpm: Optional[float] = field_option(GenerateConfig, "tpm"),
        base_url: Optional[str] = field_option(GenerateConfig, "base_url", note="The key is read from $OPENAI_API_KEY only."),
        batch_size: Optional[int] = field_option(GenerateConfig, "batch_size"),
        replay_teacher: Optional[str] = field_option(GenerateConfig, "replay_teacher"),
        seed: Optional[int] = field_option(GenerateConfig, "seed"),
        reasoning_effort: Optional[str] = field_option(GenerateConfig, "reasoning_effort"),
        hint_gold: bool = field_option(GenerateConfig, "hint_gold", default=False),
        price_in: Optional[float] = field_option(GenerateConfig, "price_in"),
        price_out: Optional[float] = field_option(GenerateConfig, "price_out"),
        max_cost: Optional[float] = field_option(GenerateConfig, "max_cost"),
        config: Optional[Path] = typer.Option(None, "--config", help="YAML file with generate options (flags override it)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the number of calls and a token estimate; call nothing."),
        data_dir: Optional[Path] = DataDirOpt,
    ) -> None:
        """Generate teacher rationales for a task at chosen levels and formats (resumable)."""
        from rich.table import Table

        from ..generate import GenerationInterrupted, dry_run as do_dry_run, generate

        base = load_yaml_mapping(config, "generate options") if config else {}
        cfg = _config(base, dict(
            teacher=teacher, levels=levels, formats=formats, samples=samples, concurrency=concurrency,
            temperature=temperature, max_tokens=max_tokens, timeout=timeout, max_retries=max_retries, rpm=rpm,
            tpm=tpm, base_url=base_url, batch_size=batch_size, replay_teacher=replay_teacher, seed=seed,
            reasoning_effort=reasoning_effort, hint_gold=hint_gold or None, price_in=price_in, price_out=price_out, max_cost=max_cost,
        ), str(config) if config else "options")
        if limit is not None and limit < 1:
            raise UserError("--limit must be at least 1")
        if (task is None) == (from_traces is None):
            raise UserError("give either --task (generate for a task's split) or --from-traces FILE (rewrite its "
                            "rationales), not both" if task and from_traces else
                            "give --task (generate for a task's split) or --from-traces FILE (rewrite its rationales)")
        if from_traces is not None:
            from ..generate import examples_from_traces

            examples = examples_from_traces(from_traces)[:limit] if limit else examples_from_traces(from_traces)
            task = ",".join(sorted({e.task for e in examples}))
        else:
            examples = load_examples(task, split, opt_path(data_dir), limit)
        if dry_run:
            est = do_dry_run(examples, cfg, out)
            tab = Table(title=f"dry run · {cfg.teacher} · {task}/{split} · {len(examples)} examples", title_justify="left")
            for col in ("level", "format", "calls", "cached", "est. tokens in", "est. tokens out", "est. cost $"):
                tab.add_column(col, justify="left" if col == "format" else "right")
            for r in est["rows"] + [{**est["total"], "level": "total", "format": ""}]:
                tab.add_row(str(r["level"]), r["format"], f"{r['calls']:,}", f"{r['cached']:,}", f"{r['prompt_tokens']:,}",
                            f"{r['completion_tokens']:,}", "-" if r["cost"] is None else f"{r['cost']:.4f}")
            console.print(tab)
            console.print(f"{est['total']['calls']:,} calls would be made; nothing was called (estimates: prompt chars/4, "
                          "completions 1.5x our exemplar length).")
            return
        try:
            res = generate(examples, out, cfg, progress=True, console=err_console)
        except GenerationInterrupted as e:
            err_console.print(f"{e}")
            raise typer.Exit(130)
        print_summary(res, cfg)
        if res.failed:
            raise typer.Exit(1)

    prompts_app = typer.Typer(help="Inspect the teacher prompt library.", no_args_is_help=True)
    app.add_typer(prompts_app, name="prompts")

    @prompts_app.command("show")
    def prompts_show(
        task: str = typer.Option("gsm8k", "--task", help="Task whose answer type and question to use."),
        level: int = typer.Option(3, "--level", help="Granularity level 0-6."),
        fmt: str = typer.Option("cot", "--format", help="cot, subq, rar or sym."),
        split: str = typer.Option("train", "--split", help="Split to take the question from."),
        index: int = typer.Option(0, "--index", help="Which example of the split."),
        hint_gold: bool = typer.Option(False, "--hint-gold", help="Show the gold answer to the teacher."),
        as_json: bool = typer.Option(False, "--json", help="Print the messages as JSON."),
        data_dir: Optional[Path] = DataDirOpt,
    ) -> None:
        """Print the exact messages sent to the teacher for one task, level and format."""
        from ..prompts import KNOWN_ANSWER_TYPES, SAMPLE_QUESTIONS, answer_only, build_messages
        from ..spec import parse_format, parse_level
        from ..tasks.base import Example

        fmt = parse_format(fmt)
        level = parse_level(level)
        ex = None
        atype = KNOWN_ANSWER_TYPES.get(task.lower())
        try:
            from ..tasks import get_task

            t = get_task(task, opt_path(data_dir))
            atype = t.answer_type
            exs = t.load(split)
            if not exs:
                raise UserError(f"split {split!r} of {task} is empty")
            if not 0 <= index < len(exs):
                raise UserError(f"--index {index} out of range: {task}/{split} has {len(exs)} examples")
            ex = exs[index]
        except UserError as e:
            if atype is None:
                raise
            if "out of range" in str(e):
                raise
            err_console.print(f"[yellow]note: {task} data not available ({e}); showing a built-in sample "
                              f"{atype} question instead[/yellow]")
        if ex is None:
            s = SAMPLE_QUESTIONS[atype]
            ex = Example(id="sample", task=task, split=split, question=s["question"], answer=s["answer"],
                         answer_type=atype, choices=s.get("choices"))
        if level == 0:
            console.print(f"level 0 needs no teacher call: the target is {answer_only(ex)!r}", markup=False)
            return
        msgs = build_messages(ex, level, fmt, hint_gold=hint_gold)
        if as_json:
            print(json.dumps(msgs, indent=2, ensure_ascii=False))
            return
        for m in msgs:
            console.rule(f"[bold]{m['role']}")
            console.print(m["content"], markup=False, highlight=False, soft_wrap=True)
        console.rule()

    @app.command("curate")
    def curate_cmd(
        inp: Path = typer.Argument(..., metavar="TRACES", help="Trace file (traces.jsonl) or a directory that holds one."),
        out: Path = typer.Option(..., "--out", "-o", help="Output traces file (.jsonl) or directory."),
        keep: str = field_option(CurateOptions, "keep", default="correct", show_default=False),
        decontaminate: bool = field_option(CurateOptions, "decontaminate", "--decontaminate/--no-decontaminate", default=True,
                                           show_default=False),
        test_file: list[Path] = typer.Option([], "--test-file", metavar="FILE", help="Extra test questions (JSON/JSONL with question or instruction fields); repeatable."),
        threshold: float = field_option(CurateOptions, "threshold", "--threshold", "--jaccard", default=0.9, show_default=False),
        ngram: int = field_option(CurateOptions, "ngram", default=5, show_default=False),
        data_dir: Optional[Path] = DataDirOpt,
        teachers: Optional[str] = typer.Option(None, "--teachers", help="Keep only these teachers' traces (comma-separated)."),
        levels: Optional[str] = typer.Option(None, "--levels", help="Keep only these levels, e.g. 3, 1-6, human."),
        formats: Optional[str] = typer.Option(None, "--formats", help="Keep only these formats: cot, subq, rar, sym (or BSM, RaR, SYM)."),
        tasks: Optional[str] = typer.Option(None, "--tasks", help="Keep only these tasks' traces (comma-separated), e.g. svamp."),
    ) -> None:
        """Keep correct, complete, unique, uncontaminated rationales and say what was removed."""
        from rich.table import Table

        from ..curate import REASONS, curate
        from ..fileio import atomic_write_text
        from ..paths import load_json_any
        from ..traces import read_traces, write_traces

        if keep not in ("correct", "best", "all"):
            raise UserError(f"--keep {keep!r}: choose correct, best or all")
        if not 0 < threshold <= 1:
            raise UserError(f"--threshold/--jaccard {threshold}: must be in (0, 1]")
        from ..artifacts import KINDS, check as check_out, claim, kind_of

        out_is_dir = out.is_dir() or not out.suffix
        if out_is_dir:
            check_out(out, "curate")
        else:
            k = kind_of(out.parent)
            if k in KINDS and k != "curate":
                raise UserError(f"--out {out}: {out.parent} is {KINDS[k]}; write the curated traces elsewhere")
        from ._common import filter_cells

        traces = filter_cells(lambda: read_traces(inp), teachers, levels, formats, tasks)
        extra: list[str] = []
        for f in test_file:
            rows = load_json_any(f)
            rows = rows if isinstance(rows, list) else [rows]
            for i, r in enumerate(rows):
                q = r.get("question") or r.get("instruction") if isinstance(r, dict) else None
                if not q:
                    raise UserError(f"{f}: item {i} has no 'question' or 'instruction' field")
                extra.append(q)
        kept, rep = curate(traces, keep=keep, decontaminate=decontaminate, test_questions=extra or None,
                           data_dir=opt_path(data_dir), threshold=threshold, ngram=ngram)
        out_file = out / "traces.jsonl" if out_is_dir else out
        if out_file.resolve() == Path(inp if not Path(inp).is_dir() else Path(inp) / "traces.jsonl").resolve():
            raise UserError(f"--out {out} is the input file: write the curated traces elsewhere")
        report_path = out_file.with_name(out_file.stem + ".curate.json")
        with claim(out, "curate") if out_is_dir else contextlib.nullcontext():
            write_traces(out_file, kept)
            atomic_write_text(report_path, json.dumps(rep.as_dict(), indent=2, ensure_ascii=False) + "\n")
        tab = Table(title=f"curate · {inp}", title_justify="left")
        tab.add_column("removed because")
        tab.add_column("rows", justify="right")
        tab.add_column("e.g.")
        for r in REASONS:
            ex = rep.examples.get(r, [])
            eg = ""
            if ex:
                e0 = ex[0]
                eg = f"{e0['task']}/{e0['id']} L{e0['level']}"
                if "similarity" in e0:
                    eg += f" ~ test ({e0['similarity']})"
                if "pred" in e0:
                    eg += f" pred {e0['pred']!r} gold {e0['gold']!r}"
            tab.add_row(r, str(rep.removed[r]), eg)
        console.print(tab)
        for task, src in sorted(rep.test_sources.items()):
            console.print(f"decontamination {task}: {src}", markup=False)
        console.print(f"kept {rep.kept} of {rep.total} -> {out_file} (report {report_path})", markup=False)
