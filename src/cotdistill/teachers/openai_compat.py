"""``openai:MODEL`` — any OpenAI-compatible chat-completions server (OpenAI, vLLM serve, TGI, llama.cpp, ...).

Uses ``openai.AsyncOpenAI`` with the client's own retries disabled (``max_retries=0``); this module
retries 429 / 408 / 409 / 5xx, timeouts, dropped connections and malformed bodies with exponential
backoff and jitter; a ``Retry-After`` / ``retry-after-ms`` header, when present, sets the wait instead. Concurrency is bounded by an
``asyncio.Semaphore``; optional requests- and tokens-per-minute token buckets. The API key is
read from the config or ``$OPENAI_API_KEY`` and is redacted from every error message.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import re
import os
import random
import time
from collections.abc import AsyncIterator
from typing import Any

from ..errors import UserError, redact
from .base import FatalTeacherError, Request, Result, Teacher, TeacherConfig, TeacherError

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class TokenBucket:
    """``rate_per_min`` units per minute, bursting up to one second's worth (at least one request)."""

    def __init__(self, rate_per_min: float, burst: float | None = None):
        self.rate = rate_per_min / 60.0
        self.capacity = max(burst if burst is not None else self.rate, 1.0)
        self.level = self.capacity
        self.t = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self, amount: float = 1.0) -> None:
        amount = min(amount, self.capacity)  # a call bigger than the bucket waits for a full bucket
        async with self._lock:
            while True:
                now = time.monotonic()
                self.level = min(self.capacity, self.level + (now - self.t) * self.rate)
                self.t = now
                if self.level >= amount:
                    self.level -= amount
                    return
                await asyncio.sleep((amount - self.level) / self.rate)


def parse_retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date); None if absent."""
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000.0)
    except (TypeError, ValueError):
        pass
    ra = headers.get("retry-after")
    if ra is None:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        try:
            dt = email.utils.parsedate_to_datetime(ra)
            return max(0.0, dt.timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with "equal jitter": half fixed, half uniform, capped at ``cap``."""
    d = min(cap, base * (2**attempt))
    return d / 2 + rng.uniform(0, d / 2)


