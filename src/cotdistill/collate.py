"""Tokenisation and batching for SFT on traces: completion-only labels, packing with a 4-D mask.

Each training example is ``prompt + completion + EOS``; ``labels`` are ``-100`` on the prompt
(and on padding) and equal to the input ids on the completion and the EOS, so the loss is taken
on the rationale and the stop token only.

Packing: the examples of one micro-batch are placed first-fit-decreasing into rows of at most
``pack_length`` tokens (longer when one example is longer); with a 4-D mask the row length is
chosen per micro-batch to balance padding against dense attention over the row. Restarting ``position_ids`` alone does
NOT isolate packed examples with sdpa attention in transformers 5.x (each example would attend to
its predecessors in the row), so the collator also builds an explicit 4-D boolean mask
``(rows, 1, T, T)`` = "same example AND causal". :func:`packing_mode` checks, on the actual model,
which mask form reproduces the logits of each example run alone; where none does (BLOOM builds its
ALiBi bias from a 2-D mask) training falls back to padded batches grouped by length. With
cotdistill's CPU attention on a wide model (``mode="segments"``) rows carry the examples'
boundaries instead of a mask, and each example attends only to itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

IGNORE = -100
PackMode = Literal["segments", "bool", "float", "position_ids"]


TAIL_TOKENS = 64  # overlong="truncate" keeps the completion's last tokens: its final answer and EOS


def encode_example(
    prompt: str,
    completion: str,
    tokenizer: Any,
    cutoff_len: int,
    add_special_tokens: bool = True,
    overlong: str = "truncate-end",
) -> dict[str, Any] | None:
    """Token ids and completion-only labels for one example (EOS appended and learned).

    The prompt and the completion are tokenised separately, exactly as evaluation will see the
    prompt. An example longer than ``cutoff_len`` (``truncated`` is then set):

    * ``overlong="drop"``: returns None (the caller counts and reports it);
    * ``overlong="truncate"``: cuts the middle of the completion and keeps its last
      ``TAIL_TOKENS`` tokens, so the final answer and the EOS are still learned (None when the
      prompt and that tail alone do not fit);
    * ``overlong="truncate-end"``: cuts the end (the answer may be lost; kept for callers that
      score or probe rather than train).
    """
    p = tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"]
    c = tokenizer(completion, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("tokenizer has no EOS token")
    truncated = len(p) + len(c) + 1 > cutoff_len
    if truncated and overlong == "drop":
        return None
    if truncated and overlong == "truncate":
        tail = min(TAIL_TOKENS, len(c))
        room = cutoff_len - 1 - len(p) - tail
        if room < 0:
            return None
        c = list(c[:room]) + list(c[len(c) - tail:])
    ids = list(p) + list(c) + [eos]
    labels = [IGNORE] * len(p) + list(c) + [eos]
    if len(ids) > cutoff_len:
        ids, labels = ids[:cutoff_len], labels[:cutoff_len]
    # the first token of an example is never a target: in a packed row it would otherwise be
    # predicted from the previous example's last token
    if labels:
        labels[0] = IGNORE
    return {"input_ids": ids, "labels": labels, "truncated": truncated}


def pack_rows(lengths: Sequence[int], pack_length: int) -> list[list[int]]:
    """First-fit-decreasing bin packing of example indices into rows of ``pack_length`` tokens.

    Deterministic (ties broken by index); an example longer than ``pack_length`` gets its own row.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    free: list[int] = []
    for i in order:
        n = lengths[i]
        for r, f in enumerate(free):
            if n <= f:
                rows[r].append(i)
                free[r] -= n
                break
        else:
            rows.append([i])
            free.append(max(pack_length - n, 0))
    return rows


def block_causal_mask(segments: torch.Tensor) -> torch.Tensor:
    """(B, T) segment ids -> (B, 1, T, T) bool mask, True where query may attend key.

    Padding has its own segment id (-1), so every query row attends at least to itself (no NaN).
    """
    T = segments.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=segments.device).tril()
    return ((segments[:, :, None] == segments[:, None, :]) & causal)[:, None]


