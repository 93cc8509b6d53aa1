"""Trace files: read/write, statistics and exports (on real SVAMP / OBQA traces)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from cotdistill.errors import UserError
from cotdistill.paper import import_paper
from cotdistill.traces import (
    Trace,
    count_steps,
    export_traces,
    proxy_tokens,
    read_traces,
    trace_stats,
    write_traces,
)


def run(*args):
    return subprocess.run([sys.executable, "-m", "cotdistill", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def svamp_traces(shared_data, tmp_path_factory):
    """Real traces: SVAMP GPT-4o level 2, SVAMP level 3 sub-questions, SVAMP human, SVAMP answer-only."""
    src = tmp_path_factory.mktemp("paper")
    for n in ("SVAMP_ChatGPT_level2_ranked", "0_SVAMP_chatgpt_level3BSM", "svamp_human_annotation", "SVAMP_only_ans"):
        shutil.copy(shared_data / "paper" / f"{n}.json.gz", src / f"{n}.json.gz")
    rep = import_paper(src, shared_data)
    path = tmp_path_factory.mktemp("tr") / "traces.jsonl"
    write_traces(path, rep.traces)
    return path


def _t(**kw):
    base = dict(id="x-1", task="svamp", question="q?", gold="3", teacher="t", level=2, output="1+2=3. The answer is 3")
    base.update(kw)
    return Trace(**base)


# --- read / write ------------------------------------------------------------------------------

def test_roundtrip_and_atomic(tmp_path):
    p = tmp_path / "traces.jsonl"
    ts = [_t(), _t(id="x-2", level="human", pred="3", correct=True, usage={"prompt_tokens": 5})]
    assert write_traces(p, ts) == 2
    assert read_traces(p) == ts
    assert not list(tmp_path.glob("*.tmp"))
    assert read_traces(tmp_path) == ts  # a directory holding a traces.jsonl is accepted too


def test_bad_files_give_one_line_errors(tmp_path):
    p = tmp_path / "traces.jsonl"
    p.write_text(_t().model_dump_json() + "\n{not json\n")
    with pytest.raises(UserError, match=r"traces.jsonl:2: malformed JSON"):
        read_traces(p)
    p.write_text(json.dumps({**_t().model_dump(), "level": 9}) + "\n")
    with pytest.raises(UserError, match=r":1: invalid trace, field 'level'"):
        read_traces(p)
    p.write_text("")
    with pytest.raises(UserError, match="no traces"):
        read_traces(p)
    r = run("traces", "stats", str(p))
    assert r.returncode == 2 and r.stderr.startswith("error:") and len(r.stderr.strip().splitlines()) == 1


# --- statistics ---------------------------------------------------------------------------------

def test_proxy_tokens_and_steps():
    assert proxy_tokens("The answer is 145") == 4
    assert proxy_tokens("Unbelievable 123456, ok.") == 2 + 2 + 1 + 1 + 1
    # numbered items, even glued to the previous sentence as in the released GPT-4o files
    glued = ("1. Start by identifying the total, which is 290.2. Note that these are in 2 groups."
             "3. Divide.4. Perform the division: 290 ÷ 2 = 145.The answer is 145")
    assert count_steps(glued) == 4
    assert count_steps("Genghis had many sons. Caesar had one. So more. The answer is True") == 3
    assert count_steps("How many bananas? 290. How many groups? 2. The answer is 145", "subq") == 2
    assert count_steps("The answer is 3") == 0


def test_stats_on_real_traces(svamp_traces):
    stats = {(s.teacher, str(s.level), s.format): s for s in trace_stats(read_traces(svamp_traces))}
    assert set(stats) == {("gpt-4o", "2", "cot"), ("gpt-4o", "3", "subq"), ("human", "human", "cot"), ("human", "0", "cot")}
    l2 = stats[("gpt-4o", "2", "cot")]
    assert l2.rows == 700 and 95 < l2.correct_pct < 100
    assert l2.mean_words < l2.p90_words and l2.mean_tokens > l2.mean_words
    assert 2 < l2.mean_steps < 8
    assert stats[("human", "0", "cot")].mean_steps == 0 and stats[("human", "0", "cot")].correct_pct == 100
    assert stats[("gpt-4o", "3", "subq")].mean_steps > 1


def test_stats_with_a_real_tokenizer(svamp_traces, tmp_path):
    from cotdistill.students import build_char_tokenizer

    ts = read_traces(svamp_traces)
    tok = build_char_tokenizer(t.output for t in ts)
    tok.save_pretrained(tmp_path / "tok")
    stats = trace_stats(ts[:50], tokenizer=tok)
    assert stats[0].mean_tokens == pytest.approx(sum(len(t.output) for t in ts[:50]) / 50)
    r = run("traces", "stats", str(svamp_traces), "--tokenizer", str(tmp_path / "tok"), "--json", str(tmp_path / "s.json"))
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "s.json").read_text())
    assert len(rows) == 4 and {"rows", "correct_pct", "p90_tokens", "mean_steps"} <= set(rows[0])
    r = run("traces", "stats", str(svamp_traces), "--tokenizer", str(tmp_path / "nope"))
    assert r.returncode == 2 and r.stderr.startswith("error: cannot load the tokenizer")


def test_cli_stats_table(svamp_traces):
    r = run("traces", "stats", str(svamp_traces))
    assert r.returncode == 0, r.stderr
    assert "gpt-4o" in r.stdout and "subq" in r.stdout and "proxy" in r.stdout


# --- export ---------------------------------------------------------------------------------------

def test_export_llamafactory(svamp_traces, tmp_path):
    ts = read_traces(svamp_traces)
    export_traces(ts, "llamafactory", tmp_path)
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert set(info) == {"svamp_gpt-4o_level2", "svamp_gpt-4o_level3_subq", "svamp_human_human", "svamp_human_level0"}
    for name, entry in info.items():
        rows = json.loads((tmp_path / entry["file_name"]).read_text())
        assert rows and set(rows[0]) == {"instruction", "input", "output"}
    rows = json.loads((tmp_path / "svamp_gpt-4o_level2.json").read_text())
    assert len(rows) == 700 and rows[0]["output"].rstrip().endswith("145")
    # a second export into the same directory merges dataset_info.json
    (tmp_path / "dataset_info.json").write_text(json.dumps({"other": {"file_name": "o.json"}}))
    export_traces(ts[:5], "llamafactory", tmp_path)
    assert "other" in json.loads((tmp_path / "dataset_info.json").read_text())


def test_export_trl(svamp_traces, tmp_path):
    ts = read_traces(svamp_traces)
    export_traces(ts, "trl", tmp_path / "plain")
    rows = [json.loads(l) for l in (tmp_path / "plain/train.jsonl").read_text().splitlines()]
    assert len(rows) == len(ts)
    assert rows[0]["prompt"] == f"Question: {ts[0].question}\nAnswer:" and rows[0]["completion"] == " " + ts[0].output.strip()
    export_traces(ts[:3], "trl", tmp_path / "chat", template="chat")
    row = json.loads((tmp_path / "chat/train.jsonl").read_text().splitlines()[0])
    assert row["prompt"] == [{"role": "user", "content": ts[0].question}]
    assert row["completion"][0]["role"] == "assistant"
    with pytest.raises(UserError, match="unknown template"):
        export_traces(ts[:3], "trl", tmp_path / "x", template="nope")


def test_export_hf_roundtrip(svamp_traces, tmp_path):
    import datasets

    ts = read_traces(svamp_traces)
    export_traces(ts, "hf", tmp_path / "ds")
    ds = datasets.load_from_disk(str(tmp_path / "ds"))
    assert len(ds) == len(ts)
    assert set(ds["level"]) == {"0", "2", "3", "human"}
    assert ds[0]["source"] == ts[0].source and ds[0]["output"] == ts[0].output
    export_traces(ts[:10], "hf", tmp_path / "ds")  # overwriting a saved dataset is fine
    assert len(datasets.load_from_disk(str(tmp_path / "ds"))) == 10
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("x")
    with pytest.raises(UserError, match="non-empty directory"):
        export_traces(ts[:10], "hf", tmp_path / "busy")


def test_cli_export_and_errors(svamp_traces, tmp_path):
    r = run("traces", "export", str(svamp_traces), "--to", "trl", "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "o/train.jsonl").exists()
    r = run("traces", "export", str(svamp_traces), "--to", "csv", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and r.stderr.startswith("error: unknown export format 'csv'")
    r = run("traces", "export", str(tmp_path / "missing.jsonl"), "--to", "hf", "--out", str(tmp_path / "o2"))
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
