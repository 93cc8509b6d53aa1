"""Atomic file writes shared by every stage: write a temp file beside the target, then rename.

A crash or SIGKILL leaves either the old file or the new one, never a half-written one; the temp
name carries the process id so concurrent writers (study workers, shards) never collide.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | os.PathLike, text: str, fsync: bool = True) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def load_yaml_mapping(path: str | os.PathLike, what: str = "config keys") -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; any problem is one UserError naming the file
    (and the line, for a syntax error). An empty file is an empty mapping."""
    import yaml

    from .errors import UserError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist: pass the path of a YAML file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UserError(f"cannot read config {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise UserError(f"{path}{where}: invalid YAML ({getattr(e, 'problem', None) or e}); fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a YAML mapping of {what}, got {type(data).__name__}")
    return data
