"""The names of supervision, parsed in one place: granularity levels, formats, teacher specs,
training objectives and supervision candidates.

Configs validate their fields with these parsers (pydantic ``Annotated`` types below), so every
stage receives canonical values: ``"3"`` is the level ``3``, ``"BSM"`` the format ``subq``,
``"mix:difficulty"`` the candidate level ``mix:3-6``.

>>> parse_levels("1-3,human")
[1, 2, 3, 'human']
>>> Supervision.parse("curriculum:1-3").levels
(1, 2, 3)
>>> TeacherSpec.parse("replay:gpt4o.jsonl#gpt-4o").label
'gpt-4o'
>>> Candidate.parse("lab", "3", "cot", "logit-kd").name
'lab/L3/cot/logit-kd'
"""

from __future__ import annotations

import hashlib
import numbers
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args

from pydantic import BaseModel, BeforeValidator, PlainSerializer, PrivateAttr, SerializationInfo, WrapValidator

from .errors import UserError, did_you_mean

# ------------------------------------------------------------------------------------------
# levels
# ------------------------------------------------------------------------------------------
MIN_LEVEL, MAX_LEVEL = 0, 6
HUMAN = "human"
RAW = "raw"  # a teacher's own unconstrained trace (prompted at level 3), the source a rewriter rewrites

Level = Union[int, Literal["human"]]


def parse_level(value: Any) -> int | str:
    """One granularity level: 0..6 (``"3"`` -> 3) or ``"human"``."""
    if isinstance(value, bool):
        raise UserError(f"level {value!r}: use {MIN_LEVEL}..{MAX_LEVEL} (0 = answer only) or 'human'")
    if isinstance(value, numbers.Integral):
        value = int(value)  # numpy / pandas integers
    elif isinstance(value, float):
        if not value.is_integer():
            raise UserError(f"level {value!r} is not a whole number: levels are {MIN_LEVEL} (answer only) to {MAX_LEVEL}")
        value = int(value)
    if isinstance(value, str):
        s = value.strip().lower()
        if s == HUMAN:
            return s
        if not s.isdigit():
            if s == RAW:
                raise UserError(f"level 'raw' (a reasoning teacher's thinking) is not a level here: "
                                f"use {MIN_LEVEL}..{MAX_LEVEL} (0 = answer only) or 'human'")
            raise UserError(f"level {value!r}{did_you_mean(s, [HUMAN, RAW])}: use {MIN_LEVEL}..{MAX_LEVEL} "
                            "(0 = answer only) or 'human' (or 'raw' where a reasoning teacher's thinking is kept)")
        value = int(s)
    if not isinstance(value, int) or not MIN_LEVEL <= value <= MAX_LEVEL:
        raise UserError(f"level {value!r} is out of range: levels are {MIN_LEVEL} (answer only) to {MAX_LEVEL}")
    return value


def level_order(level: Any) -> tuple:
    """Sort key: numeric levels first, then ``human`` and other names."""
    return (isinstance(level, str), level if isinstance(level, int) else 99, str(level))


def parse_levels(spec: str | int | list | tuple) -> list[int | str]:
    """``"1-6"``, ``"0,3,5"``, ``"human"``, ``3`` or a list -> the sorted, unique levels."""
    if isinstance(spec, bool):
        raise UserError(f"levels {spec!r}: use e.g. 1-6, 0,3,5 or human")
    if isinstance(spec, int):
        items: list = [spec]
    elif isinstance(spec, (list, tuple)):
        items = list(spec)
    else:
        items = []
        for part in str(spec).split(","):
            part = part.strip()
            if re.fullmatch(r"\d+-\d+", part):
                a, b = map(int, part.split("-"))
                items.extend(range(a, b + 1))
            elif part:
                items.append(part)
    out: list[int | str] = []
    for lv in items:
        try:
            out.append(parse_level(lv))
        except UserError as e:
            raise UserError(f"{e} (in levels {spec!r}: use e.g. 1-6, 0,3,5 or human)") from None
    if not out:
        raise UserError(f"levels {spec!r} names no level: use e.g. 1-6")
    return sorted(set(out), key=level_order)


def level_label(level: Any) -> str:
    """The level as candidates and study cells name it: ``3`` -> ``L3``, ``human`` -> ``Lhuman``;
    mixed / curriculum names as they are (``mix:3-6``)."""
    return f"L{level}" if isinstance(level, int) or level == HUMAN else str(level)


# ------------------------------------------------------------------------------------------
# formats
# ------------------------------------------------------------------------------------------
Format = Literal["cot", "subq", "rar", "sym"]
FORMATS: tuple[str, ...] = get_args(Format)
# the paper's names in its released file names: BSM (sub-questions), RaR, SYM
FORMAT_ALIASES = {"bsm": "subq", "symbolic": "sym", **{f: f for f in FORMATS}}


