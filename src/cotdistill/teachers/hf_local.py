"""``hf:PATH`` — a local transformers causal LM as teacher; batched generation with left padding.

The chat template of the tokenizer is used when it has one; otherwise the messages are rendered
as plain text (:func:`cotdistill.prompts.messages_to_text`). Greedy when temperature is 0.
"""

from __future__ import annotations

from ..prompts import messages_to_text
from .base import Request, Result, Teacher, TeacherConfig, TeacherError


class HFTeacher(Teacher):
    backend = "hf"

    def __init__(self, model: str, config: TeacherConfig | None = None):
        super().__init__(model, config)
        from ..students import load_pretrained

        self._model, self._tok = load_pretrained(model)
        self._model.eval()
        self._tok.padding_side = "left"
        self._tok.truncation_side = "left"
        if self._tok.pad_token is None:
            self._tok.pad_token = self._tok.eos_token

    def render(self, messages: list[dict[str, str]]) -> str:
        if getattr(self._tok, "chat_template", None):
            return self._tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return messages_to_text(messages)

    def generate_batch(self, requests: list[Request]) -> list[Result | Exception]:
        import torch

        c = self.config
        texts = [self.render(r.messages or []) for r in requests]
        max_pos = getattr(self._model.config, "max_position_embeddings", None) or 4096
        max_len = max(8, max_pos - c.max_tokens)
        try:
            enc = self._tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_len,
                            add_special_tokens=False)
            gen_kwargs = dict(max_new_tokens=c.max_tokens, pad_token_id=self._tok.pad_token_id,
                              eos_token_id=self._tok.eos_token_id)
            if c.temperature > 0:
                gen_kwargs.update(do_sample=True, temperature=c.temperature, top_p=c.top_p)
                if c.seed is not None:
                    torch.manual_seed(c.seed + requests[0].sample)
            else:
                gen_kwargs.update(do_sample=False)
            with torch.no_grad():
                out = self._model.generate(**enc, **gen_kwargs)
        except (RuntimeError, ValueError) as e:
            err = TeacherError(f"hf generation failed: {' '.join(str(e).split())[:200]}")
            return [err for _ in requests]
        n_in = enc["input_ids"].shape[1]
        results: list[Result | Exception] = []
        for i in range(len(requests)):
            new = out[i, n_in:]
            eos = self._tok.eos_token_id
            hit_eos = eos is not None and bool((new == eos).any())
            mask = new != self._tok.pad_token_id
            if eos is not None:
                mask &= new != eos
            ids = new[mask] if not hit_eos else new[: int((new == eos).nonzero()[0])]
            text = self._tok.decode(ids, skip_special_tokens=True)
            results.append(Result(
                text=text.strip(),
                usage={"prompt_tokens": int(enc["attention_mask"][i].sum()), "completion_tokens": int(len(ids))},
                finish_reason="stop" if hit_eos else "length",
            ))
        return results
