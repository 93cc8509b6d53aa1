"""Zero-shot evaluation: batched generation, answer scoring, confidence intervals, per-item predictions.

``evaluate(model, examples | task, out_dir=...)`` renders each question with the prompt template
saved with the model (``cotdistill_template.json``), decodes every item to EOS or to
``max_new_tokens`` (greedy with continuous batching, :mod:`cotdistill.decoding`; beam search with
padded ``model.generate`` batches) and stores its raw response; the scoring step
(:mod:`cotdistill.score`, the same one ``cotdistill rescore`` runs) then grades every response and writes::

    OUT/predictions.jsonl   one line per item: id, question, gold, output, pred, correct (strict),
                            rule, pred_lenient, correct_lenient, output_tokens, finish ("eos" | "length")
    OUT/metrics.json        n, accuracy (strict) with its 95 % bootstrap interval, lenient accuracy,
                            no-answer rate, capped outputs, extraction rules, mean output tokens,
                            tokens/s, wall time, model, task, split, decoding, template
    OUT/eval_config.json    what was evaluated (a rerun with other settings refuses to mix results)

Strict scoring reads only the answer line the prompt asks for ("The answer is X", the last one);
the lenient score also takes fallbacks such as the last number and is reported beside it, never
instead of it. An output stopped by the token cap has an answer only if it wrote an answer line.
Responses are appended as items finish (ungraded until the scoring step); a rerun skips the ids
already in predictions.jsonl.
:func:`compare` gives a paired comparison (bootstrap interval of the difference, exact McNemar).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import ConfigDict, Field, ValidationError, field_validator

from .artifacts import RunRecord, check as check_out, claim, model_key
from .progress import Progress, Reporter
# the records and their one reader / writer (re-exported: `from cotdistill.evaluate import read_predictions`)
from .records import (METRICS_FILE, PREDICTIONS_FILE, Prediction, append_predictions, read_metrics,  # noqa: F401
                      read_predictions, write_metrics, write_predictions)
# the scoring step (re-exported: `from cotdistill.evaluate import score_output, rescore`)
from .score import rescore, response, score_output, score_responses, score_run, summarize  # noqa: F401
# the student runtime (loading, prompts, decoding, log-likelihoods) is shared with select and mix
from .runtime import (DTYPES, Generation, HFGenerator, StudentRuntime, _model_label, hub_reachable,  # noqa: F401
                      load_model, parse_decoding, resolve_device, resolve_template)
from .fileio import load_yaml_mapping
from .errors import UserError, opt, switch, validation_error
from .paths import nearby
from .spec import SectionAccess
from .stats import mcnemar_exact, paired_bootstrap_ci
from .tasks.base import Example
from .template import PromptTemplate

CONFIG_FILE = "eval_config.json"

# the answer form every stage reads (strict scoring), as an instruction for an untuned model
ANSWER_INSTRUCTION = "Solve the problem step by step. End with a line of the form 'The answer is X'."
AUTO_TOKEN_BUDGET = 65_536  # auto batch size: rows x (prompt + new tokens) kept under this
AUTO_MAX_ROWS = 96


# ------------------------------------------------------------------------------------------
# configuration
# ------------------------------------------------------------------------------------------
class EvalConfig(SectionAccess):  # (a pydantic model)
    """Generation settings of one evaluation (YAML/JSON loadable; unknown fields are an error)."""

    model_config = ConfigDict(extra="forbid")

    decoding: str = Field("greedy", description="'greedy' (the paper's default) or 'beam:N' (N beams, as the paper for commonsense sets).")
    max_new_tokens: Union[int, Literal["auto"]] = Field("auto", description="Generation cap per item; an item that hits it has finish='length'. auto: 1.5 x the longest completion the model was trained on + 16 (from its train_summary.json), else 512.")
    batch_size: Union[int, Literal["auto"]] = Field("auto", description="Rows decoded at once; 'auto' keeps rows x (prompt + new tokens) <= 64k, at most 96.")
    limit: int | None = Field(None, ge=1, description="Evaluate only the first N items (in task order).")
    template: str | None = Field(None, description="Named template (plain, qa, alpaca, chat); default: the one saved with the model, else the tokenizer's chat template, else plain.")
    backend: Literal["transformers", "vllm"] = Field("transformers", description="transformers, or vllm (needs `pip install 'cotdistill[vllm]'` and a CUDA GPU).")
    cache: Literal["auto", "dynamic", "static"] = Field("auto", description="KV cache of the transformers backend; auto switches to static when outputs fill max_new_tokens.")
    instruction: str | None = Field(None, description="Text added after each question: the answer form an untuned model is asked for ('answer': the built-in 'Solve the problem step by step. End with a line of the form ...'); part of the prompt template.")
    fewshot: int = Field(0, ge=0, le=64, description="Solved examples shown before each question: the first N of the task's train split after a seeded shuffle (never the evaluated split), each answered with its gold answer line 'The answer is X'.")

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> "EvalConfig":
        """Load from YAML; unknown keys or bad values are a one-line UserError naming the file."""
        return cls.load(path)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, **overrides: Any) -> "EvalConfig":
        """A YAML file (or nothing) with ``overrides`` (command-line flags) on top, validated once;
        unknown keys or bad values are a one-line UserError naming the file."""
        data = load_yaml_mapping(path, ", ".join(cls.model_fields)) if path is not None else {}
        given = {k: v for k, v in overrides.items() if v is not None}
        data.update(given)
        source = str(path) if path is not None else "the command-line options"
        if path is not None and given:
            source += " (with the command-line options)"
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise validation_error(e, source, cls) from None

    @field_validator("instruction")
    @classmethod
    def _instruction(cls, v: str | None) -> str | None:
        return ANSWER_INSTRUCTION if v is not None and v.strip().lower() == "answer" else (v or None)

    @field_validator("decoding")
    @classmethod
    def _check_decoding(cls, v: str) -> str:
        try:
            parse_decoding(v)
        except UserError as e:
            raise ValueError(str(e)) from None
        return v

    @field_validator("batch_size")
    @classmethod
    def _check_bs(cls, v):
        if v != "auto" and int(v) < 1:
            raise ValueError("batch_size must be 'auto' or a positive integer")
        return v


def parse_batch_size(v: str | int) -> int | Literal["auto"]:
    if isinstance(v, int):
        if v < 1:
            raise UserError(f"{opt('batch_size')} {v}: use 'auto' or a positive integer")
        return v
    s = str(v).strip().lower()
    if s == "auto":
        return "auto"
    if s.isdigit() and int(s) >= 1:
        return int(s)
    raise UserError(f"{opt('batch_size')} {v!r}: use 'auto' or a positive integer")


class VLLMGenerator:
    """vLLM backend (optional extra). Generates to EOS or the cap, as the transformers backend does."""

    def __init__(self, model_path: str, tokenizer, template: PromptTemplate, decoding: str = "greedy", max_new_tokens: int = 512,
                 dtype: str = "float32"):
        try:
            from vllm import LLM, SamplingParams  # noqa: F401
        except ImportError:
            raise UserError("backend 'vllm' is not installed: `pip install 'cotdistill[vllm]'` (needs a CUDA GPU), or use " + opt("backend") + " transformers") from None
        if parse_decoding(decoding) != 1:
            raise UserError(f"the vllm backend supports greedy decoding only; use {opt('backend')} transformers for beam:N")
        self.tok = tokenizer
        self.template = template
        self.max_new_tokens = max_new_tokens
        self.add_special_tokens = template.kind != "chat"
        ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
        try:  # extra EOS ids of instruct models (as the transformers backend uses them)
            from transformers import GenerationConfig

            e = GenerationConfig.from_pretrained(str(model_path)).eos_token_id
            ids.update(e if isinstance(e, (list, tuple)) else ([e] if e is not None else []))
        except (OSError, ValueError):
            pass
        self.eos_ids = sorted(ids)
        self.llm = LLM(model=str(model_path), seed=0, dtype=dtype)
        self.params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, skip_special_tokens=True,
                                     stop_token_ids=self.eos_ids)

    def prompt_ids(self, question: str) -> list[int]:
        text = self.template.render_prompt(question, self.tok)
        return self.tok(text, add_special_tokens=self.add_special_tokens)["input_ids"]

    def generate(self, prompts: Sequence[Sequence[int]]) -> list[Generation]:
        outs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompts], self.params, use_tqdm=False)
        res = []
        for o in outs:
            c = o.outputs[0]
            toks = list(c.token_ids)
            finish = "length" if c.finish_reason == "length" else "eos"
            n = len(toks)
            if finish == "eos" and (not toks or toks[-1] not in self.eos_ids):
                n += 1  # vLLM leaves the EOS id out of token_ids; count it as transformers does
            res.append(Generation(output=self.tok.decode(toks, skip_special_tokens=True).strip(), output_tokens=n, finish=finish))
        return res


# ------------------------------------------------------------------------------------------
# the evaluation
# ------------------------------------------------------------------------------------------
def evaluate(*args: Any, **kwargs: Any) -> dict:
    """Evaluate a model zero-shot; see :func:`_evaluate` for the arguments."""
    with contextlib.ExitStack() as stack:  # holds the claim on out_dir until the evaluation ends
        return _evaluate(*args, _stack=stack, **kwargs)


def _evaluate(
    model: Any,
    examples: list[Example] | None = None,
    task: str | None = None,
    split: str = "test",
    out_dir: str | os.PathLike | None = None,
    decoding: str = "greedy",
    max_new_tokens: int | Literal["auto"] = "auto",
    batch_size: int | Literal["auto"] = "auto",
    limit: int | None = None,
    progress: Progress = True,
    *,
    tokenizer: Any = None,
    template: str | PromptTemplate | None = None,
    data_dir: str | os.PathLike | None = None,
    backend: Literal["transformers", "vllm"] = "transformers",
    overwrite: bool = False,
    device: str | None = "auto",
    dtype: str = "float32",
    cache: Literal["auto", "dynamic", "static"] = "auto",
    instruction: str | None = None,
    fewshot: int = 0,
    config: EvalConfig | None = None,
    _stack: contextlib.ExitStack | None = None,
) -> dict:
    """Evaluate a model zero-shot and return its metrics (also written to ``out_dir/metrics.json``).

    Generation settings come from the keywords, or all at once from ``config`` (an
    :class:`EvalConfig`, e.g. ``EvalConfig.from_yaml(path)``), which then takes precedence.

    ``model``: a model directory, a hub name, or a loaded ``PreTrainedModel`` (then pass
    ``tokenizer``; the template is then ``template`` or the tokenizer default, or the one saved in
    the model's ``name_or_path`` directory). ``examples`` (any task, e.g. ``arith``) or ``task`` +
    ``split`` (+ ``data_dir``) give the items. ``device`` applies to models loaded here (``auto``:
    the GPU when there is one); a loaded model stays where it is. With ``out_dir`` predictions are appended as batches
    finish and a rerun resumes; without it nothing is written. ``out_dir`` is claimed as an
    evaluate run (:mod:`cotdistill.artifacts`): another kind of directory is refused, and a second
    process on it stops at once.
    """
    t_start = time.perf_counter()
    if out_dir is not None:
        check_out(out_dir, "evaluate")  # before any model is loaded
    if config is not None:  # an EvalConfig (e.g. from YAML) sets every generation setting at once
        decoding, max_new_tokens, batch_size, limit = config.decoding, config.max_new_tokens, config.batch_size, config.limit
        backend, cache = config.backend, config.cache
        template = config.template if config.template is not None else template
        instruction, fewshot = config.instruction, config.fewshot
    parse_decoding(decoding)
    if cache not in ("auto", "dynamic", "static"):
        raise UserError(f"{opt('cache')} {cache!r}: choose auto, dynamic or static")
    max_new_tokens = parse_max_new_tokens(max_new_tokens)
    if batch_size != "auto":
        batch_size = parse_batch_size(batch_size)
    if backend not in ("transformers", "vllm"):
        raise UserError(f"backend {backend!r}: choose transformers or vllm")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise UserError(f"limit {limit!r}: use a positive integer")
    cfg = EvalConfig(decoding=decoding, max_new_tokens=max_new_tokens, batch_size=batch_size, limit=limit,
                     template=template if isinstance(template, str) else None, backend=backend, cache=cache,
                     instruction=instruction, fewshot=fewshot)

    # ---- items
    if examples is None:
        if not task:
            raise UserError(f"nothing to evaluate: pass {opt('task')} NAME (with {opt('split')}) or a list of examples")
        from .tasks import get_task

        examples = get_task(task, data_dir=data_dir).load(split)
    examples = list(examples)
    n_split = len(examples)
    if limit is not None:
        examples = examples[:limit]
    if not examples:
        raise UserError(f"no examples to evaluate (empty split or {opt('limit')} 0)")
    seen: set[str] = set()
    for ex in examples:
        if ex.id in seen:
            raise UserError(f"duplicate example id {ex.id!r} in task {ex.task!r}: ids must be unique per evaluation")
        seen.add(ex.id)
    task_label = task or ",".join(sorted({e.task for e in examples}))
    split_label = split if task else ",".join(sorted({e.split for e in examples}))

    # ---- model
    model_dir: Path | None = None
    if isinstance(model, (str, os.PathLike)):
        model_label = str(model)
        if Path(model).expanduser().is_dir():
            model_dir = Path(model).expanduser().resolve()
            model_label = str(model_dir)  # one spelling per directory, so reruns from elsewhere resume
        if backend == "vllm":
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(str(model))
            mdl = None
        else:
            mdl, tok = load_model(model, device, dtype)
    else:
        mdl = model
        tok = tokenizer
        if tok is None:
            raise UserError("evaluate(model=<loaded model>) needs tokenizer=...")
        model_label = _model_label(model)
        cand = Path(model_label)
        if cand.is_dir():
            model_dir = cand
        if backend == "vllm":
            raise UserError("the vllm backend needs a model directory or hub name, not a loaded model")
        mdl.eval()
    tpl, tpl_label = resolve_template(template, model_dir, tok)
    if cfg.instruction or cfg.fewshot:
        tpl = tpl.model_copy(update={"instruction": cfg.instruction or None,
                                     "exemplars": _exemplars(task, data_dir, split, examples, cfg.fewshot)})
    cap_source = "set"
    if cfg.max_new_tokens == "auto":
        cap, cap_source = auto_max_new_tokens(model_dir)
        cfg = cfg.model_copy(update={"max_new_tokens": cap})
    # the generator is built before anything is written (a missing vllm fails with nothing on disk)
    if backend == "vllm":
        gen: Any = VLLMGenerator(str(model), tok, tpl, cfg.decoding, cfg.max_new_tokens, dtype=dtype)
    else:
        gen = StudentRuntime(mdl, tok, tpl, cfg.decoding, cfg.max_new_tokens, cache_implementation=cfg.cache)

    # ---- output dir and resume
    # the model's identity beside its name: a retrained model at the same path is another evaluation
    ident = model_key(model_dir) if model_dir is not None else (
        model_key(Path(model_label).expanduser()) if Path(model_label).expanduser().is_file() else None)
    run_sig = {
        "model": model_label,
        **({"model_key": ident} if ident else {}),
        "task": task_label,
        "split": split_label,
        "decoding": cfg.decoding,
        "max_new_tokens": cfg.max_new_tokens,
        "template": tpl.model_dump(),
        "backend": cfg.backend,
        "dtype": str(next(mdl.parameters()).dtype).replace("torch.", "") if mdl is not None else dtype,
    }
    done: dict[str, Prediction] = {}
    pred_path = None
    if out_dir is not None:
        out = Path(out_dir)
        if _stack is not None:
            _stack.enter_context(claim(out, "evaluate"))
        else:
            out.mkdir(parents=True, exist_ok=True)
        pred_path = out / PREDICTIONS_FILE
        cfg_path = out / CONFIG_FILE
        if overwrite:
            for f in (PREDICTIONS_FILE, METRICS_FILE, CONFIG_FILE):
                (out / f).unlink(missing_ok=True)
        record = RunRecord(cfg_path, run_sig, optional=("model_key",))  # (older directories did not record the model's key)
        diff = record.differences()
        if diff:
            k = diff[0]
            old = record.stored() or {}
            what = ("the model at this path changed since (retrained or replaced)" if k == "model_key"
                    else f"{k}: {old.get(k)!r} vs now {run_sig.get(k)!r}")
            raise UserError(f"{out} holds predictions of another evaluation ({what}); "
                            f"use another {opt('out_dir', 'out')} or pass {switch('overwrite')}")
        if not cfg_path.exists() and pred_path.exists() and pred_path.stat().st_size:
            raise UserError(f"{pred_path} exists without {CONFIG_FILE}: use another {opt('out_dir', 'out')} or pass {switch('overwrite')}")
        if not cfg_path.exists() or (record.stored() or {}).get("limit") != limit:
            record.write(extra={"limit": limit})  # (what the latest run was limited to: not part of the identity)
        if pred_path.exists():
            wanted = {e.id for e in examples}
            for r in read_predictions(pred_path, repair=True):
                if r.id in wanted:
                    done[r.id] = r

    todo = [e for e in examples if e.id not in done]

    # ---- generate
    new_rows: list[Prediction] = []
    gen_s = 0.0
    if todo:
        enc = [(e, gen.prompt_ids(e.question)) for e in todo]
        # longest prompts first: less padding per prefill batch, and memory trouble shows at once
        enc.sort(key=lambda x: -len(x[1]))
        longest = len(enc[0][1])
        with Reporter(progress, "evaluate", task_label, len(examples), completed=len(done), unit="items") as rep:
            pending: list[Prediction] = []
            t0 = last_flush = time.perf_counter()
            if backend == "vllm":
                stream = enumerate(gen.generate([p for _, p in enc]))
            else:
                rows_at_once = cfg.batch_size if cfg.batch_size != "auto" else _auto_rows(longest, cfg.max_new_tokens)
                stream = gen.stream([p for _, p in enc], rows_at_once)
            for i, g in stream:
                # the raw response; the scoring step below grades every item once decoding is done
                pending.append(response(enc[i][0], g.output, g.finish, g.output_tokens))
                now = time.perf_counter()
                if len(pending) >= 32 or now - last_flush > 10 or len(new_rows) + len(pending) == len(enc):
                    if pred_path is not None:  # appended as items finish: a rerun resumes
                        append_predictions(pred_path, pending)
                    new_rows.extend(pending)
                    rep.update(advance=len(pending))
                    pending, last_flush = [], now
            gen_s = time.perf_counter() - t0

    # ---- score: a pure step over the stored responses (the one `rescore` runs), so rows kept from
    # an earlier run are graded by the current answer checker like the new ones
    new_tokens = sum(r.output_tokens or 0 for r in new_rows)
    old = read_metrics(out_dir) if out_dir is not None else None
    prev = old.to_dict() if old is not None else {}
    import torch

    run_fields = {
        "tokens_per_s": (new_tokens / gen_s) if gen_s > 0 else prev.get("tokens_per_s"),
        "generate_s": gen_s if new_rows else prev.get("generate_s"),
        "wall_s": time.perf_counter() - t_start,
        "n_generated_this_run": len(new_rows),
        "model": model_label,
        "task": task_label,
        "split": split_label,
        "decoding": cfg.decoding,
        "max_new_tokens": cfg.max_new_tokens,
        "max_new_tokens_source": cap_source,
        "batch_size": cfg.batch_size,
        "limit": limit,  # the first N items of the split (None: all of them)
        "n_split": n_split,
        "template": tpl.kind,
        "template_source": tpl_label + (" + instruction" if cfg.instruction else "")
        + (f" + {cfg.fewshot}-shot" if cfg.fewshot else ""),  # saved, custom, a name, or tokenizer default
        "backend": cfg.backend,
        "dtype": str(next(mdl.parameters()).dtype).replace("torch.", "") if mdl is not None else dtype,
        "device": str(next(mdl.parameters()).device) if mdl is not None else "vllm",
        "torch_threads": torch.get_num_threads(),
    }
    if out_dir is not None:  # grades predictions.jsonl in place and writes metrics.json
        return score_run(out_dir, examples, keep_others=True, extra=run_fields)
    by_id = dict(done)
    by_id.update({r.id: r for r in new_rows})
    m = summarize(score_responses([by_id[e.id] for e in examples], examples))
    m.update(run_fields)
    return m


DEFAULT_MAX_NEW_TOKENS = 512
MAX_AUTO_NEW_TOKENS = 8192


def _exemplars(task: str | None, data_dir, split: str | None, evaluated: list, n: int) -> list[tuple[str, str]]:
    """``n`` solved examples of ``task``'s train split (seeded shuffle, seed 0): (question, gold
    answer line). Never an item of the evaluated split: a task without a train split is an error."""
    if n == 0:
        return []
    import random

    from .prompts import answer_only
    from .tasks import get_task

    name = task or (evaluated[0].task if evaluated else None)
    if split == "train":
        raise UserError(f"{opt('fewshot')} takes its examples from the train split: evaluate another split")
    try:
        pool = list(get_task(name, data_dir=data_dir).load("train"))
    except UserError as e:
        raise UserError(f"{opt('fewshot')} {n}: the {name} task has no train split to take examples from ({e})") from None
    seen = {e.question for e in evaluated}
    pool = [e for e in pool if e.question not in seen]
    random.Random(0).shuffle(pool)
    if len(pool) < n:
        raise UserError(f"{opt('fewshot')} {n}: the {name} train split has only {len(pool)} examples")
    return [(e.question, answer_only(e)) for e in pool[:n]]


def parse_max_new_tokens(value: Any, name: str = "max_new_tokens") -> int | Literal["auto"]:
    """``auto`` or a positive integer (also from a CLI string); anything else is a UserError."""
    if value == "auto":
        return "auto"
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if isinstance(value, bool) or n < 1 or (isinstance(value, float) and value != n):
        raise UserError(f"{name} {value!r}: use auto or a positive integer")
    return n


def cap_for_longest(longest: int) -> int:
    """The generation cap for outputs like ones ``longest`` tokens long: 1.5 x that + 16 (room for a
    longer answer than any seen, so a cap rarely cuts a real one). The one home of this rule:
    evaluation's ``auto`` cap, select's validation scoring, on-policy and preference sampling."""
    return int(1.5 * longest) + 16


def auto_max_new_tokens(model_dir: str | os.PathLike | None) -> tuple[int, str]:
    """The generation cap for a model: 1.5 x the longest completion it was trained on + 16 (room
    for a longer answer than any seen, so a cap rarely cuts a real one), read from the
    ``train_summary.json`` that ``cotdistill train`` writes; 512 for any other model.
    Returns the cap and where it came from."""
    if model_dir is not None:
        path = Path(model_dir) / "train_summary.json"
        try:
            longest = int(json.loads(path.read_text(encoding="utf-8")).get("longest_completion_tokens") or 0)
        except (OSError, ValueError, TypeError, AttributeError):
            longest = 0
        if longest > 0:
            return min(MAX_AUTO_NEW_TOKENS, cap_for_longest(longest)), f"auto: 1.5 x longest training completion ({longest}) + 16"
    return DEFAULT_MAX_NEW_TOKENS, f"auto: default {DEFAULT_MAX_NEW_TOKENS} (no training lengths recorded with the model)"


def _auto_rows(longest_prompt: int, max_new_tokens: int) -> int:
    """Rows decoded at once for batch_size 'auto': rows x (prompt + new tokens) <= 64k tokens, at most 96."""
    return max(1, min(AUTO_MAX_ROWS, AUTO_TOKEN_BUDGET // (longest_prompt + max_new_tokens)))


# ------------------------------------------------------------------------------------------
# comparison
# ------------------------------------------------------------------------------------------
def _pred_path(x: str | os.PathLike) -> Path:
    p = Path(x)
    if p.is_dir():
        return p / PREDICTIONS_FILE
    if p.name == METRICS_FILE or p.suffix == ".json":
        return p.with_name(PREDICTIONS_FILE)
    return p


def compare(a: str | os.PathLike, b: str | os.PathLike) -> dict:
    """Paired comparison of two evaluations (directories, metrics.json or predictions.jsonl) on their
    shared item ids: accuracy of each, difference B − A, 95 % paired bootstrap interval, exact McNemar p."""
    pa, pb = _pred_path(a), _pred_path(b)
    for p, orig in ((pa, a), (pb, b)):
        if not p.exists():
            raise UserError(f"{orig}: no {PREDICTIONS_FILE} beside it ({p}){nearby(orig, PREDICTIONS_FILE)}; pass an evaluation directory or its metrics.json")
    ra = {r.id: r.correct for r in read_predictions(pa, graded=True)}
    rb = {r.id: r.correct for r in read_predictions(pb, graded=True)}
    shared = [i for i in ra if i in rb]
    if not shared:
        raise UserError(f"{pa} and {pb} share no item ids: compare evaluations of the same task and split")
    xa = [ra[i] for i in shared]
    xb = [rb[i] for i in shared]
    n = len(shared)
    acc_a, acc_b = sum(xa) / n, sum(xb) / n
    lo, hi = paired_bootstrap_ci([float(v) for v in xa], [float(v) for v in xb])
    mc = mcnemar_exact(xa, xb)
    return {
        "a": str(pa.parent), "b": str(pb.parent),
        "n_shared": n, "n_only_a": len(ra) - n, "n_only_b": len(rb) - n,
        "accuracy_a": acc_a, "accuracy_b": acc_b, "difference": acc_b - acc_a,
        "ci_low": lo, "ci_high": hi,
        "only_a_correct": mc["only_a"], "only_b_correct": mc["only_b"], "mcnemar_p": mc["p_value"],
    }


evaluate.__doc__ = _evaluate.__doc__
evaluate.__wrapped__ = _evaluate  # inspect.signature / help() show the real arguments
