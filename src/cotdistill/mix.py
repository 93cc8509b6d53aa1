"""Mixed and curriculum supervision: candidates beyond one (teacher, level, format) cell.

Names a study or ``cotdistill select`` can list next to the plain levels and teachers:

============================  ===============================================================
``level: "mix:A-B"``          per-example level by difficulty: the easier half of the
                              training items gets the coarse level A, the harder half the fine
                              level B. Difficulty = the teacher's step count (then length) of
                              its finest (level 6) rationale for the item.
``level: "mix:A-B:loss"``     the same split, difficulty from the student's own loss: a probe (the
                              student trained on level A for 10 % of the run's steps, counted in
                              the candidate's tokens) scores every training item by its mean
                              token loss on the level-A target; the higher half gets level B.
``level: "mix:difficulty"``   alias of ``mix:3-6`` (the coarsest and finest level that write
                              operands on ``arith``); ``mix:difficulty:loss`` = ``mix:3-6:loss``.
``level: "curriculum:A-B"``   coarse-to-fine over training steps: the run is cut into equal
                              phases, phase k trains on level ``A + k`` (``curriculum:1-6``: six
                              phases). ``curriculum:3,6`` lists the phase levels explicitly.
``teacher: "union:T1+T2"``    union of teachers: item i is supervised by teacher
                              ``members[hash(id) % k]`` (same items and steps as one teacher).
============================  ===============================================================

A candidate's traces are ordinary :class:`~cotdistill.traces.Trace` records (each keeps its
real level and teacher), so ``cotdistill train`` accepts them. A curriculum only exists in the
order of training: :func:`train_candidate` trains it in phases (each phase continues from the
previous phase's weights, constant learning rate, decay in the last phase: a
warmup-stable-decay schedule); a plain ``train`` on its traces would shuffle the phases.

    cand = Candidate.parse("lab", "curriculum:3-6", "cot")
    src = TraceSource(cache_dir)
    traces = build_traces(cand, train_examples, src)          # every item once
    train_candidate(cand, train_examples, "scratch:llama-xxs", "out/model", TrainConfig.scratch())
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .artifacts import content_key
from .errors import UserError, protect_secrets
from .spec import MIX_ALIASES, Candidate, is_pseudo, parse_level_spec, teacher_members  # noqa: F401  (re-exported)
from .traces import Trace

PROBE_FRACTION = 0.1  # share of the run's steps the loss-difficulty probe trains


# ------------------------------------------------------------------------------------------
# rationales
# ------------------------------------------------------------------------------------------
class TraceSource:
    """Rationales of a teacher for (example, level, format). The ``lab`` teacher is a pure
    function (computed); any other teacher spec goes through :func:`cotdistill.generate.generate`
    into ``cache_dir``: one directory per (teacher, level, format, options), whose call store
    answers every item asked before, so each item costs one call however often and in whatever
    slices it is asked for (resumable across runs)."""

    def __init__(self, cache_dir: str | os.PathLike | None = None, generate_options: dict[str, Any] | None = None):
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.generate_options = protect_secrets(generate_options)
        self._mem: dict[tuple, dict[str, str]] = {}
        self._asked: dict[tuple, set[str]] = {}

    def rationale(self, teacher: str, example: Any, level: Any, fmt: str) -> str | None:
        if teacher == "lab":
            from .tasks.arith import lab_rationale

            return lab_rationale(example, level, fmt)
        if level == 0:
            return f"The answer is {example.answer}."
        return self._table(teacher, level, fmt, None).get(example.id)

    def prepare(self, teacher: str, examples: Sequence[Any], level: Any, fmt: str) -> None:
        if teacher != "lab" and level != 0:
            self._table(teacher, level, fmt, examples)

    def _table(self, teacher: str, level: Any, fmt: str, examples: Sequence[Any] | None) -> dict[str, str]:
        key = (teacher, str(level), fmt)
        if examples is None:
            if key not in self._mem:
                raise UserError(f"teacher {teacher}: traces for level {level} were not prepared")
            return self._mem[key]
        asked = self._asked.setdefault(key, set())
        table = self._mem.setdefault(key, {})
        missing = list({e.id: e for e in examples if e.id not in asked}.values())
        if not missing:
            return table
        if self.cache_dir is None:
            raise UserError(f"teacher {teacher}: a cache directory is needed to generate its traces")
        from .generate import GenerateConfig, generate

        ident = {k: v for k, v in self.generate_options.items() if k not in ("max_cost", "price_in", "price_out")}
        h = content_key([teacher, str(level), fmt, ident], 16, compact=False)
        conf = GenerateConfig.model_validate({**self.generate_options, "teacher": teacher, "levels": [level],
                                              "formats": [fmt]})
        # the directory's call store holds every item generated before: only new items are called
        res = generate(missing, self.cache_dir / "generate" / h, conf, progress=False, wait_for_lock=True)
        for t in res.traces:
            if t.correct is False:
                continue  # keep the rationales that reach the gold answer
            table.setdefault(t.id, t.output)
        asked.update(e.id for e in missing)
        return table


def difficulty(example: Any, source: TraceSource, teacher: str) -> tuple[int, int]:
    """The teacher's step count of its finest rationale for the item, then its length."""
    from .traces import count_steps, proxy_tokens

    text = source.rationale(teacher, example, 6, "cot") or ""
    return count_steps(text, "cot"), proxy_tokens(text)


