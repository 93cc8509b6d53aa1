"""The factor-study engine: config validation, cell expansion, cached stages, resume, shards, failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cotdistill.errors import UserError
from cotdistill.study import (
    expand_cells,
    load_study_config,
    merge_results,
    parse_shard,
    plan_study,
    run_study,
    shard_cells,
    stage_keys,
)

ROOT = Path(__file__).resolve().parents[1]


def base_config(out: Path, **over) -> dict:
    cfg = {
        "name": "t",
        "output_dir": str(out),
        "tasks": [{"name": "arith", "options": {"steps": 2, "n_train": 256, "n_test": 24}}],
        "teachers": ["lab"],
        "levels": [0, 3],
        "formats": ["cot"],
        "students": ["scratch:llama-xxs"],
        "seeds": [0],
        "curate": {"decontaminate": False},
        "train": {"max_steps": 4, "batch_size": 16, "save_steps": 2, "logging_steps": 1, "threads": 1},
        "eval": {},
    }
    cfg.update(over)
    return cfg


def write_cfg(tmp_path: Path, cfg: dict, name: str = "study.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(cfg))
    return p


# ---------------------------------------------------------------------------------------------
# config validation: fails before any work, one line naming the field
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "over, match",
    [
        ({"levelz": [1]}, "unknown key 'levelz'"),
        ({"levels": [0, 9]}, "'levels'.*level 9 \\(entry 1\\)"),
        ({"tasks": ["nosuchtask"]}, "'tasks.0.name'.*unknown task 'nosuchtask'"),
        ({"teachers": ["oracle:gpt"]}, "'teachers.0'.*unknown teacher 'oracle:gpt'"),
        ({"teachers": ["replay:/nonexistent/x.jsonl"]}, "'teachers.0'.*does not exist"),
        ({"students": ["scratch:llama-huge"]}, "'students.0'"),
        ({"formats": ["poem"]}, "'formats.0'"),
        ({"train": {"learning_rat": 1e-3}}, "train.*learning_rat"),
        ({"tasks": [{"name": "arith", "sise": 3}]}, "unknown key 'tasks.0.sise'"),
        ({"levels": ["human"]}, "lab teacher has no 'human' level"),
    ],
)
def test_bad_configs_fail_before_work(tmp_path, over, match):
    out = tmp_path / "out"
    p = write_cfg(tmp_path, base_config(out, **over))
    with pytest.raises(UserError, match=match) as ei:
        load_study_config(p)
    assert "\n" not in str(ei.value)
    assert str(p) in str(ei.value)
    assert not (out / "cells").exists()


def test_unreachable_output_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    p = write_cfg(tmp_path, base_config(blocker / "out"))
    with pytest.raises(UserError, match="'output_dir'.*cannot write"):
        load_study_config(p)


def test_missing_required_and_bad_yaml(tmp_path):
    cfg = base_config(tmp_path / "o")
    del cfg["students"]
    with pytest.raises(UserError, match="missing required key 'students'"):
        load_study_config(write_cfg(tmp_path, cfg))
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks: [arith\nteachers: lab\n")
    with pytest.raises(UserError, match=r"bad.yaml:\d+: invalid YAML"):
        load_study_config(bad)


def test_cli_bad_config_exit_2(tmp_path):
    p = write_cfg(tmp_path, base_config(tmp_path / "o", levels=[7]))
    r = subprocess.run([sys.executable, "-m", "cotdistill", "study", str(p), "--dry-run"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and "level 7" in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------------------------------------
# cells
# ---------------------------------------------------------------------------------------------
def test_cell_expansion_and_keys(tmp_path):
    cfg = load_study_config(base_config(tmp_path / "o", levels=[0, 3, 6], formats=["cot", "sym"],
                                        students=["scratch:llama-xxs", "scratch:llama-xs"], seeds=[0, 1]))
    cells = expand_cells(cfg)
    # level 0 has no format: 1 + 2 * 2 (levels 3, 6 x formats) = 5 settings x 2 students x 2 seeds
    assert len(cells) == 5 * 2 * 2
    assert len({c.id for c in cells}) == len(cells)
    assert {c.format for c in cells if c.level == 0} == {"cot"}
    by = {(c.level, c.format, c.student, c.seed): stage_keys(cfg, c) for c in cells}
    a = by[(3, "cot", "scratch:llama-xxs", 0)]
    b = by[(3, "cot", "scratch:llama-xs", 1)]
    c = by[(3, "sym", "scratch:llama-xxs", 0)]
    assert a["generate"] == b["generate"] and a["curate"] == b["curate"]  # traces shared across students/seeds
    assert a["train"] != b["train"]
    assert a["generate"] != c["generate"]
    # a changed eval setting changes only the evaluate key
    cfg2 = cfg.model_copy(update={"eval": {"max_new_tokens": 99}})
    a2 = stage_keys(cfg2, cells[[x.id for x in cells].index(expand_cells(cfg2)[0].id)])
    a0 = stage_keys(cfg, cells[0])
    assert a2["train"] == a0["train"] and a2["evaluate"] != a0["evaluate"]


def test_shards_partition_cells(tmp_path):
    cfg = load_study_config(base_config(tmp_path / "o", levels=[0, 1, 2, 3, 4], seeds=[0, 1]))
    cells = expand_cells(cfg)
    s1, s2 = shard_cells(cells, (1, 2)), shard_cells(cells, (2, 2))
    assert sorted(c.id for c in s1 + s2) == sorted(c.id for c in cells)
    assert not {c.id for c in s1} & {c.id for c in s2}
    assert parse_shard("2/3") == (2, 3)
    for bad in ("0/2", "3/2", "x"):
        with pytest.raises(UserError, match="--shard"):
            parse_shard(bad)


def test_dry_run_counts(tmp_path):
    p = write_cfg(tmp_path, base_config(tmp_path / "o"))
    cfg = load_study_config(p)
    plans = plan_study(cfg)
    assert [pl.teacher_calls for pl in plans] == [256, 256]
    assert all(pl.train_tokens and pl.train_tokens > 4 * 16 * 20 for pl in plans)
    assert all(pl.done == [] for pl in plans)
    r = subprocess.run([sys.executable, "-m", "cotdistill", "study", str(p), "--dry-run"],
                       capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "COLUMNS": "250"})
    assert r.returncode == 0, r.stderr
    assert "0/2 cells complete" in r.stdout and "L3" in r.stdout
    assert not (tmp_path / "o" / "cells").exists()
