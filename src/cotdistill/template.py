"""One prompt template, stored with the model and reused by evaluation.

Training and evaluation must render prompts identically; the template is written to
``MODEL_DIR/cotdistill_template.json`` by ``train`` and read back by ``evaluate``.

* ``plain`` (base models, scratch students): ``"Question: {question}\\nAnswer:"`` and the
  completion ``" {rationale}"`` followed by EOS.
* ``chat``: the tokenizer's own chat template, question as the user turn, rationale as the
  assistant turn.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_serializer

TEMPLATE_FILE = "cotdistill_template.json"


class PromptTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["plain", "chat"] = "plain"
    prompt: str = "Question: {question}\nAnswer:"
    completion_prefix: str = " "
    system: str | None = None
    # a task prefix before the question (the step-by-step objective trains "[label] " and
    # "[rationale] " tasks; the saved template keeps "[label] ", so evaluation asks for the answer)
    question_prefix: str = ""
    # an untuned model's evaluation: an instruction after each question (the answer form asked
    # for) and solved examples shown before it, as earlier turns (chat) or earlier Q/A pairs (plain)
    instruction: str | None = None
    exemplars: list[tuple[str, str]] = []

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        # without an instruction or exemplars a template dumps as it always has (the evaluation
        # records and saved templates of earlier runs keep matching)
        d = handler(self)
        if not self.instruction:
            d.pop("instruction", None)
        if not self.exemplars:
            d.pop("exemplars", None)
        return d

    # -- rendering ---------------------------------------------------------------------------
    def _ask(self, question: str) -> str:
        q = self.question_prefix + question
        return f"{q}\n{self.instruction}" if self.instruction else q

    def render_prompt(self, question: str, tokenizer: Any = None) -> str:
        if self.kind == "chat":
            if tokenizer is None or not getattr(tokenizer, "chat_template", None):
                raise ValueError("chat template requested but the tokenizer has none")
            msgs = [{"role": "system", "content": self.system}] if self.system else []
            for q, a in self.exemplars:
                msgs += [{"role": "user", "content": self._ask(q)}, {"role": "assistant", "content": a}]
            msgs.append({"role": "user", "content": self._ask(question)})
            return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        shots = "".join(self.prompt.format(question=self._ask(q)) + self.completion_prefix + a + "\n\n"
                        for q, a in self.exemplars)
        return shots + self.prompt.format(question=self._ask(question))

    def render_completion(self, output: str) -> str:
        """Completion text (without EOS; the trainer appends the tokenizer's EOS token)."""
        if self.kind == "chat":
            return output.strip()
        return self.completion_prefix + output.strip()

    # -- persistence -------------------------------------------------------------------------
    def save(self, model_dir: str | Path) -> None:
        Path(model_dir, TEMPLATE_FILE).write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, model_dir: str | Path) -> "PromptTemplate | None":
        p = Path(model_dir, TEMPLATE_FILE)
        if not p.exists():
            return None
        return cls.model_validate(json.loads(p.read_text()))

    @classmethod
    def for_tokenizer(cls, tokenizer: Any) -> "PromptTemplate":
        """Default: the chat template when the tokenizer has one, else the plain template."""
        if getattr(tokenizer, "chat_template", None):
            return cls(kind="chat")
        return cls()


NAMED_TEMPLATES: dict[str, PromptTemplate] = {
    "plain": PromptTemplate(),
    "qa": PromptTemplate(prompt="Q: {question}\nA:"),
    "alpaca": PromptTemplate(
        prompt=(
            "Below is an instruction that describes a task. Write a response that appropriately "
            "completes the request.\n\n### Instruction:\n{question}\n\n### Response:\n"
        ),
        completion_prefix="",
    ),
    "chat": PromptTemplate(kind="chat"),
}
