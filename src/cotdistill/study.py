"""Factor studies: a grid of (task x teacher x level x format x student x seed) cells from one YAML.

Every cell runs ``generate -> curate -> train -> evaluate``; every stage is cached by the content
hash of its inputs, so rerunning a finished study does no work, a killed study resumes where it
stopped, and adding a level or a student runs only the new cells. Traces are shared between
cells that differ only by student or seed (they live in ``DIR/cache/``).

The study directory's layout (``study.json``, ``results.jsonl``, ``cache/``, ``cells/<cell>/``) is
:class:`cotdistill.records.StudyLayout`; each cell's row is a :class:`cotdistill.records.CellResult`.

Python API::

    cfg = load_study_config("examples/quickstart.yaml", overrides={"students": ["scratch:llama-xs"]})
    plan = plan_study(cfg)                 # cells + what is cached + teacher calls / train tokens
    summary = run_study(cfg, jobs=2, shard=(1, 2))
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from .artifacts import check as check_out, claim, content_key, is_complete, mark_complete
from .fileio import atomic_write_json, load_yaml_mapping
from .progress import INTERVAL_S, Progress, ProgressEvent, Reporter
from .records import (CellLayout, StudyLayout, read_cell_result, read_metrics, read_predictions, write_cell_result,
                      write_results)
from .stats import wilson_ci
from .errors import GenerateOptions, Interrupted, UserError, did_you_mean, opt, protect_secrets, redact, validation_error
from .paths import nearby
from .cluster import ClusterConfig
from .curate import CurateOptions
from .evaluate import EvalConfig
from .spec import (FORMATS, RAW, TEACHER_MODEL_OBJECTIVES, FormatField, ObjectiveField, Section,  # noqa: F401
                   Supervision, TeacherSpec, given, is_pseudo, split_teacher, teacher_members)
from .train import TrainConfig

# the teacher's own output, reasoning included (trained as <think>reasoning</think> response); generated
# with the level-3 prompt, and the source that `rewrite_with` rewrites at levels 1-6
RAW_PROMPT_LEVEL = 3
STUDY_LEVELS_HELP = ("use 0..6 (0 = answer only), 'human', 'raw' (a reasoning teacher's own thinking), "
                     "'mix:A-B', 'mix:A-B:loss', 'mix:difficulty', 'curriculum:A-B' or 'curriculum:A,B,C'")

# 0..6, "human", "raw", or a mixed / curriculum pseudo-level of cotdistill.mix ("mix:3-6", "curriculum:1-6")
Level = Union[int, str]
STAGES = ("generate", "curate", "train", "evaluate")
ENGINE_VERSION = 1  # bump to invalidate every cached stage


# ------------------------------------------------------------------------------------------
# config
# ------------------------------------------------------------------------------------------
class TaskSpec(BaseModel):
    """One task of a study: registry name, task options, and how many examples to use."""

    model_config = ConfigDict(extra="forbid")

    name: str
    options: dict[str, Any] = Field(default_factory=dict, description="task options, e.g. arith steps/seed/n_train")
    train_size: int | None = Field(None, ge=1, description="use the first N training examples (default: all)")
    test_size: int | None = Field(None, ge=1, description="evaluate on the first N test examples (default: all)")
    train_split: str = "train"
    test_split: str = "test"


class StudyConfig(BaseModel):
    """A factor study. Lists are crossed into cells; everything has a documented default."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("study", description="a label for reports")
    output_dir: str = Field(..., description="results directory (created; relative to the working directory)")
    data_dir: str | None = Field(None, description="benchmark/paper data directory (default: $COTDISTILL_DATA, else the user cache)")
    tasks: list[TaskSpec] = Field(..., min_length=1)
    teachers: list[str] = Field(..., min_length=1, description="teacher specs: lab, replay:FILE, openai:MODEL, hf:MODEL, ...")
    levels: list[Level] = Field(default_factory=lambda: [0, 3, 6], description="granularity levels 0..6 or 'human'")
    formats: list[FormatField] = Field(default_factory=lambda: ["cot"], description="cot, subq, rar, sym (or the paper's BSM, RaR, SYM)")
    students: list[str] = Field(..., min_length=1, description="HF model names/paths or scratch:<family>-<size>")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    objectives: list[ObjectiveField] = Field(
        default_factory=lambda: ["sft"], min_length=1,
        description="training objectives compared as a factor: sft, step-by-step (label and rationale as two prefixed "
                    "tasks), logit-kd and on-policy (both need train.teacher_model), preference (ORPO against the "
                    "student's own wrong samples)")
    generate: GenerateOptions = Field(default_factory=dict, description="keyword arguments of cotdistill.generate.generate")
    curate: Section(CurateOptions) = Field(default_factory=CurateOptions, description="cotdistill.curate.CurateOptions fields")
    train: Section(TrainConfig) = Field(
        default_factory=TrainConfig,
        description="cotdistill.train.TrainConfig fields, over the student's defaults (the paper's, or the scratch recipe)")
    eval: Section(EvalConfig) = Field(default_factory=EvalConfig, description="cotdistill.evaluate.EvalConfig fields")
    threads: int | None = Field(None, ge=1, description="torch threads per cell (default: CPU cores // jobs)")
    exclude: list[dict[str, Any]] = Field(
        default_factory=list,
        description="cells to skip: each entry matches cell fields (task, teacher, level, format, student, seed); "
                    "a list value matches any of its items, e.g. {teacher: 'replay:p.jsonl#llama-3-70b', level: [5, 6]}")
    rewrite_with: str | None = Field(
        None,
        description="a teacher that rewrites each teacher's raw traces (level 'raw', e.g. a reasoning model's long "
                    "thinking) at the study's levels 1-6, keeping each final answer (as `generate --from-traces`); "
                    "unset: levels 1-6 are generated by the teacher itself")
    cluster: ClusterConfig = Field(
        default_factory=ClusterConfig,
        description="where the cells run: executor local (worker processes here), slurm or ray, and the resources "
                    "of each cell job (the keys are the `cotdistill study` flags)")
    max_failed_calls: float = Field(
        0.0, ge=0, le=1,
        description="fraction of a cell's teacher calls that may fail (e.g. items missing from a replay file) "
                    "before the cell fails; the cell then trains on the traces it has")

    @field_validator("levels")
    @classmethod
    def _levels(cls, v):
        if not v:
            raise ValueError("give at least one level")
        out = []
        for i, x in enumerate(v):
            if isinstance(x, str) and x.strip().lower() == RAW:
                out.append(RAW)
                continue
            if isinstance(x, int) and not 0 <= x <= 6:
                raise ValueError(f"level {x} (entry {i}) is not available; {STUDY_LEVELS_HELP}")
            try:
                out.append(Supervision.parse(x).value)  # canonical: "3" -> 3, "mix:difficulty" -> "mix:3-6"
            except UserError as e:
                if "is not available" not in str(e):  # a malformed mix / curriculum says what is wrong with it
                    raise ValueError(f"entry {i}: {e}") from None
                hint = did_you_mean(x, ["human", RAW, "mix:difficulty", "mix:difficulty:loss"])
                raise ValueError(f"level {x!r} (entry {i}) is not available{hint}; {STUDY_LEVELS_HELP}") from None
        if len(set(map(str, out))) != len(out):
            raise ValueError("levels are repeated")
        return out

    @field_validator("teachers", "students")
    @classmethod
    def _nonempty(cls, v):
        for x in v:
            if not str(x).strip():
                raise ValueError("empty name")
        return v

    @model_validator(mode="before")
    @classmethod
    def _task_strings(cls, data):
        if isinstance(data, dict) and isinstance(data.get("tasks"), list):
            data = dict(data)
            data["tasks"] = [{"name": t} if isinstance(t, str) else t for t in data["tasks"]]
        return data


