"""Run directories: what kind each one is, one writer at a time, and content keys.

Every stage directory is keyed by :func:`content_key` (chained from its parents' keys) and marked
finished with :func:`mark_complete`; :func:`model_key` names the model a later stage reads.

Every command that writes an output directory claims it first with :func:`claim`:

* the directory's kind (``generate``, ``import``, ``curate``, ``evaluate``, ``study``, ``select``,
  ``model``) is recorded in ``.cotdistill.json`` at its top. Rerunning a command on its own kind
  of directory adds to it (resumes, merges new items); a directory of another kind - a model, another
  stage's run, another study - is refused with a one-line error, before anything is written;
* directories written before the marker existed are recognised by their files;
* a non-empty directory that is not a cotdistill run is refused (nothing of the user's is replaced);
* an exclusive lock (``.cotdistill.lock``, ``fcntl.flock``) is held while the command runs, so a
  second process on the same directory stops at once, naming the first (pid, host, command, start).
  The kernel drops the lock when a process dies, so a killed run never leaves a stale lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import UserError, switch
from .fileio import atomic_write_text

MARKER = ".cotdistill.json"
LOCK = ".cotdistill.lock"
COMPLETE = "COMPLETE"  # written last into a finished stage directory: {"key": ..., ...}
_LEGACY_COMPLETE = ("DONE",)  # the study's generate cache before COMPLETE


# ------------------------------------------------------------------------------------------
# content keys
# ------------------------------------------------------------------------------------------
def content_key(obj: Any, n: int | None = None, *, ascii: bool = True, compact: bool = True) -> str:
    """sha256 of the canonical JSON of ``obj`` (sorted keys; values JSON cannot hold as ``str``),
    the first ``n`` hex digits. Every stage keys its outputs with this: a stage's key is the
    content key of its parents' keys, its config's identity fields and the code version that
    matters, so a changed input changes every key below it.

    ``ascii`` and ``compact`` fix the JSON form of keys already stored on disk (teacher calls are
    keyed with ``ascii=False``; some older keys used the default separators): changing them
    would orphan what was cached, paid teacher calls included."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":") if compact else None, ensure_ascii=ascii, default=str)
    h = hashlib.sha256(blob.encode("utf-8")).hexdigest()
    return h[:n] if n else h


def files_key(path: str | os.PathLike, n: int = 16) -> str:
    """Identity of a model on disk without reading its weights: each weight file's name, size and
    modification time (a file, or the ``*.safetensors`` / ``*.bin`` / ``*.gguf`` files of a directory)."""
    p = Path(path)
    files = [p] if p.is_file() else sorted(f for ext in ("*.safetensors", "*.bin", "*.gguf") for f in p.glob(ext))
    stats = []
    for f in files:
        st = f.stat()
        stats.append([f.name, st.st_size, st.st_mtime_ns])
    return content_key({"path": str(p.resolve()), "files": stats}, n)


def model_key(model: str | os.PathLike) -> str:
    """The identity of a model a later stage reads: a finished cotdistill training run's key (its
    ``COMPLETE`` record: the run's config, student and data), else its weight files
    (:func:`files_key`), else its name (a hub id)."""
    p = Path(model)
    if p.exists():
        key = completed_key(p)
        return key if key else files_key(p)
    return str(model)


def mark_complete(path: str | os.PathLike, key: str, **info: Any) -> None:
    """Record that the stage directory ``path`` is finished, with its content key (written last,
    atomically: a directory without it is unfinished whatever else it holds)."""
    atomic_write_text(Path(path) / COMPLETE, json.dumps({"key": key, **info}) + "\n")


