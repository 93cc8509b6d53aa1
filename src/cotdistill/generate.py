"""Teacher generation: every (example, level, format, sample) -> one Trace, crash-safe and resumable.

>>> from cotdistill.generate import GenerateConfig, generate
>>> cfg = GenerateConfig(teacher="openai:gpt-4o-mini", levels=[1, 3, 5], formats=["cot"])
>>> res = generate(examples, "runs/svamp-gpt4o", cfg)      # -> GenerateResult
>>> res.traces_path                                         # runs/svamp-gpt4o/traces.jsonl

Every completed call is appended to ``OUT/calls.jsonl`` (a :class:`cotdistill.store.Store`,
fsync'd) the moment it returns, keyed by a hash of (backend, model, messages, sampling
parameters, sample index). A rerun skips every stored success and retries stored failures, so a
run killed at any moment and run again yields the same ``traces.jsonl`` without repeating a
completed call. ``traces.jsonl`` is written at the end, atomically, in a fixed order
(example, level, format, sample). Level 0 needs no call (``The answer is <gold>.``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import Field, field_validator

from . import answers
from .fileio import atomic_write_text
from .errors import UserError, opt, redact
from .prompts import EXEMPLARS, answer_only, build_messages, build_rewrite_messages
from .spec import parse_formats, parse_levels
from .store import Store, content_key
from .teachers.base import Request, Result, Teacher, TeacherConfig, make_teacher
from .artifacts import claim
from .progress import Progress, Reporter
from .traces import Trace, read_traces, write_traces

CALLS_FILE = "calls.jsonl"
TRACES_FILE = "traces.jsonl"


# USD per 1M (prompt, completion) tokens; reasoning tokens are billed as completion tokens
LIST_PRICES_AS_OF = "list prices, 2025"
LIST_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    "deepseek-chat": (0.27, 1.10),
    "deepseek-reasoner": (0.55, 2.19),
    "gemini-1.5-flash": (0.075, 0.30),
}


class GenerateConfig(TeacherConfig):
    """Everything ``cotdistill generate`` needs besides the examples (loadable from YAML)."""

    teacher: str = Field(..., description="backend:model, e.g. openai:gpt-4o-mini, hf:./m, replay:traces.jsonl, lab")
    levels: list[Union[int, Literal["human"]]] = Field(default_factory=lambda: [1, 2, 3, 4, 5, 6],
                                                       description="Granularity levels; 0 = answer only (no call).")
    formats: list[str] = Field(default_factory=lambda: ["cot"], description="Formats among cot, subq, rar, sym.")
    samples: int = Field(1, ge=1, description="Samples per (example, level, format); use temperature > 0 for n > 1.")
    hint_gold: bool = Field(False, description="Show the gold answer to the teacher (the paper's 'with ground truth').")
    price_in: Optional[float] = Field(None, ge=0, description="USD per 1M prompt tokens, for the cost column.")
    price_out: Optional[float] = Field(None, ge=0, description="USD per 1M completion tokens (reasoning tokens included).")
    max_cost: Optional[float] = Field(None, gt=0, description="USD: stop launching calls before the spend would exceed this "
                                                                "(calls already paid are kept); needs prices")

    def prices(self) -> tuple[float, float, str] | None:
        """``(USD per 1M prompt tokens, per 1M completion tokens, where from)``: the explicit
        prices, else the list price of a known model (:data:`LIST_PRICES`), else None."""
        if self.price_in is not None or self.price_out is not None:
            return self.price_in or 0.0, self.price_out or 0.0, "--price-in/--price-out"
        model = self.teacher.split(":", 1)[-1].lower()
        for name, (pi, po) in sorted(LIST_PRICES.items(), key=lambda kv: -len(kv[0])):
            if model == name or model.startswith(name + "-") or model.endswith("/" + name):
                return pi, po, f"list price of {name} ({LIST_PRICES_AS_OF}; override with --price-in/--price-out)"
        return None

    @field_validator("levels", mode="before")
    @classmethod
    def _levels(cls, v: Any) -> Any:
        return parse_levels(v)

    @field_validator("formats", mode="before")
    @classmethod
    def _formats(cls, v: Any) -> Any:
        return parse_formats(v)

    def public_dict(self) -> dict[str, Any]:
        """The resolved config without secrets (written to OUT/config.json)."""
        d = self.model_dump(mode="json", exclude={"api_key"})
        d["api_key"] = "***" if self.api_key else None
        return d


class GenerationInterrupted(UserError):
    """Ctrl-C: everything completed is stored; the same command resumes."""

    exit_code = 130


@dataclass
class GenerateResult:
    out_dir: Path
    traces_path: Path
    traces: list[Trace]
    calls: int  # teacher calls this command needs in total
    cached: int  # of which already stored before this run
    done: int  # completed in this run
    failed: list[dict[str, Any]] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0
    stopped_at_max_cost: bool = False  # --max-cost reached: the calls not made are listed as failed
    cost: float | None = None  # USD spent in this run (None without prices)


def _job_key(teacher: Teacher, req: Request) -> str:
    if teacher.cacheable:
        return content_key({"backend": teacher.backend, "model": teacher.model, "messages": req.messages,
                            "params": teacher.params(), "sample": req.sample})
    ex = req.example
    return content_key({"backend": teacher.backend, "model": teacher.model, "task": ex.task, "id": ex.id,
                        "question": ex.question, "level": req.level, "format": req.fmt, "sample": req.sample})


def examples_from_traces(path: str | os.PathLike, known: dict[str, Any] | None = None) -> list[Any]:
    """Examples to rewrite (``generate --from-traces``): one per trace of ``path``, each carrying
    the trace's rationale (its reasoning and final response) to rewrite. A file with several traces
    of one example is refused: pick one cell first (``cotdistill curate --teachers/--levels``).
    ``known`` (id -> Example) supplies the examples' own metadata when the caller has them (a study
    knows its task options); otherwise arith examples are regenerated from their ids."""
    from .tasks import get_task
    from .tasks.base import Example

    traces = read_traces(path)
    seen: dict[tuple[str, str], str] = {}
    out = []
    for t in traces:
        k = (t.task, t.id)
        if k in seen:
            raise UserError(f"{path} holds several traces of {t.task}/{t.id} ({seen[k]} and {t.teacher} L{t.level} "
                            f"{t.format}): keep one cell with `cotdistill curate {path} --teachers T --levels L --formats F --out DIR`")
        seen[k] = f"{t.teacher} L{t.level} {t.format}"
        atype = get_task(t.task).answer_type
        source = (f"{t.reasoning.strip()}\n\n{t.output.strip()}" if t.reasoning else t.output).strip()
        meta: dict[str, Any] = {}
        mine = (known or {}).get(t.id)
        if mine is not None and mine.question == t.question:
            meta = dict(mine.meta)
        elif t.task == "arith":  # the lab teacher needs the problem's structure
            from .tasks.arith import recover

            ex = recover(t.id, t.question)
            meta = dict(ex.meta) if ex is not None else {}
        meta.update({"rewrite_source": source, "rewrite_of": f"{t.teacher} L{t.level} {t.format}"})
        out.append(Example(id=t.id, task=t.task, split="train", question=t.question, answer=t.gold, answer_type=atype,
                           meta=meta))
    return out


def plan(examples: list[Any], config: GenerateConfig, teacher: Teacher | None = None) -> list[Request]:
    """All jobs in output order. Level 0 jobs have ``messages=None`` and ``key=""`` (no call)."""
    jobs: list[Request] = []
    needs_messages = teacher.needs_messages if teacher is not None else True
    if teacher is not None and teacher.backend not in ("replay",) and "human" in config.levels:
        raise UserError(f"level 'human' can only be replayed from imported data: use {opt('teacher')} replay:FILE")
    for ex in examples:
        for level in config.levels:
            # answer only (level 0) and human rationales have one form: one cell, `cot`
            for fmt in (["cot"] if level in (0, "human") else config.formats):
                for s in range(1 if level == 0 else config.samples):
                    r = Request(example=ex, level=level, fmt=fmt, sample=s)
                    src = (getattr(ex, "meta", None) or {}).get("rewrite_source")
                    if src is not None:
                        r.meta["source"] = src
                    if level != 0:
                        if needs_messages:
                            r.messages = (build_rewrite_messages(ex, level, fmt, src, hint_gold=config.hint_gold)
                                          if src is not None else
                                          build_messages(ex, level, fmt, hint_gold=config.hint_gold))
                        if teacher is not None:
                            r.key = _job_key(teacher, r)
                    jobs.append(r)
    return jobs


def _est_completion_tokens(answer_type: str, level: Any, fmt: str) -> float:
    ex = EXEMPLARS.get((answer_type, level, fmt)) or EXEMPLARS.get((answer_type, level, "cot")) or ""
    return 1.5 * len(ex) / 4  # benchmark questions run ~1.5x our exemplars


def dry_run(examples: list[Any], config: GenerateConfig, out_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Count calls (minus those already stored in ``out_dir``) and estimate tokens; calls nothing."""
    jobs = plan(examples, config)
    store_keys: set[str] = set()
    backend, _, model = config.teacher.partition(":")
    cacheable = backend in ("openai", "hf", "vllm")
    if out_dir is not None and cacheable and (Path(out_dir) / CALLS_FILE).exists():
        st = Store(Path(out_dir) / CALLS_FILE)
        store_keys = {r["key"] for r in st.records() if r.get("status") == "ok"}
        st.close()
    rows: dict[tuple, dict[str, Any]] = {}
    for j in jobs:
        row = rows.setdefault((j.level, j.fmt), {"level": j.level, "format": j.fmt, "calls": 0, "cached": 0,
                                                  "prompt_tokens": 0.0, "completion_tokens": 0.0})
        if j.level == 0:
            continue
        if cacheable and j.messages is not None:
            key = content_key({"backend": backend, "model": model, "messages": j.messages,
                               "params": {"temperature": config.temperature, "top_p": config.top_p,
                                          "max_tokens": config.max_tokens, "seed": config.seed},
                               "sample": j.sample})
            if key in store_keys:
                row["cached"] += 1
                continue
        row["calls"] += 1
        if j.messages is not None:
            row["prompt_tokens"] += sum(len(m["content"]) for m in j.messages) / 4
        row["completion_tokens"] += _est_completion_tokens(j.example.answer_type, j.level, j.fmt)
    out = []
    for row in rows.values():
        row["prompt_tokens"] = int(row["prompt_tokens"])
        row["completion_tokens"] = int(row["completion_tokens"])
        row["cost"] = _cost(config, row["prompt_tokens"], row["completion_tokens"])
        out.append(row)
    total = {k: sum(r[k] for r in out) for k in ("calls", "cached", "prompt_tokens", "completion_tokens")}
    total["cost"] = _cost(config, total["prompt_tokens"], total["completion_tokens"])
    return {"rows": out, "total": total}