def load_study_config(path: str | os.PathLike | dict, overrides: dict[str, Any] | None = None,
                      create: bool = True) -> StudyConfig:
    """Load and fully validate a study config (YAML file or dict) before any work is done.

    A relative ``output_dir`` is relative to the working directory; relative ``data_dir`` and
    ``replay:`` paths are relative to the config file's directory (``$VARS`` and ``~`` expand). ``overrides`` replace top-level keys (e.g. ``{"students": ["scratch:llama-xs"]}``).
    ``create=False`` (a dry run) checks that the output directory could be made without making it.
    """
    if isinstance(path, dict):
        raw, source, base = dict(path), "config", Path.cwd()
    else:
        p = Path(path)
        raw = load_yaml_mapping(p, "study keys (tasks, teachers, levels, students, ...)")
        source, base = str(p), p.resolve().parent
    for k, v in (overrides or {}).items():
        if v is None:
            continue
        if k == "cluster" and isinstance(v, dict) and isinstance(raw.get(k), dict):
            v = {**raw[k], **v}  # flags over the YAML's cluster section, key by key
        raw[k] = v
    try:
        cfg = StudyConfig.model_validate(raw)
    except ValidationError as e:
        raise validation_error(e, source, StudyConfig) from None
    # resolve paths relative to the config file
    cfg.output_dir = str(Path(cfg.output_dir).expanduser().resolve())  # relative to the working directory
    if cfg.data_dir:
        cfg.data_dir = str((base / Path(cfg.data_dir).expanduser()).resolve())
    teachers = []
    for t in cfg.teachers:
        if t.startswith("replay:"):
            t, who = split_teacher(t)
            written = t.split(":", 1)[1]
            fp = Path(os.path.expandvars(written)).expanduser()
            if not fp.is_absolute():
                fp = (base / fp).resolve()
            if not fp.exists():
                raise UserError(_missing_replay(source, len(teachers), written, fp, base))
            t = f"replay:{fp}" + (f"#{who}" if who else "")
        teachers.append(t)
    cfg.teachers = teachers
    validate_study(cfg, source, create=create)
    return cfg


def validate_study(cfg: StudyConfig, source: str = "config", create: bool = True) -> None:
    """Check names, files and the output directory; raise one-line UserErrors naming the field."""
    from .tasks import get_task, task_names

    for i, t in enumerate(cfg.tasks):
        if t.name.strip().lower() not in task_names():
            raise UserError(f"{source}: field 'tasks.{i}.name': unknown task {t.name!r}{did_you_mean(t.name, task_names())}; known tasks: {', '.join(task_names())}")
        if t.name == "arith":
            get_task("arith", **t.options)._opts()  # option errors now, not later
    for i, spec in enumerate(cfg.teachers):
        try:
            _check_teacher(spec)
        except UserError as e:
            raise UserError(f"{source}: field 'teachers.{i}': {e}") from None
        if split_teacher(spec)[0] in ("lab", "lab:think"):
            bad = [t.name for t in cfg.tasks if t.name != "arith"]
            if bad:
                raise UserError(f"{source}: field 'teachers.{i}': the lab teacher only solves the arith task, not {bad[0]!r}")
            if "human" in cfg.levels:
                raise UserError(f"{source}: field 'levels': the lab teacher has no 'human' level; use 0..6")
    if cfg.rewrite_with is not None:
        try:
            _check_teacher(cfg.rewrite_with)
        except UserError as e:
            raise UserError(f"{source}: field 'rewrite_with': {e}") from None
        if cfg.rewrite_with.startswith("replay:"):
            raise UserError(f"{source}: field 'rewrite_with': a replay file cannot rewrite traces; "
                            "use a teacher that generates (lab, openai:MODEL, hf:DIR, vllm:DIR)")
        if not any(isinstance(lv, int) and lv > 0 for lv in cfg.levels):
            raise UserError(f"{source}: field 'rewrite_with': no level 1-6 to rewrite at; add levels such as 1, 3, 5")
        if any(str(t).startswith("union:") for t in cfg.teachers):
            raise UserError(f"{source}: field 'rewrite_with': union teachers have no raw traces of their own; "
                            "list the teachers one by one")
    from .students import is_scratch, parse_scratch

    for i, s in enumerate(cfg.students):
        if is_scratch(s):
            try:
                parse_scratch(s)
            except UserError as e:
                raise UserError(f"{source}: field 'students.{i}': {e}") from None
    for i, ex in enumerate(cfg.exclude):
        bad = set(ex) - {"task", "teacher", "level", "format", "student", "seed", "objective"}
        if bad:
            raise UserError(f"{source}: field 'exclude.{i}': unknown key {sorted(bad)[0]!r}; "
                            "use task, teacher, level, format, student, seed, objective")
    needs = [o for o in cfg.objectives if o in TEACHER_MODEL_OBJECTIVES]
    if needs and not given(cfg.train).get("teacher_model"):
        raise UserError(f"{source}: field 'train.teacher_model': objective {needs[0]} needs a local teacher model "
                        "that shares the students' tokenizer")
    out = Path(cfg.output_dir)
    check_out(out, "study", flag="output_dir", identity=cfg.name, source=source)
    if not create:  # a dry run writes nothing: the nearest existing directory must be writable
        near = next((p for p in [out, *out.parents] if p.exists()), None)
        if near is None or not os.access(near, os.W_OK | os.X_OK):
            raise UserError(f"{source}: field 'output_dir': cannot create {out} ({near} is not writable); "
                            "choose a writable directory")
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".probe-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise UserError(
            f"{source}: field 'output_dir': cannot write to {out} ({e.strerror or e}); choose a writable directory"
        ) from None


def _missing_replay(source: str, i: int, written: str, fp: Path, base: Path) -> str:
    """The one-line error for a study's replay file that is not there: where the path led and how to fix it."""
    msg = f"{source}: field 'teachers.{i}': replay file {written} not found"
    if Path(os.path.expandvars(written)).expanduser().is_absolute():
        return msg + "; check the path"
    msg += (f" at {fp} (relative paths in a study file are relative to the file's directory, {base})")
    rel = Path(os.path.expandvars(written)).expanduser()
    tail = Path(*[p for p in rel.parts if p not in ("..", ".")] or ["."])
    for here in (rel.resolve(), (Path.cwd() / tail).resolve()):  # read from the working directory instead
        if here.is_file():
            return msg + f"; {here} exists (relative to the working directory): write that absolute path, replay:{here}"
    hint = (f"; make it with `cotdistill import-paper $COTDISTILL_DATA/paper --out {fp.parent}`"
            if fp.name == "traces.jsonl" else "")
    return msg + hint + ", or write an absolute path ($VARS expand)"


def _check_teacher(spec: str) -> None:
    t = TeacherSpec.parse(spec)
    for member in t.members or (t,):
        if member.backend == "replay" and not Path(member.model).exists():
            raise UserError(f"replay file {member.model} does not exist")


# ------------------------------------------------------------------------------------------
# cells and keys
# ------------------------------------------------------------------------------------------
def content_hash(obj: Any, n: int = 16) -> str:
    return content_key(obj, n)


def _slug(s: str, n: int = 40) -> str:
    spec, who = split_teacher(s)
    if who:
        return f"{_slug(spec, n)}-{_slug(who, 20)}"
    base = Path(s.split(":", 1)[1]).stem if s.startswith("replay:") else s
    out = re.sub(r"[^A-Za-z0-9.]+", "-", base).strip("-")[:n] or "x"
    if s.startswith("replay:"):
        out = f"replay-{out.removesuffix('.json')}-{content_hash(s, 6)}"
    return out


@dataclass(frozen=True)
class Cell:
    task: TaskSpec
    teacher: str
    level: Level
    format: str
    student: str
    seed: int
    objective: str = "sft"

    @property
    def id(self) -> str:
        opt = f"-{content_hash(self.task.model_dump(), 6)}" if (self.task.options or self.task.train_size or self.task.test_size) else ""
        return "__".join([
            f"{self.task.name}{opt}", _slug(self.teacher), self.level_tag, self.format,
            _slug(self.student), f"s{self.seed}",
        ] + ([_slug(self.objective)] if self.objective != "sft" else []))  # sft cells keep their ids

    @property
    def level_tag(self) -> str:
        """``L3``, ``Lhuman``, or a slug of a mixed / curriculum pseudo-level (``mix-3-6``)."""
        if isinstance(self.level, int) or self.level in ("human", RAW):
            return f"L{self.level}"
        return _slug(str(self.level))

    def row_keys(self) -> dict[str, Any]:
        return {"task": self.task.name, "teacher": self.teacher, "level": self.level,
                "format": self.format, "student": self.student, "seed": self.seed, "objective": self.objective}


