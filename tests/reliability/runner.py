"""Runs catalogue cases: all of them concurrently through the fork server, or one through its console script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .cases import ENTRY, PROG, Case

ROOT = Path(__file__).resolve().parents[2]
FORK_SERVER = Path(__file__).with_name("forkserver.py")
TIMEOUT_S = 180


@dataclass
class Outcome:
    case: Case
    argv: list[str]
    code: int
    stdout: str
    stderr: str
    case_dir: Path

    def error_lines(self) -> list[str]:
        return [ln for ln in self.stderr.splitlines() if ln.strip() and not ln.startswith("WARNING")]


def case_env(home: Path) -> dict[str, str]:
    """No Hugging Face cache (so --weights timm fails the same everywhere), one thread per process."""
    return {"HF_HOME": str(home / "hf"), "HF_HUB_CACHE": str(home / "hf" / "hub"), "OMP_NUM_THREADS": "1"}


def run_cases(cases: list[Case], inputs: Path, root: Path, extra: tuple[str, ...] = ()) -> dict[str, Outcome]:
    """Run cases concurrently in forked children of one pre-imported process; {case id: Outcome}."""
    jobs, dirs = [], {}
    for case in cases:
        case_dir = dirs[case.id] = root / case.id
        case_dir.mkdir(parents=True, exist_ok=True)
        for name in case.folders:
            (case_dir / name).mkdir(exist_ok=True)
        argv = [*case.argv(inputs, case_dir), *extra]
        jobs.append({"id": case.id, "entry": ENTRY[case.command], "argv": argv, "cwd": str(case_dir),
                     "env": case_env(root)})  # fmt: skip
    workers = str(max(2, os.cpu_count() or 2))
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)  # this checkout's package
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    proc = subprocess.run(
        [sys.executable, str(FORK_SERVER), workers], input=json.dumps(jobs), capture_output=True, text=True,
        timeout=TIMEOUT_S * 3, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, f"fork server failed:\n{proc.stderr[-3000:]}"
    codes = json.loads(proc.stdout)
    out = {}
    for job, case in zip(jobs, cases):
        d = dirs[case.id]
        texts = [(d / f".case-{n}").read_text(errors="replace") for n in ("stdout", "stderr")]
        for n in ("stdout", "stderr"):
            (d / f".case-{n}").unlink()
        out[case.id] = Outcome(case, job["argv"], codes[case.id], texts[0], texts[1], d)
    return out


def run_command(command: str, args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """The installed console script (``mixnet-export`` ...) or, when not on PATH, its entry point via ``-c``."""
    script = shutil.which(PROG[command], path=os.path.dirname(sys.executable)) or shutil.which(PROG[command])
    code = f"from mixnet_deploy.cli import {ENTRY[command]} as main; raise SystemExit(main())"
    argv = [script] if script else [sys.executable, "-c", code]
    return subprocess.run([*argv, *args], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