class PackingCollator:
    """Packs a micro-batch of encoded examples into rows with a block-diagonal causal mask.

    With a 4-D mask (``bool``/``float``) attention is computed densely over each row, masked
    blocks included, so a row's cost grows as ``T * (1 + T / (6 * hidden_size))``: the collator
    tries row lengths from the longest example up to ``pack_length`` and takes the cheapest
    layout (fewer padding slots against smaller attention blocks). With ``position_ids``
    (flash-attention's varlen path, no cross-example work) rows are filled up to ``pack_length``.
    ``hidden_size=None`` means no attention term: rows are filled up to ``pack_length``.
    ``mode="segments"`` (cotdistill's CPU attention, which attends within each example): rows are
    filled up to ``pack_length`` and the batch carries the examples' boundaries as varlen
    ``cu_seq_lens_q`` / ``cu_seq_lens_k`` (cumulative lengths over the row-major flattened tokens, a
    row's padding tail counted as one more segment) and ``max_length_q`` / ``max_length_k``."""

    def __init__(self, pad_id: int, pack_length: int = 512, mode: PackMode = "bool",
                 hidden_size: int | None = None):
        self.pad_id = int(pad_id)
        self.pack_length = int(pack_length)
        self.mode = mode
        self.attn_scale = 6.0 * hidden_size if hidden_size and mode in ("bool", "float") else None

    def layout(self, lengths: Sequence[int]) -> tuple[list[list[int]], int]:
        """Rows (example indices) and the row length for one micro-batch."""
        longest = max(lengths)
        caps = [self.pack_length]
        if self.attn_scale:
            k = 1
            while k * longest < self.pack_length:
                caps.append(k * longest)
                k += 1
        best: tuple[float, list[list[int]], int] | None = None
        for cap in caps:
            rows = pack_rows(lengths, cap)
            T = max(sum(lengths[i] for i in r) for r in rows)
            cost = len(rows) * T * (1.0 + (T / self.attn_scale if self.attn_scale else 0.0))
            if best is None or cost < best[0]:
                best = (cost, rows, T)
        _, rows, T = best
        if len(rows) * T > 0.9 * len(lengths) * longest:
            # packing saves < 10 % of the token slots (long examples): one example per row is as
            # cheap and has smaller attention blocks
            rows, T = [[i] for i in range(len(lengths))], longest
        return rows, T

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        lengths = [len(f["input_ids"]) for f in features]
        rows, T = self.layout(lengths)
        R = len(rows)
        ids = torch.full((R, T), self.pad_id, dtype=torch.long)
        labels = torch.full((R, T), IGNORE, dtype=torch.long)
        pos = torch.zeros((R, T), dtype=torch.long)
        seg = torch.full((R, T), -1, dtype=torch.long)
        spans: list[int] = []  # segment lengths, row-major (a row's padding tail is one segment)
        for r, members in enumerate(rows):
            o = 0
            for k, i in enumerate(sorted(members)):
                n = lengths[i]
                ids[r, o : o + n] = torch.tensor(features[i]["input_ids"])
                labels[r, o : o + n] = torch.tensor(features[i]["labels"])
                pos[r, o : o + n] = torch.arange(n)
                seg[r, o : o + n] = k
                spans.append(n)
                o += n
            if o < T:  # padding continues the position count (only matters for position-id packing)
                pos[r, o:] = torch.arange(T - o)
                spans.append(T - o)
        batch: dict[str, Any] = {"input_ids": ids, "labels": labels, "position_ids": pos}
        if self.mode == "segments":
            batch.update(segment_kwargs(spans))
        if self.mode in ("bool", "float") and any(len(r) > 1 for r in rows):
            # one example per row (right-padded) needs no mask beyond causal: sdpa's is_causal path
            batch["attention_mask"] = block_causal_mask(seg)
        batch["n_tokens"] = torch.tensor(sum(lengths), dtype=torch.long)
        _add_topk(batch, features, [i for members in rows for i in sorted(members)])
        return batch


