"""Thin Typer CLI over the Python API. Each stage registers its commands from its own module.

Every command turns :class:`cotdistill.errors.UserError` into one line on stderr and exit 2.
"""

from __future__ import annotations

import errno
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



def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        print(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the cotdistill version and exit."),
) -> None:
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

# what `--help` lists beside each command: whole phrases (click would cut the docstring's first
# sentence at the terminal's width); each command's own --help has its full description
SHORT_HELP = {
    "version": "Print the cotdistill version.",
    "tasks": "List the tasks: answer types, splits, data files.",
    "import-paper": "Import the paper's released CoTs as traces.",
    "generate": "Generate teacher rationales (resumable).",
    "curate": "Keep correct, complete, unique, clean rationales.",
    "train": "Fine-tune a student on traces (SFT and others).",
    "evaluate": "Zero-shot accuracy of a model on a task split.",
    "rescore": "Grade stored outputs again, without a model.",
    "compare": "Paired test of two evaluations (McNemar).",
    "report": "Write a study's report.md and report.html.",
    "quickstart": "Run the embedded CPU-only study and report.",
    "select": "Choose the supervision for one student.",
    "data": "Download the benchmarks and the paper's files.",
    "data download": "Fill the data directory (needs internet).",
    "traces": "Inspect and export trace files.",
    "traces stats": "Rows, correct %, lengths per trace cell.",
    "traces export": "Export traces for LLaMA-Factory, TRL or HF.",
    "prompts": "Inspect the teacher prompt library.",
    "prompts show": "Print the messages a teacher is sent.",
    "study": "Run, follow and cancel factor studies.",
    "study run": "Run a study here or on Slurm / Ray.",
    "study status": "Each cell's state, its jobs and elapsed time.",
    "study cancel": "Cancel a study's queued and running jobs.",
}


def _short_helps(typer_app: typer.Typer, prefix: str = "") -> None:
    for info in typer_app.registered_commands:
        name = info.name or (info.callback.__name__.replace("_", "-") if info.callback else "")
        info.short_help = info.short_help or SHORT_HELP.get(f"{prefix}{name}")
    for group in typer_app.registered_groups:
        full = f"{prefix}{group.name}"
        group.short_help = group.short_help or SHORT_HELP.get(full)
        _short_helps(group.typer_instance, f"{full} ")


_short_helps(app)


def _usage_name(self) -> str:
    """A positional argument in a usage line as click writes it: ``SRC``, ``[TASK...]``."""
    name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
    return name + ("..." if self.nargs != 1 and not name.endswith("...") else "")


if hasattr(typer.core.TyperArgument, "_usage_display_name"):  # typer >= 0.2x writes {name}
    typer.core.TyperArgument._usage_display_name = _usage_name


def _element_type(display_type):
    """A repeatable option's value as what one occurrence takes (``<str>``, not ``<list[str]>``)."""
    import functools
    import re

    @functools.wraps(display_type)
    def wrapped(self, ctx):
        label = display_type(self, ctx)
        return re.sub(r"list\[(.+)\]", r"\1", label) if isinstance(label, str) else label

    return wrapped


for _cls in (typer.core.TyperOption, typer.core.TyperArgument):
    if hasattr(_cls, "display_type"):
        _cls.display_type = _element_type(_cls.display_type)


_OS_FIXES = {
    errno.ENOSPC: "free space (or choose a path on a disk with room) and rerun the same command, which resumes",
    errno.EDQUOT: "free space within your quota (or choose another path) and rerun the same command, which resumes",
    errno.ENOTDIR: "a part of that path is a file, not a directory: choose another path",
    errno.EISDIR: "that path is a directory: name a file",
    errno.EROFS: "the file system is read-only: choose a writable path",
    errno.EACCES: "permission denied: choose a path you can write to, or change its permissions",
    errno.EPERM: "operation not permitted: choose a path you own",
    errno.ENAMETOOLONG: "the name is too long: choose a shorter path",
}


def os_error_line(e: BaseException) -> str | None:
    """One line for an operating-system error a user can fix (no space, not a directory, read-only
    file system, permission), naming the path; ``None`` for others (a bug: the traceback stays).
    Libraries that wrap the error (safetensors, torch.save) are recognised by their message."""
    rerun = ("rerun with --resume" if sys.argv[1:2] == ["train"] else "rerun the same command, which resumes")
    if isinstance(e, OSError) and e.errno in _OS_FIXES:
        where = e.filename if e.filename is not None else "a file being written"
        return f"{where}: {e.strerror or e}; {_OS_FIXES[e.errno].replace('rerun the same command, which resumes', rerun)}"
    msg = str(e)
    if any(k in msg for k in ("No space left on device", "os error 28", "Disk quota exceeded", "file write failed",
                              "PytorchStreamWriter failed")):
        first = " ".join(msg.split())[:160]
        return f"no space left while writing a model or checkpoint ({first}); free space and {rerun}"
    return None


def main() -> None:
    """Console entry point: a usage error (unknown option, bad value) and a UserError are one line
    on stderr, ``error: ...``, exit 2."""
    import signal

    from ..errors import Interrupted, UserError
    from ..progress import quiet_third_party

    quiet_third_party()

    def _term(signum, frame):  # a scheduler's or `kill`'s SIGTERM stops like Ctrl-C: work kept, resumable
        raise KeyboardInterrupt

    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _term)
    # click's UsageError, whether typer vendors click or uses the installed one
    usage_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
    try:
        rc = app(standalone_mode=False)
    except Interrupted as e:
        print(f"stopped: {e.for_cli()}", file=sys.stderr)
        sys.exit(e.exit_code)
    except UserError as e:
        print(f"error: {e.for_cli()}", file=sys.stderr)
        sys.exit(getattr(e, "exit_code", 2))
    except KeyboardInterrupt:
        print("stopped: interrupted; what finished is kept: rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
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
    except Exception as e:  # noqa: BLE001 - only a fixable OS condition becomes one line; the rest re-raises
        line = os_error_line(e)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        sys.exit(2)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