class OpenAITeacher(Teacher):
    backend = "openai"

    def __init__(self, model: str, config: TeacherConfig | None = None):
        super().__init__(model, config)
        self._state = {"ok": 0, "refused": 0, "wave": 1}
        c = self.config
        self.base_url = c.base_url or os.environ.get("OPENAI_BASE_URL") or None
        key = c.api_key.get_secret_value() if c.api_key else os.environ.get("OPENAI_API_KEY")
        if not key:
            if self.base_url is None:
                raise UserError(
                    "teacher openai:* needs an API key: set OPENAI_API_KEY (or OPENAI_BASE_URL for a "
                    "local server that needs no key)"
                )
            key = "EMPTY"  # local servers (vLLM, llama.cpp) accept any key
        self._key = key
        self._rng = random.Random(c.seed)

    def secrets(self) -> list[str]:
        return [self._key]

    def _redact(self, text: str) -> str:
        return redact(str(text), self._key)

    def _url(self) -> str:
        return self.base_url or "https://api.openai.com/v1"

    def _server_message(self, e: Any) -> str:
        """The server's own error text: ``error.message`` of a JSON body, else the body itself."""
        body = getattr(e, "body", None)
        text = None
        if isinstance(body, dict):
            err = body.get("error", body)
            text = err.get("message") if isinstance(err, dict) else err
            text = text or body.get("detail") or body.get("message")
        elif isinstance(body, str):
            text = body
        if not text:
            try:
                text = e.response.text
            except Exception:  # noqa: BLE001 - a streamed or closed response has no text
                text = None
        return self._redact(_short(str(text or getattr(e, "message", "") or e), 300))

    def _client(self):
        from openai import AsyncOpenAI

        return AsyncOpenAI(api_key=self._key, base_url=self.base_url, max_retries=0, timeout=self.config.timeout)

    # ------------------------------------------------------------------------------------------
    async def _call(self, client, req: Request, sem: asyncio.Semaphore, rpm: TokenBucket | None,
                    tpm: TokenBucket | None) -> Result:
        import openai

        c = self.config
        est_tokens = sum(len(m["content"]) for m in req.messages or []) / 4 + c.max_tokens
        last = "no attempt"
        for attempt in range(c.max_retries + 1):
            retry_after: float | None = None
            if rpm is not None:
                await rpm.take(1)
            if tpm is not None:
                await tpm.take(est_tokens)
            try:
                async with sem:
                    kwargs: dict[str, Any] = dict(
                        model=self.model, messages=req.messages, temperature=c.temperature,
                        top_p=c.top_p, max_tokens=c.max_tokens, n=1,
                    )
                    if c.seed is not None:  # one seed per sample index, so n samples differ
                        kwargs["seed"] = c.seed + req.sample
                    if c.reasoning_effort is not None:  # reasoning models (o-series, gpt-oss, vLLM)
                        kwargs["reasoning_effort"] = c.reasoning_effort
                    # POST through the client (auth, base URL, status errors) without its typed-param
                    # transform and model construction, which cost ~2x the CPU of the rest per call
                    body = await client.post("/chat/completions", cast_to=str, body=kwargs)
                res = self._parse(json.loads(body))
                self._state["ok"] += 1
                return res
            except openai.APIStatusError as e:
                status = e.status_code
                msg = self._redact(_short(getattr(e, "message", "") or str(e)))
                if status in (401, 403):
                    raise FatalTeacherError(
                        f"the server at {self.base_url or 'api.openai.com'} rejected the API key (HTTP {status}): "
                        "check OPENAI_API_KEY"
                    ) from None
                if status == 404:
                    raise FatalTeacherError(
                        f"model {self.model!r} or endpoint not found at {self.base_url or 'api.openai.com'} "
                        f"(HTTP 404): check the model name and OPENAI_BASE_URL"
                    ) from None
                if status not in RETRYABLE_STATUS:
                    if 400 <= status < 500 and self._state["ok"] == 0:
                        # refused before any call succeeded: the settings are wrong for every item, stop once
                        # (after a success, a 4xx is about this item: it fails alone)
                        raise FatalTeacherError(
                            f"the server at {self._url()} refused the request (HTTP {status}): "
                            f"{self._server_message(e)}; fix the settings it names (model, max_tokens, ...) and rerun"
                        ) from None
                    raise TeacherError(f"HTTP {status}: {self._server_message(e)}") from None
                retry_after = parse_retry_after(getattr(e.response, "headers", None))
                last = f"HTTP {status}: {msg}"
            except openai.APITimeoutError:
                last = f"timed out after {c.timeout:g}s"
            except openai.APIConnectionError as e:
                last = f"connection error: {self._redact(_short(str(e.__cause__ or e)))}"
                if self._state["ok"] == 0 and attempt == 1:  # a request refused twice (one retry for a blip)
                    self._state["refused"] += 1
                    if self._state["refused"] >= self._state["wave"]:  # the whole first wave: nobody is there
                        raise FatalTeacherError(
                            f"cannot connect to the server at {self._url()} ({last}): start it, or point --base-url / "
                            "OPENAI_BASE_URL at a running OpenAI-compatible server"
                        ) from None
            except (openai.APIResponseValidationError, _Malformed, ValueError, TypeError, AttributeError, KeyError) as e:
                last = f"malformed response: {self._redact(_short(str(e)))}"
            if attempt >= c.max_retries:
                break
            if retry_after is not None:  # the server said when: wait that long (+ up to 10% jitter)
                delay = retry_after * (1 + 0.1 * self._rng.random())
            else:
                delay = backoff_delay(attempt, c.backoff_base, c.backoff_max, self._rng)
            await asyncio.sleep(delay)
        raise TeacherError(f"failed after {c.max_retries + 1} attempts; last error: {last}")

    @staticmethod
    def _parse(resp: Any) -> Result:
        if not isinstance(resp, dict):
            raise _Malformed("the response body is not a JSON object")
        choices = resp.get("choices")
        if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
            raise _Malformed("no choices in the response body")
        ch = choices[0]
        msg = ch.get("message") or {}
        text = msg.get("content")
        if text is None and isinstance(msg.get("reasoning") or msg.get("reasoning_content"), str):
            text = ""  # a reasoning model cut before its final response
        if not isinstance(text, str):
            raise _Malformed("choices[0].message.content is missing")
        # vLLM's reasoning parsers: `reasoning` (older: `reasoning_content`); DeepSeek: `reasoning_content`
        reasoning = msg.get("reasoning") or msg.get("reasoning_content")
        if not isinstance(reasoning, str) or not reasoning.strip():
            reasoning, text = split_thinking(text)
        usage = None
        u = resp.get("usage")
        if isinstance(u, dict) and u.get("prompt_tokens") is not None:
            usage = {"prompt_tokens": int(u["prompt_tokens"]), "completion_tokens": int(u.get("completion_tokens") or 0)}
            details = u.get("completion_tokens_details")
            if isinstance(details, dict) and details.get("reasoning_tokens") is not None:
                usage["reasoning_tokens"] = int(details["reasoning_tokens"])
        return Result(text=text, usage=usage, finish_reason=ch.get("finish_reason"),
                      reasoning=reasoning.strip() if isinstance(reasoning, str) and reasoning.strip() else None)

    async def stream(self, requests: list[Request]) -> AsyncIterator[tuple[Request, Result | Exception]]:
        c = self.config
        if not requests:
            return
        client = self._client()
        sem = asyncio.Semaphore(c.concurrency)
        rpm = TokenBucket(c.rpm) if c.rpm else None
        tpm = TokenBucket(c.tpm) if c.tpm else None
        pending = list(reversed(requests))
        out: asyncio.Queue = asyncio.Queue()
        # successes and refused connections so far: a first wave of refused connections stops the run
        self._state = {"ok": 0, "refused": 0, "wave": min(c.concurrency, len(requests))}

        fatal = [False]  # a call the server refuses outright: no worker launches another

        async def worker() -> None:
            try:
                while pending and not self.stop_requested and not fatal[0]:
                    if self.admit is not None and not self.admit(pending[-1]):
                        self.stop_requested = True  # the budget cannot cover the next call
                        break
                    r = pending.pop()
                    try:
                        res: Result | Exception = await self._call(client, r, sem, rpm, tpm)
                    except (TeacherError, FatalTeacherError) as e:
                        res = e
                    except Exception as e:  # never lose an item: record anything unexpected as a failure
                        res = TeacherError(self._redact(f"{type(e).__name__}: {_short(str(e))}"))
                    if isinstance(res, FatalTeacherError):
                        fatal[0] = True
                    out.put_nowait((r, res))
            finally:
                out.put_nowait(None)  # this worker is done (its launched calls are all delivered)

        workers = [asyncio.create_task(worker()) for _ in range(min(c.concurrency, len(requests)))]
        try:
            finished = 0
            while finished < len(workers):
                item = await out.get()
                if item is None:
                    finished += 1
                    continue
                r, res = item
                if isinstance(res, FatalTeacherError):
                    raise res
                yield r, res
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            await client.close()


class _Malformed(Exception):
    pass


_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)


def split_thinking(text: str) -> tuple[str | None, str]:
    """``(reasoning, final response)`` of a completion that keeps its thinking inline:
    ``<think>…</think>answer``; a completion holding only the closing tag (the chat template opened
    ``<think>`` in the prompt, as newer DeepSeek-R1 templates do); or an unclosed ``<think>…``
    (cut by the token cap: all reasoning, no response). Text without think tags is all response."""
    m = _THINK.search(text)
    if m:
        return m.group(1).strip(), (text[: m.start()] + text[m.end():]).strip()
    if "</think>" in text:
        head, _, tail = text.partition("</think>")
        return head.strip(), tail.strip()
    if "<think>" in text:
        head, _, tail = text.partition("<think>")
        return tail.strip(), head.strip()
    return None, text


def _short(s: str, n: int = 200) -> str:
    s = " ".join(str(s).split())
    return s if len(s) <= n else s[: n - 3] + "..."
