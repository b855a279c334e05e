"""Interrupted and repeated exports (issue 8): nothing half-written, nothing stale, one run per folder.

The invariant checked after every run, interrupted or not: the output folder holds no temporary file
(``atomic.TMP_MARKER``), and either no model file and no mixnet_s.report.json, or a mixnet_s.report.json
whose artifacts are exactly the model files present, each carrying the report's weights SHA-256 in its
metadata; the folder's index (report.json) lists the model exactly when its report exists.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest

from mixnet_deploy.atomic import TMP_MARKER
from mixnet_deploy.cli import export_main
from mixnet_deploy.model import build_model
from mixnet_deploy.weights import save_checkpoint

MODEL_SUFFIXES = (".onnx", ".engine", ".plan")
# The real mixnet-export entry point, with os.replace slowed down: every artifact then sits complete under its
# temporary name for a minute before the rename, so the test can signal the run exactly mid-write.
SLOW_RENAME = """
import os, sys, time
_replace = os.replace
def slow_replace(src, dst):
    if {marker!r} in os.fspath(src) and os.path.basename(os.fspath(dst)) == {target!r}:
        time.sleep(60)
    _replace(src, dst)
os.replace = slow_replace
from mixnet_deploy.cli import export_main
raise SystemExit(export_main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two checkpoints of mixnet_s with different (seeded) weights."""
    import torch

    folder = tmp_path_factory.mktemp("ckpt")
    paths = []
    for seed in (1, 2):
        model = build_model("s")
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
        paths.append(save_checkpoint(model, folder / f"s{seed}.safetensors"))
    return paths


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, checkpoints):
    """A complete earlier run (first weights, FP32 + FP16) to copy into a folder that is then exported again."""
    out = tmp_path_factory.mktemp("first") / "out"
    assert export_main(export_args(checkpoints[0], out, "--fp16")) == 0
    report = assert_one_run_or_nothing(out)
    assert {Path(a["path"]).name for a in report["artifacts"]} == {"mixnet_s.onnx", "mixnet_s.fp16.onnx"}
    return out, report


def copy_run(first_run, out: Path) -> dict:
    """The earlier run's folder, copied to ``out`` with its report's paths pointing there."""
    src, report = first_run
    shutil.copytree(src, out)
    text = (out / "mixnet_s.report.json").read_text().replace(str(src), str(out))
    (out / "mixnet_s.report.json").write_text(text)
    assert assert_one_run_or_nothing(out) is not None
    return json.loads(text)


def export_args(weights: Path, out: Path, *extra: str) -> list[str]:
    return ["--weights", str(weights), "--img-size", "64", "--engine", "skip", "--out", str(out), *extra]


def model_sha(path: Path) -> str:
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return meta["mixnet.weights_sha256"]


def assert_one_run_or_nothing(out: Path) -> dict | None:
    """The folder invariant (see the module docstring); returns the report when there is one."""
    temps = [p.name for p in out.iterdir() if TMP_MARKER in p.name]
    assert not temps, f"temporary files left: {temps}"
    models = sorted(p.name for p in out.iterdir() if p.name.endswith(MODEL_SUFFIXES))
    report_path = out / "mixnet_s.report.json"
    index = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {"models": []}
    assert [m["model"] for m in index["models"]] == (["mixnet_s"] if report_path.exists() else []), index
    if not report_path.exists():
        assert not models, f"model files without a report (half-finished or stale run): {models}"
        return None
    report = json.loads(report_path.read_text())
    listed = sorted(Path(a["path"]).name for a in report["artifacts"])
    listed += sorted(Path(e["path"]).name for e in report.get("engines", []))
    assert sorted(listed) == models, f"report lists {listed}, folder holds {models}"
    for name in models:
        if name.endswith(".onnx"):
            assert model_sha(out / name) == report["weights"]["sha256"], f"{name} is from another run"
    return report


def start_slow_export(args: list[str], target: str) -> subprocess.Popen:
    code = SLOW_RENAME.format(marker=TMP_MARKER, target=target)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def wait_for_temp(proc: subprocess.Popen, out: Path, target: str, timeout_s: float = 240) -> Path:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [p for p in out.glob(f".{target}{TMP_MARKER}*")] if out.is_dir() else []
        # Created is not yet written: wait for bytes, so the signal lands while the file sits mid-rename.
        if found and _size(found[0]) > 0:
            return found[0]
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"export ended (exit {proc.returncode}) before writing {target}:\n{err}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"no temporary {target} within {timeout_s} s")


@pytest.mark.parametrize(
    "sig,target,extra",
    [
        (signal.SIGINT, "mixnet_s.onnx", ()),
        (signal.SIGTERM, "mixnet_s.onnx", ()),
        (signal.SIGINT, "mixnet_s.fp16.onnx", ("--fp16",)),  # after the FP32 file was kept: it goes too
    ],
    ids=["sigint-fp32", "sigterm-fp32", "sigint-fp16"],
)
def test_interrupted_export_leaves_no_partial_or_stale_artifact(tmp_path, checkpoints, first_run, sig, target, extra):
    out = tmp_path / "out"
    copy_run(first_run, out)  # an earlier complete run: none of it may survive beside a half-finished second run

    proc = start_slow_export(export_args(checkpoints[1], out, *extra), target)
    temp = wait_for_temp(proc, out, target)
    assert temp.stat().st_size > 0
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the export did not stop within 60 s of the signal")
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert assert_one_run_or_nothing(out) is None  # the first run was replaced, the second did not finish


def test_rerun_replaces_every_artifact_consistently(tmp_path, checkpoints, first_run):
    out = tmp_path / "out"
    first = copy_run(first_run, out)
    # Same folder, other weights, FP32 only: the FP16 file of the first run must not stay behind.
    assert export_main(export_args(checkpoints[1], out)) == 0
    second = assert_one_run_or_nothing(out)
    assert second["weights"]["sha256"] != first["weights"]["sha256"]
    assert [Path(a["path"]).name for a in second["artifacts"]] == ["mixnet_s.onnx"]
    assert model_sha(out / "mixnet_s.onnx") == second["weights"]["sha256"]


def test_failed_rerun_keeps_no_half_set(tmp_path, checkpoints, first_run):
    """A late bad input (calibration folder whose only image is corrupt) after FP32 was written: exit 2, no model."""
    out, calib = tmp_path / "out", tmp_path / "calib"
    calib.mkdir()
    (calib / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    copy_run(first_run, out)
    assert export_main(export_args(checkpoints[1], out, "--int8", "--calib", str(calib))) == 2
    assert assert_one_run_or_nothing(out) is None


def test_sigkill_leaves_only_a_temp_file_that_the_next_run_removes(tmp_path, checkpoints, first_run):
    """kill -9 allows no cleanup: the complete-but-unrenamed temporary file stays, never a file under the final
    name (which a server would load); the next run into the folder deletes it (its writer is gone)."""
    out = tmp_path / "out"
    copy_run(first_run, out)
    proc = start_slow_export(export_args(checkpoints[1], out), "mixnet_s.onnx")
    temp = wait_for_temp(proc, out, "mixnet_s.onnx")
    proc.kill()
    proc.communicate(timeout=60)
    assert temp.exists()
    assert not [p for p in out.iterdir() if p.name.endswith(MODEL_SUFFIXES)]  # the earlier run was cleared first
    assert export_main(export_args(checkpoints[1], out)) == 0
    assert not temp.exists()
    assert assert_one_run_or_nothing(out)["weights"]["sha256"] == model_sha(out / "mixnet_s.onnx")


def test_only_temp_files_of_dead_writers_are_stale(tmp_path):
    from mixnet_deploy.atomic import remove_stale_temps

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    mine = tmp_path / f".a.onnx{TMP_MARKER}{os.getpid()}"  # a live writer (a concurrent run): kept
    gone = tmp_path / f".b.onnx{TMP_MARKER}{int(dead.stdout)}"
    other = tmp_path / "b.onnx"
    for p in (mine, gone, other):
        p.write_bytes(b"x")
    assert remove_stale_temps(tmp_path) == [gone]
    assert mine.exists() and other.exists() and not gone.exists()
