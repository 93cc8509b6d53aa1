"""Studies through real schedulers started on this machine: a single-node Slurm (slurmctld, slurmd,
munged from the distribution's packages) and a two-node Ray cluster on loopback in a network
namespace of its own. Each test skips with the reason when the engine cannot start here; CI sets
COTDISTILL_CLUSTER_TESTS=require, which turns those skips into failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cotdistill.cluster import ClusterConfig, parse_minutes, read_submissions, study_status
from cotdistill.study import load_study_config, run_study

sys.path.insert(0, str(Path(__file__).parent))
from local_cluster import LocalSlurm, ray_missing, ray_script, slurm_missing  # noqa: E402

REQUIRED = os.environ.get("COTDISTILL_CLUSTER_TESTS") == "require"


def _unavailable(why: str):
    if REQUIRED:
        pytest.fail(f"COTDISTILL_CLUSTER_TESTS=require, but {why}")
    pytest.skip(why)


def study_dict(out: Path, **over) -> dict:
    """Four cells (2 levels x 2 seeds) sharing two sets of traces: two preparation tasks."""
    cfg = {
        "name": "cl", "output_dir": str(out),
        "tasks": [{"name": "arith", "options": {"steps": 2, "n_train": 128, "n_test": 16}}],
        "teachers": ["lab"], "levels": [0, 3], "students": ["scratch:llama-xxs"], "seeds": [0, 1],
        "curate": {"decontaminate": False}, "threads": 1,
        "train": {"max_steps": 6, "batch_size": 16, "save_steps": 100, "logging_steps": 1},
        "eval": {"max_new_tokens": 24, "batch_size": 16},
    }
    cfg.update(over)
    return cfg


def write(tmp: Path, cfg: dict, name: str = "study.yaml") -> Path:
    p = tmp / name
    p.write_text(yaml.safe_dump(cfg))
    return p


def cli(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cotdistill", *args], capture_output=True, text=True,
                          env={**(env or os.environ), "COLUMNS": "250"}, timeout=timeout)


def outputs(study: Path) -> dict[str, list[str]]:
    """Every cell's generated outputs, item by item (equal outputs: equal models, equal decoding)."""
    got = {}
    for cell in sorted((study / "cells").iterdir()):
        rows = [json.loads(x) for x in (cell / "eval" / "predictions.jsonl").read_text().splitlines() if x.strip()]
        got[cell.name] = [r["output"] for r in sorted(rows, key=lambda r: str(r["id"]))]
    return got


def accuracies(study: Path) -> dict[str, float]:
    rows = [json.loads(x) for x in (study / "results.jsonl").read_text().splitlines() if x.strip()]
    return {r["cell"]: r["accuracy"] for r in rows if r["status"] == "ok"}


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory):
    """The four-cell study through the local executor: what every cluster run must reproduce."""
    d = tmp_path_factory.mktemp("local")
    s = run_study(load_study_config(study_dict(d / "out")), jobs=1, progress=False)
    assert s.done == 4 and s.failed == 0
    return d / "out"


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    why = slurm_missing()
    if why:
        _unavailable(why)
    s = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        s.start()
    except RuntimeError as e:
        _unavailable(str(e))
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(s.conf)
    yield s
    s.stop()
    if old is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old


def squeue_ids(env=None) -> list[str]:
    r = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, env=env)
    return r.stdout.split()


def wait_idle(out: Path, timeout: float = 420) -> list:
    """Wait until no job of the study is queued or running; the cells' states then."""
    t0 = time.time()
    jobs = {str(s["job"]) for s in read_submissions(out)}
    while time.time() - t0 < timeout:
        if not any(j.split("_")[0] in jobs for j in squeue_ids()):
            return study_status(out)
        time.sleep(1.0)
    pytest.fail(f"the study's jobs did not finish in {timeout:.0f}s: {[r.as_dict() for r in study_status(out)]}")


# ---------------------------------------------------------------------------------------------
# no scheduler needed
# ---------------------------------------------------------------------------------------------
def test_time_limits_and_reserved_sbatch_options():
    assert [parse_minutes(x) for x in (90, "90", "4:00:00", "1-00:00:00", "30:30", "1-2")] == [90, 90, 240, 1440, 31, 1560]
    with pytest.raises(ValueError, match="not a time limit"):
        parse_minutes("four hours")
    with pytest.raises(ValueError, match="set by cotdistill itself"):
        ClusterConfig(sbatch={"--array": "0-3"})
    assert ClusterConfig(sbatch={"--exclude": "n1"}).sbatch == {"exclude": "n1"}


