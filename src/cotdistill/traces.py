"""The Trace record: one teacher rationale for one question, stored as JSONL.

The same record serves imported paper data, generated data and replayed data::

    {id, task, question, gold, teacher, level, format, sample, output, pred, correct, usage?, source}

``level`` is 0 (answer only), 1..6 (granularity, coarse to fine) or ``"human"``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from .fileio import atomic_write_text
from .errors import UserError, field_error, opt, switch
from .paths import nearby

from .spec import FORMATS, FormatField, Level, LevelField  # noqa: F401  (FORMATS, Level re-exported)


class Trace(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    task: str
    question: str
    gold: str
    # how the gold is compared (number, choice, bool, math, text): set by whoever made the trace
    answer_type: str | None = None
    teacher: str
    level: LevelField
    format: FormatField = "cot"
    sample: int = 0
    output: str
    # a reasoning model's thinking, kept apart from its final response (``output``)
    reasoning: str | None = None
    finish_reason: str | None = None
    pred: str | None = None
    correct: bool | None = None
    usage: dict[str, int] | None = None
    source: str = ""

    @property
    def key(self) -> tuple:
        """Identity of a trace inside one file (an example at one level/format/sample from one teacher)."""
        return (self.task, self.id, self.teacher, str(self.level), self.format, self.sample)


def cell_of(t: Trace) -> tuple[str, str, str]:
    """The supervision cell of a trace: (teacher, level, format)."""
    return (t.teacher, str(t.level), t.format)


def composition(traces: Iterable[Trace]) -> dict[str, int]:
    """Trace counts per supervision cell, keyed ``teacher/level/format`` (e.g. ``gpt-4o/L3/cot``)."""
    out: dict[str, int] = {}
    for t in traces:
        lv = f"L{t.level}" if isinstance(t.level, int) else str(t.level)
        k = f"{t.teacher}/{lv}/{t.format}"
        out[k] = out.get(k, 0) + 1
    return dict(sorted(out.items()))


def select_traces(traces: Iterable[Trace], teachers: Iterable[str] | None = None, levels: Iterable | None = None,
                  formats: Iterable[str] | None = None, tasks: Iterable[str] | None = None) -> list[Trace]:
    """Keep the traces of the given teachers, levels (ints or "human"), formats and tasks (None = all)."""
    ts = set(teachers) if teachers else None
    ls = {str(x) for x in levels} if levels else None
    fs = set(formats) if formats else None
    ks = {k.lower() for k in tasks} if tasks else None
    return [t for t in traces if (ts is None or t.teacher in ts) and (ls is None or str(t.level) in ls)
            and (fs is None or t.format in fs) and (ks is None or t.task.lower() in ks)]


def require_one_cell(traces: list[Trace], what: str = "the traces") -> None:
    """A one-line UserError when ``traces`` hold more than one (teacher, level, format) cell:
    training on a mixture must be asked for, never happen by accident."""
    comp = composition(traces)
    if len(comp) > 1:
        cells = ", ".join(f"{k} ({n})" for k, n in comp.items())
        raise UserError(f"{what} hold {len(comp)} supervision cells: {cells}; pick one with --teachers/--levels/--formats, "
                        f"or pass {switch('mix')} to train on the mixture")
    tasks: dict[str, int] = {}
    for t in traces:
        tasks[t.task] = tasks.get(t.task, 0) + 1
    if len(tasks) > 1:
        raise UserError(f"{what} hold the traces of {len(tasks)} tasks: "
                        + ", ".join(f"{k} ({n})" for k, n in sorted(tasks.items()))
                        + "; pick one with --tasks, or pass --mix to train on all of them")


def read_traces(path: str | os.PathLike, empty_ok: bool = False) -> list[Trace]:
    return list(iter_traces(path, empty_ok=empty_ok))


def iter_traces(path: str | os.PathLike, empty_ok: bool = False) -> Iterator[Trace]:
    """Yield validated traces; a bad line raises UserError naming file and line. An empty file is
    an error (nothing to train on) unless ``empty_ok`` (a run's own earlier output being extended)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"trace file {path} does not exist: pass a traces.jsonl written by `cotdistill import-paper` or `cotdistill generate`")
    if path.is_dir():
        if (path / "traces.jsonl").exists():
            path = path / "traces.jsonl"
        else:
            raise UserError(f"{path} is a directory without traces.jsonl{nearby(path, 'traces.jsonl')}: "
                            "pass the JSONL file itself")
    n = 0
    with open(path, "rb") as f:
        for i, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"{path}:{i}: not UTF-8 text (byte {e.start} of the line); "
                                "re-save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{i}: malformed JSON ({e.msg}); fix or delete that line") from None
            try:
                yield Trace.model_validate(obj)
            except ValidationError as e:
                raise UserError(f"{path}:{i}: invalid trace, {field_error(e)}") from None
            n += 1
    if n == 0 and not empty_ok:
        raise UserError(f"{path} has no traces: it is empty; regenerate it or pass another file")


