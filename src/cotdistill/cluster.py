"""Running a study on a cluster: Slurm job arrays (through submitit) and Ray clusters.

The study's stage graph decides what is submitted, not locks: the shared stages of a cell (teacher
generation and curation, the same for every student and seed of a (task, teacher, level, format))
run once as their own job, and the training cells that read them depend on that job (Slurm
``afterok``, a Ray object reference). Stages already cached are not submitted, so submitting the
same study again submits only what is missing; cells queued or running from an earlier submission
are left to it. Every job runs the same code as the local executor (:func:`cotdistill.study.run_cell`
holds a per-cell lock, so no cell runs twice), reads the study from ``study.json`` in the shared
output directory and writes its results there.

Python API::

    cfg = load_study_config("study.yaml", overrides={"cluster": {"executor": "slurm", "partition": "gpu"}})
    sub = submit_study(cfg)                 # Slurm: returns the job ids; Ray: runs to the end
    rows = study_status(cfg.output_dir)     # every cell's state, for local and cluster runs
    cancel_study(cfg.output_dir)
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .errors import UserError, opt

EXECUTORS = ("local", "slurm", "ray")


def parse_minutes(value: str | int | float) -> int:
    """A Slurm time limit (``90``, ``"90"``, ``"4:00:00"``, ``"1-12:00:00"``, ``"30:00"``) in minutes."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError("use a positive number of minutes")
        return int(value)
    text = str(value).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not m:
        raise ValueError(f"{text!r} is not a time limit: use minutes (240), HH:MM:SS (4:00:00) or D-HH:MM:SS")
    days, a, b, c = (int(x) if x else None for x in m.groups())
    if b is None and c is None:  # "MM" or "D-HH"
        minutes = a * 60 if days is not None else a
    elif c is None:  # "MM:SS" or "D-HH:MM"
        minutes = a * 60 + b if days is not None else a + (1 if b else 0)
    else:  # HH:MM:SS
        minutes = a * 60 + b + (1 if c else 0)
    minutes += (days or 0) * 24 * 60
    if minutes <= 0:
        raise ValueError(f"{text!r}: the time limit must be positive")
    return minutes


class ClusterConfig(BaseModel):
    """Where a study's cells run. The keys are the ``cotdistill study`` flags (``max_parallel`` is
    ``--max-parallel``); ``local`` (the default) runs worker processes on this machine."""

    model_config = ConfigDict(extra="forbid")

    executor: Literal["local", "slurm", "ray"] = Field("local", description="local, slurm (job arrays through submitit) or ray")
    partition: str | None = Field(None, description="Slurm partition of the cell jobs")
    account: str | None = Field(None, description="Slurm account to charge")
    qos: str | None = Field(None, description="Slurm quality of service")
    time: str | int = Field("4:00:00", description="time limit of one cell job (minutes or [D-]HH:MM:SS); a cell cut "
                                                    "off by it is requeued and resumes from its last checkpoint")
    mem: str | None = Field(None, description="memory per cell job, e.g. 32G (Slurm) ")
    cpus_per_cell: int | None = Field(None, ge=1, description="CPU cores per cell (Slurm cpus-per-task, Ray num_cpus; "
                                                              "also the cell's torch threads)")
    gpus_per_cell: int = Field(0, ge=0, description="GPUs per cell (Slurm gpus-per-node, Ray num_gpus); above 1 the "
                                                    "cell trains through `accelerate launch` with the `distributed` preset")
    distributed: Literal["ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3"] = Field(
        "ddp", description="how a cell with several GPUs trains: ddp, fsdp, deepspeed-zero2, deepspeed-zero3")
    constraint: str | None = Field(None, description="Slurm node features, e.g. a100")
    max_parallel: int | None = Field(None, ge=1, description="at most this many cells at once (Slurm --array=0-N%K "
                                                             "per array; Ray: tasks in flight)")
    sbatch: dict[str, Any] = Field(default_factory=dict, description="extra sbatch options, e.g. {exclude: node3, "
                                                                      "mail-type: END}")
    setup: list[str] = Field(default_factory=list, description="shell lines run before each job on the node "
                                                               "(module load ..., source venv/bin/activate)")
    python: str | None = Field(None, description="the Python that runs the jobs on the nodes (default: this one, "
                                                 "which must be reachable there)")
    ray_address: str | None = Field(None, description="Ray cluster address (default: $RAY_ADDRESS, else 'auto')")
    max_requeues: int = Field(3, ge=0, description="times a cell cut off by its time limit is requeued")

    @field_validator("time")
    @classmethod
    def _time(cls, v):
        parse_minutes(v)
        return v

    @field_validator("sbatch")
    @classmethod
    def _sbatch(cls, v):
        for k in v:
            if k.lstrip("-") in ("array", "dependency", "output", "error", "job-name", "wrap"):
                raise ValueError(f"sbatch option {k!r} is set by cotdistill itself; remove it")
        return {k.lstrip("-"): val for k, val in v.items()}

    @property
    def minutes(self) -> int:
        return parse_minutes(self.time)


