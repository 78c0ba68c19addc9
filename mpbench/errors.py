"""Errors that are the user's to fix: the CLI prints their one-line message and exits 2."""


class UserError(Exception):
    """Bad input (suite, argument, missing data). ``str(err)`` is the whole message."""

    exit_code = 2
