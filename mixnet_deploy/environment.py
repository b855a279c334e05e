"""Facts about the machine a result comes from, gathered here once: package versions, CPU, GPU, Jetson.

Export reports (``report.json`` ``versions``), engine manifests (the L4T release) and benchmark results
(``environment``) all read these functions; each absent fact says ``absent`` (or None) instead of failing.
:func:`timed` is the one wall clock the pipeline's stages are timed with; :class:`Progress` shows them on a terminal.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from . import __version__

ABSENT = "absent"
L4T_RELEASE_FILE = "/etc/nv_tegra_release"


def stopwatch() -> Callable[[], float]:
    """A started clock: calling it returns the wall-clock seconds since (``time.perf_counter``)."""
    t0 = time.perf_counter()
    return lambda: time.perf_counter() - t0


def timed(fn: Callable[[], object]) -> tuple:
    """``(fn(), seconds)``: wall-clock seconds of one call."""
    elapsed = stopwatch()
    result = fn()
    return result, elapsed()


class Progress:
    """An export's progress on ``stream`` (stderr): a line per stage with the seconds since the run began
    (``[   4.2 s] verify: FP32 vs PyTorch on 8 built-in photos``) and a bar with an ETA for the long loops
    (calibration, the --int8-exclude auto search). Shown on a terminal only, never with --quiet
    (``enabled=None``: whether ``stream`` is a terminal); a disabled Progress prints nothing."""

    def __init__(self, stream=None, enabled: bool | None = None):
        import sys

        self.stream = stream or sys.stderr
        self.enabled = bool(self.stream.isatty()) if enabled is None else enabled
        self.elapsed = stopwatch()

    def stage(self, name: str, detail: str = "") -> None:
        if self.enabled:
            print(f"[{self.elapsed():7.1f} s] {name}{': ' + detail if detail else ''}", file=self.stream, flush=True)

    def bar(self, total: int, desc: str, unit: str):
        """A tqdm bar (count, rate, ETA) on the stream; a silent one when disabled."""
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=self.stream, leave=False, disable=not self.enabled,
                    mininterval=0)  # every step drawn: the loops are slow (seconds per step)


QUIET = Progress(enabled=False)  # library calls: no progress output


def _run_tool(argv: Sequence[str], timeout: float = 10.0) -> str | None:
    """stdout of a tool, or None when it is not installed; failures are returned as text."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"failed: {type(exc).__name__}"
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip().splitlines()
        return f"failed (exit {proc.returncode}): {err[0][:200] if err else 'no output'}"
    return proc.stdout.strip()


def _read(root: Path, rel: str) -> str | None:
    try:
        return (root / rel.lstrip("/")).read_text(errors="replace").replace("\x00", "").strip()
    except OSError:
        return None


def cpu_info(root: Path = Path("/")) -> dict:
    text = _read(root, "/proc/cpuinfo") or ""
    model = None
    for key in ("model name", "Model", "Hardware", "cpu model"):
        if m := re.search(rf"^{key}\s*:\s*(.+)$", text, re.MULTILINE):
            model = m[1].strip()
            break
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    info = {
        "model": model or platform.processor() or ABSENT,
        "machine": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "governor": _read(root, "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor") or ABSENT,
    }
    try:
        info["load_average_1_5_15min"] = [round(v, 2) for v in os.getloadavg()]  # other work on the machine
    except (AttributeError, OSError):
        info["load_average_1_5_15min"] = ABSENT
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def gpu_info(run_tool: Callable[[Sequence[str]], str | None] = _run_tool) -> list[dict] | str:
    """GPUs from nvidia-smi (name, driver, memory, compute capability), else torch, else ``"absent"``."""
    out = run_tool(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap", "--format=csv,noheader"])
    if out and not out.startswith("failed"):
        gpus = []
        for line in out.splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 4:
                gpus.append(dict(zip(("name", "driver", "memory", "compute_capability"), parts)))
        if gpus:
            return gpus
    try:
        import torch

        if torch.cuda.is_available():
            return [
                {
                    "name": torch.cuda.get_device_name(i),
                    "driver": ABSENT if out is None else out,
                    "compute_capability": "{}.{}".format(*torch.cuda.get_device_capability(i)),
                }
                for i in range(torch.cuda.device_count())
            ]
    except ImportError:
        pass
    return ABSENT if out is None else f"no GPU listed (nvidia-smi: {out})"


def parse_l4t_release(text: str) -> str | None:
    """``# R36 (release), REVISION: 4.0, ...`` -> ``R36.4.0``; another text: its first line (200 characters at
    most); an empty or blank text: None."""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    if m:
        return f"R{m[1]}.{m[2]}"
    lines = text.strip().splitlines()
    return (lines[0].strip()[:200] or None) if lines else None


def read_l4t_release(root: Path = Path("/")) -> str | None:
    """Jetson's L4T release from ``/etc/nv_tegra_release`` under ``root``; None off a Jetson (or empty file)."""
    text = _read(root, L4T_RELEASE_FILE)
    return None if text is None else parse_l4t_release(text)


def jetson_info(root: Path = Path("/"), run_tool: Callable[[Sequence[str]], str | None] = _run_tool) -> dict:
    """L4T release, board, nvpmodel power mode and jetson_clocks state; each absent one says so."""
    info: dict = {
        "l4t_release": read_l4t_release(root) or ABSENT,
        "board": _read(root, "/proc/device-tree/model") or ABSENT,
    }
    q = run_tool(["nvpmodel", "-q"])
    if q is None:
        status = _read(root, "/var/lib/nvpmodel/status")  # "pmode:0000" where the tool is not on PATH
        info["power_mode"] = f"nvpmodel absent; /var/lib/nvpmodel/status: {status}" if status else ABSENT
    elif m := re.search(r"NV Power Mode:\s*(\S+)\s*\n\s*(\d+)", q):
        info["power_mode"] = f"{m[1]} (mode {m[2]})"
    else:
        info["power_mode"] = q.splitlines()[0][:200] if q else "empty nvpmodel -q output"
    clocks = run_tool(["jetson_clocks", "--show"])
    info["jetson_clocks"] = ABSENT if clocks is None else clocks[:4000]
    return info


def versions() -> dict[str, str]:
    """Versions of this package, Python and the libraries results depend on (``absent`` when not installed)."""
    found = {"mixnet_deploy": __version__, "python": platform.python_version(), "numpy": np.__version__}
    for name in ("torch", "onnx", "onnxruntime", "tensorrt", "openvino"):
        try:
            module = __import__(name)
            found[name] = getattr(module, "__version__", "unknown")
        except ImportError:
            found[name] = ABSENT
    try:
        import torch

        found["torch_cuda"] = torch.version.cuda or ABSENT
    except ImportError:
        found["torch_cuda"] = ABSENT
    return found


def environment(root: Path = Path("/"), run_tool: Callable[[Sequence[str]], str | None] = _run_tool) -> dict:
    """Everything a latency figure depends on, recorded with it."""
    env = {
        "host": socket.gethostname(),
        "os": platform.platform(),
        "cpu": cpu_info(root),
        "gpu": gpu_info(run_tool),
        "versions": versions(),
        "env_threads": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ},
    }
    try:
        import onnxruntime

        env["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        env["onnxruntime_providers"] = ABSENT
    jetson = jetson_info(root, run_tool)
    if jetson["l4t_release"] == ABSENT and jetson["power_mode"] == ABSENT and jetson["jetson_clocks"] == ABSENT:
        env["jetson"] = ABSENT
    else:
        env["jetson"] = jetson
    return env
