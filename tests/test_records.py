"""The typed records (predictions, metrics, cell results, selections): one reader and one writer
each, round trips that keep every field, one-line errors for bad files, and the study layout."""

from __future__ import annotations

import json

import pytest

from cotdistill.errors import UserError
from cotdistill.records import (CellResult, Metrics, Prediction, StudyLayout, append_predictions, read_cell_result,
                                read_metrics, read_predictions, read_results, read_selection, write_cell_result,
                                write_metrics, write_predictions, write_results, write_selection)


def _pred(i: str, correct: bool, **kw) -> dict:
    return {"id": i, "question": "q" + i, "gold": "1", "output": "The answer is 1.", "pred": "1" if correct else "2",
            "correct": correct, "rule": "answer_is", "output_tokens": 5, "finish": "eos", **kw}


def test_predictions_round_trip_keep_unknown_fields_and_repair_a_torn_line(tmp_path):
    p = tmp_path / "predictions.jsonl"
    write_predictions(p, [_pred("a", True, note="kept")])
    append_predictions(p, [Prediction.model_validate(_pred("b", False))])
    with open(p, "a", encoding="utf-8") as f:
        f.write('{"id": "c", "corr')  # a crash mid-write
    rows = read_predictions(tmp_path, repair=True)  # a directory reads its predictions.jsonl
    assert [r.id for r in rows] == ["a", "b"] and rows[0].note == "kept" and rows[1].correct is False
    assert p.read_text().endswith("\n") and len(p.read_text().splitlines()) == 2  # the torn line is gone
    first = json.loads(p.read_text().splitlines()[0])
    assert list(first)[:3] == ["id", "question", "gold"] and first["note"] == "kept"
    odd = Prediction.model_validate({"id": 17, "correct": None, "finish": None, "output": None})
    assert (odd.id, odd.correct, odd.finish, odd.output) == ("17", False, "eos", "")  # files of other writers
    assert odd.get("rule", "unknown") == "unknown" and rows[0].get("rule", "x") == "answer_is"  # as dict.get
    regraded = rows[1].graded({"pred": "1", "correct": True, "rule": "answer_is", "pred_lenient": "1",
                               "correct_lenient": True})
    assert regraded.correct and regraded.question == "qb" and regraded.output_tokens == 5


def test_a_bad_prediction_line_is_one_line_naming_it(tmp_path):
    p = tmp_path / "predictions.jsonl"
    p.write_text(json.dumps(_pred("a", True)) + "\n" + json.dumps({"id": "b", "correct": "maybe"}) + "\n" + json.dumps(_pred("c", True)) + "\n")
    with pytest.raises(UserError, match=r"predictions.jsonl:2: malformed prediction \(field 'correct'"):
        read_predictions(p)
    with pytest.raises(UserError, match="does not exist: run `cotdistill evaluate"):
        read_predictions(tmp_path / "nothing")


def test_a_raw_response_is_a_prediction_not_yet_graded(tmp_path):
    """Evaluation stores responses first; the scoring step grades them (cotdistill.score)."""
    from cotdistill.score import score_responses
    from cotdistill.tasks.base import Example

    p = tmp_path / "predictions.jsonl"
    p.write_text(json.dumps({"id": 7, "output": "3 + 4 = 7. The answer is 7.", "finish": "eos"}) + "\n")
    (raw,) = read_predictions(p)
    assert raw.id == "7" and not raw.is_graded and "correct" not in raw.to_dict()
    ex = Example(id="7", task="t", split="test", question="3 + 4?", answer="7", answer_type="number")
    (graded,) = score_responses([raw], [ex])
    assert graded.is_graded and graded.correct and graded.pred == "7" and graded.rule is not None
    # a reader of verdicts refuses an evaluation stopped before its scoring step, naming the fix
    from cotdistill.evaluate import compare

    with pytest.raises(UserError, match=r"1 of 1 outputs are not scored yet .*cotdistill rescore"):
        read_predictions(p, graded=True)
    with pytest.raises(UserError, match="not scored yet"):
        compare(p, p)


