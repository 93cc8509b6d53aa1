"""Student training: supervised fine-tuning on teacher traces (transformers Trainer + PEFT).

    from cotdistill.train import TrainConfig, train, is_complete
    res = train(["traces.jsonl"], "scratch:llama-xs", "runs/a/model",
                TrainConfig.scratch(max_steps=400, batch_size=32))
    res.train_tokens, res.wall_s, res.final_loss

What one run does:

* student: a local path / hub name of any causal LM, a ``.gguf`` file (dequantized on load), a
  short name such as ``smollm2-135m``, or ``scratch:<family>-<size>`` (a fresh
  llama / gemma / bloom model with a character tokenizer built from the training texts);
* text: ``template.render_prompt(question)`` + ``template.render_completion(output)`` + EOS, with
  the loss on the completion and EOS only (prompt and padding labels are -100). The template is
  the tokenizer's chat template when it has one, else ``"Question: …\\nAnswer:"``, and is stored
  with the model as ``cotdistill_template.json`` for evaluation;
* batching: each micro-batch is packed into fixed-length rows with a 4-D block-diagonal causal
  mask (verified on the model; padded length-grouped batches where the architecture rejects it);
* optimisation: the Hugging Face ``Trainer`` (AdamW, schedule, clipping, bf16 autocast,
  gradient accumulation, DDP / DeepSpeed / FSDP through accelerate, checkpoints and exact resume);
* output: ``out_dir`` is created by renaming a finished staging directory, so it exists only when
  complete (``COMPLETE`` marker inside). Checkpoints live in ``<out_dir>.partial/`` until the end.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .artifacts import COMPLETE, RunRecord, is_complete, mark_complete  # noqa: F401  (COMPLETE, is_complete re-exported)
from .fileio import atomic_path, atomic_write_text, load_yaml_mapping, replace_dir, usual_modes
from .errors import Interrupted, UserError, field_error, opt, switch, validation_error
from .progress import Progress
from .spec import OBJECTIVES, TEACHER_MODEL_OBJECTIVES, Objective, SectionAccess  # noqa: F401  (re-exported)
from .template import NAMED_TEMPLATES, PromptTemplate
from .traces import Trace, composition, require_one_cell

SUMMARY = "train_summary.json"
CONFIG_FILE = "train_config.json"
METRICS = "metrics.jsonl"
LOSS_PNG = "loss.png"
PROGRESS_FILE = "progress.json"  # in <out>.partial/ while training runs
# experiment trackers of report_to: the package each needs and the extra that installs it
TRACKERS = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow")}
CONFIG_DIR = Path(__file__).parent / "configs"

# dense bf16 peak (FLOP/s) of accelerators we know, for MFU; CPU peaks are machine-specific
# and are given in the config (``peak_tflops``).
_KNOWN_PEAKS_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12}


# ------------------------------------------------------------------------------------------
# config
# ------------------------------------------------------------------------------------------
class LoraSettings(BaseModel):
    """LoRA via PEFT. The merged model is saved (loadable without peft); the adapter in ``adapter/``."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"




