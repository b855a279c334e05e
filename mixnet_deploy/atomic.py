"""Atomic artifact writes: a temporary name in the target folder, renamed only when complete.

An interrupted or failed run therefore leaves neither a truncated artifact (which a server
would then load) nor a stray temporary file.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

TMP_MARKER = ".tmp-"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, else delete it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}{TMP_MARKER}{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:  # KeyboardInterrupt and SystemExit (SIGTERM) too
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode())


def write_json(path: str | os.PathLike, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Temporary files in ``folder`` whose writer is gone (killed with SIGKILL, power loss): never renamed."""
    found = []
    for path in Path(folder).glob(f".*{TMP_MARKER}*"):
        pid = path.name.rsplit(TMP_MARKER, 1)[1]
        if pid.isdecimal() and not _alive(int(pid)):
            found.append(path)
    return sorted(found)


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete :func:`stale_temps`; a live process's temporary files (a concurrent run) are left alone."""
    removed = []
    for path in stale_temps(folder):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True
