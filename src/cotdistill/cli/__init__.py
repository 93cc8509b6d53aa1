"""Thin Typer CLI over the Python API. Each stage registers its commands from its own module.

Every command turns :class:`cotdistill.errors.UserError` into one line on stderr and exit 2.
"""

from __future__ import annotations

import sys

import typer

from ..registry import Registry

app = typer.Typer(
    name="cotdistill",
    help="Distil chain-of-thought reasoning from teacher LLMs into small students.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: switches show as switches, not `<bool>`
)



@app.callback()
def _root() -> None:
    """Distil chain-of-thought reasoning from teacher LLMs into small students."""


@app.command("version")
def version() -> None:
    """Print the cotdistill version."""
    from .. import __version__

    print(__version__)


# one module per stage, each defining ``register(app)`` (imported here: `--help` lists every command)
_ORDER = ("tasks", "traces", "generate", "train", "evaluate", "study", "select")  # the order of `--help`
COMMANDS = Registry("command group", {name: f"cotdistill.cli.{name}_cmd" for name in _ORDER})
for _name in _ORDER:
    COMMANDS.get(_name).register(app)


def main() -> None:
    """Console entry point: a usage error (unknown option, bad value) and a UserError are one line
    on stderr, ``error: ...``, exit 2."""
    from ..errors import UserError

    # click's UsageError, whether typer vendors click or uses the installed one
    usage_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
    try:
        rc = app(standalone_mode=False)
    except UserError as e:
        print(f"error: {e.for_cli()}", file=sys.stderr)
        sys.exit(2)
    except usage_error as e:
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError":  # `cotdistill` / `cotdistill CMD` alone: the help
            print(ctx.get_help() if ctx else "", file=sys.stderr)
            sys.exit(2)
        cmd = ctx.command_path if ctx else "cotdistill"
        msg = " ".join(e.format_message().split())
        print(f"error: {msg} (see `{cmd} --help`)", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
