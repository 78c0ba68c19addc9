"""Errors that are the user's to fix: the CLI prints their one-line message and exits non-zero."""


class UserError(Exception):
    """Bad input (suite, argument, missing data). ``str(err)`` is the whole message; exit 2."""

    exit_code = 2


class DiskFull(UserError):
    """No space left (or quota exceeded) while writing. The suite stops at once, because every
    later run would fail the same way; finished runs are kept and the interrupted one resumes
    from its last complete checkpoint once there is space again."""

    exit_code = 1


class Interrupted(BaseException):
    """SIGTERM or SIGUSR1 (SLURM's warning before pre-emption) arrived: the trainer saved a
    checkpoint at the next batch boundary and stops; rerunning the same command resumes at the
    next batch. A BaseException, so that no ``except Exception`` records the run as failed.
    The CLI exits with ``128 + signal number`` (143 for SIGTERM, 138 for SIGUSR1)."""

    def __init__(self, signum: int, where: str = ""):
        import signal
        self.signum, self.where = int(signum), where
        self.exit_code = 128 + self.signum
        super().__init__(f"{signal.Signals(self.signum).name} {where}".strip())