def is_loss_mix(level: Any) -> bool:
    """True for ``mix:A-B:loss`` (difficulty from the student's own loss)."""
    try:
        kind, spec = parse_level_spec(level)
    except UserError:
        return False
    return kind == "mix" and len(spec) == 3


def mix_levels(examples: Sequence[Any], levels: tuple, source: TraceSource, teacher: str,
               losses: dict[str, float] | None = None) -> dict[str, int]:
    """Per-example level: easier half coarse (level A), harder half fine (level B). Difficulty is
    the teacher's step count (:func:`difficulty`), or for ``(A, B, "loss")`` the student's loss
    per item (``losses``, from :func:`student_losses`)."""
    a, b = levels[:2]
    if len(levels) > 2:
        if losses is None:
            raise UserError(f"mix:{a}-{b}:loss needs the student's per-item losses (cotdistill.mix.loss_mix_table)")
        missing = [e.id for e in examples if e.id not in losses]
        if missing:
            raise UserError(f"mix:{a}-{b}:loss: no student loss for {len(missing)} items, e.g. {missing[0]}")
        d = sorted(((losses[e.id], i) for i, e in enumerate(examples)))
    else:
        if teacher != "lab":
            source.prepare(teacher, examples, 6, "cot")
        d = sorted(((difficulty(e, source, teacher), i) for i, e in enumerate(examples)))
    cut = len(d) // 2
    out: dict[str, int] = {}
    for rank, (_, i) in enumerate(d):
        out[examples[i].id] = a if rank < cut else b
    return out


def student_losses(model_dir: str | os.PathLike, examples: Sequence[Any], source: TraceSource, teacher: str,
                   level: Any, fmt: str = "cot", batch_size: int = 64) -> dict[str, float]:
    """Mean token loss (nats) of the model on each item's level-``level`` target (rationale + answer
    + EOS, as training sees it) after the item's prompt: the student's own difficulty."""
    from .runtime import StudentRuntime

    rt = StudentRuntime.load(Path(model_dir))
    members = teacher_members(teacher)
    for m in set(members):
        source.prepare(m, examples, level, fmt)
    requests = []
    for e in examples:
        t = _member_for(e.id, members) if len(members) > 1 else members[0]
        text = source.rationale(t, e, level, fmt)
        if text is None:
            text = f"The answer is {e.answer}."
        requests.append((rt.prompt_ids(e.question), rt.completion_ids(text, eos=True)))
    return {e.id: -lp / n for e, (lp, n) in zip(examples, rt.loglikelihood(requests, batch_size=batch_size))}


