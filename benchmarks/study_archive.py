"""Keep a study's finished cells small enough to commit, and put them back so the study resumes.

A finished cell is its stage log, result, metrics and graded predictions; the trained weights are
not needed once the cell is evaluated (a study skips training for a cell evaluated with the same
key). ``save`` writes one gzipped JSON per finished cell, without the benchmark's questions and gold
answers (those come back from the task's test split on ``restore``); ``restore`` writes them into a
study directory, after which ``cotdistill study``, ``cotdistill report`` and ``rescore`` treat them
as the cells they were.

    python benchmarks/study_archive.py save paper-svamp-teachers-smollm2-out benchmarks/results/studies/paper-svamp-teachers-smollm2
    python benchmarks/study_archive.py restore benchmarks/results/studies/paper-svamp-teachers-smollm2 paper-svamp-teachers-smollm2-out

Restore into the directory the study's YAML names (the cells' keys include the replay file's path
and content, so the same YAML and replay file must be used). With ``--config YAML`` the cells go
into that study instead, those of its cells whose stage keys equal the archived ones (a cell shared by
two studies - the same task, teacher, level, format, student, seed and recipe - is trained once):

    python benchmarks/study_archive.py restore benchmarks/results/studies/paper-svamp-teachers-smollm2 \
        paper-svamp-smollm2-out --config examples/paper_svamp_smollm2.yaml
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

CELL_FILES = ("stages.json", "result.json", "config.json", "eval/metrics.json", "eval/eval_config.json")
DROP = ("question", "gold")  # the benchmark's own text: read back from the test split


def _read(p: Path):
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None


def save(study: Path, dest: Path) -> int:
    from cotdistill.records import read_cell_result

    dest.mkdir(parents=True, exist_ok=True)
    (dest / "cells").mkdir(exist_ok=True)
    cfg = _read(study / "study.json")
    if cfg is None:
        raise SystemExit(f"{study} has no study.json")
    (dest / "study.json").write_text(json.dumps(cfg, indent=1, default=str) + "\n")
    n = 0
    for cell in sorted((study / "cells").iterdir()):
        res = read_cell_result(cell / "result.json")
        preds = cell / "eval" / "predictions.jsonl"
        if res is None or res.status != "ok" or not preds.is_file():
            continue
        marks = _read(cell / "stages.json") or {}
        if "evaluate" not in marks or "evaluate_started" in marks:
            continue
        rows = [json.loads(x) for x in preds.read_text(encoding="utf-8").splitlines() if x.strip()]
        bundle = {"files": {f: _read(cell / f) for f in CELL_FILES},
                  "predictions": [{k: v for k, v in r.items() if k not in DROP} for r in rows]}
        with gzip.open(dest / "cells" / f"{cell.name}.json.gz", "wt", encoding="utf-8") as f:
            json.dump(bundle, f)
        n += 1
    return n


def restore(src: Path, study: Path, data_dir: str | None, config: Path | None = None) -> int:
    from cotdistill.artifacts import claim
    from cotdistill.fileio import atomic_write_json, atomic_write_text
    from cotdistill.study import expand_cells, load_study_config, stage_keys
    from cotdistill.tasks import get_task

    cfg = _read(src / "study.json") or {}
    wanted = None
    if config is not None:  # the cells of another study that are the same runs
        target = load_study_config(config, overrides={"output_dir": str(study.resolve())})
        wanted = {c.id: stage_keys(target, c) for c in expand_cells(target)}
        cfg = target.model_dump()
    tests: dict[str, dict] = {}
    n = 0
    with claim(study, "study", flag="output_dir", identity=cfg.get("name")):
        if not (study / "study.json").exists():
            (study / "study.json").write_text(json.dumps({**cfg, "output_dir": str(study.resolve())}, indent=1,
                                                         default=str) + "\n")
        for z in sorted((src / "cells").glob("*.json.gz")):
            cell = study / "cells" / z.name[: -len(".json.gz")]
            if (cell / "eval" / "predictions.jsonl").exists():
                continue  # a cell of this directory wins
            with gzip.open(z, "rt", encoding="utf-8") as f:
                bundle = json.load(f)
            if wanted is not None:
                keys = wanted.get(cell.name)
                marks = bundle["files"].get("stages.json") or {}
                if keys is None or any((marks.get(st) or {}).get("key") != keys[st] for st in ("train", "evaluate")):
                    continue
            conf = bundle["files"]["config.json"] or {}
            task = conf.get("task_spec", {}).get("name") or conf.get("task")
            if task not in tests:
                opts = conf.get("task_spec", {}).get("options", {})
                t = get_task(task, data_dir=data_dir or conf.get("data_dir"), **opts)
                tests[task] = {e.id: e for e in t.load(conf.get("task_spec", {}).get("test_split", "test"))}
            rows = []
            for r in bundle["predictions"]:
                e = tests[task].get(str(r["id"]))
                if e is None:
                    raise SystemExit(f"{z}: item {r['id']} is not in the {task} test split here")
                rows.append({"id": r["id"], "question": e.question, "gold": e.answer,
                             **{k: v for k, v in r.items() if k != "id"}})
            (cell / "eval").mkdir(parents=True, exist_ok=True)
            for name, data in bundle["files"].items():
                if data is not None:
                    atomic_write_json(cell / name, data)
            atomic_write_text(cell / "eval" / "predictions.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
            atomic_write_json(cell / "status.json", {"state": "done", "stage": None, "restored_from": str(z)})
            n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("save")
    s.add_argument("study", type=Path)
    s.add_argument("dest", type=Path)
    r = sub.add_parser("restore")
    r.add_argument("src", type=Path)
    r.add_argument("study", type=Path)
    r.add_argument("--data-dir", default=None)
    r.add_argument("--config", type=Path, default=None, help="restore into this study (its cells with the same keys)")
    a = ap.parse_args()
    if a.cmd == "save":
        print(f"saved {save(a.study, a.dest)} finished cell(s) to {a.dest}")
    else:
        print(f"restored {restore(a.src, a.study, a.data_dir, a.config)} cell(s) into {a.study}")


if __name__ == "__main__":
    main()
