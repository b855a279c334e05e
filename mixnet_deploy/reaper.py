"""No process of ``mixnet-serve`` outlives it, however it ends (``kill -9`` included).

PyTriton starts ``tritonserver`` (which starts one Python-backend stub per model instance) and a tensor-store
process; killed with SIGKILL, PyTriton's process runs no cleanup, and its ``tritonserver`` was seen to keep
running. :func:`start_reaper` starts a watcher (``python -m mixnet_deploy.reaper PID FD``) that holds the read
end of a pipe whose write end only the served process holds: the kernel closes it when that process ends, in
any way. Until then the watcher records the served process's descendants (pid and start time, from
``/proc``) every :data:`POLL_S`; at EOF it sends SIGTERM to those still there (same pid, same start time, so
a reused pid is never signalled), waits up to :data:`GRACE_S`, sends SIGKILL to any left, and exits. Linux
only (``/proc``), as tritonserver is.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

POLL_S = 0.25
GRACE_S = 5.0
_HELD: list[int] = []  # the pipe's write end, open until this process ends


def start_reaper() -> subprocess.Popen:
    """Start the watcher of this process; the pipe's write end stays here, not inheritable by children."""
    read_end, write_end = os.pipe()  # both O_CLOEXEC: no child of ours inherits the write end
    proc = subprocess.Popen(
        [sys.executable, "-m", "mixnet_deploy.reaper", str(os.getpid()), str(read_end)], pass_fds=(read_end,),
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(read_end)
    _HELD.append(write_end)
    return proc


def start_time(pid: int) -> int | None:
    """A process's start time in clock ticks (field 22 of /proc/PID/stat), None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    return int(text.rsplit(")", 1)[1].split()[19])


def parents() -> dict[int, int]:
    """pid -> parent pid of every process visible in /proc."""
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdecimal():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                found[int(name)] = int(f.read().decode(errors="replace").rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return found


def descendants(roots: set[int]) -> set[int]:
    """Every process below ``roots`` (not the roots themselves)."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents().items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), list(roots)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def signal_known(known: dict[int, int], signum: int) -> int:
    """Send ``signum`` to each recorded process still there (same start time); how many were."""
    alive = 0
    for pid, started in known.items():
        if start_time(pid) == started:
            alive += 1
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
    return alive


def watch(pid: int, fd: int) -> None:
    me = os.getpid()
    known: dict[int, int] = {}
    while not select.select([fd], [], [], POLL_S)[0] or os.read(fd, 1):
        for child in descendants({pid}) - {me}:
            known.setdefault(child, start_time(child))
    for child in descendants(set(known)) - {me}:  # started by a recorded process since the last look
        known.setdefault(child, start_time(child))
    known = {p: t for p, t in known.items() if t is not None}
    if not signal_known(known, signal.SIGTERM):
        return
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline and any(start_time(p) == t for p, t in known.items()):
        time.sleep(0.1)
    signal_known(known, signal.SIGKILL)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the server; this one waits for it to end
    watch(int(sys.argv[1]), int(sys.argv[2]))