def write_traces(path: str | os.PathLike, traces: Iterable[Trace]) -> int:
    """Write traces atomically (temp file + rename): a crash never leaves a half-written file."""
    from .fileio import atomic_open

    n = 0
    with atomic_open(path) as f:
        for t in traces:
            f.write(t.model_dump_json(exclude_none=True) + "\n")
            n += 1
    return n


def trace_to_dict(t: Trace) -> dict[str, Any]:
    return t.model_dump(exclude_none=True)


def import_paper(src: str | os.PathLike, data_dir: str | os.PathLike | None = None, **kwargs: Any):
    """Import the paper's released files; see :func:`cotdistill.paper.import_paper` (re-exported here)."""
    from .paper import import_paper as _import_paper

    return _import_paper(src, data_dir, **kwargs)


# ============================================================================================
# statistics
#
# Words: whitespace-separated tokens. Tokens (proxy, no tokenizer needed): regex pieces at
# roughly the granularity of a BPE vocabulary: letter runs in chunks of at most 6 characters,
# digit runs in chunks of at most 3 (as LLaMA-3 splits numbers), every other non-space character
# one piece. It is a documented proxy for comparing cells, not a calibrated estimate of any
# tokenizer: pass ``--tokenizer PATH`` for exact counts.
# Steps: sub-questions (``?``) for the ``subq`` format; otherwise the numbered items
# (``1.`` ``2.`` ... in order) when there are at least two, else the sentences; the final
# "The answer is X" sentence is not a step; answer-only traces (level 0) have 0 steps.

import math as _math
import re as _re
from dataclasses import dataclass as _dataclass

_PIECE = _re.compile(r"[^\W\d_]{1,6}|\d{1,3}|[^\w\s]|_")
_NUMBERED = _re.compile(r"(?:^|(?<=[\s.:;)]))(\d{1,2})[.)](?=\s*[A-Za-z(])")
_SENT_END = _re.compile(r"(?<=[.!?])(?:\s+|(?=[A-Z]))|\n+")
_FINAL = _re.compile(r"(?:therefore,?\s*)?the answer is\b.*$", _re.I | _re.S)


def proxy_tokens(text: str) -> int:
    """Token-count proxy (see the notes above): letters in chunks of <= 6, digits in chunks of <= 3, punctuation."""
    return len(_PIECE.findall(text))


def count_steps(text: str, fmt: str = "cot") -> int:
    """Reasoning steps in a rationale: sub-questions, numbered items or sentences (see notes)."""
    body = _FINAL.sub("", text or "").strip()
    if not body:
        return 0
    if fmt == "subq":
        return body.count("?")
    nums = [int(m.group(1)) for m in _NUMBERED.finditer(body)]
    # longest run 1, 2, 3, ... in order
    run, best = 0, 0
    for n in nums:
        if n == run + 1:
            run += 1
            best = max(best, run)
        elif n == 1:
            run = 1
    if best >= 2:
        return best
    return sum(1 for s in _SENT_END.split(body) if s and _re.search(r"[A-Za-z0-9]", s))


def _p90(xs: list[int]) -> float:
    if not xs:
        return 0.0
    ys = sorted(xs)
    k = max(0, _math.ceil(0.9 * len(ys)) - 1)  # nearest-rank percentile
    return float(ys[k])


@_dataclass
class GroupStats:
    task: str
    teacher: str
    level: int | str
    format: str
    rows: int
    scored: int
    correct: int
    mean_words: float
    p90_words: float
    mean_tokens: float
    p90_tokens: float
    mean_steps: float

    @property
    def correct_pct(self) -> float | None:
        return 100.0 * self.correct / self.scored if self.scored else None

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["correct_pct"] = self.correct_pct
        return d


def _level_sort(level) -> tuple:
    return (1, 0) if level == "human" else (0, int(level))


def trace_stats(traces: Iterable[Trace], tokenizer: Any = None) -> list[GroupStats]:
    """Statistics per (task, teacher, level, format), sorted by those keys.

    ``tokenizer``: anything with ``encode(text)`` (a transformers tokenizer) or ``None`` for the
    regex proxy :func:`proxy_tokens`.
    """
    groups: dict[tuple, dict[str, list]] = {}
    for t in traces:
        g = groups.setdefault((t.task, t.teacher, t.level, t.format), {"w": [], "t": [], "s": [], "c": []})
        g["w"].append(len(t.output.split()))
        if tokenizer is None:
            g["t"].append(proxy_tokens(t.output))
        else:
            g["t"].append(len(tokenizer.encode(t.output, add_special_tokens=False))
                          if hasattr(tokenizer, "encode") else len(tokenizer(t.output)))
        g["s"].append(0 if t.level == 0 else count_steps(t.output, t.format))
        g["c"].append(t.correct)
    out = []
    for (task, teacher, level, fmt), g in groups.items():
        n = len(g["w"])
        scored = [c for c in g["c"] if c is not None]
        out.append(GroupStats(
            task, teacher, level, fmt, n, len(scored), sum(bool(c) for c in scored),
            sum(g["w"]) / n, _p90(g["w"]), sum(g["t"]) / n, _p90(g["t"]), sum(g["s"]) / n,
        ))
    out.sort(key=lambda s: (s.task, s.teacher, _level_sort(s.level), s.format))
    return out