def _cost(config: GenerateConfig, p: float, c: float) -> float | None:
    pr = config.prices()
    if pr is None:
        return None
    return round((p * pr[0] + c * pr[1]) / 1e6, 6)


def _run_coro(factory):
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # called from inside an event loop (notebooks)
        return pool.submit(asyncio.run, factory()).result()


def generate(
    examples: list[Any],
    out_dir: str | os.PathLike,
    config: GenerateConfig | None = None,
    *,
    teacher: Teacher | str | None = None,
    progress: Progress = True,
    console: Any = None,
    wait_for_lock: bool = False,
    **overrides: Any,
) -> GenerateResult:
    """Generate traces for ``examples`` into ``out_dir/traces.jsonl`` (resumable; see module doc).

    ``config`` may be omitted and given as keyword overrides (``teacher="lab", levels=[0, 3]``);
    ``teacher`` is a spec string or an already built :class:`~cotdistill.teachers.Teacher`
    (reused across calls, e.g. a loaded hf model).
    Failed calls are stored with their error, listed in ``out_dir/failed.jsonl`` and retried by
    the next run; they do not raise. A fatal error (bad key, unknown model) raises UserError.

    ``out_dir`` is claimed as a generate run (:mod:`cotdistill.artifacts`): a directory of another
    kind is refused, and a second process on it stops at once (``wait_for_lock``: waits instead).
    Traces already in ``out_dir/traces.jsonl`` that this call does not produce are kept.
    """
    if isinstance(teacher, str):  # generate(exs, out, teacher="lab", levels="0-6")
        overrides["teacher"] = teacher
        teacher = None
    if config is None:
        config = GenerateConfig(**overrides)
    elif overrides:
        config = config.model_copy(update=overrides)
        config = GenerateConfig.model_validate(config.model_dump())
    if not examples:
        raise UserError(f"no examples to generate for: check {opt('task')}, {opt('split')} and {opt('limit')}")
    t_start = time.time()
    out = Path(out_dir)
    if config.max_cost is not None and config.prices() is None:
        raise UserError(f"{opt('max_cost')} needs prices for {config.teacher}: pass {opt('price_in')} and {opt('price_out')} (USD per 1M tokens)")
    if teacher is None:  # a teacher that cannot run these examples is refused before anything is written
        from .spec import TeacherSpec

        spec = TeacherSpec.parse(config.teacher)
        other = sorted({e.task for e in examples} - {"arith"})
        if spec.backend == "lab" and other:
            raise UserError(f"the lab teacher only solves the arith task, not {other[0]!r}: use another teacher "
                            "(openai:MODEL, hf:DIR, vllm:DIR, replay:FILE)")
    with claim(out, "generate", wait=wait_for_lock):
        return _generate(examples, out, config, teacher, progress, console, t_start)


