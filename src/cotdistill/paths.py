"""Where data lives: ``--data-dir``, else ``$COTDISTILL_DATA``, else ``~/.cache/cotdistill/data``.

The directory holds (``cotdistill data download`` fills it)::

    DATA/benchmarks/gsm8k/{train,test}.jsonl.gz
    DATA/benchmarks/svamp/SVAMP.json.gz
    DATA/benchmarks/aqua/{test,dev}.json.gz
    DATA/benchmarks/{csqa_test,openbookQA_test,strategyQA_test}.json.gz
    DATA/paper/<released files>.json.gz
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

from .errors import UserError

def nearby(path: str | os.PathLike, marker: str, what: str = "") -> str:
    """A hint for a directory one level off: `` (did you mean P?)`` where the parent of ``path``, or
    a directory one or two levels below it, holds ``marker`` (e.g. ``predictions.jsonl``); else ``""``."""
    p = Path(path)
    found: list[Path] = []
    try:
        if p.is_dir():
            found = sorted(q.parent for q in p.glob(f"*/{marker}"))[:3] or sorted(q.parent for q in p.glob(f"*/*/{marker}"))[:3]
        if not found and (p.resolve().parent / marker).exists():
            found = [p.parent if str(p) not in (".", "") else Path("..")]
    except OSError:
        return ""
    if not found:
        return ""
    more = f" ({len(found)} shown)" if len(found) == 3 else ""
    return f" (did you mean {' or '.join(str(f) for f in found)}{what}?{more})"


ENV_VAR = "COTDISTILL_DATA"
CACHE_DIR = Path("~/.cache/cotdistill/data").expanduser()


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Resolve the data directory (explicit > $COTDISTILL_DATA > user cache)."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return CACHE_DIR


def require(root: Path, rel: str) -> Path:
    """Return ``root/rel`` (or ``root/rel`` without ``.gz``) or raise a one-line UserError."""
    p = root / rel
    if p.exists():
        return p
    if p.suffix == ".gz" and p.with_suffix("").exists():
        return p.with_suffix("")
    near = [root.parent] + (sorted(c for c in root.iterdir() if c.is_dir())[:50] if root.is_dir() else [])
    off = next((str(q) for q in near if (q / rel).exists() or (q / rel).with_suffix("").exists()), None)
    hint = f" ({root} is one level off: did you mean {off}?)" if off else ""
    raise UserError(
        f"missing data file {p}{hint}: run `cotdistill data download` (needs internet) to fill "
        f"{root}, or point --data-dir / ${ENV_VAR} at a directory that has {rel}"
    )


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def load_json_any(path: str | os.PathLike) -> Any:
    """Load a ``.json``/``.jsonl`` file, gzipped or not: a JSON document, or a list of JSON lines."""
    path = Path(path)
    try:
        with _open_text(path) as f:
            text = f.read()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (byte {e.start}); re-save it as UTF-8") from None
    if not text.strip():
        raise UserError(f"{path} is empty: provide a non-empty JSON or JSONL file")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{i}: malformed JSON ({e.msg}); fix or remove that line") from None
    return rows
