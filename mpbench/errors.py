"""Errors that are the user's to fix: the CLI prints their one-line message and exits non-zero."""


class UserError(Exception):
    """Bad input (suite, argument, missing data). ``str(err)`` is the whole message; exit 2."""

    exit_code = 2


class DiskFull(UserError):
    """No space left (or quota exceeded) while writing. The suite stops at once, because every
    later run would fail the same way; finished runs are kept and the interrupted one resumes
    from its last complete checkpoint once there is space again."""

    exit_code = 1
