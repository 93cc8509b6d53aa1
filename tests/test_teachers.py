"""Teacher backends against real components: a local HTTP server, a scratch model on disk, trace files."""

from __future__ import annotations

import asyncio
import importlib.util
import random
import time

import pytest
from openai_server import FakeOpenAIServer

from cotdistill.errors import UserError
from cotdistill.prompts import build_messages
from cotdistill.tasks.base import Example
from cotdistill.teachers import FatalTeacherError, Request, Result, TeacherConfig, TeacherError, make_teacher
from cotdistill.teachers.openai_compat import backoff_delay, parse_retry_after
from cotdistill.traces import Trace, write_traces

KEY = "sk-test-7f3a9c1e5b2d"


def _examples(n: int, task: str = "t") -> list[Example]:
    return [Example(id=f"{task}-{i}", task=task, split="train", question=f"Ann has {i} pens and finds {i + 2}. How many?",
                    answer=str(2 * i + 2), answer_type="number") for i in range(n)]


def _requests(n: int, level: int = 3, fmt: str = "cot") -> list[Request]:
    return [Request(example=e, level=level, fmt=fmt, sample=0, messages=build_messages(e, level, fmt, hint_gold=True))
            for e in _examples(n)]


def _collect(teacher, reqs):
    async def go():
        out = {}
        async for r, res in teacher.stream(reqs):
            assert r.example.id not in out, "an item came back twice"
            out[r.example.id] = res
        return out

    return asyncio.run(go())


def _cfg(srv, **kw) -> TeacherConfig:
    base = dict(base_url=srv.base_url, api_key=KEY, timeout=0.6, backoff_base=0.01, backoff_max=0.05, concurrency=4)
    return TeacherConfig(**{**base, **kw})


# ------------------------------------------------------------------------------------ openai
def test_every_fault_kind_is_retried_and_no_item_is_lost():
    faults = ["429", "500", "503", "drop", "stall", "malformed", "empty", "ok"]
    with FakeOpenAIServer(faults=faults, stall_s=1.5, api_key=KEY) as srv:
        t = make_teacher("openai:fake-model", _cfg(srv))
        reqs = _requests(16)
        out = _collect(t, reqs)
        seen = {e["outcome"] for e in srv.log}
    assert set(faults) <= seen  # every fault was really served
    assert len(out) == 16
    for r in reqs:
        res = out[r.example.id]
        assert isinstance(res, Result), res
        assert res.text.endswith(f"The answer is {r.example.answer}.")
        assert res.usage and res.usage["completion_tokens"] > 0


def test_retry_after_is_honoured_and_exhausted_retries_fail_cleanly():
    with FakeOpenAIServer(faults=["429"], retry_after=0.4, fault_attempts=1) as srv:
        t = make_teacher("openai:m", _cfg(srv, backoff_base=0.001, backoff_max=0.002))
        out = _collect(t, _requests(2))
        assert all(isinstance(v, Result) for v in out.values())
        by_key: dict[str, list[float]] = {}
        for e in srv.log:
            by_key.setdefault(e["key"], []).append(e["t"])
        gaps = [ts[1] - ts[0] for ts in by_key.values()]
        assert len(gaps) == 2 and min(gaps) >= 0.38, gaps  # waited for Retry-After, not the 1 ms backoff
    with FakeOpenAIServer(faults=["503"], fault_attempts=99) as srv:
        t = make_teacher("openai:m", _cfg(srv, max_retries=2))
        out = _collect(t, _requests(3))
        assert all(isinstance(v, TeacherError) for v in out.values())
        assert "failed after 3 attempts" in str(out["t-0"]) and "HTTP 503" in str(out["t-0"])
        assert len(srv.log) == 9


def test_bad_key_is_fatal_and_never_echoed():
    with FakeOpenAIServer(api_key="the-right-key") as srv:
        t = make_teacher("openai:m", _cfg(srv))
        with pytest.raises(FatalTeacherError) as ei:
            _collect(t, _requests(3))
    assert "401" in str(ei.value) and KEY not in str(ei.value)


def test_concurrency_is_bounded_and_used():
    with FakeOpenAIServer(latency=0.15) as srv:
        t = make_teacher("openai:m", _cfg(srv, concurrency=5))
        _collect(t, _requests(20))
        assert srv.max_in_flight == 5


