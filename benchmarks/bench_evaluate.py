"""Evaluation cross-check and speed: cotdistill vs lm-evaluation-harness vs one prompt at a time.

One model, the same items, the same prompt token ids, greedy, the same token cap, in one run:

* ``cotdistill``: ``cotdistill.evaluate.evaluate`` as a user runs it (continuous batching, fp32);
* ``single``: ``model.generate`` on one prompt at a time (the naive baseline), to EOS or the cap
  (timed without model loading; compared with cotdistill's whole call and its generation time);
* ``lm-eval-bsN``: EleutherAI lm-evaluation-harness, its ``hf`` backend at batch size N (1 is its
  default; ``--lm-eval-batch-sizes 64,1``), through a task file written
  from the same items: ``doc_to_text`` is the prompt string cotdistill renders (the model's chat
  template), no extra BOS, ``until`` = the EOS text, the same ``max_gen_toks``, and a regex filter
  for the number after the last "The answer is" with ``exact_match`` against the canonical gold;
* ``cotdistill-bf16`` (``--bf16``): the same as ``cotdistill`` with bf16 weights.

Reports item-level agreement with the ``single`` baseline and with lm-eval (output texts up to
EOS, extracted answers, correctness) and the wall-time ratios, and writes everything (with the
command, machine and versions) to ``--out`` (JSON).

    python benchmarks/bench_evaluate.py --model runs/smol-l3/model --task svamp \
        --data-dir ../shared/data --threads 2 --out benchmarks/results/eval_crosscheck_smollm2.json

``--limit N`` evaluates the first N test items; ``--skip single,lm-eval`` leaves baselines out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibrate_quickstart import cpu_name  # noqa: E402

ANSWER_RE = r"[Tt]he answer is \$?(-?[0-9][0-9,]*(?:\.[0-9]+)?)"


def run_cotdistill(model_dir: str, items, max_new_tokens: int, dtype: str, out: Path) -> tuple[float, dict]:
    from cotdistill.evaluate import evaluate, read_predictions

    t0 = time.perf_counter()
    m = evaluate(model_dir, items, out_dir=out, max_new_tokens=max_new_tokens, dtype=dtype, progress=False, overwrite=True)
    wall = time.perf_counter() - t0
    rows = {r["id"]: r for r in read_predictions(out)}
    return wall, {"metrics": m, "rows": rows}


def run_single(model_dir: str, items, max_new_tokens: int) -> tuple[float, dict]:
    import torch

    from cotdistill.score import score_output
    from cotdistill.runtime import StudentRuntime, load_model, resolve_template

    model, tok = load_model(model_dir, "cpu", "float32")
    tpl, _ = resolve_template(None, Path(model_dir), tok)
    gen = StudentRuntime(model, tok, tpl, "greedy", max_new_tokens, cache_implementation="dynamic")
    rows = {}
    t0 = time.perf_counter()
    for ex in items:
        p = gen.prompt_ids(ex.question)
        with torch.inference_mode():
            o = model.generate(torch.tensor([p]), max_new_tokens=max_new_tokens, do_sample=False,
                               pad_token_id=tok.pad_token_id, eos_token_id=gen.eos_ids)[0, len(p):].tolist()
        end = next((k + 1 for k, t in enumerate(o) if t in gen.eos_ids), None)
        g = gen._generation(o[:end] if end else o, "eos" if end else "length")
        rows[ex.id] = {"output": g.output, "output_tokens": g.output_tokens, "finish": g.finish,
                       **score_output(g.output, g.finish, ex)}
    return time.perf_counter() - t0, {"rows": rows}


def run_lm_eval(model_dir: str, items, max_new_tokens: int, batch_size: int, work: Path) -> tuple[float, dict]:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from cotdistill import answers
    from cotdistill.runtime import load_model, resolve_template

    _, tok = load_model(model_dir, "cpu", "float32")
    tpl, _ = resolve_template(None, Path(model_dir), tok)
    data = work / "items.jsonl"
    with open(data, "w") as f:
        for ex in items:
            f.write(json.dumps({"id": ex.id, "prompt": tpl.render_prompt(ex.question, tok),
                                "target": answers.normalize(ex.answer, ex.answer_type)}) + "\n")
    eos = tok.decode([tok.eos_token_id])
    task = {
        "task": "cotdistill_crosscheck",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": "{{prompt}}",
        "doc_to_target": "{{target}}",
        "target_delimiter": "",
        "generation_kwargs": {"until": [eos], "do_sample": False, "max_gen_toks": max_new_tokens},
        "filter_list": [{"name": "answer-line", "filter": [
            {"function": "regex", "regex_pattern": ANSWER_RE, "group_select": -1},
            {"function": "take_first"}]}],
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                         "regexes_to_ignore": [",", "\\.$"]}],
    }
    (work / "task.yaml").write_text(json.dumps(task, indent=1))  # JSON is YAML
    tm = TaskManager(include_path=str(work))
    t0 = time.perf_counter()
    res = simple_evaluate(model="hf", model_args=f"pretrained={model_dir},dtype=float32,add_bos_token=False",
                          tasks=["cotdistill_crosscheck"], task_manager=tm, batch_size=batch_size, device="cpu",
                          log_samples=True, apply_chat_template=False)
    wall = time.perf_counter() - t0
    rows = {}
    for s in res["samples"]["cotdistill_crosscheck"]:
        raw = s["resps"][0][0]
        filt = s["filtered_resps"][0]
        rows[s["doc"]["id"]] = {"output": raw.strip(), "pred": None if filt == "[invalid]" else filt,
                                "correct": bool(s["exact_match"])}
    return wall, {"rows": rows, "accuracy": res["results"]["cotdistill_crosscheck"].get("exact_match,answer-line")}


def agreement(a: dict, b: dict, ids: list[str]) -> dict:
    """Item-level agreement of two runs' rows: texts, strict answers, correctness."""
    from cotdistill import answers

    text = sum(a[i]["output"] == b[i]["output"] for i in ids)
    corr = sum(bool(a[i]["correct"]) == bool(b[i]["correct"]) for i in ids)
    with_answer = [i for i in ids if a[i].get("pred") is not None or b[i].get("pred") is not None]

    def same(x, y):
        return (x is None and y is None) or (x is not None and y is not None and answers.equal(str(x), str(y), "number"))

    ans = sum(same(a[i].get("pred"), b[i].get("pred")) for i in with_answer)
    diff = [{"id": i, "a": a[i]["output"][-160:], "b": b[i]["output"][-160:], "a_pred": a[i].get("pred"),
             "b_pred": b[i].get("pred"), "a_correct": a[i]["correct"], "b_correct": b[i]["correct"]}
            for i in ids if a[i]["output"] != b[i]["output"] or bool(a[i]["correct"]) != bool(b[i]["correct"])]
    return {"n": len(ids), "texts_identical": text, "correctness_agrees": corr,
            "answers_agree": ans, "items_with_an_answer": len(with_answer), "differences": diff[:20]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="model directory (trained by cotdistill train, or save_pretrained)")
    ap.add_argument("--task", default="svamp")
    ap.add_argument("--split", default="test")
    ap.add_argument("--data-dir", default=os.environ.get("COTDISTILL_DATA"))
    ap.add_argument("--limit", type=int)
    ap.add_argument("--max-new-tokens", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lm-eval-batch-sizes", default="64,1",
                    help="lm-eval runs, one per batch size (1 is lm-eval's default)")
    ap.add_argument("--skip", default="", help="comma list of runs to leave out: single, lm-eval")
    ap.add_argument("--bf16", action="store_true", help="also run cotdistill with bf16 weights")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from cotdistill.tasks import get_task

    items = get_task(args.task, data_dir=args.data_dir).load(args.split)
    if args.limit:
        items = items[: args.limit]
    ids = [e.id for e in items]
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        wall, r = run_cotdistill(args.model, items, args.max_new_tokens, "float32", tmp / "ours")
        runs["cotdistill"] = {"wall_s": wall, **r}
        print(f"cotdistill      {wall:8.1f} s  accuracy {r['metrics']['accuracy']:.4f}", flush=True)
        if args.bf16:
            wall, r = run_cotdistill(args.model, items, args.max_new_tokens, "bfloat16", tmp / "bf16")
            runs["cotdistill-bf16"] = {"wall_s": wall, **r}
            print(f"cotdistill-bf16 {wall:8.1f} s  accuracy {r['metrics']['accuracy']:.4f}", flush=True)
        if "lm-eval" not in skip:
            for bs in [int(b) for b in args.lm_eval_batch_sizes.split(",") if b.strip()]:
                (tmp / f"lm{bs}").mkdir()
                wall, r = run_lm_eval(args.model, items, args.max_new_tokens, bs, tmp / f"lm{bs}")
                runs[f"lm-eval-bs{bs}"] = {"wall_s": wall, **r}
                print(f"lm-eval-bs{bs:<5d} {wall:8.1f} s  exact_match {r['accuracy']}", flush=True)
        if "single" not in skip:
            wall, r = run_single(args.model, items, args.max_new_tokens)
            runs["single"] = {"wall_s": wall, **r}
            print(f"single          {wall:8.1f} s", flush=True)

    ours = runs["cotdistill"]["rows"]
    report = {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "machine": {"cpu": cpu_name(), "threads": args.threads, "python": platform.python_version(),
                    "torch": torch.__version__, "transformers": __import__("transformers").__version__},
        "model": args.model, "task": args.task, "split": args.split, "n": len(items),
        "max_new_tokens": args.max_new_tokens,
        "cotdistill": {k: runs["cotdistill"]["metrics"].get(k) for k in
                       ("accuracy", "accuracy_lenient", "n_no_answer", "n_length_capped", "n_capped_without_answer",
                        "mean_output_tokens", "tokens_per_s", "generate_s", "rules")},
        "wall_s": {k: round(v["wall_s"], 1) for k, v in runs.items()},
        # whole calls (model loading included) for cotdistill and lm-eval; generation only for single
        "speedup": {f"cotdistill vs {k}": round(v["wall_s"] / runs["cotdistill"]["wall_s"], 2)
                    for k, v in runs.items() if k != "cotdistill"},
        "speedup_generation_only": {"cotdistill vs single": round(runs["single"]["wall_s"] / runs["cotdistill"]["metrics"]["generate_s"], 2)}
        if "single" in runs else {},
        "agreement": {},
    }
    for k in runs:
        if k != "cotdistill":
            report["agreement"][f"cotdistill vs {k}"] = agreement(ours, runs[k]["rows"], ids)
        if k.startswith("lm-eval"):
            report[f"{k}_exact_match"] = runs[k]["accuracy"]
    for k, a in report["agreement"].items():
        print(f"{k}: texts {a['texts_identical']}/{a['n']}, correctness {a['correctness_agrees']}/{a['n']}, "
              f"answers {a['answers_agree']}/{a['items_with_an_answer']}")
    for k, v in report["speedup"].items():
        print(f"{k}: {v}x faster")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
