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
        "tasks": [{"name": "arith", "options": {"steps": 2, "n_train": 128, "n_test": 16}}],
        "teachers": ["lab"],
        "levels": [0, 3],
        "formats": ["cot"],
        "students": ["scratch:llama-xxs"],
        "seeds": [0],
        "curate": {"decontaminate": False},
        "train": {"max_steps": 2, "batch_size": 16, "save_steps": 100, "logging_steps": 1, "threads": 1},
        "eval": {"max_new_tokens": 16},
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
        ({"teachers": ["replay:/nonexistent/x.jsonl"]}, "'teachers.0'.*not found"),
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
    with pytest.raises(UserError, match="field 'output_dir'.*is a file, not a directory"):
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
        with pytest.raises(UserError, match="^shard ") as ei:
            parse_shard(bad)
        assert ei.value.for_cli().startswith(f"--shard {bad!r}: use i/n")


def test_dry_run_counts(tmp_path):
    p = write_cfg(tmp_path, base_config(tmp_path / "o"))
    cfg = load_study_config(p)
    plans = plan_study(cfg)
    assert [pl.teacher_calls for pl in plans] == [0, 128]  # level 0 is the gold answer: no teacher call
    assert all(pl.train_tokens and pl.train_tokens > 2 * 16 * 20 for pl in plans)
    assert all(pl.done == [] for pl in plans)
    r = subprocess.run([sys.executable, "-m", "cotdistill", "study", str(p), "--dry-run"],
                       capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "COLUMNS": "250"})
    assert r.returncode == 0, r.stderr
    assert "0/2 cells complete" in r.stdout and "L3" in r.stdout
    assert not (tmp_path / "o" / "cells").exists()


# ---------------------------------------------------------------------------------------------
# running studies (real lab teacher, real scratch training, real evaluation; tiny settings)
# ---------------------------------------------------------------------------------------------
def _rows(out: Path) -> dict[str, dict]:
    return {json.loads(l)["cell"]: json.loads(l) for l in (out / "results.jsonl").read_text().splitlines() if l.strip()}


def _preds(out: Path, cell: str) -> list:
    return [(r["id"], r.get("correct"), r.get("output")) for r in
            map(json.loads, (out / "cells" / cell / "eval" / "predictions.jsonl").read_text().splitlines())]


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    """One finished two-cell study (reused by the cache, shard and report tests)."""
    out = tmp_path_factory.mktemp("single") / "out"
    cfg = load_study_config(base_config(out))
    summary = run_study(cfg, jobs=1, progress=False)
    return cfg, summary


@pytest.mark.slow
def test_run_writes_cells_and_rerun_does_no_work(single_run):
    cfg, summary = single_run
    out = Path(cfg.output_dir)
    assert summary.done == 2 and summary.failed == 0
    assert all(set(r) >= {"generate", "curate", "train", "evaluate"} for r in summary.ran.values())
    rows = _rows(out)
    assert len(rows) == 2
    for cell, r in rows.items():
        assert r["status"] == "ok" and r["n"] == 16 and 0 <= r["ci_low"] <= r["accuracy"] <= r["ci_high"] <= 1
        for k in ("task", "teacher", "level", "format", "student", "seed", "mean_output_tokens", "train_tokens", "wall_s"):
            assert k in r
        d = out / "cells" / cell
        for f in ("config.json", "traces.jsonl", "model", "eval/predictions.jsonl", "eval/metrics.json", "log.txt"):
            assert (d / f).exists(), f
    again = run_study(cfg, jobs=1, progress=False)
    assert again.stages_run == 0 and again.done == 2
    assert _rows(out) == rows


