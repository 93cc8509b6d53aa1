"""Training objectives that use a teacher model's token distributions (beyond SFT on its text).

* ``logit-kd`` (token-level knowledge distillation, Hinton et al. 2015 / Kim & Rush 2016): the
  loss is ``kd_alpha * CE(traces) + (1 - kd_alpha) * KL(teacher || student)`` on the trace's
  completion tokens, with the teacher's distribution kept to its top ``kd_top_k`` tokens
  (renormalised). The teacher's top-k log-probabilities are computed once per (teacher, data,
  template) with a forward pass and stored in a cache directory (beside the trace file by
  default), so every student and seed trained on the same traces reuses them.
* ``on-policy`` (generalized knowledge distillation, Agarwal et al. 2024, as TRL's GKDTrainer):
  with probability ``on_policy_lambda`` a step's completions are sampled from the student itself
  (temperature 1), otherwise the teacher's traces are used; the teacher scores every completion
  token and the loss is the generalized Jensen-Shannon divergence with ``on_policy_beta``
  (0 = forward KL(teacher || student), 1 = reverse KL(student || teacher)).

Both need a local teacher model that shares the student's tokenizer (same vocabulary and EOS):
e.g. a scratch teacher of the same family trained first on the same task, or a fine-tuned model of
the student's family. Compute is counted in ``train_summary.json``: student forward+backward
``6 N_s`` FLOPs per trained token, teacher forward ``2 N_t`` per scored token, sampling ``2 N_s``
per generated token (``compute_flops``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from .collate import IGNORE
from .errors import UserError

# ``preference`` (ORPO, Hong et al. 2024, as ORPO-Distill uses it) needs no teacher model: the
# teacher's trace is the chosen completion, the student's own wrong sample the rejected one.


# ------------------------------------------------------------------------------------------
# the teacher model
# ------------------------------------------------------------------------------------------
def load_teacher(spec: str, dtype: torch.dtype = torch.float32):
    """``(model, tokenizer)`` of a local teacher (a model directory, a .gguf file or a short name)."""
    from .students import is_scratch, load_pretrained

    if is_scratch(spec):
        raise UserError(f"teacher_model {spec!r} is an untrained scratch model: train it first "
                        "(cotdistill train --student scratch:... --out DIR) and pass DIR")
    from transformers.utils import logging as hf_logging

    import contextlib
    from unittest import mock

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a GGUF's per-tensor bar would bury a one-line error below it
    quiet_gguf = contextlib.nullcontext()
    with contextlib.suppress(ImportError):
        import transformers.modeling_gguf_pytorch_utils as gguf_utils

        if hasattr(gguf_utils, "tqdm"):
            quiet_gguf = mock.patch.object(gguf_utils, "tqdm", lambda it, **kw: it)
    try:
        with quiet_gguf:
            model, tok = load_pretrained(spec, dtype=dtype)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, tok


def check_same_tokenizer(teacher_tok: Any, student_tok: Any, teacher: str, student: str) -> None:
    """Logit objectives compare distributions token by token: refuse a teacher whose vocabulary
    or EOS differs from the student's, naming the first difference."""
    tv, sv = teacher_tok.get_vocab(), student_tok.get_vocab()
    if tv != sv:
        only_t = sorted(set(tv) - set(sv))[:3]
        only_s = sorted(set(sv) - set(tv))[:3]
        moved = [t for t in sorted(set(tv) & set(sv)) if tv[t] != sv[t]][:3]
        detail = (f"tokens only in the teacher's {only_t}" if only_t else
                  f"tokens only in the student's {only_s}" if only_s else f"tokens with other ids {moved}")
        raise UserError(
            f"teacher_model {teacher}: its tokenizer differs from the student's ({len(tv)} vs {len(sv)} tokens; "
            f"{detail}): logit-kd and on-policy compare token distributions, so use a teacher that shares "
            f"{student}'s tokenizer (the same model family, or a scratch teacher trained on the same task)")
    if teacher_tok.eos_token_id != student_tok.eos_token_id:
        raise UserError(f"teacher_model {teacher}: its EOS id {teacher_tok.eos_token_id} differs from the "
                        f"student's {student_tok.eos_token_id}; use a teacher that shares the student's tokenizer")


