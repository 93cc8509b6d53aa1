"""The teacher interface: one request per (example, level, format, sample), results streamed back.

Backends are named ``backend:model``: ``openai:gpt-4o-mini``, ``hf:/path/to/model``,
``vllm:/path/to/model``, ``replay:traces.jsonl``, ``lab``. :func:`make_teacher` builds one from
that name and a :class:`TeacherConfig`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from ..errors import UserError
from ..registry import Registry
from ..spec import BACKENDS, TeacherSpec  # noqa: F401  (BACKENDS re-exported)


class TeacherConfig(BaseModel):
    """Sampling and transport settings shared by all backends (unused fields are ignored by a backend)."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.0, ge=0.0, description="Sampling temperature; 0 = greedy (the paper's teachers were queried near-deterministically).")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_tokens: int = Field(1024, ge=1, description="Completion token cap per call; a rationale that hits it is marked truncated (curate drops it).")
    seed: Optional[int] = Field(None, description="Sampling seed passed to backends that accept one.")
    reasoning_effort: Optional[str] = Field(None, description="Reasoning models: low, medium or high (passed through as the request's reasoning_effort).")
    # openai-compatible transport
    base_url: Optional[str] = Field(None, description="Server URL; default $OPENAI_BASE_URL, else api.openai.com.")
    api_key: Optional[SecretStr] = Field(None, description="API key; default $OPENAI_API_KEY. Never written to any file or log.")
    concurrency: int = Field(32, ge=1, description="Calls in flight at once.")
    timeout: float = Field(120.0, gt=0, description="Seconds per request before it is abandoned and retried.")
    max_retries: int = Field(6, ge=0, description="Retries per call (429, 5xx, timeouts, dropped connections, malformed bodies).")
    backoff_base: float = Field(1.0, ge=0, description="First retry delay in seconds; doubles per attempt, with jitter.")
    backoff_max: float = Field(60.0, ge=0, description="Upper bound of one backoff delay (a server's Retry-After header overrides the backoff).")
    rpm: Optional[float] = Field(None, gt=0, description="Requests-per-minute limit (token bucket), none by default.")
    tpm: Optional[float] = Field(None, gt=0, description="Tokens-per-minute limit (prompt estimate + max_tokens), none by default.")
    # local backends
    batch_size: int = Field(16, ge=1, description="Prompts per batch for hf / vllm backends.")
    # replay
    replay_teacher: Optional[str] = Field(None, description="Replay only traces of this teacher (when the file holds several).")


@dataclass
class Request:
    """One teacher call: ``messages`` is None for backends that do not read prompts (replay, lab)."""

    example: Any
    level: int | str
    fmt: str
    sample: int
    messages: list[dict[str, str]] | None = None
    key: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Result:
    text: str
    usage: dict[str, int] | None = None
    finish_reason: str | None = None
    reasoning: str | None = None  # a reasoning model's thinking, apart from ``text`` (the final response)
    teacher: str | None = None  # overrides the teacher name in the trace (replay keeps the original)
    source: str | None = None


class TeacherError(Exception):
    """A call that failed after its retries (recorded in the store, retried on the next run)."""


class FatalTeacherError(UserError):
    """A failure no retry can fix (bad key, unknown model): stops the run with one line."""


class Teacher:
    backend: str = ""
    model: str = ""
    cacheable: bool = True  # results go to the crash-safe store
    needs_messages: bool = True
    batch_size: int = 16

    def __init__(self, model: str = "", config: TeacherConfig | None = None):
        self.model = model
        self.config = config or TeacherConfig()
        self.batch_size = self.config.batch_size
        self.stop_requested = False
        # budget admission: called with the next request before it is launched; False stops the run
        self.admit = None

    @property
    def name(self) -> str:
        return f"{self.backend}:{self.model}" if self.model else self.backend

    def params(self) -> dict[str, Any]:
        """Sampling parameters that change the output (part of the cache key)."""
        c = self.config
        p = {"temperature": c.temperature, "top_p": c.top_p, "max_tokens": c.max_tokens, "seed": c.seed}
        if c.reasoning_effort is not None:  # only when set: earlier cache keys stay valid
            p["reasoning_effort"] = c.reasoning_effort
        return p

    def secrets(self) -> list[str]:
        return []

    def generate_batch(self, requests: list[Request]) -> list[Result | Exception]:  # pragma: no cover
        raise NotImplementedError

    async def stream(self, requests: list[Request]) -> AsyncIterator[tuple[Request, Result | Exception]]:
        """Yield ``(request, result or exception)`` as calls complete. Default: batches in a thread."""
        for i in range(0, len(requests), self.batch_size):
            if self.stop_requested:  # a budget stop: no new batch
                return
            chunk = requests[i : i + self.batch_size]
            if self.admit is not None and not all(self.admit(r) for r in chunk):
                self.stop_requested = True
                return
            results = await asyncio.to_thread(self.generate_batch, chunk)
            for r, res in zip(chunk, results):
                yield r, res

    def close(self) -> None:
        pass


TEACHERS = Registry("teacher backend", {
    "lab": "cotdistill.teachers.lab:LabTeacher",
    "openai": "cotdistill.teachers.openai_compat:OpenAITeacher",
    "hf": "cotdistill.teachers.hf_local:HFTeacher",
    "vllm": "cotdistill.teachers.vllm:VLLMTeacher",
    "replay": "cotdistill.teachers.replay:ReplayTeacher",
})
"""Teacher backends by the prefix of a teacher spec (``openai:gpt-4o`` -> ``openai``), imported on use."""


def make_teacher(spec: str, config: TeacherConfig | None = None) -> Teacher:
    """Build a teacher from ``backend:model`` (``lab`` takes no model)."""
    config = config or TeacherConfig()
    t = TeacherSpec.parse(spec)
    if t.is_union:
        raise UserError(f"teacher {spec!r}: a union pools the traces of several teachers; generate with each of them")
    backend, model = t.backend, spec.strip().partition(":")[2]  # a replay file keeps its #NAME for the backend
    return TEACHERS.get(backend)(model, config)