def test_metrics_and_cell_results(tmp_path):
    m = write_metrics(tmp_path / "metrics.json", {"n": 3, "accuracy": float("nan"), "answer_checker": "2", "model": "x"})
    back = read_metrics(tmp_path)
    assert back == m and back.accuracy is None and back.model == "x"  # NaN is written as null
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metrics.json").write_text("{")
    assert read_metrics(tmp_path / "broken") is None and read_metrics(tmp_path / "absent.json") is None

    ok = {"task": "svamp", "teacher": "replay:x.jsonl#gpt-4o", "level": 3, "format": "cot", "student": "s", "seed": 0,
          "cell": "c1", "status": "ok", "n": 300, "accuracy": 0.17, "ci_low": 0.13, "ci_high": 0.21, "train_tokens": 9}
    bad = {**ok, "cell": "c2", "level": "human", "status": "failed", "stage": "train", "error": "boom"}
    write_cell_result(tmp_path / "result.json", ok)
    assert read_cell_result(tmp_path / "result.json").to_dict() == ok
    write_results(tmp_path / "results.jsonl", [ok, CellResult.model_validate(bad)])
    rows = read_results(tmp_path / "results.jsonl")
    assert [r.to_dict() for r in rows] == [ok, bad] and rows[1].level == "human"
    (tmp_path / "results.jsonl").write_text(json.dumps(ok) + "\n" + json.dumps({**ok, "seed": "first"}) + "\n")
    with pytest.raises(UserError, match=r"results.jsonl:2: malformed cell result \(field 'seed'"):
        read_results(tmp_path / "results.jsonl")


def test_selection_and_layout(tmp_path):
    write_selection(tmp_path / "selection.json", {"status": "running", "rounds": [{"round": 0}]})
    s = read_selection(tmp_path)
    assert s.status == "running" and s.winner is None and s.rounds == [{"round": 0}]
    with pytest.raises(UserError, match="run `cotdistill select --out"):
        read_selection(tmp_path / "none")
    lay = StudyLayout(str(tmp_path))
    assert lay.results == tmp_path / "results.jsonl" and lay.config == tmp_path / "study.json"
    assert lay.cell("c1").predictions == tmp_path / "cells" / "c1" / "eval" / "predictions.jsonl"
    assert lay.curated("k") == tmp_path / "cache" / "curate" / "k.jsonl"
    assert lay.generate_dir("k") == tmp_path / "cache" / "generate" / "k"


def test_a_study_writes_its_records_where_the_layout_says(tmp_path):
    """A two-cell arith study: every cell's files are where StudyLayout puts them, readable by the
    record readers, and results.jsonl holds the same CellResults as the cells."""
    from cotdistill.study import load_study_config, run_study

    cfg = load_study_config({
        "output_dir": str(tmp_path / "s"), "tasks": [{"name": "arith", "options": {"n_train": 64, "n_test": 8},
                                                      "test_size": 8}],
        "teachers": ["lab"], "levels": [0, 3], "students": ["scratch:llama-xxs"],
        "train": {"max_steps": 2, "batch_size": 4, "threads": 1}, "eval": {"max_new_tokens": 16}})
    run_study(cfg, jobs=1, progress=False)
    lay = StudyLayout(tmp_path / "s")
    rows = read_results(lay.results)
    assert len(rows) == 2 and all(r.status == "ok" and r.n == 8 for r in rows)
    for r in rows:
        cl = lay.cell(r.cell)
        assert read_cell_result(cl.result) == r
        preds = read_predictions(cl.predictions)
        assert len(preds) == 8 and r.accuracy == pytest.approx(sum(p.correct for p in preds) / 8, abs=1e-6)
        assert read_metrics(cl.metrics).n == 8 and cl.model.is_dir() and cl.traces.is_file()
    assert isinstance(read_metrics(lay.cell(rows[0].cell).eval), Metrics)
