"""Shared fixtures. Real data is read from ../shared/data (or $COTDISTILL_SHARED_DATA); tests
that need it skip cleanly when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("COTDISTILL_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED / "paper").is_dir() or not (SHARED / "benchmarks").is_dir():
        pytest.skip(f"real data not found at {SHARED} (set COTDISTILL_SHARED_DATA)")
    return SHARED


@pytest.fixture(autouse=True)
def _torch_threads():
    try:
        import torch

        torch.set_num_threads(int(os.environ.get("COTDISTILL_TEST_THREADS", "1")))
    except ImportError:
        pass
    yield