def expand_cells(cfg: StudyConfig) -> list[Cell]:
    """Cross the factors. Answer-only (level 0) and human rationales have no format: one cell, ``cot``."""
    cells: list[Cell] = []
    seen: set[str] = set()
    for task, teacher, level, fmt, student, seed, objective in itertools.product(
        cfg.tasks, cfg.teachers, cfg.levels, cfg.formats, cfg.students, cfg.seeds, cfg.objectives
    ):
        if level in (0, "human", RAW):
            fmt = "cot"
        if level == 0 and objective == "step-by-step":
            continue  # answer only has no rationale task: the same as sft
        c = Cell(task, teacher, level, fmt, student, seed, objective)
        if any(_matches(c, ex) for ex in cfg.exclude):
            continue
        if c.id not in seen:
            seen.add(c.id)
            cells.append(c)
    return cells


def _matches(cell: Cell, pattern: dict[str, Any]) -> bool:
    fields = {"task": cell.task.name, "teacher": cell.teacher, "level": cell.level, "format": cell.format,
              "student": cell.student, "seed": cell.seed, "objective": cell.objective}
    for k, v in pattern.items():
        want = v if isinstance(v, list) else [v]
        got = fields[k]
        if k == "teacher":  # a replay teacher matches with or without its directory
            names = {str(got), _short_teacher(str(got))}
            if not any(str(w) in names or _short_teacher(str(w)) in names for w in want):
                return False
        elif str(got) not in {str(w) for w in want}:
            return False
    return True


def _short_teacher(t: str) -> str:
    if t.startswith("replay:"):
        return "replay:" + Path(t.split(":", 1)[1]).name
    return t


def is_rewrite(cfg: StudyConfig, cell: Cell) -> bool:
    """A level 1-6 cell whose traces are ``rewrite_with``'s rewrites of the teacher's raw traces."""
    return cfg.rewrite_with is not None and isinstance(cell.level, int) and cell.level > 0


def raw_cell(cell: Cell) -> Cell:
    """The cell whose generated traces a rewrite cell rewrites."""
    return dataclasses.replace(cell, level=RAW, format="cot")


# training settings only some objectives read: they are part of a cell's key only when it reads them
OBJECTIVE_FIELDS = {
    "logit-kd": {"teacher_model", "kd_alpha", "kd_top_k", "kd_temperature"},
    "on-policy": {"teacher_model", "kd_temperature", "on_policy_lambda", "on_policy_beta", "on_policy_max_new_tokens",
                  "on_policy_warmup"},
    "preference": {"orpo_lambda", "on_policy_max_new_tokens"},
}
NOT_IDENTITY = {"kd_cache"}  # where the teacher table is stored, not what is learned


def _train_identity(train: dict[str, Any], cell: Cell) -> dict[str, Any]:
    used = OBJECTIVE_FIELDS.get(cell.objective, set())
    other = set().union(*OBJECTIVE_FIELDS.values()) - used
    return {k: v for k, v in train.items() if k not in other and k not in NOT_IDENTITY}


def stage_keys(cfg: StudyConfig, cell: Cell, legacy: bool = False) -> dict[str, str]:
    """Content hash of each stage's inputs (a stage reruns exactly when its key changes).
    ``legacy``: the keys of studies written when a replay file was known by its size and mtime."""
    task = cell.task.model_dump(exclude={"test_size", "test_split"})
    gen = content_hash({"v": ENGINE_VERSION, "task": task, "data_dir": cfg.data_dir, "teacher": cell.teacher,
                        "teacher_file": _file_sig(cell.teacher, legacy), "level": cell.level, "format": cell.format,
                        "generate": _output_options(cfg.generate),
                        **({"rewrite_with": cfg.rewrite_with, "source": stage_keys(cfg, raw_cell(cell), legacy)["generate"]}
                           if is_rewrite(cfg, cell) else {})})
    cur = content_hash({"gen": gen, "curate": given(cfg.curate)})
    trn = content_hash({"cur": cur, "student": cell.student, "seed": cell.seed, "train": _train_identity(given(cfg.train), cell),
                        **({"objective": cell.objective} if cell.objective != "sft" else {})})  # sft keys unchanged
    # an unset max_new_tokens means "auto" (from the trained model's lengths; it was 512 before)
    ev = content_hash({"train": trn, "eval": {"max_new_tokens": "auto", **given(cfg.eval)}, "task": cell.task.model_dump(), "data_dir": cfg.data_dir})
    return {"generate": gen, "curate": cur, "train": trn, "evaluate": ev}


COST_OPTIONS = ("max_cost", "price_in", "price_out")  # change what is paid, not what is generated


def _output_options(options: dict[str, Any]) -> dict[str, Any]:
    """Generate options that change the teacher's outputs (cache identity): without the cost
    settings, so raising --max-cost after a budget stop reuses every paid call."""
    return {k: v for k, v in options.items() if k not in COST_OPTIONS}


_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def _file_digest(p: Path) -> str | None:
    """sha256 of a file's content (memoised per process by path, size and mtime)."""
    import hashlib

    try:
        st = p.stat()
        memo = (str(p), st.st_size, st.st_mtime_ns)
        if memo not in _FILE_DIGESTS:
            h = hashlib.sha256()
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            _FILE_DIGESTS[memo] = h.hexdigest()[:32]
        return _FILE_DIGESTS[memo]
    except OSError:
        return None


def _file_sig(teacher: str, legacy: bool = False) -> Any:
    """What identifies a replay file in the stage keys: its content, so a copy of the file (another
    import, shared storage, ``cp`` without ``-p``) keeps every cached stage. ``legacy``: the size and
    mtime that studies written before keyed on (read to carry their finished cells over)."""
    teacher = split_teacher(teacher)[0]
    if teacher.startswith("replay:"):
        p = Path(teacher.split(":", 1)[1])
        if not legacy:
            d = _file_digest(p)
            return None if d is None else {"sha256": d}
        try:
            st = p.stat()
            return [st.st_size, int(st.st_mtime)]
        except OSError:
            return None
    return None


# ------------------------------------------------------------------------------------------
# plan (dry run)
# ------------------------------------------------------------------------------------------
@dataclass
class CellPlan:
    cell: Cell
    keys: dict[str, str]
    done: list[str]
    teacher_calls: int | None
    train_tokens: int | None

    @property
    def complete(self) -> bool:
        return len(self.done) == len(STAGES)


def layout(cfg: StudyConfig) -> StudyLayout:
    """Where this study keeps everything (:class:`cotdistill.records.StudyLayout`)."""
    return StudyLayout(Path(cfg.output_dir))


def _cell_dir(cfg: StudyConfig, cell: Cell) -> Path:
    return layout(cfg).cell(cell.id).dir


def _read_json(p: Path) -> Any:
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _marks(cfg: StudyConfig, cell: Cell, keys: dict[str, str], persist: bool = True) -> dict[str, Any]:
    """A cell's stage log (``stages.json``). A log keyed on a replay file's size and mtime (studies
    written before replay files were known by their content) is carried over to the content keys
    when the file is the one it was made with, so its trained and evaluated stages stay done."""
    path = layout(cfg).cell(cell.id).stages
    marks = _read_json(path) or {}
    if not str(split_teacher(cell.teacher)[0]).startswith("replay:") or not marks:
        return marks
    stored = {st: (marks.get(st) or {}).get("key") for st in STAGES}
    if not any(stored.values()) or any(stored[st] == keys[st] for st in STAGES if stored[st]):
        return marks
    old = stage_keys(cfg, cell, legacy=True)
    moved = False
    for st in STAGES:
        if stored[st] and stored[st] == old[st]:
            marks[st] = {**marks[st], "key": keys[st]}
            moved = True
    for st in ("train_started", "evaluate_started"):
        if marks.get(st) and marks[st] == old[st.split("_")[0]]:
            marks[st] = keys[st.split("_")[0]]
            moved = True
    if moved and persist:
        atomic_write_json(path, marks)
    return marks


