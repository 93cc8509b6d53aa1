"""A real, fault-injecting OpenAI-compatible chat-completions server (standard library only).

Used by the tests and ``benchmarks/bench_generate.py``; also handy by hand::

    python tests/openai_server.py --port 8000 --latency 0.2 --faults 429,ok,500,drop,stall,malformed

Faults are deterministic: the n-th distinct prompt (in order of first arrival) gets
``faults[n % len(faults)]`` on its first ``fault_attempts`` attempts, then succeeds. Kinds:
``ok``, ``429`` (with ``Retry-After``), ``500``, ``503``, ``400`` (an invalid-request body), ``drop`` (connection closed with no
response), ``stall`` (no response for ``stall_s`` seconds: the client times out), ``malformed``
(200 with a body that is not JSON), ``empty`` (200 with no choices).

The reply echoes the gold answer when the prompt shows it (``The correct answer is X``), else
``The answer is 42.`` Every request is logged in ``server.log`` (and to ``log_path`` as JSONL):
time, prompt key (sha256 of model + messages + sampling parameters), outcome.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

FAULT_KINDS = ("ok", "429", "500", "503", "400", "drop", "stall", "malformed", "empty")
THINKING = "Let me think. The question asks for a total, so I add; checking: the sum is right."
BAD_REQUEST = "max_tokens is too large: this model's context length is 2048 tokens"
_GOLD = re.compile(r"The correct answer is (.+?)\. Write a solution")


def default_responder(messages: list[dict[str, str]]) -> str:
    last = messages[-1]["content"] if messages else ""
    m = _GOLD.search(last)
    ans = m.group(1) if m else "42"
    n_words = len(last.split())
    return f"We read the question ({n_words} words) and work it out step by step. The answer is {ans}."


def prompt_key(body: dict[str, Any]) -> str:
    keep = {k: body.get(k) for k in ("model", "messages", "temperature", "top_p", "max_tokens", "seed", "n")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()


class FakeOpenAIServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, latency: float = 0.0,
                 faults: list[str] | None = None, fault_attempts: int = 1, retry_after: float = 0.05,
                 stall_s: float = 2.0, api_key: str | None = None, log_path: str | None = None,
                 responder: Callable[[list[dict[str, str]]], str] = default_responder,
                 reasoning: str | None = None):
        """``reasoning`` makes it answer like a reasoning model, with the thinking ``THINKING`` in the
        message field ``reasoning`` or ``reasoning_content``, ``inline`` (``<think>…</think>``
        before the answer) or ``closing`` (only ``</think>``: the template opened the block)."""
        for f in faults or []:
            if f not in FAULT_KINDS:
                raise ValueError(f"unknown fault {f!r}; one of {FAULT_KINDS}")
        self.latency = latency
        self.faults = list(faults or ["ok"])
        self.fault_attempts = fault_attempts
        self.retry_after = retry_after
        self.stall_s = stall_s
        self.api_key = api_key
        self.responder = responder
        self.reasoning = reasoning
        self.log: list[dict[str, Any]] = []
        self.bodies: list[dict[str, Any]] = []  # request bodies, in arrival order
        self._log_fh = open(log_path, "a", encoding="utf-8") if log_path else None
        self._lock = threading.Lock()
        self._order: dict[str, int] = {}
        self._attempts: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stall

            def log_message(self, *a: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._json(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})
                else:
                    self._json(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                outer._handle(self)

            def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.host, self.port = self.httpd.server_address[:2]
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "FakeOpenAIServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._log_fh:
            self._log_fh.close()

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- helpers for tests -------------------------------------------------------------------
    def outcomes(self, outcome: str = "ok") -> list[str]:
        with self._lock:
            return [e["key"] for e in self.log if e["outcome"] == outcome]

    def _record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.log.append(entry)
            if self._log_fh:
                self._log_fh.write(json.dumps(entry) + "\n")
                self._log_fh.flush()

    # -- request handling --------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        t0 = time.time()
        n = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(n)
        if not h.path.rstrip("/").endswith("/chat/completions"):
            h._json(404, {"error": {"message": f"no route {h.path}"}})  # type: ignore[attr-defined]
            return
        if self.api_key is not None and h.headers.get("Authorization") != f"Bearer {self.api_key}":
            self._record({"t": t0, "key": None, "outcome": "401"})
            h._json(401, {"error": {"message": "Incorrect API key provided.", "code": "invalid_api_key"}})  # type: ignore[attr-defined]
            return
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            h._json(400, {"error": {"message": "body is not JSON"}})  # type: ignore[attr-defined]
            return
        key = prompt_key(body)
        with self._lock:
            self.bodies.append(body)
            if key not in self._order:
                self._order[key] = len(self._order)
            attempt = self._attempts.get(key, 0)
            self._attempts[key] = attempt + 1
            fault = self.faults[self._order[key] % len(self.faults)] if attempt < self.fault_attempts else "ok"
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency:
                time.sleep(self.latency)
            self._respond(h, body, key, fault, attempt, t0)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _respond(self, h: Any, body: dict[str, Any], key: str, fault: str, attempt: int, t0: float) -> None:
        entry = {"t": t0, "key": key, "attempt": attempt, "outcome": fault}
        if fault == "429":
            self._record(entry)
            h._json(429, {"error": {"message": "Rate limit reached", "type": "requests"}},
                    {"Retry-After": f"{self.retry_after:g}"})
        elif fault == "400":
            self._record(entry)
            h._json(400, {"error": {"message": BAD_REQUEST, "type": "invalid_request_error", "param": "max_tokens"}})
        elif fault in ("500", "503"):
            self._record(entry)
            h._json(int(fault), {"error": {"message": "server overloaded"}})
        elif fault == "drop":
            self._record(entry)
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        elif fault == "stall":
            self._record(entry)
            time.sleep(self.stall_s)
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        elif fault == "malformed":
            self._record(entry)
            data = b'{"id": "chatcmpl-x", "choices": [{"index": 0, "message": {"role": "assis'
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        elif fault == "empty":
            self._record(entry)
            h._json(200, {"id": "chatcmpl-x", "object": "chat.completion", "created": int(t0), "model": body.get("model"), "choices": []})
        else:
            text = self.responder(body.get("messages") or [])
            prompt_tokens = sum(len(str(m.get("content", ""))) for m in body.get("messages") or []) // 4
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if self.reasoning in ("reasoning", "reasoning_content"):
                message[self.reasoning] = THINKING
            elif self.reasoning == "inline":
                message["content"] = f"<think>{THINKING}</think>\n\n{text}"
            elif self.reasoning == "closing":
                message["content"] = f"{THINKING}\n</think>\n\n{text}"
            out = {
                "id": "chatcmpl-" + key[:12], "object": "chat.completion", "created": int(t0),
                "model": body.get("model"),
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(text.split()),
                          "total_tokens": prompt_tokens + len(text.split())},
            }
            if self.reasoning:
                n = len(THINKING.split())
                out["usage"]["completion_tokens"] += n
                out["usage"]["total_tokens"] += n
                out["usage"]["completion_tokens_details"] = {"reasoning_tokens": n}
            entry["outcome"] = "ok"
            h._json(200, out)
            self._record(entry)  # logged once the response is sent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--faults", default="ok", help=f"comma list of {','.join(FAULT_KINDS)}")
    ap.add_argument("--fault-attempts", type=int, default=1)
    ap.add_argument("--retry-after", type=float, default=0.05)
    ap.add_argument("--stall", type=float, default=2.0)
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--log", default=None, help="JSONL request log")
    a = ap.parse_args()
    srv = FakeOpenAIServer(a.host, a.port, a.latency, a.faults.split(","), a.fault_attempts, a.retry_after,
                           a.stall, a.api_key, a.log)
    print(f"serving {srv.base_url}", flush=True)
    try:
        srv.httpd.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
