"""Greedy decoding with continuous batching for transformers causal LMs.

``greedy_stream(model, prompts, eos_ids, max_new_tokens)`` decodes every prompt to EOS or to
``max_new_tokens`` and yields ``(index, tokens, finish)`` as each one finishes. Unlike one
``model.generate`` call per padded batch (which runs every row until the batch's longest row
ends), a finished row leaves the batch at once and waiting prompts take its place: the work
done is the sum of the output lengths, not the batch size times the longest output.

How: the KV cache of the running rows is kept left-aligned in preallocated buffers (written in
place, no copy per step); when enough rows have finished, the survivors are compacted, the
next waiting prompts are prefilled as one left-padded batch and their cache is joined to the
running one (left padding, masked), and decoding goes on with explicit per-row position ids.
Greedy outputs are those of ``model.generate`` up to floating-point ties: the same causal
attention over the same tokens, with padding masked.

Models whose cache is not a plain full-attention cache (sliding windows, recurrent states) are
decoded by ``model.generate`` in padded batches (:func:`supports_streaming` tells which).
"""

from __future__ import annotations

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


def _layer_class():
    import torch
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
            self.bk = keys.new_zeros((B, H, cap, D))
            self.bv = values.new_zeros((B, values.shape[1], cap, values.shape[-1]))
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
) -> Iterator[tuple[int, list[int], str]]:
    """Yield ``(prompt index, generated token ids, finish)`` for every prompt as it finishes.

    ``finish`` is ``"eos"`` (the last token is an EOS id, counted in the tokens) or ``"length"``
    (``max_new_tokens`` tokens, no EOS). At most ``max_rows`` prompts decode at once; waiting
    prompts are prefilled when at least ``refill_fraction`` of the rows are free, in the order
    given (sort them by length for less prefill padding).
    """
    import torch
    from transformers import DynamicCache

    import inspect

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
    kv: list[tuple[Any, Any]] | None = None  # per layer (keys, values) [B, H, T, D]

    def prefill(idx: list[int]):
        T = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), T), pad_id, dtype=torch.long)
        m = torch.zeros((len(idx), T), dtype=torch.long)
        for r, i in enumerate(idx):
            p = prompts[i]
            ids[r, T - len(p) :] = torch.as_tensor(list(p), dtype=torch.long)
            m[r, T - len(p) :] = 1
        ids, m = ids.to(device), m.to(device)
        position = (m.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        out = model(input_ids=ids, attention_mask=m, position_ids=position, use_cache=True, logits_to_keep=1,
                    **{cache_kw: cache})
        first = out.logits[:, -1].argmax(-1)
        keep = m.bool()[:, None, :, None]
        layers = [(lay.keys.masked_fill(~keep, 0), lay.values.masked_fill(~keep, 0)) for lay in cache.layers]
        return layers, m, first, m.sum(-1)

    with torch.inference_mode():
        while waiting or rows:
            if waiting and len(rows) <= max_rows - refill_at:
                take = [waiting.pop() for _ in range(min(max_rows - len(rows), len(waiting)))]
                new_kv, new_mask, first, new_pos = prefill(take)
                # a prompt's first token may already end it
                rows_new = list(take)
                outs_new = [[int(t)] for t in first.tolist()]
                if kv is None:
                    kv, mask, last, pos = new_kv, new_mask, first, new_pos
                    rows, outs = rows_new, outs_new
                else:
                    To, Tn = mask.shape[1], new_mask.shape[1]
                    T = max(To, Tn)
                    pad = torch.nn.functional.pad

                    def left(x, t):  # pad dim -2 of a [B, H, t, D] tensor on the left to T
                        return x if t == T else pad(x, (0, 0, T - t, 0))

                    kv = [(torch.cat([left(ko, To), left(kn, Tn)]), torch.cat([left(vo, To), left(vn, Tn)]))
                          for (ko, vo), (kn, vn) in zip(kv, new_kv)]
                    mask = torch.cat([pad(mask, (T - To, 0)), pad(new_mask, (T - Tn, 0))])
                    last, pos = torch.cat([last, first]), torch.cat([pos, new_pos])
                    rows, outs = rows + rows_new, outs + outs_new
                cache = DynamicCache()
                cache.layers = [Layer(k, v, headroom) for k, v in kv]
            else:
                step = model(input_ids=last[:, None], attention_mask=torch.cat([mask, mask.new_ones((len(rows), 1))], 1),
                             position_ids=pos[:, None], use_cache=True, **{cache_kw: cache})
                mask = torch.cat([mask, mask.new_ones((len(rows), 1))], 1)
                pos = pos + 1
                last = step.logits[:, -1].argmax(-1)
                for r, t in enumerate(last.tolist()):
                    outs[r].append(t)
            # rows that finished with the token just produced
            done_eos = torch.isin(last, eos).tolist()
            finished = [r for r in range(len(rows)) if done_eos[r] or len(outs[r]) >= max_new_tokens]
            for r in finished:
                yield rows[r], outs[r], ("eos" if done_eos[r] else "length")
            if finished:
                keep = [r for r in range(len(rows)) if r not in set(finished)]
                rows = [rows[r] for r in keep]
                outs = [outs[r] for r in keep]
                if not rows:
                    kv = mask = last = pos = None
                    continue
                sel = torch.tensor(keep, dtype=torch.long, device=device)
                mask, last, pos = mask[sel], last[sel], pos[sel]
                start = int(mask.any(0).long().argmax())  # drop columns that only finished rows used
                mask = mask[:, start:]
                kv = [(lay.keys[sel, :, start:], lay.values[sel, :, start:]) for lay in cache.layers]
                if not (waiting and len(rows) <= max_rows - refill_at):
                    cache = DynamicCache()
                    cache.layers = [Layer(k, v, headroom) for k, v in kv]
            else:
                kv = [(lay.keys, lay.values) for lay in cache.layers]