def _done_stages(cfg: StudyConfig, cell: Cell, keys: dict[str, str]) -> list[str]:
    lay = layout(cfg)
    done = []
    marks = _marks(cfg, cell, keys, persist=False)  # a plan (a dry run) writes nothing
    if ((marks.get("evaluate") or {}).get("key") == keys["evaluate"] and (marks.get("train") or {}).get("key") == keys["train"]
            and lay.cell(cell.id).predictions.exists()):
        return list(STAGES)  # evaluated with this chain of keys: done, whether or not its caches are kept
    for st in STAGES:
        if st == "generate":
            ok = is_complete(lay.generate_dir(keys["generate"]))
        elif st == "curate":
            ok = lay.curated(keys["curate"]).exists()
        else:
            ok = (marks.get(st) or {}).get("key") == keys[st]
        if ok:
            done.append(st)
    return done


def plan_study(cfg: StudyConfig) -> list[CellPlan]:
    """Every cell with its stage keys, the stages already cached, and the work it still needs."""
    plans = []
    cache: dict[str, Any] = {}
    for c in expand_cells(cfg):
        keys = stage_keys(cfg, c)
        done = _done_stages(cfg, c, keys)
        calls, tokens = _estimate(cfg, c, keys, done, cache)
        plans.append(CellPlan(c, keys, done, calls, tokens))
    return plans


def _estimate(cfg, cell: Cell, keys, done, cache) -> tuple[int | None, int | None]:
    """(teacher calls still needed, training tokens). Exact for lab/cached traces; ``None`` if unknown."""
    n = None
    mean_tokens = None
    cur = layout(cfg).curated(keys["curate"])
    if cur.exists():
        from .traces import read_traces

        tr = read_traces(cur)
        n = len(tr)
        mean_tokens = sum(len(t.question) + len(t.output) + 20 for t in tr) / max(n, 1)
    elif (rs := _replay_cell_stats(cfg, cell)) is not None:
        n, mean_tokens = rs
    elif _lab_made(cfg, cell):
        ck = ("lab", cell.task.model_dump_json(), cell.level, cell.format)
        if ck not in cache:
            exs = _train_examples(cfg, cell.task)
            from .tasks.arith import lab_rationale, lab_reasoning

            sample = exs[:256]
            if cell.level == RAW:  # <think>\n reasoning \n</think>\n\n response
                mt = sum(len(e.question) + len(lab_reasoning(e)) + len(lab_rationale(e, RAW_PROMPT_LEVEL, "cot")) + 40
                         for e in sample) / max(len(sample), 1)
            else:
                mt = sum(len(e.question) + len(lab_rationale(e, cell.level, cell.format)) + 20 for e in sample) / max(len(sample), 1)
            cache[ck] = (len(exs), mt)
        n, mean_tokens = cache[ck]
    samples = int(cfg.generate.get("samples", cfg.generate.get("n", 1)) or 1)
    if "generate" in done or cell.teacher.startswith("replay:") or cell.level == 0:
        calls = 0  # level 0 is the gold answer: no teacher call
    elif n is not None:
        calls = n * samples
    else:
        try:
            calls = len(_train_examples(cfg, cell.task)) * samples
        except UserError:
            calls = None
    if n is None or mean_tokens is None:
        return calls, None
    seen = _examples_seen(given(cfg.train), n)
    char_level = cell.student.startswith("scratch:") and "@" not in cell.student
    scale = 1.0 if char_level else 0.3  # chars -> subword tokens, roughly
    return calls, int(seen * mean_tokens * scale)


_REPLAY_STATS: dict[tuple, dict[tuple, list[float]]] = {}


def _replay_stats(path: str, who: str | None) -> dict[tuple, list[float]]:
    """(task, level, format) -> [rows, characters] of a replay file's first samples (one read per file)."""
    key = (path, who, json.dumps(_file_sig(f"replay:{path}", legacy=True)))
    if key not in _REPLAY_STATS:
        stats: dict[tuple, list[float]] = {}
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if (who and r.get("teacher") != who) or r.get("sample", 0):
                    continue
                st = stats.setdefault((r.get("task"), str(r.get("level")), r.get("format", "cot")), [0, 0])
                st[0] += 1
                st[1] += len(r.get("question") or "") + len(r.get("output") or "") + 20
        _REPLAY_STATS[key] = stats
    return _REPLAY_STATS[key]


def _replay_cell_stats(cfg: StudyConfig, cell: Cell) -> tuple[int, float] | None:
    """(examples, mean characters) a replay cell will train on, read from the file (no generation)."""
    spec, who = split_teacher(cell.teacher)
    if not spec.startswith("replay:") or is_pseudo(cell.level, cell.teacher) or is_rewrite(cfg, cell) or cell.level == RAW:
        return None
    try:
        if cell.level == 0:  # answer only: "The answer is X" after each training question
            exs = _train_examples(cfg, cell.task)
            return len(exs), sum(len(e.question) + 20 for e in exs[:256]) / max(min(len(exs), 256), 1)
        got = _replay_stats(spec.split(":", 1)[1], who).get((cell.task.name, str(cell.level), cell.format))
    except (OSError, UserError):
        return None
    if not got or not got[0]:
        return None
    n = int(got[0]) if not cell.task.train_size else min(int(got[0]), cell.task.train_size)
    return n, got[1] / got[0]


def _lab_made(cfg: StudyConfig, cell: Cell) -> bool:
    """Traces the offline lab teacher writes (lengths known without generating)."""
    if is_pseudo(cell.level, cell.teacher) or cell.level == "human":
        return False
    if is_rewrite(cfg, cell):
        return cfg.rewrite_with == "lab"
    return cell.teacher == "lab" or (cell.teacher == "lab:think" and cell.level in (0, RAW))


def _examples_seen(train: dict[str, Any], n: int) -> float:
    steps = train.get("max_steps") or 0
    bs = train.get("batch_size") or train.get("per_device_train_batch_size") or 0
    if steps and steps > 0 and bs:
        return float(steps * bs * int(train.get("gradient_accumulation_steps", 1) or 1))
    return float(n * float(train.get("epochs", train.get("num_train_epochs", 3)) or 3))


# ------------------------------------------------------------------------------------------
# stage adapters over the other modules
# ------------------------------------------------------------------------------------------
_EXAMPLES: dict[str, list] = {}


def _load_split(cfg: StudyConfig, task: TaskSpec, split: str, size: int | None):
    key = json.dumps([task.name, task.options, split, cfg.data_dir], sort_keys=True, default=str)
    if key not in _EXAMPLES:
        from .tasks import get_task

        _EXAMPLES[key] = get_task(task.name, data_dir=cfg.data_dir, **task.options).load(split)
    exs = _EXAMPLES[key]
    return exs[:size] if size else exs


def _train_examples(cfg, task: TaskSpec):
    return _load_split(cfg, task, task.train_split, task.train_size)


def _test_examples(cfg, task: TaskSpec):
    return _load_split(cfg, task, task.test_split, task.test_size)


def _generate(cfg: StudyConfig, cell: Cell, gen_dir: Path, log) -> int:
    """Run the teacher over the training split into ``gen_dir`` (``traces.jsonl`` + the call store,
    so an interrupted API generation resumes without repeating completed calls)."""
    from .traces import write_traces

    examples = _train_examples(cfg, cell.task)
    if is_pseudo(cell.level, cell.teacher):  # mixed / curriculum level or union of teachers
        from .mix import Candidate, TraceSource, build_traces

        cand = Candidate.parse(cell.teacher, cell.level, cell.format)
        return write_traces(gen_dir / "traces.jsonl", build_traces(cand, examples, TraceSource(gen_dir, cfg.generate)))
    from .generate import GenerateConfig, examples_from_traces, generate

    level = RAW_PROMPT_LEVEL if cell.level == RAW else cell.level
    spec, who = split_teacher(cell.teacher)
    if is_rewrite(cfg, cell):  # rewrite the teacher's raw traces at this level
        src = _raw_traces(cfg, cell, log)
        examples = examples_from_traces(src, known={e.id: e for e in _train_examples(cfg, cell.task)})
        spec, who = split_teacher(str(cfg.rewrite_with))
        print(f"generate: rewriting {len(examples)} raw traces of {cell.teacher} at level {level} with {cfg.rewrite_with}",
              flush=True)
    try:
        extra = {"replay_teacher": who} if who else {}
        gconf = GenerateConfig.model_validate({**cfg.generate, **extra, "teacher": spec, "levels": [level],
                                               "formats": [cell.format]})
    except ValidationError as e:
        raise validation_error(e, "study", GenerateConfig, section="generate") from None
    res = generate(examples, gen_dir, gconf, progress=False, wait_for_lock=True)
    if res.failed:
        print(f"generate: {len(res.failed)} of {res.calls} teacher calls failed, e.g. {res.failed[0].get('error', '')[:200]}",
              flush=True)
    if res.failed and len(res.failed) > cfg.max_failed_calls * max(res.calls, 1):
        raise UserError(
            f"teacher {cell.teacher}: {len(res.failed)} of {res.calls} calls failed (see {gen_dir}/failed.jsonl); "
            "rerun the study to retry them, or allow some with max_failed_calls"
        )
    return len(res.traces)


