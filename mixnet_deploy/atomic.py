"""Atomic artifact writes: a temporary name in the target folder, renamed only when complete.

An interrupted or failed run therefore leaves neither a truncated artifact (which a server
would then load) nor a stray temporary file.

This is also where the machine's refusals become :class:`~mixnet_deploy.errors.EnvironmentFailure`
(exit 3): an ``OSError`` of a full disk, a quota, a per-file size limit, a permission or a read-only
file system, translated with the path, the operation and (for a full disk) the bytes needed and free.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import resource
import shutil
from collections.abc import Iterator
from pathlib import Path

from .errors import EnvironmentFailure

TMP_MARKER = ".tmp-"
# errno -> what the machine refused; every other OSError stays what it was (a bug or bad input)
SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
ENVIRONMENT_ERRNOS = (*SPACE_ERRNOS, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM)


def free_bytes(path: str | os.PathLike) -> int | None:
    """Bytes an unprivileged writer may still use on the file system holding ``path`` (or its nearest parent)."""
    path = Path(path).absolute()
    for folder in (path, *path.parents):
        try:
            st = os.statvfs(folder)
        except OSError:
            continue
        return st.f_bavail * st.f_frsize
    return None


def environment_failure(exc: BaseException, operation: str, path: str | os.PathLike,
                        needed: int | None = None) -> EnvironmentFailure | None:  # fmt: skip
    """``exc`` as an EnvironmentFailure naming ``path`` and ``operation``, or None when it is no such error."""
    if not isinstance(exc, OSError) or exc.errno not in ENVIRONMENT_ERRNOS:
        return None
    reason = exc.strerror or os.strerror(exc.errno)
    if exc.errno in SPACE_ERRNOS:
        return EnvironmentFailure(operation, Path(path), reason, needed=needed, free=free_bytes(path), errno=exc.errno)
    if exc.errno == errno.EFBIG:  # RLIMIT_FSIZE (ulimit -f) or the file system's largest file
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        limit = None if limit == resource.RLIM_INFINITY else limit
        return EnvironmentFailure(operation, Path(path), reason, needed=needed, free=limit,
                                  free_label="allowed per file (ulimit -f)", errno=exc.errno)  # fmt: skip
    return EnvironmentFailure(operation, Path(path), reason, errno=exc.errno)


def unwritable(folder: str | os.PathLike) -> EnvironmentFailure:
    """The failure of a folder that ``os.access`` says cannot be written: read-only file system or permission."""
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    reason = os.strerror(errno.EROFS if read_only else errno.EACCES)
    return EnvironmentFailure("write in", Path(folder), reason, errno=errno.EROFS if read_only else errno.EACCES)


@contextlib.contextmanager
def environment_errors(path: str | os.PathLike, operation: str = "write", needed: int | None = None) -> Iterator[None]:
    """Re-raise an OSError of the machine (full disk, permission, read-only) as an EnvironmentFailure."""
    try:
        yield
    except OSError as exc:
        failure = environment_failure(exc, operation, path, needed)
        if failure is None:
            raise
        raise failure from exc


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, size: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, else delete it.

    ``size`` (the bytes to be written, where known) goes into the message of a full disk.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}{TMP_MARKER}{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:  # KeyboardInterrupt and SystemExit (SIGTERM) too
        with contextlib.suppress(OSError):  # FileNotFoundError, or a folder that refused its creation
            tmp.unlink()
        failure = environment_failure(exc, "write", path, size)
        if failure is None:
            raise
        raise failure from exc


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path, size=len(data)) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode())


def finite(obj):
    """``obj`` with every non-finite float (NaN, Infinity) as None, through dicts, lists and tuples."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def json_text(obj, indent: int | None = 2, sort_keys: bool = False, cls: type[json.JSONEncoder] | None = None) -> str:
    """The package's one JSON encoder: strict JSON (RFC 8259), which every parser reads.

    Python's ``json`` writes ``NaN`` and ``Infinity`` by default, which ``JSON.parse``, ``jq`` and strict
    parsers reject; here a non-finite float is written as ``null`` (as JavaScript's ``JSON.stringify``
    does), and ``allow_nan=False`` refuses any that a custom encoder (``cls``) would still produce.
    """
    return json.dumps(finite(obj), indent=indent, sort_keys=sort_keys, cls=cls, allow_nan=False)


def write_json(path: str | os.PathLike, obj, **kwargs) -> Path:
    """``obj`` as strict JSON (:func:`json_text`; ``kwargs`` go to it), written atomically."""
    return write_text(path, json_text(obj, **kwargs) + "\n")


def stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Temporary files (and folders) in ``folder`` whose writer is gone (SIGKILL, power loss): never renamed."""
    found = []
    for path in Path(folder).glob(f".*{TMP_MARKER}*"):
        pid = path.name.rsplit(TMP_MARKER, 1)[1]
        if pid.isdecimal() and not _alive(int(pid)):
            found.append(path)
    return sorted(found)


# The temporary folders we make, by name: export_set's stage ``.M.stage.tmp-PID`` and triton's staged version
# ``.M.N.tmp-PID`` / ``.M.N.old.tmp-PID``. A folder of another shape is never removed, whatever its name ends with.
TEMP_DIR_NAME = re.compile(rf"\..+\.(stage|\d+|\d+\.old){re.escape(TMP_MARKER)}\d+")


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete :func:`stale_temps`: files, and folders named as ours (:data:`TEMP_DIR_NAME`); a live process's
    temporary files (a concurrent run) are left alone."""
    removed = []
    for path in stale_temps(folder):
        folder_of_ours = TEMP_DIR_NAME.fullmatch(path.name) is not None
        with contextlib.suppress(FileNotFoundError):
            if path.is_dir() and not path.is_symlink():
                if not folder_of_ours:
                    continue
                shutil.rmtree(path)
            else:
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
