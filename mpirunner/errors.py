"""Errors a user can cause: caught once in cli.py and shown as one clear line (exit status 2)."""


class UsageError(Exception):
    """Bad input: an unknown name, an impossible flag combination, an unwritable output, ..."""


class InvalidRunError(Exception):
    """A run finished but its verdict is invalid and --strict asked for a failing exit (status 3)."""


class SweepCutShort(Exception):
    """A batch size failed (out of memory): it is in the file as failed, larger sizes were not tried (status 5)."""


class WriteFailed(Exception):
    """The output file could not be written (disk full): the runs written before stay; status 1, one line."""
