"""Greedy decoding with continuous batching for transformers causal LMs.

``greedy_stream(model, prompts, eos_ids, max_new_tokens)`` decodes every prompt to EOS or to
``max_new_tokens`` and yields ``(index, tokens, finish)`` as each one finishes. Unlike one
``model.generate`` call per padded batch (which runs every row until the batch's longest row
ends), finished rows leave the batch and waiting prompts take their place: the work done is
about the sum of the output lengths, not the batch size times the longest output.

How: the KV cache of the running rows is kept left-aligned in preallocated buffers (written in
place, no copy per step); when enough rows have finished, the survivors are compacted, the
next waiting prompts are prefilled as one left-padded batch (after the prompts' common prefix,
encoded once) and their cache is joined to the running one (left padding, masked), and decoding
goes on with explicit per-row position ids. The last one or two rows, typically a repetition
loop running to the cap, finish alone with prompt-lookup speculative decoding.
Greedy outputs are those of ``model.generate`` up to floating-point ties: the same causal
attention over the same tokens, with padding masked (on 300 SVAMP items with SmolLM2-135M in
float32: 300/300 identical to one prompt at a time, ``benchmarks/bench_evaluate.py``).

Models whose cache is not a plain full-attention cache (sliding windows, recurrent states) are
decoded by ``model.generate`` in padded batches (:func:`supports_streaming` tells which).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from typing import Any


def supports_streaming(model: Any) -> bool:
    """Whether :func:`greedy_stream` can run ``model`` (full-attention layers, dynamic cache)."""
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(model, "_supports_cache_class", True) is False:
        return False
    text = cfg.get_text_config(decoder=True) if hasattr(cfg, "get_text_config") else cfg
    types = getattr(text, "layer_types", None)
    if types and any(t != "full_attention" for t in types):
        return False
    if getattr(text, "sliding_window", None) and getattr(text, "use_sliding_window", True):
        return False
    return getattr(text, "model_type", "") not in ("bloom", "mamba", "rwkv", "jamba", "falcon_mamba")


def _finish_alone(model, ids: list[int], budget: int, eos_ids, pad_id: int) -> tuple[list[int], str]:
    """Greedy continuation of one sequence to EOS or ``budget`` more tokens, with prompt-lookup
    speculation (transformers' ``prompt_lookup_num_tokens``)."""
    import torch

    eos = set(int(e) for e in eos_ids)
    if budget <= 0:
        return [], "length"
    device = next(model.parameters()).device
    out = model.generate(torch.as_tensor([ids], device=device), attention_mask=torch.ones((1, len(ids)), dtype=torch.long, device=device),
                         max_new_tokens=budget, do_sample=False, num_beams=1, prompt_lookup_num_tokens=10,
                         eos_token_id=sorted(eos), pad_token_id=pad_id, temperature=None, top_p=None, top_k=None)
    new = out[0, len(ids):].tolist()
    end = next((k + 1 for k, t in enumerate(new) if t in eos), None)
    if end is not None:
        return new[:end], "eos"
    return new, "length" if len(new) >= budget else "eos"


def _common_prefix_len(prompts: Sequence[Sequence[int]]) -> int:
    first = list(prompts[0])
    n = len(first)
    for p in prompts[1:]:
        k = 0
        for a, b in zip(first[:n], p):
            if a != b:
                break
            k += 1
        n = k
        if n == 0:
            break
    return n


def _layer_class():
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        """A dynamic cache layer over a preallocated buffer: ``update`` writes in place and
        returns a view of the filled part (``DynamicLayer`` concatenates, copying the whole
        cache every step)."""

        def __init__(self, keys, values, headroom: int):
            super().__init__()
            self.device = keys.device
            self.is_initialized = True
            self._alloc(keys, values, keys.shape[-2] + headroom)

        def _alloc(self, keys, values, cap: int) -> None:
            B, H, T, D = keys.shape
            self.bk = keys.new_empty((B, H, cap, D))  # only [:n] is ever read
            self.bv = values.new_empty((B, values.shape[1], cap, values.shape[-1]))
            self.bk[:, :, :T] = keys
            self.bv[:, :, :T] = values
            self.n = T
            self.keys, self.values = self.bk[:, :, :T], self.bv[:, :, :T]

        def update(self, key_states, value_states, *args, **kwargs):
            t = key_states.shape[-2]
            if self.n + t > self.bk.shape[-2]:
                self._alloc(self.keys, self.values, 2 * (self.n + t))
            self.bk[:, :, self.n : self.n + t] = key_states
            self.bv[:, :, self.n : self.n + t] = value_states
            self.n += t
            self.keys, self.values = self.bk[:, :, : self.n], self.bv[:, :, : self.n]
            return self.keys, self.values

    return GrowingLayer


def greedy_stream(
    model: Any,
    prompts: Sequence[Sequence[int]],
    eos_ids: Sequence[int],
    max_new_tokens: int,
    *,
    max_rows: int = 64,
    pad_id: int = 0,
    refill_fraction: float = 0.25,
    share_prefix: bool = True,
    tail_rows: int = 2,
) -> Iterator[tuple[int, list[int], str]]:
    """Yield ``(prompt index, generated token ids, finish)`` for every prompt as it finishes.

    ``finish`` is ``"eos"`` (the last token is an EOS id, counted in the tokens) or ``"length"``
    (``max_new_tokens`` tokens, no EOS). At most ``max_rows`` prompts decode at once; waiting
    prompts are prefilled when at least ``refill_fraction`` of the rows are free, in the order
    given (sort them by length for less prefill padding). With ``share_prefix`` the prompts'
    common prefix (a chat template's system turn, typically) is encoded once and its KV cache
    shared by every row; the other prompt tokens follow it at their own positions. When nothing
    waits and at most ``tail_rows`` rows are left, each finishes alone with prompt-lookup
    speculative decoding (``tail_rows=0`` turns this off).
    """
    import torch
    from transformers import DynamicCache

    Layer = _layer_class()
    # transformers renamed the cache argument (past_key_values -> cache); use the model's name
    cache_kw = "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"
    eos = torch.tensor(sorted(set(int(e) for e in eos_ids)), dtype=torch.long)
    device = next(model.parameters()).device
    eos = eos.to(device)
    waiting = list(range(len(prompts)))[::-1]  # pop() takes the next in order
    refill_at = max(1, int(max_rows * refill_fraction))
    headroom = min(max_new_tokens, 128)

    rows: list[int] = []  # prompt index per batch row
    outs: list[list[int]] = []  # generated tokens per row
    mask = last = pos = None  # [B, T] attention mask, [B] next input token, [B] its position
    # finished rows stay in the batch (their tokens ignored) until enough have finished to refill
    # or, once nothing waits, to shrink the batch: each compaction copies the whole KV cache

    # the common prefix of all prompts, encoded once (each prompt keeps at least one token of its own)
    P = _common_prefix_len(prompts) if share_prefix and prompts else 0
    P = min(P, min(len(p) for p in prompts) - 1) if P else 0
    prefix_kv = None
    if P >= 4:
        c = DynamicCache()
        with torch.inference_mode():
            model(input_ids=torch.as_tensor([list(prompts[0][:P])], device=device),
                  position_ids=torch.arange(P, device=device)[None], use_cache=True, logits_to_keep=1, **{cache_kw: c})
        prefix_kv = [(lay.keys, lay.values) for lay in c.layers]
    else:
        P = 0

    def prefill(idx: list[int]):
        S = max(len(prompts[i]) - P for i in idx)
        ids = torch.full((len(idx), S), pad_id, dtype=torch.long)
        ms = torch.zeros((len(idx), S), dtype=torch.long)
        for r, i in enumerate(idx):  # the prompt after the shared prefix, left padded
            p = list(prompts[i][P:])
            ids[r, S - len(p) :] = torch.as_tensor(p, dtype=torch.long)
            ms[r, S - len(p) :] = 1
        ids, ms = ids.to(device), ms.to(device)
        position = P + (ms.cumsum(-1) - 1).clamp(min=0)
        m = torch.cat([ms.new_ones((len(idx), P)), ms], 1)
        cache = DynamicCache()
        if prefix_kv is not None:
            cache.layers = [Layer(k.expand(len(idx), -1, -1, -1), v.expand(len(idx), -1, -1, -1), S) for k, v in prefix_kv]
        out = model(input_ids=ids, attention_mask=m, position_ids=position, use_cache=True, logits_to_keep=1,
                    **{cache_kw: cache})
        first = out.logits[:, -1].argmax(-1)
        keep = m.bool()[:, None, :, None]
        layers = [(lay.keys.masked_fill(~keep, 0), lay.values.masked_fill(~keep, 0)) for lay in cache.layers]
        return layers, m, first, m.sum(-1)

    def build(kv_rows):  # a cache over per-layer (keys, values) with room to grow
        cache = DynamicCache()
        cache.layers = [Layer(k, v, headroom) for k, v in kv_rows]
        return cache

    def compact(keep: list[int]):
        """Drop the rows not in ``keep`` and the leading columns only they used."""
        nonlocal mask, last, pos, rows, outs, alive
        sel = torch.tensor(keep, dtype=torch.long, device=device)
        m = mask[sel]
        start = int(m.any(0).long().argmax())
        kv_rows = [(lay.keys[sel, :, start:], lay.values[sel, :, start:]) for lay in cache.layers]
        mask, last, pos = m[:, start:], last[sel], pos[sel]
        rows, outs, alive = [rows[r] for r in keep], [outs[r] for r in keep], [True] * len(keep)
        return kv_rows

    cache = None
    alive: list[bool] = []
    with torch.inference_mode():
        while waiting or any(alive):
            dead = len(rows) - sum(alive)
            if waiting and max_rows - len(rows) + dead >= refill_at:
                # finished rows leave, waiting prompts take their place
                kv_rows = None
                if rows:
                    keep = [r for r in range(len(rows)) if alive[r]]
                    kv_rows = compact(keep) if keep else None
                    if not keep:
                        rows, outs, alive = [], [], []
                take = [waiting.pop() for _ in range(min(max_rows - len(rows), len(waiting)))]
                new_kv, new_mask, first, new_pos = prefill(take)
                if kv_rows is None:
                    kv_rows, mask, last, pos = new_kv, new_mask, first, new_pos
                else:
                    To, Tn = mask.shape[1], new_mask.shape[1]
                    T = max(To, Tn)
                    pad = torch.nn.functional.pad

                    def left(x, t):  # pad dim -2 of a [B, H, t, D] tensor on the left to T
                        return x if t == T else pad(x, (0, 0, T - t, 0))

                    kv_rows = [(torch.cat([left(ko, To), left(kn, Tn)]), torch.cat([left(vo, To), left(vn, Tn)]))
                               for (ko, vo), (kn, vn) in zip(kv_rows, new_kv)]
                    mask = torch.cat([pad(mask, (T - To, 0)), pad(new_mask, (T - Tn, 0))])
                    last, pos = torch.cat([last, first]), torch.cat([pos, new_pos])
                rows, outs = rows + take, outs + [[int(t)] for t in first.tolist()]
                alive = alive + [True] * len(take)
                cache = build(kv_rows)
                check = range(len(rows) - len(take), len(rows))  # a prompt's first token may end it
            elif not waiting and 0 < len(rows) - dead <= tail_rows:
                # the last rows, typically a repetition loop running to the cap: one row at a time
                # with prompt-lookup speculation (n-grams of its own text proposed, checked by one
                # forward pass each, greedy output unchanged), instead of one token per step
                for r in [r for r in range(len(rows)) if alive[r]]:
                    alive[r] = False
                    toks, finish = _finish_alone(model, list(prompts[rows[r]]) + outs[r], max_new_tokens - len(outs[r]),
                                                 eos_ids, pad_id)
                    yield rows[r], outs[r] + toks, finish
                continue
            else:
                if dead and not waiting and dead >= max(1, len(rows) // 4):
                    cache = build(compact([r for r in range(len(rows)) if alive[r]]))  # a smaller batch per step
                step = model(input_ids=last[:, None], attention_mask=torch.cat([mask, mask.new_ones((len(rows), 1))], 1),
                             position_ids=pos[:, None], use_cache=True, **{cache_kw: cache})
                mask = torch.cat([mask, mask.new_ones((len(rows), 1))], 1)
                pos = pos + 1
                last = step.logits[:, -1].argmax(-1)
                toks = last.tolist()
                for r in range(len(rows)):
                    if alive[r]:
                        outs[r].append(toks[r])
                check = range(len(rows))
            is_eos = torch.isin(last, eos).tolist()
            for r in check:
                if alive[r] and (is_eos[r] or len(outs[r]) >= max_new_tokens):
                    alive[r] = False
                    yield rows[r], outs[r], ("eos" if is_eos[r] else "length")
