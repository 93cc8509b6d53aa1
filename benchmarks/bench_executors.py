"""Wall time of one study through each executor on this machine: local worker processes (``-j 2``),
a single-node Slurm (job arrays through submitit) and a two-node Ray cluster on loopback, all
started here from the distribution's packages / PyPI (tests/local_cluster.py).

    python benchmarks/bench_executors.py --json benchmarks/results/executors_quickstart.json

The study is the embedded quickstart (``--config`` for another); every executor runs it from an
empty output directory with 2 cells at a time and 1 torch thread per cell (``-j 2``;
``--cpus-per-cell 1`` on a 2-CPU Slurm node; Ray: a 1-CPU head and a 1-CPU worker node). Slurm's time
runs from the submission to the last job's end; Ray's is the driver's (cluster start excluded, and
reported). The accuracies of every executor must equal the local run's. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from local_cluster import LocalSlurm, ray_script  # noqa: E402


def cpu_name() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def accuracies(out: Path) -> dict[str, float]:
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines() if x.strip()]
    return {r["cell"]: r["accuracy"] for r in rows if r.get("status") == "ok"}


def study_cmd(cfg: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cotdistill", "study", str(cfg), "--out", str(out), "--no-report", *extra]


def run_local(cfg: Path, out: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(study_cmd(cfg, out, "-j", "2"), check=True, capture_output=True)
    return time.perf_counter() - t0


def run_slurm(cfg: Path, out: Path, tmp: Path) -> dict:
    s = LocalSlurm(tmp / "slurm-engine").start()
    try:
        env = s.env
        t0 = time.perf_counter()
        subprocess.run(study_cmd(cfg, out, "--executor", "slurm", "--cpus-per-cell", "1", "--time", "60"),
                       check=True, capture_output=True, env=env)
        submit_s = time.perf_counter() - t0
        while subprocess.run(["squeue", "-h"], capture_output=True, text=True, env=env).stdout.strip():
            time.sleep(0.5)
        wall = time.perf_counter() - t0
        subprocess.run([sys.executable, "-m", "cotdistill", "report", str(out)], check=True, capture_output=True, env=env)
        return {"wall_s": wall, "submit_s": submit_s}
    finally:
        s.stop()


def run_ray(cfg: Path, out: Path) -> dict:
    inner = (f"{shlex.quote(sys.executable)} -c \"import subprocess,sys,time; t=time.perf_counter(); "
             f"rc=subprocess.call({study_cmd(cfg, out, '--executor', 'ray', '--cpus-per-cell', '1')!r}); "
             f"print('STUDY_WALL', time.perf_counter()-t); sys.exit(rc)\"")
    t0 = time.perf_counter()
    r = subprocess.run(ray_script(inner, port=6450), capture_output=True, text=True,
                       env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    total = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"ray run failed: {r.stderr[-2000:]}")
    wall = float(next(x.split()[1] for x in r.stdout.splitlines() if x.startswith("STUDY_WALL")))
    return {"wall_s": wall, "with_cluster_start_s": total}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, help="study YAML (default: the embedded quickstart)")
    ap.add_argument("--executors", default="local,slurm,ray")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    cfg_ctx = resources.as_file(resources.files("cotdistill") / "configs" / "quickstart.yaml")
    with cfg_ctx as default_cfg, tempfile.TemporaryDirectory() as tmp:
        cfg = args.config or default_cfg
        tmp = Path(tmp)
        res: dict = {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv), "config": str(args.config or "quickstart"),
                     "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
                     "executors": {}}
        accs = {}
        for ex in args.executors.split(","):
            out = tmp / ex
            print(f"{ex} ...", flush=True)
            if ex == "local":
                r = {"wall_s": run_local(cfg, out)}
            elif ex == "slurm":
                r = run_slurm(cfg, out, tmp)
            elif ex == "ray":
                r = run_ray(cfg, out)
            else:
                raise SystemExit(f"unknown executor {ex}")
            accs[ex] = accuracies(out)
            r = {k: round(v, 1) for k, v in r.items()}
            r["cells"] = len(accs[ex])
            res["executors"][ex] = r
            print(f"{ex}: {r}", flush=True)
        base = res["executors"].get("local", {}).get("wall_s")
        for ex, r in res["executors"].items():
            if base:
                r["ratio_vs_local"] = round(r["wall_s"] / base, 3)
            r["same_accuracies_as_local"] = accs[ex] == accs.get("local", accs[ex])
        print(json.dumps(res, indent=1))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