def test_dry_run_shows_jobs_resources_dependencies_and_a_script_and_submits_nothing(tmp_path):
    y = write(tmp_path, study_dict(tmp_path / "out", cluster={"executor": "slurm", "partition": "gpu", "account": "lab",
                                                              "gpus_per_cell": 1, "max_parallel": 1,
                                                              "setup": ["module load cuda/12.4"]}))
    r = cli("study", str(y), "--dry-run", "--time", "2:00:00", "--mem", "16G", "--sbatch", "exclude=node3")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "2 shared generation/curation task(s) first" in out and "4 to run" in out
    assert "afterok:<prepare>_0" in out and "afterok:<prepare>_1" in out
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --array=0-1%1", "#SBATCH --time=120", "#SBATCH --mem=16G", "#SBATCH --exclude=node3",
                 "#SBATCH --kill-on-invalid-dep=yes", "module load cuda/12.4"):
        assert line in out, line
    assert "nothing was submitted" in out
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
    bad = cli("study", str(y), "--dry-run", "--time", "soon")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "cluster.time" in bad.stderr, bad.stderr


# ---------------------------------------------------------------------------------------------
# Slurm
# ---------------------------------------------------------------------------------------------
def test_slurm_study_gives_the_local_results_and_resubmits_only_what_is_missing(slurm, local_reference, tmp_path):
    y = write(tmp_path, study_dict(tmp_path / "out"))
    r = cli("study", str(y), "--executor", "slurm", "--cpus-per-cell", "1", "--time", "10", "--mem", "2G")
    assert r.returncode == 0, r.stderr
    subs = read_submissions(tmp_path / "out")
    assert [s["kind"] for s in subs] == ["prepare", "cells", "cells"]  # generation once per set of traces
    assert subs[1]["dependency"] == f"afterok:{subs[0]['job']}_0" and subs[2]["dependency"] == f"afterok:{subs[0]['job']}_1"
    states = wait_idle(tmp_path / "out")
    assert [s.state for s in states] == ["done"] * 4, [s.as_dict() for s in states]
    assert all(s.job and "_" in s.job for s in states)
    # the same models and outputs as the local executor, item by item
    assert outputs(tmp_path / "out") == outputs(local_reference)
    r = cli("report", str(tmp_path / "out"))  # results.jsonl merged from the finished cells
    assert r.returncode == 0, r.stderr
    assert accuracies(tmp_path / "out") == accuracies(local_reference)
    # resubmitting the same command submits nothing; the status command lists every cell
    r = cli("study", str(y), "--executor", "slurm", "--cpus-per-cell", "1")
    assert r.returncode == 0 and "nothing to submit" in r.stdout, r.stdout + r.stderr
    assert len(read_submissions(tmp_path / "out")) == 3
    st = cli("study", "status", str(tmp_path / "out"), "--json")
    rows = [json.loads(x) for x in st.stdout.splitlines()]
    assert [x["state"] for x in rows] == ["done"] * 4 and all(x["accuracy"] is not None for x in rows)


def _long_cell(tmp_path: Path, name: str) -> Path:
    cfg = study_dict(tmp_path / "out", name=name, levels=[3], seeds=[0],
                     train={"max_steps": 600, "batch_size": 16, "save_steps": 20, "logging_steps": 5})
    return write(tmp_path, cfg)


