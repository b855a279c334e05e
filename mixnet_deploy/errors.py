"""The two ways a run can fail, mapped to exit codes by the CLI."""


class InputError(Exception):
    """Bad input from the user (file, flag, value): exit code 2, one line naming value and expectation."""

    exit_code = 2


class VerificationError(Exception):
    """An artifact was produced but does not compute what the reference computes: exit code 1."""

    exit_code = 1
