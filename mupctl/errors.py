"""Errors with stable exit codes, and warnings.

`UserError` is bad input (a recipe field, a flag, a run directory): the CLI prints its one-line
message and exits 2 with nothing written or launched. `RunFailure` is a runtime failure: exit 1.
`warn` prints legal but probably unintended settings (a plan's "warnings") on stderr.
"""

import sys

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INVALID = 2


MAX_CHARS = 800  # a bad value or path is echoed in the message; a huge one is cut in the middle


def one_line(text: str) -> str:
    """`text` on one line, cut in the middle past MAX_CHARS."""
    text = " ".join(text.split())
    return text if len(text) <= MAX_CHARS else f"{text[:MAX_CHARS - 200]} … {text[-190:]}"


class UserError(Exception):
    """Invalid input. `str(err)` is one line: ``field.path: what is wrong, got X (fix)``."""

    exit_code = EXIT_INVALID

    def __init__(self, message: str, field: str | None = None):
        self.field = field
        super().__init__(one_line(f"{field}: {message}" if field else message))


class RunFailure(Exception):
    """A run that started and failed (worker crash past the restart limit, divergence)."""

    exit_code = EXIT_FAILURE


def warn(messages: list[str]) -> None:
    """One `warning: …` line per message on stderr (stdout stays clean for --json)."""
    for message in messages:
        print(f"warning: {message}", file=sys.stderr)
