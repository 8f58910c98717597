"""Two kinds of failure: a user mistake (exit 2, one line) and a failed check (exit 1)."""


class UserError(Exception):
    """Bad input from the user: a flag, a file or a folder. The CLI prints it on one line and exits 2."""


class CheckFailed(Exception):
    """A numerical or quality check did not pass. The CLI prints it on one line and exits 1."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of ``exc``'s message (at most ``limit`` characters), or its type name when it has none: what a
    one-line UserError quotes of the library error behind it."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__
