"""Interrupted, failed and repeated exports (issues 8 and 20): nothing half-written, nothing stale, nothing lost.

A run writes its whole set into a hidden stage folder and swaps it in only when it has succeeded
(mixnet_deploy/export_set.py). The re-run matrix runs into a folder holding a good export and files
mixnet-export did not write, and checks after success, a late bad input, a failed verification, SIGINT,
SIGTERM and SIGKILL that every file the run does not own is byte-identical (and, for every run that did
not succeed, every file at all). The invariant of a successful run: the output folder holds no temporary
file (``atomic.TMP_MARKER``), and a mixnet_s.report.json whose artifacts are exactly the model files present,
each carrying the report's weights SHA-256 in its metadata; the folder's index (report.json) lists the model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import onnx
import pytest

from mixnet_deploy import precision_table
from mixnet_deploy.atomic import TMP_MARKER
from mixnet_deploy.cli import export_main
from mixnet_deploy.engine_build import MANIFEST_SCHEMA
from mixnet_deploy.folder_lock import LOCK_NAME
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
from mixnet_deploy.engine_build import MANIFEST_SCHEMA
from mixnet_deploy.folder_lock import LOCK_NAME
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


def assert_one_run_or_nothing(out: Path, foreign: tuple[str, ...] = ()) -> dict | None:
    """The folder invariant (see the module docstring), but for the ``foreign`` files (not mixnet-export's);
    returns the report when there is one."""
    temps = [p.name for p in out.iterdir() if TMP_MARKER in p.name]
    assert not temps, f"temporary files left: {temps}"
    models = sorted(p.name for p in out.iterdir() if p.name.endswith(MODEL_SUFFIXES) and p.name not in foreign)
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
        found = list(out.glob(f".*/.{target}{TMP_MARKER}*")) if out.is_dir() else []  # in the stage folder
        # Created is not yet written: wait for bytes, so the signal lands while the file sits mid-rename.
        if found and _size(found[0]) > 0:
            return found[0]
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"export ended (exit {proc.returncode}) before writing {target}:\n{err}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"no temporary {target} within {timeout_s} s")


def test_rerun_replaces_every_artifact_consistently(tmp_path, checkpoints, first_run):
    out = tmp_path / "out"
    first = copy_run(first_run, out)
    # Same folder, other weights, FP32 only: the FP16 file of the first run must not stay behind.
    assert export_main(export_args(checkpoints[1], out)) == 0
    second = assert_one_run_or_nothing(out)
    assert second["weights"]["sha256"] != first["weights"]["sha256"]
    assert [Path(a["path"]).name for a in second["artifacts"]] == ["mixnet_s.onnx"]
    assert model_sha(out / "mixnet_s.onnx") == second["weights"]["sha256"]
    assert second["previous_run"] == {"replaced": ["mixnet_s.onnx", "mixnet_s.report.json"],
                                      "removed": ["mixnet_s.fp16.onnx"], "left_alone": []}  # fmt: skip


# ---------------------------------------------------------------- the re-run matrix (issue 20)

FOREIGN = {  # files named like the model's that mixnet-export did not write, and a file of the user's
    "out/mixnet_s.timm.onnx": b"an ONNX file timm exported",
    "out/mixnet_s.trtexec-built.engine": b"an engine trtexec built by hand",
    "out/notes.txt": b"the user's notes",
    "repo/mixnet_s/3/model.onnx": b"a version someone else put into the repository",
}
# FP32 served by every run of the matrix (with or without --fp16): a re-run serving another precision into the same
# model folder is refused (issue 21: another configuration is never replaced), which is not what this test is about
TRITON = ("--triton-repo", "{repo}", "--triton-kind", "cpu", "--triton-precision", "fp32")
# exit codes; the folder's files that a run of the case may add (the rest stays byte-identical)
MATRIX = {"success": 0, "bad-input": 2, "verification": 1, "sigint": 130, "sigterm": 130, "sigkill": -signal.SIGKILL}


def digest(base: Path) -> dict[str, str]:
    return {str(p.relative_to(base)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(base.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.fixture(scope="module")
def previous_export(tmp_path_factory, checkpoints):
    """A good export (FP32 + FP16, an engine and its manifest, trtexec script, Triton version 1) beside files
    mixnet-export did not write."""
    base = tmp_path_factory.mktemp("previous")
    args = export_args(checkpoints[0], base / "out", "--fp16", "--trtexec", *triton_args(base))
    assert export_main(args) == 0
    engine = base / "out" / "mixnet_s.fp16.engine"  # an engine of ours (no GPU here): our manifest, its SHA-256
    engine.write_bytes(b"a TensorRT engine mixnet-export built")
    manifest = {"schema": MANIFEST_SCHEMA, "engine_sha256": hashlib.sha256(engine.read_bytes()).hexdigest()}
    (base / "out" / "mixnet_s.fp16.engine.json").write_text(json.dumps(manifest))
    for name, data in FOREIGN.items():
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_bytes(data)
    return base


def triton_args(base: Path) -> list[str]:
    return [a.replace("{repo}", str(base / "repo")) for a in TRITON]


def copy_export(src: Path, base: Path) -> None:
    shutil.copytree(src, base)
    report = base / "out" / "mixnet_s.report.json"
    report.write_text(report.read_text().replace(str(src), str(base)))


@pytest.mark.parametrize("case", list(MATRIX))
def test_rerun_matrix_leaves_what_it_does_not_own_byte_identical(tmp_path, checkpoints, previous_export,
                                                                 monkeypatch, case):  # fmt: skip
    """A re-run into a folder holding a good export and files we did not write: whatever the run does not own
    is byte-identical afterwards; a run that does not succeed leaves every file as it was (the previous
    export, its report, the index, the script, the Triton folder), adding at most its failure report."""
    base = tmp_path / "base"
    copy_export(previous_export, base)
    out, before = base / "out", digest(base)
    args = export_args(checkpoints[1], out, *triton_args(base))
    if case == "success":
        code = export_main(args)
    elif case == "bad-input":  # found late: after calibration, when the graph's layer names are known
        code = export_main([*args, "--int8", "--calib", "synthetic", "--int8-exclude", "no_such_conv"])
    elif case == "verification":  # FP16 beyond an impossible tolerance, after FP32 passed
        impossible = precision_table.Tolerance(max_abs=0.0, min_cosine=1.1, min_mean_cosine=1.1, min_top1=None,
                                               min_top5_overlap=None)  # fmt: skip
        fp16 = replace(precision_table.PRECISIONS["fp16"], tolerance=impossible)
        monkeypatch.setattr(precision_table, "PRECISIONS", MappingProxyType({**precision_table.PRECISIONS,
                                                                             "fp16": fp16}))  # fmt: skip
        code = export_main([*args, "--fp16"])
    else:  # a signal while the FP16 file sits complete under its temporary name (FP32 is staged already)
        proc = start_slow_export([*args, "--fp16"], "mixnet_s.fp16.onnx")
        wait_for_temp(proc, out, "mixnet_s.fp16.onnx")
        proc.send_signal({"sigint": signal.SIGINT, "sigterm": signal.SIGTERM, "sigkill": signal.SIGKILL}[case])
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("the export did not stop within 60 s of the signal")
        code = proc.returncode
        assert case == "sigkill" or ("interrupted" in err and "Traceback" not in err), err
    assert code == MATRIX[case]
    after = digest(base)
    for name, data in FOREIGN.items():
        assert (base / name).read_bytes() == data, f"{name} changed"
    if case == "success":
        report = assert_one_run_or_nothing(out, foreign=tuple(Path(k).name for k in FOREIGN))
        previous = report["previous_run"]
        assert previous == {
            "replaced": ["mixnet_s.onnx", "mixnet_s.report.json"],
            "removed": ["mixnet_s.fp16.engine", "mixnet_s.fp16.engine.json", "mixnet_s.fp16.onnx",
                        "mixnet_s.trtexec.sh"],
            "left_alone": ["mixnet_s.timm.onnx", "mixnet_s.trtexec-built.engine"],
        }
        owned = {f"out/{n}" for n in previous["replaced"] + previous["removed"]} | {"out/report.json"}
        owned |= {"repo/mixnet_s/config.pbtxt", "repo/mixnet_s/1/model.onnx"}  # the version this run wrote
        kept = {k: v for k, v in before.items() if k not in owned}
        assert {k: after.get(k) for k in kept} == kept
        assert sorted(set(after) - set(kept)) == ["out/mixnet_s.onnx", "out/mixnet_s.report.json", "out/report.json",
                                                  "repo/mixnet_s/1/model.onnx", "repo/mixnet_s/config.pbtxt"]
        assert report["triton"]["versions"] == [1, 3] and report["triton"]["served_versions"] == [1]
        return
    assert {k: after.get(k) for k in before} == before, "a run that did not succeed changed the folder"
    added = sorted(set(after) - set(before))
    if case == "verification":
        assert added == ["out/mixnet_s.failed.json"]
    elif case == "sigkill":  # no cleanup is possible: the stage folder and the lock files stay, hidden, until
        # the next run (a dead holder's lock file is taken at once: folder_lock.py)
        assert added and all(TMP_MARKER in k.split("/")[1] or k.endswith(LOCK_NAME) for k in added), added
        assert export_main(export_args(checkpoints[1], out)) == 0
        assert not [p for p in base.rglob("*") if TMP_MARKER in p.name]
    else:
        assert added == []


def test_only_temp_files_of_dead_writers_are_stale(tmp_path):
    from mixnet_deploy.atomic import remove_stale_temps

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    mine = tmp_path / f".a.onnx{TMP_MARKER}{os.getpid()}"  # a live writer (a concurrent run): kept
    gone = tmp_path / f".b.onnx{TMP_MARKER}{int(dead.stdout)}"
    other = tmp_path / "b.onnx"
    for p in (mine, gone, other):
        p.write_bytes(b"x")
    stage = tmp_path / f".b.stage{TMP_MARKER}{int(dead.stdout)}"  # a killed run's stage folder (export_set.py)
    (stage / "sub").mkdir(parents=True)
    (stage / "sub" / "b.onnx").write_bytes(b"x")
    foreign = tmp_path / f".notes{TMP_MARKER}{int(dead.stdout)}"  # a folder of that suffix we did not make: kept
    foreign.mkdir()
    (foreign / "keep.txt").write_bytes(b"x")
    assert remove_stale_temps(tmp_path) == [gone, stage]
    assert mine.exists() and other.exists() and not gone.exists() and not stage.exists()
    assert (foreign / "keep.txt").read_bytes() == b"x"