# ------------------------------------------------------------------------------------------
# logit-kd: the teacher's top-k log-probabilities, computed once and stored
# ------------------------------------------------------------------------------------------
def topk_key(teacher: str, rows: Sequence[dict[str, Any]], k: int, temperature: float) -> str:
    """Identity of a top-k table: the teacher's weights file(s), the encoded rows, k and T."""
    h = hashlib.sha256()
    tdir = Path(teacher)
    files = sorted(tdir.glob("*.safetensors")) + sorted(tdir.glob("*.bin")) if tdir.is_dir() else [tdir]
    for f in files:
        if f.exists():
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    h.update(str(Path(teacher).resolve() if tdir.exists() else teacher).encode())
    for r in rows:
        h.update(json.dumps([r["input_ids"], r["labels"]]).encode())
    h.update(f"k={k},T={temperature}".encode())
    return h.hexdigest()[:24]


@torch.no_grad()
def teacher_topk(teacher: Any, rows: Sequence[dict[str, Any]], k: int, temperature: float = 1.0,
                 batch_tokens: int = 16384, progress: Any = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """For each encoded row, the teacher's top-``k`` (token ids int32, log-probs float16) at each
    completion target, in position order: the distribution over the token at position j, read
    from position j - 1 (temperature-scaled, log-softmax over the full vocabulary)."""
    device = next(teacher.parameters()).device
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    out: list[Any] = [None] * len(rows)
    i = 0
    done = 0
    while i < len(order):
        longest = len(rows[order[i]]["input_ids"])
        group = []
        while i < len(order) and (len(group) + 1) * max(longest, len(rows[order[i]]["input_ids"])) <= max(batch_tokens, longest):
            group.append(order[i])
            longest = max(longest, len(rows[order[i]]["input_ids"]))
            i += 1
        T = longest
        ids = torch.zeros((len(group), T), dtype=torch.long)
        att = torch.zeros((len(group), T), dtype=torch.long)
        for r, j in enumerate(group):
            n = len(rows[j]["input_ids"])
            ids[r, :n] = torch.tensor(rows[j]["input_ids"])
            att[r, :n] = 1
        logits = teacher(input_ids=ids.to(device), attention_mask=att.to(device)).logits.float()
        for r, j in enumerate(group):
            lab = torch.tensor(rows[j]["labels"])
            pos = (lab[1:] != IGNORE).nonzero().flatten()  # targets at j >= 1, read from j - 1
            lp = torch.log_softmax(logits[r, pos] / temperature, dim=-1)
            vals, idx = lp.topk(min(k, lp.shape[-1]), dim=-1)
            out[j] = (idx.to(torch.int32).cpu(), vals.to(torch.float16).cpu())
        done += len(group)
        if progress is not None:
            progress(done, len(rows))
    return out


def load_or_compute_topk(cache_dir: Path, key: str, compute) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], bool]:
    """The stored top-k table for ``key``, or ``compute()`` stored atomically; (table, was_cached)."""
    path = cache_dir / f"teacher-topk-{key}.pt"
    if path.is_file():
        try:
            return torch.load(path, weights_only=True), True
        except Exception:  # noqa: BLE001 - a torn file from a killed run: compute again
            pass
    table = compute()
    from .fileio import atomic_path

    with atomic_path(path) as tmp:
        torch.save(table, tmp)
    return table, False


def kd_loss(student_logits: torch.Tensor, topk_idx: torch.Tensor, topk_logp: torch.Tensor,
            temperature: float = 1.0) -> torch.Tensor:
    """Sum over targets of KL(teacher_topk || student) restricted to the teacher's top-k tokens
    (teacher probabilities renormalised over them), times T^2 (Hinton et al.)."""
    s_lp = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    t_lp = torch.log_softmax(topk_logp.float(), dim=-1)  # renormalise over the kept tokens
    s_k = s_lp.gather(-1, topk_idx.long())
    return (t_lp.exp() * (t_lp - s_k)).sum() * temperature ** 2


