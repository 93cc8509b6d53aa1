"""The bad-input contract, on a corpus of cases run through the CLI as a user runs it: a one-line
``error:`` naming the file, field or server and the fix, exit code 2, at most 6 lines on stderr, no
traceback, and every file that existed before is unchanged."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

HERE = Path(__file__).resolve().parent


def _trace(teacher="lab", level=3, fmt="cot", i=0, task="arith"):
    return json.dumps({"id": str(i), "task": task, "question": f"Ann has {i} pens. How many?", "gold": str(i),
                       "teacher": teacher, "level": level, "format": fmt, "output": f"{i}. The answer is {i}."})


def traces_file(d: Path, name="traces.jsonl", cells=((("lab", 3, "cot"),))) -> Path:
    p = d / name
    p.write_text("".join(_trace(*c, i=i) + "\n" for c in cells for i in range(4)))
    return p


def study_yaml(d: Path, extra: str = "", name: str = "s") -> Path:
    p = d / f"{name}.yaml"
    p.write_text(f"name: {name}\noutput_dir: {d / 'study-out'}\ntasks: [{{name: arith, options: {{n_train: 20, n_test: 5}}}}]\n"
                 f"teachers: [lab]\nlevels: [3]\nstudents: ['scratch:llama-xxs']\n" + extra)
    return p


def model_dir(d: Path) -> Path:
    m = d / "model"
    m.mkdir()
    (m / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    (m / "model.safetensors").write_bytes(b"\0" * 16)
    return m


def gen_run(d: Path) -> Path:
    g = d / "gen"
    g.mkdir()
    traces_file(g)
    (g / "calls.jsonl").write_text("")
    (g / "failed.jsonl").write_text("")
    (g / "config.json").write_text("{}")
    return g


def a_file(d: Path) -> Path:
    f = d / "notes.txt"
    f.write_text("keep me\n")
    return f


# each case: (id, setup(tmp) -> argv, words the error must contain)
Case = tuple[str, Callable[[Path], list[str]], tuple[str, ...]]
CASES: list[Case] = [
    # generate
    ("gen-unknown-task", lambda d: ["generate", "--task", "nosuch", "--teacher", "lab", "--out", str(d / "o")], ("nosuch",)),
    ("gen-level-9", lambda d: ["generate", "--task", "arith", "--teacher", "lab", "--levels", "9", "--out", str(d / "o")], ("9",)),
    ("gen-level-word", lambda d: ["generate", "--task", "arith", "--teacher", "lab", "--levels", "fine", "--out", str(d / "o")], ("fine",)),
    ("gen-format", lambda d: ["generate", "--task", "arith", "--teacher", "lab", "--formats", "xml", "--out", str(d / "o")], ("xml",)),
    ("gen-backend", lambda d: ["generate", "--task", "arith", "--teacher", "foo:bar", "--out", str(d / "o")], ("foo",)),
    ("gen-out-under-file", lambda d: ["generate", "--task", "arith", "--teacher", "lab", "--limit", "2", "--out", str(a_file(d) / "x")], ("is a file",)),
    ("gen-out-model", lambda d: ["generate", "--task", "arith", "--teacher", "lab", "--limit", "2", "--out", str(model_dir(d))], ("model directory",)),
    ("gen-out-foreign", lambda d: ["generate", "--task", "arith", "--teacher", "lab", "--limit", "2", "--out", str(a_file(d).parent)], ("did not write",)),
    ("gen-config-missing", lambda d: ["generate", "--config", str(d / "nope.yaml"), "--task", "arith", "--teacher", "lab", "--out", str(d / "o")], ("nope.yaml",)),
    ("gen-config-unknown-key", lambda d: ["generate", "--config", str(_write(d / "g.yaml", "temprature: 0.5\n")), "--task", "arith", "--teacher", "lab", "--out", str(d / "o")], ("temprature",)),
    ("gen-config-duplicate-key", lambda d: ["generate", "--config", str(_write(d / "g.yaml", "temperature: 0.5\ntemperature: 0.7\n")), "--task", "arith", "--teacher", "lab", "--out", str(d / "o")], ("g.yaml:2", "twice")),
    ("gen-config-not-utf8", lambda d: ["generate", "--config", str(_write(d / "g.yaml", b"temperature: 0.5 \xff\xfe\n")), "--task", "arith", "--teacher", "lab", "--out", str(d / "o")], ("UTF-8",)),
    ("gen-limit-0", lambda d: ["generate", "--task", "arith", "--teacher", "lab", "--limit", "0", "--out", str(d / "o")], ("limit",)),
    ("gen-max-cost-no-price", lambda d: ["generate", "--task", "arith", "--teacher", "openai:my-model", "--max-cost", "1", "--out", str(d / "o")], ("--price-in",)),
    ("gen-replay-missing", lambda d: ["generate", "--task", "arith", "--teacher", f"replay:{d / 'none.jsonl'}", "--out", str(d / "o")], ("none.jsonl",)),
    # import-paper
    ("import-src-missing", lambda d: ["import-paper", str(d / "nothing"), "--out", str(d / "o")], ("nothing",)),
    ("import-non-json", lambda d: ["import-paper", str(_released_garbage(d)), "--out", str(d / "o")], ("SVAMP_only_ans.json",)),
    ("import-out-generate", lambda d: ["import-paper", str(_released_garbage(d)), "--out", str(gen_run(d))], ("generate",)),
    # curate
    ("curate-input-missing", lambda d: ["curate", str(d / "none.jsonl"), "--out", str(d / "o")], ("none.jsonl",)),
    ("curate-malformed-line", lambda d: ["curate", str(_write(d / "t.jsonl", _trace() + "\n{oops\n")), "--out", str(d / "o")], ("t.jsonl:2",)),
    ("curate-not-utf8", lambda d: ["curate", str(_write(d / "t.jsonl", _trace().encode() + b"\n\xff\xfe\n")), "--out", str(d / "o")], ("t.jsonl", "UTF-8")),
    ("curate-keep-bogus", lambda d: ["curate", str(traces_file(d)), "--keep", "most", "--out", str(d / "o")], ("--keep",)),
    ("curate-jaccard-2", lambda d: ["curate", str(traces_file(d)), "--jaccard", "2", "--out", str(d / "o")], ("--jaccard",)),
    ("curate-out-is-input", lambda d: ["curate", str(traces_file(d)), "--no-decontaminate", "--out", str(d / "traces.jsonl")], ("input",)),
    ("curate-filter-nothing", lambda d: ["curate", str(traces_file(d)), "--levels", "5", "--no-decontaminate", "--out", str(d / "o")], ("--levels", "L3")),
    ("curate-out-generate", lambda d: ["curate", str(traces_file(d)), "--no-decontaminate", "--out", str(gen_run(d))], ("generate",)),
    # train
    ("train-traces-missing", lambda d: ["train", "--traces", str(d / "none.jsonl"), "--student", "scratch:llama-xxs", "--out", str(d / "m")], ("none.jsonl",)),
    ("train-bad-scratch", lambda d: ["train", "--traces", str(traces_file(d)), "--student", "scratch:llama-huge", "--out", str(d / "m")], ("huge",)),
    ("train-config-type", lambda d: ["train", "--traces", str(traces_file(d)), "--student", "scratch:llama-xxs", "--config", str(_write(d / "t.yaml", "batch_size: many\n")), "--out", str(d / "m")], ("batch_size",)),
    ("train-config-unknown", lambda d: ["train", "--traces", str(traces_file(d)), "--student", "scratch:llama-xxs", "--config", str(_write(d / "t.yaml", "learning_rte: 0.1\n")), "--out", str(d / "m")], ("learning_rte",)),
    ("train-out-file", lambda d: ["train", "--traces", str(traces_file(d)), "--student", "scratch:llama-xxs", "--out", str(a_file(d))], ("notes.txt",)),
    ("train-mixed-cells", lambda d: ["train", "--traces", str(traces_file(d, cells=(("lab", 2, "cot"), ("lab", 3, "cot")))), "--student", "scratch:llama-xxs", "--out", str(d / "m")], ("--levels", "--mix")),
    ("train-batch-0", lambda d: ["train", "--traces", str(traces_file(d)), "--student", "scratch:llama-xxs", "--batch-size", "0", "--out", str(d / "m")], ("batch_size",)),
    ("train-model-config-type", lambda d: ["train", "--traces", str(traces_file(d)), "--student", str(_bad_model(d)), "--out", str(d / "m")], ("badmodel",)),
    ("train-overwrite-generate", lambda d: ["train", "--traces", str(traces_file(d)), "--student", "scratch:llama-xxs", "--overwrite", "--out", str(gen_run(d))], ("not a model directory",)),
    # evaluate
    ("eval-unknown-task", lambda d: ["evaluate", "--model", str(d / "nomodel"), "--task", "nosuch", "--out", str(d / "e")], ("nosuch",)),
    ("eval-model-missing", lambda d: ["evaluate", "--model", str(d / "nomodel"), "--task", "arith", "--out", str(d / "e")], ("nomodel",)),
    ("eval-max-new-0", lambda d: ["evaluate", "--model", str(d / "nomodel"), "--task", "arith", "--max-new-tokens", "0", "--out", str(d / "e")], ("--max-new-tokens",)),
    ("eval-out-study", lambda d: ["evaluate", "--model", str(d / "nomodel"), "--task", "arith", "--out", str(_study_dir(d))], ("study",)),
    ("unknown-option", lambda d: ["train", "--traces", str(traces_file(d)), "--studnet", "x", "--out", str(d / "m")], ("--studnet",)),
    # study
    ("study-config-missing", lambda d: ["study", str(d / "none.yaml")], ("none.yaml",)),
    ("study-yaml-syntax", lambda d: ["study", str(_write(d / "s.yaml", "name: [unclosed\n"))], ("s.yaml",)),
    ("study-unknown-key", lambda d: ["study", str(study_yaml(d, "studnets: [x]\n"))], ("studnets",)),
    ("study-duplicate-key", lambda d: ["study", str(study_yaml(d, "levels: [2]\n"))], ("twice",)),
    ("study-level-9", lambda d: ["study", str(_write(d / "s.yaml", study_yaml(d).read_text().replace("levels: [3]", "levels: [9]")))], ("levels",)),
    ("study-output-under-file", lambda d: ["study", str(study_yaml(d)), "--out", str(a_file(d) / "s")], ("is a file",)),
    ("study-other-studys-dir", lambda d: ["study", str(study_yaml(d, name="second")), "--out", str(_study_dir(d))], ("named 'first'",)),
    ("study-not-utf8", lambda d: ["study", str(_write(d / "s.yaml", b"name: \xff\n"))], ("UTF-8",)),
    # traces
    ("export-format", lambda d: ["traces", "export", str(traces_file(d)), "--to", "parquet", "--out", str(d / "x")], ("parquet",)),
    ("stats-missing", lambda d: ["traces", "stats", str(d / "none.jsonl")], ("none.jsonl",)),
]


def _write(p: Path, content) -> Path:
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content)
    return p


def _released_garbage(d: Path) -> Path:
    src = d / "released"
    src.mkdir(exist_ok=True)
    (src / "SVAMP_only_ans.json").write_text("this is not JSON\n")
    return src


def _bad_model(d: Path) -> Path:
    m = d / "badmodel"
    m.mkdir()
    (m / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": "big", "num_hidden_layers": 2}))
    return m


def _study_dir(d: Path) -> Path:
    from cotdistill.artifacts import claim

    s = d / "first-study"
    with claim(s, "study", identity="first"):
        pass
    return s


def _snapshot(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_contract(case, tmp_path):
    _, setup, words = case
    argv = setup(tmp_path)
    before = _snapshot(tmp_path)
    r = subprocess.run([sys.executable, "-m", "cotdistill", *argv], capture_output=True, text=True, timeout=300,
                       cwd=tmp_path)
    err = r.stderr
    assert r.returncode == 2, (r.returncode, err[-1500:], r.stdout[-500:])
    assert "Traceback" not in err, err[-3000:]
    lines = [x for x in err.splitlines() if x.strip()]
    assert 1 <= len(lines) <= 6, err
    assert any(x.startswith("error:") for x in lines), err
    for w in words:
        assert w in err, (w, err)
    after = _snapshot(tmp_path)
    for f, h in before.items():
        assert after.get(f) == h, f"{f} was changed or removed"


def test_one_formatter_names_nested_keys_and_sections(tmp_path):
    """Every config reports a bad key the same way, naming the full path and the valid keys of the
    section it is in (the study's tasks items, its train / eval / curate sections)."""
    from cotdistill.errors import UserError
    from cotdistill.study import load_study_config

    base = {"output_dir": str(tmp_path / "s"), "tasks": ["arith"], "teachers": ["lab"], "students": ["scratch:llama-xxs"]}
    cases = [({"tasks": [{"name": "arith", "bogus": 1}]}, "unknown key 'tasks.0.bogus'; valid keys: name, options"),
             ({"eval": {"bogus": 1}}, "unknown key 'eval.bogus'; valid keys: decoding, max_new_tokens"),
             ({"train": {"learning_rate": "x"}}, "field 'train.learning_rate': Input should be a valid number"),
             ({"curate": {"keep": "x"}}, "field 'curate.keep': Input should be 'correct', 'best' or 'all'"),
             ({"zzz": 1}, "unknown key 'zzz'; valid keys: name, output_dir")]
    for over, msg in cases:
        with pytest.raises(UserError) as e:
            load_study_config({**base, **over})
        assert str(e.value).startswith("config: ") and msg in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_library_errors_name_fields_and_the_cli_names_flags():
    """A setting in a library error is the keyword / config field for Python callers and the flag
    on the command line (one message, two renderings)."""
    from cotdistill.errors import UserError
    from cotdistill.evaluate import parse_batch_size
    from cotdistill.runtime import resolve_device

    with pytest.raises(UserError) as e:
        parse_batch_size("zero")
    assert str(e.value) == "batch_size 'zero': use 'auto' or a positive integer"
    assert e.value.for_cli() == "--batch-size 'zero': use 'auto' or a positive integer"
    with pytest.raises(UserError) as e:
        resolve_device("tpu")
    assert str(e.value).startswith("device 'tpu'") and e.value.for_cli().startswith("--device 'tpu'")


def test_a_tracker_whose_package_is_missing_is_refused_before_anything_is_made(tmp_path):
    """`train --report-to X` names the extra that installs X, before any directory is made."""
    import importlib.util

    from cotdistill.traces import Trace, write_traces

    missing = next((t for t in ("wandb", "mlflow") if importlib.util.find_spec(t) is None), None)
    if missing is None:
        pytest.skip("wandb and mlflow are both installed here")
    tf = tmp_path / "t.jsonl"
    write_traces(tf, [Trace(id="0", task="svamp", question="q", gold="1", teacher="t", level=3, output="The answer is 1")])
    r = subprocess.run([sys.executable, "-m", "cotdistill", "train", "--traces", str(tf), "--student", "scratch:llama-xxs",
                        "--out", str(tmp_path / "m"), "--report-to", missing], capture_output=True, text=True)
    assert r.returncode == 2 and f"pip install 'cotdistill[{missing}]'" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.jsonl"]


def test_typed_names_get_a_did_you_mean(tmp_path):
    """A mistyped student short name or study key names the intended one (not the hub, not a
    missing key it causes)."""
    cases = [
        (["train", "--traces", "T", "--student", "smolm2-135m", "--out", str(tmp_path / "m")], "did you mean 'smollm2-135m'?"),
        (["study", "Y", "--dry-run"], "unknown key 'student' (did you mean 'students'?)"),
        (["train", "--traces", "T", "--student", "scratch:llama-xxs", "--out", str(tmp_path / "m"), "--distributed", "dpp"],
         "did you mean 'ddp'?"),
    ]
    from cotdistill.traces import Trace, write_traces

    tf = tmp_path / "t.jsonl"
    write_traces(tf, [Trace(id="0", task="svamp", question="q", gold="1", teacher="t", level=3, output="The answer is 1")])
    y = tmp_path / "s.yaml"
    y.write_text(f"name: x\noutput_dir: {tmp_path / 'o'}\ntasks: [arith]\nteachers: [lab]\nstudent: [scratch:llama-xxs]\n")
    for args, msg in cases:
        args = [str(tf) if a == "T" else str(y) if a == "Y" else a for a in args]
        r = subprocess.run([sys.executable, "-m", "cotdistill", *args], capture_output=True, text=True)
        assert r.returncode == 2 and msg in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "m").exists() and not (tmp_path / "o").exists()