# ------------------------------------------------------------------------------------------
# the job plan: what a submission runs, from the study's stage keys
# ------------------------------------------------------------------------------------------
@dataclass
class JobPlan:
    """Preparation tasks (one per distinct set of traces still to generate or curate) and the cell
    tasks, grouped by the preparation they wait for (``None``: ready now)."""

    cells: int                                    # cells in the study
    complete: list[str]                           # cell ids with every stage done
    active: list[str]                             # cell ids queued or running from an earlier submission
    prepare: list[Any] = field(default_factory=list)               # one Cell per preparation task
    groups: dict[int | None, list[Any]] = field(default_factory=dict)  # prepare index -> its cells

    @property
    def to_run(self) -> int:
        return sum(len(v) for v in self.groups.values())


def plan_jobs(cfg, active: set[str] | None = None) -> JobPlan:
    from .study import STAGES, expand_cells, plan_study

    plans = plan_study(cfg)
    active = active or set()
    plan = JobPlan(cells=len(expand_cells(cfg)), complete=[], active=[])
    prep_index: dict[str, int] = {}
    for p in plans:
        if len(p.done) == len(STAGES):
            plan.complete.append(p.cell.id)
            continue
        if p.cell.id in active:
            plan.active.append(p.cell.id)
            continue
        group: int | None = None
        if "curate" not in p.done:
            key = p.keys["curate"]
            if key not in prep_index:
                prep_index[key] = len(plan.prepare)
                plan.prepare.append(p.cell)
            group = prep_index[key]
        plan.groups.setdefault(group, []).append(p.cell)
    return plan


# ------------------------------------------------------------------------------------------
# submissions record: cluster/submissions.jsonl in the study directory
# ------------------------------------------------------------------------------------------
def _cluster_dir(out: Path) -> Path:
    return Path(out) / "cluster"


def _record(out: Path, row: dict[str, Any]) -> None:
    d = _cluster_dir(out)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "submissions.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(row, default=str) + "\n")


def read_submissions(out: str | os.PathLike) -> list[dict[str, Any]]:
    p = _cluster_dir(Path(out)) / "submissions.jsonl"
    rows = []
    if p.is_file():
        for line in p.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a lost node
    return rows


def _task_jobs(subs: list[dict[str, Any]]) -> dict[str, str]:
    """cell id (or ``prepare:<key>``) -> its latest job id (``<array>_<task>`` on Slurm)."""
    out: dict[str, str] = {}
    for s in subs:
        for i, name in enumerate(s.get("tasks") or []):
            out[name] = f"{s['job']}_{i}" if s.get("executor") == "slurm" else str(s.get("job"))
    return out


# ------------------------------------------------------------------------------------------
# jobs on the nodes
# ------------------------------------------------------------------------------------------
def _load(out_dir: str):
    from .study import load_written_study

    return load_written_study(out_dir)


def _find(cfg, cell_id: str):
    from .study import expand_cells

    for c in expand_cells(cfg):
        if c.id == cell_id:
            return c
    raise UserError(f"cell {cell_id} is not in the study at {cfg.output_dir} (its config changed since submission); "
                    "submit the study again")