def segment_kwargs(spans: Sequence[int]) -> dict[str, Any]:
    """Varlen attention arguments (the names transformers' flash-attention path uses) for segments
    of these lengths laid out back to back over the row-major flattened batch."""
    cu = torch.zeros(len(spans) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(torch.tensor(spans, dtype=torch.int32), 0)
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": max(spans), "max_length_k": max(spans)}


def _add_topk(batch: dict[str, Any], features: list[dict[str, Any]], order: list[int]) -> None:
    """logit-kd: the teacher's top-k rows of the batch's targets, in the targets' row-major order."""
    if features and "kd_idx" in features[0]:
        batch["kd_idx"] = torch.cat([features[i]["kd_idx"] for i in order])
        batch["kd_logp"] = torch.cat([features[i]["kd_logp"] for i in order])


class PromptCompletionCollator:
    """on-policy: the prompts and the traces' completions as token lists (the trainer samples or
    takes the completion and builds the rows itself)."""

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = {"prompts": [list(f["input_ids"][: f["prompt_len"]]) for f in features],
                 "completions": [list(f["input_ids"][f["prompt_len"]:]) for f in features]}
        if features and "gold" in features[0]:  # preference: the student's samples are graded
            batch["golds"] = [(f["gold"], f["task"]) for f in features]
        return batch


class PaddingCollator:
    """Right-pads a micro-batch to its longest example (the fallback when packing is unsupported)."""

    def __init__(self, pad_id: int):
        self.pad_id = int(pad_id)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        lengths = [len(f["input_ids"]) for f in features]
        T = max(lengths)
        B = len(features)
        ids = torch.full((B, T), self.pad_id, dtype=torch.long)
        labels = torch.full((B, T), IGNORE, dtype=torch.long)
        att = torch.zeros((B, T), dtype=torch.long)
        for b, f in enumerate(features):
            n = lengths[b]
            ids[b, :n] = torch.tensor(f["input_ids"])
            labels[b, :n] = torch.tensor(f["labels"])
            att[b, :n] = 1
        batch = {
            "input_ids": ids,
            "labels": labels,
            "attention_mask": att,
            "n_tokens": torch.tensor(sum(lengths), dtype=torch.long),
        }
        _add_topk(batch, features, list(range(B)))
        return batch


def float_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean 4-D mask -> additive mask (0 where allowed, dtype-min elsewhere), for eager attention."""
    out = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return out.masked_fill(~mask, torch.finfo(dtype).min)


def packing_mode(model: Any, tol: float | None = None, segments: bool = False) -> PackMode | None:
    """Which packing form reproduces, on this model, the logits of each example run alone.

    Tries (with ``segments``) the examples' boundaries as varlen arguments, then an explicit
    boolean 4-D mask, an additive float 4-D mask, then position ids alone (flash-attention's
    varlen path). Returns the first that matches within ``tol`` (default 1e-4 for fp32 weights,
    5e-2 for half precision), or None (pad instead).
    """
    param = next(model.parameters())
    dtype, device = param.dtype, param.device
    if tol is None:
        tol = 1e-4 if dtype == torch.float32 else 5e-2
    vocab = int(model.get_input_embeddings().weight.shape[0])
    g = torch.Generator().manual_seed(0)
    lens = (7, 11)
    seqs = [torch.randint(4, max(vocab, 5), (n,), generator=g) for n in lens]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            alone = [model(input_ids=s[None].to(device)).logits[0].float() for s in seqs]
            # two examples packed in one row, followed by 3 padding tokens
            ids = torch.cat([seqs[0], seqs[1], torch.zeros(3, dtype=torch.long)])[None]
            pos = torch.cat([torch.arange(n) for n in (*lens, 3)])[None]
            seg = torch.tensor([[0] * lens[0] + [1] * lens[1] + [-1] * 3])
            mask = block_causal_mask(seg)
            order = [0, 1]
            for mode in ("segments", "bool", "float", "position_ids")[0 if segments else 1:]:
                kw: dict[str, Any] = {"position_ids": pos.to(device)}
                if mode == "segments":
                    kw.update({k: v.to(device) if isinstance(v, torch.Tensor) else v
                               for k, v in segment_kwargs(lens + (3,)).items()})
                elif mode == "bool":
                    kw["attention_mask"] = mask.to(device)
                elif mode == "float":
                    kw["attention_mask"] = float_mask(mask, dtype).to(device)
                try:
                    out = model(input_ids=ids.to(device), **kw).logits[0].float()
                except Exception:  # noqa: BLE001 - an architecture that rejects this form
                    continue
                o, ok = 0, True
                for i in order:
                    n = lens[i]
                    diff = (out[o : o + n] - alone[i]).abs().max().item()
                    ok = ok and diff <= tol * max(1.0, alone[i].abs().max().item())
                    o += n
                if ok:
                    return mode  # type: ignore[return-value]
    finally:
        model.train(was_training)
    return None


class TargetHead:
    """Computes the LM head only where the loss is taken.

    A forward pre-hook on the model's output embedding keeps, while :attr:`select` is set, only
    the hidden states whose next token is a target; the model then returns ``(K, vocab)`` logits
    for those K positions instead of ``(rows, T, vocab)``. With a 49k-token vocabulary and prompts
    that carry no loss this removes most of the head's matmuls and, on a CPU, the memory-bound
    softmax passes over the full logits. The call still goes through the (possibly wrapped) model,
    so DDP / FSDP / DeepSpeed hooks run as usual.
    """

    def __init__(self, head: Any):
        self.head = head
        self.select: torch.Tensor | None = None
        self._handle = head.register_forward_pre_hook(self._pre)

    def _pre(self, module: Any, args: tuple) -> tuple | None:
        if self.select is None or not args:
            return None
        return (args[0][self.select],) + tuple(args[1:])

    @staticmethod
    def positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, T) labels -> (bool mask of hidden positions whose next token is a target, the targets
        in the same row-major order)."""
        nxt = labels[:, 1:]
        sel = torch.zeros_like(labels, dtype=torch.bool)
        sel[:, :-1] = nxt != IGNORE
        return sel, nxt[nxt != IGNORE]

    def logits(self, model: Any, inputs: dict[str, Any], labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run ``model(**inputs)`` (without labels) with the head restricted to target positions;
        returns ``(logits (K, vocab), targets (K,))``."""
        sel, targets = self.positions(labels)
        self.select = sel
        try:
            out = model(**inputs)
        finally:
            self.select = None
        logits = out["logits"] if isinstance(out, dict) else out[0]
        return logits, targets

    def remove(self) -> None:
        self._handle.remove()


def target_head(model: Any, tol: float | None = None) -> TargetHead | None:
    """A :class:`TargetHead` for ``model`` when restricting its head reproduces the model's own loss
    (checked on a short random sequence), else None (the full logits are computed)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        return None
    param = next(model.parameters())
    dtype, device = param.dtype, param.device
    if tol is None:
        tol = 1e-4 if dtype == torch.float32 else 2e-2
    vocab = int(model.get_input_embeddings().weight.shape[0])
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, max(vocab, 5), (2, 12), generator=g).to(device)
    labels = ids.clone()
    labels[0, :5] = IGNORE  # a prompt
    labels[1, :3] = IGNORE
    labels[1, 9:] = IGNORE  # padding
    th = TargetHead(head)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ref = model(input_ids=ids, labels=labels).loss.float().item()
            logits, targets = th.logits(model, {"input_ids": ids}, labels)
            if logits.dim() != 2 or logits.shape[0] != targets.numel():
                raise ValueError("logits not restricted")
            mine = torch.nn.functional.cross_entropy(logits.float(), targets).item()
    except Exception:  # noqa: BLE001 - an architecture whose forward reshapes the head's output
        th.remove()
        return None
    finally:
        model.train(was_training)
    if abs(mine - ref) > tol * max(1.0, abs(ref)):
        th.remove()
        return None
    return th