def _generate_cached(cfg: StudyConfig, cell: Cell, log) -> tuple[Path, bool]:
    """A cell's traces from the shared generate cache, generating them under its lock when absent;
    returns (traces.jsonl, generated now)."""
    key = stage_keys(cfg, cell)["generate"]
    gen_dir = layout(cfg).generate_dir(key)
    with _Lock(gen_dir.with_suffix(".lock")):
        if is_complete(gen_dir):
            return gen_dir / "traces.jsonl", False
        t0 = time.time()
        n = _generate(cfg, cell, gen_dir, log)
        mark_complete(gen_dir, key, traces=n, wall_s=round(time.time() - t0, 2))
        print(f"generate: {n} traces ({cell.teacher}, level {cell.level}) in {time.time() - t0:.1f}s", flush=True)
    return gen_dir / "traces.jsonl", True


def _raw_traces(cfg: StudyConfig, cell: Cell, log) -> Path:
    """The teacher's raw traces (generated once, shared with the study's ``raw`` cells)."""
    return _generate_cached(cfg, raw_cell(cell), log)[0]


def _curate(cfg: StudyConfig, cell: Cell, src: Path, out: Path, log) -> dict[str, Any]:
    from .traces import read_traces, write_traces

    traces = read_traces(src)
    from .curate import curate

    kw = given(cfg.curate)
    if kw.get("decontaminate", True) and "test_questions" not in kw:
        # decontaminate against the test split this study evaluates on (with the task's options)
        kw.setdefault("use_task_test_split", False)
        kw["test_questions"] = {cell.task.name: [e.question for e in _test_examples(cfg, cell.task)]}
    kw.setdefault("data_dir", cfg.data_dir)
    try:
        kept, rep = curate(traces, **kw)
    except TypeError as e:
        raise UserError(f"field 'curate': {e}") from None
    stats = rep.as_dict()
    stats.pop("examples", None)
    if not kept:
        raise UserError(f"curation kept none of {len(traces)} traces for cell {cell.id}; relax the curate settings")
    write_traces(out, kept)
    return stats


def _train_config(cfg: StudyConfig, cell: Cell):
    """TrainConfig for a cell: the student's defaults (scratch or paper) + the study's ``train`` + seed."""

    extra = {"objective": cell.objective} if cell.objective != "sft" else {}
    # a raw cell learns the teacher's reasoning too (unless the study sets its own target)
    base = {"target": "reasoning+response"} if cell.level == RAW else {}
    if cell.objective == "logit-kd":  # one stored teacher top-k table per trace set, shared by seeds and students
        base["kd_cache"] = str(layout(cfg).teacher_topk)
    return TrainConfig.for_student(cell.student, **{**base, **given(cfg.train), "seed": cell.seed, **extra})


def _train(cfg: StudyConfig, cell: Cell, traces_path: Path, model_dir: Path, log, resume: bool) -> dict[str, Any]:
    from .traces import read_traces

    from .train import train as train_fn

    conf = _train_config(cfg, cell)
    from .mix import is_loss_mix

    if str(cell.level).startswith("curriculum:") or is_loss_mix(cell.level):
        # a curriculum keeps its coarse-to-fine order: trained in phases that continue each other;
        # a loss-difficulty mix first trains a probe of this student to rank the items
        from .mix import Candidate, train_candidate

        cand = Candidate.parse(cell.teacher, cell.level, cell.format)
        return train_candidate(cand, _train_examples(cfg, cell.task), cell.student, model_dir, conf)
    # a mixed level spec (mix:3-6, union, ...) trains on its mixture by design; a plain level on one cell
    mixed = isinstance(cell.level, str) and cell.level not in ("human", RAW)
    from .train import OtherRunError

    if cfg.cluster.gpus_per_cell > 1:  # one model on several GPUs: `cotdistill train` under accelerate launch
        return _train_launched(cfg, cell, conf, traces_path, model_dir, resume, mixed)
    try:
        res = train_fn(read_traces(traces_path), cell.student, model_dir, conf, resume=resume, progress=False,
                       overwrite=not resume, mix=mixed)
    except OtherRunError:  # the interrupted attempt was made by other code: start the cell over
        print("train: the interrupted attempt does not match this code's settings; starting over", flush=True)
        res = train_fn(read_traces(traces_path), cell.student, model_dir, conf, resume=False, progress=False,
                       overwrite=True, mix=mixed)
    info: dict[str, Any] = {}
    summ = getattr(res, "summary", None)
    if isinstance(summ, dict):
        info.update(summ)
    if hasattr(res, "model_dump"):
        info.update(res.model_dump())
    elif isinstance(res, dict):
        info.update(res)
    else:
        info.update(getattr(res, "__dict__", {}) or {})
    return {k: v for k, v in info.items() if isinstance(v, (int, float, str, bool)) or v is None}


def _train_launched(cfg: StudyConfig, cell: Cell, conf, traces_path: Path, model_dir: Path, resume: bool,
                    mixed: bool) -> dict[str, Any]:
    """Train a cell on ``cluster.gpus_per_cell`` processes with the ``cluster.distributed`` preset."""
    import yaml

    from .distributed import launch

    work = Path(f"{model_dir}.launch")
    work.mkdir(parents=True, exist_ok=True)
    conf_file = work / "train.yaml"
    conf_file.write_text(yaml.safe_dump(conf.model_dump(mode="json")), encoding="utf-8")
    args = ["train", "--traces", str(traces_path), "--student", cell.student, "--out", str(model_dir),
            "--config", str(conf_file), "--quiet", "--resume" if resume else "--overwrite", *(["--mix"] if mixed else [])]
    rc = launch(cfg.cluster.distributed, cfg.cluster.gpus_per_cell, args, work)
    if rc != 0:
        raise UserError(f"training on {cfg.cluster.gpus_per_cell} processes ({cfg.cluster.distributed}) exited with {rc}; "
                        f"see {layout(cfg).cell(cell.id).log}")
    summary = json.loads((model_dir / "train_summary.json").read_text(encoding="utf-8"))
    return {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool)) or v is None}


def _evaluate(cfg: StudyConfig, cell: Cell, model_dir: Path, eval_dir: Path, log, resume: bool) -> dict[str, Any]:
    from .evaluate import evaluate as ev

    examples = _test_examples(cfg, cell.task)
    res = ev(str(model_dir), examples=examples, out_dir=eval_dir, progress=False, overwrite=not resume, **given(cfg.eval))
    if isinstance(res, dict):
        return res
    m = read_metrics(eval_dir)
    return m.to_dict() if m is not None else {}


# ------------------------------------------------------------------------------------------
# running one cell (inside a worker process)
# ------------------------------------------------------------------------------------------
def _Lock(path: Path):
    """Wait for, then hold, the lock of a shared cache entry (study workers and shards)."""
    from .artifacts import hold

    path.parent.mkdir(parents=True, exist_ok=True)
    return hold(path, str(path), wait=True)


def _status(cdir: Path, state: str, stage: str | None = None, **extra) -> None:
    import socket

    job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{job}_{os.environ.get('SLURM_ARRAY_TASK_ID')}" if job else os.environ.get("SLURM_JOB_ID")
    atomic_write_json(cdir / "status.json", {"state": state, "stage": stage, "pid": os.getpid(), "host": socket.gethostname(),
                                             "t": time.time(), **({"job": job} if job else {}), **extra})