def test_rescore_regrades_a_whole_study_without_a_model(single_run, tmp_path):
    """`cotdistill rescore STUDY_DIR` regrades every cell's stored responses (predictions, metrics,
    result.json, results.jsonl) with the current answer checker; models and traces are not touched
    and a later run of the study has nothing to do."""
    import shutil

    from cotdistill import answers

    cfg, _ = single_run
    out = tmp_path / "copy"
    shutil.copytree(cfg.output_dir, out)
    want = _rows(out)
    cell = sorted(want)[0]
    ev = out / "cells" / cell / "eval"
    # as an older checker left it: every verdict flipped, metrics and rows agreeing with it
    rows = [json.loads(x) for x in (ev / "predictions.jsonl").read_text().splitlines()]
    (ev / "predictions.jsonl").write_text("".join(json.dumps({**r, "correct": not r["correct"]}) + "\n" for r in rows))
    m = json.loads((ev / "metrics.json").read_text())
    (ev / "metrics.json").write_text(json.dumps({**m, "accuracy": 1 - m["accuracy"], "answer_checker": "0"}))
    res = json.loads((out / "cells" / cell / "result.json").read_text())
    (out / "cells" / cell / "result.json").write_text(json.dumps({**res, "accuracy": 1 - res["accuracy"]}))
    weights = {p: p.stat().st_mtime_ns for p in (out / "cells").rglob("model/*")}
    r = subprocess.run([sys.executable, "-m", "cotdistill", "rescore", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "rescored 2 cells" in r.stdout
    got = _rows(out)
    assert {c: g["accuracy"] for c, g in got.items()} == {c: w["accuracy"] for c, w in want.items()}
    assert got[cell]["answer_checker"] == answers.VERSION
    assert [json.loads(x)["correct"] for x in (ev / "predictions.jsonl").read_text().splitlines()] == [x["correct"] for x in rows]
    assert {p: p.stat().st_mtime_ns for p in (out / "cells").rglob("model/*")} == weights
    moved = cfg.model_copy(update={"output_dir": str(out)})
    assert run_study(moved, jobs=1, progress=False).stages_run == 0


@pytest.mark.slow
def test_changed_parameter_reruns_exactly_affected_stages(tmp_path):
    out = tmp_path / "out"
    cfg = load_study_config(base_config(out, levels=[3]))
    first = run_study(cfg, progress=False)
    assert first.stages_run == 4
    model_file = next((out / "cells").glob("*/model/model.safetensors"))
    model_mtime = model_file.stat().st_mtime
    # an evaluation setting changes -> only evaluate reruns (the model is kept); a new student at
    # the same time -> only its cell trains, reusing the shared traces (no generate / curate)
    cfg2 = load_study_config(base_config(out, levels=[3], eval={"max_new_tokens": 12},
                                         students=["scratch:llama-xxs", "scratch:gemma-xxs"]))
    r = run_study(cfg2, progress=False)
    ids = {c.student: c.id for c in expand_cells(cfg2)}
    assert r.ran == {ids["scratch:llama-xxs"]: ["evaluate"], ids["scratch:gemma-xxs"]: ["train", "evaluate"]}
    assert model_file.stat().st_mtime == model_mtime
    # a training setting changes -> train + evaluate rerun for every cell, traces reused
    cfg3 = cfg2.model_copy(update={"train": {**cfg2.train, "learning_rate": 1e-3}})
    r = run_study(cfg3, progress=False)
    assert r.ran == {i: ["train", "evaluate"] for i in ids.values()}
    assert len(_rows(out)) == 2 and all(x["status"] == "ok" for x in _rows(out).values())


@pytest.mark.slow
def test_failed_cell_does_not_stop_the_others(tmp_path):
    # a replay file holding traces for other questions only: that teacher's cells fail in generate
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"id": "x", "task": "arith", "question": "Zed has 1 cup. How many?", "gold": "1",
                                 "teacher": "someone", "level": 3, "output": "1. The answer is 1."}) + "\n")
    out = tmp_path / "out"
    cfg = load_study_config(base_config(out, levels=[3], teachers=["lab", f"replay:{other}"]))
    s = run_study(cfg, jobs=2, progress=False)
    assert (s.done, s.failed) == (1, 1)
    rows = list(_rows(out).values())
    bad = [r for r in rows if r["status"] == "failed"]
    assert len(bad) == 1 and bad[0]["teacher"].startswith("replay:") and bad[0]["stage"] in ("generate", "curate")
    assert bad[0]["error"] and "\n" not in bad[0]["error"]
    assert [r["status"] for r in rows if r["teacher"] == "lab"] == ["ok"]