def completed_key(path: str | os.PathLike) -> str | None:
    """The key a finished stage directory was completed with (None when unfinished or keyless)."""
    try:
        rec = json.loads((Path(path) / COMPLETE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict):
        return None
    key = rec.get("key", rec.get("run_key"))  # (training runs wrote run_key)
    return str(key) if key else None


def is_complete(path: str | os.PathLike, key: str | None = None) -> bool:
    """True when ``path`` is a finished stage directory (with ``key``, finished with that key)."""
    p = Path(path)
    if (p / COMPLETE).is_file():
        return key is None or completed_key(p) in (key, None)
    return key is None and any((p / name).is_file() for name in _LEGACY_COMPLETE)

class RunRecord:
    """What a resumable stage directory was made with, in one JSON file: the identity fields (the
    settings that change its output) and their content key. A rerun with the same identity
    resumes; one with another identity is refused, naming the fields that differ. Every resumable
    stage keeps one: ``eval_config.json`` (evaluate), ``run_key.json`` (an interrupted training run),
    ``settings.json`` (select).

    ``upgrade`` turns a record written by an older version into today's form (fields added since,
    with the value that reproduces what it was made with); ``optional`` fields an older record did
    not hold are not compared; with ``exact``, a recorded field that is no longer part of the
    identity is a difference too. A record holding only a key (older training runs) is compared by key."""

    def __init__(self, path: str | os.PathLike, identity: dict[str, Any], *, compact: bool = True,
                 optional: tuple[str, ...] = (), upgrade: Any = None, exact: bool = False):
        self.path = Path(path)
        self.identity = identity
        self.key = content_key(identity, compact=compact)
        self.optional = optional
        self.upgrade = upgrade
        self.exact = exact

    def stored(self) -> dict[str, Any] | None:
        """The record on disk (None when absent); a corrupt one is a one-line UserError."""
        if not self.path.is_file():
            return None
        try:
            rec = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            rec = None
        if not isinstance(rec, dict):
            raise UserError(f"{self.path} is corrupt: delete it or start over with {switch('overwrite')}")
        return self.upgrade(rec) if self.upgrade else rec

    def differences(self) -> list[str]:
        """The identity fields whose recorded value differs from now (empty: the same run, or none recorded)."""
        rec = self.stored()
        if rec is None or rec.get("key") == self.key:  # (the key decides: values may not round-trip JSON exactly)
            return []
        fields = [k for k in self.identity if k != "key"]
        if not any(k in rec for k in fields):  # a key-only record
            return [] if rec.get("key") in (None, self.key) else ["key"]
        names = fields + (sorted(set(rec) - set(fields) - {"key"}) if self.exact else [])  # identity order first
        return [k for k in names if rec.get(k) != self.identity.get(k) and not (k in self.optional and k not in rec)]

    def write(self, extra: dict[str, Any] | None = None) -> None:
        """Write the record; ``extra`` fields are recorded for the reader and never compared."""
        rec = {**self.identity, "key": self.key, **{k: v for k, v in (extra or {}).items() if k not in self.identity}}
        atomic_write_text(self.path, json.dumps(rec, indent=2, default=str) + "\n")


KINDS = {
    "generate": "a `cotdistill generate` run",
    "import": "a `cotdistill import-paper` run",
    "curate": "a `cotdistill curate` output",
    "evaluate": "a `cotdistill evaluate` run",
    "study": "a `cotdistill study` directory",
    "select": "a `cotdistill select` run",
    "model": "a model directory",
}

# files that identify directories written before the marker existed (first match wins)
_SIGNATURES: list[tuple[str, tuple[str, ...]]] = [
    ("model", ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "adapter_config.json")),
    ("study", ("study.json", "stages.json")),
    ("select", ("selection.json", "settings.json")),
    ("evaluate", ("predictions.jsonl", "eval_config.json")),
    ("generate", ("calls.jsonl", "failed.jsonl")),
    ("curate", ("traces.curate.json",)),
]


