"""``cotdistill evaluate`` and ``cotdistill compare``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..evaluate import EvalConfig  # (light: pydantic only) the flags' help comes from its fields
from ._common import DataDirOpt, console, field_option, opt_path


def _summary(m: dict, out: Path | None) -> None:
    from rich.table import Table

    t = Table(title=f"{m['task']} / {m['split']}  ·  {m['model']}", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    t.add_row("accuracy (strict)", f"{100 * m['accuracy']:.2f} %  (95 % CI {100 * m['ci_low']:.2f} – {100 * m['ci_high']:.2f})  n={m['n']}")
    if m.get("accuracy_lenient") is not None:
        t.add_row("accuracy (lenient)", f"{100 * m['accuracy_lenient']:.2f} %  (also reading fallbacks such as the last number)")
    t.add_row("no answer line", f"{m.get('n_no_answer', round(m['parse_failure_rate'] * m['n']))} of {m['n']} ({100 * m['parse_failure_rate']:.2f} %)")
    t.add_row("hit max_new_tokens", f"{m['n_length_capped']} of {m['n']}"
              + (f" ({m['n_capped_without_answer']} without an answer line)" if m.get("n_capped_without_answer") is not None else ""))
    t.add_row("mean output tokens", f"{m['mean_output_tokens']:.1f}")
    tps = m.get("tokens_per_s")
    t.add_row("throughput", (f"{tps:.0f} tokens/s" if tps else "—")
              + f"  ({m['n_generated_this_run']} of {m['n']} items decoded this run)")
    t.add_row("wall time", f"{m['wall_s']:.1f} s")
    t.add_row("decoding", f"{m['decoding']}, max_new_tokens {m['max_new_tokens']}, batch {m['batch_size']}, "
              f"{m['backend']} ({m.get('device')}, {m.get('dtype')})")
    t.add_row("template", f"{m['template']} ({m.get('template_source', '')})")
    if m.get("limit") is not None:
        t.add_row("limited to", f"the first {m['limit']} of the split's {m.get('n_split', '?')} items (--limit)")
    if out is not None:
        t.add_row("written", f"{out}/predictions.jsonl, {out}/metrics.json")
    console.print(t)


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    def evaluate_cmd(
        model: str = typer.Option(..., "--model", help="Model directory (from `cotdistill train`), a hub name, a .gguf file or smollm2-135m."),
        task: str = typer.Option(..., "--task", help="Task name (see `cotdistill tasks`)."),
        out: Path = typer.Option(..., "--out", help="Output directory: predictions.jsonl, metrics.json (resumable)."),
        split: str = typer.Option("test", "--split", help="Split to evaluate."),
        limit: Optional[int] = field_option(EvalConfig, "limit", min=1),
        decoding: Optional[str] = field_option(EvalConfig, "decoding"),
        max_new_tokens: Optional[str] = field_option(EvalConfig, "max_new_tokens"),
        batch_size: Optional[str] = field_option(EvalConfig, "batch_size"),
        template: Optional[str] = field_option(EvalConfig, "template"),
        backend: Optional[str] = field_option(EvalConfig, "backend"),
        device: str = typer.Option("auto", "--device", help="auto (GPU when visible), cpu, cuda, cuda:N."),
        dtype: str = typer.Option("float32", "--dtype", help="float32 (exact, batch-invariant), bfloat16, float16, or auto (as stored)."),
        cache: Optional[str] = field_option(EvalConfig, "cache"),
        instruction: Optional[str] = field_option(EvalConfig, "instruction"),
        fewshot: Optional[int] = field_option(EvalConfig, "fewshot"),
        threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch CPU threads (default: torch's choice)."),
        config: Optional[Path] = typer.Option(None, "--config", help="YAML EvalConfig (keys: the config names shown; flags override it)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Discard earlier predictions in --out instead of resuming."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
        data_dir: Optional[Path] = DataDirOpt,
    ) -> None:
        """Evaluate a model zero-shot on a task split: accuracy with a 95 % CI, per-item predictions."""
        from ..evaluate import evaluate, parse_batch_size, parse_decoding, parse_max_new_tokens

        given = dict(decoding=decoding, max_new_tokens=max_new_tokens, batch_size=batch_size, limit=limit,
                     template=template, backend=backend, cache=cache, fewshot=fewshot,
                     instruction=instruction)
        given = {k: v for k, v in given.items() if v is not None}
        if "decoding" in given:  # flags are checked as flags: the error names --decoding
            parse_decoding(given["decoding"])
        if "batch_size" in given:
            given["batch_size"] = parse_batch_size(given["batch_size"])
        if "max_new_tokens" in given:
            given["max_new_tokens"] = parse_max_new_tokens(given["max_new_tokens"], "--max-new-tokens")
        cfg = EvalConfig.load(config, **given)
        if threads:
            import torch

            torch.set_num_threads(threads)
        m = evaluate(
            model, task=task, split=split, out_dir=out, progress=not quiet, data_dir=opt_path(data_dir),
            overwrite=overwrite, device=device, dtype=dtype, config=cfg,
        )
        _summary(m, out)

    @app.command("rescore")
    def rescore_cmd(
        eval_dir: Path = typer.Argument(..., metavar="DIR", help="An evaluation directory (predictions.jsonl, metrics.json), or a study's output_dir (every cell)."),
        task: Optional[str] = typer.Option(None, "--task", help="The task it was evaluated on (default: the one in its metrics.json)."),
        split: Optional[str] = typer.Option(None, "--split", help="The split (default: the one in its metrics.json)."),
        data_dir: Optional[Path] = DataDirOpt,
    ) -> None:
        """Grade stored outputs again with the current answer checker (no model, no decoding): one
        evaluation, or every cell of a study (its results.jsonl too)."""
        from .. import answers
        from ..errors import UserError
        from ..records import StudyLayout, read_metrics
        from ..score import rescore
        from ..tasks import get_task

        if StudyLayout(eval_dir).config.is_file():
            from ..study import rescore_study

            cells = rescore_study(eval_dir)
            changed = [c for c in cells if c["before"] != c["after"]]
            for c in changed:
                console.print(f"  {c['cell']}: {100 * (c['before'] or 0):.2f} % -> {100 * c['after']:.2f} %", markup=False)
            console.print(f"rescored {len(cells)} cells of {eval_dir} with answer checker {answers.VERSION}: "
                          f"{len(changed)} changed accuracy; results.jsonl rewritten", markup=False)
            return

        rec = read_metrics(eval_dir)
        old = rec.to_dict() if rec is not None else {}
        task = task or old.get("task")
        split = split or old.get("split") or "test"
        if not task:
            from ..paths import nearby

            if not eval_dir.exists():
                raise UserError(f"{eval_dir} does not exist: pass an evaluation directory or a study's output_dir")
            if not (eval_dir / "predictions.jsonl").exists():
                raise UserError(f"{eval_dir} is not an evaluation directory (no predictions.jsonl)"
                                f"{nearby(eval_dir, 'predictions.jsonl')}: pass one, or a study's output_dir")
            raise UserError(f"{eval_dir}: no metrics.json naming the task: pass --task (and --split)")
        examples = get_task(task, data_dir=opt_path(data_dir)).load(split)
        m = rescore(eval_dir, examples, keep_others=True)
        was = old.get("accuracy")
        console.print(f"rescored {m['n']} outputs with answer checker {answers.VERSION} (was {old.get('answer_checker', '?')}): "
                      f"accuracy {100 * m['accuracy']:.2f} %" + (f" (was {100 * was:.2f} %)" if was is not None else "")
                      + f", lenient {100 * m['accuracy_lenient']:.2f} %", markup=False)

    @app.command("compare")
    def compare_cmd(
        a: Path = typer.Argument(..., metavar="A", help="Evaluation A: its directory or metrics.json."),
        b: Path = typer.Argument(..., metavar="B", help="Evaluation B: its directory or metrics.json."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Paired comparison of two evaluations: accuracy difference, bootstrap CI, exact McNemar p."""
        from rich.table import Table

        from ..evaluate import compare

        r = compare(a, b)
        if as_json:
            print(json.dumps(r, indent=2))
            return
        t = Table(title=f"B − A on {r['n_shared']} shared items", show_header=False, title_justify="left")
        t.add_column(style="bold")
        t.add_column()
        t.add_row("A", f"{r['a']}: {100 * r['accuracy_a']:.2f} %")
        t.add_row("B", f"{r['b']}: {100 * r['accuracy_b']:.2f} %")
        t.add_row("difference", f"{100 * r['difference']:+.2f} points  (95 % paired bootstrap CI {100 * r['ci_low']:+.2f} – {100 * r['ci_high']:+.2f})")
        t.add_row("discordant", f"only A right {r['only_a_correct']}, only B right {r['only_b_correct']}")
        t.add_row("McNemar exact p", f"{r['mcnemar_p']:.4g}")
        if r["n_only_a"] or r["n_only_b"]:
            t.add_row("not shared", f"{r['n_only_a']} items only in A, {r['n_only_b']} only in B (ignored)")
        console.print(t)