def loss_mix_table(cand: Candidate, examples: Sequence[Any], student: str, work_dir: str | os.PathLike, config: Any,
                   source: TraceSource, probe_steps: int | None = None) -> tuple[dict[str, int], dict[str, Any]]:
    """The per-item levels of a ``mix:A-B:loss`` candidate for this student: train a probe (the
    student on level A for ``probe_steps``, default 10 % of the run, from scratch), score every item
    by the probe's loss on its level-A target, give the higher-loss half level B. Cached in
    ``work_dir`` (``probe/``, ``losses.json``, ``mix_table.json``). Returns the table and the probe's
    training info (its tokens count as the candidate's compute)."""
    kind, spec = parse_level_spec(cand.level)
    if kind != "mix" or len(spec) < 3:
        raise UserError(f"{cand.name} is not a loss-difficulty mix (mix:A-B:loss)")
    a = spec[0]
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    table_path = work / "mix_table.json"
    total = int(config.max_steps or math.ceil(config.epochs * len(examples) / config.batch_size))
    steps = probe_steps or max(1, int(round(PROBE_FRACTION * total)))
    if table_path.is_file():
        saved = json.loads(table_path.read_text())
        if saved.get("probe", {}).get("steps") == steps and set(saved["table"]) == {e.id for e in examples}:
            return {k: int(v) for k, v in saved["table"].items()}, saved["probe"]
    probe_cand = Candidate(cand.teacher, a, cand.format)
    pieces = segment_pieces(probe_cand, examples, source, 0, steps, batch_size=config.batch_size, total_steps=steps,
                            first=True, decay=True)
    info = train_pieces(pieces, student, work / "probe", config, config.seed + 7)
    losses = student_losses(work / "probe", examples, source, cand.teacher, a, cand.format)
    table = mix_levels(examples, spec, source, teacher_members(cand.teacher)[0], losses=losses)
    probe = {"steps": steps, "level": a, "train_tokens": int(info["train_tokens"]), "wall_s": round(info["wall_s"], 2),
             "mean_loss_easy_half": _mean([losses[k] for k, v in table.items() if v == a]),
             "mean_loss_hard_half": _mean([losses[k] for k, v in table.items() if v != a])}
    from .fileio import atomic_write_json

    atomic_write_json(table_path, {"candidate": cand.name, "probe": probe, "table": table})
    return table, probe


def _mean(xs: list[float]) -> float | None:
    return round(sum(xs) / len(xs), 4) if xs else None


def _member_for(example_id: str, members: list[str]) -> str:
    h = int(hashlib.sha256(example_id.encode()).hexdigest()[:8], 16)
    return members[h % len(members)]