# ============================================================================================
# export

EXPORT_FORMATS = ("llamafactory", "trl", "hf")


def _group_name(t: Trace) -> str:
    lv = "human" if t.level == "human" else f"level{t.level}"
    name = f"{t.task}_{t.teacher}_{lv}" + ("" if t.format == "cot" else f"_{t.format}")
    return _re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def export_traces(
    traces: Iterable[Trace],
    to: str,
    out: str | os.PathLike,
    *,
    template: str = "plain",
) -> list[Path]:
    """Write traces for an SFT framework; returns the files / directories written.

    * ``llamafactory``: one alpaca JSON list (``instruction``, ``input``, ``output``) per
      (task, teacher, level, format) group, named like ``svamp_gpt-4o_level3.json``, plus
      ``dataset_info.json`` registering each under its file stem (merged into an existing one).
    * ``trl``: ``train.jsonl`` of ``{"prompt", "completion", "id", ...}`` (TRL's prompt-completion
      format; the loss is on the completion). ``template`` names a
      :data:`cotdistill.template.NAMED_TEMPLATES` entry (``plain``, ``qa``, ``alpaca``) or
      ``chat``, which writes conversational ``[{"role", "content"}]`` prompt / completion lists.
    * ``hf``: a ``datasets.Dataset`` with every trace field (``level`` as a string, since it mixes
      ints and ``"human"``) saved with ``save_to_disk``.
    """
    traces = list(traces)
    if not traces:
        raise UserError("nothing to export: the trace file has no traces")
    out = Path(out)
    to = to.lower()
    if to not in EXPORT_FORMATS:
        raise UserError(f"unknown export format {to!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    if out.exists() and not out.is_dir():
        raise UserError(f"{opt('out')} {out} is a file; pass a directory")
    if to == "hf" and out.is_dir() and any(out.iterdir()) and not (out / "state.json").exists():
        raise UserError(f"{opt('out')} {out} is a non-empty directory that is not a saved dataset; pass a new or empty directory")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if to == "llamafactory":
        groups: dict[str, list[dict[str, str]]] = {}
        for t in traces:
            groups.setdefault(_group_name(t), []).append({"instruction": t.question, "input": "", "output": t.output})
        info_path = out / "dataset_info.json"
        info: dict[str, Any] = {}
        if info_path.exists():
            try:
                info = json.loads(info_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                raise UserError(f"{info_path} exists but is not valid JSON; delete it or pick another {opt('out')}") from None
        for name, rows in sorted(groups.items()):
            p = out / f"{name}.json"
            atomic_write_text(p, json.dumps(rows, ensure_ascii=False, indent=1) + "\n")
            written.append(p)
            info[name] = {"file_name": p.name, "columns": {"prompt": "instruction", "query": "input", "response": "output"}}
        atomic_write_text(info_path, json.dumps(info, ensure_ascii=False, indent=2) + "\n")
        written.append(info_path)
    elif to == "trl":
        from .template import NAMED_TEMPLATES

        if template not in NAMED_TEMPLATES:
            raise UserError(f"unknown template {template!r}; choose one of {', '.join(NAMED_TEMPLATES)}")
        tpl = NAMED_TEMPLATES[template]
        lines = []
        for t in traces:
            if tpl.kind == "chat":
                prompt: Any = [{"role": "user", "content": t.question}]
                completion: Any = [{"role": "assistant", "content": t.output.strip()}]
            else:
                prompt, completion = tpl.render_prompt(t.question), tpl.render_completion(t.output)
            lines.append(json.dumps({
                "prompt": prompt, "completion": completion, "id": t.id, "task": t.task,
                "teacher": t.teacher, "level": str(t.level), "format": t.format,
            }, ensure_ascii=False))
        p = out / "train.jsonl"
        atomic_write_text(p, "\n".join(lines) + "\n")
        written.append(p)
    else:
        try:
            import datasets
        except ImportError:
            raise UserError("traces export --to hf needs the datasets package: pip install 'cotdistill[export]'") from None

        cols: dict[str, list] = {k: [] for k in Trace.model_fields}
        for t in traces:
            for k in cols:
                v = getattr(t, k)
                cols[k].append(str(v) if k == "level" else v)
        cols["usage"] = [json.dumps(u) if u is not None else None for u in cols["usage"]]
        ds = datasets.Dataset.from_dict(cols)

        from .fileio import atomic_path

        with atomic_path(out) as tmp:  # (out, checked above: empty or a previous saved dataset, is replaced)
            ds.save_to_disk(str(tmp))
        written.append(out)
    return written
