"""``cotdistill select``: choose the supervision for one student with a fraction of the grid's compute."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ._common import console, err_console


def _split(values: Optional[List[str]]) -> Optional[list[str]]:
    if not values:
        return None
    out: list[str] = []
    for v in values:
        out += [x.strip() for x in v.split(",") if x.strip()]
    return out


def _level(x: str):
    return int(x) if x.strip().isdigit() else x.strip()


def _budget(text: Optional[str]) -> Optional[float]:
    from ..errors import UserError

    if text is None:
        return None
    t = text.strip().lower().replace("_", "").replace(",", "")
    try:
        if t.endswith("%"):
            v = float(t[:-1]) / 100
            if not 0 < v <= 1:
                raise ValueError
            return v
        mult = {"k": 1e3, "m": 1e6, "g": 1e9}.get(t[-1:], 1)
        v = float(t[:-1] if mult != 1 else t) * mult
        if v <= 0:
            raise ValueError
        return v
    except ValueError:
        raise UserError(f"--budget {text!r}: give training tokens (e.g. 3000000 or 3M) or a share of the grid "
                        "(e.g. 40% or 0.4)") from None


def _task_options(items: Optional[List[str]]) -> dict:
    from ..errors import UserError

    out = {}
    for it in items or []:
        k, sep, v = it.partition("=")
        if not sep or not k.strip():
            raise UserError(f"--task-option {it!r}: write KEY=VALUE, e.g. --task-option n_train=12800")
        out[k.strip()] = int(v) if v.strip().lstrip("-").isdigit() else v.strip()
    return out


def register(app: typer.Typer) -> None:
    @app.command("select")
    def select_cmd(
        task: Optional[str] = typer.Option(None, "--task", help="Task name (e.g. arith)."),
        student: Optional[str] = typer.Option(None, "--student", help="Student: HF path/name or scratch:<family>-<size>."),
        teachers: Optional[List[str]] = typer.Option(None, "--teachers", help="Teacher specs, comma-separated or repeated; union:a+b for a union."),
        levels: Optional[List[str]] = typer.Option(None, "--levels", help="Levels: 0..6, human, mix:A-B, mix:difficulty, curriculum:A-B (comma-separated)."),
        formats: Optional[List[str]] = typer.Option(None, "--formats", help="Formats among cot, subq, rar, sym (comma-separated)."),
        objectives: Optional[List[str]] = typer.Option(None, "--objectives", help="Training objectives crossed with the candidates: sft (default), step-by-step, logit-kd, on-policy, preference (comma-separated)."),
        teacher_model: Optional[str] = typer.Option(None, "--teacher-model", help="logit-kd / on-policy: a local model sharing the student's tokenizer (train.teacher_model)."),
        budget: Optional[str] = typer.Option(None, "--budget", help="Training tokens (3000000, 3M) or a share of the full grid (40%, 0.4). Default 40%."),
        out: Optional[Path] = typer.Option(None, "--out", help="Output directory (selection.json, summary.md, traces.jsonl)."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Training seed and validation carve (default 0)."),
        data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Benchmark data directory."),
        task_option: Optional[List[str]] = typer.Option(None, "--task-option", help="Task option KEY=VALUE (repeatable), e.g. n_train=12800."),
        schedule: Optional[str] = typer.Option(None, "--schedule", help="race (default: drop only candidates clearly worse than the leader, checkpoints at 10/20/40 % of the run until the budget is spent), rejects (drop the worst each round) or halving (keep the best 1/eta)."),
        eta: Optional[float] = typer.Option(None, "--eta", help="halving: keep the best 1/eta each round (default 2)."),
        drop_z: Optional[float] = typer.Option(None, "--drop-z", help="Drop a candidate this many paired standard errors below the leader (default 2.58) ..."),
        drop_min_gap: Optional[float] = typer.Option(None, "--drop-min-gap", help="... and at least this far below it (default 0.05 = 5 accuracy points)."),
        cooldown: Optional[str] = typer.Option(None, "--cooldown", help="every (default: each round ends with a linear learning-rate decay, scores compare decayed models) or last (warmup-stable-decay: constant rate until the last round)."),
        mode: Optional[str] = typer.Option(None, "--mode", help="continue (survivors continue from their checkpoint, WSD schedule) or retrain."),
        score: Optional[str] = typer.Option(None, "--score", help="soft (default: the gold answer's probability after the student's own rationale), hybrid (1 per right answer, else that probability) or accuracy."),
        final: Optional[str] = typer.Option(None, "--final", help="trend (default: among candidates the leader is not separated from, the best forecast for the full run from the last two checkpoints) or leader (the best last score). Decides only: a rerun with the other rule reuses every round."),
        screen_batch: Optional[float] = typer.Option(None, "--screen-batch", help="Batch while screening: a share of the training batch (0.25) or examples (8); the same tokens buy more steps, lr scaled by sqrt. Default 1 (the training batch)."),
        val_size: Optional[int] = typer.Option(None, "--val-size", help="Validation items carved from the training split (default 200)."),
        max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Steps of a full run (default: the student's training default)."),
        first_steps: Optional[int] = typer.Option(None, "--first-steps", help="Steps of the first round, in screening steps (default: race 10 % of the run; rejects/halving solved from the budget)."),
        train_config: Optional[Path] = typer.Option(None, "--train-config", help="YAML of TrainConfig fields."),
        study: Optional[Path] = typer.Option(None, "--study", help="Take task, teachers, levels, formats and training settings from a study directory; output in STUDY/select/."),
        threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads."),
        config: Optional[Path] = typer.Option(None, "--config", help="YAML with SelectConfig fields (flags override it)."),
    ) -> None:
        """Choose the best supervision for one student with a fraction of the grid's compute (racing on a validation split carved from train)."""
        from ..errors import UserError
        from ..fileio import load_yaml_mapping
        from ..select import _validated, config_from_study, run_select, summary_markdown

        train = {}
        if train_config is not None:
            from ..train import TrainConfig

            train = TrainConfig.from_yaml(train_config).model_dump(exclude_unset=True)
        if max_steps is not None:
            train["max_steps"] = max_steps
        if teacher_model is not None:
            train["teacher_model"] = teacher_model
        flags = {
            "task": task, "student": student, "teachers": _split(teachers),
            "levels": [_level(x) for x in _split(levels)] if levels else None, "formats": _split(formats),
            "objectives": _split(objectives),
            "budget": _budget(budget), "out": str(out) if out else None, "seed": seed,
            "data_dir": str(data_dir) if data_dir else None, "schedule": schedule, "eta": eta, "drop_z": drop_z, "drop_min_gap": drop_min_gap, "cooldown": cooldown, "mode": mode, "score": score, "screen_batch": screen_batch, "final": final,
            "val_size": val_size, "first_steps": first_steps, "threads": threads,
            "task_options": _task_options(task_option) or None,
        }
        if study is not None:
            over = {k: v for k, v in flags.items() if k not in ("task", "student", "seed") and v is not None}
            if train:
                over["train"] = train
            cfg = config_from_study(study, student=student, seed=seed, task=task, **over)
        else:
            data = {}
            if config is not None:
                data = load_yaml_mapping(config, "SelectConfig fields")
            data.update({k: v for k, v in flags.items() if v is not None})
            if train:
                data["train"] = {**data.get("train", {}), **train}
            for need, flag in (("task", "--task"), ("student", "--student"), ("out", "--out")):
                if not data.get(need):
                    raise UserError(f"select: give {flag} (or --study DIR / --config FILE)")
            cfg = _validated(data, source=str(config) if config else "select")
        res = run_select(cfg, progress=True, console=err_console)
        console.print(summary_markdown(res))
        how = ""
        obj = res["winner"].get("objective", "sft")
        if obj != "sft":
            how = f" --objective {obj}"
            tm = (res["config"].get("train") or {}).get("teacher_model")
            if tm and obj in ("logit-kd", "on-policy"):
                how += f" --teacher-model {tm}"
        console.print(f"wrote {Path(cfg.out) / 'selection.json'}, summary.md and traces.jsonl "
                      f"(train the winner: cotdistill train --traces {Path(cfg.out) / 'traces.jsonl'}{how} ...)")
