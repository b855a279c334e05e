"""Energy per image on a Jetson: the input power that ``tegrastats`` prints, sampled while each case is timed.

``tegrastats --interval MS`` prints one line per interval; its power rails read ``NAME CUR/AVG`` in
milliwatts: ``VDD_IN 4824mW/4824mW`` since JetPack 5 (L4T 35), ``POM_5V_IN 2432/2432`` before it
(NVIDIA's Jetson Linux developer guide, "tegrastats Utility"). CUR, the instantaneous reading, is used.
The rail is the module's whole input where tegrastats prints one: ``VDD_IN`` (Orin NX / Orin Nano,
Xavier NX, TX2) or ``POM_5V_IN`` (Nano, TX1). Jetson AGX Xavier (``GPU CPU SOC CV VDDRQ SYS5V``) and
Jetson AGX Orin (``VDD_GPU_SOC VDD_CPU_CV VIN_SYS_5V0 ...``) print no such rail: their input is the sum of
the rails printed, which is what is used there, and the rails summed are recorded with every figure.

One ``tegrastats`` process runs for the whole benchmark; each reading is stamped when its line arrives
and belongs to the case whose timed window (warm-up excluded) holds that moment. A case's energy per
image is its mean input power over those readings divided by its throughput (W / (images/s) = J/image).
Readings arrive every ``interval_ms``, so a window shorter than a few intervals has too few of them:
the figure is then left out and the reason recorded. Not run on a Jetson here (tested with recorded
lines and a stand-in ``tegrastats``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

TEGRASTATS = "tegrastats"
INTERVAL_MS = 100  # tegrastats' own default is 1000 ms: too coarse for cases of a few seconds
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")  # the module's whole input, where tegrastats prints it
MIN_READINGS = 2

# "VDD_IN 4824mW/4824mW" or "POM_5V_IN 2432/2432"; not "RAM 3452/7620MB" (MB follows) nor "cpu@50.0C"
RAIL = re.compile(r"(?<![\w@])([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?![\w/])")


def parse_rails(line: str) -> dict[str, int]:
    """Rail name -> instantaneous milliwatts, from one tegrastats line (empty when it has none)."""
    return {m.group(1): int(m.group(2)) for m in RAIL.finditer(line)}


def input_power(rails: dict[str, int]) -> tuple[float, str] | None:
    """(milliwatts, what they are) of the module's input: its input rail, else the sum of every rail printed."""
    for name in INPUT_RAILS:
        if name in rails:
            return float(rails[name]), name
    if not rails:
        return None
    return float(sum(rails.values())), "sum of " + "+".join(rails)


@dataclass
class PowerSampler:
    """``tegrastats --interval MS`` in the background; readings (perf_counter time, mW, rail) as lines arrive."""

    exe: str
    interval_ms: int = INTERVAL_MS
    readings: list[tuple[float, float, str]] = field(default_factory=list)
    lines: int = 0  # lines read, with or without power rails
    _proc: subprocess.Popen | None = None
    _thread: threading.Thread | None = None

    def __enter__(self) -> PowerSampler:
        self._proc = subprocess.Popen([self.exe, "--interval", str(self.interval_ms)], stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True)  # fmt: skip
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        for line in self._proc.stdout:
            stamp = time.perf_counter()
            self.lines += 1
            found = input_power(parse_rails(line))
            if found is not None:
                self.readings.append((stamp, *found))

    def __exit__(self, *exc) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._thread.join(timeout=5)
        self._proc.stdout.close()

    def describe(self) -> dict:
        rails = sorted({r for _, _, r in self.readings})
        return {"tool": self.exe, "interval_ms": self.interval_ms, "rails": rails, "lines": self.lines,
                "readings": len(self.readings)}  # fmt: skip

    def energy(self, windows: Sequence[tuple[float, float]], images_per_s: float) -> dict:
        """Mean input power over the readings inside ``windows`` and the energy per image it gives."""
        inside = [(mw, rail) for t, mw, rail in self.readings if any(a <= t <= b for a, b in windows)]
        out = {"readings": len(inside), "interval_ms": self.interval_ms, "j_per_image": None, "mean_power_w": None}
        if len(inside) < MIN_READINGS:
            seconds = sum(b - a for a, b in windows)
            out["why"] = (f"{len(inside)} tegrastats reading(s) in {seconds:.2f} s timed: expected at least "
                          f"{MIN_READINGS} (a longer --duration-s)")  # fmt: skip
            return out
        watts = sum(mw for mw, _ in inside) / len(inside) / 1e3
        return {**out, "mean_power_w": watts, "j_per_image": watts / images_per_s, "rail": inside[0][1]}


def power_sampler(interval_ms: int = INTERVAL_MS) -> PowerSampler | None:
    """A sampler when ``tegrastats`` is on the PATH (a Jetson), else None."""
    exe = shutil.which(TEGRASTATS)
    return None if exe is None else PowerSampler(exe, interval_ms)
