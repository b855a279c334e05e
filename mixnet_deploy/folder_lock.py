"""One run at a time per output folder: an advisory lock on ``DIR/.mixnet-deploy.lock``.

``fcntl.flock`` is held by the open file, so the kernel releases it when the process ends in any way
(exit, exception, ``kill -9``, a crash): a lock file left by a dead process is just a file, and the
next run takes it at once. The holder writes its process id into it, so that a waiting or refused run
can name the holder. A run that ends normally removes the lock file while still holding it, and a run
that obtains the lock checks that the file it locked is still the one at the path (else it was
removed by its previous holder: it locks the new one), so removal never lets two runs hold the lock.
A folder the lock created (a new ``--triton-repo``) is removed again when the run left it empty.

Advisory: it orders mixnet-export runs (and anything else that takes it); it cannot stop a program
that ignores it. On NFS, Linux maps flock to POSIX byte-range locks, which the server arbitrates.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import socket
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from .atomic import environment_errors, json_text
from .errors import InputError

log = logging.getLogger("mixnet_deploy")

LOCK_NAME = ".mixnet-deploy.lock"
NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)  # a file system without flock: warn and go on


def lock_path(folder: str | os.PathLike) -> Path:
    return Path(folder) / LOCK_NAME


def read_holder(folder: str | os.PathLike) -> dict:
    """What the holder wrote into the lock file ({} when unreadable or not yet written)."""
    try:
        holder = json.loads(lock_path(folder).read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def describe_holder(holder: dict) -> str:
    if not holder.get("pid"):
        return "another process (its id not yet written)"
    where = f" on {holder['host']}" if holder.get("host") and holder["host"] != socket.gethostname() else ""
    return f"process {holder['pid']}{where} ({holder.get('command', '?')}, since {holder.get('since', '?')})"


class FolderBusy(InputError):
    """The folder is being written by another run and the caller chose not to wait: exit 2.

    Carries the option's ``field`` (``out_dir``, ``triton_repo``), the folder and ``holder`` (what the lock file
    says); the CLI renders it as ``--out 'artifacts' is busy: process 4242 (...) is writing there: expected ...``.
    """

    def __init__(self, field: str, folder: Path, holder: dict):
        self.folder, self.holder = folder, holder
        super().__init__(
            "expected a folder no other run is writing (retry when it ends, or let this run wait for it)",
            field=field,
            value=str(folder),
            problem=f"is busy: {describe_holder(holder)} is writing there",
        )


def _write_holder(fd: int) -> None:
    since = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    command = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "since": since}
    text = json_text(holder, indent=None)
    os.ftruncate(fd, 0)
    os.pwrite(fd, (text + "\n").encode(), 0)


def _acquire(fd: int, folder: Path, wait: bool, field: str) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = read_holder(folder)
        if not wait:
            raise FolderBusy(field, folder, holder) from None
        log.warning("waiting for %s: %s is writing there (Ctrl-C to stop waiting)", folder, describe_holder(holder))
        fcntl.flock(fd, fcntl.LOCK_EX)  # SIGTERM / Ctrl-C interrupt the wait (cli.py turns SIGTERM into one)
        log.info("%s is free; continuing", folder)
    except OSError as exc:
        if exc.errno not in NO_LOCKS:
            raise
        log.warning("%s: the file system offers no locks (%s): runs into it at once are not kept apart",
                    folder, exc.strerror)  # fmt: skip


def _same_file(fd: int, path: Path) -> bool:
    try:
        at_path = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (at_path.st_dev, at_path.st_ino)


def _open_locked(folder: Path, wait: bool, field: str) -> int:
    """An open descriptor of the folder's lock file, locked; the file is the one at the path."""
    path = lock_path(folder)
    while True:
        with environment_errors(path, "create the lock file"):
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            _acquire(fd, folder, wait, field)
            if _same_file(fd, path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # its holder removed it on release: lock the file now at the path


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, *, wait: bool = True, field: str = "out_dir") -> Iterator[Path]:
    """Hold the folder's lock for the ``with`` body. Busy: log who holds it and wait (``wait``), else FolderBusy.

    ``field`` names the option the folder came from (``out_dir``, ``triton_repo``) for the error.
    """
    folder = Path(folder)
    created = not folder.exists()
    with environment_errors(folder, "create directory"):
        folder.mkdir(parents=True, exist_ok=True)
    fd = _open_locked(folder, wait, field)
    try:
        with environment_errors(lock_path(folder), "write the lock file"):
            _write_holder(fd)
        yield folder
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock_path(folder))  # still holding it: a waiting run sees the file gone and takes a new one
        os.close(fd)  # releases the lock
        if created:
            with contextlib.suppress(OSError):  # not empty: the run wrote something there
                folder.rmdir()


@contextlib.contextmanager
def folder_locks(folders: Iterable[tuple[str, str | os.PathLike | None]], *, wait: bool = True) -> Iterator[None]:
    """Lock several ``(field, folder)`` pairs (None: skipped), each real folder once, in one global order
    (sorted resolved paths), so that two runs locking the same two folders cannot deadlock."""
    unique: dict[str, tuple[str, Path]] = {}
    for field, folder in folders:
        if folder is not None:
            unique.setdefault(os.path.realpath(folder), (field, Path(folder)))
    with contextlib.ExitStack() as stack:
        for _, (field, folder) in sorted(unique.items()):
            stack.enter_context(folder_lock(folder, wait=wait, field=field))
        yield