def test_requests_per_minute_limit_holds():
    with FakeOpenAIServer() as srv:
        t = make_teacher("openai:m", _cfg(srv, rpm=600, concurrency=16))  # 10 per second, burst of 10
        t0 = time.monotonic()
        _collect(t, _requests(25))
        elapsed = time.monotonic() - t0
        ts = sorted(e["t"] for e in srv.log)
    assert elapsed >= 1.4  # 25 requests = 10 at once + 15 at 10/s
    # token bucket: any window of w seconds holds at most 10 (the burst) + 10 * w requests (+1 for timing slack)
    for i in range(len(ts)):
        for j in range(i + 1, len(ts)):
            assert j - i + 1 <= 10 + 10 * (ts[j] - ts[i]) + 1


def test_retry_after_parsing_and_backoff():
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "soon"}) is None
    rng = random.Random(0)
    ds = [backoff_delay(a, 1.0, 8.0, rng) for a in range(6)]
    assert 0.5 <= ds[0] <= 1.0 and 2.0 <= ds[2] <= 4.0 and all(4.0 <= d <= 8.0 for d in ds[3:])


def test_missing_key_without_server_is_a_user_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(UserError, match="OPENAI_API_KEY"):
        make_teacher("openai:gpt-4o-mini", TeacherConfig())
    with pytest.raises(UserError, match="unknown teacher"):
        make_teacher("gpt4:x")
    with pytest.raises(UserError, match="names no model"):
        make_teacher("hf:")


# ------------------------------------------------------------------------------------ hf
@pytest.mark.slow
def test_hf_backend_batches_with_left_padding(tmp_path):
    from cotdistill.students import make_scratch_student

    texts = [m["content"] for r in _requests(4) for m in r.messages]
    model, tok = make_scratch_student("scratch:llama-xxs", texts, seed=0)
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    t = make_teacher(f"hf:{tmp_path / 'm'}", TeacherConfig(max_tokens=6, batch_size=3))
    reqs = _requests(3)
    reqs[1].messages[-1]["content"] += " (a much longer question, so the batch needs padding)"
    batch = t.generate_batch(reqs)
    alone = [t.generate_batch([r])[0] for r in reqs]
    for b, a in zip(batch, alone):
        assert isinstance(b, Result) and b.text == a.text  # left padding does not change greedy output
        assert b.usage["completion_tokens"] <= 6 and b.usage["prompt_tokens"] > 500
    assert batch[0].usage["prompt_tokens"] < batch[1].usage["prompt_tokens"]
    out = _collect(t, reqs)
    assert [out[r.example.id].text for r in reqs] == [b.text for b in batch]


def test_vllm_missing_is_one_clear_line():
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    with pytest.raises(UserError) as ei:
        make_teacher("vllm:/models/x")
    assert "pip install 'cotdistill[vllm]'" in str(ei.value) and "\n" not in str(ei.value)


# ------------------------------------------------------------------------------------ replay
def _trace(ex: Example, level, fmt="cot", teacher="gpt-4o", out=None, question=None) -> Trace:
    return Trace(id=ex.id, task=ex.task, question=question or ex.question, gold=ex.answer, teacher=teacher,
                 level=level, format=fmt, output=out or f"{teacher} L{level}. The answer is {ex.answer}.",
                 source="paper:SVAMP_level3_ranked")


def test_replay_matches_by_id_then_question_and_reports_missing(tmp_path):
    exs = _examples(4)
    traces = [_trace(exs[0], 3), _trace(exs[1], 3, fmt="sym"),
              # different id scheme, same question with other layout: matched by normalised question
              _trace(Example(**{**exs[2].model_dump(), "id": "other-7"}), 3, question=exs[2].question.upper() + "  "),
              _trace(exs[0], "human", teacher="human")]
    write_traces(tmp_path / "r.jsonl", traces)
    t = make_teacher(f"replay:{tmp_path / 'r.jsonl'}", TeacherConfig(replay_teacher="gpt-4o"))
    reqs = [Request(exs[0], 3, "cot", 0), Request(exs[1], 3, "sym", 0), Request(exs[2], 3, "cot", 0),
            Request(exs[3], 3, "cot", 0), Request(exs[1], 3, "cot", 0)]
    out = t.generate_batch(reqs)
    assert out[0].text == traces[0].output and out[0].teacher == "gpt-4o" and out[0].source == traces[0].source
    assert out[1].text == traces[1].output
    assert out[2].text == traces[2].output
    assert isinstance(out[3], TeacherError) and "not in replay file" in str(out[3])
    assert isinstance(out[4], TeacherError)  # level 3 cot of example 1 does not exist: not invented
    # two teachers for the same item and no choice: a clear error
    write_traces(tmp_path / "two.jsonl", [_trace(exs[0], 3), _trace(exs[0], 3, teacher="gemini")])
    t2 = make_teacher(f"replay:{tmp_path / 'two.jsonl'}")
    with pytest.raises(UserError, match="--replay-teacher"):
        t2.generate_batch([Request(exs[0], 3, "cot", 0)])
    with pytest.raises(UserError, match="no traces of teacher"):
        make_teacher(f"replay:{tmp_path / 'r.jsonl'}", TeacherConfig(replay_teacher="llama"))


