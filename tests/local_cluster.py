"""Real schedulers on this machine, for the cluster tests: a single-node Slurm (munged, slurmctld,
slurmd from the distribution's packages, a generated ``slurm.conf`` for 127.0.0.1, state in a
temporary directory) and a two-node Ray cluster on loopback inside a network namespace of its own.

``python tests/local_cluster.py slurm DIR`` starts a Slurm in DIR and prints the ``SLURM_CONF`` to
export (``stop`` ends it); the pytest fixtures in ``tests/test_cluster.py`` use the same functions.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

SLURM_BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_missing() -> str | None:
    """Why a local Slurm cannot start here (None when it can)."""
    missing = [b for b in SLURM_BINARIES if shutil.which(b) is None]
    if missing:
        return f"Slurm is not installed ({', '.join(missing)} not found; Debian: apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "a local Slurm needs root here (slurmd runs jobs as their users)"
    return None


@dataclass
class LocalSlurm:
    root: Path
    conf: Path = field(init=False)
    procs: list[subprocess.Popen] = field(default_factory=list)

    def __post_init__(self):
        self.root = Path(self.root)
        self.conf = self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def start(self, cpus: int | None = None, timeout: float = 30.0) -> "LocalSlurm":
        r = self.root
        for d in ("state", "spool", "log", "munge"):
            (r / d).mkdir(parents=True, exist_ok=True)
        os.chmod(r / "munge", 0o700)
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        sock = r / "munge" / "munge.socket"
        self.procs.append(subprocess.Popen(
            ["munged", "--foreground", "--force", f"--key-file={key}", f"--socket={sock}",
             f"--pid-file={r / 'munge' / 'munged.pid'}", f"--log-file={r / 'munge' / 'munged.log'}",
             f"--seed-file={r / 'munge' / 'munged.seed'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        host = socket.gethostname()
        cpus = cpus or os.cpu_count() or 1
        mem_mb = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.9)
        self.conf.write_text("\n".join([
            "ClusterName=cotdistill-test",
            f"SlurmctldHost={host}(127.0.0.1)",
            "SlurmUser=root", "SlurmdUser=root",
            f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
            f"AuthInfo=socket={sock}",
            f"StateSaveLocation={r / 'state'}", f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}", f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}", f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none", "JobCompType=jobcomp/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory",
            "ReturnToService=2", "MpiDefault=none", "SchedulerType=sched/backfill",
            "SchedulerParameters=sched_interval=1,bf_interval=1",
            "MinJobAge=300", "KillWait=5", "InactiveLimit=0", "Waittime=0",
            "JobRequeue=1", "PreemptType=preempt/none",
            # a job that asks for no memory gets its CPUs' share, not the whole node (Slurm's default)
            f"DefMemPerCPU={mem_mb // cpus}",
            f"NodeName={host} NodeAddr=127.0.0.1 NodeHostname={host} CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN",
            f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO",
        ]) + "\n")
        deadline = time.time() + timeout
        while not sock.exists() and time.time() < deadline:
            time.sleep(0.1)
        env = self.env
        self.procs.append(subprocess.Popen(["slurmctld", "-D", "-i", "-f", str(self.conf)], env=env,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(0.5)
        self.procs.append(subprocess.Popen(["slurmd", "-D", "-f", str(self.conf)], env=env,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        while time.time() < deadline:
            out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip() in ("idle", "mix", "alloc"):
                return self
            time.sleep(0.3)
        self.stop()
        log = (r / "log" / "slurmctld.log")
        tail = log.read_text()[-800:] if log.exists() else ""
        raise RuntimeError(f"the local Slurm did not come up within {timeout:.0f}s: {tail}")

    def stop(self) -> None:
        subprocess.run(["scancel", "--full", "-u", "root"], env=self.env, capture_output=True)
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs.clear()


def ray_missing() -> str | None:
    """Why a loopback Ray cluster cannot start here (None when it can)."""
    if shutil.which("ray") is None:
        return "Ray is not installed (pip install 'cotdistill[ray]')"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "Ray's tests run in a network namespace of their own: unshare (util-linux) and ip (iproute2) are needed"
    if os.geteuid() != 0:
        return "a network namespace for Ray's tests needs root here"
    return None


RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_DOCKER_CPU_WARNING": "1"}


def ray_script(command: str, port: int = 6380, head_cpus: int = 1, worker_cpus: int = 1) -> list[str]:
    """``command`` run beside a two-node Ray cluster (a head and a worker node on 127.0.0.1), all in a
    new network namespace with only loopback (nothing leaves the machine), the cluster stopped after."""
    body = "\n".join([
        "set -e",
        "ip link set lo up",
        "export RAY_USAGE_STATS_ENABLED=0",
        f"ray start --head --node-ip-address 127.0.0.1 --port {port} --num-cpus {head_cpus} --num-gpus 0 "
        "--disable-usage-stats --include-dashboard false >/dev/null",
        f"ray start --address 127.0.0.1:{port} --node-ip-address 127.0.0.1 --num-cpus {worker_cpus} --num-gpus 0 "
        "--disable-usage-stats >/dev/null",
        f"export RAY_ADDRESS=127.0.0.1:{port}",
        "set +e",
        command,
        "rc=$?",
        "ray stop --force >/dev/null 2>&1",
        "exit $rc",
    ])
    return ["unshare", "-n", "bash", "-c", body]


if __name__ == "__main__":  # pragma: no cover - a helper for trying the cluster executors by hand
    what, where = sys.argv[1], Path(sys.argv[2])
    if what == "slurm":
        s = LocalSlurm(where).start()
        print(f"export SLURM_CONF={s.conf}")
        print("# running; Ctrl-C stops it", file=sys.stderr)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            s.stop()