def _generate(examples, out: Path, config: GenerateConfig, teacher, progress, console, t_start) -> GenerateResult:
    teacher = teacher or make_teacher(config.teacher, config)
    teacher.stop_requested = False  # a teacher reused across calls starts each one unstopped
    secrets = teacher.secrets() + ([config.api_key.get_secret_value()] if config.api_key else [])
    atomic_write_text(out / "config.json", json.dumps(config.public_dict(), indent=2) + "\n")
    jobs = plan(examples, config, teacher)

    store = Store(out / CALLS_FILE, fsync="group") if teacher.cacheable else None
    mem: dict[str, dict[str, Any]] = {}  # results of non-cacheable teachers (replay, lab)
    unique: dict[str, Request] = {}
    for j in jobs:
        if j.level != 0 and j.key not in unique:
            unique[j.key] = j
    pending = [j for k, j in unique.items() if store is None or store.ok(k) is None]
    cached = len(unique) - len(pending)
    counts = {"done": 0, "failed": 0, "prompt": 0, "completion": 0}
    budget: dict[str, Any] = {"stopped": False, "in_flight": {}}

    def upper_bound(req: Request) -> float:
        """The most a call can cost: its prompt (chars / 4, rounded up generously) and max_tokens."""
        chars = sum(len(m.get("content", "")) for m in req.messages or [])
        return _cost(config, chars / 3.0 + 16, config.max_tokens) or 0.0

    def admit(req: Request) -> bool:
        """--max-cost: launch a call only if the spend so far, the calls in flight and this one
        (each at its upper bound) stay within the budget."""
        spent = _cost(config, counts["prompt"], counts["completion"]) or 0.0
        cost = upper_bound(req)
        if spent + sum(budget["in_flight"].values()) + cost > config.max_cost:
            budget["stopped"] = True
            return False
        budget["in_flight"][req.key] = cost
        return True

    teacher.admit = admit if config.max_cost is not None else None

    def record(req: Request, res: Result | Exception) -> None:
        ex = req.example
        base = {"teacher": teacher.name, "task": ex.task, "id": ex.id, "level": req.level, "format": req.fmt,
                "sample": req.sample, "t": round(time.time(), 3)}
        if isinstance(res, Exception):
            rec = {"status": "error", **base, "error": redact(str(res), *secrets)}
            counts["failed"] += 1
        else:
            rec = {"status": "ok", **base, "output": res.text, "usage": res.usage, "finish_reason": res.finish_reason}
            if res.reasoning:
                rec["reasoning"] = res.reasoning
            if res.teacher:
                rec["trace_teacher"] = res.teacher
            if res.source:
                rec["source"] = res.source
            counts["done"] += 1
            if res.usage:
                counts["prompt"] += res.usage.get("prompt_tokens", 0)
                counts["completion"] += res.usage.get("completion_tokens", 0)
        budget["in_flight"].pop(req.key, None)  # now paid (counted in the spend) or failed
        if store is not None:
            store.put(req.key, rec)
        else:
            mem[req.key] = {"key": req.key, **rec}

    prog = Reporter(progress if pending or callable(progress) else False, "generate", teacher.name, len(unique), completed=cached,
                    unit="calls", console=console)
    priced = bool(config.prices())

    async def run() -> None:
        agen = teacher.stream(pending)
        try:
            async for req, res in agen:
                record(req, res)
                prog.update(done=cached + counts["done"] + counts["failed"], answered=counts["done"],
                            failed=counts["failed"], cached=cached, tokens=counts["prompt"] + counts["completion"],
                            **({"cost": f"${_cost(config, counts['prompt'], counts['completion']):.4f}"} if priced else {}))
        finally:
            await agen.aclose()

    try:
        with prog:
            if pending:
                _run_coro(run)
    except KeyboardInterrupt:
        total = len(store) if store is not None else 0
        if store is not None:
            store.close()
        raise GenerationInterrupted(
            f"interrupted: {counts['done']} calls completed in this run, {total} stored in {out / CALLS_FILE}; "
            "rerun the same command to resume"
        ) from None
    finally:
        teacher.close()

    traces, failed = _collect(jobs, teacher, store, mem,
                              not_run="not run (--max-cost reached)" if budget["stopped"] else "not run (interrupted)")
    if store is not None:
        store.close()
    traces_path = out / TRACES_FILE
    kept: list[Trace] = []
    if traces_path.is_file():  # earlier runs into this directory: keep what this call does not redo
        new = {t.key for t in traces}
        kept = [t for t in read_traces(traces_path, empty_ok=True) if t.key not in new]  # (empty: every call failed)
    write_traces(traces_path, kept + traces)
    atomic_write_text(out / "failed.jsonl", "".join(json.dumps(f) + "\n" for f in failed))
    summary = summarize(traces, config, failed)
    pr = config.prices()
    atomic_write_text(out / "summary.json", json.dumps({"rows": summary, "calls": len(unique), "cached": cached,
                                                      "done": counts["done"], "failed": len(failed),
                                                      "cost_usd_this_run": _cost(config, counts["prompt"], counts["completion"]),
                                                      "prices": pr[2] if pr else None, "max_cost": config.max_cost,
                                                      "stopped_at_max_cost": budget["stopped"]}, indent=2) + "\n")
    return GenerateResult(out, traces_path, traces, len(unique), cached, counts["done"], failed, summary,
                          round(time.time() - t_start, 3), stopped_at_max_cost=budget["stopped"],
                          cost=_cost(config, counts["prompt"], counts["completion"]))


