"""``cotdistill select``: choose the supervision for one student with a fraction of the grid's compute."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..select import SelectConfig  # (light: pydantic only) the flags' help comes from its fields
from ._common import DataDirOpt, console, err_console, field_option


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
        task: Optional[str] = field_option(SelectConfig, "task"),
        student: Optional[str] = field_option(SelectConfig, "student"),
        teachers: Optional[List[str]] = field_option(SelectConfig, "teachers", note="Comma-separated or repeated."),
        levels: Optional[List[str]] = field_option(SelectConfig, "levels", note="Comma-separated or repeated."),
        formats: Optional[List[str]] = field_option(SelectConfig, "formats", note="Comma-separated or repeated."),
        objectives: Optional[List[str]] = field_option(SelectConfig, "objectives", note="Comma-separated or repeated."),
        teacher_model: Optional[str] = typer.Option(None, "--teacher-model", help="logit-kd / on-policy: a local model sharing the student's tokenizer (train.teacher_model)."),
        budget: Optional[str] = field_option(SelectConfig, "budget", note="E.g. 3000000, 3M, 40% or 0.4."),
        out: Optional[Path] = typer.Option(None, "--out", help="Output directory (selection.json, summary.md, traces.jsonl)."),
        seed: Optional[int] = field_option(SelectConfig, "seed"),
        data_dir: Optional[Path] = DataDirOpt,
        task_option: Optional[List[str]] = typer.Option(None, "--task-option", help="Task option KEY=VALUE (repeatable), e.g. n_train=12800."),
        schedule: Optional[str] = field_option(SelectConfig, "schedule"),
        eta: Optional[float] = field_option(SelectConfig, "eta"),
        drop_z: Optional[float] = field_option(SelectConfig, "drop_z"),
        drop_min_gap: Optional[float] = field_option(SelectConfig, "drop_min_gap"),
        cooldown: Optional[str] = field_option(SelectConfig, "cooldown"),
        mode: Optional[str] = field_option(SelectConfig, "mode"),
        score: Optional[str] = field_option(SelectConfig, "score"),
        final: Optional[str] = field_option(SelectConfig, "final"),
        screen_batch: Optional[float] = field_option(SelectConfig, "screen_batch"),
        val_size: Optional[int] = field_option(SelectConfig, "val_size"),
        max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Steps of a full run (default: the student's training default)."),
        first_steps: Optional[int] = field_option(SelectConfig, "first_steps"),
        train_config: Optional[Path] = typer.Option(None, "--train-config", help="YAML of TrainConfig fields."),
        study: Optional[Path] = typer.Option(None, "--study", help="Take task, teachers, levels, formats and training settings from a study directory; output in STUDY/select/."),
        threads: Optional[int] = field_option(SelectConfig, "threads"),
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
