"""Levels, formats, teacher specs, objectives and supervision candidates: parsed in one place,
and every config that names them validates through these parsers."""

from __future__ import annotations

import pytest

from cotdistill.errors import UserError
from cotdistill.spec import (FORMATS, Candidate, Supervision, TeacherSpec, parse_format, parse_formats, parse_level,
                             parse_level_spec, parse_levels)


def test_levels_parse_ranges_names_and_refuse_out_of_range():
    assert parse_levels("0,3-5,human") == [0, 3, 4, 5, "human"]
    assert parse_levels(["6", 2, "2"]) == [2, 6]
    assert parse_level(" Human ") == "human" and parse_level(3.0) == 3
    import numpy as np

    assert parse_level(np.int64(4)) == 4
    with pytest.raises(UserError, match="not a whole number"):
        parse_level(2.5)
    for bad in (7, -1, "x", True, "raw"):
        with pytest.raises(UserError):
            parse_level(bad)
    with pytest.raises(UserError, match="out of range"):
        parse_levels("1-7")
    with pytest.raises(UserError, match="names no level"):
        parse_levels(" , ")


def test_formats_accept_the_papers_file_names():
    assert parse_format("BSM") == "subq" and parse_format("SYM") == "sym" and parse_format("RaR") == "rar"
    assert parse_formats("cot,bsm,subq") == ["cot", "subq"]
    assert set(FORMATS) == {"cot", "subq", "rar", "sym"}
    with pytest.raises(UserError, match="unknown format 'tree'"):
        parse_format("tree")


@pytest.mark.parametrize("text, value, legacy", [
    ("3", 3, ("plain", 3)),
    ("human", "human", ("plain", "human")),
    ("mix:difficulty", "mix:3-6", ("mix", (3, 6))),
    ("mix:2-5:steps", "mix:2-5", ("mix", (2, 5))),
    ("mix:difficulty:loss", "mix:3-6:loss", ("mix", (3, 6, "loss"))),
    ("curriculum:1-3", "curriculum:1-3", ("curriculum", [1, 2, 3])),
    ("curriculum:1,3,5", "curriculum:1,3,5", ("curriculum", [1, 3, 5])),
])
def test_supervision_names_round_trip(text, value, legacy):
    s = Supervision.parse(text)
    assert s.value == value and parse_level_spec(text) == legacy
    assert Supervision.parse(s.value) == s  # the canonical name parses to the same supervision


@pytest.mark.parametrize("bad", ["mix:5-2", "curriculum:3-3", "mix:1-9", "L3", "7"])
def test_supervision_refuses_bad_names_in_one_line(bad):
    with pytest.raises(UserError) as e:
        Supervision.parse(bad)
    assert "\n" not in str(e.value) and bad in str(e.value)


def test_teacher_specs():
    t = TeacherSpec.parse("replay:runs/gpt4o.jsonl#gpt-4o")
    assert (t.backend, t.model, t.label, t.base) == ("replay", "runs/gpt4o.jsonl", "gpt-4o", "replay:runs/gpt4o.jsonl")
    assert str(t) == "replay:runs/gpt4o.jsonl#gpt-4o"
    assert TeacherSpec.parse("lab").base == "lab" and TeacherSpec.parse("lab:think").model == "think"
    u = TeacherSpec.parse("union:lab+openai:gpt-4o")
    assert u.is_union and [m.backend for m in u.members] == ["lab", "openai"]
    for bad, msg in [("gpt-4o", "unknown teacher"), ("openai:", "names no model"), ("union:lab", "at least two"),
                     ("", "empty teacher")]:
        with pytest.raises(UserError, match=msg):
            TeacherSpec.parse(bad)


def test_candidates_are_canonical():
    c = Candidate.parse("lab", "mix:difficulty", "BSM", "LOGIT-KD")
    assert (c.level, c.format, c.objective, c.kind) == ("mix:3-6", "subq", "logit-kd", "mix")
    assert c.name == "lab/mix:3-6/subq/logit-kd" and c.levels == [3, 6]
    assert Candidate.parse("lab", "0", "sym").format == "cot"  # answer only has one format
    assert Candidate.parse("lab", 3).name == "lab/L3/cot"  # sft keeps the short name
    assert Candidate.parse("replay:h.jsonl", "human").name == "replay:h.jsonl/Lhuman/cot"  # as selections name it
    with pytest.raises(UserError, match="objective 'rl'"):
        Candidate.parse("lab", 3, "cot", "rl")


def test_every_config_validates_through_the_spec(tmp_path):
    from cotdistill.generate import GenerateConfig
    from cotdistill.select import SelectConfig
    from cotdistill.study import load_study_config
    from cotdistill.traces import Trace

    g = GenerateConfig.model_validate({"teacher": "lab", "levels": "1-2", "formats": "BSM"})
    assert (g.levels, g.formats) == ([1, 2], ["subq"])
    assert SelectConfig.model_validate({"task": "arith", "student": "scratch:llama-xxs", "out": str(tmp_path / "sel"), "formats": ["SYM"]}).formats == ["sym"]
    cfg = load_study_config({"output_dir": str(tmp_path / "s"), "tasks": ["arith"], "teachers": ["lab"],
                             "levels": ["3", "mix:difficulty"], "formats": ["RaR"], "students": ["scratch:llama-xxs"]})
    assert (cfg.levels, cfg.formats) == ([3, "mix:3-6"], ["rar"])
    t = Trace(id="1", task="arith", question="q", gold="1", teacher="lab", level="4", format="symbolic", output="o")
    assert (t.level, t.format) == (4, "sym")
    with pytest.raises(UserError, match="formats"):
        load_study_config({"output_dir": str(tmp_path / "s2"), "tasks": ["arith"], "teachers": ["lab"],
                           "formats": ["tree"], "students": ["scratch:llama-xxs"]})
