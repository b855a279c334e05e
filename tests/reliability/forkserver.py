"""A fork server: imports the package (torch, ONNX Runtime: ~1.5 s of CPU) once, then forks one child per case.

Run as ``python forkserver.py WORKERS`` with a JSON list of jobs on stdin (``id``, ``entry``: the name of a
``mixnet_deploy.cli`` entry point, ``argv``, ``cwd``, ``env``); prints ``{id: exit status}`` as JSON.
Each child is a separate process that runs the command's entry point with the job's argv, cwd and
environment, its stdout/stderr redirected to ``.case-stdout``/``.case-stderr`` in its cwd at the
file-descriptor level; its exit status is the command's. This makes ~150 process runs affordable on a 2-core
CI machine; test_console_scripts_agree_with_the_fork_server runs a sample through the real console scripts.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback

PRELOAD = ("torch", "onnx", "onnxruntime", "safetensors.torch", "PIL.Image", "mixnet_deploy.cli",
           "mixnet_deploy.pipeline", "mixnet_deploy.parity", "mixnet_deploy.bench", "mixnet_deploy.runtimes",
           "mixnet_deploy.presets", "mixnet_deploy.data", "mixnet_deploy.precision_onnx", "mixnet_deploy.engine_build",
           "mixnet_deploy.triton", "mixnet_deploy.bench_output")  # fmt: skip


def preload() -> None:
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:  # a module another branch renamed or an optional dependency: imported on use
            pass


def run_child(job: dict) -> None:
    """In the forked child: run the entry point as the job says, then leave with its exit status."""
    code = 99
    try:
        os.chdir(job["cwd"])
        os.environ.update(job["env"])
        for fd, name in ((1, "stdout"), (2, "stderr")):
            f = os.open(os.path.join(job["cwd"], ".case-" + name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(f, fd)
            os.close(f)
        cli = importlib.import_module("mixnet_deploy.cli")
        code = getattr(cli, job["entry"])(job["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
    except BaseException:
        traceback.print_exc()
        code = 99
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code if isinstance(code, int) else 1)


def serve(jobs: list[dict], workers: int) -> dict[str, int]:
    """Run every job in a forked child, at most ``workers`` at a time; {job id: exit status}."""
    running, results = {}, {}

    def reap() -> None:
        pid, status = os.wait()
        results[running.pop(pid)["id"]] = os.waitstatus_to_exitcode(status)

    for job in jobs:
        while len(running) >= workers:
            reap()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            run_child(job)
        running[pid] = job
    while running:
        reap()
    return results


if __name__ == "__main__":
    preload()
    json.dump(serve(json.load(sys.stdin), int(sys.argv[1])), sys.stdout)
