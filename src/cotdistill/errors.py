"""User-facing errors.

Anything the user can fix (bad file, bad field, missing data, unknown name) is raised as
:class:`UserError`. The CLI prints ``error: <message>`` on one line and exits with code 2,
with no traceback. Messages name the file / line / field and say how to fix it.

A library message names a setting with :func:`opt` (``f"{opt('batch_size')} 0: use ..."``): a
Python caller reads the keyword or config field (``batch_size``), and the CLI, which renders the
error with :meth:`UserError.for_cli`, shows the flag (``--batch-size``). CLI flags are the config
fields' names with dashes.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator


_OPT = re.compile(r"\{opt:([A-Za-z_][A-Za-z0-9_]*)\|([A-Za-z0-9_-]*)\|([^{}|]*)\}")


def opt(field: str, flag: str | None = None, python: str | None = None) -> str:
    """A setting named in a :class:`UserError`: ``python`` (default: ``field``, the keyword or config
    field) for Python callers, ``--flag`` on the command line (default: the field with dashes)."""
    return "{opt:" + field + "|" + (flag or "") + "|" + (python or "") + "}"


def switch(field: str, flag: str | None = None) -> str:
    """An on/off setting named in a :class:`UserError`: ``field=True`` for Python callers, ``--field`` on
    the command line."""
    return opt(field, flag, f"{field}=True")


def did_you_mean(word: Any, choices: Any, cutoff: float = 0.6) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` to what the user typed, else ``""``."""
    import difflib

    close = difflib.get_close_matches(str(word).strip().lower(), [str(c) for c in choices], n=1, cutoff=cutoff)
    return f" (did you mean {close[0]!r}?)" if close else ""


class UserError(Exception):
    """An error caused by user input; printed as one line, exit code 2. ``str(e)`` names settings
    as fields, :meth:`for_cli` as command-line flags (see :func:`opt`)."""

    exit_code = 2

    def __init__(self, message: str):
        # one line, always
        self.template = " ".join(str(message).split())
        super().__init__(_OPT.sub(lambda m: m.group(3) or m.group(1), self.template))

    def for_cli(self) -> str:
        """The message with each setting named as its command-line flag."""
        return _OPT.sub(lambda m: "--" + (m.group(2) or m.group(1)).replace("_", "-"), getattr(self, "template", str(self)))


class Interrupted(UserError):
    """A run stopped by a signal (Ctrl-C, SIGTERM from a scheduler or ``kill``) after keeping its
    work; the message says how to resume. The CLI prints it in one line, exit 128 + the signal."""

    def __init__(self, message: str, signum: int = 2):
        super().__init__(message)
        self.exit_code = 128 + signum


def redact(text: str, *secrets: str | None) -> str:
    """Replace every non-empty secret in ``text`` by ``***`` (API keys never reach output)."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    return text


SECRET_OPTIONS = ("api_key",)


def protect_secrets(options: dict | None) -> dict:
    """A copy of generation options with every secret (``api_key``) wrapped in pydantic's
    ``SecretStr``: a config that holds it then dumps, hashes and prints ``**********``, never the
    key (study.json, selection.json, cache keys), while GenerateConfig still receives the value."""
    from pydantic import SecretStr

    out = dict(options or {})
    for k in SECRET_OPTIONS:
        if isinstance(out.get(k), str) and out[k]:
            out[k] = SecretStr(out[k])
    return out


# the type of a config's ``generate`` options: secrets wrapped on validation
GenerateOptions = Annotated[dict[str, Any], AfterValidator(protect_secrets)]


def drop_masked_secrets(options: dict | None) -> dict:
    """Generation options read back from a written config, without the masked secrets (the
    teacher then takes its key from the environment, e.g. ``$OPENAI_API_KEY``)."""
    return {k: v for k, v in (options or {}).items() if not (k in SECRET_OPTIONS and str(v).strip("*") == "")}


def validation_error(e, source: str, model=None, section: str = "") -> UserError:
    """A pydantic ``ValidationError`` as one-line :class:`UserError` naming the file and the field:
    ``SOURCE: unknown key 'x'; valid keys: …``, ``SOURCE: missing required key 'x'`` or
    ``SOURCE: field 'x': <why>``. ``model`` (the pydantic class) lists the valid keys, also of a
    nested section (``tasks.0.x`` names the keys of the ``tasks`` items); ``section`` prefixes the
    field path (``train`` -> ``'train.lr'``) when ``model`` is validated as a section of a larger file.
    The one formatter of validation errors: every config and record reports through it."""
    errs = e.errors()
    # an unknown key explains a missing one beside it ('student:' for 'students:'): name it first
    err = next((x for x in errs if x.get("type") == "extra_forbidden"), errs[0])
    parts = [str(x) for x in err.get("loc", ())]
    loc = ".".join(([section] if section else []) + parts) or section or "config"
    kind = err.get("type")
    if kind == "extra_forbidden":
        import difflib

        inner = _model_at(model, list(err.get("loc", ()))[:-1]) if model is not None else None
        known = f"; valid keys: {', '.join(inner.model_fields)}" if inner is not None else ""
        close = difflib.get_close_matches(parts[-1] if parts else "", list(inner.model_fields), n=1) if inner else []
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return UserError(f"{source}: unknown key {loc!r}{hint}{known}")
    if kind == "missing":
        return UserError(f"{source}: missing required key {loc!r}")
    msg = str(err.get("msg", "")).removeprefix("Value error, ")
    got = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], (dict, list)) else ""
    if not err.get("loc") and not section:  # a rule across fields: the message names them
        return UserError(f"{source}: {msg}")
    return UserError(f"{source}: field {loc!r}: {msg}{got}")


def field_error(e) -> str:
    """The first error of a pydantic ``ValidationError`` as ``field 'x': <why>`` (for records read
    line by line: the caller names the file and line)."""
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err.get("loc", ())) or "record"
    return f"field {loc!r}: {str(err.get('msg', '')).removeprefix('Value error, ')}"


def _model_at(model, path: list):
    """The pydantic model class found by following ``path`` (field names; list indices skipped)
    from ``model``; None when the path leaves the models."""
    import typing

    from pydantic import BaseModel

    cur = model
    for part in path:
        if isinstance(part, int):
            continue
        field = getattr(cur, "model_fields", {}).get(part)
        if field is None:
            return None
        ann, cur = field.annotation, None
        todo = [ann]
        while todo:
            t = todo.pop()
            if isinstance(t, type) and issubclass(t, BaseModel):
                cur = t
                break
            todo.extend(typing.get_args(t))
        if cur is None:
            return None
    return cur