def _threads(cfg) -> int | None:
    n = cfg.threads or cfg.cluster.cpus_per_cell or int(os.environ.get("SLURM_CPUS_PER_TASK", "0") or 0)
    return n or None


def run_task(out_dir: str, kind: str, name: str) -> dict[str, Any]:
    """One job's work on a node: ``prepare`` (generation + curation of the traces of cell ``name``)
    or ``cell`` (train and evaluate cell ``name``). A failed cell raises after recording its error."""
    cfg = _load(out_dir)
    from .study import merge_results, prepare_cell, run_cell

    cell = _find(cfg, name)
    if kind == "prepare":
        return prepare_cell(cfg, cell)
    res = run_cell(cfg, cell, _threads(cfg))
    if res["row"] is not None:
        merge_results(cfg)
    if res["row"] is None:
        print(f"cell {name} is being run by another process ({res.get('busy')}); leaving it to it", flush=True)
        return {"cell": name, "busy": res.get("busy")}
    row = res["row"]
    if row.get("status") != "ok":
        raise RuntimeError(f"cell {name} failed in stage {row.get('stage')}: {row.get('error')}")
    return {"cell": name, "accuracy": row.get("accuracy"), "ran": res["ran"]}


def _checkpointable():
    import submitit

    class StudyJob(submitit.helpers.Checkpointable):
        """A study task as a Slurm job: cut off by its time limit or preempted, it is requeued with the
        same arguments and the cell resumes from its last training checkpoint."""

        def __call__(self, out_dir: str, kind: str, name: str) -> dict[str, Any]:
            return run_task(out_dir, kind, name)

    return StudyJob


# ------------------------------------------------------------------------------------------
# Slurm
# ------------------------------------------------------------------------------------------
def _slurm_missing() -> str | None:
    import shutil

    for b in ("sbatch", "squeue", "scancel"):
        if shutil.which(b) is None:
            return f"{b} not found: run on a Slurm login node (or install the Slurm client and set SLURM_CONF)"
    return None


def _needs_gpu_for_generation(cell) -> bool:
    from .spec import split_teacher

    spec = split_teacher(cell.teacher)[0]
    return spec.startswith(("hf:", "vllm:"))


def _slurm_params(cfg, kind: str, n: int, dependency: str | None, cells: list[Any] = ()) -> dict[str, Any]:
    cc = cfg.cluster
    gpus = cc.gpus_per_cell
    # generation needs the cells' GPUs only when the teacher runs here (hf:, vllm:); API and replay teachers do not
    gpu_job = kind == "cells" or any(_needs_gpu_for_generation(c) for c in cells)
    p: dict[str, Any] = {
        "job_name": f"{cfg.name}-{kind}"[:60], "time": cc.minutes, "signal_delay_s": 120,
        "array_parallelism": min(n, cc.max_parallel) if cc.max_parallel else n, "stderr_to_stdout": True,
        "setup": list(cc.setup), "additional_parameters": dict(cc.sbatch),
    }
    for k in ("partition", "account", "qos", "constraint", "mem"):
        if getattr(cc, k):
            p[k] = getattr(cc, k)
    if cc.cpus_per_cell:
        p["cpus_per_task"] = cc.cpus_per_cell
    if gpus and gpu_job:
        p["gpus_per_node"] = gpus
    if dependency:
        p["dependency"] = dependency
        p["additional_parameters"]["kill-on-invalid-dep"] = "yes"
    return p


@dataclass
class Submission:
    executor: str
    jobs: list[dict[str, Any]]  # {"kind", "job", "tasks": [...], "dependency", "params"}
    plan: JobPlan
    script: str | None = None  # one generated batch script (dry run)


def _folder(cfg) -> Path:
    return _cluster_dir(Path(cfg.output_dir)) / "slurm"


def _python(cfg) -> str:
    return cfg.cluster.python or sys.executable


def _sbatch_script(cfg, params: dict[str, Any], n: int) -> str:
    from submitit.slurm.slurm import _make_sbatch_string

    folder = _folder(cfg) / "%j"
    command = f"{shlex.quote(_python(cfg))} -u -m submitit.core._submit {shlex.quote(str(folder))}"
    return _make_sbatch_string(command=command, folder=str(folder), map_count=n, **params)