def kind_of(path: str | os.PathLike) -> str | None:
    """The kind of run directory ``path`` is, ``"empty"`` for a missing or empty directory, or
    ``"other"`` for a non-empty directory that no cotdistill command wrote."""
    p = Path(path)
    if not p.exists():
        return "empty"
    if not p.is_dir():
        return "file"
    m = p / MARKER
    if m.is_file():
        try:
            return str(json.loads(m.read_text(encoding="utf-8"))["kind"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    names = {c.name for c in p.iterdir()}
    for kind, files in _SIGNATURES:
        if names & set(files):
            return kind
    if (p / "config.json").is_file():
        try:
            cfg = json.loads((p / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            cfg = {}
        if isinstance(cfg, dict) and ("model_type" in cfg or "architectures" in cfg):
            return "model"
        if isinstance(cfg, dict) and "teacher" in cfg and "levels" in cfg:
            return "generate"  # a generate run interrupted before its first traces
    # lock files, and the transient files of a process claiming it at this moment (shards start together)
    names = {n for n in names if not (n.startswith(".cotdistill") or n.startswith(".probe-"))}
    if names <= {"traces.jsonl", "config.json", "summary.json"} and "traces.jsonl" in names:
        return "generate" if "summary.json" in names else "import"
    if not names:
        return "empty"
    return "other"


def identity_of(path: str | os.PathLike) -> str | None:
    """The identity recorded in the marker (a study's name); for a study written before markers,
    the name in its study.json."""
    for name, key in ((MARKER, "identity"), ("study.json", "name")):
        try:
            v = json.loads((Path(path) / name).read_text(encoding="utf-8")).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if v is not None:
            return str(v)
    return None


def check(path: str | os.PathLike, kind: str, flag: str = "--out", identity: str | None = None,
          source: str | None = None) -> None:
    """Raise a one-line UserError unless ``path`` may be written as ``kind`` (missing, empty, or
    already that kind with the same identity). Writes nothing. ``source`` (a config file) prefixes
    the message."""
    try:
        _check(Path(path), kind, flag, identity)
    except UserError as e:
        if source:
            raise UserError(f"{source}: field {flag!r}: {e}") from None
        raise


def _check(p: Path, kind: str, flag: str, identity: str | None) -> None:
    for parent in [p, *p.parents]:
        if parent.exists() and not parent.is_dir():
            raise UserError(f"{flag} {p}: {parent} is a file, not a directory: choose another {flag}")
    k = kind_of(p)
    if k in ("empty", kind):
        if k == kind and identity is not None:
            old = identity_of(p)
            if old is not None and old != identity:
                raise UserError(f"{flag} {p} belongs to {KINDS.get(kind, kind)} named {old!r}, not {identity!r}: "
                                f"choose another {flag} (nothing was written)")
        return
    if k == "other":
        raise UserError(f"{flag} {p} is a non-empty directory that cotdistill did not write: choose a new or empty "
                        f"{flag} (nothing was written)")
    raise UserError(f"{flag} {p} is {KINDS.get(k, k)}; `cotdistill {_command(kind)}` would mix into or replace it: "
                    f"choose another {flag} (nothing was written)")


def _command(kind: str) -> str:
    return {"import": "import-paper", "model": "train"}.get(kind, kind)


@contextlib.contextmanager
def claim(path: str | os.PathLike, kind: str, flag: str = "--out", identity: str | None = None,
          info: dict[str, Any] | None = None, wait: bool = False, lock: str = LOCK) -> Iterator[Path]:
    """Check, create and lock ``path`` as a ``kind`` run directory for the duration of the block.
    A directory locked by another process is a UserError naming it, or with ``wait`` is waited for.
    ``lock`` names the lock file (shards of one study each hold their own)."""
    p = Path(path)
    check(p, kind, flag, identity)
    p.mkdir(parents=True, exist_ok=True)
    with hold(p / lock, f"{flag} {p}", flag, wait):
        check(p, kind, flag, identity)  # another process may have claimed it between the check and the lock
        m = p / MARKER
        if not m.is_file():
            rec = {"kind": kind, "created": round(time.time())}
            if identity is not None:
                rec["identity"] = identity
            rec.update(info or {})
            atomic_write_text(m, json.dumps(rec) + "\n", fsync=False)
        yield p


@contextlib.contextmanager
def hold(lock_file: str | os.PathLike, what: str, flag: str = "--out", wait: bool = False) -> Iterator[None]:
    """An exclusive ``flock`` on ``lock_file`` for the block; the holder (pid, host, command, start)
    is written into it, and a second process is refused with a one-line error naming the holder
    (or waits, with ``wait``)."""
    import fcntl

    fh = open(lock_file, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = _describe_holder(fh.read())
            raise UserError(f"{what} is in use by another cotdistill process ({holder}): wait for it to finish, "
                            f"or choose another {flag}") from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": round(time.time()),
                             "command": " ".join(["cotdistill", *sys.argv[1:]])[:300]}) + "\n")
        fh.flush()
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


def _describe_holder(text: str) -> str:
    try:
        h = json.loads(text)
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h["since"]))
        return f"pid {h['pid']} on {h['host']}, `{h['command']}`, since {since}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"
