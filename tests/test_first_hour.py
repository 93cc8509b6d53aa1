"""What a new user meets in the first hour, through the CLI as they would run it: names typed
wrong, paths one level off, dry runs, help text, and the failures that must not leave them stuck
(a generation whose every call failed, a full disk, a path below a file, SIGTERM in training)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from openai_server import FakeOpenAIServer

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("COTDISTILL_DATA") or REPO.parent / "shared" / "data")


def cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cotdistill", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200", **(env or {})})


def one_line_error(p: subprocess.CompletedProcess, *needles: str) -> str:
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    errs = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(errs) == 1, p.stderr
    for n in needles:
        assert n in errs[0], errs[0]
    return errs[0]


# ------------------------------------------------------------------------------------------
# names and paths
# ------------------------------------------------------------------------------------------
def test_replay_path_error_says_how_paths_resolve_and_how_to_fix(tmp_path):
    study = tmp_path / "studies" / "s.yaml"
    study.parent.mkdir()
    study.write_text(yaml.safe_dump({
        "name": "s", "output_dir": "out", "tasks": ["svamp"], "levels": [1], "students": ["scratch:llama-xxs"],
        "teachers": ["replay:../paper-traces/traces.jsonl#gpt-4o"]}))
    p = cli("study", study, "--dry-run", cwd=tmp_path)
    err = one_line_error(p, "teachers.0", "../paper-traces/traces.jsonl", str(tmp_path / "paper-traces" / "traces.jsonl"),
                         "relative to the file's directory", "import-paper")
    assert not (tmp_path / "out").exists()
    # the file is where the user's working directory would put it: the error names the absolute path to write
    (tmp_path / "work" / "paper-traces").mkdir(parents=True)
    (tmp_path / "work" / "paper-traces" / "traces.jsonl").write_text("")
    study.write_text(study.read_text().replace("../paper-traces", "paper-traces"))
    p = cli("study", study, "--dry-run", cwd=tmp_path / "work")
    one_line_error(p, "exists (relative to the working directory)", f"replay:{tmp_path / 'work' / 'paper-traces' / 'traces.jsonl'}")
    assert err != p.stderr


def test_did_you_mean_for_every_typed_name(tmp_path):
    base = {"name": "s", "output_dir": str(tmp_path / "out"), "tasks": [{"name": "arith"}], "teachers": ["lab:think"],
            "levels": [1], "students": ["scratch:llama-xxs"]}
    cases = [({"levels": ["raw", 1, "rwa"]}, "did you mean 'raw'"),
             ({"levels": [1, 9]}, "'raw'"),  # the valid levels listed include raw
             ({"tasks": [{"name": "arth"}]}, "did you mean 'arith'"),
             ({"formats": ["ctt"]}, "did you mean 'cot'"),
             ({"teachers": ["labb"]}, "did you mean 'lab'"),
             ({"student": ["scratch:llama-xxs"]}, "'student'")]
    for i, (change, needle) in enumerate(cases):
        f = tmp_path / f"s{i}.yaml"
        f.write_text(yaml.safe_dump({**base, **change}))
        one_line_error(cli("study", f, "--dry-run"), needle)
    one_line_error(cli("curate", tmp_path, "--out", tmp_path / "c", "--levels", "humna"), "did you mean 'human'")


def test_directories_one_level_off_are_named(tmp_path):
    cell = tmp_path / "study" / "cells" / "c1"
    (cell / "eval").mkdir(parents=True)
    (cell / "eval" / "predictions.jsonl").write_text("")
    (tmp_path / "study" / "study.json").write_text("{}")
    one_line_error(cli("rescore", cell), "did you mean", str(cell / "eval"))
    one_line_error(cli("compare", cell, cell), "did you mean", str(cell / "eval"))
    one_line_error(cli("report", tmp_path / "study" / "cells"), "did you mean", str(tmp_path / "study"))
    one_line_error(cli("study", "status", tmp_path / "study" / "cells"), "did you mean", str(tmp_path / "study"))
    (tmp_path / "gen" / "run").mkdir(parents=True)
    (tmp_path / "gen" / "run" / "traces.jsonl").write_text("")
    one_line_error(cli("traces", "stats", tmp_path / "gen"), "did you mean", str(tmp_path / "gen" / "run"))


def test_dry_run_counts_no_teacher_call_for_answer_only_cells():
    from cotdistill.study import load_study_config, plan_study

    cfg = load_study_config(REPO / "src/cotdistill/configs/quickstart.yaml", {"output_dir": "/nonexistent/qs"}, create=False)
    plans = plan_study(cfg)
    l0 = [p for p in plans if p.cell.level == 0]
    assert l0 and all(p.teacher_calls == 0 for p in l0)  # the gold answer: no teacher call
    assert all(p.teacher_calls == 12_800 for p in plans if p.cell.level != 0 and p.cell.seed == 0
               and p.cell.student == "scratch:llama-xxs")
    assert not Path("/nonexistent").exists()


def test_help_reads_whole():
    top = cli("--help")
    assert top.returncode == 0
    listed = [ln for ln in top.stdout.splitlines() if ln.startswith("  ") and not ln.strip().startswith("--")]
    assert len(listed) >= 15
    for ln in listed:
        assert not ln.rstrip().endswith("..."), ln  # no description cut by click
    for args in (["import-paper"], ["compare"], ["study", "run"], ["tasks"], ["train"]):
        h = cli(*args, "--help").stdout
        usage = h.splitlines()[0]
        assert usage.startswith("Usage:") and "{" not in usage, usage
        assert "list[" not in h and "<list" not in h
    for sub in (["study"], ["traces"], ["data"], ["prompts"]):
        for ln in cli(*sub, "--help").stdout.splitlines():
            assert ln.startswith("Usage:") or not ln.rstrip().endswith("..."), ln


@pytest.mark.skipif(not (DATA / "paper").is_dir(), reason="needs the paper's released files ($COTDISTILL_DATA/paper)")
def test_import_paper_quiet_prints_totals_and_keeps_the_problems_in_a_file(tmp_path):
    p = cli("import-paper", DATA / "paper", "--out", tmp_path / "pt", "--quiet", env={"COTDISTILL_DATA": str(DATA)})
    assert p.returncode == 0, p.stderr
    lines = (p.stdout + p.stderr).strip().splitlines()
    assert len(lines) <= 5, lines
    rep = json.loads((tmp_path / "pt" / "import_report.json").read_text())
    assert len(rep["problems"]) > 100 and f"{len(rep['problems'])} notes" in p.stdout
    assert rep["traces"] > 200_000 and len(rep["files"]) > 70


# ------------------------------------------------------------------------------------------
# failures that must not leave a user stuck
# ------------------------------------------------------------------------------------------
def test_generation_whose_every_call_failed_resumes_like_any_other(tmp_path):
    cfg = tmp_path / "gen.yaml"
    cfg.write_text("backoff_base: 0.01\nbackoff_max: 0.02\nmax_retries: 1\n")
    args = ["generate", "--config", cfg, "--task", "arith", "--teacher", "openai:fake", "--levels", "1", "--limit", "4",
            "--out", tmp_path / "g"]
    with FakeOpenAIServer(faults=["500"], fault_attempts=10**6) as srv:
        env = {"OPENAI_API_KEY": "k-test", "OPENAI_BASE_URL": srv.base_url}
        p = cli(*args, env=env)
        assert p.returncode == 1 and "rerun the same command" in p.stdout + p.stderr, (p.stdout, p.stderr)
        assert (tmp_path / "g" / "traces.jsonl").read_text() == ""
        srv.faults = ["ok"]  # the server recovers
        p = cli(*args, env=env)
        assert p.returncode == 0, (p.stdout, p.stderr)
        assert len((tmp_path / "g" / "traces.jsonl").read_text().splitlines()) == 4


def test_a_path_below_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    tr = tmp_path / "t" / "traces.jsonl"
    p = cli("generate", "--task", "arith", "--teacher", "lab", "--levels", "1", "--limit", "3", "--out", tmp_path / "t")
    assert p.returncode == 0, p.stderr
    one_line_error(cli("traces", "export", tr, "--to", "trl", "--out", tmp_path / "file" / "sub"),
                   str(tmp_path / "file" / "sub"), "not a directory")
    one_line_error(cli("generate", "--task", "arith", "--teacher", "lab", "--levels", "1", "--limit", "3",
                       "--out", tmp_path / "file" / "g"), "file")


def _small_disk(tmp_path: Path, size: str, script: str) -> subprocess.CompletedProcess:
    """Run ``script`` (bash) with a tmpfs of ``size`` mounted at tmp_path/disk, in a mount namespace of its own."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare")
    disk = tmp_path / "disk"
    disk.mkdir(exist_ok=True)
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {disk}"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("cannot mount a small file system here (needs root or user namespaces)")
    return subprocess.run(["unshare", "-m", "bash", "-c", f"mount -t tmpfs -o size={size} tmpfs {disk} && {script}"],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"})


def test_a_full_disk_is_one_line_and_tears_nothing(tmp_path):
    py = f"{sys.executable} -m cotdistill"
    gen = f"{py} generate --task arith --teacher lab --levels 1-6 --out {tmp_path}/disk/g"
    p = _small_disk(tmp_path, "64k", f"{gen}; echo rc=$?; ls -A {tmp_path}/disk/g")
    assert "rc=2" in p.stdout and "Traceback" not in p.stderr, (p.stdout, p.stderr)
    errs = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(errs) == 1 and "No space left on device" in errs[0] and f"{tmp_path}/disk/g/traces.jsonl" in errs[0]
    assert "rerun the same command" in errs[0]
    assert not [ln for ln in p.stdout.splitlines() if ln.endswith(".tmp")], p.stdout  # no temp file left behind

    traces = tmp_path / "t"
    assert cli("generate", "--task", "arith", "--teacher", "lab", "--levels", "3", "--limit", "200", "--out", traces).returncode == 0
    train = (f"{py} train --traces {traces}/traces.jsonl --student scratch:llama-xxs --out {tmp_path}/disk/m "
             "--max-steps 30 --save-steps 10")
    # room for the first checkpoint's weights, not its optimizer state: then room for everything
    p = _small_disk(tmp_path, "600k", f"{train}; echo rc=$?; mount -o remount,size=40m {tmp_path}/disk; "
                                      f"{train} --resume; echo rc=$?; ls {tmp_path}/disk/m")
    assert "rc=2" in p.stdout and "Traceback" not in p.stderr, (p.stdout, p.stderr)
    errs = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(errs) == 1 and "no space left" in errs[0] and "--resume" in errs[0], p.stderr
    assert "rc=0" in p.stdout and "model.safetensors" in p.stdout, (p.stdout, p.stderr)


@pytest.mark.slow
def test_sigterm_in_training_saves_a_checkpoint_and_says_how_to_resume(tmp_path):
    traces = tmp_path / "t"
    assert cli("generate", "--task", "arith", "--teacher", "lab", "--levels", "3", "--limit", "200", "--out", traces).returncode == 0
    out = tmp_path / "m"
    cmd = [sys.executable, "-m", "cotdistill", "train", "--traces", str(traces / "traces.jsonl"), "--student",
           "scratch:llama-xxs", "--out", str(out), "--max-steps", "300", "--save-steps", "1000", "--cutoff-len", "200",
           "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))
    progress = Path(f"{out}.partial") / "progress.json"
    t0 = time.time()
    while not (progress.exists() and json.loads(progress.read_text())["step"] >= 10):
        assert proc.poll() is None and time.time() - t0 < 300, proc.communicate()
        time.sleep(0.2)
    t_sig = time.time()
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert time.time() - t_sig < 30  # within what a scheduler allows before it kills
    assert proc.returncode == 128 + signal.SIGTERM, (stdout, stderr)
    assert "Traceback" not in stderr and "SIGTERM at step" in stderr and "--resume" in stderr, stderr
    ckpts = sorted((Path(f"{out}.partial") / "checkpoints").glob("checkpoint-*"))
    assert ckpts and int(ckpts[-1].name.split("-")[1]) >= 10  # saved at the signal, not at save_steps
    assert not out.exists()
    p = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr
    summ = json.loads((out / "train_summary.json").read_text())
    assert summ["resumed_from"] == ckpts[-1].name
    assert json.loads((out / "train_config.json").read_text())["config"]["cutoff_len"] == 200


def test_second_pass_mistakes_get_the_right_hint(tmp_path):
    """A data directory one level too deep, a model path mistyped or one level too high, a bad
    generate teacher (nothing written), both --task and --from-traces, a missing directory."""
    if not (DATA / "benchmarks").is_dir():
        pytest.skip("needs the benchmark data")
    p = cli("evaluate", "--model", tmp_path / "m", "--task", "svamp", "--out", tmp_path / "e",
            env={"COTDISTILL_DATA": str(DATA / "paper")})
    one_line_error(p, f"did you mean {DATA}?")
    traces = tmp_path / "t"
    assert cli("generate", "--task", "arith", "--teacher", "lab", "--levels", "0-1", "--formats", "cot,subq", "--limit", "5",
               "--out", traces).returncode == 0
    rows = [json.loads(x) for x in (traces / "traces.jsonl").read_text().splitlines()]
    assert sorted({(r["level"], r["format"]) for r in rows}, key=str) == [(0, "cot"), (1, "cot"), (1, "subq")]  # L0: one form
    model = tmp_path / "run" / "model"
    assert cli("train", "--traces", traces / "traces.jsonl", "--levels", "1", "--formats", "cot", "--student",
               "scratch:llama-xxs", "--max-steps", "2", "--out", model).returncode == 0
    assert oct(os.stat(model / "model.safetensors").st_mode & 0o777) == oct(0o666 & ~_umask())
    one_line_error(cli("evaluate", "--model", tmp_path / "run" / "modle", "--task", "arith", "--out", tmp_path / "e1"),
                   f"did you mean {model}?")
    one_line_error(cli("evaluate", "--model", tmp_path / "run", "--task", "arith", "--out", tmp_path / "e2"),
                   f"did you mean {model}?")
    for bad in (["--teacher", "labb"], ["--teacher", "lab", "--task", "svamp"]):
        args = ["generate", "--task", "arith", "--limit", "2", "--out", tmp_path / "g", *bad]
        one_line_error(cli(*args, env={"COTDISTILL_DATA": str(DATA)}), "teacher")
        assert not (tmp_path / "g").exists()
    one_line_error(cli("generate", "--task", "arith", "--from-traces", traces, "--teacher", "lab", "--out", tmp_path / "g"),
                   "not both")
    one_line_error(cli("rescore", tmp_path / "nope"), "does not exist")
    assert cli("--version").stdout.strip() == cli("version").stdout.strip() != ""


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m
