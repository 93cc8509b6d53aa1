"""Atomic file writes shared by every stage: write a temp file beside the target, then rename.

A crash or SIGKILL leaves either the old file or the new one, never a half-written one; the temp
name carries the process id so concurrent writers (study workers, shards) never collide.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", fsync: bool = True) -> Iterator[IO[Any]]:
    """Open a temp file beside ``path`` for writing; on success it replaces ``path``, on any error
    (a full disk included) it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError) and e.filename is None:
            e.filename = str(path)  # (a failed write names no file: name the one being written)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """A temp path beside ``path`` for writers that take a name (``savefig``, ``torch.save``, a
    directory a library fills): on success it replaces ``path`` (a directory whole, see
    :func:`replace_dir`), on any error it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")
    try:
        yield tmp
        if tmp.is_dir():
            replace_dir(tmp, path)
        else:
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
        raise


def usual_modes(directory: str | os.PathLike) -> None:
    """Give the files under ``directory`` the modes the user's umask gives new files (writers that
    go through a private temp file, e.g. a safetensors save, leave them readable by the owner only)."""
    mask = os.umask(0)
    os.umask(mask)
    for f in Path(directory).rglob("*"):
        if f.is_file() and not f.is_symlink():
            with contextlib.suppress(OSError):
                os.chmod(f, 0o666 & ~mask)


def replace_dir(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Put the finished directory ``src`` at ``dest`` by a rename (an existing ``dest`` is removed
    first): a reader sees the old directory, none, or the new one, never a half-filled one."""
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(src, dest)


def atomic_write_text(path: str | os.PathLike, text: str, fsync: bool = True) -> None:
    with atomic_open(path, "w", fsync=fsync) as f:
        f.write(text)


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
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_unique_key_loader())  # noqa: S506 - a SafeLoader
    except OSError as e:
        raise UserError(f"cannot read config {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (byte {e.start}): save the config as UTF-8") from None
    except _DuplicateKey as e:
        raise UserError(f"{path}:{e.line}: key {e.key!r} is given twice; keep one") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise UserError(f"{path}{where}: invalid YAML ({getattr(e, 'problem', None) or e}); fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a YAML mapping of {what}, got {type(data).__name__}")
    return data


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int):
        super().__init__(key)
        self.key, self.line = key, line


@functools.lru_cache(maxsize=1)
def _unique_key_loader():
    import yaml

    class Loader(yaml.SafeLoader):
        """SafeLoader that refuses a mapping key given twice (plain YAML keeps the last silently)."""

        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if isinstance(key, (str, int, float, bool)) and key in seen:
                    raise _DuplicateKey(key, key_node.start_mark.line + 1)
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return Loader