def submit_slurm(cfg, plan: JobPlan, dry_run: bool = False) -> Submission:
    """One array for the preparation tasks, one array of cells per preparation they wait for
    (``afterok`` on that task; cells whose traces are ready go in one array with no dependency)."""
    if not dry_run:
        why = _slurm_missing()
        if why:
            raise UserError(f"{opt('executor')} slurm: {why}")
    out = str(Path(cfg.output_dir))
    sub = Submission("slurm", [], plan)
    jobs_spec: list[tuple[str, list[Any], str | None, int | None]] = []
    if plan.prepare:
        jobs_spec.append(("prepare", plan.prepare, None, None))
    for g, cells in sorted(plan.groups.items(), key=lambda kv: -1 if kv[0] is None else kv[0]):
        jobs_spec.append(("cells", cells, None, g))
    if dry_run:
        for kind, cells, _, g in jobs_spec:
            dep = None if g is None else f"afterok:<prepare>_{g}"
            params = _slurm_params(cfg, kind, len(cells), dep, cells)
            sub.jobs.append({"kind": kind, "job": None, "tasks": [c.id for c in cells], "dependency": dep,
                             "params": params})
        if sub.jobs:  # the last array's script, as sbatch will receive it
            last = sub.jobs[-1]
            sub.script = _sbatch_script(cfg, last["params"], len(last["tasks"]))
        return sub
    import submitit

    job_cls = _checkpointable()
    folder = _folder(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    prep_job: str | None = None
    for kind, cells, _, g in jobs_spec:
        dep = None if g is None else f"afterok:{prep_job}_{g}"
        params = _slurm_params(cfg, kind, len(cells), dep, cells)
        ex = submitit.SlurmExecutor(folder=folder / "%j", max_num_timeout=cfg.cluster.max_requeues, python=_python(cfg))
        ex.update_parameters(**params)
        names = [c.id for c in cells]
        try:
            jobs = ex.map_array(job_cls(), [out] * len(cells), [kind.rstrip("s")] * len(cells), names)
        except Exception as e:  # noqa: BLE001 - sbatch's own message is the useful part
            raise UserError(f"sbatch refused the {kind} array: {str(e).strip().splitlines()[-1][:300]} "
                            "(check --partition, --account, --qos, --time)") from None
        array = str(jobs[0].job_id).split("_")[0]
        if kind == "prepare":
            prep_job = array
            names = [f"prepare:{c.id}" for c in cells]
        row = {"t": time.time(), "executor": "slurm", "kind": kind, "job": array, "tasks": names,
               "dependency": dep, "cells": [c.id for c in cells]}
        _record(Path(out), row)
        sub.jobs.append({**row, "params": params})
    return sub


def slurm_states(job_ids: set[str] | None = None) -> dict[str, tuple[str, str]]:
    """``job_task -> (state, reason)`` of the jobs Slurm still knows (``squeue``, array tasks expanded)."""
    try:
        res = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T|%r|%M"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if res.returncode != 0:
        return {}
    out = {}
    for line in res.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 3:
            continue
        jid = parts[0]
        if job_ids is None or jid.split("_")[0] in job_ids:
            out[jid] = (parts[1], parts[2])
    return out


# ------------------------------------------------------------------------------------------
# Ray
# ------------------------------------------------------------------------------------------
def run_ray(cfg, plan: JobPlan, progress=None) -> dict[str, Any]:
    """Run the plan on a Ray cluster: one task per preparation and per cell (``num_cpus`` /
    ``num_gpus`` from the cluster section), cells taking their preparation's object reference, at
    most ``max_parallel`` cells in flight. Blocks until every task has finished (the driver can be
    stopped and the study submitted again: finished cells are kept)."""
    try:
        import ray
    except ImportError:
        raise UserError(f"{opt('executor')} ray needs Ray: pip install 'cotdistill[ray]'") from None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cc = cfg.cluster
    address = cc.ray_address or os.environ.get("RAY_ADDRESS") or "auto"
    try:
        ray.init(address=address, log_to_driver=False, logging_level="ERROR", include_dashboard=False)
    except Exception as e:  # noqa: BLE001 - connection errors come in many types
        raise UserError(f"cannot reach the Ray cluster at {address!r}: {str(e).splitlines()[0][:200]} "
                        f"(start one with `ray start --head`, or pass {opt('ray_address')})") from None
    out = str(Path(cfg.output_dir))
    try:
        res = {"num_cpus": cc.cpus_per_cell or 1}
        prep_gpus = cc.gpus_per_cell if any(_needs_gpu_for_generation(c) for c in plan.prepare) else 0
        prep_fn = ray.remote(max_retries=2)(run_task).options(**res, num_gpus=prep_gpus)
        cell_fn = ray.remote(max_retries=2)(_ray_cell).options(**res, num_gpus=cc.gpus_per_cell)
        prep_refs = [prep_fn.remote(out, "prepare", c.id) for c in plan.prepare]
        todo = [(c, None if g is None else prep_refs[g]) for g, cells in plan.groups.items() for c in cells]
        _record(Path(out), {"t": time.time(), "executor": "ray", "kind": "cells", "job": f"ray:{os.getpid()}@{socket.gethostname()}",
                            "driver": {"pid": os.getpid(), "host": socket.gethostname()}, "address": address,
                            "tasks": [c.id for c, _ in todo], "cells": [c.id for c, _ in todo]})
        limit = cc.max_parallel or len(todo) or 1
        inflight: dict[Any, Any] = {}
        results: dict[str, Any] = {}
        while todo or inflight:
            while todo and len(inflight) < limit:
                c, dep = todo.pop(0)
                inflight[cell_fn.remote(out, c.id, dep)] = c
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=2.0)
            for ref in ready:
                c = inflight.pop(ref)
                try:
                    results[c.id] = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - a failed preparation or a lost worker
                    results[c.id] = {"cell": c.id, "error": str(e).strip().splitlines()[-1][:300]}
                    _mark_failed(cfg, c, "prepare" if "prepare" in str(e) else "worker", results[c.id]["error"])
            if progress:
                progress()
        return results
    finally:
        ray.shutdown()