class TrainConfig(SectionAccess):  # (a pydantic model)
    """Training hyper-parameters. Defaults reproduce the paper (arXiv 2502.18001): full
    fine-tuning, AdamW, lr 5e-5, 3 epochs, cosine, no warmup, effective batch 64, cutoff 4096,
    seed 100, grad-norm clip 1.0. ``TrainConfig.scratch()`` gives the measured defaults for
    scratch students on CPU (``configs/train_scratch.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    # optimisation
    learning_rate: float = Field(5e-5, gt=0, description="peak learning rate")
    epochs: float = Field(3.0, gt=0, description="passes over the traces (ignored when max_steps/max_tokens is set)")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; overrides epochs")
    max_tokens: int | None = Field(None, ge=1, description="token budget (prompt+completion, no padding); converted to steps from the mean example length")
    batch_size: int = Field(64, ge=1, description="effective batch in examples per optimizer step (all devices, all accumulation steps)")
    micro_batch_size: int | None = Field(None, ge=1, description="examples per forward pass per device; default: batch_size / devices (no accumulation)")
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field("cosine", description="learning-rate schedule after warmup")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="cosine floor as a fraction of the peak lr")
    warmup_steps: int = Field(0, ge=0, description="linear warmup steps from 0 to the peak learning rate")
    weight_decay: float = Field(0.0, ge=0, description="AdamW decoupled weight decay")
    adam_beta1: float = Field(0.9, ge=0, lt=1, description="AdamW beta1")
    adam_beta2: float = Field(0.999, ge=0, lt=1, description="AdamW beta2")
    adam_epsilon: float = Field(1e-8, gt=0, description="AdamW epsilon")
    max_grad_norm: float = Field(1.0, ge=0, description="gradient-norm clipping threshold (0: no clipping)")
    optim: Literal["adamw_torch_fused", "adamw_torch"] = Field("adamw_torch_fused", description="AdamW implementation (transformers' names); fused is one kernel over all parameters, also on CPU")
    seed: int = Field(100, description="random seed (initialisation, data order, dropout)")
    # data
    cutoff_len: int = Field(4096, ge=8, description="longest example in tokens (prompt + completion + EOS); see overlong")
    overlong: Literal["drop", "truncate"] = Field("drop", description="an example longer than cutoff_len: drop it (counted in the summary), or truncate the middle of its completion keeping the final answer and EOS")
    objective: Objective = Field("sft", description="sft: learn the rationale and answer; step-by-step (Hsieh et al. 2023): two prefixed tasks, '[label] ' -> 'The answer is X.' and '[rationale] ' -> the rationale, equally weighted; the model answers the '[label] ' task at test time, without writing a rationale; logit-kd: CE on the traces plus KL to a teacher model's stored top-k token distribution; on-policy: the student samples, a teacher model scores every token (generalized JSD, as GKD); preference: ORPO with the teacher's trace preferred over the student's own wrong sample, sampled afresh at every step")
    teacher_model: str | None = Field(None, description="logit-kd / on-policy: a local teacher model (directory, .gguf or short name) that shares the student's tokenizer")
    kd_alpha: float = Field(0.5, ge=0, le=1, description="logit-kd: weight of the cross-entropy on the traces; 1 - kd_alpha weighs the KL to the teacher")
    kd_top_k: int = Field(20, ge=1, description="logit-kd: teacher tokens kept per position (renormalised)")
    kd_temperature: float = Field(1.0, gt=0, description="logit-kd / on-policy: softmax temperature of both distributions")
    kd_cache: str | None = Field(None, description="logit-kd: directory of the stored teacher top-k tables (default: beside the first trace file, else the run directory)")
    on_policy_lambda: float = Field(0.5, ge=0, le=1, description="on-policy: fraction of steps whose completions the student samples (the rest use the traces), GKD's lambda")
    on_policy_warmup: float = Field(0.0, ge=0, lt=1, description="on-policy: fraction of the steps trained by plain SFT on the traces before sampling starts (GKD assumes a student that already writes sensible samples; a scratch student needs a warm start)")
    on_policy_beta: float = Field(0.5, ge=0, le=1, description="on-policy: generalized JSD interpolation: 0 = forward KL(teacher||student), 1 = reverse KL(student||teacher)")
    on_policy_max_new_tokens: int | None = Field(None, ge=1, description="on-policy / preference: sampling cap (default 1.5 x the longest training completion + 16)")
    orpo_lambda: float = Field(0.1, ge=0, description="preference: weight of ORPO's odds-ratio term (chosen = the teacher's trace, rejected = the student's own wrong sample) next to the NLL of the chosen")
    target: Literal["response", "reasoning+response"] = Field("response", description="what the student learns from a reasoning teacher's trace: the final response only, or its reasoning in <think> tags followed by the response")
    template: Literal["auto", "plain", "qa", "alpaca", "chat"] = Field("auto", description="auto: the tokenizer's chat template when it has one, else plain 'Question: …\\nAnswer:'")
    packing: Literal["auto", "on", "off"] = Field("auto", description="auto: pack when the model reproduces unpacked logits with a 4-D mask, else length-grouped padding")
    pack_length: int = Field(4096, ge=8, description="row length for packing (a longer example gets its own row)")
    # precision / hardware
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="mixed-precision autocast; auto = bf16 where the device supports it")
    model_dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="dtype of the loaded weights (pretrained students)")
    attn_implementation: str | None = Field(None, description="e.g. sdpa, eager, flash_attention_2; default: the model's")
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass (less memory, about a third more compute)")
    lm_head: Literal["targets", "all"] = Field("targets", description="targets: compute the LM head only where the loss is taken (checked against the model's own loss; all otherwise)")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's)")
    peak_tflops: float | None = Field(None, gt=0, description="device peak TFLOP/s for MFU (known GPUs are detected)")
    # LoRA
    lora: LoraSettings = Field(LoraSettings(), description="LoRA (peft) instead of full fine-tuning: enabled, r, alpha, dropout, target_modules")
    # checkpoints / logging
    save_steps: int = Field(200, ge=1, description="checkpoint interval (optimizer steps)")
    save_total_limit: int = Field(2, ge=1, description="checkpoints kept while training (the oldest are deleted)")
    keep_checkpoints: bool = Field(False, description="keep <out>.partial/checkpoints after success")
    logging_steps: int = Field(10, ge=1, description="log loss, learning rate and tokens/s every this many optimizer steps")
    report_to: list[str] = Field(default_factory=list, description="experiment trackers, as transformers names them: tensorboard (written to <out>/tensorboard), wandb, mlflow, ...; empty = none")
    run_name: str | None = Field(None, description="run name shown by the trackers")
    # publishing
    push_to_hub: bool = Field(False, description="upload the finished model directory to the Hugging Face Hub (needs hub_model_id and a token)")
    hub_model_id: str | None = Field(None, description="hub repository id for push_to_hub, e.g. user/smollm2-svamp-l3")
    hub_private_repo: bool = Field(True, description="create the hub repository as private")
    # scale-out (passed through to transformers.TrainingArguments)
    deepspeed: str | None = Field(None, description="DeepSpeed JSON config path (ZeRO)")
    fsdp: str | None = Field(None, description="FSDP option string, e.g. 'full_shard auto_wrap'")
    fsdp_config: str | None = Field(None, description="FSDP config JSON path")

    @model_validator(mode="before")
    @classmethod
    def _old_spellings(cls, data):
        """``lr`` (the CLI's short flag) is accepted for ``learning_rate``."""
        if isinstance(data, dict) and "lr" in data and "learning_rate" not in data:
            data = dict(data)
            data["learning_rate"] = data.pop("lr")
        return data

    @model_validator(mode="after")
    def _teacher_needed(self):
        if self.objective in TEACHER_MODEL_OBJECTIVES and not self.teacher_model:
            raise ValueError(f"objective {self.objective} needs {opt('teacher_model')}: a local model sharing the "
                             "student's tokenizer (e.g. a scratch teacher trained first with cotdistill train)")
        return self

    @field_validator("report_to", mode="before")
    @classmethod
    def _report_to(cls, v):
        if v is None:
            return []
        if isinstance(v, str):
            v = [x.strip() for x in v.split(",")]
        v = [x for x in v if x and x != "none"]
        import importlib.util

        for tracker in v:  # checked when the config is read, before any directory is made
            module, extra = TRACKERS.get(tracker, (None, None))
            if module and importlib.util.find_spec(module) is None:
                raise ValueError(f"{tracker} needs the {module} package: pip install 'cotdistill[{extra}]'")
        return v

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | os.PathLike, **overrides: Any) -> "TrainConfig":
        """Load a YAML config, with ``overrides`` (command-line flags; None = not given) applied
        before it is validated, so a rule across fields sees both (``objective: logit-kd`` in the
        file, ``--teacher-model`` on the command line). Unknown keys or wrong types raise a
        one-line UserError."""
        data = load_yaml_mapping(path)
        given = {k: v for k, v in overrides.items() if v is not None}
        if "lr" in data and "learning_rate" not in data:
            data["learning_rate"] = data.pop("lr")  # (the short spelling, before a flag replaces it)
        for k, v in given.items():
            if k == "lora" and isinstance(v, bool):
                lo = data.get("lora")
                data["lora"] = {**(lo if isinstance(lo, dict) else {}), "enabled": v}
            else:
                data[k] = v
        return cls.validated(data, source=f"{path} (with the command-line options)" if given else str(path))

    @classmethod
    def validated(cls, data: dict[str, Any], source: str = "config") -> "TrainConfig":
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise validation_error(e, source, cls) from None

    @classmethod
    def default(cls, **overrides: Any) -> "TrainConfig":
        """The paper's defaults (``configs/train_default.yaml``) with overrides (None clears a value)."""
        return cls._from_packaged("train_default.yaml", overrides)

    @classmethod
    def scratch(cls, **overrides: Any) -> "TrainConfig":
        """Measured defaults for scratch students on CPU (``configs/train_scratch.yaml``)."""
        return cls._from_packaged("train_scratch.yaml", overrides)

    @classmethod
    def for_student(cls, student: str, **overrides: Any) -> "TrainConfig":
        return cls.scratch(**overrides) if student.startswith("scratch:") else cls.default(**overrides)

    @classmethod
    def _from_packaged(cls, name: str, overrides: dict[str, Any]) -> "TrainConfig":
        base = yaml.safe_load((CONFIG_DIR / name).read_text()) or {}
        base.update(overrides)  # an explicit None clears a packaged value (e.g. max_steps: null)
        return cls.validated(base, source=name)

    def with_overrides(self, **overrides: Any) -> "TrainConfig":
        data = self.model_dump()
        for k, v in overrides.items():
            if v is None:
                continue
            if k == "lora" and isinstance(v, bool):
                data["lora"]["enabled"] = v
            else:
                data[k] = v
        return self.validated(data, source="training options")


class OtherRunError(UserError):
    """``resume`` found an interrupted run of other settings (or of an older version of this
    code) in ``<out>.partial``."""


@dataclass
class TrainResult:
    model_dir: Path
    train_tokens: int
    completion_tokens: int
    steps: int
    wall_s: float
    final_loss: float | None
    tokens_per_s: float
    summary: dict[str, Any] = field(default_factory=dict)


def load_result(out_dir: str | os.PathLike) -> TrainResult:
    """The TrainResult of a finished run directory."""
    out = Path(out_dir)
    if not is_complete(out):
        raise UserError(f"{out} is not a finished training run (no {COMPLETE} marker): train it first")
    s = json.loads((out / SUMMARY).read_text())
    return TrainResult(
        model_dir=out,
        train_tokens=s["train_tokens"],
        completion_tokens=s["completion_tokens"],
        steps=s["steps"],
        wall_s=s["wall_s"],
        final_loss=s["final_loss"],
        tokens_per_s=s["tokens_per_s"],
        summary=s,
    )


# ------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------
def _alpaca_to_traces(rows: list[Any], path: Path) -> list[Trace]:
    out = []
    for i, r in enumerate(rows):
        if not isinstance(r, dict) or "instruction" not in r or "output" not in r:
            raise UserError(f"{path}: item {i} is not a trace nor an alpaca record with instruction/output")
        q = r["instruction"] + (("\n" + r["input"]) if r.get("input") else "")
        out.append(Trace(id=str(i), task="unknown", question=q, gold="", teacher="unknown", level=0,
                         output=str(r["output"]), source=path.name))
    return out


def load_traces(items: Sequence[Trace | str | os.PathLike]) -> list[Trace]:
    """Traces from Trace objects and/or files (trace JSONL, or alpaca ``[{instruction, output}]`` JSON)."""
    from .paths import load_json_any
    from .traces import read_traces

    traces: list[Trace] = []
    for it in items:
        if isinstance(it, Trace):
            traces.append(it)
            continue
        p = Path(it)
        if not p.exists():
            raise UserError(f"trace file {p} does not exist: pass a traces.jsonl written by `cotdistill import-paper` or `cotdistill generate`")
        if p.suffix == ".jsonl" or p.is_dir():
            traces.extend(read_traces(p))
            continue
        rows = load_json_any(p)
        if isinstance(rows, list) and rows and isinstance(rows[0], dict) and "instruction" in rows[0]:
            traces.extend(_alpaca_to_traces(rows, p))
        elif isinstance(rows, list) and rows and isinstance(rows[0], dict) and "output" in rows[0]:
            try:
                traces.extend(Trace.model_validate(r) for r in rows)
            except ValidationError as e:
                raise UserError(f"{p}: invalid trace: {field_error(e)}") from None
        else:
            raise UserError(f"{p} has no traces: expected trace JSONL or a JSON list of {{instruction, output}}")
    if not traces:
        raise UserError(f"no training traces: pass at least one non-empty {opt('traces')} file")
    return traces


