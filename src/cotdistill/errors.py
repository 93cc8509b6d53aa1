"""User-facing errors.

Anything the user can fix (bad file, bad field, missing data, unknown name) is raised as
:class:`UserError`. The CLI prints ``error: <message>`` on one line and exits with code 2,
with no traceback. Messages name the file / line / field and say how to fix it.
"""

from __future__ import annotations


class UserError(Exception):
    """An error caused by user input; printed as one line, exit code 2."""

    exit_code = 2

    def __init__(self, message: str):
        # one line, always
        super().__init__(" ".join(str(message).split()))


def redact(text: str, *secrets: str | None) -> str:
    """Replace every non-empty secret in ``text`` by ``***`` (API keys never reach output)."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    return text