def _ray_cell(out_dir: str, cell_id: str, prepared: Any = None) -> dict[str, Any]:
    """A cell as a Ray task (its preparation's result arrives as ``prepared`` once it has run)."""
    return run_task(out_dir, "cell", cell_id)


def _mark_failed(cfg, cell, stage: str, error: str) -> None:
    from .records import read_cell_result, write_cell_result
    from .study import _status, layout

    cl = layout(cfg).cell(cell.id)
    old = read_cell_result(cl.result)
    if old is not None and old.status == "failed":
        return  # the cell recorded its own failure
    cl.dir.mkdir(parents=True, exist_ok=True)
    write_cell_result(cl.result, {**cell.row_keys(), "cell": cell.id, "status": "failed", "stage": stage, "error": error})
    _status(cl.dir, "failed", stage, error=error)


# ------------------------------------------------------------------------------------------
# submit / status / cancel
# ------------------------------------------------------------------------------------------
def active_cells(out: str | os.PathLike) -> set[str]:
    """Cells queued or running in jobs of earlier submissions that the scheduler still knows."""
    subs = read_submissions(out)
    slurm_ids = {str(s["job"]) for s in subs if s.get("executor") == "slurm"}
    if not slurm_ids:
        return set()
    states = slurm_states(slurm_ids)
    alive = {jid for jid, (st, _) in states.items() if st in ("PENDING", "RUNNING", "CONFIGURING", "REQUEUED",
                                                              "RESIZING", "SUSPENDED", "COMPLETING")}
    cells = set()
    for s in subs:
        if s.get("executor") != "slurm" or s.get("kind") != "cells":
            continue
        for i, name in enumerate(s.get("tasks") or []):
            if f"{s['job']}_{i}" in alive or str(s["job"]) in alive:
                cells.add(name)
    return cells