def parse_format(value: Any) -> str:
    """One format: cot, subq, rar, sym (also the paper's BSM, RaR, SYM, any case)."""
    f = FORMAT_ALIASES.get(str(value).strip().lower())
    if f is None:
        raise UserError(f"unknown format {value!r}{did_you_mean(value, FORMATS)}; choose from {', '.join(FORMATS)} (or the paper's BSM, RaR, SYM)")
    return f


def parse_formats(spec: str | list | tuple) -> list[str]:
    """``"cot,subq"`` or a list -> the unique formats, in order."""
    items = spec if isinstance(spec, (list, tuple)) else [s for s in str(spec).split(",") if s.strip()]
    out = [parse_format(f) for f in items]
    if not out:
        raise UserError("no format given: use e.g. cot,subq")
    return list(dict.fromkeys(out))


# ------------------------------------------------------------------------------------------
# supervision: a plain level, a mixture by difficulty, a curriculum
# ------------------------------------------------------------------------------------------
MIX_ALIASES = {"mix:difficulty": "mix:3-6", "mix:difficulty:steps": "mix:3-6", "mix:difficulty:loss": "mix:3-6:loss"}
_SUPERVISION_HELP = ("use 0..6, 'human', 'mix:A-B', 'mix:A-B:loss', 'mix:difficulty' or 'curriculum:A-B' or "
                     "'curriculum:A,B,C'")


@dataclass(frozen=True)
class Supervision:
    """What one training run learns from, as a level name: ``plain`` (one level: ``3``, ``human``),
    ``mix`` (``mix:A-B``: easy items at level A, hard ones at B; difficulty from the teacher's steps or,
    with ``:loss``, from the student's own loss) or ``curriculum`` (``curriculum:1-6``: coarse to fine)."""

    kind: Literal["plain", "mix", "curriculum"]
    levels: tuple
    by: Literal["steps", "loss"] | None = None
    listed: bool = False  # a curriculum written as A,B,C (its name keeps that form)

    @classmethod
    def parse(cls, value: Any) -> "Supervision":
        if isinstance(value, bool):
            raise UserError(f"level {value!r}: {_SUPERVISION_HELP}")
        if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
            return cls("plain", (parse_level(value),))
        s = str(value).strip().lower()
        if s == HUMAN:
            return cls("plain", (HUMAN,))
        s = MIX_ALIASES.get(s, s)
        m = re.fullmatch(r"mix:(\d)-(\d)(?::(steps|loss))?", s)
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            if not (MIN_LEVEL <= a < b <= MAX_LEVEL):
                raise UserError(f"level {value!r}: mix:A-B needs 0 <= A < B <= 6 (A for easy items, B for hard ones)")
            return cls("mix", (a, b), "loss" if m.group(3) == "loss" else "steps")
        m = re.fullmatch(r"curriculum:(\d)-(\d)", s)
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            if not (MIN_LEVEL <= a < b <= MAX_LEVEL):
                raise UserError(f"level {value!r}: curriculum:A-B needs 0 <= A < B <= 6 (coarse to fine)")
            return cls("curriculum", tuple(range(a, b + 1)))
        m = re.fullmatch(r"curriculum:(\d(?:,\d)+)", s)
        if m:
            lv = tuple(int(x) for x in m.group(1).split(","))
            if any(not MIN_LEVEL <= x <= MAX_LEVEL for x in lv):
                raise UserError(f"level {value!r}: curriculum levels must be 0..6")
            return cls("curriculum", lv, listed=True)
        raise UserError(f"level {value!r} is not available{did_you_mean(s, [HUMAN, 'mix:difficulty'])}; {_SUPERVISION_HELP}")

    @property
    def value(self) -> int | str:
        """The canonical level name (``3``, ``"human"``, ``"mix:3-6"``, ``"mix:3-6:loss"``, ``"curriculum:1-6"``)."""
        if self.kind == "plain":
            return self.levels[0]
        if self.kind == "mix":
            return f"mix:{self.levels[0]}-{self.levels[1]}" + (":loss" if self.by == "loss" else "")
        if self.listed:
            return "curriculum:" + ",".join(map(str, self.levels))
        return f"curriculum:{self.levels[0]}-{self.levels[-1]}"

    @property
    def legacy(self) -> tuple[str, Any]:
        """The ``(kind, spec)`` pair of :func:`parse_level_spec`."""
        if self.kind == "plain":
            return "plain", self.levels[0]
        if self.kind == "mix":
            return "mix", (self.levels + ("loss",) if self.by == "loss" else self.levels)
        return "curriculum", list(self.levels)


