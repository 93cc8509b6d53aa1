"""Append-only, crash-safe record store keyed by content hash.

One JSON line per record, ``{"key": ..., "status": "ok"|"error", ...}``, written and flushed
to the kernel the moment a call completes, then fsync'd (before ``put`` returns with
``fsync="always"``, or by a group-commit thread with ``fsync="group"``, which ``generate`` uses),
so a run killed at any instant (even SIGKILL) loses at most the line being written. On open, a torn last line (no trailing newline, or not
valid JSON) is cut off before anything new is appended. The newest record of a key wins, so a
failed call recorded as ``error`` is superseded by a later success.

>>> st = Store("run/calls.jsonl")
>>> k = content_key({"backend": "openai", "model": "m", "messages": [...], "params": {...}, "sample": 0})
>>> st.get(k)        # None, or the stored record
>>> st.put(k, {"status": "ok", "output": "...", "usage": {...}})
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Iterator

from .artifacts import content_key as _content_key


def content_key(obj: Any) -> str:
    """The key of a teacher call: :func:`cotdistill.artifacts.content_key` of its request (sorted
    keys, no whitespace, non-ASCII as is)."""
    return _content_key(obj, ascii=False)


class Store:
    """Append-only JSONL store. Thread-safe; one writer process at a time per file."""

    def __init__(self, path: str | os.PathLike, fsync: str = "always"):
        """``fsync="always"``: fsync before :meth:`put` returns. ``"group"``: :meth:`put` writes and
        flushes (safe against SIGKILL: the data is in the kernel) and a background thread fsyncs
        batches of records (group commit; on power loss the last few milliseconds may be lost).
        """
        if fsync not in ("always", "group"):
            raise ValueError("fsync must be 'always' or 'group'")
        self.fsync = fsync
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._records: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.torn_lines = 0
        self._load()
        self._fh = open(self.path, "a", encoding="utf-8")
        self._dirty = threading.Event()
        self._closed = False
        self._syncer: threading.Thread | None = None
        if fsync == "group":
            self._syncer = threading.Thread(target=self._sync_loop, name="store-fsync", daemon=True)
            self._syncer.start()

    def _sync_loop(self) -> None:
        while True:
            self._dirty.wait()
            self._dirty.clear()
            if self._closed:
                return
            try:
                os.fsync(self._fh.fileno())
            except (OSError, ValueError):  # closed under us
                return

    # -- loading -----------------------------------------------------------------------------
    def _load(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            data = f.read()
        good_end = 0
        pos = 0
        while pos < len(data):
            nl = data.find(b"\n", pos)
            if nl < 0:  # torn last line (killed mid-write)
                self.torn_lines += 1
                break
            line = data[pos:nl]
            if line.strip():
                try:
                    rec = json.loads(line)
                    self._records[rec["key"]] = rec
                except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
                    # a corrupt line in the middle is skipped (never expected with fsync'd appends)
                    self.torn_lines += 1
            pos = nl + 1
            good_end = pos
        if good_end < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
                f.flush()
                os.fsync(f.fileno())

    # -- access ------------------------------------------------------------------------------
    def get(self, key: str) -> dict[str, Any] | None:
        return self._records.get(key)

    def ok(self, key: str) -> dict[str, Any] | None:
        """The stored record when it is a success, else None."""
        rec = self._records.get(key)
        return rec if rec is not None and rec.get("status") == "ok" else None

    def __contains__(self, key: str) -> bool:
        return key in self._records

    def __len__(self) -> int:
        return len(self._records)

    def records(self) -> Iterator[dict[str, Any]]:
        return iter(list(self._records.values()))

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Append a record: write + flush now (survives SIGKILL); fsync now or by the group-commit thread."""
        rec = {"key": key, **{k: v for k, v in record.items() if k != "key"}}
        line = json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self._lock:
            self._fh.write(line)
            self._fh.flush()
            if self.fsync == "always":
                os.fsync(self._fh.fileno())
            else:
                self._dirty.set()
            self._records[key] = rec

    def close(self) -> None:
        with self._lock:
            if self._fh.closed:
                return
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._closed = True
            self._dirty.set()
        if self._syncer is not None:
            self._syncer.join()
        with self._lock:
            self._fh.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