@pytest.mark.slow
def test_two_shards_equal_one_worker(single_run, tmp_path):
    cfg, _ = single_run
    out = tmp_path / "sharded"
    p = write_cfg(tmp_path, base_config(out))
    procs = [subprocess.Popen([sys.executable, "-m", "cotdistill", "study", str(p), "--shard", s, "--no-report"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
             for s in ("1/2", "2/2")]
    for pr in procs:
        o, _ = pr.communicate(timeout=300)
        assert pr.returncode == 0, o
    merge_results(load_study_config(p))
    a, b = _rows(Path(cfg.output_dir)), _rows(out)
    assert a.keys() == b.keys()
    for cell in a:
        assert {k: v for k, v in a[cell].items() if "wall" not in k} == {k: v for k, v in b[cell].items() if "wall" not in k}
        assert _preds(Path(cfg.output_dir), cell) == _preds(out, cell)


@pytest.mark.slow
def test_kill_and_resume(tmp_path):
    out = tmp_path / "out"
    cfg = base_config(out, levels=[0, 2, 3])
    cfg["train"] = {**cfg["train"], "max_steps": 8, "save_steps": 2}
    p = write_cfg(tmp_path, cfg)
    proc = subprocess.Popen([sys.executable, "-m", "cotdistill", "study", str(p), "--no-report"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path, start_new_session=True)
    deadline = time.time() + 240
    first_done = None
    while time.time() < deadline:
        done = sorted(out.glob("cells/*/result.json"))
        if done:
            first_done = done[0].parent.name
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert first_done, "no cell finished before the deadline"
    time.sleep(1.0)  # workers notice their parent died
    r = subprocess.run([sys.executable, "-m", "cotdistill", "study", str(p), "--no-report"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = _rows(out)
    assert len(rows) == 3 and all(x["status"] == "ok" for x in rows.values())
    marks = json.loads((out / "cells" / first_done / "stages.json").read_text())
    assert set(marks) >= {"train", "evaluate"}
    # the cell finished before the kill was not recomputed
    log = (out / "cells" / first_done / "log.txt").read_text()
    assert log.count("train: done") == 1 and log.count("evaluate: done") == 1


@pytest.mark.slow
def test_paper_replay_example_runs_on_scratch_student(shared_data, tmp_path):
    """examples/paper_replay.yaml on the released SVAMP data with the --student override."""
    from cotdistill.paper import import_paper
    from cotdistill.traces import write_traces

    src = tmp_path / "paper"
    src.mkdir()
    for name in ("SVAMP_ChatGPT_level3_ranked.json.gz", "SVAMP_only_ans.json.gz"):
        (src / name).symlink_to(shared_data / "paper" / name)
    rep = import_paper(src, shared_data)
    write_traces(tmp_path / "paper-traces" / "traces.jsonl", rep.traces)
    # the example as shipped resolves replay files relative to itself: use a copy beside the traces
    cfg = yaml.safe_load((ROOT / "examples" / "paper_replay.yaml").read_text())
    (tmp_path / "ex").mkdir()
    p = write_cfg(tmp_path / "ex", cfg, "paper_replay.yaml")
    full = load_study_config(p, overrides={"output_dir": str(tmp_path / "out"), "data_dir": str(shared_data)})
    assert {t.name for t in full.tasks} == {"svamp", "strategyqa", "obqa"} and len(full.teachers) == 3
    cells = expand_cells(full)
    assert not [c for c in cells if c.task.name == "svamp" and "llama-3-70b" in c.teacher and c.level in (5, 6)]
    # run one teacher on SVAMP at levels 0 and 3 with the CPU override
    small = load_study_config(p, overrides={
        "output_dir": str(tmp_path / "out"), "data_dir": str(shared_data),
        "tasks": [{"name": "svamp", "test_size": 20}], "levels": [0, 3], "teachers": [full.teachers[0]],
        "students": ["scratch:llama-xxs"], "train": {"max_steps": 3, "batch_size": 16, "threads": 1},
        "eval": {"max_new_tokens": 16}})
    plans = plan_study(small)
    assert [pl.teacher_calls for pl in plans] == [0, 0]  # replay makes no API call
    s = run_study(small, progress=False)
    assert s.done == 2, [json.loads(p.read_text()) for p in (tmp_path / "out").glob("cells/*/result.json")]
    rows = _rows(tmp_path / "out")
    assert {r["level"] for r in rows.values()} == {0, 3} and all(r["n"] == 20 for r in rows.values())
    l3 = next(c for c in rows if "__L3__" in c)
    traces = (tmp_path / "out" / "cells" / l3 / "traces.jsonl").read_text().splitlines()
    assert 600 < len(traces) <= 700 and '"teacher":"gpt-4o"' in traces[0].replace(" ", "")


def test_quickstart_config_is_packaged_and_plans(tmp_path):
    from importlib import resources

    packaged = (resources.files("cotdistill") / "configs" / "quickstart.yaml").read_text()
    assert packaged == (ROOT / "examples" / "quickstart.yaml").read_text()
    r = subprocess.run([sys.executable, "-m", "cotdistill", "quickstart", "--out", str(tmp_path / "qs"), "--dry-run"],
                       capture_output=True, text=True, env={**os.environ, "COLUMNS": "250"})
    assert r.returncode == 0, r.stderr
    cfg = load_study_config(yaml.safe_load(packaged) | {"output_dir": str(tmp_path / "qs")})
    cells = expand_cells(cfg)
    assert len({c.student for c in cells}) >= 2 and cfg.teachers == ["lab"] and len(cfg.levels) >= 3
    assert f"0/{len(cells)} cells complete" in r.stdout


def test_mixed_and_curriculum_levels_run_as_cells(tmp_path):
    """Pseudo-levels of cotdistill.mix are study levels: canonical names, their own cells, and
    traces that really mix levels (mix) or order them coarse to fine (curriculum)."""
    from cotdistill.traces import read_traces

    cfg = load_study_config(base_config(tmp_path / "out", levels=[3, "mix:difficulty", "curriculum:2-4",
                                                                   "mix:difficulty:loss"]))
    assert cfg.levels == [3, "mix:3-6", "curriculum:2-4", "mix:3-6:loss"]
    ids = [c.id for c in expand_cells(cfg)]
    assert any("__mix-3-6__" in i for i in ids) and any("__curriculum-2-4__" in i for i in ids)
    assert any("__mix-3-6-loss__" in i for i in ids)
    summary = run_study(cfg, jobs=1, progress=False)
    rows = [json.loads(x) for x in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert {r["level"] for r in rows} == {3, "mix:3-6", "curriculum:2-4", "mix:3-6:loss"}
    assert all(r["status"] == "ok" for r in rows), rows
    mix_cell = next(c for c in (tmp_path / "out" / "cells").iterdir() if "__mix-3-6__" in c.name)
    levels = {t.level for t in read_traces(mix_cell / "traces.jsonl")}
    assert levels == {3, 6}  # easy items get L3, hard ones L6
    # the loss mix ranks items by a probe of each student, trained next to the cell's model
    for loss_cell in (c for c in (tmp_path / "out" / "cells").iterdir() if "__mix-3-6-loss__" in c.name):
        table = json.loads(next(loss_cell.glob("*.probe/mix_table.json")).read_text())
        assert set(table["table"].values()) == {3, 6} and table["probe"]["train_tokens"] > 0
    assert summary.ran


def test_bad_pseudo_level_is_one_line(tmp_path):
    with pytest.raises(UserError, match=r"levels.*mix:A-B needs"):
        load_study_config(base_config(tmp_path / "out", levels=["mix:5-2"]))


def test_quickstart_mixed_extends_the_quickstart_grid(tmp_path):
    """examples/quickstart_mixed.yaml is the quickstart plus mixed / curriculum cells: run into the
    quickstart's output directory, it plans only the new cells (the single-level cells are shared)."""
    qs = load_study_config(ROOT / "examples" / "quickstart.yaml", overrides={"output_dir": str(tmp_path)})
    mixed = load_study_config(ROOT / "examples" / "quickstart_mixed.yaml", overrides={"output_dir": str(tmp_path)})
    base = {c.id for c in expand_cells(qs)}
    new = [c for c in expand_cells(mixed) if c.id not in base]
    assert base <= {c.id for c in expand_cells(mixed)}
    assert sorted({str(c.level) for c in new}) == ["2", "curriculum:2-4", "mix:3-4", "mix:3-4:loss", "mix:3-6"]
    assert len(new) == 5 * len(qs.students) * len(qs.seeds)


def test_an_api_key_in_the_generate_options_is_never_written(tmp_path):
    """A key given in the config's generate options reaches the teacher but no file: study.json and
    the cells' config.json show it masked, and the cache keys do not depend on it."""
    from cotdistill.fileio import atomic_write_json
    from cotdistill.generate import GenerateConfig
    from cotdistill.study import stage_keys

    secret = "sk-live-0123456789abcdefSECRET"
    base = {"name": "k", "output_dir": str(tmp_path), "tasks": [{"name": "arith", "options": {"n_train": 50, "n_test": 10}}],
            "teachers": ["openai:gpt-4o-mini"], "levels": [3], "students": ["scratch:llama-xxs"]}
    cfg = load_study_config({**base, "generate": {"api_key": secret, "temperature": 0.0}})
    atomic_write_json(tmp_path / "study.json", cfg.model_dump())
    text = (tmp_path / "study.json").read_text()
    assert secret not in text and '"api_key": "**********"' in text
    assert GenerateConfig.model_validate({**cfg.generate, "teacher": "openai:m"}).api_key.get_secret_value() == secret
    other = load_study_config({**base, "generate": {"api_key": "sk-another-key-0000", "temperature": 0.0}})
    cell = expand_cells(cfg)[0]
    assert stage_keys(cfg, cell) == stage_keys(other, cell)  # a rotated key re-pays no call
    # `select --study` reads the options back without the mask (the teacher falls back to $OPENAI_API_KEY)
    from cotdistill.select import config_from_study

    sel = config_from_study(tmp_path, student="scratch:llama-xxs")
    assert sel.generate == {"temperature": 0.0}


def test_an_api_key_in_the_study_config_reaches_the_workers(tmp_path):
    """The key given in the study YAML authenticates the teacher calls made by the cell workers
    (it travels to them in memory, never through a file), and appears in no file of the study."""
    import yaml
    from openai_server import FakeOpenAIServer

    secret = "sk-study-yaml-key-0123456789"
    with FakeOpenAIServer(api_key=secret) as srv:
        cfg = {"name": "keyed", "output_dir": str(tmp_path / "out"),
               "tasks": [{"name": "arith", "options": {"n_train": 24, "n_test": 6}}],
               "teachers": ["openai:fake"], "levels": [2], "students": ["scratch:llama-xxs"], "seeds": [0],
               "generate": {"api_key": secret, "base_url": srv.base_url, "hint_gold": True},
               "curate": {"keep": "all", "decontaminate": False},
               "train": {"max_steps": 2, "batch_size": 4}, "eval": {"max_new_tokens": 8}}
        p = tmp_path / "study.yaml"
        p.write_text(yaml.safe_dump(cfg))
        env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
        r = subprocess.run([sys.executable, "-m", "cotdistill", "study", str(p), "--no-report"], env=env,
                           capture_output=True, text=True, timeout=600, cwd=tmp_path)
        ok_calls = len(srv.outcomes("ok"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert ok_calls == 24
    # without a terminal the study prints plain progress lines (not a rich view that shows nothing)
    assert "study: 0/1 cells" in r.stderr and "study: 1/1 cells · done 1 · failed 0" in r.stderr
    leaked = [f for f in (tmp_path / "out").rglob("*") if f.is_file() and secret.encode() in f.read_bytes()]
    assert not leaked and secret not in r.stdout + r.stderr


def test_a_study_with_a_failed_cell_exits_non_zero(tmp_path):
    """A cell that fails (here: a replay file without the study's items) is recorded, the other
    cells still run, and the command exits 1 so scripts and CI see the study is incomplete."""
    import yaml

    replay = tmp_path / "other.jsonl"
    replay.write_text(json.dumps({"id": "nope", "task": "arith", "question": "Zed has 1 pen. How many?", "gold": "1",
                                  "teacher": "x", "level": 3, "format": "cot", "output": "The answer is 1."}) + "\n")
    cfg = {"name": "fails", "output_dir": str(tmp_path / "out"),
           "tasks": [{"name": "arith", "options": {"n_train": 8, "n_test": 4}}],
           "teachers": [f"replay:{replay}"], "levels": [3], "students": ["scratch:llama-xxs"], "seeds": [0],
           "train": {"max_steps": 1, "batch_size": 4}}
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(cfg))
    r = subprocess.run([sys.executable, "-m", "cotdistill", "study", str(p), "--no-report"], capture_output=True,
                       text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 1, r.stdout[-1500:] + r.stderr[-1500:]
    assert "0/1 cells ok, 1 failed" in r.stdout
    rows = [json.loads(x) for x in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert rows[0]["status"] == "failed" and rows[0]["stage"] == "generate"


def test_the_objective_is_a_factor_and_sft_cells_keep_their_ids_and_keys(tmp_path):
    from cotdistill.study import stage_keys

    base = {"name": "o", "output_dir": str(tmp_path / "o"), "tasks": [{"name": "arith", "options": {"n_train": 20, "n_test": 5}}],
            "teachers": ["lab"], "levels": [0, 3], "students": ["scratch:llama-xxs"]}
    plain = load_study_config(base)
    both = load_study_config({**base, "objectives": ["sft", "step-by-step"]})
    cells = expand_cells(both)
    # answer-only has no rationale task: no step-by-step cell at level 0
    assert sorted((str(c.level), c.objective) for c in cells) == [("0", "sft"), ("3", "sft"), ("3", "step-by-step")]
    old = {c.id: stage_keys(plain, c) for c in expand_cells(plain)}
    for c in cells:
        if c.objective == "sft":
            assert old[c.id] == stage_keys(both, c)  # cached sft cells are reused
        else:
            assert c.id.endswith("__step-by-step") and c.id not in old
            assert c.row_keys()["objective"] == "step-by-step"
    with pytest.raises(UserError, match="objectives"):
        load_study_config({**base, "objectives": ["rl"]})


def test_raw_reasoning_against_its_level_rewrites(tmp_path):
    """`levels: [raw, ...]` with `rewrite_with`: the raw cell trains on the reasoning teacher's
    thinking in <think> tags; each level-k cell trains on the rewriter's level-k rewrite of those
    same raw traces (generated once, shared), keeping every final answer; the students then answer
    after their thinking, and the report compares raw with the best rewrite by a paired test."""
    from cotdistill.report import write_report
    from cotdistill.traces import read_traces

    out = tmp_path / "lr"
    cfg = load_study_config(base_config(out, teachers=["lab:think"], rewrite_with="lab", levels=["raw", 1, 4],
                                        eval={}))
    cells = expand_cells(cfg)
    assert sorted(str(c.level) for c in cells) == ["1", "4", "raw"]
    raw = next(c for c in cells if c.level == "raw")
    assert raw.id.split("__")[2] == "Lraw"
    summary = run_study(cfg, jobs=1, progress=False)
    assert summary.failed == 0, summary
    raw_dir = out / "cells" / raw.id
    raw_traces = read_traces(raw_dir / "traces.jsonl")
    assert all(t.reasoning and t.teacher == "lab:think" for t in raw_traces)
    gen_dirs = [p for p in (out / "cache" / "generate").iterdir() if p.is_dir()]
    assert len(gen_dirs) == 3  # the raw traces once, one rewrite per level
    by_id = {t.id: t for t in raw_traces}
    generated = [read_traces(d / "traces.jsonl") for d in gen_dirs]
    raw_gen = [g for g in generated if all(t.reasoning for t in g)]
    assert len(raw_gen) == 1  # one raw generation, rewritten twice
    raw_ids = {t.id for t in raw_gen[0]}
    for c in cells:
        if c.level == "raw":
            continue
        rewrites = read_traces(out / "cells" / c.id / "traces.jsonl")
        assert rewrites and all(t.teacher == "lab" and t.level == c.level and not t.reasoning for t in rewrites)
        assert all(t.gold == by_id[t.id].gold for t in rewrites if t.id in by_id)
        assert {t.id for t in rewrites} <= raw_ids
        assert json.loads((out / "cells" / c.id / "model" / "train_summary.json").read_text())["target"] == "response"
    s = json.loads((raw_dir / "model" / "train_summary.json").read_text())
    assert s["target"] == "reasoning+response"
    m = json.loads((raw_dir / "eval" / "metrics.json").read_text())
    assert m["max_new_tokens"] == int(1.5 * s["longest_completion_tokens"]) + 16  # room for the thinking
    assert "mean_reasoning_words" in m
    text = write_report(out)["md"].read_text()
    assert "Raw reasoning for **scratch:llama-xxs**" in text and "McNemar p" in text.split("Raw reasoning for")[1]
    # a rewrite teacher that cannot generate, or nothing to rewrite, is refused before any work
    with pytest.raises(UserError, match="rewrite_with"):
        load_study_config(base_config(tmp_path / "x", teachers=["lab:think"], rewrite_with="replay:" + str(raw_dir / "traces.jsonl"),
                                      levels=["raw", 2]))
    with pytest.raises(UserError, match="rewrite_with.*no level 1-6"):
        load_study_config(base_config(tmp_path / "y", teachers=["lab:think"], rewrite_with="lab", levels=["raw", 0]))


def test_stage_keys_keep_their_stored_values(tmp_path):
    """A study's stage keys are its cache: they must not move when the config's types change
    (computed before the curate / train / eval sections became typed)."""
    cfg = load_study_config({
        "name": "pin", "output_dir": str(tmp_path / "o"),
        "tasks": [{"name": "arith", "options": {"steps": 2, "n_train": 64, "n_test": 8}}],
        "teachers": ["lab"], "levels": [0, 3], "students": ["scratch:llama-xxs"], "seeds": [0],
        "curate": {"decontaminate": False, "keep": "correct"},
        "train": {"max_steps": 2, "batch_size": 16, "learning_rate": 0.003, "threads": 1},
        "eval": {"max_new_tokens": 16, "batch_size": 8}, "generate": {"temperature": 0.0}})
    keys = {c.level: stage_keys(cfg, c) for c in expand_cells(cfg)}
    assert keys[0] == {"generate": "6b07df79d14b5ea6", "curate": "e4e21f2f9835e83e", "train": "dfe8c6af7a04fac4",
                       "evaluate": "022669c6cff940a9"}
    assert keys[3] == {"generate": "b69a425a5ea3c4ab", "curate": "9cc70fae792ede49", "train": "fc6acc5d033b813a",
                       "evaluate": "537adf1adfed03cc"}
    # the resolved config written to study.json reads back to the same keys (report and rescore read it)
    again = type(cfg).model_validate(json.loads(cfg.model_dump_json()))
    assert {c.level: stage_keys(again, c) for c in expand_cells(again)} == keys
    # values as written, not as validated: epochs 1 (not 1.0), lr (not learning_rate), "16", report_to "none"
    raw = load_study_config({
        "name": "pin2", "output_dir": str(tmp_path / "o2"),
        "tasks": [{"name": "arith", "options": {"steps": 2, "n_train": 64, "n_test": 8}}],
        "teachers": ["lab"], "levels": [0, 3], "students": ["scratch:llama-xxs"], "seeds": [0],
        "objectives": ["sft", "step-by-step"], "curate": {"decontaminate": False, "threshold": 1},
        "train": {"epochs": 1, "lr": 0.003, "report_to": "none", "threads": 1}, "eval": {"max_new_tokens": "16", "batch_size": 8}})
    assert {c.id.split("__", 2)[2]: stage_keys(raw, c)["train"] + stage_keys(raw, c)["evaluate"] for c in expand_cells(raw)} == {
        "L0__cot__scratch-llama-xxs__s0": "1806331e4cbc33d6" "44131723cef45824",
        "L3__cot__scratch-llama-xxs__s0": "3334b743ff5a41e4" "f35c247499ae1453",
        "L3__cot__scratch-llama-xxs__s0__step-by-step": "7345667b5523d968" "a46200298cd89253"}
    assert raw.train.epochs == 1.0 and raw.train["epochs"] == 1 and dict(raw.eval) == {"max_new_tokens": "16", "batch_size": 8}


def test_progress_is_reported_as_events_and_the_cli_draws_the_table(tmp_path):
    """The library reports the study's progress as events (cells finished, ok, failed, running with
    their stage); the CLI's LiveTable draws them on a terminal."""
    import io

    from rich.console import Console

    from cotdistill.cli.study_cmd import LiveTable

    cfg = load_study_config(base_config(tmp_path / "o", levels=[0]))
    buf = io.StringIO()
    table = LiveTable(Console(file=buf, force_terminal=True, width=160))
    events = []

    def progress(ev):
        events.append(ev)
        table(ev)

    assert run_study(cfg, jobs=1, progress=progress).done == 1
    first, last = events[0], events[-1]
    assert (first.stage, first.total, first.done, first.finished) == ("study", 1, 0, False)
    assert last.finished and last.done == 1 and last.info["ok"] == 1 and last.info["failed"] == 0
    assert all(isinstance(e.info["running"], list) for e in events)
    assert "1/1 cells  done 1  running 0  failed 0" in buf.getvalue()


def test_an_evaluated_cell_needs_neither_its_weights_nor_its_caches(tmp_path):
    """Models and caches deleted to save space (or a study restored from its records): the evaluated
    cells stay done, a rerun generates, curates and trains nothing, and the report is the same."""
    import shutil

    cfg = load_study_config(base_config(tmp_path / "o"))
    first = run_study(cfg, progress=False)
    assert first.done == 2
    before = (tmp_path / "o" / "results.jsonl").read_text()
    for cell in (tmp_path / "o" / "cells").iterdir():
        shutil.rmtree(cell / "model")
        (cell / "traces.jsonl").unlink()
    shutil.rmtree(tmp_path / "o" / "cache")
    assert all(p.complete for p in plan_study(cfg))
    again = run_study(cfg, progress=False)
    assert again.done == 2 and again.stages_run == 0, again.ran
    assert not (tmp_path / "o" / "cache").exists()
    assert (tmp_path / "o" / "results.jsonl").read_text() == before


def test_a_replay_file_is_known_by_its_content(tmp_path):
    """A replay file copied or imported again (a new mtime, the same bytes) keeps every stage key;
    other bytes change them. A study keyed on the old size-and-mtime signature is carried over."""
    import os as _os

    src = tmp_path / "t.jsonl"
    from cotdistill.traces import Trace, write_traces

    write_traces(src, [Trace(id="1", task="arith", question="q", gold="1", teacher="x", level=3, output="The answer is 1")])
    cfg = load_study_config(base_config(tmp_path / "o", teachers=[f"replay:{src}#x"], levels=[3]))
    cell = expand_cells(cfg)[0]
    k1 = stage_keys(cfg, cell)
    _os.utime(src, (1, 1))
    from cotdistill import study as st

    st._FILE_DIGESTS.clear()
    assert stage_keys(cfg, cell) == k1
    assert stage_keys(cfg, cell, legacy=True) != k1
    # a stage log written with the legacy keys is carried over to the content keys
    legacy = stage_keys(cfg, cell, legacy=True)
    cdir = tmp_path / "o" / "cells" / cell.id
    cdir.mkdir(parents=True)
    (cdir / "stages.json").write_text(json.dumps({"train": {"key": legacy["train"]}, "evaluate": {"key": legacy["evaluate"]}}))
    marks = st._marks(cfg, cell, k1)
    assert marks["train"]["key"] == k1["train"] and marks["evaluate"]["key"] == k1["evaluate"]
    write_traces(src, [Trace(id="1", task="arith", question="q", gold="2", teacher="x", level=3, output="The answer is 2")])
    assert stage_keys(cfg, cell)["generate"] != k1["generate"]


def test_a_dry_run_writes_nothing_and_counts_a_replay_files_training_tokens(tmp_path):
    """Replay traces need no generation: the dry run counts their tokens from the file; and it
    creates no directory."""
    from cotdistill.traces import Trace, write_traces

    src = tmp_path / "t.jsonl"
    write_traces(src, [Trace(id=str(i), task="arith", question="What is 2 + 2?", gold="4", teacher="x", level=3,
                             output="2 + 2 = 4. The answer is 4") for i in range(5)])
    cfg = base_config(tmp_path / "never", teachers=[f"replay:{src}#x"], levels=[3])
    y = write_cfg(tmp_path, cfg)
    r = subprocess.run([sys.executable, "-m", "cotdistill", "study", str(y), "--dry-run"], capture_output=True, text=True,
                       env={**os.environ, "COLUMNS": "250"})
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "never").exists()
    plan = plan_study(load_study_config(cfg, create=False))
    assert plan[0].train_tokens is not None and plan[0].train_tokens > 0
    assert f"{plan[0].train_tokens:,}" in r.stdout
    assert not (tmp_path / "never").exists()