def _collect(jobs: list[Request], teacher: Teacher, store: Store | None, mem: dict[str, dict[str, Any]],
             not_run: str = "not run (interrupted)"):
    traces: list[Trace] = []
    failed: list[dict[str, Any]] = []
    seen_failed: set[str] = set()
    for j in jobs:
        ex = j.example
        rec: dict[str, Any] | None
        if j.level == 0:
            rec = {"status": "ok", "output": answer_only(ex), "usage": None}
        else:
            rec = store.get(j.key) if store is not None else mem.get(j.key)
        if rec is None or rec.get("status") != "ok":
            if j.key not in seen_failed:
                seen_failed.add(j.key)
                failed.append({"task": ex.task, "id": ex.id, "level": j.level, "format": j.fmt, "sample": j.sample,
                               "error": (rec or {}).get("error", not_run)})
            continue
        output = rec.get("output") or ""
        if rec.get("finish_reason") == "length":  # cut by the token cap: an unfinished answer is no answer
            pred, ok = None, False
        else:
            pred, ok = answers.correct(output, ex.answer, ex.answer_type, choices=ex.choices)
        usage = rec.get("usage") or None
        traces.append(Trace(
            id=ex.id, task=ex.task, question=ex.question, gold=ex.answer, answer_type=ex.answer_type,
            teacher=rec.get("trace_teacher") or teacher.name, level=j.level, format=j.fmt, sample=j.sample,
            output=output, pred=pred, correct=ok, usage=usage, reasoning=rec.get("reasoning") or None,
            finish_reason=rec.get("finish_reason"),
            source=rec.get("source") or ("gold answer (level 0)" if j.level == 0 else
                                         f"rewrite by {teacher.name} of {ex.meta['rewrite_of']}" if ex.meta.get("rewrite_of")
                                         else f"cotdistill generate {teacher.name}"),
        ))
    return traces, failed


