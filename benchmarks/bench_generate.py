"""Generation throughput against a local OpenAI-compatible server with a fixed latency.

Reports, for each concurrency C, calls/s and the ratio to the ideal bound
``ceil(N / C) * latency`` seconds (1.0 = no overhead), plus a concurrency-1 baseline measured in
the same run. The server (tests/openai_server.py) runs in its own process.

    python benchmarks/bench_generate.py --latency 0.2 --calls 512 --concurrency 1,8,32,64
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "openai_server.py"), "--port", "0", "--latency", str(latency)],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    if not line.startswith("serving "):
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, line.split()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.2, help="server latency per call (s)")
    ap.add_argument("--calls", type=int, default=512)
    ap.add_argument("--baseline-calls", type=int, default=16, help="calls for the concurrency-1 baseline")
    ap.add_argument("--concurrency", default="8,32,64")
    ap.add_argument("--json", default=None, help="write results here")
    a = ap.parse_args()

    from cotdistill.generate import GenerateConfig, generate
    from cotdistill.tasks.base import Example

    def examples(n: int, tag: str) -> list[Example]:
        return [Example(id=f"{tag}{i}", task="bench", split="train", question=f"Bench question {tag}{i}: 2 + {i}?",
                        answer=str(2 + i), answer_type="number") for i in range(n)]

    srv, url = start_server(a.latency)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as d:  # warm-up: imports, first connection (not measured)
            generate(examples(4, "warm-"), d, GenerateConfig(teacher="openai:bench", base_url=url, api_key="bench-key",
                                                             levels=[3], concurrency=4, hint_gold=True), progress=False)
        runs = [(1, a.baseline_calls)] + [(int(c), a.calls) for c in a.concurrency.split(",")]
        for conc, n in runs:
            with tempfile.TemporaryDirectory() as d:
                cfg = GenerateConfig(teacher="openai:bench", base_url=url, api_key="bench-key", levels=[3],
                                     formats=["cot"], concurrency=conc, hint_gold=True, timeout=30)
                exs = examples(n, f"c{conc}-")
                t0 = time.perf_counter()
                res = generate(exs, d, cfg, progress=False)
                wall = time.perf_counter() - t0
                assert res.done == n and not res.failed, (res.done, len(res.failed))
            ideal = math.ceil(n / conc) * a.latency
            rows.append({"concurrency": conc, "calls": n, "wall_s": round(wall, 3), "calls_per_s": round(n / wall, 2),
                         "ideal_s": round(ideal, 3), "ratio_to_ideal": round(ideal / wall, 3)})
            print(f"C={conc:>3}  calls={n:>4}  wall={wall:7.2f}s  ideal={ideal:6.2f}s  "
                  f"ratio={ideal / wall:.2f}  {n / wall:7.1f} calls/s", flush=True)
    finally:
        srv.kill()
        srv.wait()
    base = rows[0]["calls_per_s"]
    for r in rows:
        r["speedup_vs_c1"] = round(r["calls_per_s"] / base, 2)
    machine = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
               "loadavg_1m": round(os.getloadavg()[0], 2)}
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))
    print("machine:", json.dumps(machine))
    print("speedup vs C=1:", ", ".join(f"C={r['concurrency']}: {r['speedup_vs_c1']}x" for r in rows))
    if a.json:
        Path(a.json).write_text(json.dumps({"command": sys.argv, "machine": machine, "latency": a.latency, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
