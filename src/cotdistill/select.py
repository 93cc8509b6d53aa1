"""Choose the supervision for one student with a fraction of the grid's compute.

``cotdistill select`` trains every candidate (teacher x level x format, plus mixed / curriculum /
union candidates from :mod:`cotdistill.mix`) for a short time, scores it on a **validation split
carved from the training split** (the test split is never read), drops the weakest and trains the
survivors further, until one is left::

    from cotdistill.select import SelectConfig, run_select
    res = run_select(SelectConfig(task="arith", task_options={"n_train": 12800}, student="scratch:llama-xxs",
                                  teachers=["lab"], levels=[0, 2, 3, 4], budget=0.4, out="sel"))
    res["winner"], res["spent_tokens"], res["grid_tokens"]

Design (measured in ``benchmarks/bench_select.py``; see ``docs/selection.md``):

* **budget** in training tokens (prompt + completion, as ``train`` counts them), or a fraction of
  the full grid's tokens (``0.4`` = 40 %). The grid = every candidate trained for ``max_steps``.
* **schedule** ``race`` (default, racing after Maron & Moore, 1994): checkpoints at 10 %, 20 %,
  40 %, ... of the full run; at each, a candidate is dropped only when its paired validation score
  is both ``drop_z`` (2.58) standard errors and ``drop_min_gap`` (0.05) below the leader's; the
  freed budget carries the others further; when the budget is spent the leader wins. ``rejects``
  (successive rejects, Audibert & Bubeck, 2010): each round also drops the worst candidate, round
  r ends at a step proportional to ``1 / survivors``. ``halving``: keep the best ``1/eta`` each
  round, round r adds ``s * eta**r`` steps. Every survivor of a round has the same number of
  optimizer steps (the grid compares supervision at equal steps); the rejects / halving scale is
  solved so that the planned rounds spend the budget, re-solved after each round. Why race is
  the default: on ``arith`` the ranking before the 150-250-step transition does not last (the
  eventual best level is often last at step 100-140), so any forced drop there is a coin toss;
  racing never drops on that evidence (benchmarks/bench_select_quickstart.py, README).
* **continuation** (``mode: continue``, default): a survivor continues from its checkpoint on new
  training items. ``cooldown: every`` (default): every round ends with a linear decay of the
  learning rate to 0 and the next round re-warms (warm restarts), so each round's scores compare
  decayed models, the state a finished run is judged in. ``cooldown: last``: warmup-stable-decay,
  constant rate until the last round. Why every: a constant-rate checkpoint is a noisy proxy --
  the quickstart's xxs student on L3 scored 5.0 % at step 132 at constant rate and 17.0 % after a
  26-step decay, while L0 and L4 stayed at 5.5 %. ``mode: retrain`` trains survivors from scratch
  for the round's total steps with the student's own (cosine) schedule instead (costs more tokens
  per round).
* **screen_batch** (default 1 = the training batch): screen at a smaller batch, so the same tokens
  buy more optimizer steps (0.25: 4x; learning rate scaled by the square root of the ratio). Measured
  on the quickstart's xs student: every pick was one of the two good levels, but the faster learner
  (L3) led more often at the deciding checkpoint, so fewer picks matched the grid per seed (README).
* **final** (``trend``, default): when the budget is spent and the last checkpoint's leader is not
  separated from other candidates (``drop_z`` / ``drop_min_gap``), the choice among those tied goes
  to the best score forecast for the end of a full run, a line through each one's last two decayed
  checkpoints (learning-curve extrapolation at its simplest: the level that learns faster is the one
  a full run favours). A clearly separated leader wins either way; ``leader`` picks the leader
  always. It only decides: a rerun with the other rule reuses every round.
* **score**: on the validation split, greedy decoding; per item ``soft`` (default) = the
  *gold-answer probability*: the student's probability of ``" {gold}."`` after its own rationale
  up to ``The answer is`` (a smooth version of accuracy); ``hybrid`` = 1 if the answer is right,
  else that probability; ``accuracy`` = 0/1. Accuracy has a Wilson interval, the others a normal
  one; a drop on evidence uses the paired difference on the same items. Why soft: near the
  transition, answer-only supervision (L0) wins on lucky right guesses (accuracy, hybrid) while
  P(gold) already ranks the level that will win first (README, measured).

Outputs in ``out``: ``selection.json`` (config, candidates, schedule, every round's scores with
intervals, winner, tokens spent against the grid's), ``summary.md`` (readable),
``traces.jsonl`` (the winner's traces over the whole training split, for ``cotdistill train``),
``runs/`` (checkpoints; a rerun resumes from them).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .fileio import atomic_open, atomic_write_json, atomic_write_text
from .records import SELECTION_FILE, StudyLayout, read_predictions, read_results, read_selection, write_selection
from .stats import wilson_ci
from .evaluate import cap_for_longest
from .artifacts import RunRecord, check as check_out, claim, content_key
from .progress import ProgressEvent, Reporter
from .errors import GenerateOptions, UserError, drop_masked_secrets, opt, validation_error
from .spec import (TEACHER_MODEL_OBJECTIVES, Candidate, FormatField, ObjectiveField, Section, parse_level_spec,
                   given, teacher_members)
from .train import TrainConfig
from .mix import (TraceSource, build_traces, is_loss_mix, loss_mix_table, mix_levels, segment_pieces, student_losses,
                  train_pieces)

SELECTION = SELECTION_FILE
PLAN_MARGIN = 0.985
SCORE_NAMES = {"hybrid": "hybrid score (1 per right answer, P(gold) for a wrong one)",
               "soft": "gold-answer probability", "accuracy": "accuracy"}


# ------------------------------------------------------------------------------------------
# config
# ------------------------------------------------------------------------------------------
class SelectConfig(BaseModel):
    """Everything ``cotdistill select`` needs (loadable from YAML / a study's study.json)."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(..., description="task registry name, e.g. arith")
    task_options: dict[str, Any] = Field(default_factory=dict, description="task options, e.g. {steps: 3, n_train: 12800}")
    data_dir: str | None = Field(None, description="benchmark data directory (default: $COTDISTILL_DATA, else the user cache)")
    student: str = Field(..., description="HF model path/name or scratch:<family>-<size>")
    teachers: list[str] = Field(default_factory=lambda: ["lab"], min_length=1,
                                description="teacher specs; 'union:a+b' for a union of teachers")
    levels: list[Union[int, str]] = Field(default_factory=lambda: [0, 2, 3, 4, 6], min_length=1,
                                          description="0..6, 'human', 'mix:A-B', 'mix:A-B:loss', 'mix:difficulty', 'curriculum:A-B'")
    formats: list[FormatField] = Field(default_factory=lambda: ["cot"], min_length=1, description="formats among cot, subq, rar, sym (or the paper's BSM, RaR, SYM)")
    objectives: list[ObjectiveField] = Field(
        default_factory=lambda: ["sft"], min_length=1,
        description="training objectives crossed with the supervision candidates: sft, step-by-step, logit-kd and "
                    "on-policy (both need train.teacher_model), preference (default: train.objective, else sft)")
    budget: float = Field(0.4, gt=0, allow_inf_nan=False,
                          description="training tokens; a value <= 1 is a fraction of the full grid's tokens")
    out: str = Field(..., description="output directory")
    seed: int = Field(0, description="training seed (and validation carve)")
    schedule: Literal["race", "rejects", "halving"] = Field(
        "race", description="race: drop only candidates clearly worse than the leader (drop_z), checkpoints at "
                               "10 %, 20 %, 40 %, ... of the run until the budget is spent; rejects: drop the worst "
                               "candidate each round (and any clearly worse), round r ends at steps proportional to "
                               "1/survivors (successive rejects); halving: keep the best 1/eta each round, geometric "
                               "increments")
    eta: float = Field(2.0, gt=1, description="halving: keep the best 1/eta of the candidates each round")
    drop_z: float | None = Field(2.58, gt=0, description="also drop every candidate whose paired validation score is this "
                                                        "many standard errors below the leader's (null: never)")
    drop_min_gap: float = Field(0.05, ge=0, description="... and at least this far below it (score units; 0.05 = 5 "
                                                        "accuracy points): early in training the candidates differ "
                                                        "consistently but by little, and that order does not last")
    mode: Literal["continue", "retrain"] = Field("continue", description="survivors continue from their checkpoint (WSD) or retrain")
    cooldown: Literal["every", "last"] = Field(
        "every", description="continue mode: every round ends with a linear decay of the learning rate to 0 (scores "
                             "compare decayed models; the next round re-warms), or only the last round does")
    final: Literal["trend", "leader"] = Field(
        "trend", description="the choice when the budget is spent: leader = the best score at the last checkpoint; "
                             "trend = among the candidates the leader is not separated from (drop_z / drop_min_gap), "
                             "the best score forecast for the end of a full run from the last two decayed checkpoints "
                             "(linear); a clearly separated leader wins either way")
    score: Literal["soft", "hybrid", "accuracy"] = Field(
        "soft", description="per validation item: hybrid = 1 if correct else P(gold); soft = P(gold); accuracy = correct")
    screen_batch: float = Field(
        1.0, gt=0, description="examples per optimizer step while screening: a value <= 1 is a share of the training "
                               "batch (0.25 = a quarter, so the same tokens buy 4x the optimizer steps), a larger value is "
                               "examples. The learning rate is scaled by sqrt(screen batch / batch); the full run (the "
                               "grid's cells, `train` on the winner) keeps the training batch")
    val_size: int = Field(200, ge=10, description="validation items carved from the end of the training split")
    first_steps: int | None = Field(None, ge=1, description="steps of the first round, in screening steps (default: race "
                                                           "10 % of the run; rejects / halving solved from the budget)")
    train: Section(TrainConfig) = Field(default_factory=TrainConfig,
                                        description="TrainConfig fields (max_steps = the full run's length)")
    generate: GenerateOptions = Field(default_factory=dict, description="GenerateConfig fields for non-lab teachers")
    eval_batch_size: int = Field(100, ge=1, description="validation items decoded at once")
    threads: int | None = Field(None, ge=1, description="torch threads")

    @field_validator("screen_batch")
    @classmethod
    def _screen_batch(cls, v):
        if v > 1 and v != int(v):
            raise ValueError(f"{v:g} is neither a share of the batch (<= 1, e.g. 0.25) nor a count of examples (8)")
        return v

    @field_validator("levels")
    @classmethod
    def _levels(cls, v):
        for x in v:
            try:
                parse_level_spec(x)
            except UserError as e:
                raise ValueError(str(e)) from None
        return v


def screening_batch(cfg: SelectConfig, full: Any) -> int:
    """Examples per screening step (a one-line error when above the training batch)."""
    B = full.batch_size
    b = max(1, round(cfg.screen_batch * B)) if cfg.screen_batch <= 1 else int(cfg.screen_batch)
    if b > B:
        raise UserError(f"select: field 'screen_batch': {cfg.screen_batch:g} gives a screening batch of {b} examples, "
                        f"above the training batch {B}; give a share <= 1 (e.g. 0.25) or at most {B} examples")
    return b


def screening_config(cfg: SelectConfig, full: Any, full_steps: int) -> tuple[Any, int]:
    """The training config candidates are screened with, and the full run's length in its steps.

    ``screen_batch`` below the training batch ``B`` gives batch ``b``: ``full_steps * B / b`` steps
    make a full run (the same tokens), the peak learning rate is scaled by ``sqrt(b / B)`` (the
    square-root rule for Adam), warmup keeps its steps. ``b == B``: ``full`` as is."""
    B, b = full.batch_size, screening_batch(cfg, full)
    if b == B:
        return full, full_steps
    micro = full.micro_batch_size
    over: dict[str, Any] = {"batch_size": b, "max_steps": math.ceil(full_steps * B / b),
                            "learning_rate": full.learning_rate * math.sqrt(b / B)}
    data = full.model_dump()
    data.update(over)
    if micro is not None and (micro > b or b % micro):
        data["micro_batch_size"] = None
    return type(full).validated(data, source="select screening"), over["max_steps"]


def _validated(data: dict[str, Any], source: str = "select") -> SelectConfig:
    train = data.get("train") if isinstance(data.get("train"), dict) else {}
    if train.get("objective") is not None:
        if data.get("objectives") is None:
            data = {**data, "objectives": [train["objective"]]}
        elif train["objective"] not in data["objectives"]:
            raise UserError(f"{source}: field 'train.objective' ({train['objective']}) is not among objectives "
                            f"{data['objectives']}: give the objectives in one place (objectives / --objectives)")
    try:
        return SelectConfig.model_validate(data)
    except ValidationError as e:
        raise validation_error(e, source, SelectConfig) from None


def candidates(cfg: SelectConfig) -> list[Candidate]:
    """The crossed candidates (level 0 / human have a single format), each with every objective."""
    out: dict[str, Candidate] = {}
    for o in cfg.objectives:
        for t in cfg.teachers:
            for lv in cfg.levels:
                for f in cfg.formats:
                    c = Candidate.parse(t, lv, f, o)
                    out.setdefault(c.name, c)
    return list(out.values())


def candidate_config(base: Any, cand: Candidate, out: Path) -> Any:
    """The training config of one candidate: the base config with the candidate's objective
    (logit-kd stores its teacher tables in ``out/cache/teacher-topk`` unless told otherwise)."""
    if cand.objective == base.objective:
        return base
    over: dict[str, Any] = {"objective": cand.objective}
    if cand.objective == "logit-kd" and not base.kd_cache:
        over["kd_cache"] = str(out / "cache" / "teacher-topk")
    return base.with_overrides(**over)


def _train_config(cfg: SelectConfig):
    from .train import TrainConfig

    over = {**given(cfg.train), "seed": cfg.seed}
    try:
        tc = TrainConfig.for_student(cfg.student, **over)
    except UserError as e:
        raise UserError(f"select: field 'train': {e}") from None
    if cfg.threads:
        tc = tc.with_overrides(threads=cfg.threads)
    return tc


# ------------------------------------------------------------------------------------------
# data: validation carved from train
# ------------------------------------------------------------------------------------------
def split_train_val(examples: list[Any], val_size: int, seed: int) -> tuple[list[Any], list[Any]]:
    """Carve ``val_size`` validation items from the training split (a seeded random choice);
    the rest, in their order, is for training. The test split is never involved."""
    if len(examples) < 2 * val_size:
        raise UserError(f"select: the training split has {len(examples)} items; val_size {val_size} needs at least "
                        f"{2 * val_size}; lower val_size")
    idx = list(range(len(examples)))
    random.Random(f"select-val-{seed}").shuffle(idx)
    val_idx = set(idx[:val_size])
    val = [examples[i] for i in sorted(val_idx)]
    tr = [e for i, e in enumerate(examples) if i not in val_idx]
    return tr, val


def load_examples(cfg: SelectConfig) -> list[Any]:
    from .tasks import get_task

    return get_task(cfg.task, data_dir=cfg.data_dir, **cfg.task_options).load("train")


# ------------------------------------------------------------------------------------------
# scoring
# ------------------------------------------------------------------------------------------
def score_model(model_dir: str | os.PathLike, examples: list[Any], max_new_tokens: int = 256,
                batch_size: int = 100, answer_marker: str = "The answer is", device: str | None = "auto") -> dict[str, Any]:
    """Greedy-decode ``examples`` exactly as ``cotdistill evaluate`` does (the same runtime,
    :class:`cotdistill.runtime.StudentRuntime`: continuous batching, outputs to EOS or
    ``max_new_tokens``, strict answer-line scoring; an output cut by the cap has no answer) and
    score: accuracy (Wilson 95 % interval) and the mean probability of the gold answer
    ``" {gold}."`` after the model's own rationale up to ``answer_marker`` (normal-approximation
    95 % interval). Returns also ``predictions`` (id, output, finish, pred, correct, p_gold)."""
    from .score import score_output
    from .runtime import StudentRuntime

    rt = StudentRuntime.load(Path(model_dir), device=device, max_new_tokens=max_new_tokens)
    prompts = [rt.prompt_ids(e.question) for e in examples]
    gens = rt.generate_until(prompts, batch_size=batch_size)
    # probability of the gold answer after the model's own rationale
    requests = []
    for e, p, g in zip(examples, prompts, gens):
        o = g.output
        k = o.find(answer_marker)
        head = o[:k + len(answer_marker)] if k >= 0 else (o.rstrip(". ") + (" " if o else "") + answer_marker).strip()
        requests.append((p + rt.completion_ids(head), rt.tok(f" {e.answer}.", add_special_tokens=False)["input_ids"]))
    lps = rt.loglikelihood(requests, batch_size=batch_size)
    preds: list[dict[str, Any]] = []
    for e, g, (lp, _) in zip(examples, gens, lps):
        sc = score_output(g.output, g.finish, e)
        preds.append({"id": e.id, "output": g.output, "finish": g.finish, "pred": sc["pred"],
                      "correct": bool(sc["correct"]), "p_gold": math.exp(lp)})
    n = len(preds)
    k = sum(p["correct"] for p in preds)
    lo, hi = wilson_ci(k, n)
    ps = [p["p_gold"] for p in preds]
    mean, half = _mean_half(ps)
    hy, hy_half = _mean_half([item_score("hybrid", p) for p in preds])
    return {"n": n, "accuracy": k / max(n, 1), "ci_low": lo, "ci_high": hi,
            "p_gold": mean, "p_gold_low": max(0.0, mean - half), "p_gold_high": min(1.0, mean + half),
            "hybrid": hy, "hybrid_low": max(0.0, hy - hy_half), "hybrid_high": min(1.0, hy + hy_half),
            "predictions": preds}


def item_score(score: str, pred: dict[str, Any]) -> float:
    """One validation item's score: ``hybrid`` (1 if the greedy answer is right, else the gold
    answer's probability), ``soft`` (the gold answer's probability) or ``accuracy`` (0/1)."""
    if score == "accuracy":
        return float(pred["correct"])
    if score == "soft":
        return float(pred["p_gold"])
    return 1.0 if pred["correct"] else float(pred["p_gold"])


def _mean_half(vals: list[float], z: float = 1.96) -> tuple[float, float]:
    """Mean and normal-approximation half-width of its ``z`` interval."""
    n = len(vals)
    mean = sum(vals) / max(n, 1)
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / max(n - 1, 1))
    return mean, z * sd / math.sqrt(max(n, 1))


