"""import-paper over the real released files in ../shared/data/paper."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys

import pytest

from cotdistill.errors import UserError
from cotdistill.paper import FileSpec, import_paper, parse_file_name
from cotdistill.tasks import get_task
from cotdistill.traces import read_traces


def run(*args):
    return subprocess.run([sys.executable, "-m", "cotdistill", *args], capture_output=True, text=True)


@pytest.mark.parametrize(
    "name,expected",
    [
        ("SVAMP_gemini_level3_ranked.json.gz", ("svamp", "gemini-1.5-flash", 3, "cot")),
        ("SVAMP_ChatGPT_level1_ranked.json", ("svamp", "gpt-4o", 1, "cot")),
        ("0_SVAMP_chatgpt_level5BSM.json.gz", ("svamp", "gpt-4o", 5, "subq")),
        ("0_SVAMP_chatgpt_level3RaR.json.gz", ("svamp", "gpt-4o", 3, "rar")),
        ("0_SVAMP_chatgpt_level3SYM.json.gz", ("svamp", "gpt-4o", 3, "sym")),
        ("0_aqua_chatgpt_level5Sym.json", ("aqua", "gpt-4o", 5, "sym")),
        ("openbookqa_chatgpt_bsm_level3_ranked.json.gz", ("obqa", "gpt-4o", 3, "subq")),
        ("openbookqa_chatgpt_symbolic_level3_ranked.json", ("obqa", "gpt-4o", 3, "sym")),
        ("openbookQA_chatgpt_level_6_ranked.json.gz", ("obqa", "gpt-4o", 6, "cot")),
        ("openbookQA_ChatGPT_0_shot_with_gt_ranked.json.gz", ("obqa", "gpt-4o-0shot-gt", 3, "cot")),
        ("openbookQA_ChatGPT_0_shot_without_gt_ranked.json.gz", ("obqa", "gpt-4o-0shot", 3, "cot")),
        ("stqa_llama_level2_ranked.json.gz", ("strategyqa", "llama-3-70b", 2, "cot")),
        ("strategyQA_chatgpt_level_4_ranked.json.gz", ("strategyqa", "gpt-4o", 4, "cot")),
        ("stqa_human_annotation.json.gz", ("strategyqa", "human", "human", "cot")),
        ("svamp_human_annotation.json.gz", ("svamp", "human", "human", "cot")),
        ("aqua_human.json.gz", ("aqua", "human", "human", "cot")),
        ("SVAMP_only_ans.json.gz", ("svamp", "human", 0, "cot")),
        ("commonsenseQA_onlyans.json.gz", ("csqa", "human", 0, "cot")),
        ("gsm_train_onlyans.json.gz", ("gsm8k", "human", 0, "cot")),
        ("gsm8k_ChatGPT_level4_ranked.json", ("gsm8k", "gpt-4o", 4, "cot")),
        ("csqa_llama_level1_ranked.json", ("csqa", "llama-3-70b", 1, "cot")),
        ("commonsenseQA_chatgpt_level_2_ranked.json", ("csqa", "gpt-4o", 2, "cot")),
        ("math_mix_level2.json", ("math", "gpt-4o", 2, "cot")),
        ("math_gemini_level6_ranked.json", ("math", "gemini-1.5-flash", 6, "cot")),
    ],
)
def test_parse_file_name(name, expected):
    specs = parse_file_name(name)
    assert len(specs) == 1
    s = specs[0]
    assert (s.task, s.teacher, s.level, s.format) == expected


def test_parse_file_name_math_human_and_unknown():
    specs = parse_file_name("math_human.json.gz")
    assert [(s.level, s.response_key, s.prompt_key) for s in specs] == [("human", "solution", "problem"), (0, "output", "problem")]
    assert parse_file_name("math_llama_level3_ranked.json")[0] == FileSpec("math", "llama-3-70b", 3, "cot", "problem", "llama_output")
    for bad in ("mystery.json.gz", "SVAMP_gpt5_level3_ranked.json", "SVAMP_gemini_ranked.json", "dataset_info.json.gz"):
        assert parse_file_name(bad) == []


@pytest.fixture(scope="module")
def full_import(shared_data):
    return import_paper(shared_data / "paper", shared_data)


@pytest.mark.slow
def test_full_import_counts_and_sources(full_import, shared_data):
    rep = full_import
    files = {f.file for f in rep.files}
    assert len(files) == 76 and len(rep.files) == 77  # math_human gives two cells
    assert not rep.warnings
    by_file = {(f.file, str(f.level)): f for f in rep.files}
    assert by_file[("SVAMP_gemini_level3_ranked.json", "3")].kept == 700
    assert by_file[("stqa_human_annotation.json", "human")].rows == 2290
    assert by_file[("stqa_human_annotation.json", "human")].kept == 2000
    # every row is either kept or reported (test leakage)
    assert len(rep.traces) == sum(f.kept for f in rep.files)
    assert 230_000 < len(rep.traces) < 236_000
    # source is FILE#ROW with the .gz dropped, ids join with the task examples
    raw = json.load(gzip.open(shared_data / "paper/SVAMP_gemini_level3_ranked.json.gz", "rt"))
    t17 = next(t for t in rep.traces if t.source == "SVAMP_gemini_level3_ranked.json#17")
    assert t17.output == raw[17]["output"] and (t17.teacher, t17.level, t17.format) == ("gemini-1.5-flash", 3, "cot")
    svamp_train = {e.id: e for e in get_task("svamp", shared_data).load("train")}
    assert t17.id in svamp_train and t17.question == svamp_train[t17.id].question and t17.gold == svamp_train[t17.id].answer
    svamp_traces = [t for t in rep.traces if t.task == "svamp"]
    assert all(t.id in svamp_train for t in svamp_traces)


@pytest.mark.slow
def test_full_import_reports_problems(full_import, shared_data):
    probs = full_import.problems()
    leak = [p for p in probs if p.startswith("stqa_human_annotation.json: test leakage")]
    assert len(leak) == 1 and "290 rows" in leak[0] and "rows 2000-2289" in leak[0]
    test_ids = {e.id for e in get_task("strategyqa", shared_data).load("test")}
    assert not any(t.id in test_ids for t in full_import.traces)
    assert any(p.startswith("strategyQA_chatgpt_level_6_ranked.json:") and "<Solution Path>" in p for p in probs)
    assert any(p.startswith("math_human.json (level human):") and "disagrees with the released 'output'" in p for p in probs)
    assert any("disagree with the gold answer" in p for p in probs)
    # teacher CoTs are scored: a few percent wrong, not all right, not all wrong
    gem = [t for t in full_import.traces if t.task == "gsm8k" and t.teacher == "gemini-1.5-flash" and t.level == 2]
    acc = sum(bool(t.correct) for t in gem) / len(gem)
    assert 0.85 < acc < 0.995


@pytest.mark.slow
def test_full_import_layouts_and_zero_shot(full_import):
    csqa = [t for t in full_import.traces if t.task == "csqa"]
    assert csqa and all(t.question.startswith("Q: ") and "Answer choices: A: " in t.question for t in csqa[:100])
    zs = {t.teacher for t in full_import.traces if t.source.startswith("openbookQA_ChatGPT_0_shot")}
    assert zs == {"gpt-4o-0shot-gt", "gpt-4o-0shot"}
    math_gold = [t for t in full_import.traces if t.task == "math" and t.level == "human"]
    assert len(math_gold) == 1171


def _copy(shared_data, tmp_path, *names, rename=None):
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    for n in names:
        shutil.copy(shared_data / "paper" / n, src / ((rename or {}).get(n, n)))
    return src


def test_unknown_file_name_is_a_warning(shared_data, tmp_path):
    src = _copy(shared_data, tmp_path, "SVAMP_only_ans.json.gz", "SVAMP_llama_level1_ranked.json.gz",
                rename={"SVAMP_only_ans.json.gz": "my_renamed_file.json.gz"})
    rep = import_paper(src, shared_data)
    assert len(rep.warnings) == 1 and rep.warnings[0].startswith("my_renamed_file.json: unknown file name, skipped")
    assert len(rep.traces) == 700 and list(rep) == rep.traces and len(rep) == 700
    from cotdistill.traces import import_paper as reexported

    assert len(reexported(src, shared_data)) == 700
    r = run("import-paper", str(src), "--out", str(tmp_path / "out"), "--data-dir", str(shared_data), "-q")
    assert r.returncode == 0, r.stderr
    assert "warning: my_renamed_file.json: unknown file name" in r.stderr
    assert len(read_traces(tmp_path / "out" / "traces.jsonl")) == 700
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_only_unknown_files_is_an_error(shared_data, tmp_path):
    src = _copy(shared_data, tmp_path, "SVAMP_only_ans.json.gz", rename={"SVAMP_only_ans.json.gz": "x.json.gz"})
    with pytest.raises(UserError, match="no traces imported"):
        import_paper(src, shared_data)
    r = run("import-paper", str(src), "--out", str(tmp_path / "out"), "--data-dir", str(shared_data))
    assert r.returncode == 2 and r.stderr.startswith("error: no traces imported") and "Traceback" not in r.stderr
    assert not (tmp_path / "out" / "traces.jsonl").exists()


def test_malformed_and_empty_files_warn(shared_data, tmp_path):
    src = _copy(shared_data, tmp_path, "SVAMP_llama_level1_ranked.json.gz")
    (src / "SVAMP_llama_level2_ranked.json").write_text('{"instruction": "a", "output": "b"}\n{broken\n')
    (src / "SVAMP_llama_level3_ranked.json").write_text("")
    rep = import_paper(src, shared_data)
    assert len(rep.traces) == 700
    w = " | ".join(rep.warnings)
    assert "SVAMP_llama_level2_ranked.json: skipped" in w and "malformed JSON" in w and ":2:" in w
    assert "SVAMP_llama_level3_ranked.json: skipped" in w and "empty" in w


def test_uncompressed_json_and_keep_test(shared_data, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rows = json.load(gzip.open(shared_data / "paper/stqa_human_annotation.json.gz", "rt"))
    (src / "stqa_human_annotation.json").write_text(json.dumps(rows))
    rep = import_paper(src, shared_data)
    assert len(rep.traces) == 2000
    rep2 = import_paper(src, shared_data, keep_test=True)
    assert len(rep2.traces) == 2290
    leaked = [t for t in rep2.traces if t.id.startswith("strategyqa-test-")]
    assert len(leaked) == 290 and leaked[0].source == "stqa_human_annotation.json#2000"
    assert all(t.correct for t in leaked[:50])


def test_missing_source_dir(tmp_path):
    r = run("import-paper", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and r.stderr.startswith("error:") and "does not exist" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
