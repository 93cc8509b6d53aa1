"""Library progress: a callable receives events (nothing printed); True prints plain lines in a log."""

from __future__ import annotations

import json
from pathlib import Path

from cotdistill.progress import ProgressEvent, Reporter


def test_a_callback_gets_every_update_and_nothing_is_printed(capsys):
    seen: list[ProgressEvent] = []
    with Reporter(seen.append, "evaluate", "svamp", 10, completed=2, unit="items") as rep:
        rep.update(advance=3)
        rep.update(done=10, loss=0.5)
    assert [(e.done, e.finished) for e in seen] == [(2, False), (5, False), (10, False), (10, True)]
    assert seen[-1].info == {"loss": 0.5} and seen[0].stage == "evaluate" and seen[0].unit == "items"
    assert capsys.readouterr().err == ""


def test_true_prints_plain_lines_off_a_terminal(capsys):
    with Reporter(True, "generate", "lab", 4, unit="calls") as rep:
        rep.update(done=4, failed=0)
    err = capsys.readouterr().err
    assert "generate lab: 0/4 calls (0 %)" in err and "generate lab: 4/4 calls (100 %)" in err and "failed 0" in err
    with Reporter(False, "generate", "lab", 4) as rep:
        rep.update(done=4)
    assert capsys.readouterr().err == ""


def test_library_stages_report_through_the_callback(tmp_path):
    from cotdistill.evaluate import evaluate
    from cotdistill.generate import GenerateConfig, generate
    from cotdistill.tasks import get_task
    from cotdistill.train import TrainConfig, train

    exs = get_task("arith", steps=2, n_train=24, n_test=6).load("train")
    events: list[ProgressEvent] = []
    generate(exs, tmp_path / "gen", GenerateConfig(teacher="lab", levels=[3]), progress=events.append)
    gen = [e for e in events if e.stage == "generate"]
    assert gen[-1].finished and gen[-1].done == gen[-1].total == 24 and gen[-1].unit == "calls"
    events.clear()
    res = train([tmp_path / "gen" / "traces.jsonl"], "scratch:llama-xxs", tmp_path / "m",
                TrainConfig.scratch(max_steps=4, batch_size=8, logging_steps=2, threads=1), progress=events.append)
    tr = [e for e in events if e.stage == "train"]
    assert [e.done for e in tr if not e.finished][-1] == 4 and tr[-1].finished and tr[-1].total == 4
    assert any("loss" in e.info for e in tr)
    events.clear()
    test = get_task("arith", steps=2, n_train=24, n_test=6).load("test")
    evaluate(str(res.model_dir), test, out_dir=tmp_path / "ev", max_new_tokens=8, progress=events.append)
    ev = [e for e in events if e.stage == "evaluate"]
    assert ev[-1].finished and ev[-1].done == 6 and ev[-1].unit == "items"
    assert json.loads((Path(tmp_path) / "ev" / "metrics.json").read_text())["n"] == 6
