import json
import subprocess
import sys
from dataclasses import replace
from types import MappingProxyType

import pytest

from mixnet_deploy import precisions
from mixnet_deploy.cli import export_main


def run_cli(*args):
    proc = subprocess.run(
        [sys.executable, "-m", "mixnet_deploy.cli", *args], capture_output=True, text=True, timeout=300
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_export_success(tmp_path):
    rc, out, err = run_cli("--variant", "s", "--out", str(tmp_path), "--engine", "skip")
    assert rc == 0, err
    assert (tmp_path / "mixnet_s.onnx").is_file()
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["variant"] == "s" and report["artifacts"][0]["metrics"]["max_abs"] < 1e-3
    assert "RANDOM weights" in err  # loud warning without --weights
    assert "mixnet_s.onnx" in out


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--variant", "xl"], "unknown variant 'xl'"),
        (["--img-size", "100"], "--img-size 100"),
        (["--img-size", "0"], "--img-size 0"),
        (["--img-size", "abc"], "invalid int value"),
        (["--engine", "maybe"], "--engine 'maybe'"),
        (["--engine", "require"], "TensorRT"),
        (["--opset", "11"], "--opset 11"),
        (["--weights", "/nonexistent.pth"], "does not exist"),
        (["--unknown-flag"], "unrecognized arguments"),
        (["--batch", "8:1:32"], "--batch '8:1:32'"),
        (["--batch", "0:1:2"], "--batch '0:1:2'"),
        (["--batch", "a:b:c"], "MIN:OPT:MAX"),
    ],
)
def test_bad_input_exit_2_one_line(tmp_path, args, needle):
    rc, out, err = run_cli(*args, "--out", str(tmp_path / "o"))
    assert rc == 2
    assert needle in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not list(tmp_path.rglob("*.onnx"))


def test_out_is_a_file(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    rc, _, err = run_cli("--out", str(target))
    assert rc == 2 and "is a file" in err


def test_verification_failure_exits_1_and_keeps_no_model(tmp_path, monkeypatch, capsys):
    impossible = precisions.Tolerance(
        max_abs=0.0, min_cosine=1.1, min_mean_cosine=1.1, min_top1=None, min_top5_overlap=None
    )
    table = {**precisions.PRECISIONS, "fp32": replace(precisions.PRECISIONS["fp32"], tolerance=impossible)}
    monkeypatch.setattr(precisions, "PRECISIONS", MappingProxyType(table))
    (tmp_path / "mixnet_s.onnx").write_bytes(b"stale from an earlier run")
    rc = export_main(["--variant", "s", "--out", str(tmp_path), "--engine", "skip"])
    assert rc == 1
    assert "disagrees" in capsys.readouterr().err
    assert not (tmp_path / "mixnet_s.onnx").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_verbose_shows_traceback(tmp_path):
    rc, _, err = run_cli("--variant", "xl", "--verbose", "--out", str(tmp_path))
    assert rc == 2 and "Traceback" in err