def parse_level_spec(level: Any) -> tuple[str, Any]:
    """``3`` -> ("plain", 3); ``"mix:3-6"`` -> ("mix", (3, 6)); ``"mix:3-6:loss"`` -> ("mix", (3, 6, "loss"));
    ``"curriculum:1-6"`` -> ("curriculum", [1..6])."""
    return Supervision.parse(level).legacy


def is_pseudo(level: Any = None, teacher: str | None = None) -> bool:
    """True for mixed / curriculum levels and union teachers (built from several plain cells)."""
    if teacher is not None and str(teacher).startswith("union:"):
        return True
    return isinstance(level, str) and level.split(":")[0].lower() in ("mix", "curriculum")


# ------------------------------------------------------------------------------------------
# teachers
# ------------------------------------------------------------------------------------------
BACKENDS = ("openai", "hf", "vllm", "replay", "lab")
TEACHER_HELP = "use backend:model with backend in openai, hf, vllm, replay, lab (e.g. lab, replay:FILE, openai:gpt-4o-mini, hf:DIR)"


@dataclass(frozen=True)
class TeacherSpec:
    """A teacher named as ``backend:model``: ``openai:gpt-4o``, ``hf:DIR``, ``vllm:MODEL``,
    ``replay:FILE`` (``replay:FILE#NAME``: one teacher of a multi-teacher file), ``lab`` (``lab:think``),
    or ``union:A+B`` (the traces of several teachers pooled: ``members``)."""

    backend: str
    model: str = ""
    label: str | None = None  # the ``#NAME`` of a replay file
    members: tuple["TeacherSpec", ...] = ()

    @classmethod
    def parse(cls, spec: Any) -> "TeacherSpec":
        s = str(spec).strip()
        if not s:
            raise UserError(f"empty teacher name: {TEACHER_HELP}")
        if s.startswith("union:"):
            members = tuple(cls.parse(m) for m in teacher_members(s))
            if any(m.is_union for m in members):
                raise UserError(f"teacher {spec!r}: a union cannot contain another union")
            return cls("union", s[len("union:"):], None, members)
        backend, _, model = s.partition(":")
        backend = backend.strip().lower()
        if backend not in BACKENDS:
            raise UserError(f"unknown teacher {s!r}{did_you_mean(backend, BACKENDS)}; {TEACHER_HELP}")
        label = None
        if backend == "replay" and "#" in model:
            model, _, label = model.rpartition("#")
            label = label or None
        if backend not in ("lab",) and not model:
            raise UserError(f"teacher {s!r} names no model; write {backend}:MODEL")
        return cls(backend, model, label)

    @property
    def is_union(self) -> bool:
        return self.backend == "union"

    @property
    def base(self) -> str:
        """The spec without a replay file's ``#NAME`` (what the backend opens)."""
        return f"{self.backend}:{self.model}" if self.model else self.backend

    def __str__(self) -> str:
        if self.is_union:
            return "union:" + "+".join(map(str, self.members))
        return self.base + (f"#{self.label}" if self.label else "")


def teacher_members(teacher: str) -> list[str]:
    """``"union:lab+replay:f.jsonl"`` -> ["lab", "replay:f.jsonl"]; a plain teacher -> [teacher]."""
    t = str(teacher).strip()
    if not t.startswith("union:"):
        return [t]
    members = [m.strip() for m in t[len("union:"):].split("+") if m.strip()]
    if len(members) < 2:
        raise UserError(f"teacher {teacher!r}: a union names at least two teachers, e.g. union:lab+replay:FILE")
    return members


def split_teacher(spec: str) -> tuple[str, str | None]:
    """``replay:FILE#TEACHER`` -> (``replay:FILE``, ``TEACHER``): one teacher of a multi-teacher file."""
    if spec.startswith("replay:") and "#" in spec:
        base, _, who = spec.rpartition("#")
        return base, who or None
    return spec, None


# ------------------------------------------------------------------------------------------
# objectives
# ------------------------------------------------------------------------------------------
Objective = Literal["sft", "step-by-step", "logit-kd", "on-policy", "preference"]
OBJECTIVES: tuple[str, ...] = get_args(Objective)
TEACHER_MODEL_OBJECTIVES = ("logit-kd", "on-policy")  # these read a local teacher model's logits


def parse_objective(value: Any) -> str:
    o = str(value).strip().lower()
    if o not in OBJECTIVES:
        raise UserError(f"objective {value!r}: use {', '.join(OBJECTIVES)}")
    return o


