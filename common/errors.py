"""Two kinds of failure: a user mistake (exit 2, one line) and a failed check (exit 1)."""


class UserError(Exception):
    """Bad input from the user: a flag, a file or a folder. The CLI prints it on one line and exits 2."""


class CheckFailed(Exception):
    """A numerical or quality check did not pass. The CLI prints it on one line and exits 1."""