@contextlib.contextmanager
def _redirect_to(log_path: Path):
    """Send fd 1/2 (and Python's sys.stdout/err) of this process to ``log_path`` for the block."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    fh = open(log_path, "a", encoding="utf-8", buffering=1)
    saved = os.dup(1), os.dup(2)
    old = sys.stdout, sys.stderr
    os.dup2(fh.fileno(), 1)
    os.dup2(fh.fileno(), 2)
    sys.stdout = sys.stderr = fh
    try:
        yield fh
    finally:
        fh.flush()
        sys.stdout, sys.stderr = old
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        fh.close()


def _prepare(cfg: StudyConfig, cell: Cell, keys: dict[str, str], on_stage=lambda stage: None) -> tuple[Path, list[str]]:
    """The stages a cell shares with others: teacher generation and curation (each cached by its key
    and run under its lock). Returns (curated traces, stages run)."""
    ran: list[str] = []
    on_stage("generate")
    gen_path, generated = _generate_cached(cfg, cell, None)
    if generated:
        ran.append("generate")
    cur_path = layout(cfg).curated(keys["curate"])
    with _Lock(cur_path.with_suffix(".lock")):
        if not cur_path.exists():
            on_stage("curate")
            stats = _curate(cfg, cell, gen_path, cur_path, None)
            atomic_write_json(cur_path.with_suffix(".stats.json"), stats)
            ran.append("curate")
            print(f"curate: {stats}", flush=True)
    return cur_path, ran


def prepare_log(cfg: StudyConfig, cell: Cell) -> Path:
    """Where the shared stages of ``cell``'s group log when they run as their own job."""
    return layout(cfg).cache / "prepare" / f"{stage_keys(cfg, cell)['curate']}.log"


def prepare_cell(cfg: StudyConfig, cell: Cell) -> dict[str, Any]:
    """Generate and curate the traces ``cell`` trains on, once for every cell that shares them (what a
    cluster's preparation job runs; the cells then only train and evaluate). Logs to
    :func:`prepare_log`; a failure is recorded beside it (``<key>.failed.json``) and raised."""
    keys = stage_keys(cfg, cell)
    log_path = prepare_log(cfg, cell)
    failed = log_path.with_suffix(".failed.json")
    stage = ["generate"]
    with _redirect_to(log_path):
        print(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} prepare {cell.task.name} {cell.teacher} level {cell.level} "
              f"{cell.format} (for {cell.id} and the cells sharing its traces)", flush=True)
        try:
            cur, ran = _prepare(cfg, cell, keys, on_stage=lambda st: stage.__setitem__(0, st))
        except BaseException as e:
            msg = redact(str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}",
                         os.environ.get("OPENAI_API_KEY"))
            print(f"FAILED in stage {stage[0]}: {msg}\n{traceback.format_exc()}", flush=True)
            atomic_write_json(failed, {"stage": stage[0], "error": msg.splitlines()[0][:500], "t": time.time()})
            raise
    with contextlib.suppress(FileNotFoundError):
        failed.unlink()
    return {"curated": str(cur), "ran": ran}


def _link_traces(cl: CellLayout, cur_path: Path, marks: dict[str, Any], keys: dict[str, str]) -> None:
    """The cell's ``traces.jsonl``: a hard link to (else a copy of) the curated traces it trains on."""
    if cl.traces.exists() and (marks.get("curate") or {}).get("key") == keys["curate"]:
        return
    import shutil

    from .fileio import atomic_path

    with atomic_path(cl.traces) as tmp:
        try:
            os.link(cur_path, tmp)
        except OSError:
            shutil.copyfile(cur_path, tmp)
    marks["curate"] = {"key": keys["curate"]}
    atomic_write_json(cl.stages, marks)


def run_cell(cfg: StudyConfig, cell: Cell, threads: int | None = None) -> dict[str, Any]:
    """Run (or skip) every stage of one cell; returns ``{"row": ..., "ran": [stages]}``. Never raises.
    A cell that another process is running (a second submission, a shard, a cluster job) is left to
    it: ``{"row": None, "ran": [], "busy": "<who holds it>"}``."""
    from .artifacts import hold

    cdir = layout(cfg).cell(cell.id).dir
    cdir.mkdir(parents=True, exist_ok=True)
    try:
        with hold(cdir / CELL_LOCK, f"cell {cell.id}", flag="output_dir"):
            return _run_cell(cfg, cell, threads)
    except UserError as e:
        if "in use by another cotdistill process" not in str(e):
            raise
        return {"row": None, "ran": [], "busy": str(e)}


CELL_LOCK = ".cotdistill.cell.lock"


def _run_cell(cfg: StudyConfig, cell: Cell, threads: int | None = None) -> dict[str, Any]:
    lay = layout(cfg)
    cl = lay.cell(cell.id)
    cdir = cl.dir
    keys = stage_keys(cfg, cell)
    ran: list[str] = []
    t_start = time.time()
    if threads:
        import torch

        torch.set_num_threads(threads)
    marks = _marks(cfg, cell, keys)
    atomic_write_json(cl.config, {"cell": cell.id, **cell.row_keys(), "task_spec": cell.task.model_dump(),
                                  "keys": keys, "generate": cfg.generate, "curate": given(cfg.curate),
                                  "train": given(cfg.train), "eval": given(cfg.eval), "data_dir": cfg.data_dir})
    stage = "generate"
    try:
        with _redirect_to(cl.log) as log:
            print(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} cell {cell.id}", flush=True)

            def on_stage(st: str) -> None:
                nonlocal stage
                stage = st
                _status(cdir, "running", st)

            # a cell evaluated with this chain of keys is done: its traces and weights are needed no more
            # (caches or models may have been deleted to save space; nothing is generated or paid again)
            evaluated = ((marks.get("evaluate") or {}).get("key") == keys["evaluate"]
                         and (marks.get("train") or {}).get("key") == keys["train"] and cl.predictions.exists())
            if not evaluated:
                cur_path, shared = _prepare(cfg, cell, keys, on_stage)
                ran += shared
                stage = "curate"
                _link_traces(cl, cur_path, marks, keys)
            # train
            stage = "train"
            if not evaluated and ((marks.get("train") or {}).get("key") != keys["train"] or not cl.model.exists()):
                _status(cdir, "running", "train")
                # same inputs as an interrupted attempt: continue from its checkpoint; else start over
                resume = marks.get("train_started") == keys["train"]
                marks.pop("train", None)
                marks.pop("evaluate", None)
                marks["train_started"] = keys["train"]
                atomic_write_json(cl.stages, marks)
                t0, c0 = time.time(), time.process_time()
                info = _train(cfg, cell, cl.traces, cl.model, log, resume=resume)
                marks["train"] = {"key": keys["train"], "wall_s": round(time.time() - t0, 2),
                                  "cpu_s": round(time.process_time() - c0, 2), "info": info}
                marks.pop("train_started", None)
                atomic_write_json(cl.stages, marks)
                ran.append("train")
                print(f"train: done in {time.time() - t0:.1f}s ({'resumed' if resume else 'fresh'})", flush=True)
            # evaluate
            stage = "evaluate"
            if (marks.get("evaluate") or {}).get("key") != keys["evaluate"] or not cl.predictions.exists():
                _status(cdir, "running", "evaluate")
                # same model and settings as an interrupted attempt: keep its predictions; else start over
                resume = marks.get("evaluate_started") == keys["evaluate"]
                marks["evaluate_started"] = keys["evaluate"]
                atomic_write_json(cl.stages, marks)
                t0, c0 = time.time(), time.process_time()
                _evaluate(cfg, cell, cl.model, cl.eval, log, resume=resume)
                marks["evaluate"] = {"key": keys["evaluate"], "wall_s": round(time.time() - t0, 2),
                                     "cpu_s": round(time.process_time() - c0, 2)}
                marks.pop("evaluate_started", None)
                atomic_write_json(cl.stages, marks)
                ran.append("evaluate")
                print(f"evaluate: done in {time.time() - t0:.1f}s", flush=True)
            # outputs decoded under an older answer checker are graded again (no decoding)
            from . import answers
            from .evaluate import rescore

            m = read_metrics(cl.metrics)
            if m is None or m.answer_checker != answers.VERSION:
                stage = "rescore"
                rescore(cl.eval, _test_examples(cfg, cell.task), keep_others=True)
                ran.append("rescore")
                print(f"rescore: graded again with answer checker {answers.VERSION}", flush=True)
            row = _result_row(cell, cl, marks)
            print(f"result: accuracy {row['accuracy']:.4f} [{row['ci_low']:.4f}, {row['ci_high']:.4f}]", flush=True)
    except BaseException as e:  # a failed cell is recorded and does not stop the others
        if isinstance(e, (KeyboardInterrupt, Interrupted)):
            raise
        msg = redact(str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}", os.environ.get("OPENAI_API_KEY"))
        with open(cl.log, "a", encoding="utf-8") as f:
            f.write(f"FAILED in stage {stage}: {msg}\n{traceback.format_exc()}\n")
        row = {**cell.row_keys(), "cell": cell.id, "status": "failed", "stage": stage, "error": msg.splitlines()[0][:500]}
        write_cell_result(cl.result, row)
        _status(cdir, "failed", stage, error=row["error"])
        return {"row": row, "ran": ran}
    with open(cl.log, "a", encoding="utf-8") as f:
        f.write(f"cell finished in {time.time() - t_start:.1f}s this run (stages run: {', '.join(ran) or 'none'})\n")
    write_cell_result(cl.result, row)
    _status(cdir, "done", None)
    return {"row": row, "ran": ran}