def submit_study(cfg, dry_run: bool = False, progress=None, console=None) -> Submission:
    """Submit the cells of ``cfg`` that are not done (nor queued or running already) to its
    ``cluster.executor`` (slurm or ray). The study directory is claimed for the submission itself,
    so two submissions of one study at once queue each cell once. Slurm returns once submitted;
    Ray runs to the end, reporting the cells' progress to ``progress`` (as :func:`run_study`)."""
    from .artifacts import claim
    from .fileio import atomic_write_json
    from .study import layout

    ex = cfg.cluster.executor
    if ex == "local":
        raise UserError(f"submit_study runs a cluster executor; {opt('executor')} local runs with run_study")
    root = Path(cfg.output_dir)
    if dry_run:
        plan = plan_jobs(cfg, active_cells(root) if root.exists() else set())
        if ex == "slurm":
            return submit_slurm(cfg, plan, dry_run=True)
        return Submission("ray", [{"kind": "prepare", "tasks": [c.id for c in plan.prepare], "params": _ray_params(cfg, 0)},
                                  {"kind": "cells", "tasks": [c.id for g in plan.groups.values() for c in g],
                                   "params": _ray_params(cfg, cfg.cluster.gpus_per_cell)}], plan)
    with claim(root, "study", flag="output_dir", identity=cfg.name, lock=".cotdistill.submit.lock"):
        atomic_write_json(layout(cfg).config, cfg.model_dump())
        plan = plan_jobs(cfg, active_cells(root))
        if ex == "slurm":
            if not plan.to_run:
                return Submission("slurm", [], plan)
            return submit_slurm(cfg, plan)
        # the Ray driver runs the study to its end, holding the submission lock as a local run holds its own
        results: dict[str, Any] = {}
        if plan.to_run:
            from .study import _CellWatch

            cells = [c for g in plan.groups.values() for c in g]
            with _CellWatch(cfg, cells, progress=progress if progress is not None else True, console=console) as view:
                results = run_ray(cfg, plan, progress=view.refresh)
        from .study import merge_results

        merge_results(cfg)
        return Submission("ray", [{"kind": "cells", "tasks": list(results), "results": results}], plan)


def _ray_params(cfg, gpus: int) -> dict[str, Any]:
    return {"num_cpus": cfg.cluster.cpus_per_cell or 1, "num_gpus": gpus,
            "address": cfg.cluster.ray_address or os.environ.get("RAY_ADDRESS") or "auto",
            "max_parallel": cfg.cluster.max_parallel}


@dataclass
class CellState:
    cell: str
    state: str            # done, failed, running, queued, pending, stopped
    stage: str | None = None
    detail: str = ""      # trainer step / loss, queue reason, error
    job: str | None = None
    elapsed_s: float | None = None
    log_tail: list[str] = field(default_factory=list)
    accuracy: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _pid_alive(pid: Any, host: Any) -> bool | None:
    if host and host != socket.gethostname():
        return None  # another machine: unknown
    try:
        os.kill(int(pid), 0)
        return True
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True


def _tail(p: Path, n: int = 5) -> list[str]:
    try:
        with open(p, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 8192))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []
    lines = [ln[:300] for ln in lines if ln.strip()]
    failed = [i for i, ln in enumerate(lines) if ln.startswith("FAILED in stage")]
    if failed:  # the error line, then the end of its traceback
        i = failed[-1]
        return [lines[i], *lines[max(i + 1, len(lines) - (n - 1)):]]
    return lines[-n:]


