"""Training one model on several devices: named ``accelerate launch`` presets.

``cotdistill train --distributed ddp --nproc 4`` (or a study cell with ``gpus_per_cell: 4``) writes an
accelerate config for the preset and starts ``accelerate launch`` over the same ``cotdistill train``
command; each process then trains its shard of every batch (the effective batch is unchanged:
``micro_batch_size`` x processes x gradient accumulation). On a machine without GPUs the processes
use the CPU and the gloo backend (``ddp`` only: accelerate shards a model, FSDP or DeepSpeed, on
accelerators alone, so those presets are refused there rather than run as plain replicas).

Presets:
  ddp              data parallel, one full replica per process
  fsdp             fully sharded data parallel (FSDP2, layers wrapped by the model's own block class; GPUs)
  deepspeed-zero2  DeepSpeed ZeRO stage 2 (optimizer states and gradients sharded; GPUs, needs `deepspeed`)
  deepspeed-zero3  DeepSpeed ZeRO stage 3 (parameters sharded too; 16-bit weights gathered on save)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError, opt

PRESETS = ("ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3")
LAUNCHED_ENV = "COTDISTILL_LAUNCHED"  # set in the processes accelerate starts: they train, not relaunch
PRESET_ENV = "COTDISTILL_DISTRIBUTED"  # the preset those processes train with


def check_preset(preset: str) -> str:
    p = str(preset).strip().lower()
    if p not in PRESETS:
        import difflib

        close = difflib.get_close_matches(p, PRESETS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UserError(f"{opt('distributed')} {preset!r}: {hint}use one of {', '.join(PRESETS)}")
    return p


def _gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no CUDA build
        return 0


def accelerate_config(preset: str, nproc: int, cpu: bool | None = None) -> dict[str, Any]:
    """The accelerate config (the YAML ``accelerate config`` writes) for a preset on ``nproc``
    processes of this machine. ``cpu``: processes on the CPU with gloo (default: when no GPU)."""
    preset = check_preset(preset)
    if nproc < 1:
        raise UserError(f"{opt('nproc')} {nproc}: use 1 or more processes")
    cpu = _gpus() == 0 if cpu is None else cpu
    if cpu and preset != "ddp":
        # accelerate shards (FSDP) and runs DeepSpeed only on accelerators; on a CPU it would quietly replicate
        raise UserError(f"{opt('distributed')} {preset} needs GPUs (accelerate shards a model only on accelerators); "
                        "on a CPU use ddp")
    # accelerate's own CPU mode starts one process (several need MPI): its torchrun launcher is used on a CPU
    # too, and the processes, finding no GPU, train on the CPU with the gloo backend
    base: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE", "num_machines": 1, "machine_rank": 0, "num_processes": nproc,
        "main_training_function": "main", "rdzv_backend": "static", "same_network": True, "use_cpu": False,
        "mixed_precision": "no",  # the trainer's own precision setting decides (TrainConfig.precision)
        "debug": False,
    }
    if not cpu:
        base["gpu_ids"] = "all"
    if preset == "ddp":
        base["distributed_type"] = "MULTI_GPU"
    elif preset == "fsdp":
        base["distributed_type"] = "FSDP"
        base["fsdp_config"] = {
            "fsdp_version": 2, "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_reshard_after_forward": True, "fsdp_state_dict_type": "FULL_STATE_DICT",
            "fsdp_offload_params": False, "fsdp_cpu_ram_efficient_loading": True,
            "fsdp_activation_checkpointing": False,
        }
    else:
        stage = 2 if preset.endswith("2") else 3
        base["distributed_type"] = "DEEPSPEED"
        base["deepspeed_config"] = {
            "zero_stage": stage, "offload_optimizer_device": "none", "offload_param_device": "none",
            "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
            **({"zero3_init_flag": True, "zero3_save_16bit_model": True} if stage == 3 else {}),
        }
    return base


def write_accelerate_config(preset: str, nproc: int, path: str | os.PathLike, cpu: bool | None = None) -> Path:
    text = yaml.safe_dump(accelerate_config(preset, nproc, cpu), sort_keys=True)  # errors before anything is made
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    return p


def launched() -> bool:
    """Inside a process that a launcher started (accelerate, torchrun): train, do not launch again."""
    return bool(os.environ.get(LAUNCHED_ENV)) or int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def launch_command(preset: str, nproc: int, config_file: str | os.PathLike, args: list[str]) -> list[str]:
    """``accelerate launch`` over ``python -m cotdistill ARGS`` with the preset's config."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file),
            "--num_processes", str(nproc), "-m", "cotdistill", *args]


def launch(preset: str, nproc: int, args: list[str], workdir: str | os.PathLike, cpu: bool | None = None,
           env: dict[str, str] | None = None) -> int:
    """Run ``cotdistill ARGS`` on ``nproc`` processes under the preset; returns the exit code."""
    cfg = write_accelerate_config(preset, nproc, Path(workdir) / f"accelerate-{preset}.yaml", cpu)
    e = {**os.environ, **(env or {}), LAUNCHED_ENV: "1", PRESET_ENV: preset}
    return subprocess.run(launch_command(preset, nproc, cfg, args), env=e).returncode


def deepspeed_config(stage: int) -> dict[str, Any]:
    """A DeepSpeed ZeRO config whose batch, precision and optimizer values the Trainer fills in."""
    zero: dict[str, Any] = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True}
    if stage == 3:
        zero.update({"stage3_gather_16bit_weights_on_model_save": True, "stage3_prefetch_bucket_size": "auto",
                     "stage3_param_persistence_threshold": "auto", "reduce_bucket_size": "auto"})
    return {"train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto",
            "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
            "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"}, "zero_optimization": zero}


def trainer_args(model: Any = None, preset: str | None = None) -> dict[str, Any]:
    """The TrainingArguments that make the Trainer shard as the preset says (``{}`` for ddp or no
    preset): FSDP2 wrapping the model's own blocks, or a ZeRO config."""
    preset = preset or os.environ.get(PRESET_ENV)
    if not preset or preset == "ddp":
        return {}
    if preset == "fsdp":
        blocks = list(getattr(model, "_no_split_modules", None) or [])
        cfg: dict[str, Any] = {"version": 2, "state_dict_type": "FULL_STATE_DICT", "reshard_after_forward": True}
        if blocks:
            cfg["transformer_layer_cls_to_wrap"] = blocks
        return {"fsdp": "full_shard auto_wrap", "fsdp_config": cfg}
    return {"deepspeed": deepspeed_config(2 if preset.endswith("2") else 3)}