# ------------------------------------------------------------------------------------------
# candidates
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """One supervision choice: teacher (or union), level (or mix/curriculum), format, and the
    training objective (named only when it is not ``sft``: ``lab/L3/cot/logit-kd``)."""

    teacher: str
    level: Any
    format: str = "cot"
    objective: str = "sft"

    @classmethod
    def parse(cls, teacher: str, level: Any, fmt: str = "cot", objective: str = "sft") -> "Candidate":
        sup = Supervision.parse(level)
        teacher_members(teacher)
        lv = sup.value
        f = parse_format(fmt)
        if lv == 0 or lv == HUMAN:
            f = "cot"  # the gold answer and human rationales have one format
        return cls(str(teacher).strip(), lv, f, parse_objective(objective))

    @property
    def supervision(self) -> Supervision:
        return Supervision.parse(self.level)

    @property
    def kind(self) -> str:
        return self.supervision.kind

    @property
    def levels(self) -> list[Any]:
        """Every plain level this candidate's traces use."""
        return list(dict.fromkeys(self.supervision.levels))

    @property
    def name(self) -> str:
        name = f"{self.teacher}/{level_label(self.level)}/{self.format}"
        return name if self.objective == "sft" else f"{name}/{self.objective}"

    @property
    def slug(self) -> str:
        s = re.sub(r"[^A-Za-z0-9.]+", "-", self.name).strip("-")[:60]
        return f"{s}-{hashlib.sha256(self.name.encode()).hexdigest()[:6]}"


# ------------------------------------------------------------------------------------------
# pydantic field types: parsed once, when a config is validated
# ------------------------------------------------------------------------------------------
def _pydantic(fn):
    def run(v: Any) -> Any:
        try:
            return fn(v)
        except UserError as e:
            raise ValueError(str(e)) from None
    return run


LevelField = Annotated[Level, BeforeValidator(_pydantic(parse_level))]
FormatField = Annotated[Format, BeforeValidator(_pydantic(parse_format))]
ObjectiveField = Annotated[Objective, BeforeValidator(_pydantic(parse_objective))]



# ------------------------------------------------------------------------------------------
# config sections
# ------------------------------------------------------------------------------------------
def _given_dump(m: BaseModel | dict[str, Any], info: SerializationInfo) -> dict[str, Any]:
    return given(m)


def _keep_given(value: Any, handler: Any) -> Any:
    m = handler(value)
    if isinstance(value, dict) and isinstance(m, SectionAccess):
        m._given = dict(value)  # what the user wrote, keys and values as written
    return m


def Section(model: type[BaseModel]) -> Any:
    """A config section nested in another config (a study's ``train:``, ``curate:``, ``eval:``), typed
    as ``model``: validated with it (errors name ``train.learning_rate``), and keeping the mapping
    the user wrote, which is what it dumps (``study.json``) and what stage keys hash, exactly as
    written (``epochs: 1`` stays ``1``, ``lr:`` stays ``lr:``), so typing a section never moves a
    cache key; defaults that depend on the cell, such as a scratch student's training recipe, are
    filled in when the cell runs."""
    return Annotated[model, WrapValidator(_keep_given), PlainSerializer(_given_dump, when_used="always")]


def given(section: BaseModel | dict[str, Any]) -> dict[str, Any]:
    """What a :func:`Section` was given, as a dict: the mapping the user wrote, else the fields set
    (a plain dict, e.g. set with ``model_copy(update=...)``, is returned as one)."""
    if isinstance(section, dict):
        return dict(section)
    raw = getattr(section, "_given", None)
    return dict(raw) if raw is not None else section.model_dump(exclude_unset=True)


class SectionAccess(BaseModel):
    """Base of the configs that serve as a :func:`Section` (``TrainConfig``, ``EvalConfig``,
    ``CurateOptions``): such a config also reads as the dict it was given (:func:`given`), as
    sections did before they were typed: ``{**cfg.train}``, ``dict(cfg.eval)``, ``cfg.train.get("x")``,
    ``"x" in cfg.train``, ``cfg.train.items()``, ``len(cfg.eval)``, ``cfg.curate == {"keep": "all"}``.
    Attribute access (``cfg.train.learning_rate``) gives the validated value with its default."""

    _given: dict[str, Any] | None = PrivateAttr(default=None)

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Any:
        m = super().model_copy(update=update, deep=deep)
        if update and self._given is not None:
            m._given = {**self._given, **update}
        return m

    def keys(self):
        return given(self).keys()

    def items(self):
        return given(self).items()

    def values(self):
        return given(self).values()

    def __len__(self) -> int:
        return len(given(self))

    def __getitem__(self, key: str) -> Any:
        return given(self)[key]

    def get(self, key: str, default: Any = None) -> Any:
        return given(self).get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in given(self)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, dict):
            return given(self) == other
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]