def fingerprint(traces: Sequence[Trace]) -> str:
    """sha256 of the training texts (question, output) in order: identifies the data of a run."""
    h = hashlib.sha256()
    for t in traces:
        h.update(json.dumps([t.question, t.output], ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


class _ListDataset:
    def __init__(self, rows: list[dict[str, Any]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


STEP_BY_STEP_PREFIXES = {"label": "[label] ", "rationale": "[rationale] "}


def target_text(t: Trace, target: str = "response") -> str:
    """The completion a student learns from ``t``: its response, or (``reasoning+response``) a
    reasoning teacher's thinking in ``<think>`` tags before the response, the form thinking chat
    templates (DeepSeek-R1, Qwen3) use; a trace without reasoning is its response either way."""
    if target == "reasoning+response" and t.reasoning:
        return f"<think>\n{t.reasoning.strip()}\n</think>\n\n{t.output.strip()}"
    return t.output


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _resolve_precision(cfg: TrainConfig, device_type: str) -> str:
    import torch

    if cfg.precision != "auto":
        return cfg.precision
    if device_type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device_type == "cpu":
        try:
            if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported():
                return "bf16"
        except AttributeError:  # pragma: no cover - older torch
            pass
    return "fp32"


def _peak_flops(cfg: TrainConfig, precision: str) -> float | None:
    import torch

    if cfg.peak_tflops:
        return cfg.peak_tflops * 1e12
    if torch.cuda.is_available() and precision in ("bf16", "fp16"):
        name = torch.cuda.get_device_name()
        for k, v in _KNOWN_PEAKS_BF16.items():
            if k in name:
                return v
    return None


def _parallel_args(cfg: "TrainConfig", model: Any) -> dict[str, Any]:
    """TrainingArguments for sharded training: the config's own deepspeed / fsdp settings, else the
    preset ``cotdistill train --distributed`` launched this process with."""
    from .distributed import trainer_args

    if cfg.deepspeed or cfg.fsdp:
        return {"deepspeed": cfg.deepspeed, "fsdp": cfg.fsdp or "", "fsdp_config": cfg.fsdp_config}
    return trainer_args(model)


def _last_checkpoint(ckpt_dir: Path) -> Path | None:
    """Latest checkpoint whose trainer state was written (a checkpoint cut by a kill is skipped)."""
    if not ckpt_dir.is_dir():
        return None
    best, best_step = None, -1
    for p in ckpt_dir.iterdir():
        if p.is_dir() and p.name.startswith("checkpoint-") and (p / "trainer_state.json").is_file():
            try:
                step = int(p.name.split("-")[1])
            except ValueError:
                continue
            if step > best_step:
                best, best_step = p, step
    return best


def _attach_topk(rows: list[dict[str, Any]], teacher: Any, cfg: TrainConfig, traces: Sequence[Any], work: Path,
                 progress: bool) -> dict[str, Any]:
    """logit-kd: put the teacher's stored top-k (ids, log-probs) on every encoded row, computing
    and storing the table first when this (teacher, rows, k, T) has none."""
    from .objectives import load_or_compute_topk, teacher_topk, topk_key

    first = next((Path(t) for t in traces if isinstance(t, (str, os.PathLike))), None)
    if cfg.kd_cache:
        cache = Path(cfg.kd_cache)
    elif first is not None:
        cache = (first if first.is_dir() else first.parent) / "teacher-topk"
    else:
        cache = work.parent / f".{work.name}.teacher-topk"
    key = topk_key(str(cfg.teacher_model), rows, cfg.kd_top_k, cfg.kd_temperature)
    t0 = time.perf_counter()
    last = [0.0]

    def report(done: int, total: int) -> None:
        if progress is True and (time.perf_counter() - last[0] > 30 or done == total):
            last[0] = time.perf_counter()
            print(f"teacher top-{cfg.kd_top_k}: {done}/{total} examples", flush=True)

    table, cached = load_or_compute_topk(cache, key, lambda: teacher_topk(
        teacher, rows, cfg.kd_top_k, cfg.kd_temperature, progress=report))
    if len(table) != len(rows):
        raise UserError(f"{cache}: the stored teacher top-k table has {len(table)} rows for {len(rows)} examples; delete it")
    for r, (idx, logp) in zip(rows, table):
        r["kd_idx"], r["kd_logp"] = idx, logp
    forward = 0 if cached else sum(len(r["input_ids"]) for r in rows)
    return {"topk_cached": cached, "topk_file": str((cache / f"teacher-topk-{key}.pt").resolve()), "forward_tokens": forward,
            "topk_s": round(time.perf_counter() - t0, 2)}


def _sample_correct(tok: Any, sample: list[int], gold: tuple[str, str]) -> bool:
    """Is a student's sampled completion right (strict answer line, as evaluation grades)?"""
    from .score import score_output
    from .tasks import get_task
    from .tasks.base import Example

    answer, task = gold
    text = tok.decode(sample, skip_special_tokens=True)
    finish = "eos" if sample and sample[-1] == tok.eos_token_id else "length"
    ex = Example(id="sample", task=task, split="train", question="", answer=answer, answer_type=get_task(task).answer_type)
    return bool(score_output(text, finish, ex)["correct"])


def _objective_summary(cfg: TrainConfig, ctx: dict[str, Any] | None, n_params: int, trained_tokens: int) -> dict[str, Any]:
    """Compute as FLOPs: student forward+backward 6 N per trained token, teacher forward 2 N_t
    per scored token (the top-k table when this run computed it), sampling 2 N per generated token."""
    flops = 6 * n_params * trained_tokens
    if ctx is None:
        return {"compute_flops": flops}
    flops += 2 * ctx["params"] * ctx["forward_tokens"] + 2 * n_params * ctx["generated_tokens"]
    out: dict[str, Any] = {"teacher_model": cfg.teacher_model, "teacher_params": ctx["params"],
                           "teacher_forward_tokens": ctx["forward_tokens"], "compute_flops": flops}
    if cfg.objective == "preference":
        return {"compute_flops": flops, "orpo_lambda": cfg.orpo_lambda, "generated_tokens": ctx["generated_tokens"],
                "preference_pairs": ctx["pairs"], "sample_max_new_tokens": ctx["max_new_tokens"]}
    if cfg.objective == "logit-kd":
        out.update({"kd_alpha": cfg.kd_alpha, "kd_top_k": cfg.kd_top_k, "kd_temperature": cfg.kd_temperature,
                    "teacher_topk_file": ctx.get("topk_file"), "teacher_topk_reused": ctx.get("topk_cached")})
    else:
        out.update({"on_policy_lambda": cfg.on_policy_lambda, "on_policy_beta": cfg.on_policy_beta,
                    "on_policy_warmup_steps": ctx.get("warmup_steps", 0),
                    "generated_tokens": ctx["generated_tokens"], "on_policy_max_new_tokens": ctx.get("max_new_tokens")})
    return out


def _hidden_size(model) -> int | None:
    size = getattr(model.config, "hidden_size", None) or getattr(model.config, "n_embd", None)
    return int(size) if size else None


CPU_ATTENTION = "cotdistill_cpu_sdpa"
# Attention over each packed example alone (rows filled to pack_length) pays for gathering the
# examples; it wins where the model's attention is worth saving: SmolLM2-135M (hidden 576) on 128
# SVAMP traces, batch 8: 374 tok/s against 306 with dense masked rows; the scratch students
# (hidden 128) on arith: 67k / 35k tok/s against 78k / 43k. Narrower models keep the 4-D mask.
SEGMENTS_MIN_HIDDEN = 512


def _cpu_sdpa(module, query, key, value, attention_mask, cu_seq_lens_q=None, cu_seq_lens_k=None, **kwargs):
    """sdpa for training on a CPU: computed in float32 (under bf16 autocast the CPU flash-attention
    kernels are slower in bf16: 32 rows x 4 heads x 173 tokens x 32 dims, backward 69 ms vs 23 ms
    on one thread), and, when the batch carries packed examples' boundaries (``cu_seq_lens_q``),
    over the examples alone instead of a dense masked pass over each row: the examples are gathered
    into batches of similar length (:func:`_length_groups`), right-padded, and attended causally.
    Anything else (no boundaries, a KV cache) is plain sdpa with the mask transformers built."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    dtype = query.dtype
    with torch.autocast("cpu", enabled=False):
        q, k, v = query.float(), key.float(), value.float()
        if cu_seq_lens_q is None or q.shape[2] != k.shape[2]:
            out, weights = sdpa_attention_forward(module, q, k, v, attention_mask, **kwargs)
            return out.to(dtype), weights
        B, H, T, D = q.shape
        rep = H // k.shape[1]
        if rep > 1:  # grouped-query attention: each key/value head serves `rep` query heads
            k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        flat = [x.transpose(1, 2).reshape(B * T, H, D) for x in (q, k, v)]
        dropout = kwargs.get("dropout", 0.0) if module.training else 0.0
        groups, order = _length_groups(cu_seq_lens_q.tolist(), q.device)
        outs = []
        for (S, L), gather, keep in groups:
            # (S, L) examples -> (S, H, L, D); padding repeats each example's last token, which no
            # real query sees under the causal mask (index_select: its backward is an index_add)
            a, b, c = (x.index_select(0, gather).view(S, L, H, D).transpose(1, 2) for x in flat)
            o = torch.nn.functional.scaled_dot_product_attention(a, b, c, is_causal=True, dropout_p=dropout,
                                                                 scale=kwargs.get("scaling"))
            outs.append(o.transpose(1, 2).reshape(S * L, H, D).index_select(0, keep))
        out = torch.cat(outs).index_select(0, order).view(B, T, H, D)
    return out.to(dtype), None


def _length_groups(cu: list[int], device) -> tuple[list[tuple[tuple[int, int], Any, Any]], Any]:
    """Segments (``cu``: cumulative lengths) sorted by length and cut into groups whose shortest
    is at least 0.7 of their longest. Per group: its shape (S examples, L tokens), the flat token
    indices of its right-padded (S, L) layout (padding repeats each example's last index) and the
    positions of its real tokens in that layout; and the order that puts the groups' real tokens
    back in place. Cached per layout: every layer of a forward sees the same one."""
    key = tuple(cu)
    hit = _GROUP_CACHE.get(key)
    if hit is not None and hit[0] == device:
        return hit[1]
    import torch

    spans = sorted(((cu[i + 1] - cu[i], cu[i]) for i in range(len(cu) - 1)), reverse=True)
    cuts: list[list[tuple[int, int]]] = []
    for n, start in spans:
        if cuts and n >= 0.7 * cuts[-1][0][0]:
            cuts[-1].append((n, start))
        else:
            cuts.append([(n, start)])
    groups, dest = [], []
    for group in cuts:
        L = group[0][0]
        j = torch.arange(L)
        n = torch.tensor([g[0] for g in group])[:, None]
        start = torch.tensor([g[1] for g in group])[:, None]
        real = (j < n).flatten()
        keep = real.nonzero().flatten()
        gather = (start + torch.minimum(j, n - 1)).flatten()
        groups.append(((len(group), L), gather.to(device), keep.to(device)))
        dest.append(gather[keep])
    order = torch.empty(cu[-1], dtype=torch.long)
    order[torch.cat(dest)] = torch.arange(cu[-1])
    result = (groups, order.to(device))
    _GROUP_CACHE.clear()
    _GROUP_CACHE[key] = (device, result)
    return result


_GROUP_CACHE: dict[tuple[int, ...], tuple[Any, list]] = {}


def _cpu_mask(*args: Any, **kwargs: Any):
    """Masks for :func:`_cpu_sdpa`: sdpa's for a padding mask (sampling, padded completion
    batches); none without one, where transformers would otherwise turn restarting position ids
    (packed examples, a row's padding tail) into a dense 4-D mask that :func:`_cpu_sdpa` does not
    need (it reads the examples' boundaries, or the row is one example under the causal mask)."""
    from transformers.masking_utils import sdpa_mask

    return None if kwargs.get("attention_mask") is None else sdpa_mask(*args, **kwargs)


def _cpu_attention(model, cfg: TrainConfig, device_type: str) -> str | None:
    """Switch a CPU run of an sdpa model to :func:`_cpu_sdpa` and :func:`_cpu_mask`; returns the
    implementation to restore afterwards (None when nothing changed)."""
    current = getattr(model.config, "_attn_implementation", None)
    if device_type != "cpu" or cfg.attn_implementation or current != "sdpa" or not hasattr(model, "set_attn_implementation"):
        return None
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    AttentionInterface.register(CPU_ATTENTION, _cpu_sdpa)
    ALL_MASK_ATTENTION_FUNCTIONS.register(CPU_ATTENTION, _cpu_mask)
    try:
        model.set_attn_implementation(CPU_ATTENTION)
    except Exception:  # noqa: BLE001 - a model class that refuses custom attention keeps sdpa
        return None
    return current


def _load_student(student: str, texts: list[str], cfg: TrainConfig):
    import torch

    from .students import is_scratch, load_pretrained, make_scratch_student, parse_scratch

    if is_scratch(student):
        parse_scratch(student)  # one-line error for a bad name
        model, tok = make_scratch_student(student, texts, seed=cfg.seed)
        if cfg.attn_implementation:
            model.config._attn_implementation = cfg.attn_implementation
        return model, tok
    kw: dict[str, Any] = {"dtype": getattr(torch, cfg.model_dtype)}
    if cfg.attn_implementation:
        kw["attn_implementation"] = cfg.attn_implementation
    return load_pretrained(student, **kw)


def _plot_loss(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    try:
        import matplotlib
    except ImportError:  # a minimal GPU image (torch + transformers only): metrics.jsonl has the curve
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if pts:
        ax.plot(*zip(*pts), lw=1.5)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("train loss (completion tokens)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def _params_checksum(model) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------------
# trainer
# ------------------------------------------------------------------------------------------
def _make_trainer_class():
    import torch
    from transformers import Trainer

    from .collate import float_mask

    class CotTrainer(Trainer):
        """Trainer that counts non-pad tokens, logs throughput / MFU, and feeds 4-D masks."""

        def __init__(self, *a, mask_mode=None, n_params=0, peak_flops=None, target_head=None, objective="sft",
                     teacher_ctx=None, kd=None, **kw):
            super().__init__(*a, **kw)
            self.mask_mode = mask_mode
            self.objective = objective
            self.teacher_ctx = teacher_ctx
            self.kd = kd or {}
            self.target_head = target_head
            self.n_params = n_params
            self.peak_flops = peak_flops
            self._tok_local = 0
            self._t_last = None
            self._tok_last = 0
            self._session_t0 = None
            self._session_tok0 = 0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            n = inputs.pop("n_tokens", None)
            if n is not None and model.training:
                self._tok_local += int(n)
            if self.mask_mode == "float" and "attention_mask" in inputs and inputs["attention_mask"].dim() == 4:
                dtype = next(model.parameters()).dtype
                inputs["attention_mask"] = float_mask(inputs["attention_mask"], dtype)
            if self.objective == "logit-kd" and model.training:
                return self._kd_loss(model, inputs, num_items_in_batch)
            if self.objective == "on-policy" and model.training:
                return self._on_policy_loss(model, inputs)
            if self.objective == "preference" and model.training:
                return self._preference_loss(model, inputs)
            if self.target_head is not None and model.training and "labels" in inputs and not return_outputs:
                return self._target_loss(model, inputs, num_items_in_batch)
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

        def _target_loss(self, model, inputs, num_items_in_batch):
            """The model's causal-LM loss with the head computed on target positions only: the sum
            of token losses over ``num_items_in_batch`` (the accumulated batch's targets) when the
            model takes loss kwargs, as its own loss does, else the mean."""
            labels = inputs.pop("labels")
            logits, targets = self.target_head.logits(model, inputs, labels)
            loss = torch.nn.functional.cross_entropy(logits.float(), targets.to(logits.device), reduction="sum")
            return self._normalise(loss, targets.numel(), num_items_in_batch)

        def _target_logits(self, model, inputs, labels):
            """Student logits at the completion targets (row-major) and the targets."""
            if self.target_head is not None:
                return self.target_head.logits(model, inputs, labels)
            out = model(**inputs)
            logits = out["logits"] if isinstance(out, dict) else out[0]
            keep = labels[:, 1:] != -100
            return logits[:, :-1][keep], labels[:, 1:][keep]

        def _normalise(self, total, n_targets, num_items_in_batch):
            if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
                total = total / num_items_in_batch
                if self.args.average_tokens_across_devices:
                    total = total * (self.accelerator.num_processes // self.get_tp_size())
                return total
            return total / max(n_targets, 1)

        def _kd_loss(self, model, inputs, num_items_in_batch):
            """kd_alpha * CE + (1 - kd_alpha) * KL(teacher top-k || student), per target token."""
            from .objectives import kd_loss

            idx, logp = inputs.pop("kd_idx"), inputs.pop("kd_logp")
            labels = inputs.pop("labels")
            logits, targets = self._target_logits(model, inputs, labels)
            if logits.shape[0] != idx.shape[0]:
                raise RuntimeError(f"teacher top-k rows {idx.shape[0]} != student targets {logits.shape[0]}")
            a = self.kd.get("alpha", 0.5)
            ce = torch.nn.functional.cross_entropy(logits.float(), targets.to(logits.device), reduction="sum")
            kl = kd_loss(logits, idx.to(logits.device), logp.to(logits.device), self.kd.get("temperature", 1.0))
            return self._normalise(a * ce + (1 - a) * kl, targets.numel(), num_items_in_batch)

        def _on_policy_loss(self, model, inputs):
            """GKD: completions sampled from the student (with probability lambda) or taken from
            the traces; the teacher scores every completion token; generalized JSD per token."""
            import random

            from .objectives import completion_batch, generalized_jsd, sample_completions

            ctx = self.teacher_ctx
            prompts, comps = inputs["prompts"], inputs["completions"]
            step = self.state.global_step
            if step < self.kd.get("warmup_steps", 0):  # warm start: SFT on the traces, no teacher
                tok = self.processing_class
                batch = {k: v.to(self.args.device) for k, v in completion_batch(prompts, comps, tok.pad_token_id).items()}
                labels = batch.pop("labels")
                self._tok_local += int(batch["attention_mask"].sum())
                logits, targets = self._target_logits(model, batch, labels)
                return torch.nn.functional.cross_entropy(logits.float(), targets)
            rng = random.Random(self.args.seed * 1_000_003 + step)
            tok = self.processing_class
            if rng.random() < self.kd.get("lambda", 0.5):
                comps = sample_completions(self.accelerator.unwrap_model(model), prompts, tok.eos_token_id, tok.pad_token_id,
                                           ctx["max_new_tokens"], generator_seed=self.args.seed * 7919 + step)
                ctx["generated_tokens"] += sum(len(c) for c in comps)
            comps = [c if c else [tok.eos_token_id] for c in comps]
            batch = completion_batch(prompts, comps, tok.pad_token_id)
            batch = {k: v.to(self.args.device) for k, v in batch.items()}
            labels = batch.pop("labels")
            n_tok = int(batch["attention_mask"].sum())
            self._tok_local += n_tok
            ctx["forward_tokens"] += n_tok
            with torch.no_grad():
                t_logits = ctx["model"](**batch).logits
            keep = labels[:, 1:] != -100
            t_logits = t_logits[:, :-1][keep]
            s_logits, targets = self._target_logits(model, batch, labels)
            jsd = generalized_jsd(s_logits, t_logits, self.kd.get("beta", 0.5), self.kd.get("temperature", 1.0))
            return jsd / max(targets.numel(), 1)

        def _preference_loss(self, model, inputs):
            """ORPO (Hong et al. 2024) as ORPO-Distill uses it: NLL of the teacher's trace plus
            orpo_lambda x -log sigmoid(log odds(trace) - log odds(student's wrong sample)); the
            student's samples are drawn afresh every step (an example it gets right adds no pair)."""
            from .objectives import completion_batch, preference_terms, sample_completions

            ctx = self.teacher_ctx
            prompts, comps, golds = inputs["prompts"], inputs["completions"], inputs["golds"]
            tok = self.processing_class
            step = self.state.global_step
            samples = sample_completions(self.accelerator.unwrap_model(model), prompts, tok.eos_token_id, tok.pad_token_id,
                                         ctx["max_new_tokens"], generator_seed=self.args.seed * 7919 + step)
            ctx["generated_tokens"] += sum(len(c) for c in samples)
            wrong = [i for i, s in enumerate(samples) if s and not _sample_correct(tok, s, golds[i])]
            ctx["pairs"] += len(wrong)
            batch = completion_batch(prompts + [prompts[i] for i in wrong], comps + [samples[i] for i in wrong],
                                     tok.pad_token_id)
            batch = {k: v.to(self.args.device) for k, v in batch.items()}
            labels = batch.pop("labels")
            self._tok_local += int(batch["attention_mask"].sum())
            logits, targets = self._target_logits(model, batch, labels)
            rows = (labels[:, 1:] != -100).nonzero()[:, 0]
            nll, ratio = preference_terms(logits, targets, rows, n_chosen=len(prompts), pairs=wrong)
            return nll + self.kd.get("orpo_lambda", 0.1) * ratio

        def flush_tokens(self) -> None:
            """Add the tokens seen on all ranks since the last flush to the (checkpointed) state."""
            t = torch.tensor(self._tok_local, dtype=torch.long, device=self.args.device)
            if self.args.world_size > 1:
                t = self.accelerator.reduce(t, reduction="sum")
            self.state.num_input_tokens_seen += int(t.item())
            self._tok_local = 0

        def log(self, logs, start_time=None):
            if "loss" in logs:  # a training log
                self.flush_tokens()
                now = time.perf_counter()
                tok = self.state.num_input_tokens_seen
                if self._t_last is None:
                    self._t_last, self._tok_last = self._session_t0, self._session_tok0
                dt = max(now - self._t_last, 1e-9)
                tps = (tok - self._tok_last) / dt
                logs["tokens"] = tok
                logs["tokens_per_s"] = round(tps, 1)
                if self.peak_flops:
                    logs["mfu"] = round(6 * self.n_params * tps / self.peak_flops, 5)
                logs["elapsed_s"] = round(now - self._session_t0, 3)
                self._t_last, self._tok_last = now, tok
            super().log(logs, start_time)

        def _save_checkpoint(self, model, trial):
            self.flush_tokens()
            super()._save_checkpoint(model, trial)

    return CotTrainer


def push_model(model_dir: str | os.PathLike, repo_id: str, private: bool = True) -> str:
    """Upload a finished model directory to the Hugging Face Hub; returns the repository URL. A
    failure is a one-line UserError (the local model is complete either way)."""
    from huggingface_hub import HfApi

    try:
        api = HfApi()
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(model_dir), repo_id=repo_id, commit_message="cotdistill train")
    except Exception as e:  # noqa: BLE001 - network, auth and hub errors alike
        msg = " ".join(str(e).split())[:200]
        raise UserError(f"push to the hub ({repo_id}) failed: {msg}; the model is complete in {model_dir}: "
                        f"upload it later with `huggingface-cli upload {repo_id} {model_dir}`") from None
    return str(url)


def _progress_file(path: Path, total_steps: int, main: bool):
    """Writes ``{step, max_steps, loss, tokens_per_s, eta_s}`` to ``path`` at each log step, so a
    study (or anyone) can show a running training's progress without its terminal."""
    from transformers import TrainerCallback

    class ProgressFile(TrainerCallback):
        t0 = step0 = None

        def on_train_begin(self, args, state, control, **kw):
            self.t0, self.step0 = time.perf_counter(), state.global_step

        def on_log(self, args, state, control, logs=None, **kw):
            if not main or not logs or "loss" not in logs:
                return
            done = state.global_step - self.step0
            el = time.perf_counter() - self.t0
            eta = el / done * (total_steps - state.global_step) if done else None
            atomic_write_text(path, json.dumps({"step": state.global_step, "max_steps": total_steps, "loss": logs["loss"],
                                                "tokens_per_s": logs.get("tokens_per_s"), "eta_s": eta}) + "\n")

    return ProgressFile()


class _GracefulStop:
    """While training, SIGTERM (a scheduler's time limit, ``kill``) and Ctrl-C ask the trainer to
    finish the current optimizer step, save a checkpoint and stop; a second signal stops at once.
    Installed only in the main thread; the handlers in place before are restored after."""

    def __init__(self):
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_GracefulStop":
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return self
        for s in (signal.SIGTERM, signal.SIGINT):
            self._old[s] = signal.getsignal(s)
            signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # the second one: stop now
            raise KeyboardInterrupt
        self.signum = signum
        print("train: signal received, finishing this step and saving a checkpoint (signal again to stop at once)",
              file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        import signal

        for s, h in self._old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)

    def callback(self):
        from transformers import TrainerCallback

        stop = self

        class StopOnSignal(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                if stop.signum is not None:
                    control.should_save = True
                    control.should_training_stop = True
                return control

        return StopOnSignal()


def _log_last_step():
    """Log the last step too (transformers logs the first and every ``logging_steps``-th), so the
    final loss of a run is its last steps' loss, not the first step's in a short run."""
    from transformers import TrainerCallback

    class LogLastStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.max_steps and state.global_step >= state.max_steps:
                control.should_log = True
            return control

    return LogLastStep()


def _tracker_callbacks(cfg: TrainConfig, work: Path, main: bool) -> list:
    """TensorBoard writes to ``<work>/tensorboard`` (copied into the finished model directory);
    other trackers in ``report_to`` are left to transformers."""
    if "tensorboard" not in cfg.report_to or not main:
        return []
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("report_to: tensorboard needs the tensorboard package: pip install 'cotdistill[tensorboard]'") from None
    from transformers.integrations import TensorBoardCallback

    return [TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(work / "tensorboard")))]


def _progress_callback(total_steps: int, progress: Any):
    """Training progress through :class:`cotdistill.progress.Reporter`: a callable ``progress``
    receives an event per step (``info``: loss, tokens_per_s at each log step); ``True`` shows a
    rich bar on a terminal and, in a log, one plain line per log step:
    ``train: 20/400 steps  loss 0.2310  41,210 tok/s  elapsed 12 s  eta 228 s``."""
    from transformers import TrainerCallback

    from .progress import Reporter

    class ProgressCallback(TrainerCallback):
        def __init__(self):
            self.rep = None
            self.start = (0.0, 0)

        def line(self, ev) -> str:
            if "loss" not in ev.info:
                return f"train: {ev.done}/{ev.total} steps"
            t0, s0 = self.start
            done = ev.done - s0
            el = time.perf_counter() - t0
            eta = el / done * (ev.total - ev.done) if done else float("nan")
            rate = f"  {ev.info['tokens_per_s']:,.0f} tok/s" if ev.info.get("tokens_per_s") is not None else ""
            return f"train: {ev.done}/{ev.total} steps  loss {ev.info['loss']:.4f}{rate}  elapsed {el:.0f} s  eta {eta:.0f} s"

        def on_train_begin(self, args, state, control, **kw):
            if not progress or not state.is_world_process_zero:
                return
            self.start = (time.perf_counter(), state.global_step)
            self.rep = Reporter(progress, "train", "", total_steps, completed=state.global_step, unit="steps",
                                plain_line=self.line)
            self.rep.__enter__()

        def on_step_end(self, args, state, control, **kw):
            if self.rep is not None:
                self.rep.update(done=state.global_step)

        def on_log(self, args, state, control, logs=None, **kw):
            if self.rep is not None and logs and "loss" in logs:
                self.rep.update(done=state.global_step, loss=float(logs["loss"]),
                                tokens_per_s=logs.get("tokens_per_s"))
                self.rep.print_plain()

        def on_train_end(self, args, state, control, **kw):
            if self.rep is not None:
                self.rep.update(done=state.global_step)
                self.rep.__exit__(None, None, None)
                self.rep = None

    return ProgressCallback()


# ------------------------------------------------------------------------------------------
# the entry point
# ------------------------------------------------------------------------------------------
def train(*args: Any, **kwargs: Any) -> TrainResult:
    """Fine-tune a student; see :func:`_train` for the arguments."""
    import contextlib

    with contextlib.ExitStack() as stack:  # holds the lock on the run until training ends
        return _train(*args, _stack=stack, **kwargs)


def _train(
    traces: Sequence[Trace | str | os.PathLike],
    student: str,
    out_dir: str | os.PathLike,
    config: TrainConfig | None = None,
    resume: bool = False,
    progress: Progress = True,
    overwrite: bool = False,
    mix: bool = False,
    _stack: Any = None,
) -> TrainResult:
    """Fine-tune ``student`` on ``traces`` and write a finished model directory at ``out_dir``.

    ``config`` defaults to :meth:`TrainConfig.for_student` (paper defaults for pretrained models,
    measured CPU defaults for scratch students). With ``resume=True`` an interrupted run continues
    from its last checkpoint in ``<out_dir>.partial/`` (same final weights as an uninterrupted
    run), and a finished ``out_dir`` is returned as-is. Works unchanged under
    ``accelerate launch`` / ``torchrun`` (DDP, DeepSpeed, FSDP).

    One run trains on one supervision cell (teacher, level, format): traces of several cells are
    refused unless ``mix=True``; the summary records the composition either way. While it runs,
    ``<out_dir's parent>/.<name>.lock`` is held: a second process training into the same
    ``out_dir`` stops at once, naming the first.
    """
    import torch
    import transformers
    from transformers import TrainingArguments

    from .collate import PackingCollator, PaddingCollator, encode_example, packing_mode, target_head
    from .students import describe_student

    t_start = time.perf_counter()
    cfg = config if config is not None else TrainConfig.for_student(student)
    out = Path(out_dir)
    work = out.with_name(out.name + ".partial")
    stage = work / "final"
    ckpt_dir = work / "checkpoints"
    world, rank = _world_size(), _rank()
    main = rank == 0

    # ---- validate everything before touching the disk ------------------------------------
    if out.exists():
        from .artifacts import KINDS, kind_of

        k = kind_of(out)
        if k not in ("empty", "model"):
            what = KINDS.get(k, "a file" if k == "file" else "a non-empty directory that cotdistill did not write")
            raise UserError(f"{opt('out_dir', 'out')} {out} is {what}, not a model directory: choose another {opt('out_dir', 'out')} "
                            f"({switch('overwrite')} replaces only a model directory)")
        if is_complete(out) and resume and not overwrite:
            return load_result(out)
        if not overwrite:
            what = "a finished run" if is_complete(out) else "a directory that is not a finished run"
            raise UserError(f"output directory {out} already exists ({what}): choose another {opt('out_dir', 'out')} or pass {switch('overwrite')}")
    if cfg.push_to_hub and not cfg.hub_model_id:
        raise UserError(f"{opt('push_to_hub')} needs {opt('hub_model_id')} (user/name)")
    data = load_traces(traces)
    data = [t for t in data if t.output.strip()]
    if not data:
        raise UserError("all traces have an empty output: nothing to train on; check the trace files")
    if not mix:
        require_one_cell(data)
    comp = composition(data)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    fp = fingerprint(data)

    # template (needs the tokenizer for 'auto' / 'chat'): build texts with the plain template for
    # the scratch tokenizer's vocabulary, then pick the template from the loaded tokenizer
    plain = NAMED_TEMPLATES["plain"] if cfg.template in ("auto", "chat") else NAMED_TEMPLATES[cfg.template]
    vocab_texts = [plain.render_prompt(t.question) + plain.render_completion(target_text(t, cfg.target)) for t in data]
    model, tok = _load_student(student, vocab_texts, cfg)
    stored = PromptTemplate.load(student) if Path(student).is_dir() else None
    if cfg.template == "auto" and stored is not None:
        template = stored  # continuing from a model this toolkit trained: keep its template
    elif cfg.template == "auto":
        template = PromptTemplate.for_tokenizer(tok)
    elif cfg.template == "chat":
        if not getattr(tok, "chat_template", None):
            raise UserError(f"template 'chat' requested but the tokenizer of {student!r} has no chat template; use template: plain")
        template = PromptTemplate(kind="chat")
    else:
        template = NAMED_TEMPLATES[cfg.template]
    add_special = template.kind != "chat"

    # ---- batching geometry ---------------------------------------------------------------
    micro = cfg.micro_batch_size or max(cfg.batch_size // world, 1)
    if cfg.batch_size % (micro * world):
        raise UserError(
            f"batch_size {cfg.batch_size} is not a multiple of micro_batch_size {micro} x {world} devices: "
            "change batch_size or micro_batch_size"
        )
    accum = cfg.batch_size // (micro * world)

    # ---- encode --------------------------------------------------------------------------
    rows = []
    n_trunc = n_dropped = 0
    if cfg.objective == "step-by-step":  # the saved template asks the label task at test time
        rationale_tpl = template.model_copy(update={"question_prefix": STEP_BY_STEP_PREFIXES["rationale"]})
        template = template.model_copy(update={"question_prefix": STEP_BY_STEP_PREFIXES["label"]})
        pairs = [(p, c) for t in data for p, c in (
            (template.render_prompt(t.question, tok), template.render_completion(f"The answer is {t.gold}.")),
            (rationale_tpl.render_prompt(t.question, tok), rationale_tpl.render_completion(target_text(t, cfg.target))))]
    else:
        pairs = [(template.render_prompt(t.question, tok), template.render_completion(target_text(t, cfg.target)))
                 for t in data]
    for i, (prompt_text, completion_text) in enumerate(pairs):
        enc = encode_example(prompt_text, completion_text, tok, cfg.cutoff_len, add_special_tokens=add_special,
                             overlong=cfg.overlong)
        if enc is None:
            n_dropped += 1
            continue
        n_trunc += enc.pop("truncated")
        if cfg.objective == "preference":  # the student's own samples are graded against the gold answer
            enc["gold"], enc["task"] = data[i].gold, data[i].task
        rows.append(enc)
    if not rows:
        raise UserError(f"every one of the {len(data)} examples is longer than cutoff_len {cfg.cutoff_len} tokens: "
                        "raise cutoff_len, or set overlong: truncate")
    mean_len = sum(len(r["input_ids"]) for r in rows) / len(rows)

    # ---- a teacher model for the logit objectives ---------------------------------------------
    from .evaluate import cap_for_longest

    teacher_ctx: dict[str, Any] | None = None
    if cfg.objective == "preference":
        longest = max(sum(1 for x in r["labels"] if x != -100) for r in rows)
        teacher_ctx = {"model": None, "params": 0, "forward_tokens": 0, "generated_tokens": 0, "pairs": 0,
                       "max_new_tokens": cfg.on_policy_max_new_tokens or cap_for_longest(longest)}
        for r in rows:
            r["prompt_len"] = next(i for i, x in enumerate(r["labels"]) if x != -100)
    if cfg.objective in TEACHER_MODEL_OBJECTIVES:
        from .objectives import check_same_tokenizer, load_teacher
        from .students import count_params, is_scratch, load_tokenizer

        if not is_scratch(str(cfg.teacher_model)):  # the tokenizers first: a mismatch fails before any weights load
            try:
                early = load_tokenizer(str(cfg.teacher_model))
            except UserError:
                early = None  # load_teacher names the problem
            if early is not None:
                check_same_tokenizer(early, tok, str(cfg.teacher_model), student)
        teacher, teacher_tok = load_teacher(str(cfg.teacher_model))
        check_same_tokenizer(teacher_tok, tok, str(cfg.teacher_model), student)
        teacher_ctx = {"model": teacher, "params": count_params(teacher), "forward_tokens": 0, "generated_tokens": 0,
                       "topk_cached": None}
        if cfg.objective == "logit-kd":
            teacher_ctx.update(_attach_topk(rows, teacher, cfg, traces, work, progress))
        else:
            longest = max(sum(1 for x in r["labels"] if x != -100) for r in rows)
            teacher_ctx["max_new_tokens"] = cfg.on_policy_max_new_tokens or cap_for_longest(longest)
            for r in rows:
                r["prompt_len"] = next(i for i, x in enumerate(r["labels"]) if x != -100)
    steps_per_epoch = math.ceil(len(rows) / cfg.batch_size)
    if cfg.max_tokens:
        max_steps = max(1, math.ceil(cfg.max_tokens / (mean_len * cfg.batch_size)))
        if cfg.max_steps:
            max_steps = min(max_steps, cfg.max_steps)
    elif cfg.max_steps:
        max_steps = cfg.max_steps
    else:
        max_steps = max(1, math.ceil(cfg.epochs * steps_per_epoch))

    if teacher_ctx is not None and cfg.objective == "on-policy":
        teacher_ctx["warmup_steps"] = int(cfg.on_policy_warmup * max_steps)

    # ---- packing mode (verified on the model) ---------------------------------------------
    device_type = "cuda" if torch.cuda.is_available() and not os.environ.get("ACCELERATE_USE_CPU") else "cpu"
    restore_attention = _cpu_attention(model, cfg, device_type)
    segments = restore_attention is not None and (_hidden_size(model) or 0) >= SEGMENTS_MIN_HIDDEN
    mode = packing_mode(model, segments=segments) if cfg.packing != "off" else None
    if cfg.packing == "on" and mode is None:
        raise UserError(
            f"packing: on, but {type(model).__name__} does not reproduce unpacked logits with a 4-D mask "
            "or position ids: use packing: auto (length-grouped padding)"
        )
    collator = PackingCollator(tok.pad_token_id, cfg.pack_length, mode, _hidden_size(model)) if mode else PaddingCollator(tok.pad_token_id)
    if cfg.objective in ("on-policy", "preference"):
        from .collate import PromptCompletionCollator

        collator = PromptCompletionCollator()

    # ---- LoRA ----------------------------------------------------------------------------
    if cfg.lora.enabled:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(
            r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
            target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM",
        ))
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False

    # ---- one process per run ---------------------------------------------------------------
    if main and _stack is not None:
        from .artifacts import hold

        out.parent.mkdir(parents=True, exist_ok=True)
        _stack.enter_context(hold(out.with_name(f".{out.name}.lock"), f"--out {out}"))

    # ---- run identity / resume -------------------------------------------------------------
    record = RunRecord(work / "run_key.json", {
        "config": cfg.model_dump(mode="json", exclude={"threads", "logging_steps", "keep_checkpoints", "report_to", "lm_head", "kd_cache",
                                                    "run_name", "push_to_hub", "hub_model_id", "hub_private_repo"}),
        "student": student, "data": fp, "world": world}, compact=False)
    run_key = record.key
    resume_from = None
    if work.exists():
        last = _last_checkpoint(ckpt_dir)
        if overwrite or last is None:
            if main:
                shutil.rmtree(work, ignore_errors=True)
        elif resume:
            diff = record.differences()
            if diff:
                what = {"config": "config", "student": "student", "data": "training data", "world": "number of processes",
                        "key": "config, student or data"}
                raise OtherRunError(
                    f"{work} holds an interrupted run with a different {' and '.join(what.get(k, k) for k in diff)}: "
                    f"rerun with the original settings, or pass {switch('overwrite')} to start over"
                )
            resume_from = last
        else:
            raise UserError(
                f"{work} holds an interrupted run (last {last.name}): pass {switch('resume')} to continue it "
                f"or {switch('overwrite')} to start over"
            )
    if overwrite and out.exists() and main:
        shutil.rmtree(out)
    if main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        record.write()

    # ---- trainer -------------------------------------------------------------------------
    precision = _resolve_precision(cfg, device_type)
    sched = cfg.lr_scheduler
    sched_kwargs: dict[str, Any] = {}
    if sched == "cosine" and cfg.min_lr_ratio > 0:
        sched, sched_kwargs = "cosine_with_min_lr", {"min_lr_rate": cfg.min_lr_ratio}
    args = TrainingArguments(
        output_dir=str(ckpt_dir),
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=accum,
        max_steps=max_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=sched,
        lr_scheduler_kwargs=sched_kwargs,
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        adam_beta1=cfg.adam_beta1,
        adam_beta2=cfg.adam_beta2,
        adam_epsilon=cfg.adam_epsilon,
        max_grad_norm=cfg.max_grad_norm,
        optim=cfg.optim,
        seed=cfg.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device_type == "cpu",
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        report_to=[r for r in cfg.report_to if r != "tensorboard"] or "none",
        run_name=cfg.run_name,
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        train_sampling_strategy="random" if mode else "group_by_length",
        include_num_input_tokens_seen="no",
        **_parallel_args(cfg, model),
        ddp_find_unused_parameters=False if world > 1 else None,
        log_level="warning",
    )
    # (nn.DataParallel, used by Trainer for several GPUs without torchrun, splits rows across replicas)
    head = target_head(model) if cfg.lm_head == "targets" and args.n_gpu <= 1 else None
    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    peak = _peak_flops(cfg, precision)
    Trainer = _make_trainer_class()
    graceful = _GracefulStop()
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=_ListDataset(rows),
        data_collator=collator,
        processing_class=tok,
        mask_mode=mode,
        objective=cfg.objective,
        teacher_ctx=teacher_ctx,
        kd={"alpha": cfg.kd_alpha, "temperature": cfg.kd_temperature, "lambda": cfg.on_policy_lambda,
            "beta": cfg.on_policy_beta, "orpo_lambda": cfg.orpo_lambda,
            "warmup_steps": (teacher_ctx or {}).get("warmup_steps", 0)},
        target_head=head,
        n_params=n_trainable if cfg.lora.enabled else n_params,
        peak_flops=peak,
        callbacks=[_log_last_step(), _progress_callback(max_steps, progress), _progress_file(work / PROGRESS_FILE, max_steps, main),
                   graceful.callback()]
        + _tracker_callbacks(cfg, work, main),
    )
    if teacher_ctx is not None and teacher_ctx["model"] is not None:
        teacher_ctx["model"].to(args.device)
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    trainer._session_t0 = time.perf_counter()
    if resume_from is not None:
        trainer._session_tok0 = json.loads((resume_from / "trainer_state.json").read_text()).get("num_input_tokens_seen", 0)
    attention = getattr(trainer.model.config, "_attn_implementation", None)
    if restore_attention:
        notes = (["fp32"] if precision != "fp32" else []) + (["per example"] if mode == "segments" else [])
        attention = f"{restore_attention} ({', '.join(notes)} on CPU)" if notes else restore_attention
    t_train = time.perf_counter()
    with graceful:
        output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    train_wall = time.perf_counter() - t_train
    if graceful.signum is not None:
        import signal

        last = _last_checkpoint(ckpt_dir)
        raise Interrupted(f"{signal.Signals(graceful.signum).name} at step {trainer.state.global_step} of {max_steps}; "
                          f"checkpoint saved in {last}; resume with the same command and {switch('resume')}",
                          graceful.signum)
    trainer.flush_tokens()
    if head is not None:
        head.remove()
    if restore_attention:
        trainer.model.set_attn_implementation(restore_attention)

    # ---- write the finished directory (rank 0), atomically ---------------------------------
    final_model = trainer.model
    checksums = None
    if world > 1:
        import torch.distributed as dist

        mine = _params_checksum(trainer.accelerator.unwrap_model(final_model))
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, mine)
        checksums = gathered
    state = trainer.state
    history = [dict(r) for r in state.log_history if "loss" in r]
    total_tokens = int(state.num_input_tokens_seen)
    completion_lengths = [sum(1 for x in r["labels"] if x != -100) for r in rows]
    completion_tokens_per_epoch = sum(completion_lengths)
    result_summary: dict[str, Any] = {}
    if main:
        if stage.exists():
            shutil.rmtree(stage)
        stage.mkdir(parents=True)
        to_save = trainer.accelerator.unwrap_model(final_model)
        if cfg.lora.enabled:
            to_save.save_pretrained(stage / "adapter")
            to_save = to_save.merge_and_unload()
        to_save.save_pretrained(stage, safe_serialization=True)
        tok.save_pretrained(stage)
        template.save(stage)
        if (work / "tensorboard").is_dir():
            shutil.copytree(work / "tensorboard", stage / "tensorboard")
        final_loss = history[-1]["loss"] if history else None
        tps = (total_tokens - trainer._session_tok0) / max(train_wall, 1e-9)
        summary = {
            "student": student,
            "student_description": describe_student(student),
            "supervision": comp,
            "mixed": len(comp) > 1,
            "model_class": type(to_save).__name__,
            "params": n_params,
            "trainable_params": n_trainable,
            "examples": len(rows),
            "truncated_examples": n_trunc,
            "dropped_overlong_examples": n_dropped,
            "target": cfg.target,
            "objective": cfg.objective,
            **_objective_summary(cfg, teacher_ctx, n_trainable if cfg.lora.enabled else n_params, total_tokens),
            "steps": state.global_step,
            "epochs": round(state.global_step * cfg.batch_size / len(rows), 4),
            "batch_size": cfg.batch_size,
            "micro_batch_size": micro,
            "grad_accum": accum,
            "world_size": world,
            "parallelism": str(getattr(trainer.accelerator, "distributed_type", "NO")).split(".")[-1].lower(),
            "train_tokens": total_tokens,
            "longest_completion_tokens": max(completion_lengths),
            "completion_tokens": int(round(completion_tokens_per_epoch * state.global_step * cfg.batch_size / len(rows))),
            "wall_s": round(time.perf_counter() - t_start, 3),
            "train_wall_s": round(train_wall, 3),
            "tokens_per_s": round(tps, 1),
            "mfu": round(6 * (n_trainable if cfg.lora.enabled else n_params) * tps / peak, 5) if peak else None,
            "peak_flops": peak,
            "final_loss": final_loss,
            "train_loss": output.training_loss,
            "batching": (f"prompt + completion rows, right-padded ({cfg.objective})" if cfg.objective in ("on-policy", "preference")
                         else "packed (attention per example)" if mode == "segments" else f"packed ({mode} mask)" if mode else "padded, length-grouped"),
            "attention": attention,
            "precision": precision,
            "lm_head": "target positions" if head is not None else "all positions",
            "device": device_type,
            "threads": torch.get_num_threads(),
            "resumed_from": resume_from.name if resume_from else None,
            "data_fingerprint": fp,
            "rank_param_checksums": checksums,
            "machine": platform.processor() or platform.machine(),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        }
        resolved = {
            "student": student,
            "traces": [str(x) for x in traces if not isinstance(x, Trace)] or "<in-memory>",
            "data_fingerprint": fp,
            "config": cfg.model_dump(mode="json"),
            "template": template.model_dump(),
            "resolved": {"max_steps": max_steps, "micro_batch_size": micro, "grad_accum": accum,
                          "precision": precision, "batching": summary["batching"]},
        }
        atomic_write_text(stage / CONFIG_FILE, json.dumps(resolved, indent=2) + "\n")
        atomic_write_text(stage / METRICS, "".join(json.dumps(r) + "\n" for r in history))
        _plot_loss(history, stage / LOSS_PNG, f"{student}  ({len(rows)} traces, {state.global_step} steps)")
        atomic_write_text(stage / SUMMARY, json.dumps(summary, indent=2) + "\n")
        mark_complete(stage, run_key, data_fingerprint=fp, run_key=run_key)
        usual_modes(stage)
        replace_dir(stage, out)
        if not cfg.keep_checkpoints:
            shutil.rmtree(work, ignore_errors=True)
        result_summary = summary
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        if not main:
            result_summary = json.loads((out / SUMMARY).read_text())
    if cfg.push_to_hub and main:
        push_model(out, cfg.hub_model_id, private=cfg.hub_private_repo)
    s = result_summary
    return TrainResult(
        model_dir=out, train_tokens=s["train_tokens"], completion_tokens=s["completion_tokens"],
        steps=s["steps"], wall_s=s["wall_s"], final_loss=s["final_loss"], tokens_per_s=s["tokens_per_s"],
        summary=s,
    )


train.__doc__ = _train.__doc__
train.__wrapped__ = _train  # inspect.signature / help() show the real arguments