def test_replay_reproduces_imported_paper_traces_exactly(shared_data, tmp_path):
    traces_mod = pytest.importorskip("cotdistill.traces")
    if not hasattr(traces_mod, "import_paper"):
        pytest.skip("cotdistill.traces.import_paper is not written yet")
    from cotdistill.generate import generate

    report = traces_mod.import_paper(shared_data / "paper" / "SVAMP_ChatGPT_level3_ranked.json.gz", shared_data)
    imported = [t for t in report.traces if t.level == 3][:40]
    assert len(imported) == 40
    write_traces(tmp_path / "paper.jsonl", imported)
    exs = [Example(id=t.id, task=t.task, split="train", question=t.question, answer=t.gold, answer_type="number")
           for t in imported]
    from cotdistill.generate import GenerateConfig

    res = generate(exs, tmp_path / "out", GenerateConfig(teacher=f"replay:{tmp_path / 'paper.jsonl'}", levels=[3]),
                   progress=False)
    assert [(t.id, t.output, t.teacher) for t in res.traces] == [(t.id, t.output, t.teacher) for t in imported]
    assert not res.failed


# ------------------------------------------------------------------------------------ lab
def test_lab_teacher_wraps_the_arith_solver():
    arith = pytest.importorskip("cotdistill.tasks.arith")
    from cotdistill.tasks import get_task

    exs = get_task("arith").load("test")[:5]
    t = make_teacher("lab")
    for level in range(1, 7):
        for fmt in ("cot", "subq", "rar", "sym"):
            out = t.generate_batch([Request(e, level, fmt, 0) for e in exs])
            for e, r in zip(exs, out):
                assert r.text == arith.lab_rationale(e, level, fmt)
    with pytest.raises(UserError, match="only solves the arith task"):
        t.generate_batch([Request(_examples(1)[0], 3, "cot", 0)])


@pytest.mark.parametrize("style", ["reasoning", "reasoning_content", "inline", "closing"])
def test_a_reasoning_teachers_thinking_is_kept_apart_from_its_answer(tmp_path, style):
    """Every way servers return a reasoning model's thinking (vLLM's `reasoning`, DeepSeek's
    `reasoning_content`, inline `<think>…</think>`, only `</think>`) ends in the trace's `reasoning`
    field, the final response in `output` (graded), and the reasoning tokens in the usage."""
    from openai_server import THINKING, FakeOpenAIServer

    from cotdistill.generate import GenerateConfig, generate
    from cotdistill.tasks import get_task

    exs = get_task("arith").load("train")[:3]
    with FakeOpenAIServer(reasoning=style) as srv:
        cfg = GenerateConfig(teacher="openai:fake-r1", base_url=srv.base_url, api_key="k", levels=[3],
                             hint_gold=True, reasoning_effort="high")
        res = generate(exs, tmp_path / "g", cfg, progress=False)
        bodies = list(srv.bodies)
    assert len(res.traces) == 3
    for t in res.traces:
        assert t.reasoning == THINKING
        assert "<think>" not in t.output and "</think>" not in t.output and THINKING not in t.output
        assert t.correct is True and t.finish_reason == "stop"
        assert t.usage["reasoning_tokens"] == len(THINKING.split())
    assert all(b.get("reasoning_effort") == "high" for b in bodies)


def test_split_thinking_cases():
    from cotdistill.teachers.openai_compat import split_thinking

    assert split_thinking("<think>a b</think> The answer is 3.") == ("a b", "The answer is 3.")
    assert split_thinking("a b\n</think>\nThe answer is 3.") == ("a b", "The answer is 3.")
    assert split_thinking("<think>still thinking when the cap hit") == ("still thinking when the cap hit", "")
    assert split_thinking("The answer is 3.") == (None, "The answer is 3.")