def _result_row(cell: Cell, cl: CellLayout, marks: dict) -> dict[str, Any]:
    preds = read_predictions(cl.predictions, graded=True)
    m = read_metrics(cl.metrics)
    metrics = m.to_dict() if m is not None else {}
    n = len(preds)
    k = sum(1 for p in preds if p.correct)
    lo, hi = wilson_ci(k, n)
    acc = k / n if n else 0.0
    if "ci_low" in metrics and "ci_high" in metrics and abs(float(metrics.get("accuracy", acc)) - acc) < 1e-9:
        lo, hi = float(metrics["ci_low"]), float(metrics["ci_high"])
    out_tok = metrics.get("mean_output_tokens")
    if out_tok is None:
        toks = [p.output_tokens for p in preds if p.output_tokens is not None]
        out_tok = sum(toks) / len(toks) if toks else (sum(len(p.output) for p in preds) / max(n, 1))
    info = (marks.get("train") or {}).get("info") or {}
    train_tokens = info.get("train_tokens", info.get("tokens", info.get("num_tokens")))
    wall = sum(float((marks.get(s) or {}).get("wall_s", 0.0)) for s in ("train", "evaluate"))
    return {
        **cell.row_keys(), "cell": cell.id, "status": "ok", "n": n, "accuracy": round(acc, 6),
        "ci_low": round(lo, 6), "ci_high": round(hi, 6), "mean_output_tokens": round(float(out_tok), 2),
        "train_tokens": train_tokens, "wall_s": round(wall, 2),
        "accuracy_lenient": metrics.get("accuracy_lenient"), "n_no_answer": metrics.get("n_no_answer"),
        "answer_checker": metrics.get("answer_checker"),
    }