def curriculum_level(levels: list[int], step: int, total_steps: int) -> int:
    """Level of the phase that contains optimizer step ``step`` (0-based) of ``total_steps``."""
    k = len(levels)
    return levels[min(k - 1, max(0, step * k // max(total_steps, 1)))]


def phase_bounds(levels: list[int], total_steps: int) -> list[int]:
    """Step indices where curriculum phases start (plus ``total_steps``)."""
    k = len(levels)
    return sorted({math.ceil(total_steps * j / k) for j in range(k)} | {total_steps})


def _trace(example: Any, teacher: str, level: Any, fmt: str, output: str, tag: str) -> Trace:
    return Trace(id=example.id, task=example.task, question=example.question, gold=str(example.answer),
                 answer_type=getattr(example, "answer_type", None), teacher=teacher, level=level, format=fmt if level not in (0, "human") else "cot",
                 output=output, pred=str(example.answer), correct=True, source=tag)


def build_traces(cand: Candidate, examples: Sequence[Any], source: TraceSource, *,
                 level_of: Callable[[int, Any], Any] | None = None, mix_table: dict[str, int] | None = None) -> list[Trace]:
    """Traces of ``cand`` for ``examples`` (in order). ``level_of(i, example)`` overrides the level
    (curricula use it to give each position its phase's level). Items a teacher has no usable
    rationale for are skipped."""
    kind, spec = parse_level_spec(cand.level)
    members = teacher_members(cand.teacher)
    if kind == "mix" and mix_table is None and len(spec) > 2:
        # no student at hand: the pool both levels come from (training picks per item by the student's loss)
        return [t for lv in spec[:2] for t in build_traces(Candidate(cand.teacher, lv, cand.format), examples, source)]
    if kind == "mix" and mix_table is None:
        mix_table = mix_levels(examples, spec, source, members[0])
    if kind == "curriculum" and level_of is None:
        level_of = lambda i, e: spec[min(len(spec) - 1, i * len(spec) // max(len(examples), 1))]  # noqa: E731
    # prepare non-lab teachers' traces in one batch per level
    need_levels = cand.levels if kind != "plain" else [spec]
    for m in set(members):
        for lv in need_levels:
            source.prepare(m, examples, lv, cand.format)
    out = []
    for i, e in enumerate(examples):
        teacher = _member_for(e.id, members) if len(members) > 1 else members[0]
        if kind == "plain":
            lv = spec
        elif kind == "mix":
            lv = mix_table[e.id]
        else:
            lv = level_of(i, e)
        if level_of is not None and kind != "curriculum":
            lv = level_of(i, e)
        text = source.rationale(teacher, e, lv, cand.format)
        if text is None:
            continue
        out.append(_trace(e, teacher, lv, cand.format, text, f"cotdistill.mix:{cand.name}"))
    return out


# ------------------------------------------------------------------------------------------
# training in segments (continuation) -- used by select and for curricula
# ------------------------------------------------------------------------------------------
def cyclic_slice(items: Sequence[Any], start: int, stop: int) -> list[Any]:
    """``items[start:stop]`` wrapping around (epochs over a finite list)."""
    n = len(items)
    if n == 0:
        return []
    return [items[i % n] for i in range(start, stop)]


@dataclass
class Piece:
    """One continuous training call: traces, number of steps, learning-rate shape."""

    traces: list[Trace]
    steps: int
    schedule: str  # "warmup" (constant after warmup), "constant", "decay" (linear to 0), "cosine"
    level: Any = None


def segment_pieces(cand: Candidate, examples: Sequence[Any], source: TraceSource, start: int, stop: int, *,
                   total_steps: int, batch_size: int, first: bool, decay: bool,
                   mix_table: dict[str, int] | None = None) -> list[Piece]:
    """The training calls that take ``cand`` from step ``start`` to ``stop`` of a ``total_steps`` run.

    Step s trains on items ``[s*batch_size, (s+1)*batch_size)`` of ``examples`` (cyclic), so a
    continued run sees new items, as one long run would. A curriculum segment is cut at its phase
    boundaries. ``first``: the segment starts from scratch (warmup); ``decay``: the learning rate
    decays to 0 over the segment's last piece (the "decay" of warmup-stable-decay)."""
    kind, spec = parse_level_spec(cand.level)
    cuts = [start, stop]
    if kind == "curriculum":
        cuts = sorted({start, stop} | {b for b in phase_bounds(spec, total_steps) if start < b < stop})
    pieces = []
    for j, (a, b) in enumerate(zip(cuts, cuts[1:])):
        exs = cyclic_slice(examples, a * batch_size, b * batch_size)
        if kind == "curriculum":
            lv = curriculum_level(spec, a, total_steps)
            tr = build_traces(cand, exs, source, level_of=lambda i, e, lv=lv: lv)
        else:
            lv = cand.level
            tr = build_traces(cand, exs, source, mix_table=mix_table)
        last = j == len(cuts) - 2
        sched = "warmup" if (first and j == 0) else "constant"
        if decay and last:
            sched = "decay" if sched == "constant" else "warmup-decay"
        pieces.append(Piece(tr, b - a, sched, lv))
    return pieces


def piece_config(base: Any, piece: Piece, seed: int) -> Any:
    """TrainConfig for one piece: the base config with the piece's steps and schedule."""
    over: dict[str, Any] = {"max_steps": piece.steps, "seed": seed, "epochs": 1.0, "max_tokens": None}
    if piece.schedule == "warmup":
        over.update(lr_scheduler="constant_with_warmup")
    elif piece.schedule == "constant":
        over.update(lr_scheduler="constant_with_warmup", warmup_steps=min(base.warmup_steps, 10))
    elif piece.schedule == "decay":
        over.update(lr_scheduler="linear", warmup_steps=min(base.warmup_steps, 10))
    elif piece.schedule == "warmup-decay":
        over.update(lr_scheduler="linear")
    # "cosine": the base config as is
    over["save_steps"] = max(piece.steps + 1, base.save_steps)
    data = base.model_dump()
    data.update(over)
    return type(base).model_validate(data)


def train_pieces(pieces: list[Piece], student: str, out_dir: str | os.PathLike, base_config: Any,
                 seed: int, init: str | None = None, progress: bool = False) -> dict[str, Any]:
    """Train the pieces one after another (each continues from the previous weights) into ``out_dir``.

    Finished pieces are kept in ``<out_dir>.pieces/`` so an interrupted chain resumes. Returns
    ``{"train_tokens", "steps", "wall_s", "final_loss", "compute_flops"}`` summed over the pieces
    (compute as in the run summaries: teacher forward passes and sampling included)."""
    from .train import is_complete, load_result, train

    out = Path(out_dir)
    if is_complete(out) and (out / "pieces.json").is_file():
        return json.loads((out / "pieces.json").read_text())
    work = out.with_name(out.name + ".pieces")
    work.mkdir(parents=True, exist_ok=True)
    cur = init or student
    tot = {"train_tokens": 0, "steps": 0, "wall_s": 0.0, "final_loss": None, "compute_flops": 0, "pieces": []}
    for j, p in enumerate(pieces):
        pdir = work / f"p{j}"
        if not p.traces:
            raise UserError(f"no training traces for piece {j} (level {p.level}); check the teacher's traces")
        if is_complete(pdir):
            res = load_result(pdir)
        else:
            cfg = piece_config(base_config, p, seed + j)
            res = train(p.traces, cur, pdir, cfg, resume=True, progress=progress, mix=True)
        tot["train_tokens"] += int(res.train_tokens)
        tot["steps"] += int(res.steps)
        tot["wall_s"] += float(res.wall_s)
        tot["final_loss"] = res.final_loss
        tot["compute_flops"] += int(res.summary.get("compute_flops") or 0)
        tot["pieces"].append({"steps": p.steps, "schedule": p.schedule, "level": p.level,
                              "train_tokens": int(res.train_tokens)})
        cur = str(pdir)
    from .fileio import atomic_path

    with atomic_path(out) as tmp:
        shutil.copytree(cur, tmp)
        (tmp / "pieces.json").write_text(json.dumps(tot, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return tot


def train_candidate(cand: Candidate, examples: Sequence[Any], student: str, out_dir: str | os.PathLike,
                    config: Any, source: TraceSource | None = None, progress: bool = False) -> dict[str, Any]:
    """Train ``student`` on ``cand`` for ``config.max_steps`` steps over ``examples``.

    A plain or mixed candidate is one ordinary run with the config's own schedule; a curriculum
    is trained in phases with warmup-stable-decay (the study hook for ``curriculum:`` levels)."""
    from .train import train

    source = source or TraceSource()
    total = int(config.max_steps or math.ceil(config.epochs * len(examples) / config.batch_size))
    if cand.kind == "curriculum":
        pieces = segment_pieces(cand, examples, source, 0, total, batch_size=config.batch_size, total_steps=total,
                                first=True, decay=True)
        return train_pieces(pieces, student, out_dir, config, config.seed, progress=progress)
    probe = None
    table = None
    if is_loss_mix(cand.level):
        out = Path(out_dir)
        table, probe = loss_mix_table(cand, examples, student, out.with_name(out.name + ".probe"), config, source)
    traces = build_traces(cand, examples, source, mix_table=table)
    res = train(traces, student, out_dir, config, resume=True, progress=progress, mix=True)
    info = {"train_tokens": int(res.train_tokens), "steps": int(res.steps), "wall_s": float(res.wall_s),
            "final_loss": res.final_loss}
    if probe:
        # the probe is part of this candidate's compute
        info.update(train_tokens=info["train_tokens"] + probe["train_tokens"], wall_s=info["wall_s"] + probe["wall_s"],
                    probe=probe)
    return info