# ------------------------------------------------------------------------------------------
# on-policy: generalized JSD on student samples scored by the teacher
# ------------------------------------------------------------------------------------------
def generalized_jsd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float = 0.5,
                    temperature: float = 1.0) -> torch.Tensor:
    """Per-token generalized Jensen-Shannon divergence (summed over tokens), as in GKD / TRL's
    ``GKDTrainer.generalized_jsd_loss``: beta 0 = KL(teacher || student), 1 = KL(student || teacher)."""
    s = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    t = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)
    if beta == 0:
        return F.kl_div(s, t, reduction="sum", log_target=True)
    if beta == 1:
        return F.kl_div(t, s, reduction="sum", log_target=True)
    b = torch.tensor(beta, dtype=s.dtype, device=s.device)
    m = torch.logsumexp(torch.stack([s + torch.log1p(-b), t + torch.log(b)]), dim=0)
    return b * F.kl_div(m, t, reduction="sum", log_target=True) + (1 - b) * F.kl_div(m, s, reduction="sum", log_target=True)


@torch.no_grad()
def sample_completions(model: Any, prompts: list[list[int]], eos_id: int, pad_id: int, max_new_tokens: int,
                       generator_seed: int) -> list[list[int]]:
    """One sampled completion (temperature 1, full vocabulary) per prompt, ending at EOS (kept) or
    at ``max_new_tokens``."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        T = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), T), pad_id, dtype=torch.long)
        att = torch.zeros((len(prompts), T), dtype=torch.long)
        for r, p in enumerate(prompts):  # left padding
            ids[r, T - len(p):] = torch.tensor(p)
            att[r, T - len(p):] = 1
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # the training RNG is untouched
            torch.manual_seed(generator_seed)
            out = model.generate(input_ids=ids.to(device), attention_mask=att.to(device), do_sample=True, temperature=1.0,
                                 top_k=0, top_p=1.0, max_new_tokens=max_new_tokens, eos_token_id=eos_id,
                                 pad_token_id=pad_id)
    finally:
        model.train(was_training)
    comps = []
    for row in out[:, T:].tolist():
        if eos_id in row:
            row = row[: row.index(eos_id) + 1]
        comps.append(row)
    return comps


def completion_batch(prompts: list[list[int]], completions: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded rows prompt + completion with labels on the completion only."""
    lengths = [len(p) + len(c) for p, c in zip(prompts, completions)]
    T = max(lengths)
    ids = torch.full((len(prompts), T), pad_id, dtype=torch.long)
    labels = torch.full((len(prompts), T), IGNORE, dtype=torch.long)
    att = torch.zeros((len(prompts), T), dtype=torch.long)
    for r, (p, c) in enumerate(zip(prompts, completions)):
        n = len(p) + len(c)
        ids[r, :n] = torch.tensor(p + c)
        labels[r, len(p):n] = torch.tensor(c, dtype=torch.long) if c else labels[r, len(p):n]
        att[r, :n] = 1
    return {"input_ids": ids, "attention_mask": att, "labels": labels}


# ------------------------------------------------------------------------------------------
# preference: ORPO, the teacher's trace over the student's own wrong sample
# ------------------------------------------------------------------------------------------
def preference_terms(logits: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor, n_chosen: int,
                     pairs: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """ORPO's two terms from target logits (row-major) of ``n_chosen`` chosen rows followed by one
    rejected row per entry of ``pairs`` (the chosen row index it is paired with): the mean NLL over
    the chosen rows' tokens, and the mean ``-log sigmoid(log odds(chosen) - log odds(rejected))``
    with ``odds = p / (1 - p)`` and ``p`` the geometric mean token probability (0 without pairs)."""
    token_lp = -F.cross_entropy(logits.float(), targets, reduction="none")
    n_rows = n_chosen + len(pairs)
    sums = torch.zeros(n_rows, device=token_lp.device).index_add(0, rows, token_lp)
    counts = torch.zeros(n_rows, device=token_lp.device).index_add(0, rows, torch.ones_like(token_lp))
    chosen = rows < n_chosen
    nll = -token_lp[chosen].sum() / chosen.sum().clamp(min=1)
    if not pairs:
        return nll, torch.zeros((), device=nll.device)
    mean_lp = (sums / counts.clamp(min=1)).clamp(max=-1e-6)  # log p < 0 so that 1 - p > 0
    log_odds = mean_lp - torch.log1p(-torch.exp(mean_lp))
    c = log_odds[torch.tensor(pairs, device=log_odds.device)]
    r = log_odds[n_chosen:]
    return nll, -F.logsigmoid(c - r).mean()