# ------------------------------------------------------------------------------------------
# the runner
# ------------------------------------------------------------------------------------------
@dataclass
class StudySummary:
    cells: int
    done: int
    failed: int
    busy: int = 0  # cells another process (a cluster job, another submission) was running
    ran: dict[str, list[str]] = field(default_factory=dict)  # cell id -> stages executed this run
    results_path: Path | None = None

    @property
    def stages_run(self) -> int:
        return sum(len(v) for v in self.ran.values())


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` (1 <= i <= n) -> (i, n)."""
    if not text:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise UserError(f"{opt('shard')} {text!r}: use i/n with 1 <= i <= n, e.g. {opt('shard')} 1/2 on one machine and 2/2 on another")
    return int(m.group(1)), int(m.group(2))


def shard_cells(cells: list[Cell], shard: tuple[int, int] | None) -> list[Cell]:
    if not shard:
        return cells
    i, n = shard
    return [c for k, c in enumerate(cells) if k % n == i - 1]


def merge_results(cfg: StudyConfig) -> Path:
    """Write ``results.jsonl`` from every cell's ``result.json`` (config order; atomic, one merge at a
    time, so cells finishing together on a cluster each leave every finished row in it)."""
    lay = layout(cfg)
    with _Lock(lay.root / ".cotdistill.results.lock"):
        return _merge_results(cfg, lay)


def load_written_study(study_dir: str | os.PathLike) -> StudyConfig:
    """The config a study directory was last run with (its ``study.json``), pointed at that directory."""
    d = Path(study_dir).expanduser()
    lay = StudyLayout(d)
    if not lay.config.is_file():
        raise UserError(f"{d} has no study.json{nearby(d, 'study.json')}: pass a study's output_dir")
    try:
        cfg = StudyConfig.model_validate(json.loads(lay.config.read_text(encoding="utf-8")))
    except (ValidationError, ValueError) as e:
        raise UserError(f"{lay.config}: not a study config this version reads ({str(e).splitlines()[0]}); "
                        "rerun the study with its YAML instead") from None
    cfg.output_dir = str(d.resolve())
    return cfg


def refresh_results(study_dir: str | os.PathLike) -> Path | None:
    """Merge the cells finished so far into ``results.jsonl`` (a report can be built at any time,
    while cluster jobs still run). ``None`` for a directory without ``study.json``."""
    if not StudyLayout(Path(study_dir).expanduser()).config.is_file():
        return None
    return merge_results(load_written_study(study_dir))


def _merge_results(cfg: StudyConfig, lay: StudyLayout) -> Path:
    rows = []
    for c in expand_cells(cfg):
        r = read_cell_result(lay.cell(c.id).result)
        if r is None:
            continue
        if r.status == "ok":
            keys = stage_keys(cfg, c)
            marks = _marks(cfg, c, keys)
            if (marks.get("evaluate") or {}).get("key") != keys["evaluate"]:
                continue  # stale: the cell's config changed and it has not been rerun yet
        rows.append(r)
    return write_results(lay.results, rows)


def rescore_study(study_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Grade every evaluated cell of a study again with the current answer checker
    (:func:`cotdistill.score.rescore`: no model, no decoding): each cell's ``predictions.jsonl`` and
    ``metrics.json``, its ``result.json`` and the study's ``results.jsonl``. Returns one
    ``{"cell", "before", "after"}`` per cell regraded. Cells whose results a run would not report
    (config changed since, or evaluation unfinished) are left alone. A study that is running (any
    shard) is refused."""
    from .artifacts import hold
    from .score import rescore

    d = Path(study_dir).expanduser()
    lay = StudyLayout(d)
    if not lay.config.is_file():
        raise UserError(f"{d} has no study.json{nearby(d, 'study.json') or nearby(d, 'predictions.jsonl')}: "
                        "pass a study's output_dir, or an evaluation directory")
    cfg = load_written_study(d)
    done = []
    with contextlib.ExitStack() as stack:
        stack.enter_context(claim(d, "study", flag="output_dir", identity=cfg.name))
        for lock in sorted(d.glob(".cotdistill.shard-*-of-*.lock")):  # a sharded run holds its own locks
            stack.enter_context(hold(lock, f"output_dir {d}", flag="output_dir"))
        for c in expand_cells(cfg):
            cl = lay.cell(c.id)
            old = read_cell_result(cl.result)
            if old is None or old.status != "ok" or not cl.predictions.is_file():
                continue
            keys = stage_keys(cfg, c)
            marks = _marks(cfg, c, keys)
            key = keys["evaluate"]
            if (marks.get("evaluate") or {}).get("key") != key or "evaluate_started" in marks:
                continue  # stale (config changed since) or an evaluation not finished: a run redoes it
            rescore(cl.eval, _test_examples(cfg, c.task), keep_others=True)
            row = _result_row(c, cl, marks)
            write_cell_result(cl.result, {**old.to_dict(), **row, "wall_s": old.get("wall_s", row["wall_s"])})
            done.append({"cell": c.id, "before": old.get("accuracy"), "after": row["accuracy"]})
        merge_results(cfg)
    return done


def _worker_init(parent: int) -> None:
    """Worker processes die with the study process (even when it is SIGKILLed)."""
    import threading

    def watch():
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()


def _worker(cfg_json: str, cell_index: int, threads: int | None, secrets: dict[str, str] | None = None) -> dict[str, Any]:
    cfg = StudyConfig.model_validate_json(cfg_json)  # secrets arrive masked in the JSON ...
    if secrets:  # ... and in memory beside it (an api_key from the study YAML), never on disk
        cfg.generate.update(protect_secrets(secrets))
    cell = expand_cells(cfg)[cell_index]
    return run_cell(cfg, cell, threads)


def run_study(cfg: StudyConfig, jobs: int = 1, shard: tuple[int, int] | None = None,
              progress: Progress = True, console=None) -> StudySummary:
    """Run every (pending) cell of this shard with ``jobs`` worker processes; merge results.jsonl.
    The output directory is claimed as this study's (another study's directory is refused, and a
    second process on the same shard stops at once)."""
    if jobs < 1:
        raise UserError(f"{opt('jobs')} {jobs}: use 1 or more")
    root = Path(cfg.output_dir)
    lock = f".cotdistill.shard-{shard[0]}-of-{shard[1]}.lock" if shard else ".cotdistill.lock"
    with claim(root, "study", flag="output_dir", identity=cfg.name, lock=lock):
        return _run_study(cfg, root, jobs, shard, progress, console)


def _run_study(cfg: StudyConfig, root: Path, jobs: int, shard: tuple[int, int] | None, progress: Progress,
               console) -> StudySummary:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    atomic_write_json(layout(cfg).config, cfg.model_dump())
    all_cells = expand_cells(cfg)
    index = {c.id: i for i, c in enumerate(all_cells)}
    mine = shard_cells(all_cells, shard)
    if jobs > 1:
        mine = _longest_first(cfg, mine)
    threads = cfg.threads or max(1, (os.cpu_count() or 1) // jobs)
    summary = StudySummary(cells=len(mine), done=0, failed=0)
    cfg_json = cfg.model_dump_json()
    for c in mine:  # a stale status from a killed run must not show as running
        st = _cell_dir(cfg, c) / "status.json"
        if st.exists():
            _status(_cell_dir(cfg, c), "pending")
    view = _CellWatch(cfg, mine, progress=progress, console=console)
    ctx = mp.get_context("spawn")
    with view, ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_worker_init,
                                   initargs=(os.getpid(),)) as pool:
        secrets = {k: v.get_secret_value() for k, v in cfg.generate.items() if isinstance(v, SecretStr)}
        futs = {pool.submit(_worker, cfg_json, index[c.id], threads, secrets): c for c in mine}
        pending = set(futs)
        while pending:
            finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for f in finished:
                c = futs[f]
                try:
                    res = f.result()
                except Exception as e:  # the worker died (OOM, segfault)
                    row = {**c.row_keys(), "cell": c.id, "status": "failed", "stage": "worker",
                           "error": f"worker process died: {type(e).__name__}: {e}"[:500]}
                    write_cell_result(layout(cfg).cell(c.id).result, row)
                    _status(_cell_dir(cfg, c), "failed", "worker", error=row["error"])
                    res = {"row": row, "ran": []}
                summary.ran[c.id] = res["ran"]
                if res["row"] is None:  # another process is running this cell
                    summary.busy += 1
                elif res["row"].get("status") == "ok":
                    summary.done += 1
                else:
                    summary.failed += 1
            if finished:
                merge_results(cfg)  # results.jsonl holds every finished cell while the study runs
            view.refresh()
    summary.results_path = merge_results(cfg)
    return summary


def _longest_first(cfg: StudyConfig, cells: list[Cell]) -> list[Cell]:
    """Order cells by estimated training cost, largest first (shorter makespan with several workers).

    Cost = estimated training tokens x (layers x d_model^2) for scratch students; cells whose cost
    cannot be estimated keep their config order after the estimated ones."""
    from .students import is_scratch, parse_scratch

    cache: dict[str, Any] = {}
    costs: dict[str, float] = {}
    for c in cells:
        try:
            keys = stage_keys(cfg, c)
            done = _done_stages(cfg, c, keys)
            if "train" in done:
                costs[c.id] = 0.0
                continue
            _, tokens = _estimate(cfg, c, keys, done, cache)
            if tokens is None or not is_scratch(c.student):
                continue
            sp = parse_scratch(c.student)
            costs[c.id] = float(tokens) * sp.layers * sp.d_model**2
        except Exception:  # noqa: BLE001 - ordering is an optimisation only
            continue
    known = sorted((c for c in cells if c.id in costs), key=lambda c: -costs[c.id])
    return known + [c for c in cells if c.id not in costs]


class _CellWatch:
    """The study's progress, read from the cells' status files and reported through
    :class:`cotdistill.progress.Reporter`: ``done`` = finished cells of ``total``; ``info``: ``ok``,
    ``failed``, ``eta_s``, ``running`` (``[cell, stage, seconds]``, the training stage with the
    trainer's step, loss, tokens/s and ETA) and ``failures`` (``[cell, stage, error]``). A callable
    ``progress`` receives these events (the CLI draws a live table from them); ``True`` gives a
    bar on a terminal and, in a log, a line when a cell finishes and every INTERVAL_S seconds."""

    def __init__(self, cfg: StudyConfig, cells: list[Cell], progress: Progress = True, console: Any = None):
        self.cfg, self.cells = cfg, cells
        self.rep = Reporter(progress, "study", cfg.name, len(cells), unit="cells", console=console, plain_line=self._line)
        self._last_finished, self._last_line = -1, 0.0

    def _snapshot(self) -> dict[str, Any]:
        states = {c.id: _read_json(_cell_dir(self.cfg, c) / "status.json") or {} for c in self.cells}
        done = sum(1 for s in states.values() if s.get("state") == "done")
        failed = sum(1 for s in states.values() if s.get("state") == "failed")
        finished = done + failed
        el = time.time() - self.t0
        by_id = {c.id: c for c in self.cells}
        running = []
        for cid, st in states.items():
            if st.get("state") != "running":
                continue
            stage = str(st.get("stage"))
            if stage == "train":  # the trainer's own progress file: step, loss, tokens/s, ETA
                from .train import PROGRESS_FILE

                p = _read_json(_cell_dir(self.cfg, by_id[cid]) / "model.partial" / PROGRESS_FILE) or {}
                if p.get("step") is not None:
                    stage += f" {p['step']}/{p.get('max_steps')} loss {p.get('loss', float('nan')):.3f}"
                    if p.get("tokens_per_s"):
                        stage += f" {p['tokens_per_s']:,.0f} tok/s"
                    if p.get("eta_s") is not None:
                        stage += f" eta {p['eta_s']:.0f}s"
            running.append([cid, stage, round(time.time() - float(st.get("t", time.time())))])
        failures = [[cid, str(st.get("stage")), str(st.get("error", ""))] for cid, st in states.items()
                    if st.get("state") == "failed"]
        return {"finished": finished, "ok": done, "failed": failed,
                "eta_s": round(el / finished * (len(self.cells) - finished)) if finished else None,
                "running": running, "failures": failures}

    def _line(self, ev: ProgressEvent) -> str:
        i = ev.info
        eta = f"{i['eta_s']}s" if i.get("eta_s") is not None else "?"
        run = "; ".join(f"{cid}: {stage}" for cid, stage, _ in (i.get("running") or [])[:12])
        return (f"study: {ev.done}/{ev.total} cells · done {i.get('ok', 0)} · failed {i.get('failed', 0)} · "
                f"elapsed {ev.elapsed_s:.0f}s · eta {eta}" + (f" · running {run}" if run else ""))

    def __enter__(self) -> "_CellWatch":
        self.t0 = time.time()
        v = self._snapshot()
        self.rep.done = v.pop("finished")
        self.rep.info.update(v)
        self.rep.__enter__()
        self._last_finished, self._last_line = self.rep.done, time.time()
        return self

    def refresh(self, force: bool = False) -> None:
        v = self._snapshot()
        finished = v.pop("finished")
        self.rep.update(done=finished, **v)
        # in a log: a line when a cell finishes, and every INTERVAL_S seconds
        if force or finished != self._last_finished or time.time() - self._last_line >= INTERVAL_S:
            self._last_finished, self._last_line = finished, time.time()
            self.rep.print_plain()

    def __exit__(self, *a: Any) -> None:
        self.refresh(force=True)
        self.rep.__exit__(*a)

