"""One way to run a student: load it (device- and dtype-aware), render its prompts, decode, and
score continuations, the same for the final test (:mod:`cotdistill.evaluate`), supervision
selection (:mod:`cotdistill.select`) and difficulty probes (:mod:`cotdistill.mix`).

:class:`StudentRuntime` follows lm-evaluation-harness's ``LM`` interface:
``generate_until(prompts, max_new_tokens)`` decodes every prompt to EOS or the cap (greedy with
continuous batching, or beam search), and ``loglikelihood(requests)`` returns the summed
log-probability of each continuation after its context. Outputs are never cut at a stop string:
a model's last answer line can come after text that looks like an answer.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from .errors import UserError, opt
from .students import hub_reachable  # used by load_model; evaluate re-exports it
from .template import NAMED_TEMPLATES, PromptTemplate


def parse_decoding(decoding: str) -> int:
    """Number of beams for ``greedy`` (1) or ``beam:N``; a bad value is a one-line UserError."""
    d = str(decoding).strip().lower()
    if d == "greedy":
        return 1
    m = re.fullmatch(r"beam:(\d+)", d)
    if m and int(m.group(1)) >= 1:
        return int(m.group(1))
    raise UserError(f"unknown decoding {decoding!r}: use 'greedy' or 'beam:N' (e.g. beam:5)")


def resolve_device(device: str | None = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; anything else is passed to torch."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"{opt('device')} {device!r}: use auto, cpu, cuda or cuda:N") from None
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"{opt('device')} {device}: no CUDA GPU is visible; use {opt('device')} cpu")
    return str(device)


DTYPES = ("float32", "bfloat16", "float16", "auto")


def load_model(name_or_path: str | os.PathLike, device: str | None = "auto", dtype: str = "float32"):
    """Load ``(model, tokenizer)`` from a local directory or a hub name, fast and with a one-line
    error offline; weights in ``dtype`` (``auto``: as stored) on ``device`` (``auto``: the GPU when
    there is one). float32 (default) keeps greedy outputs independent of the batch size."""
    import torch

    from .students import load_pretrained, resolve_student

    if dtype not in DTYPES:
        raise UserError(f"{opt('dtype')} {dtype!r}: choose one of {', '.join(DTYPES)}")
    dkw = {"dtype": "auto" if dtype == "auto" else getattr(torch, dtype)}

    src = resolve_student(str(name_or_path))
    if src.kind == "local":
        p = Path(src.path)
        if not p.is_dir() or not (p / "config.json").exists():
            from .students import local_path_hint

            raise UserError(f"{opt('model')} {p}: not a model directory (no config.json){local_path_hint(str(p))}; pass the directory written by `cotdistill train`, save_pretrained, or a .gguf file")
        model, tok = load_pretrained(str(p), **dkw)
    elif src.kind == "hub":
        # a hub name: avoid minutes of retries when the hub cannot be reached (use the local cache only)
        kw = {} if hub_reachable() else {"local_files_only": True}
        model, tok = load_pretrained(str(name_or_path), **kw, **dkw)
    else:  # a GGUF file or a short name (dequantized on load)
        model, tok = load_pretrained(str(name_or_path), **dkw)
    dev = resolve_device(device)
    if dev != "cpu":
        model.to(dev)
    model.eval()
    return model, tok


def resolve_template(template: str | PromptTemplate | None, model_dir: Path | None, tokenizer) -> tuple[PromptTemplate, str]:
    """``(template, source)``: explicit (``custom`` or the name) > ``saved`` with the model >
    ``tokenizer default`` (its chat template, else plain)."""
    if isinstance(template, PromptTemplate):
        return template, "custom"
    if template:
        if template not in NAMED_TEMPLATES:
            raise UserError(f"unknown template {template!r}; choose one of {', '.join(NAMED_TEMPLATES)}")
        t = NAMED_TEMPLATES[template]
        if t.kind == "chat" and not getattr(tokenizer, "chat_template", None):
            raise UserError(f"{opt('template')} chat: this tokenizer has no chat template; use plain, qa or alpaca")
        return t, template
    if model_dir is not None:
        try:
            saved = PromptTemplate.load(model_dir)
        except (ValidationError, json.JSONDecodeError) as e:
            raise UserError(f"{model_dir}/cotdistill_template.json is invalid ({str(e).splitlines()[0]}); fix it or pass {opt('template')}") from None
        if saved is not None:
            return saved, "saved"
    t = PromptTemplate.for_tokenizer(tokenizer)
    return t, "tokenizer default"


def _model_label(model: Any) -> str:
    cfg = getattr(model, "config", None)
    return str(getattr(model, "name_or_path", "") or getattr(cfg, "_name_or_path", "") or type(model).__name__)


class Generation(BaseModel):
    output: str
    output_tokens: int  # generated tokens, the EOS included when there is one
    finish: Literal["eos", "length"]  # length: stopped by max_new_tokens


class StudentRuntime:
    """A student ready to run (transformers): every output runs to EOS or to ``max_new_tokens``
    (no early stop that could cut a model off before its final answer line).

    ``StudentRuntime.load(model_dir)`` loads a model directory, hub name or GGUF file with the
    prompt template saved beside it; the constructor wraps a model already loaded.

    Greedy decoding of full-attention models uses continuous batching
    (:func:`cotdistill.decoding.greedy_stream`): up to ``max_rows`` prompts decode at once and a
    finished row is replaced by a waiting prompt, so a long output does not hold a whole batch.
    Beam search, and models whose cache is not a plain full-attention cache, use
    ``model.generate`` on left-padded batches (``cache_implementation``: ``"dynamic"``,
    ``"static"``, or ``"auto"``: dynamic, switching to static once a batch's mean output length
    reaches 3/4 of ``max_new_tokens``).
    """

    def __init__(self, model, tokenizer, template: PromptTemplate, decoding: str = "greedy", max_new_tokens: int = 512,
                 cache_implementation: Literal["auto", "dynamic", "static"] | None = "auto", max_rows: int = 64):
        from .decoding import supports_streaming

        self.model = model
        if cache_implementation not in (None, "auto", "dynamic", "static"):
            raise UserError(f"{opt('cache')} {cache_implementation!r}: choose auto, dynamic or static")
        self.cache_implementation = cache_implementation or "dynamic"
        self._use_static = self.cache_implementation == "static"
        self.tok = tokenizer
        self.template = template
        self.num_beams = parse_decoding(decoding)
        self.max_new_tokens = max_new_tokens
        self.max_rows = max_rows
        self.streaming = self.num_beams == 1 and supports_streaming(model)
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        self.add_special_tokens = template.kind != "chat"  # chat templates render their own BOS
        # every id that ends a sequence: the tokenizer's EOS plus the model's generation config
        # (instruct models list several, e.g. <|eot_id|>)
        ids: set[int] = set()
        for src in (getattr(getattr(model, "generation_config", None), "eos_token_id", None), self.tok.eos_token_id):
            if src is not None:
                ids.update(src if isinstance(src, (list, tuple)) else [src])
        self.eos_ids = sorted(ids)

    def prompt_ids(self, question: str) -> list[int]:
        text = self.template.render_prompt(question, self.tok)
        return self.tok(text, add_special_tokens=self.add_special_tokens)["input_ids"]

    def stream(self, prompts: Sequence[Sequence[int]], batch_size: int | None = None) -> Iterator[tuple[int, Generation]]:
        """Yield ``(index, Generation)`` for every prompt as it finishes (any order)."""
        if self.streaming:
            from .decoding import greedy_stream

            for i, toks, finish in greedy_stream(self.model, prompts, self.eos_ids, self.max_new_tokens,
                                                 max_rows=batch_size or self.max_rows, pad_id=self.tok.pad_token_id):
                yield i, self._generation(toks, finish)
            return
        bs = batch_size or self.max_rows
        for start in range(0, len(prompts), bs):
            for j, g in enumerate(self.generate(prompts[start : start + bs])):
                yield start + j, g

    def generate(self, prompts: Sequence[Sequence[int]]) -> list[Generation]:
        """One padded ``model.generate`` call over ``prompts`` (every row to EOS or the cap)."""
        import torch

        pad = self.tok.pad_token_id
        T = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), T), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), T), dtype=torch.long)
        for i, p in enumerate(prompts):  # left padding
            ids[i, T - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[i, T - len(p) :] = 1
        device = next(self.model.parameters()).device
        ids, mask = ids.to(device), mask.to(device)
        kw: dict[str, Any] = dict(
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            num_beams=self.num_beams,
            pad_token_id=pad,
            eos_token_id=self.eos_ids,
            # sampling knobs a hub generation_config may carry are irrelevant for greedy/beam
            temperature=None,
            top_p=None,
            top_k=None,
        )
        if self.num_beams > 1:
            kw["early_stopping"] = True
        elif self._use_static:
            kw["cache_implementation"] = "static"
        with torch.inference_mode():
            out = self.model.generate(input_ids=ids, attention_mask=mask, **kw)
        res = []
        eos_ids = set(self.eos_ids)
        for row in out[:, T:].tolist():
            # the first EOS ends the output (what follows is padding, even when pad == EOS)
            end = next((k + 1 for k, t in enumerate(row) if t in eos_ids), None)
            if end is not None:
                res.append(self._generation(row[:end], "eos"))
            else:
                while row and row[-1] == pad:  # a beam that ended early is padded
                    row = row[:-1]
                res.append(self._generation(row, "length" if len(row) >= self.max_new_tokens else "eos"))
        if self.cache_implementation == "auto" and res:
            mean = sum(g.output_tokens for g in res) / len(res)
            self._use_static = mean >= 0.75 * self.max_new_tokens
        return res

    def _generation(self, toks: list[int], finish: str) -> Generation:
        text = self.tok.decode(toks, skip_special_tokens=True)
        return Generation(output=text.strip(), output_tokens=len(toks), finish=finish)

    # ---- the lm-evaluation-harness style interface ---------------------------------------
    @classmethod
    def load(cls, model: str | os.PathLike, *, device: str | None = "auto", dtype: str = "float32",
             template: str | PromptTemplate | None = None, decoding: str = "greedy", max_new_tokens: int = 512,
             cache_implementation: Literal["auto", "dynamic", "static"] | None = "auto") -> "StudentRuntime":
        """Load ``model`` (directory, hub name, ``.gguf`` file or short name) on ``device`` in
        ``dtype``, with its saved prompt template (else ``template``, else the tokenizer's)."""
        mdl, tok = load_model(model, device, dtype)
        p = Path(str(model)).expanduser()
        tpl, _ = resolve_template(template, p if p.is_dir() else None, tok)
        return cls(mdl, tok, tpl, decoding, max_new_tokens, cache_implementation=cache_implementation)

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    def completion_ids(self, text: str, eos: bool = False) -> list[int]:
        """Token ids of ``text`` as a completion is written after its prompt (as training writes it)."""
        ids = self.tok(self.template.render_completion(text), add_special_tokens=False)["input_ids"]
        return ids + [self.tok.eos_token_id] if eos else ids

    def generate_until(self, prompts: Sequence[str | Sequence[int]], max_new_tokens: int | None = None,
                       batch_size: int | None = None) -> list[Generation]:
        """Decode every prompt (a question, rendered with the template, or prompt token ids) to EOS
        or ``max_new_tokens``; results in the order of ``prompts``."""
        ids = [self.prompt_ids(p) if isinstance(p, str) else list(p) for p in prompts]
        keep = self.max_new_tokens
        if max_new_tokens is not None:
            self.max_new_tokens = int(max_new_tokens)
        try:
            out: list[Generation | None] = [None] * len(ids)
            for i, g in self.stream(ids, batch_size):
                out[i] = g
        finally:
            self.max_new_tokens = keep
        return out  # type: ignore[return-value]

    def loglikelihood(self, requests: Sequence[tuple[Sequence[int], Sequence[int]]],
                      batch_size: int = 64) -> list[tuple[float, int]]:
        """``(sum of log-probabilities, number of tokens)`` of each continuation after its context,
        both given as token ids (batched, right-padded, float32 log-softmax)."""
        import torch

        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id
        out: list[tuple[float, int]] = []
        dev = self.device
        with torch.inference_mode():
            for b in range(0, len(requests), batch_size):
                batch = [(list(c), list(x)) for c, x in requests[b:b + batch_size]]
                if any(not c for c, _ in batch):
                    raise ValueError("loglikelihood: every context needs at least one token (the prompt)")
                seqs = [c + x for c, x in batch]
                M = max(len(q) for q in seqs)
                x = torch.tensor([q + [pad] * (M - len(q)) for q in seqs], device=dev)
                att = torch.tensor([[1] * len(q) + [0] * (M - len(q)) for q in seqs], device=dev)
                logits = self.model(input_ids=x, attention_mask=att).logits
                for j, (c, cont) in enumerate(batch):
                    s0, s1 = len(c), len(c) + len(cont)
                    if s1 == s0:
                        out.append((0.0, 0))
                        continue
                    lp = torch.log_softmax(logits[j, s0 - 1:s1 - 1].float(), dim=-1)
                    tgt = x[j, s0:s1]
                    out.append((float(lp.gather(-1, tgt[:, None]).sum()), s1 - s0))
        return out


# the name the evaluation backend had before the runtime was shared
HFGenerator = StudentRuntime


