"""Thin Typer CLI over the Python API. Each stage registers its commands from its own module.

Every command turns :class:`cotdistill.errors.UserError` into one line on stderr and exit 2.
"""

from __future__ import annotations

import importlib
import sys

import typer

app = typer.Typer(
    name="cotdistill",
    help="Distil chain-of-thought reasoning from teacher LLMs into small students.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)



@app.callback()
def _root() -> None:
    """Distil chain-of-thought reasoning from teacher LLMs into small students."""


@app.command("version")
def version() -> None:
    """Print the cotdistill version."""
    from .. import __version__

    print(__version__)


# stage modules; each defines ``register(app)``. Missing ones are skipped during development.
_COMMAND_MODULES = [
    "tasks_cmd",
    "traces_cmd",
    "generate_cmd",
    "train_cmd",
    "evaluate_cmd",
    "study_cmd",
    "select_cmd",
]

for _name in _COMMAND_MODULES:
    try:
        _mod = importlib.import_module(f"cotdistill.cli.{_name}")
    except ModuleNotFoundError as _e:
        if _e.name != f"cotdistill.cli.{_name}":
            raise
        continue
    _mod.register(app)


def main() -> None:
    """Console entry point: click handles usage errors (exit 2); UserError becomes one line, exit 2."""
    from ..errors import UserError

    try:
        app()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