def _wait_for_checkpoint(out: Path, timeout: float = 300) -> Path:
    t0 = time.time()
    while time.time() - t0 < timeout:
        for cell in (out / "cells").glob("*"):
            ck = [p for p in (cell / "model.partial" / "checkpoints").glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
            if ck:
                return cell
        time.sleep(0.5)
    pytest.fail("no training checkpoint appeared")


def _train_resumed(cell: Path) -> bool:
    return "(resumed)" in (cell / "log.txt").read_text()


def test_slurm_cancelled_cell_resumes_from_its_checkpoint_when_resubmitted(slurm, tmp_path):
    y = _long_cell(tmp_path, "cancel")
    out = tmp_path / "out"
    assert cli("study", str(y), "--executor", "slurm", "--cpus-per-cell", "2").returncode == 0
    cell = _wait_for_checkpoint(out)
    r = cli("study", "cancel", str(out))
    assert r.returncode == 0 and "cancelled: slurm job" in r.stdout, r.stdout + r.stderr
    states = wait_idle(out)
    assert states[0].state == "stopped" and states[0].stage == "train", states[0].as_dict()
    # the same command again: only the unfinished cell, continued from its last checkpoint
    r = cli("study", str(y), "--executor", "slurm", "--cpus-per-cell", "2")
    assert r.returncode == 0, r.stderr
    subs = read_submissions(out)
    assert [s["kind"] for s in subs] == ["prepare", "cells", "cells"] and subs[-1]["dependency"] is None
    states = wait_idle(out)
    assert states[0].state == "done", states[0].as_dict()
    assert _train_resumed(cell)
    info = json.loads((cell / "stages.json").read_text())["train"]["info"]
    assert info["steps"] == 600 and "checkpoint-" in str(info["resumed_from"]), info


def test_slurm_requeued_job_resumes_by_itself(slurm, tmp_path):
    y = _long_cell(tmp_path, "requeue")
    out = tmp_path / "out"
    assert cli("study", str(y), "--executor", "slurm", "--cpus-per-cell", "2").returncode == 0
    cell = _wait_for_checkpoint(out)
    job = json.loads((cell / "status.json").read_text())["job"]
    r = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    states = wait_idle(out, timeout=600)
    assert states[0].state == "done", states[0].as_dict()
    assert _train_resumed(cell)
    assert "checkpoint-" in str(json.loads((cell / "stages.json").read_text())["train"]["info"]["resumed_from"])
    assert len(read_submissions(out)) == 2  # nothing resubmitted by hand


def test_two_submissions_at_once_queue_each_cell_once(slurm, tmp_path):
    y = write(tmp_path, study_dict(tmp_path / "out", name="twice", seeds=[0]))
    env = os.environ.copy()
    procs = [subprocess.Popen([sys.executable, "-m", "cotdistill", "study", str(y), "--executor", "slurm",
                               "--cpus-per-cell", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    rcs = [p.returncode for p in procs]
    # one submits; the other waits for nothing: it is refused while the first submits, or finds the cells queued
    assert 0 in rcs, outs
    states = wait_idle(tmp_path / "out")
    assert [s.state for s in states] == ["done"] * 2
    queued = [c for s in read_submissions(tmp_path / "out") if s["kind"] == "cells" for c in s["tasks"]]
    assert sorted(queued) == sorted({*queued}) and len(queued) == 2
    for cell in (tmp_path / "out" / "cells").iterdir():
        assert (cell / "log.txt").read_text().count("== ") == 1  # each cell ran once


# ---------------------------------------------------------------------------------------------
# Ray
# ---------------------------------------------------------------------------------------------
def test_ray_study_on_a_two_node_cluster_gives_the_local_results(local_reference, tmp_path):
    why = ray_missing()
    if why:
        _unavailable(why)
    y = write(tmp_path, study_dict(tmp_path / "out"))
    cmd = (f"{sys.executable} -m cotdistill study {y} --executor ray --cpus-per-cell 1 --no-report && "
           f"{sys.executable} -m cotdistill study status {tmp_path / 'out'} --json")
    r = subprocess.run(ray_script(cmd, port=6400 + os.getpid() % 500), capture_output=True, text=True, timeout=900,
                       env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    if r.returncode != 0 and "ray start" in r.stderr and not (tmp_path / "out" / "cluster").exists():
        _unavailable(f"the loopback Ray cluster did not start: {r.stderr.strip()[-300:]}")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rows = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    assert [x["state"] for x in rows] == ["done"] * 4
    subs = read_submissions(tmp_path / "out")
    assert subs[-1]["executor"] == "ray" and len(subs[-1]["tasks"]) == 4
    assert outputs(tmp_path / "out") == outputs(local_reference)
    assert accuracies(tmp_path / "out") == accuracies(local_reference)


def _bad_replay_study(tmp_path: Path) -> dict:
    """Lab cells that succeed beside replay cells whose traces cannot be made (the replay file holds
    none of the training questions): their generation fails."""
    from cotdistill.traces import Trace, write_traces

    bad = tmp_path / "bad.jsonl"
    write_traces(bad, [Trace(id="not-in-the-task", task="arith", question="q?", gold="1", teacher="x", level=3,
                             output="The answer is 1")])
    return study_dict(tmp_path / "out", name="faults", levels=[3], seeds=[0], teachers=["lab", f"replay:{bad}#x"])


def test_status_of_a_local_study_names_the_failed_stage_and_its_log(tmp_path):
    y = write(tmp_path, _bad_replay_study(tmp_path))
    r = cli("study", str(y), "--no-report")
    assert r.returncode == 1  # a failed cell: the run says so, the other cell finished
    st = cli("study", "status", str(tmp_path / "out"), "--json")
    assert st.returncode == 0, st.stderr
    rows = {x["cell"].split("__")[1]: x for x in map(json.loads, st.stdout.splitlines())}
    assert rows["lab"]["state"] == "done" and rows["lab"]["accuracy"] is not None
    bad = next(v for k, v in rows.items() if k != "lab")
    assert bad["state"] == "failed" and bad["stage"] == "generate" and "calls failed" in bad["detail"]
    assert any("FAILED in stage generate" in ln for ln in bad["log_tail"])
    table = cli("study", "status", str(tmp_path / "out"))
    assert "1 done, 1 failed" in table.stdout and "last lines of its log" in table.stdout
    none = cli("study", "status", str(tmp_path))
    assert none.returncode == 2 and "no study.json" in none.stderr and none.stderr.count("\n") == 1


def test_slurm_failed_generation_cancels_only_its_cells(slurm, tmp_path):
    y = write(tmp_path, _bad_replay_study(tmp_path))
    r = cli("study", str(y), "--executor", "slurm", "--cpus-per-cell", "1", "--time", "10")
    assert r.returncode == 0, r.stderr
    states = {s.cell.split("__")[1]: s for s in wait_idle(tmp_path / "out")}
    assert states["lab"].state == "done"
    bad = next(v for k, v in states.items() if k != "lab")
    assert bad.state == "failed" and bad.stage == "generate" and "calls failed" in bad.detail, bad.as_dict()
    assert any("FAILED in stage generate" in ln for ln in bad.log_tail)


RAY_KILL_DRIVER = r'''
import json, os, signal, subprocess, sys, time
from pathlib import Path
y, out = sys.argv[1], Path(sys.argv[2])
drv = subprocess.Popen([sys.executable, "-m", "cotdistill", "study", y, "--executor", "ray", "--cpus-per-cell", "2", "--no-report"])
t0 = time.time()
pid = None
while time.time() - t0 < 400 and pid is None:
    for cell in (out / "cells").glob("*"):
        ck = [p for p in (cell / "model.partial" / "checkpoints").glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
        st = cell / "status.json"
        if ck and st.exists():
            pid = json.loads(st.read_text())["pid"]
    time.sleep(0.3)
assert pid is not None, "no checkpoint"
os.kill(pid, signal.SIGKILL)   # the node's worker process dies mid-training: Ray runs the task again
rc = drv.wait(timeout=600)
print("KILLED", pid, "RC", rc)
'''


def test_ray_task_whose_worker_dies_is_retried_and_resumes_from_its_checkpoint(tmp_path):
    why = ray_missing()
    if why:
        _unavailable(why)
    y = _long_cell(tmp_path, "raykill")
    script = tmp_path / "drive.py"
    script.write_text(RAY_KILL_DRIVER)
    cmd = f"{sys.executable} {script} {y} {tmp_path / 'out'}"
    r = subprocess.run(ray_script(cmd, port=6400 + (os.getpid() + 7) % 500, head_cpus=2, worker_cpus=2),
                       capture_output=True, text=True, timeout=900, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    assert r.returncode == 0 and "KILLED" in r.stdout and "RC 0" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    states = study_status(tmp_path / "out")
    assert states[0].state == "done", states[0].as_dict()
    cell = next((tmp_path / "out" / "cells").iterdir())
    assert _train_resumed(cell)
