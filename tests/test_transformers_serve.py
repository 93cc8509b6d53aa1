"""A real third-party OpenAI-compatible server: `transformers serve` with SmolLM2-135M-Instruct on
the CPU, as the teacher of `cotdistill generate` (the plain, non-reasoning path)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not (importlib.util.find_spec("fastapi") and importlib.util.find_spec("uvicorn")) or not shutil.which("transformers"),
    reason="`transformers serve` needs fastapi and uvicorn (pip install -e '.[dev]')")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(smollm2_path, tmp_path_factory):
    """SmolLM2 saved as a plain model directory (the server loads directories), served on a free port."""
    import torch

    from cotdistill.students import load_pretrained

    d = tmp_path_factory.mktemp("smol") / "SmolLM2-135M-Instruct"
    model, tok = load_pretrained("smollm2-135m")
    model.config.architectures = [type(model).__name__]
    model.to(torch.bfloat16).save_pretrained(d)
    tok.save_pretrained(d)
    port = _free_port()
    log = open(d.parent / "serve.log", "w")
    proc = subprocess.Popen(["transformers", "serve", str(d), "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail("transformers serve did not start: " + (d.parent / "serve.log").read_text()[-2000:])
            time.sleep(0.5)
        yield url, str(d)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_generate_against_transformers_serve_writes_traces_and_resumes_without_new_calls(served, tmp_path):
    url, model = served
    out = tmp_path / "gen"
    env = {**os.environ, "OPENAI_API_KEY": "sk-test-not-a-real-key"}
    cmd = [sys.executable, "-m", "cotdistill", "generate", "--task", "arith", "--teacher", f"openai:{model}",
           "--base-url", url + "/v1", "--levels", "1,3", "--limit", "2", "--max-tokens", "24", "--concurrency", "2",
           "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(x) for x in (out / "traces.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {r["level"] for r in rows} == {1, 3}
    for t in rows:
        assert t["output"].strip() and t["teacher"] == f"openai:{model}"
        assert t["usage"]["prompt_tokens"] > 0 and 0 < t["usage"]["completion_tokens"] <= 24
        assert t["finish_reason"] in ("stop", "length")
    again = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "0 new, 4 cached" in again.stdout.replace("\n", " ")
    assert [json.loads(x) for x in (out / "traces.jsonl").read_text().splitlines()] == rows
    assert "sk-test-not-a-real-key" not in "".join(p.read_text() for p in out.rglob("*") if p.is_file())
