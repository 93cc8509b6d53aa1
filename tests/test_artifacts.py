"""Run directories through the CLI: each command adds to its own kind of directory, refuses any
other kind with a one-line error (exit 2, nothing changed), and one process writes at a time."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cotdistill.artifacts import check, claim, kind_of
from cotdistill.errors import UserError
from cotdistill.traces import read_traces


def cli(*args: str, cwd: Path | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cotdistill", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


def snapshot(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}


def one_line_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert 1 <= len(lines) <= 6, r.stderr
    for n in needles:
        assert n in r.stderr, (n, r.stderr)


def gen(out: Path, limit: int, levels: str = "3") -> subprocess.CompletedProcess:
    return cli("generate", "--task", "arith", "--teacher", "lab", "--levels", levels, "--limit", str(limit),
               "--out", str(out))


def test_generate_reruns_merge_and_never_drop_earlier_traces(tmp_path):
    out = tmp_path / "gen"
    r = gen(out, 6)
    assert r.returncode == 0
    # no terminal: plain progress lines with count, rate and the final state
    assert "generate lab: 0/6 calls (0 %)" in r.stderr and "generate lab: 6/6 calls (100 %)" in r.stderr
    first = {t.key for t in read_traces(out / "traces.jsonl")}
    assert len(first) == 6 and kind_of(out) == "generate"
    r = gen(out, 3, levels="2")  # fewer items, another level: nothing earlier may go
    assert r.returncode == 0, r.stderr
    after = {t.key for t in read_traces(out / "traces.jsonl")}
    assert first <= after and len(after) == 9


def test_generate_refuses_a_model_directory_and_leaves_it_loadable(tmp_path):
    from cotdistill.students import make_scratch_student

    model, tok = make_scratch_student("scratch:llama-xxs", ["a b c"])
    mdir = tmp_path / "model"
    model.save_pretrained(mdir)
    tok.save_pretrained(mdir)
    before = snapshot(mdir)
    one_line_error(gen(mdir, 2), "is a model directory", "--out")
    assert snapshot(mdir) == before


def test_import_and_curate_refuse_a_generate_run(tmp_path, shared_data):
    out = tmp_path / "gen"
    assert gen(out, 4).returncode == 0
    before = snapshot(out)
    one_line_error(cli("import-paper", str(shared_data / "paper" / "SVAMP_only_ans.json.gz"), "--out", str(out)),
                   "is a `cotdistill generate` run")
    one_line_error(cli("curate", str(out), "--out", str(out / "curated.jsonl"), "--keep", "all", "--no-decontaminate"),
                   "generate")
    one_line_error(cli("curate", str(out / "traces.jsonl"), "--out", str(out), "--keep", "all", "--no-decontaminate"),
                   "generate")
    assert snapshot(out) == before


def test_train_overwrite_replaces_only_a_model_directory(tmp_path):
    out = tmp_path / "gen"
    assert gen(out, 4).returncode == 0
    before = snapshot(out)
    r = cli("train", "--traces", str(out / "traces.jsonl"), "--student", "scratch:llama-xxs", "--out", str(out),
            "--overwrite", "--max-steps", "1")
    one_line_error(r, "not a model directory")
    assert snapshot(out) == before


def test_out_under_a_regular_file_is_a_one_line_error(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("mine\n")
    one_line_error(gen(f / "sub", 2), "is a file")
    one_line_error(gen(f, 2), "is a file")
    assert f.read_text() == "mine\n"


def test_a_non_empty_foreign_directory_is_refused(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    (d / "cat.jpg").write_bytes(b"\xff\xd8")
    one_line_error(gen(d, 2), "did not write")
    assert sorted(p.name for p in d.iterdir()) == ["cat.jpg"]


def test_second_process_on_one_directory_stops_at_once_naming_the_first(tmp_path):
    out = tmp_path / "gen"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom cotdistill.artifacts import claim\n"
         f"with claim({str(out)!r}, 'generate'):\n    print('ready', flush=True)\n    time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        t = time.time()
        r = gen(out, 2)
        one_line_error(r, "in use by another cotdistill process", f"pid {holder.pid}")
        assert time.time() - t < 30
        assert not (out / "traces.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    assert gen(out, 2).returncode == 0  # the kernel released the killed holder's lock


def test_study_refuses_another_studys_directory(tmp_path):
    from cotdistill.study import load_study_config

    base = {"tasks": [{"name": "arith", "options": {"n_train": 64, "n_test": 8}}], "teachers": ["lab"], "levels": [3],
            "students": ["scratch:llama-xxs"], "output_dir": str(tmp_path / "s")}
    a = load_study_config({**base, "name": "first"})
    with claim(a.output_dir, "study", identity="first"):
        pass
    with pytest.raises(UserError, match="named 'first'"):
        load_study_config({**base, "name": "second"})
    assert load_study_config({**base, "name": "first", "levels": [2, 3]}).name == "first"  # extending is fine


def test_evaluate_refuses_a_study_directory(tmp_path):
    d = tmp_path / "s"
    with claim(d, "study", identity="x"):
        pass
    with pytest.raises(UserError, match="is a `cotdistill study` directory"):
        check(d, "evaluate")
    r = cli("evaluate", "--model", "scratch:llama-xxs", "--task", "arith", "--limit", "2", "--out", str(d))
    one_line_error(r, "is a `cotdistill study` directory")


def test_a_second_training_into_the_same_out_stops_at_once(tmp_path):
    out = tmp_path / "model"
    traces = tmp_path / "t.jsonl"
    gen_dir = tmp_path / "gen"
    assert gen(gen_dir, 8).returncode == 0
    traces.write_text((gen_dir / "traces.jsonl").read_text())
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import time\nfrom cotdistill.artifacts import hold\n"
         f"with hold({str(tmp_path / '.model.lock')!r}, 'x'):\n    print('ready', flush=True)\n    time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        r = cli("train", "--traces", str(traces), "--student", "scratch:llama-xxs", "--max-steps", "2",
                "--out", str(out))
        one_line_error(r, "in use by another cotdistill process", f"pid {holder.pid}")
        assert not out.exists() and not (tmp_path / "model.partial").exists()
    finally:
        holder.kill()
        holder.wait()


def test_content_keys_keep_their_stored_values():
    """Keys already on disk must not move: a changed canonical form would orphan every cached
    stage and every paid teacher call. These values were computed before the keys had one home."""
    from cotdistill.artifacts import content_key
    from cotdistill.store import content_key as call_key
    from cotdistill.study import content_hash

    obj = {"teacher": "openai:gpt-4o", "messages": [{"role": "user", "content": "Ben has 5 pens × 2"}], "n": 1}
    assert content_hash(obj, 16) == content_key(obj, 16) == hashlib.sha256(
        json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
    assert call_key(obj) == hashlib.sha256(
        json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")).hexdigest()
    assert content_key(obj, compact=False) == hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def test_completion_records_its_key_and_older_markers_still_count(tmp_path):
    from cotdistill.artifacts import completed_key, is_complete, mark_complete, model_key

    d = tmp_path / "stage"
    d.mkdir()
    assert not is_complete(d) and completed_key(d) is None
    mark_complete(d, "k1", traces=3)
    assert is_complete(d) and is_complete(d, "k1") and not is_complete(d, "k2") and completed_key(d) == "k1"
    old = tmp_path / "old"
    old.mkdir()
    (old / "DONE").write_text("{}")  # a study's generate cache written before COMPLETE
    assert is_complete(old) and not is_complete(old, "k1")
    (tmp_path / "w.gguf").write_bytes(b"x" * 10)
    k = model_key(tmp_path / "w.gguf")
    os.utime(tmp_path / "w.gguf", ns=(1, 1))
    assert model_key(tmp_path / "w.gguf") != k and model_key("org/hub-model") == "org/hub-model"


def test_evaluate_refuses_stale_predictions_of_a_model_retrained_at_the_same_path(tmp_path):
    """evaluate resumes an interrupted evaluation of the same model, but a model retrained into the
    same directory is another evaluation: refused in one line, and --overwrite starts over."""
    from cotdistill.artifacts import completed_key
    from cotdistill.evaluate import evaluate
    from cotdistill.tasks import get_task
    from cotdistill.train import TrainConfig, train

    task = get_task("arith", n_train=64, n_test=4)
    from cotdistill.generate import generate

    traces = generate(task.load("train")[:16], tmp_path / "gen", teacher="lab", levels=[3], formats=["cot"],
                      progress=False).traces
    model = tmp_path / "model"
    cfg = TrainConfig.scratch(max_steps=1, batch_size=4, threads=1)
    train(traces, "scratch:llama-xxs", model, cfg, progress=False)
    first = completed_key(model)
    test = task.load("test")
    evaluate(str(model), test[:2], out_dir=tmp_path / "eval", max_new_tokens=8, progress=False)
    m = evaluate(str(model), test, out_dir=tmp_path / "eval", max_new_tokens=8, progress=False)  # resumes
    assert m["n"] == 4 and m["n_generated_this_run"] == 2
    train(traces, "scratch:llama-xxs", model, cfg.with_overrides(seed=cfg.seed + 1), progress=False, overwrite=True)
    assert completed_key(model) != first
    with pytest.raises(UserError, match="the model at this path changed since"):
        evaluate(str(model), test, out_dir=tmp_path / "eval", max_new_tokens=8, progress=False)
    m = evaluate(str(model), test, out_dir=tmp_path / "eval", max_new_tokens=8, progress=False, overwrite=True)
    assert m["n_generated_this_run"] == 4


def test_run_record_resumes_the_same_identity_and_names_what_differs(tmp_path):
    """One record per resumable stage: the identity fields and their key; a rerun with another
    identity is told which fields differ; older records are upgraded or compared by key."""
    from cotdistill.artifacts import RunRecord, content_key
    from cotdistill.errors import UserError

    ident = {"model": "m", "task": "svamp", "decoding": "greedy"}
    r = RunRecord(tmp_path / "rec.json", ident)
    assert r.differences() == [] and r.stored() is None
    r.write()
    assert json.loads((tmp_path / "rec.json").read_text()) == {**ident, "key": content_key(ident)}
    assert RunRecord(tmp_path / "rec.json", dict(ident)).differences() == []
    assert RunRecord(tmp_path / "rec.json", {**ident, "decoding": "beam:4", "task": "gsm8k"}).differences() == ["task", "decoding"]
    # a field an older record did not hold: compared only when it is not optional
    assert RunRecord(tmp_path / "rec.json", {**ident, "model_key": "k"}, optional=("model_key",)).differences() == []
    assert RunRecord(tmp_path / "rec.json", {**ident, "model_key": "k"}).differences() == ["model_key"]
    # exact: a recorded field that is no longer part of the identity differs; upgrade fills added fields
    assert RunRecord(tmp_path / "rec.json", {"model": "m", "task": "svamp"}, exact=True).differences() == ["decoding"]
    up = RunRecord(tmp_path / "rec.json", {**ident, "new": 1}, exact=True, upgrade=lambda rec: {"new": 1, **rec})
    assert up.differences() == []
    # a key-only record (older training runs) is compared by key
    (tmp_path / "key.json").write_text(json.dumps({"key": content_key(ident, compact=False)}))
    assert RunRecord(tmp_path / "key.json", ident, compact=False).differences() == []
    assert RunRecord(tmp_path / "key.json", {**ident, "task": "x"}, compact=False).differences() == ["key"]
    (tmp_path / "bad.json").write_text("{torn")
    with pytest.raises(UserError, match=r"bad.json is corrupt: delete it or start over with overwrite"):
        RunRecord(tmp_path / "bad.json", ident).differences()