def study_status(out: str | os.PathLike) -> list[CellState]:
    """Every cell's state (done with its accuracy, failed with its stage, error and last log lines,
    running with its stage and the trainer's step and loss, queued with its job and Slurm's reason,
    pending), from the study directory and the scheduler, for local and cluster runs alike."""
    from .records import read_cell_result
    from .study import STAGES, _read_json, expand_cells, layout, load_written_study, plan_study, prepare_log
    from .train import PROGRESS_FILE

    d = Path(out).expanduser()
    cfg = load_written_study(d)
    subs = read_submissions(d)
    jobs = _task_jobs(subs)
    slurm_ids = {str(s["job"]) for s in subs if s.get("executor") == "slurm"}
    queue = slurm_states(slurm_ids) if slurm_ids else {}
    ray_drivers = [s.get("driver") or {} for s in subs if s.get("executor") == "ray"]
    ray_alive = bool(ray_drivers) and _pid_alive(ray_drivers[-1].get("pid"), ray_drivers[-1].get("host")) is not False
    plans = {p.cell.id: p for p in plan_study(cfg)}
    now = time.time()
    rows = []
    for c in expand_cells(cfg):
        cl = layout(cfg).cell(c.id)
        p = plans[c.id]
        st = _read_json(cl.dir / "status.json") or {}
        job = jobs.get(c.id) or st.get("job")
        res = read_cell_result(cl.result)
        row = CellState(c.id, "pending", job=job)
        q = queue.get(job or "", None)
        if len(p.done) == len(STAGES) and res is not None and res.status == "ok":
            row.state, row.accuracy = "done", res.get("accuracy")
            row.detail = f"accuracy {res.get('accuracy'):.4f}" if res.get("accuracy") is not None else ""
        elif q and q[0] in ("PENDING", "REQUEUED", "CONFIGURING"):
            reason = q[1] if q[1] not in ("None", "") else ""
            row.state = "queued"
            row.detail = "waits for its traces (the generation job)" if reason == "Dependency" else reason
        elif st.get("state") == "running" and (
                (q and q[0] in ("RUNNING", "COMPLETING"))
                or (not q and _pid_alive(st.get("pid"), st.get("host")) is not False and not (job and slurm_ids and not q))):
            row.state, row.stage = "running", st.get("stage")
            row.elapsed_s = round(now - float(st.get("t", now)))
            if row.stage == "train":
                prog = _read_json(cl.dir / "model.partial" / PROGRESS_FILE) or {}
                if prog.get("step") is not None:
                    row.detail = f"step {prog['step']}/{prog.get('max_steps')} loss {prog.get('loss', float('nan')):.3f}"
        elif res is not None and res.status == "failed":
            row.state, row.stage = "failed", res.get("stage")
            row.detail = str(res.get("error") or "")
            row.log_tail = _tail(cl.log)
        elif st.get("state") == "running":
            row.state, row.stage = "stopped", st.get("stage")
            row.detail = "its process ended mid-stage (killed, cancelled or a lost node); submit again to resume"
            row.log_tail = _tail(cl.log)
        elif q and q[0] == "RUNNING":
            row.state, row.stage = "running", "starting"
        elif ray_alive and c.id in jobs:
            row.state = "queued"
        else:
            failed_prep = prepare_log(cfg, c).with_suffix(".failed.json")
            info = _read_json(failed_prep)
            if info:
                row.state, row.stage, row.detail = "failed", info.get("stage"), str(info.get("error"))
                row.log_tail = _tail(prepare_log(cfg, c))
            elif p.done:
                row.detail = f"done: {', '.join(p.done)}"
        rows.append(row)
    return rows


def cancel_study(out: str | os.PathLike) -> list[str]:
    """Cancel what submissions of this study queued and are still running: the Slurm arrays
    (``scancel``) and a Ray driver on this machine (SIGINT). Returns what was cancelled."""
    import signal

    d = Path(out).expanduser()
    subs = read_submissions(d)
    if not subs:
        raise UserError(f"{d}: nothing was submitted from here (no cluster/submissions.jsonl); "
                        "a local run stops with Ctrl-C")
    done = []
    slurm_ids = sorted({str(s["job"]) for s in subs if s.get("executor") == "slurm"})
    if slurm_ids:
        live = {j.split("_")[0] for j in slurm_states(set(slurm_ids))}
        live_ids = [j for j in slurm_ids if j in live]
        if live_ids:
            res = subprocess.run(["scancel", *live_ids], capture_output=True, text=True)
            if res.returncode != 0:
                raise UserError(f"scancel failed: {res.stderr.strip()[:300]}")
            done += [f"slurm job {j}" for j in live_ids]
    for s in subs:
        drv = s.get("driver") or {}
        if s.get("executor") == "ray" and _pid_alive(drv.get("pid"), drv.get("host")):
            os.kill(int(drv["pid"]), signal.SIGINT)
            done.append(f"ray driver pid {drv['pid']}")
    return done
