"""Shared CLI helpers: console, common options."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)

DataDirOpt = typer.Option(
    None,
    "--data-dir",
    help="Data directory (benchmarks/ and paper/, as `cotdistill data download` writes it). Default: $COTDISTILL_DATA, else ~/.cache/cotdistill/data.",
)


def field_help(model: Any, name: str, note: str = "") -> str:
    """The help of the flag for config field ``name`` of ``model``: the field's own description and
    default (one source for the config file, the Python API and the CLI), then ``note``."""
    from pydantic_core import PydanticUndefined

    f = model.model_fields[name]
    desc = (f.description or name.replace("_", " ")).strip()
    if not desc.endswith("."):
        desc += "."
    if f.default is not PydanticUndefined:
        default = f.default
    elif f.default_factory is not None:
        default = f.default_factory()
    else:
        default = PydanticUndefined
    if default is PydanticUndefined:
        shown = ""
    elif isinstance(default, (list, tuple)):
        shown = ",".join(map(str, default)) or "none"
    elif isinstance(default, bool):
        shown = "on" if default else "off"
    elif isinstance(default, float):
        shown = f"{default:g}"
    elif hasattr(default, "enabled"):  # a nested settings model (e.g. LoRA): its switch
        shown = "on" if default.enabled else "off"
    else:
        shown = "none" if default is None else str(default)
    tail = f" [config: {name}" + (f"; default: {shown}" if shown else "") + "]"
    return desc + (f" {note.strip()}" if note else "") + tail


def field_option(model: Any, name: str, *flags: str, default: Any = None, note: str = "", **kw: Any) -> Any:
    """A typer option for config field ``name`` of ``model`` (``--name-with-dashes`` unless ``flags``
    are given), whose help is the field's description and default (:func:`field_help`). Its own
    default is None (not given: the config file's value, else the field's default)."""
    flags = flags or ("--" + name.replace("_", "-"),)
    return typer.Option(default, *flags, help=field_help(model, name, note), **kw)


def opt_path(p: Optional[Path]) -> Optional[str]:
    return str(p) if p is not None else None


def filter_cells(traces, teachers: str | None, levels: str | None, formats: str | None, tasks: str | None = None):
    """``--teachers/--levels/--formats/--tasks``: the traces (or a function reading them) of the chosen (teacher, level, format) cells
    and tasks; a filter that matches nothing is a one-line error listing what the files hold."""
    from ..errors import UserError
    from ..spec import parse_formats, parse_levels
    from ..traces import composition, select_traces

    lv = parse_levels(levels) if levels else None  # (the flags are checked before the files are read)
    fm = parse_formats(formats) if formats else None
    if callable(traces):
        traces = traces()
    if not (teachers or levels or formats or tasks):
        return traces
    kept = select_traces(traces, teachers=[t.strip() for t in teachers.split(",")] if teachers else None,
                         levels=lv, formats=fm,
                         tasks=[t.strip().lower() for t in tasks.split(",") if t.strip()] if tasks else None)
    if not kept:
        held = sorted({t.task for t in traces})
        raise UserError("no trace matches --teachers/--levels/--formats/--tasks; the files hold: "
                        + ", ".join(f"{k} ({n})" for k, n in composition(traces).items()) + f" of tasks {', '.join(held)}")
    return kept
