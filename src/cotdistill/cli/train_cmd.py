"""``cotdistill train``: fine-tune a student on teacher traces."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..train import TrainConfig  # (light: pydantic only) the flags' help comes from its fields
from ._common import console, field_option


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        traces: List[Path] = typer.Option(..., "--traces", metavar="FILE", help="Trace JSONL (or alpaca JSON) file; repeat to combine files."),
        student: str = typer.Option(..., "--student", help="Local path or hub name of a causal LM, a .gguf file, smollm2-135m, or scratch:<llama|gemma|bloom>-<xxs|xs|s|m>."),
        out: Path = typer.Option(..., "--out", help="Output model directory (created only when training finishes)."),
        config: Optional[Path] = typer.Option(None, "--config", help="YAML TrainConfig (keys: the flags' config names). Default: paper defaults, or the measured scratch defaults for scratch students."),
        max_steps: Optional[int] = field_option(TrainConfig, "max_steps"),
        max_tokens: Optional[int] = field_option(TrainConfig, "max_tokens"),
        epochs: Optional[float] = field_option(TrainConfig, "epochs", note="On the command line it also clears max_steps."),
        batch_size: Optional[int] = field_option(TrainConfig, "batch_size"),
        micro_batch_size: Optional[int] = field_option(TrainConfig, "micro_batch_size"),
        lr: Optional[float] = field_option(TrainConfig, "learning_rate", "--learning-rate", "--lr"),
        seed: Optional[int] = field_option(TrainConfig, "seed"),
        lora: Optional[bool] = field_option(TrainConfig, "lora", "--lora/--full"),
        cutoff_len: Optional[int] = field_option(TrainConfig, "cutoff_len"),
        overlong: Optional[str] = field_option(TrainConfig, "overlong"),
        save_steps: Optional[int] = field_option(TrainConfig, "save_steps"),
        threads: Optional[int] = field_option(TrainConfig, "threads"),
        objective: Optional[str] = field_option(TrainConfig, "objective"),
        target: Optional[str] = field_option(TrainConfig, "target"),
        teacher_model: Optional[str] = field_option(TrainConfig, "teacher_model"),
        kd_alpha: Optional[float] = field_option(TrainConfig, "kd_alpha"),
        kd_top_k: Optional[int] = field_option(TrainConfig, "kd_top_k"),
        on_policy_lambda: Optional[float] = field_option(TrainConfig, "on_policy_lambda"),
        on_policy_beta: Optional[float] = field_option(TrainConfig, "on_policy_beta"),
        on_policy_warmup: Optional[float] = field_option(TrainConfig, "on_policy_warmup"),
        orpo_lambda: Optional[float] = field_option(TrainConfig, "orpo_lambda"),
        teachers: Optional[str] = typer.Option(None, "--teachers", help="Keep the traces of these teachers (comma-separated)."),
        levels: Optional[str] = typer.Option(None, "--levels", help="Keep the traces of these levels, e.g. 3, 1-6, human."),
        formats: Optional[str] = typer.Option(None, "--formats", help="Keep the traces of these formats: cot, subq, rar, sym (or BSM, RaR, SYM)."),
        tasks: Optional[str] = typer.Option(None, "--tasks", help="Keep the traces of these tasks (comma-separated), e.g. svamp."),
        mix: bool = typer.Option(False, "--mix", help="Train on traces of several (teacher, level, format) cells at once (refused otherwise)."),
        report_to: Optional[str] = field_option(TrainConfig, "report_to", note="Comma-separated."),
        run_name: Optional[str] = field_option(TrainConfig, "run_name"),
        push_to_hub: Optional[bool] = field_option(TrainConfig, "push_to_hub"),
        hub_model_id: Optional[str] = field_option(TrainConfig, "hub_model_id"),
        resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from its last checkpoint (a finished one is kept)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output directory / interrupted run."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
        distributed: Optional[str] = typer.Option(None, "--distributed", help="Train on several processes through `accelerate launch` with a preset: ddp, fsdp, deepspeed-zero2, deepspeed-zero3 (on a CPU: ddp and fsdp with gloo)."),
        nproc: Optional[int] = typer.Option(None, "--nproc", help="Processes for --distributed (default: the GPUs of this machine, else 2)."),
    ) -> None:
        """Fine-tune a student (hub / local / scratch) on teacher traces; completion-only loss.

        Settings come from --config (a YAML TrainConfig), then the flags; the defaults shown are the
        paper's, except for scratch students, which use configs/train_scratch.yaml."""
        from ..train import train

        if distributed or nproc:
            import sys

            from .. import distributed as dist

            if not dist.launched():
                preset = dist.check_preset(distributed or "ddp")
                n = nproc or dist._gpus() or 2
                args = _without_launch_flags(sys.argv[1:])
                out.parent.mkdir(parents=True, exist_ok=True) if out.parent != Path("") else None
                rc = dist.launch(preset, n, args, workdir=Path(f"{out}.launch"))
                raise typer.Exit(rc)
        overrides = dict(
            max_steps=max_steps, max_tokens=max_tokens, epochs=epochs, batch_size=batch_size,
            micro_batch_size=micro_batch_size, learning_rate=lr, seed=seed, lora=lora,
            save_steps=save_steps, cutoff_len=cutoff_len, overlong=overlong, threads=threads, report_to=report_to, run_name=run_name,
            push_to_hub=push_to_hub, hub_model_id=hub_model_id, objective=objective, target=target,
            teacher_model=teacher_model, kd_alpha=kd_alpha, kd_top_k=kd_top_k, on_policy_lambda=on_policy_lambda,
            on_policy_beta=on_policy_beta, on_policy_warmup=on_policy_warmup, orpo_lambda=orpo_lambda,
        )
        base = TrainConfig.from_yaml(config, **overrides) if config else TrainConfig.for_student(student)
        if epochs is not None and max_steps is None:
            data = base.model_dump()
            data["max_steps"] = None
            base = TrainConfig.validated(data)
        cfg = base.with_overrides(**overrides)
        data = [str(t) for t in traces]
        if teachers or levels or formats or tasks:
            from ..train import load_traces
            from ._common import filter_cells

            data = filter_cells(lambda: load_traces(data), teachers, levels, formats, tasks)
        res = train(data, student, out, cfg, resume=resume, progress=not quiet, overwrite=overwrite, mix=mix)
        s = res.summary
        if s.get("world_size", 1) > 1 and __import__("os").environ.get("RANK", "0") != "0":
            return
        console.print(
            f"[bold]trained[/] {student} -> {res.model_dir}  steps {res.steps}  tokens {res.train_tokens:,}  "
            f"final loss {res.final_loss:.4f}  {res.tokens_per_s:,.0f} tok/s  {res.wall_s:.1f} s  ({s.get('batching')})"
        )


def _without_launch_flags(argv: list[str]) -> list[str]:
    """The ``train`` command line without --distributed / --nproc (what each launched process runs)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--distributed", "--nproc"):
            skip = True
            continue
        if a.startswith(("--distributed=", "--nproc=")):
            continue
        out.append(a)
    return out
