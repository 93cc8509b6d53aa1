"""``cotdistill train``: fine-tune a student on teacher traces."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ._common import console


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        traces: List[Path] = typer.Option(..., "--traces", help="Trace JSONL (or alpaca JSON) file; repeat to combine files."),
        student: str = typer.Option(..., "--student", help="Local path or hub name of a causal LM, a .gguf file, smollm2-135m, or scratch:<llama|gemma|bloom>-<xxs|xs|s|m>."),
        out: Path = typer.Option(..., "--out", help="Output model directory (created only when training finishes)."),
        config: Optional[Path] = typer.Option(None, "--config", help="YAML TrainConfig. Default: paper defaults, or the measured scratch defaults for scratch students."),
        max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Optimizer steps (overrides epochs)."),
        max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Token budget (prompt+completion tokens, no padding)."),
        epochs: Optional[float] = typer.Option(None, "--epochs", help="Passes over the traces (clears max_steps)."),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Effective batch size in examples."),
        micro_batch_size: Optional[int] = typer.Option(None, "--micro-batch-size", help="Examples per forward pass per device (gradient accumulation makes up the rest)."),
        lr: Optional[float] = typer.Option(None, "--learning-rate", "--lr", help="Peak learning rate (YAML key learning_rate)."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (init, data order)."),
        lora: Optional[bool] = typer.Option(None, "--lora/--full", help="LoRA (peft) instead of full fine-tuning."),
        save_steps: Optional[int] = typer.Option(None, "--save-steps", help="Checkpoint interval in steps."),
        threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads."),
        objective: Optional[str] = typer.Option(None, "--objective", help="sft (default), step-by-step, logit-kd, on-policy (these two need --teacher-model) or preference."),
        target: Optional[str] = typer.Option(None, "--target", help="What a reasoning teacher's trace teaches: response, or reasoning+response (<think> tags)."),
        teacher_model: Optional[str] = typer.Option(None, "--teacher-model", help="logit-kd / on-policy: local teacher model sharing the student's tokenizer."),
        kd_alpha: Optional[float] = typer.Option(None, "--kd-alpha", help="logit-kd: weight of the cross-entropy (1 - it weighs the KL to the teacher)."),
        kd_top_k: Optional[int] = typer.Option(None, "--kd-top-k", help="logit-kd: teacher tokens kept per position."),
        on_policy_lambda: Optional[float] = typer.Option(None, "--on-policy-lambda", help="on-policy: fraction of steps on student samples."),
        on_policy_beta: Optional[float] = typer.Option(None, "--on-policy-beta", help="on-policy: 0 forward KL, 1 reverse KL, between: generalized JSD."),
        on_policy_warmup: Optional[float] = typer.Option(None, "--on-policy-warmup", help="on-policy: fraction of steps of SFT on the traces before the student samples."),
        orpo_lambda: Optional[float] = typer.Option(None, "--orpo-lambda", help="preference: weight of ORPO's odds-ratio term."),
        teachers: Optional[str] = typer.Option(None, "--teachers", help="Keep the traces of these teachers (comma-separated)."),
        levels: Optional[str] = typer.Option(None, "--levels", help="Keep the traces of these levels, e.g. 3, 1-6, human."),
        formats: Optional[str] = typer.Option(None, "--formats", help="Keep the traces of these formats: cot, subq, rar, sym (or BSM, RaR, SYM)."),
        tasks: Optional[str] = typer.Option(None, "--tasks", help="Keep the traces of these tasks (comma-separated), e.g. svamp."),
        mix: bool = typer.Option(False, "--mix", help="Train on traces of several (teacher, level, format) cells at once (refused otherwise)."),
        report_to: Optional[str] = typer.Option(None, "--report-to", help="Trackers, comma-separated: tensorboard (written to OUT/tensorboard), wandb, mlflow, ..."),
        run_name: Optional[str] = typer.Option(None, "--run-name", help="Run name shown by the trackers."),
        push_to_hub: Optional[bool] = typer.Option(None, "--push-to-hub", help="Upload the finished model to the Hugging Face Hub."),
        hub_model_id: Optional[str] = typer.Option(None, "--hub-model-id", help="Hub repository id for --push-to-hub (user/name)."),
        resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from its last checkpoint (a finished one is kept)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output directory / interrupted run."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    ) -> None:
        """Fine-tune a student (hub / local / scratch) on teacher traces; completion-only loss."""
        from ..train import TrainConfig, train

        overrides = dict(
            max_steps=max_steps, max_tokens=max_tokens, epochs=epochs, batch_size=batch_size,
            micro_batch_size=micro_batch_size, learning_rate=lr, seed=seed, lora=lora,
            save_steps=save_steps, threads=threads, report_to=report_to, run_name=run_name,
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

            data = filter_cells(load_traces(data), teachers, levels, formats, tasks)
        res = train(data, student, out, cfg, resume=resume, progress=not quiet, overwrite=overwrite, mix=mix)
        s = res.summary
        if s.get("world_size", 1) > 1 and __import__("os").environ.get("RANK", "0") != "0":
            return
        console.print(
            f"[bold]trained[/] {student} -> {res.model_dir}  steps {res.steps}  tokens {res.train_tokens:,}  "
            f"final loss {res.final_loss:.4f}  {res.tokens_per_s:,.0f} tok/s  {res.wall_s:.1f} s  ({s.get('batching')})"
        )