def paired_z(a: list[float], b: list[float]) -> float:
    """z statistic of the mean paired difference ``a - b`` over the same items (capped at +-1e6, the
    value when every item favours one side by the same margin; JSON has no infinity)."""
    d = [x - y for x, y in zip(a, b)]
    mean, half = _mean_half(d, z=1.0)
    if half == 0:
        return 1e6 if mean > 0 else (-1e6 if mean < 0 else 0.0)
    return max(-1e6, min(1e6, mean / half))


# ------------------------------------------------------------------------------------------
# schedule
# ------------------------------------------------------------------------------------------
def round_sizes(n: int, eta: float) -> list[int]:
    """Survivors per training round: n, ceil(n/eta), ... down to the last round with >= 2 (or n=1)."""
    sizes = [n]
    while sizes[-1] > 1:
        nxt = max(1, math.ceil(sizes[-1] / eta))
        if nxt == sizes[-1]:
            nxt -= 1
        if nxt == 1:
            break
        sizes.append(nxt)
    return sizes


def race_target(left: float, done: int, n: int, step_cost: float, max_steps: int, mode: str,
                first: int | None = None, first_share: float = 0.1) -> tuple[int, bool]:
    """Racing: the next checkpoint for ``n`` survivors at step ``done`` with ``left`` tokens.

    Checkpoints double (``first`` or 10 % of ``max_steps``, then 2x, 4x, ...), clipped to what the
    budget affords every survivor; a leftover smaller than half the round is folded into it.
    Returns ``(target, last)``: ``last`` when this round spends the budget or reaches ``max_steps``."""
    per = n * step_cost
    if mode == "continue":
        reach = done + int(left // per)
    else:  # retraining pays the whole length again
        reach = int(left // per)
    reach = min(max_steps, reach)
    nxt = (first or max(1, round(first_share * max_steps))) if done == 0 else 2 * done
    target = min(reach, nxt)
    if reach - target < 0.5 * max(1, target - (done if mode == "continue" else 0)):
        target = reach
    return target, target >= reach


def reject_sizes(n: int) -> list[int]:
    """Survivors per round under successive rejects: n, n-1, ..., 2 (one candidate dropped per round)."""
    return list(range(n, 1, -1)) or [1]


def plan_cost(done: int, sizes: list[int], step_cost: float, s: float, eta: float, max_steps: int,
              mode: str, first: int | None = None, shape: str = "geometric") -> tuple[float, list[int]]:
    """Tokens the remaining rounds cost for scale ``s``, and the cumulative steps per round.

    ``done``: steps the survivors already have; ``sizes``: survivors in each remaining round;
    ``step_cost``: tokens per optimizer step of a mean candidate. ``shape``: ``geometric`` (round r
    adds ``s * eta**r`` steps: successive halving) or ``inverse`` (round r ends at step ``s / n_r``,
    the successive-rejects proportions: a round with half the survivors runs twice as far)."""
    t, cum = done, []
    for r, n in enumerate(sizes):
        if r == 0 and first:
            d = first
        elif shape == "inverse":
            d = max(1, int(round(s / n)) - t)
        else:
            d = max(1, int(round(s * eta ** r)))
        t = min(max_steps, t + d)
        cum.append(t)
    return schedule_cost(done, sizes, cum, step_cost, mode), cum


def schedule_cost(done: int, sizes: list[int], cum: list[int], step_cost: float, mode: str) -> float:
    """Tokens of rounds that end at the cumulative steps ``cum`` with ``sizes`` survivors, from step
    ``done`` (``continue``: each round pays its added steps; ``retrain``: its whole length)."""
    cost, t = 0.0, done
    for n, nt in zip(sizes, cum):
        cost += n * step_cost * ((nt - t) if mode == "continue" else nt)
        t = nt
    return cost


def solve_schedule(budget: float, done: int, sizes: list[int], step_cost: float, eta: float, max_steps: int,
                   mode: str, first: int | None = None, shape: str = "geometric") -> list[int]:
    """Cumulative steps per remaining round, the largest schedule of the given shape that fits ``budget``."""
    lo, hi = 0.0, float(max_steps) * (max(sizes) if shape == "inverse" else 1)
    for _ in range(60):
        mid = (lo + hi) / 2
        if plan_cost(done, sizes, step_cost, mid, eta, max_steps, mode, first, shape)[0] <= budget:
            lo = mid
        else:
            hi = mid
    return plan_cost(done, sizes, step_cost, lo, eta, max_steps, mode, first, shape)[1]


# ------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------
def _tokens_per_example(traces: list[Any], student: str) -> float:
    """Mean prompt + completion + EOS tokens of the traces under the student's tokenizer."""
    from .template import NAMED_TEMPLATES

    plain = NAMED_TEMPLATES["plain"]
    sample = traces[:512]
    if student.startswith("scratch:") and "@" not in student:
        return sum(len(plain.render_prompt(t.question)) + len(plain.render_completion(t.output)) + 1
                   for t in sample) / max(len(sample), 1)
    from .students import load_tokenizer

    tok = load_tokenizer(student)
    return sum(len(tok(plain.render_prompt(t.question) + plain.render_completion(t.output))["input_ids"]) + 1
               for t in sample) / max(len(sample), 1)


def _ranking_key(score: str, s: dict[str, Any]) -> tuple:
    if score == "accuracy":
        return (s["accuracy"], s["p_gold"])
    if score == "soft":
        return (s["p_gold"], s["accuracy"])
    return (s.get("hybrid", s["accuracy"]), s["accuracy"], s["p_gold"])


def _clearly_below(cfg: SelectConfig, z: float, gap: float) -> bool:
    """The rule that drops a candidate early and separates the winner at the end: ``drop_z``
    paired standard errors (2.58 when early drops are off) and ``drop_min_gap`` below the leader."""
    return z >= (cfg.drop_z if cfg.drop_z is not None else 2.58) and gap >= cfg.drop_min_gap


def trend_forecast(rounds: list[dict[str, Any]], score: str, max_steps: int) -> dict[str, float]:
    """Each last-round candidate's score forecast for step ``max_steps``: a line through its last two
    checkpoints, extended. Only where both checkpoints were decayed (scores of constant-rate
    checkpoints are not on the same curve); a candidate with one checkpoint keeps its score."""
    if not rounds:
        return {}
    pts: dict[str, list[tuple[int, float, bool]]] = {}
    for rd in rounds:
        for sc in rd["scores"]:
            pts.setdefault(sc["candidate"], []).append((rd["steps"], _ranking_key(score, sc)[0], bool(rd.get("decayed"))))
    out = {}
    for sc in rounds[-1]["scores"]:
        p = pts[sc["candidate"]]
        t1, y1, d1 = p[-1]
        if len(p) < 2:
            out[sc["candidate"]] = y1
            continue
        t0, y0, d0 = p[-2]
        if not (d0 and d1) or t1 <= t0:
            return {}
        out[sc["candidate"]] = y1 + (y1 - y0) / (t1 - t0) * (max_steps - t1)
    return out


def _check_first_round(cfg: SelectConfig, left: float, n: int, step_cost: float, target: int,
                       plan: tuple[list[int], list[int]] | None, out: Path, grid_tokens: float) -> None:
    """Refuse a budget that cannot train every candidate one step (race), or whose planned rounds
    overspend it (rejects / halving: each round has at least one step, the first ``first_steps``).
    The claim on ``out`` is withdrawn when nothing was trained, so a rerun with a larger budget
    is not refused as "other settings"."""
    if plan is None:
        short = target <= 0
    else:
        sizes, cum = plan
        short = schedule_cost(0, sizes, cum, step_cost, cfg.mode) > 1.02 * left
    if not short:
        return
    if not (out / "runs").exists() and not (out / "probes").exists():
        with contextlib.suppress(OSError):
            (out / "settings.json").unlink()
    need = n * step_cost * (cfg.first_steps or 1)
    hint = f" (did you mean {opt('budget')} {cfg.budget:g}%?)" if 1 < cfg.budget <= 100 else ""
    first = f" with {opt('first_steps')} {cfg.first_steps}" if cfg.first_steps else ""
    fix = f"raise {opt('budget')}" + (" (e.g. 40%)" if not 0.4 <= cfg.budget <= 1 else "")
    raise UserError(f"select: {opt('budget')} {cfg.budget:g}{hint} leaves {int(left):,} training tokens, too few for the first "
                    f"round{first} ({n} candidates need about {int(need):,}; the full grid is {int(grid_tokens):,}); "
                    + fix + (f" or lower {opt('first_steps')}" if cfg.first_steps else ""))


def _remaining_sizes(cfg: SelectConfig, n: int) -> list[int]:
    return reject_sizes(n) if cfg.schedule == "rejects" else round_sizes(n, cfg.eta)


def run_select(cfg: SelectConfig | dict[str, Any], progress: bool = True, console: Any = None) -> dict[str, Any]:
    """Run the selection (resumable: finished rounds are reused) and write ``cfg.out``. Returns the
    content of ``selection.json``. ``cfg.out`` is claimed as a select run (:mod:`cotdistill.artifacts`):
    another kind of directory is refused, and a second process on it stops at once."""
    with contextlib.ExitStack() as stack:
        return _run_select(cfg, progress, console, stack)


def _run_select(cfg: SelectConfig | dict[str, Any], progress: bool, console: Any,
                stack: contextlib.ExitStack) -> dict[str, Any]:
    import torch

    if isinstance(cfg, dict):
        cfg = _validated(cfg)
    t_start = time.time()
    out = Path(cfg.out).expanduser().resolve()
    check_out(out, "select")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # every check that can refuse the settings runs before --out is created or claimed
    full = _train_config(cfg)
    if full.max_tokens and not full.max_steps:
        raise UserError("select: field 'train.max_tokens': a token budget gives every candidate a different number of "
                        "steps, and select compares candidates at equal steps; give train.max_steps (--max-steps) for "
                        "the length of a full run instead")
    needs = [o for o in cfg.objectives if o in TEACHER_MODEL_OBJECTIVES]
    if needs and not full.teacher_model:
        raise UserError(f"select: field 'train.teacher_model': objective {needs[0]} needs a local teacher model that "
                        f"shares the student's tokenizer ({opt('teacher_model')} DIR)")
    screening_batch(cfg, full)
    cands = candidates(cfg)
    examples = load_examples(cfg)
    train_ex, val_ex = split_train_val(examples, cfg.val_size, cfg.seed)
    try:
        stack.enter_context(claim(out, "select"))
    except OSError as e:
        raise UserError(f"select: cannot create {opt('out')} {out} ({e.strerror}); choose a writable directory") from None
    _claim_out_dir(out, cfg)
    # the length of a full run: max_steps, else the config's epochs over the training split
    full_steps = int(full.max_steps or max(1, math.ceil(full.epochs * len(examples) / full.batch_size)))
    # screening may use a smaller batch: more optimizer steps for the same tokens; max_steps = the
    # full run's length in screening steps
    base, max_steps = screening_config(cfg, full, full_steps)
    bs = base.batch_size
    source = TraceSource(out / "cache", cfg.generate)

    # cost per step of every candidate, and the grid
    mix_tables: dict[str, dict[str, int]] = {}
    cost: dict[str, float] = {}
    val_len: dict[str, int] = {}
    probe_tokens: dict[str, int] = {}
    for c in cands:
        if c.kind == "mix" and is_loss_mix(c.level):
            # difficulty from this student's own loss: a probe trained on the coarse level (its tokens count)
            with _quiet(out / "log.txt"):
                # the probe trains with SFT whatever the candidate's objective: one per supervision
                probe_dir = out / "probes" / Candidate(c.teacher, c.level, c.format).slug
                mix_tables[c.name], probe = loss_mix_table(c, train_ex, cfg.student, probe_dir,
                                                           base.with_overrides(max_steps=max_steps), source)
            probe_tokens[c.name] = probe["train_tokens"]
        elif c.kind == "mix":
            mix_tables[c.name] = mix_levels(train_ex, parse_level_spec(c.level)[1], source, teacher_members(c.teacher)[0])
        sample = build_traces(c, train_ex[:512], source, mix_table=mix_tables.get(c.name))
        if not sample:
            raise UserError(f"select: candidate {c.name} has no usable traces; check the teacher")
        cost[c.name] = _tokens_per_example(sample, cfg.student) * bs
        # longest rationale any level of the candidate writes on validation items
        vt = []
        for lv in c.levels:
            vt += build_traces(Candidate(c.teacher, lv, c.format), val_ex[:50], source)
        val_len[c.name] = max(len(t.output) for t in vt) if vt else 64
    grid_tokens = sum(cost[c.name] * max_steps + probe_tokens.get(c.name, 0) for c in cands)
    plain_grid = sum(cost[c.name] * max_steps for c in cands if c.kind == "plain" and not c.teacher.startswith("union:"))
    budget = cfg.budget * grid_tokens if cfg.budget <= 1 else cfg.budget
    # plan to 98.5 %: tokens per step are estimated from 512 items, and a selection measured at
    # 40.1 % of the grid it was planned at 40 % of (quickstart, xxs, seed 0)
    budget *= PLAN_MARGIN
    shape = "inverse" if cfg.schedule == "rejects" else "geometric"
    spent_probes = float(sum(probe_tokens.values()))

    state_path = out / SELECTION
    rounds: list[dict[str, Any]] = []
    alive = list(cands)
    done_steps = 0
    spent = spent_probes
    model_of: dict[str, str] = {}
    schedule_planned = None
    work = {"tokens": 0.0, "wall": 0.0, "train_wall": 0.0, "train_tokens": 0.0}  # this invocation's measured cost

    def eta_text() -> str:
        if work["tokens"] <= 0:
            return "eta ?"
        return f"eta {max(0.0, budget - spent) * work['wall'] / work['tokens']:.0f} s"

    def plain_line(ev: ProgressEvent) -> str:  # in a log: a line per scored candidate
        i = ev.info
        if not i.get("candidate"):
            return (f"select: {len(cands)} candidates, budget {int(budget):,} training tokens "
                    f"({100 * budget / grid_tokens:.0f} % of the grid's {int(grid_tokens):,})")
        return (f"select: round {i['round']}, {i['candidate']} scored ({i['scored']}/{i['of']}) · spent {i['spent']} · "
                f"elapsed {ev.elapsed_s:.0f} s")

    with Reporter(progress, "select", cfg.student, len(_remaining_sizes(cfg, len(alive))), unit="rounds",
                  console=console, plain_line=plain_line) as rep:
        r = 0
        while True:
            mean_cost = sum(cost[c.name] for c in alive) / len(alive)
            if cfg.schedule == "race":
                target, last = race_target(budget - spent, done_steps, len(alive), mean_cost, max_steps, cfg.mode,
                                           cfg.first_steps)
                rep.set_total(r + (1 if last else 2))
                if schedule_planned is None:
                    schedule_planned = [target]
            else:
                sizes = _remaining_sizes(cfg, len(alive))
                rep.set_total(r + len(sizes))
                cum = solve_schedule(budget - spent, done_steps, sizes, mean_cost, cfg.eta, max_steps, cfg.mode,
                                     cfg.first_steps if r == 0 else None, shape)
                if schedule_planned is None:
                    schedule_planned = cum
                target = cum[0]
                last = len(sizes) == 1 or target >= max_steps
            if r == 0:
                _check_first_round(cfg, budget - spent, len(alive), mean_cost, target,
                                   None if cfg.schedule == "race" else (sizes, cum), out, grid_tokens)
            if target <= done_steps:
                break  # no budget left for another round
            scores: dict[str, dict[str, Any]] = {}
            items: dict[str, list[float]] = {}
            for c in alive:
                rdir = out / "runs" / c.slug / f"r{r}-s{target}"
                rep.update(round=r + 1, step=target, candidate=c.name, scored=len(scores), of=len(alive))
                score_path = rdir / "val.json"
                sc = json.loads(score_path.read_text()) if score_path.is_file() else None
                if sc is None:
                    rdir.mkdir(parents=True, exist_ok=True)
                    t_c = time.time()
                    with _quiet(rdir / "log.txt"):
                        if cfg.mode == "continue":
                            pieces = segment_pieces(c, train_ex, source, done_steps, target, batch_size=bs, total_steps=max_steps,
                                                    first=done_steps == 0, decay=last or cfg.cooldown == "every",
                                                    mix_table=mix_tables.get(c.name))
                            info = train_pieces(pieces, cfg.student, rdir / "model", candidate_config(base, c, out),
                                                cfg.seed + 1000 * r, init=model_of.get(c.name))
                        else:
                            pieces = segment_pieces(c, train_ex, source, 0, target, batch_size=bs, total_steps=target, first=True,
                                                    decay=True, mix_table=mix_tables.get(c.name))
                            if c.kind != "curriculum":
                                for p in pieces:
                                    p.schedule = "cosine"
                            info = train_pieces(pieces, cfg.student, rdir / "model",
                                                candidate_config(base, c, out).with_overrides(max_steps=target), cfg.seed)
                        sc = score_model(rdir / "model", val_ex, max_new_tokens=cap_for_longest(val_len[c.name]),
                                         batch_size=cfg.eval_batch_size)
                        with atomic_open(rdir / "val_predictions.jsonl") as f:
                            for p in sc.pop("predictions"):
                                f.write(json.dumps(p) + "\n")
                        sc.update({"train_tokens": info["train_tokens"], "steps_this_round": info["steps"],
                                   "compute_flops": info.get("compute_flops"),
                                   "wall_s": round(info["wall_s"], 2), "round_wall_s": round(time.time() - t_c, 2)})
                        atomic_write_json(score_path, sc)
                    work["tokens"] += sc["train_tokens"]
                    work["wall"] += time.time() - t_c
                    work["train_wall"] += sc["wall_s"]
                    work["train_tokens"] += sc["train_tokens"]
                preds = [json.loads(x) for x in (rdir / "val_predictions.jsonl").read_text(encoding="utf-8").splitlines() if x]
                items[c.name] = [item_score(cfg.score, p) for p in preds]
                model_of[c.name] = str(rdir / "model")
                spent += sc["train_tokens"]
                scores[c.name] = sc
                rep.update(scored=len(scores), spent=f"{100 * spent / max(budget, 1):.0f} % of the budget · {eta_text()}")
                rep.print_plain()
            ranked = sorted(alive, key=lambda c: _ranking_key(cfg.score, scores[c.name]), reverse=True)
            keep_n = 1 if last else (len(alive) if cfg.schedule == "race" else sizes[1])  # race drops on evidence only
            kept, dropped = ranked[:keep_n], ranked[keep_n:]
            # a candidate clearly below the leader on the same items goes now, whatever the plan
            lead = ranked[0].name
            z_vs_leader = {c.name: round(paired_z(items[lead], items[c.name]), 3) for c in ranked[1:]}
            gap_to_leader = {c.name: round(_ranking_key(cfg.score, scores[lead])[0]
                                           - _ranking_key(cfg.score, scores[c.name])[0], 6) for c in ranked[1:]}
            clear = [c for c in kept[1:] if cfg.drop_z is not None
                     and _clearly_below(cfg, z_vs_leader[c.name], gap_to_leader[c.name])]
            kept = [c for c in kept if c not in clear]
            dropped = dropped + clear
            rounds.append({
                "round": r + 1, "steps": target, "steps_added": target - done_steps if cfg.mode == "continue" else target,
                "schedule": ("cosine (retrain)" if cfg.mode == "retrain" else
                             "re-warm, linear decay to 0" if cfg.cooldown == "every" else "warmup-stable-decay"),
                "decayed": last or cfg.cooldown == "every" or cfg.mode == "retrain",
                "ranked_by": cfg.score,
                "scores": [{"candidate": c.name, **{k: v for k, v in scores[c.name].items()},
                            "z_below_leader": z_vs_leader.get(c.name), "gap_below_leader": gap_to_leader.get(c.name)}
                           for c in ranked],
                "kept": [c.name for c in kept], "dropped": [c.name for c in dropped],
                "dropped_clearly_worse": [c.name for c in clear],
            })
            rep.update(advance=1, candidate=None, best=ranked[0].name)
            alive = kept
            done_steps = target
            write_selection(state_path, {"status": "running", "rounds": rounds})
            r += 1
            if len(alive) == 1 or last:
                break
    # the final pick
    if len(alive) > 1 and rounds:
        last_scores = {s["candidate"]: s for s in rounds[-1]["scores"]}
        alive = sorted(alive, key=lambda c: _ranking_key(cfg.score, last_scores[c.name]), reverse=True)[:1]
    winner = alive[0]
    # candidates the last scores cannot tell from the leader: an uncertain choice
    close = [{"candidate": x["candidate"], "z_below": x["z_below_leader"], "gap": round(x["gap_below_leader"], 4)}
             for x in (rounds[-1]["scores"] if rounds else [])
             if x["z_below_leader"] is not None and not _clearly_below(cfg, x["z_below_leader"], x["gap_below_leader"])]
    leader, forecast = winner, {}
    if cfg.final == "trend" and close:
        forecast = trend_forecast(rounds, cfg.score, max_steps)
        tied = [leader.name] + [x["candidate"] for x in close]
        if all(c in forecast for c in tied):
            pick = max(tied, key=lambda c: forecast[c])
            winner = next(c for c in cands if c.name == pick)
            close = [x for x in close if x["candidate"] != pick]
            if pick != leader.name:
                close.insert(0, {"candidate": leader.name, "z_below": 0.0, "gap": 0.0, "leader": True})
    win_mix = None
    if winner.kind == "mix" and is_loss_mix(winner.level):
        probe_dir = out / "probes" / winner.slug / "probe"
        losses = student_losses(probe_dir, examples, source, winner.teacher, parse_level_spec(winner.level)[1][0],
                                winner.format)
        win_mix = mix_levels(examples, parse_level_spec(winner.level)[1], source, teacher_members(winner.teacher)[0],
                             losses=losses)
    elif winner.kind == "mix":
        win_mix = mix_levels(examples, parse_level_spec(winner.level)[1], source, teacher_members(winner.teacher)[0])
    all_tr = build_traces(winner, examples, source, mix_table=win_mix)
    from .traces import write_traces

    write_traces(out / "traces.jsonl", all_tr)
    result = {
        "status": "done",
        "config": cfg.model_dump(),
        "method": {"rejects": f"successive rejects (one candidate per round, plus any {cfg.drop_z} standard errors "
                              "below the leader)",
                   "race": f"racing (a candidate goes only when {cfg.drop_z} standard errors and {cfg.drop_min_gap} "
                           "below the leader)",
                   "halving": f"successive halving (eta {cfg.eta})"}[cfg.schedule],
        "candidates": [c.name for c in cands],
        "winner": {"candidate": winner.name, "teacher": winner.teacher, "level": winner.level, "format": winner.format,
                   "objective": winner.objective,
                   "not_separated_from": close, "leader": leader.name,
                   "chosen_by": "trend" if forecast and winner.name != leader.name else "leader",
                   "forecast": {k: round(v, 4) for k, v in forecast.items()},
                   "kind": winner.kind, "traces": str(out / "traces.jsonl"), "model": model_of.get(winner.name)},
        "rounds": rounds,
        "tokens_per_step": {k: round(v, 1) for k, v in cost.items()},
        "max_steps": max_steps,
        "screening": {"batch_size": bs, "learning_rate": base.learning_rate, "max_steps": max_steps,
                      "train_batch_size": full.batch_size, "train_learning_rate": full.learning_rate,
                      "train_max_steps": full_steps},
        "spent_tokens": int(spent),
        "probe_tokens": {k: int(v) for k, v in probe_tokens.items()},
        "grid_tokens": int(grid_tokens),
        "plain_grid_tokens": int(plain_grid),
        "budget_tokens": int(budget),
        "fraction_of_grid": round(spent / grid_tokens, 4) if grid_tokens else None,
        "schedule_planned": schedule_planned,
        "validation": {"size": len(val_ex), "carved_from": "train", "ids_sha": _ids_sha(val_ex)},
        "wall_s": round(time.time() - t_start, 1),
        # the grid's training time at the throughput measured in this run (None when every round was reused)
        "train_wall_s": round(work["train_wall"], 1),
        "grid_train_wall_est_s": (round(grid_tokens * work["train_wall"] / work["train_tokens"], 1)
                                  if work["train_tokens"] else None),
    }
    if winner.kind == "curriculum":
        result["winner"]["note"] = ("a curriculum depends on training order: train it with "
                                    "cotdistill.mix.train_candidate (phased), not a shuffled `cotdistill train`")
    write_selection(state_path, result)
    atomic_write_text(out / "summary.md", summary_markdown(result))
    return result


# settings that do not change what is trained or how it is scored (`final` only decides among
# the finished rounds: a rerun with another rule reuses them all)
_RUNTIME_FIELDS = ("threads", "eval_batch_size", "out", "final")
# fields added after a selection directory may have been written, with the value that reproduces
# what such a directory was trained with
_ADDED_FIELDS = {"screen_batch": 1.0}  # (objectives: the recorded train.objective, below)


def _claim_out_dir(out: Path, cfg: SelectConfig) -> None:
    """Record the settings in ``out/settings.json`` (:class:`cotdistill.artifacts.RunRecord`); a rerun
    with other settings would reuse rounds trained differently, so it is refused with the fields that differ."""
    now = cfg.model_dump(mode="json", exclude=set(_RUNTIME_FIELDS))

    def upgrade(before: dict[str, Any]) -> dict[str, Any]:  # a directory written before fields were added
        train_obj = (before.get("train") or {}).get("objective") or "sft"
        return {**_ADDED_FIELDS, "objectives": [train_obj], **before}

    record = RunRecord(out / "settings.json", now, upgrade=upgrade, exact=True)
    if record.path.is_file():
        try:
            diff = record.differences()
        except UserError:
            diff = []  # an unreadable record is replaced
        if diff:
            raise UserError(f"select: {out} holds a selection made with other settings ({', '.join(sorted(diff))}); "
                            f"use a new {opt('out')}, or delete that directory to start over")
    elif (out / "runs").is_dir():
        raise UserError(f"select: {out} has runs but no settings.json (another version or tool made them); "
                        f"use a new {opt('out')}, or delete that directory")
    record.write()


@contextlib.contextmanager
def _quiet(log_path: Path):
    """Send the trainer's printed logs to ``log_path`` (the progress bar stays on the terminal)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    with open(log_path, "a", encoding="utf-8") as fh, contextlib.redirect_stdout(fh):
        yield


def _ids_sha(exs: list[Any]) -> str:
    """The validation items' identity (recorded in selection.json)."""
    return content_key([e.id for e in exs], 16)


def summary_markdown(res: dict[str, Any]) -> str:
    """A readable account of a selection: winner, compute, every round with intervals."""
    cfg = res["config"]
    lines = [f"# Supervision selection for {cfg['student']} on {cfg['task']}", "",
             f"**Chosen: {res['winner']['candidate']}** (traces: `{res['winner']['traces']}`)", "",
             f"Compute: {res['spent_tokens']:,} training tokens = {100 * (res['fraction_of_grid'] or 0):.1f} % of the "
             f"full grid's {res['grid_tokens']:,} ({len(res['candidates'])} candidates × {res['max_steps']} steps); "
             f"budget {res['budget_tokens']:,}. Method: {res.get('method', 'successive halving')}, mode {cfg['mode']}, "
             f"ranked by {SCORE_NAMES[cfg['score']]} on "
             f"{res['validation']['size']} validation items carved from the training split (the test split is not used).",
             ""]
    objectives = cfg.get("objectives") or ["sft"]
    multi = len(objectives) > 1
    if multi:
        lines += [f"Objectives compared: {', '.join(objectives)}. Candidates train on equal steps and examples; their "
                  "compute differs and is shown per candidate as FLOPs: 6 N per trained token, plus 2 N(teacher) per "
                  "token the teacher scores and 2 N per token the student samples. A logit-kd teacher table is "
                  "paid by the round that computes it and read free by later ones.", ""]
    if res["winner"].get("objective", "sft") != "sft":
        w0 = res["winner"]
        tm = (cfg.get("train") or {}).get("teacher_model")
        lines += [f"Train the winner with `--objective {w0['objective']}`"
                  + (f" and `--teacher-model {tm}`" if tm and w0["objective"] in TEACHER_MODEL_OBJECTIVES else "")
                  + ".", ""]
    if res.get("grid_train_wall_est_s"):
        lines += [f"Wall time: {res['wall_s']:.0f} s for the whole selection (training {res['train_wall_s']:.0f} s, the rest "
                  f"validation decoding and setup); the full grid's training alone would take about "
                  f"{res['grid_train_wall_est_s']:.0f} s at the training throughput measured here, before its "
                  "evaluations.", ""]
    scr = res.get("screening") or {}
    small = scr and scr["batch_size"] != scr["train_batch_size"]
    if small:
        lines += [f"Screened at batch {scr['batch_size']} and learning rate {scr['learning_rate']:.3g} (the full run: "
                  f"batch {scr['train_batch_size']}, {scr['train_learning_rate']:.3g}): a full run is {scr['max_steps']} "
                  f"screening steps = {scr['train_max_steps']} training steps, the same tokens.", ""]
    for rd in res["rounds"]:
        eq = (f" of {scr['max_steps']} (= {rd['steps'] * scr['batch_size'] / scr['train_batch_size']:.0f} of "
              f"{scr['train_max_steps']} at batch {scr['train_batch_size']})") if small else ""
        lines += [f"## Round {rd['round']}: step {rd['steps']}{eq} ({rd['schedule']}{', decayed' if rd['decayed'] else ''})", "",
                  "| candidate | val accuracy [95 % CI] | P(gold) [95 % CI] | hybrid [95 % CI] | z below leader | train tokens | "
                  + ("train FLOPs | " if multi else "") + "kept |",
                  "|---|---|---|---|---|---|" + ("---|" if multi else "") + "---|"]
        for s in rd["scores"]:
            hy = f"{s['hybrid']:.3f} [{s['hybrid_low']:.3f}, {s['hybrid_high']:.3f}]" if "hybrid" in s else "—"
            z = s.get("z_below_leader")
            zs = "—" if z is None else (">1e6" if z >= 1e6 else f"{z:.2f}")
            kept = "yes" if s["candidate"] in rd["kept"] else (
                "no (clearly worse)" if s["candidate"] in rd.get("dropped_clearly_worse", []) else "no")
            if rd is res["rounds"][-1] and res["winner"].get("chosen_by") == "trend":
                kept = ("chosen (trend)" if s["candidate"] == res["winner"]["candidate"] else
                        "no (leader, lower trend)" if s["candidate"] == res["winner"]["leader"] else kept)
            lines.append(f"| {s['candidate']} | {100 * s['accuracy']:.1f} [{100 * s['ci_low']:.1f}, {100 * s['ci_high']:.1f}] | "
                         f"{s['p_gold']:.3f} [{s['p_gold_low']:.3f}, {s['p_gold_high']:.3f}] | {hy} | {zs} | "
                         f"{s['train_tokens']:,} | " + (f"{s['compute_flops']:.3g} | " if multi and s.get("compute_flops")
                                                         else "— | " if multi else "") + f"{kept} |")
        lines.append("")
    w = res["winner"]
    close = w.get("not_separated_from") or []
    if close:
        names = ", ".join(f"{c['candidate']} (the leader)" if c.get("leader") else
                          f"{c['candidate']} (z {c['z_below']:.2f}, gap {c['gap']:.3f})" for c in close)
        lines += [f"**Uncertain:** at the last checkpoint the winner was not separated from {names}: the "
                  "validation scores cannot tell them apart (drop_z / drop_min_gap). A larger --budget trains them "
                  "further before the choice.", ""]
    if w.get("forecast"):
        fc = ", ".join(f"{k} {v:.3f}" for k, v in sorted(w["forecast"].items(), key=lambda kv: -kv[1]))
        how = (f"chosen over the leader {w['leader']} by its trend" if w.get("chosen_by") == "trend"
               else "the leader, also first by trend")
        lines += [f"**Final choice (`final: trend`):** {w['candidate']}, {how}. Score forecast for step "
                  f"{res['max_steps']} from the last two checkpoints: {fc}.", ""]
    if res["winner"].get("note"):
        lines += [f"Note: {res['winner']['note']}.", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# select from a study, and compare with the study's grid
# ------------------------------------------------------------------------------------------
def config_from_study(study_dir: str | os.PathLike, student: str | None = None, seed: int | None = None,
                      task: str | None = None, **over: Any) -> SelectConfig:
    """A SelectConfig with the study's task, teachers, levels, formats and training settings;
    output in ``STUDY/select/<student>__s<seed>/``."""
    sd = Path(study_dir)
    st = sd / "study.json"
    if not st.is_file():
        raise UserError(f"{sd} is not a study directory (no study.json): run `cotdistill study` first")
    s = json.loads(st.read_text())
    tasks = s["tasks"]
    tk = next((t for t in tasks if task is None or t["name"] == task), None)
    if tk is None:
        raise UserError(f"study {sd} has no task {task!r}; it has {', '.join(t['name'] for t in tasks)}")
    student = student or s["students"][0]
    if student not in s["students"]:
        raise UserError(f"study {sd} has no student {student!r}; it has {', '.join(s['students'])}")
    seed = s["seeds"][0] if seed is None else seed
    slug = "".join(ch if ch.isalnum() or ch in ".-" else "-" for ch in student)
    data = {"task": tk["name"], "task_options": tk.get("options") or {}, "data_dir": s.get("data_dir"),
            "student": student, "teachers": s["teachers"], "levels": s["levels"], "formats": s["formats"],
            "objectives": s.get("objectives") or ["sft"],
            "seed": seed, "train": s.get("train") or {}, "generate": drop_masked_secrets(s.get("generate")),
            "out": str(StudyLayout(sd).selections / f"{slug}__s{seed}")}
    data.update({k: v for k, v in over.items() if v is not None and k != "train"})
    if over.get("train"):  # e.g. --max-steps: on top of the study's training settings, not instead of them
        data["train"] = {**data["train"], **over["train"]}
    return _validated(data, source=str(st))


def select_vs_grid(study_dir: str | os.PathLike, tolerance: float = 0.02) -> dict[str, Any]:
    """Whether ``select`` found the grid's best cell, per (task, student, seed) of a study.

    Reads ``STUDY/results.jsonl`` and every ``STUDY/select/*/selection.json`` (written by
    ``cotdistill select --study STUDY``). Returns ``{"available": bool, "rows": [...]}``, one row
    per selection with the grid's best cell, the chosen cell's test accuracy in the grid, the gap,
    whether it is within ``tolerance``, and the token fraction."""
    sd = Path(study_dir)
    lay = StudyLayout(sd)
    res_path = lay.results
    sels = sorted(lay.selections.glob("*/" + SELECTION)) if lay.selections.is_dir() else []
    if not res_path.is_file() or not sels:
        return {"available": False, "rows": [],
                "hint": f"run `cotdistill select --study {sd} --student S` to compare selection with the grid"}
    grid = [g.to_dict() for g in read_results(res_path) if g.status == "ok"]
    rows = []
    for sp in sels:
        sel = read_selection(sp).model_dump()
        if sel.get("status") != "done":
            continue
        c = sel["config"]
        # the grid's cells this selection raced (a `--levels` subset is judged on its own candidates)
        raced = set(sel.get("candidates") or [])

        def mine(g: dict[str, Any]) -> bool:
            return (g["task"] == c["task"] and g["student"] == c["student"]
                    and (not raced or _grid_name(g) in raced))

        cells = [g for g in grid if mine(g) and g["seed"] == c["seed"]]
        if not cells:
            continue
        best = max(cells, key=lambda g: g["accuracy"])
        w = sel["winner"]
        chosen = next((g for g in cells if _grid_name(g) == w["candidate"]), None)
        grid_tok = sum(float(g.get("train_tokens") or 0) for g in cells)
        row = {"task": c["task"], "student": c["student"], "seed": c["seed"], "selection": str(sp.parent),
               "method": f"{c.get('schedule', 'halving')}/{c.get('score', 'soft')}/{c.get('final', 'leader')}",
               "not_separated_from": [x["candidate"] for x in w.get("not_separated_from") or []],
               "chosen": w["candidate"], "grid_best": _grid_name(best),
               "grid_best_accuracy": best["accuracy"],
               "chosen_accuracy": chosen["accuracy"] if chosen else None,
               "gap": round(best["accuracy"] - chosen["accuracy"], 6) if chosen else None,
               "spent_tokens": sel["spent_tokens"],
               "grid_tokens": int(grid_tok) if grid_tok else sel["grid_tokens"],
               }
        row["within_tolerance"] = row["gap"] is not None and row["gap"] <= tolerance + 1e-9
        # can the grid itself tell the chosen cell from its best one? paired test on the same test items
        if chosen is not None and chosen is not best:
            row["test_z"] = _cells_paired_z(sd, best, chosen)
            row["tied_with_best"] = row["test_z"] is not None and row["test_z"] < 1.96
        elif chosen is not None:
            row["test_z"], row["tied_with_best"] = 0.0, True
        row["fraction_of_grid"] = round(row["spent_tokens"] / row["grid_tokens"], 4) if row["grid_tokens"] else None
        # against the grid averaged over the study's seeds (a seed's best cell is partly that seed's noise)
        by_cell: dict[str, dict[int, float]] = {}
        for g in grid:
            if mine(g):
                by_cell.setdefault(_grid_name(g), {})[g["seed"]] = g["accuracy"]
        common = set.intersection(*(set(v) for v in by_cell.values()))  # seeds every cell has
        n_seeds = len(common)
        if n_seeds > 1:
            means = {k: sum(v[seed] for seed in common) / n_seeds for k, v in by_cell.items()}
            best_m = max(means, key=means.get)
            key = w["candidate"]
            row.update({"n_seeds": n_seeds, "grid_best_mean": best_m, "grid_best_mean_accuracy": means[best_m],
                        "chosen_mean_accuracy": means.get(key),
                        "gap_mean": round(means[best_m] - means[key], 6) if key in means else None})
            row["within_tolerance_mean"] = row["gap_mean"] is not None and row["gap_mean"] <= tolerance + 1e-9
        rows.append(row)
    return {"available": bool(rows), "rows": rows, "tolerance": tolerance,
            "reproducibility": grid_reproducibility(grid, tolerance)}


def _cells_paired_z(study: Path, a: dict[str, Any], b: dict[str, Any]) -> float | None:
    """Paired z of test accuracy ``a - b`` over the test items both cells answered (None when a
    cell's predictions are missing or unreadable)."""
    per = []
    for g in (a, b):
        p = StudyLayout(study).cell(str(g.get("cell"))).predictions
        if not g.get("cell") or not p.is_file():
            return None
        try:
            preds = read_predictions(p, graded=True)
        except UserError:
            return None
        per.append({d.id: float(d.correct) for d in preds})
    ids = [i for i in per[0] if i in per[1]]
    if len(ids) < 2:
        return None
    return round(paired_z([per[0][i] for i in ids], [per[1][i] for i in ids]), 3)


def grid_reproducibility(grid: list[dict[str, Any]], tolerance: float = 0.02) -> list[dict[str, Any]]:
    """How often the grid agrees with itself across seeds, per (task, student): for every ordered
    pair of seeds (a, b), is the best cell of seed a within ``tolerance`` of the best cell of seed b
    *on seed b*? A selection judged per seed cannot be expected to beat this rate: it is what the
    whole grid, rerun with another seed, would score (the ceiling set by run-to-run noise)."""
    out = []
    keys = sorted({(g["task"], g["student"]) for g in grid})
    for task, student in keys:
        by_seed: dict[int, dict[str, float]] = {}
        for g in grid:
            if g["task"] == task and g["student"] == student:
                by_seed.setdefault(g["seed"], {})[_grid_name(g)] = g["accuracy"]
        # seeds with every cell (a seed still running, or with a failed cell, would judge on fewer)
        every = set().union(*(set(c) for c in by_seed.values())) if by_seed else set()
        seeds = sorted(s for s, cells in by_seed.items() if len(cells) > 1 and set(cells) == every)
        pairs = hits = 0
        for a in seeds:
            pick = max(by_seed[a], key=by_seed[a].get)
            for b in seeds:
                if b == a or pick not in by_seed[b]:
                    continue
                pairs += 1
                hits += max(by_seed[b].values()) - by_seed[b][pick] <= tolerance + 1e-9
        if pairs:
            out.append({"task": task, "student": student, "seeds": seeds, "pairs": pairs, "hits": hits,
                        "rate": round(hits / pairs, 4),
                        "best_per_seed": {s: max(by_seed[s], key=by_seed[s].get) for s in seeds}})
    return out


def _cell_name(teacher: str, level: Any, fmt: str, objective: str | None = "sft") -> str:
    """A grid cell's name as select names candidates (lab/L3/cot, lab/mix:3-4/cot, lab/L3/cot/logit-kd)."""
    objective = objective or "sft"
    try:
        return Candidate.parse(teacher, level, fmt, objective).name
    except UserError:
        return f"{teacher}/L{level}/{fmt}" + ("" if objective == "sft" else f"/{objective}")


def _grid_name(g: dict[str, Any]) -> str:
    return _cell_name(g["teacher"], g["level"], g["format"], g.get("objective"))


def select_vs_grid_markdown(study_dir: str | os.PathLike) -> str:
    """The comparison as a markdown section for the study report ('' when nothing to compare)."""
    d = select_vs_grid(study_dir)
    if not d["available"]:
        return ""
    lines = ["## Would `select` have found the best cell?", "",
             "| student | seed | method | grid best (acc) | select chose (acc in grid) | gap | within 2 pts | test z vs best | "
             "tokens vs grid | not separated from |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        ca = "—" if r["chosen_accuracy"] is None else f"{100 * r['chosen_accuracy']:.1f}"
        gap = "—" if r["gap"] is None else f"{100 * r['gap']:.1f}"
        lines.append(f"| {r['student']} | {r['seed']} | {r['method']} | {r['grid_best']} ({100 * r['grid_best_accuracy']:.1f}) | "
                     f"{r['chosen']} ({ca}) | {gap} | {'yes' if r['within_tolerance'] else 'no'} | "
                     f"{'—' if r.get('test_z') is None else format(r['test_z'], '.2f')} | "
                     f"{100 * (r['fraction_of_grid'] or 0):.0f} % | {', '.join(r['not_separated_from']) or '—'} |")
    n_ok = sum(r["within_tolerance"] for r in d["rows"])
    n_tied = sum(bool(r.get("tied_with_best")) for r in d["rows"])
    lines += ["", f"{n_ok} of {len(d['rows'])} selections chose the grid's best cell of their seed or one within 2 accuracy points; "
              f"{n_tied} of {len(d['rows'])} chose a cell the grid cannot tell from its best one (paired test on the test "
              "items, z < 1.96). Method = schedule/score/final rule (`rejects`: one candidate dropped per round; `halving`: "
              "half per round; score `hybrid`: 1 per right validation answer, else P(gold); `trend`: among the candidates "
              "tied with the last leader, the best forecast for the full run)."]
    rep = d.get("reproducibility") or []
    if rep:
        lines += ["", "How often the grid agrees with itself: the best cell of one seed, judged on another seed of the same "
                  "grid (every ordered pair of seeds). A per-seed selection cannot be expected to do better than the whole "
                  "grid rerun with another seed.", "",
                  "| student | best cell per seed | another seed's best within 2 pts |", "|---|---|---|"]
        for r in rep:
            per = ", ".join(f"{s}: {c}" for s, c in r["best_per_seed"].items())
            lines.append(f"| {r['student']} | {per} | {r['hits']} of {r['pairs']} ({100 * r['rate']:.0f} %) |")
    multi = [r for r in d["rows"] if r.get("n_seeds")]
    if multi:
        lines += ["", "Against the grid averaged over its seeds (a seed's best cell is partly that run's noise):", "",
                  "| student | seed | method | best on the seed mean (mean acc) | chosen (mean acc) | gap | within 2 pts |",
                  "|---|---|---|---|---|---|---|"]
        for r in multi:
            cm = "—" if r["chosen_mean_accuracy"] is None else f"{100 * r['chosen_mean_accuracy']:.1f}"
            gm = "—" if r["gap_mean"] is None else f"{100 * r['gap_mean']:.1f}"
            lines.append(f"| {r['student']} | {r['seed']} | {r['method']} | {r['grid_best_mean']} "
                         f"({100 * r['grid_best_mean_accuracy']:.1f}, {r['n_seeds']} seeds) | {r['chosen']} ({cm}) | {gm} | "
                         f"{'yes' if r['within_tolerance_mean'] else 'no'} |")
        n_m = sum(r["within_tolerance_mean"] for r in multi)
        lines += ["", f"{n_m} of {len(multi)} within 2 points of the best cell on the seed mean."]
    return "\n".join(lines) + "\n"
