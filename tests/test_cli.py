import json
import subprocess
import sys
from dataclasses import replace
from types import MappingProxyType

from mixnet_deploy import precision_table
from mixnet_deploy.cli import export_main
from mixnet_deploy.export_reports import read_report


def run_cli(*args):
    proc = subprocess.run(
        [sys.executable, "-m", "mixnet_deploy.cli", *args], capture_output=True, text=True, timeout=300
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_export_success(tmp_path):
    rc, out, err = run_cli("--variant", "s", "--out", str(tmp_path), "--engine", "skip")
    assert rc == 0, err
    assert (tmp_path / "mixnet_s.onnx").is_file()
    report = read_report(tmp_path)
    assert report["variant"] == "s" and report["artifacts"][0]["metrics"]["max_abs"] < 1e-3
    assert "RANDOM weights" in err  # loud warning without --weights
    assert "mixnet_s.onnx" in out


def test_verification_failure_exits_1_and_keeps_no_model(tmp_path, monkeypatch, capsys):
    impossible = precision_table.Tolerance(
        max_abs=0.0, min_cosine=1.1, min_mean_cosine=1.1, min_top1=None, min_top5_overlap=None
    )
    table = {**precision_table.PRECISIONS, "fp32": replace(precision_table.PRECISIONS["fp32"], tolerance=impossible)}
    monkeypatch.setattr(precision_table, "PRECISIONS", MappingProxyType(table))
    rc = export_main(["--variant", "s", "--out", str(tmp_path), "--engine", "skip"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "disagrees" in err and f"this run's report: {tmp_path / 'mixnet_s.failed.json'}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mixnet_s.failed.json"]  # no model, no temporary file
    failed = json.loads((tmp_path / "mixnet_s.failed.json").read_text())
    assert failed["artifacts"][0]["metrics"]["max_abs"] > 0 and failed["files"] == []


def test_summary_prints_engines_from_engine_results(capsys):
    """The engine rows (only built on a GPU) read engine.EngineResult objects, as the pipeline returns them."""
    from types import SimpleNamespace

    from mixnet_deploy.cli import print_export_summary
    from mixnet_deploy.engine_build import EngineResult
    from mixnet_deploy.pipeline import Artifact

    metrics = dict(max_abs=1e-6, min_cosine=1.0, mean_cosine=1.0, top1=1.0, top5_overlap=1.0)
    onnx = Artifact(precision="fp32", path="out/mixnet_s.onnx", bytes=2_000_000, nodes=346, ops={}, metrics=metrics,
                    tolerance={}, seconds=0.5)  # fmt: skip
    engine = EngineResult(precision="fp32", onnx=onnx.path, path="out/mixnet_s.engine", manifest="m", bytes=3_500_000,
                          seconds=41.0, check={})  # fmt: skip
    report = SimpleNamespace(variant="s", img_size=224, weights={"source": "random"}, mdconv="split",
                             artifacts=[onnx], engines=[engine], notes=[], timings_s={"total": 1.0},
                             previous_run={})  # fmt: skip
    print_export_summary(report)
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("engine"))
    assert line.split()[1:3] == ["mixnet_s.engine", "3.50"] and "built in 41.0 s" in line