def summarize(traces: list[Trace], config: GenerateConfig, failed: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Per (level, format): rows, failed, correct %, mean words, tokens, cost."""
    cells: dict[tuple, dict[str, Any]] = {}
    order = {lv: i for i, lv in enumerate(config.levels)}
    for t in traces:
        c = cells.setdefault((t.level, t.format), {"level": t.level, "format": t.format, "rows": 0, "failed": 0,
                                                    "_correct": 0, "_words": 0, "prompt_tokens": 0,
                                                    "completion_tokens": 0})
        c["rows"] += 1
        c["_correct"] += bool(t.correct)
        c["_words"] += len(t.output.split())
        if t.usage:
            c["prompt_tokens"] += t.usage.get("prompt_tokens", 0)
            c["completion_tokens"] += t.usage.get("completion_tokens", 0)
    for f in failed or []:
        c = cells.setdefault((f["level"], f["format"]), {"level": f["level"], "format": f["format"], "rows": 0,
                                                         "failed": 0, "_correct": 0, "_words": 0,
                                                         "prompt_tokens": 0, "completion_tokens": 0})
        c["failed"] += 1
    rows = []
    for key in sorted(cells, key=lambda k: (order.get(k[0], 99), config.formats.index(k[1]) if k[1] in config.formats else 9)):
        c = cells[key]
        n = c["rows"]
        rows.append({
            "level": c["level"], "format": c["format"], "rows": n, "failed": c["failed"],
            "correct_pct": round(100.0 * c["_correct"] / n, 2) if n else None,
            "mean_words": round(c["_words"] / n, 1) if n else None,
            "prompt_tokens": c["prompt_tokens"], "completion_tokens": c["completion_tokens"],
            "cost": _cost(config, c["prompt_tokens"], c["completion_tokens"]),
        })
    return rows
