"""The ways a run can fail, mapped to exit codes by the CLI.

Library errors carry data, not command-line wording: an ``InputError`` holds the option's field
name (``img_size``), the bad value, what is wrong with it (``problem``, optional) and what was
expected; the edge renders it, the CLI as a flag (``--img-size 100: expected ...``, the flag
declared for the field in config.py), a preset as its key. An error about a file or a thing that
is not an option (a checkpoint) has no field and says it all.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

_UNSET = object()


def show_value(value: object) -> str:
    """How a bad value is quoted in a message: repr, with paths as strings."""
    return repr(str(value)) if isinstance(value, Path) else repr(value)


_FILE_KINDS = (("S_ISFIFO", "a FIFO"), ("S_ISCHR", "a character device"), ("S_ISBLK", "a block device"),
               ("S_ISSOCK", "a socket"))  # fmt: skip


def file_problem(path: str | os.PathLike) -> str:
    """Why ``path`` is not a regular file, in words ("does not exist", "is a directory", "is not a regular file
    (a FIFO)"); "" for a regular file (links followed)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "does not exist"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or type(exc).__name__})"
    return mode_problem(mode)


def mode_problem(mode: int) -> str:
    """:func:`file_problem` of a file's ``st_mode``."""
    if stat.S_ISREG(mode):
        return ""
    if stat.S_ISDIR(mode):
        return "is a directory"
    kind = next((what for test, what in _FILE_KINDS if getattr(stat, test)(mode)), "a special file")
    return f"is not a regular file ({kind})"


class InputError(Exception):
    """Bad input from the user (file, flag, value): exit code 2, one line naming value and expectation.

    ``InputError("expected ...", field="img_size", value=100)``; ``render(label)`` puts ``label`` (a
    flag or a preset key), the value and the problem before the expectation:
    ``InputError("expected a directory", field="out_dir", value="f", problem="is a file")`` renders as
    ``--out 'f' is a file: expected a directory``. Without a field the text is the message.
    """

    exit_code = 2

    def __init__(self, expected: str, *, field: str | None = None, value: object = _UNSET, problem: str = ""):
        self.expected = expected
        self.field = field
        self.value = value
        self.problem = problem
        super().__init__(self.render())

    @property
    def has_value(self) -> bool:
        return self.value is not _UNSET

    def render(self, label: str | Callable[[str], str] | None = None) -> str:
        """The one-line message; ``label`` names the field (a string, or a function of the field name).

        Without a label the field is spelled as a flag by the CLI convention (``img_size`` -> ``--img-size``);
        the CLI passes the flag each option declares (``out_dir`` -> ``--out``).
        """
        if self.field is None:
            return self.expected
        if callable(label):
            label = label(self.field)
        head = label or "--" + self.field.replace("_", "-")
        if self.has_value:
            head = f"{head} {show_value(self.value)}"
        if self.problem:
            head = f"{head} {self.problem}"
        return f"{head}: {self.expected}"

    def __str__(self) -> str:
        return self.render()


class VerificationError(Exception):
    """An artifact was produced but does not compute what the reference computes: exit code 1. ``report``: the
    failed run's report where there is one (the CLI prints its summary: what passed, what was refused)."""

    exit_code = 1

    def __init__(self, message: str, report: object = None):
        self.report = report
        super().__init__(message)


class EnvironmentFailure(Exception):
    """The machine refused, not the input: a full disk, a permission, a read-only file system, a file size
    limit, a missing GPU stack. Exit code 3, one line naming the path (or component), the operation and,
    for a full disk, how many bytes the write needed and how many were free.

    ``EnvironmentFailure("write", "out/mixnet_s.onnx", "No space left on device", needed=16_557_800, free=4096)``
    renders ``cannot write 'out/mixnet_s.onnx': No space left on device (needed 16,557,800 bytes, 4,096 free)``.
    """

    exit_code = 3

    def __init__(self, operation: str, subject: object, reason: str, *, needed: int | None = None,
                 free: int | None = None, free_label: str = "free", errno: int | None = None):  # fmt: skip
        self.operation = operation
        self.subject = subject  # a Path (quoted in the message) or a component in words
        self.reason = reason
        self.needed = needed  # bytes the failed write needed, where known
        self.free = free  # bytes free on that file system (or the per-file limit: free_label says which)
        self.free_label = free_label
        self.errno = errno
        super().__init__(str(self))

    def __str__(self) -> str:
        subject = show_value(self.subject) if isinstance(self.subject, Path) else self.subject
        text = f"cannot {self.operation} {subject}: {self.reason}"
        sizes = [] if self.needed is None else [f"needed {self.needed:,} bytes"]
        sizes += [] if self.free is None else [f"{self.free:,} {self.free_label}"]
        return f"{text} ({', '.join(sizes)})" if sizes else text
