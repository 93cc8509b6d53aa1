"""``vllm:PATH`` — an offline vLLM engine (optional extra ``pip install 'cotdistill[vllm]'``; GPU).

vLLM is imported only when this backend is used; without it the run stops with one line.
"""

from __future__ import annotations

from ..errors import UserError
from .base import Request, Result, Teacher, TeacherConfig, TeacherError


class VLLMTeacher(Teacher):
    backend = "vllm"

    def __init__(self, model: str, config: TeacherConfig | None = None):
        super().__init__(model, config)
        try:
            import vllm
        except ImportError:
            raise UserError(
                "teacher vllm:* needs vLLM, which is not installed: pip install 'cotdistill[vllm]' "
                "(Linux with a CUDA GPU), or serve the model with `vllm serve` and use openai:MODEL"
            ) from None
        self._vllm = vllm
        self._llm = vllm.LLM(model=model, seed=self.config.seed or 0)
        self.batch_size = max(self.config.batch_size, 256)  # vLLM schedules its own batches

    def generate_batch(self, requests: list[Request]) -> list[Result | Exception]:
        c = self.config
        sp = self._vllm.SamplingParams(temperature=c.temperature, top_p=c.top_p, max_tokens=c.max_tokens,
                                       seed=None if c.seed is None else c.seed + requests[0].sample)
        try:
            outs = self._llm.chat([r.messages for r in requests], sp, use_tqdm=False)
        except Exception as e:  # engine errors become per-item failures, retried next run
            err = TeacherError(f"vllm generation failed: {' '.join(str(e).split())[:200]}")
            return [err for _ in requests]
        results: list[Result | Exception] = []
        for o in outs:
            c0 = o.outputs[0]
            results.append(Result(
                text=c0.text.strip(),
                usage={"prompt_tokens": len(o.prompt_token_ids or []), "completion_tokens": len(c0.token_ids)},
                finish_reason=c0.finish_reason,
            ))
        return results
