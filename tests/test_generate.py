"""generate(): resumable, crash-safe teacher generation, end to end against a real local server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from openai_server import FakeOpenAIServer, prompt_key

from cotdistill.generate import GenerateConfig, dry_run, generate
from cotdistill.prompts import build_messages
from cotdistill.store import Store, content_key
from cotdistill.tasks.base import Example
from cotdistill.traces import read_traces

KEY = "sk-live-0123456789abcdefSECRET"


def _examples(n: int) -> list[Example]:
    return [Example(id=f"ex{i}", task="svamp", split="train", question=f"Sam has {i} cards and buys {i + 3} more. How many?",
                    answer=str(2 * i + 3), answer_type="number") for i in range(n)]


def _cfg(srv, **kw) -> GenerateConfig:
    base = dict(teacher="openai:fake", base_url=srv.base_url, api_key=KEY, levels=[1, 3], formats=["cot", "subq"],
                hint_gold=True, timeout=0.6, backoff_base=0.01, backoff_max=0.05, concurrency=8)
    return GenerateConfig(**{**base, **kw})


def _server_key(ex: Example, level: int, fmt: str, max_tokens: int = 1024) -> str:
    """The key the test server logs for the request the client sends for (ex, level, fmt)."""
    return prompt_key({"model": "fake", "messages": build_messages(ex, level, fmt, hint_gold=True),
                       "temperature": 0.0, "top_p": 1.0, "max_tokens": max_tokens, "n": 1})


def _files_text(d: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in d.rglob("*") if p.is_file())


def test_lab_teacher_end_to_end_in_fixed_order(tmp_path):
    pytest.importorskip("cotdistill.tasks.arith")
    from cotdistill.tasks import get_task

    exs = get_task("arith").load("test")[:7]
    res = generate(exs, tmp_path, teacher="lab", levels="0-6", formats="cot,sym", progress=False)
    assert len(res.traces) == 7 * (1 + 6 * 2) and not res.failed  # level 0 (the gold answer) has one form
    assert [(t.id, t.level, t.format) for t in res.traces][:3] == [(exs[0].id, 0, "cot"), (exs[0].id, 1, "cot"), (exs[0].id, 1, "sym")]
    assert all(t.correct for t in res.traces)
    l0 = [t for t in res.traces if t.level == 0]
    assert all(t.output == f"The answer is {t.gold}." for t in l0)
    assert read_traces(res.traces_path) == res.traces
    rows = {(r["level"], r["format"]): r for r in res.summary}
    assert rows[(6, "cot")]["mean_words"] > rows[(2, "cot")]["mean_words"] and rows[(3, "sym")]["rows"] == 7


def test_faults_lose_nothing_and_a_rerun_calls_nothing(tmp_path):
    faults = ["ok", "429", "500", "503", "drop", "stall", "malformed", "empty"]
    exs = _examples(12)
    with FakeOpenAIServer(faults=faults, stall_s=1.2, api_key=KEY) as srv:
        res = generate(exs, tmp_path, _cfg(srv), progress=False)
        assert len(res.traces) == 12 * 2 * 2 and not res.failed and res.done == 48 and res.cached == 0
        assert all(t.correct and t.usage["completion_tokens"] > 0 for t in res.traces)
        assert {e["outcome"] for e in srv.log} >= set(faults)
        assert len(srv.outcomes("ok")) == 48  # no completed call was made twice
        n_log = len(srv.log)
        res2 = generate(exs, tmp_path, _cfg(srv), progress=False)
        assert len(srv.log) == n_log  # everything came from the store
        assert res2.cached == 48 and res2.done == 0
        assert [t.model_dump() for t in res2.traces] == [t.model_dump() for t in res.traces]
        # more levels later: only the new cells are called
        res3 = generate(exs, tmp_path, _cfg(srv, levels=[1, 3, 5]), progress=False)
        assert res3.cached == 48 and res3.done == 24 and len(srv.outcomes("ok")) == 72
    assert KEY not in _files_text(tmp_path)


def test_failed_items_are_recorded_and_retried_next_run(tmp_path):
    exs = _examples(6)
    with FakeOpenAIServer(faults=["ok", "503"], fault_attempts=99) as srv:
        res = generate(exs, tmp_path, _cfg(srv, max_retries=1, levels=[2], formats=["cot"]), progress=False)
        assert len(res.traces) == 3 and len(res.failed) == 3
        assert all("HTTP 503" in f["error"] for f in res.failed)
        failed_lines = (tmp_path / "failed.jsonl").read_text().splitlines()
        assert len(failed_lines) == 3
        assert res.summary[0]["failed"] == 3 and res.summary[0]["rows"] == 3
    with FakeOpenAIServer() as srv2:  # the server recovered
        res2 = generate(exs, tmp_path, _cfg(srv2, max_retries=1, levels=[2], formats=["cot"]), progress=False)
        assert len(res2.traces) == 6 and not res2.failed and res2.cached == 3 and res2.done == 3
        assert len(srv2.log) == 3  # only the failed ones were asked again
    assert (tmp_path / "failed.jsonl").read_text() == ""


def test_samples_are_separate_calls_and_cached_separately(tmp_path):
    exs = _examples(3)
    with FakeOpenAIServer() as srv:
        cfg = _cfg(srv, levels=[0, 2], formats=["cot"], samples=2, temperature=0.7, seed=5)
        res = generate(exs, tmp_path, cfg, progress=False)
        assert res.done == 6 and len(res.traces) == 3 + 6  # level 0 once per item
        assert sorted({b["seed"] for b in srv.bodies}) == [5, 6]
        assert [t.sample for t in res.traces if t.id == "ex0"] == [0, 0, 1]
        assert generate(exs, tmp_path, cfg, progress=False).cached == 6 and len(srv.log) == 6


def test_dry_run_calls_nothing(tmp_path):
    with FakeOpenAIServer() as srv:
        est = dry_run(_examples(5), _cfg(srv, levels=[0, 1, 6]), tmp_path)
        assert srv.log == []
    assert est["total"]["calls"] == 5 * 2 * 2  # level 0 needs no call
    assert est["total"]["prompt_tokens"] > 0 and est["total"]["completion_tokens"] > 0
    assert est["total"]["cost"] is None
    est = dry_run(_examples(5), _cfg(srv, levels=[1], price_in=2.5, price_out=10.0))
    assert est["total"]["cost"] > 0


def test_store_tolerates_a_torn_last_line(tmp_path):
    p = tmp_path / "calls.jsonl"
    st = Store(p)
    st.put("a", {"status": "ok", "output": "x"})
    st.put("b", {"status": "error", "error": "HTTP 500"})
    st.close()
    with open(p, "a") as f:
        f.write('{"key": "c", "status": "ok", "outp')  # killed mid-write
    st = Store(p)
    assert st.torn_lines == 1 and st.ok("a") and st.get("b")["status"] == "error" and st.get("c") is None
    st.put("b", {"status": "ok", "output": "y"})  # a later success supersedes the failure
    st.close()
    st = Store(p)
    assert st.ok("b")["output"] == "y" and len(st) == 2 and st.torn_lines == 0
    assert all(json.loads(line) for line in p.read_text().splitlines())
    assert content_key({"b": 1, "a": [1, 2]}) == content_key({"a": [1, 2], "b": 1})


# --------------------------------------------------------------------------- real subprocesses
def _cli(out: Path, srv, *extra: str, key: str = KEY) -> list[str]:
    cfg = out.parent / f"{out.name}-gen.yaml"
    cfg.write_text("backoff_base: 0.02\nbackoff_max: 0.1\n")  # fast retries (also exercises --config)
    return [sys.executable, "-m", "cotdistill", "generate", "--config", str(cfg), "--task", "arith", "--teacher", "openai:fake", "--split", "test",
            "--levels", "1-3", "--formats", "cot,sym", "--limit", "20", "--concurrency", "4", "--hint-gold",
            "--timeout", "2", "--out", str(out), *extra]


def _env(srv, key: str = KEY) -> dict[str, str]:
    return {**os.environ, "OPENAI_API_KEY": key, "OPENAI_BASE_URL": srv.base_url, "COLUMNS": "120"}


def _wait_lines(path: Path, n: int, proc, timeout: float = 60) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if path.exists() and path.read_text().count("\n") >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"generate ended early: {proc.communicate()}")
        time.sleep(0.01)
    raise AssertionError("generate made no progress")


@pytest.mark.slow
def test_sigkill_then_rerun_repeats_no_completed_call(tmp_path):
    pytest.importorskip("cotdistill.tasks.arith")
    from cotdistill.tasks import get_task

    exs = get_task("arith").load("test")[:20]
    with FakeOpenAIServer(latency=0.03, faults=["ok", "ok", "429", "500"], api_key=KEY) as srv:
        # reference: one uninterrupted run
        ref = subprocess.run(_cli(tmp_path / "ref", srv), env=_env(srv), capture_output=True, text=True, timeout=120)
        assert ref.returncode == 0, ref.stderr
        expected_keys = {_server_key(e, lv, f) for e in exs for lv in (1, 2, 3) for f in ("cot", "sym")}
        assert set(srv.outcomes("ok")) == expected_keys  # the test's key helper matches what the client sends
        srv.log.clear()
        srv._order.clear()
        srv._attempts.clear()

        out = tmp_path / "run"
        proc = subprocess.Popen(_cli(out, srv), env=_env(srv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_lines(out / "calls.jsonl", 25, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        t_kill = time.time()
        assert proc.returncode == -signal.SIGKILL
        st = Store(out / "calls.jsonl")
        stored = {(r["id"], r["level"], r["format"]) for r in st.records() if r["status"] == "ok"}
        st.close()
        assert 25 <= len(stored) < 120
        by_id = {e.id: e for e in exs}
        stored_server_keys = {_server_key(by_id[i], lv, f) for i, lv, f in stored}

        again = subprocess.run(_cli(out, srv), env=_env(srv), capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
        after = {e["key"] for e in srv.log if e["t"] > t_kill}
        assert not (after & stored_server_keys), "a call completed before the kill was repeated"
        assert set(srv.outcomes("ok")) == expected_keys
    assert (out / "traces.jsonl").read_text() == (tmp_path / "ref" / "traces.jsonl").read_text()
    assert "120 traces" in again.stdout and "cached" in again.stdout
    for text in (ref.stdout, ref.stderr, again.stdout, again.stderr, _files_text(tmp_path)):
        assert KEY not in text


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path):
    pytest.importorskip("cotdistill.tasks.arith")
    with FakeOpenAIServer(latency=0.05) as srv:
        # a child inherits an ignored SIGINT from its parent (the test runner may hold one): the
        # user's terminal delivers it to a process with the default disposition
        proc = subprocess.Popen(_cli(tmp_path, srv), env=_env(srv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        _wait_lines(tmp_path / "calls.jsonl", 5, proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, (out, err)
        assert "rerun the same command to resume" in err and "Traceback" not in err
        n_done = Store(tmp_path / "calls.jsonl")
        assert 5 <= len(n_done) < 120
        again = subprocess.run(_cli(tmp_path, srv), env=_env(srv), capture_output=True, text=True, timeout=120)
        assert again.returncode == 0 and "120 traces" in again.stdout
        assert len(srv.outcomes("ok")) <= 120 + 4  # at most the calls in flight at Ctrl-C are repeated


def test_cli_summary_and_bad_key(tmp_path):
    pytest.importorskip("cotdistill.tasks.arith")
    with FakeOpenAIServer(api_key=KEY) as srv:
        r = subprocess.run(_cli(tmp_path / "a", srv, "--limit", "3", "--levels", "0,2", "--price-in", "2.5",
                                "--price-out", "10"), env=_env(srv), capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        for word in ("level", "correct %", "mean words", "cost $", "9 traces", "6 new"):
            assert word in r.stdout, (word, r.stdout)
        cfg = json.loads((tmp_path / "a" / "config.json").read_text())
        assert cfg["api_key"] is None and cfg["levels"] == [0, 2]
        bad = subprocess.run(_cli(tmp_path / "b", srv, "--limit", "3"), env=_env(srv, key="sk-wrong-key-999999"),
                             capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error: ") and "401" in bad.stderr
    assert "sk-wrong-key-999999" not in bad.stderr + bad.stdout + _files_text(tmp_path)
    assert "Traceback" not in bad.stderr


def test_a_refused_request_stops_the_run_once_with_the_servers_message(tmp_path):
    from openai_server import BAD_REQUEST

    with FakeOpenAIServer(api_key=KEY, faults=["400"], fault_attempts=100) as srv:
        r = subprocess.run(_cli(tmp_path / "a", srv), env=_env(srv), capture_output=True, text=True, timeout=120)
        n_requests = len(srv.outcomes("400"))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "HTTP 400" in last and BAD_REQUEST in last and srv.base_url in last
    assert n_requests <= 4  # the first wave (concurrency 4), not 120 items x 7 attempts


def test_an_unreachable_server_stops_after_the_first_wave_naming_the_url(tmp_path):
    import socket
    import time

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    env = {**os.environ, "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": url}
    cfg = tmp_path / "gen.yaml"
    cfg.write_text("backoff_base: 1\nbackoff_max: 5\n")
    t = time.time()
    r = subprocess.run([sys.executable, "-m", "cotdistill", "generate", "--config", str(cfg), "--task", "arith",
                        "--teacher", "openai:fake", "--levels", "1-3", "--limit", "20", "--concurrency", "4",
                        "--out", str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot connect") and url in last and "OPENAI_BASE_URL" in last
    assert "Traceback" not in r.stderr
    assert time.time() - t < 30  # no backoff ladder of 7 attempts per item


def test_max_cost_stops_launching_calls_and_keeps_the_paid_ones(tmp_path):
    """--max-cost: the run stops before the budget would be exceeded, every call made is stored,
    the rest is listed as not run, and a rerun with a larger budget pays none of them again."""
    with FakeOpenAIServer(api_key=KEY) as srv:
        # every call costs about the same (prompt ~ 200 tokens at $1000 per 1M = ~$0.2)
        args = ["--levels", "1", "--formats", "cot", "--limit", "20", "--price-in", "1000", "--price-out", "1000"]
        r = subprocess.run(_cli(tmp_path / "a", srv, *args, "--max-cost", "2"), env=_env(srv), capture_output=True,
                           text=True, timeout=120)
        first = len(srv.outcomes("ok"))
        summ = json.loads((tmp_path / "a" / "summary.json").read_text())
        assert summ["stopped_at_max_cost"] is True and 0 < summ["cost_usd_this_run"] <= 2.0
        assert 0 < first < 20 and summ["done"] == first
        assert "stopped before --max-cost $2" in r.stderr
        failed = [json.loads(x) for x in (tmp_path / "a" / "failed.jsonl").read_text().splitlines()]
        assert len(failed) == 20 - first and failed[0]["error"] == "not run (--max-cost reached)"
        r2 = subprocess.run(_cli(tmp_path / "a", srv, *args, "--max-cost", "100"), env=_env(srv), capture_output=True,
                            text=True, timeout=120)
        assert r2.returncode == 0, r2.stderr
        assert len(srv.outcomes("ok")) == 20  # the paid calls were not made again


def test_long_reasoning_traces_are_rewritten_at_granularity_levels(tmp_path):
    """The offline reasoning teacher (lab:think) writes long reasoning apart from its answer;
    `generate --from-traces` rewrites those traces at levels 1-6 with any teacher, keeps the final
    answer (checked against gold) and records what each rewrite came from."""
    from cotdistill.traces import read_traces

    long_dir = tmp_path / "long"
    r = subprocess.run([sys.executable, "-m", "cotdistill", "generate", "--task", "arith", "--teacher", "lab:think",
                        "--levels", "3", "--limit", "6", "--out", str(long_dir)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    long = read_traces(long_dir / "traces.jsonl")
    assert len(long) == 6 and all(t.reasoning and "backtrack" in t.reasoning and t.correct for t in long)
    out = tmp_path / "rewritten"
    r = subprocess.run([sys.executable, "-m", "cotdistill", "generate", "--from-traces", str(long_dir / "traces.jsonl"),
                        "--teacher", "lab", "--levels", "1,3,6", "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rew = read_traces(out / "traces.jsonl")
    assert len(rew) == 18 and all(t.correct for t in rew) and {t.level for t in rew} == {1, 3, 6}
    assert all(t.source == "rewrite by lab of lab:think L3 cot" for t in rew)
    # an API teacher sees the long rationale to rewrite in its prompt
    with FakeOpenAIServer(api_key=KEY) as srv:
        r = subprocess.run([sys.executable, "-m", "cotdistill", "generate", "--from-traces", str(long_dir / "traces.jsonl"),
                            "--teacher", "openai:fake", "--levels", "2", "--hint-gold", "--out", str(tmp_path / "api")],
                           env=_env(srv), capture_output=True, text=True, timeout=120)
        bodies = list(srv.bodies)
    assert r.returncode == 0, r.stderr
    assert len(bodies) == 6
    last_user = [b["messages"][-1]["content"] for b in bodies]
    assert all("A solution to rewrite" in u and "I backtrack" in u for u in last_user)
    assert "Rewrite the given solution" in bodies[0]["messages"][0]["content"]
    # a file with several cells of one example is refused
    both = tmp_path / "both.jsonl"
    both.write_text((long_dir / "traces.jsonl").read_text() + (out / "traces.jsonl").read_text())
    r = subprocess.run([sys.executable, "-m", "cotdistill", "generate", "--from-traces", str(both), "--teacher", "lab",
                        "--levels", "2", "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert r.returncode == 2 and "several traces of arith/" in r.stderr
