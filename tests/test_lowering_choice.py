"""``--mdconv auto``: both lowerings timed on the runtime that will run the file, the faster kept and reported."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from mixnet_deploy import lowering_choice
from mixnet_deploy.config import ExportConfig
from mixnet_deploy.onnx_export import read_metadata
from mixnet_deploy.pipeline import run_export


@pytest.mark.parametrize(
    "engine,repo,kind,backend,gpu,expected",
    [
        ("skip", None, "gpu", "onnxruntime", True, "ort-cpu"),
        ("auto", None, "gpu", "onnxruntime", False, "ort-cpu"),
        ("auto", None, "gpu", "onnxruntime", True, "tensorrt"),
        ("require", "repo", "cpu", "openvino", False, "tensorrt"),
        ("skip", "repo", "cpu", "openvino", False, "openvino"),
        ("skip", "repo", "cpu", "onnxruntime", False, "ort-cpu"),
        ("skip", None, "cpu", "openvino", False, "ort-cpu"),  # no Triton repository: the file runs on ORT
    ],
)
def test_the_runtime_that_will_run_the_file(monkeypatch, engine, repo, kind, backend, gpu, expected):
    import mixnet_deploy.gpu_stack as gpu_stack

    monkeypatch.setattr(gpu_stack, "gpu_stack_status", lambda: (gpu, "" if gpu else "no GPU"))
    assert lowering_choice.target_runtime(engine, repo, kind, backend) == expected


@pytest.mark.parametrize("times,chosen", [({"split": 2.0, "merged": 1.0}, "merged"),
                                          ({"split": 1.0, "merged": 3.0}, "split")])  # fmt: skip
def test_the_faster_is_kept(monkeypatch, tmp_path, times, chosen):
    monkeypatch.setattr(lowering_choice, "median_ms", lambda runners, x: dict(times))
    report = run_export(ExportConfig(variant="s", img_size=32, out_dir=tmp_path, engine="skip", mdconv="auto"))
    assert report.mdconv == chosen and report.mdconv_auto["chosen"] == chosen
    assert report.mdconv_auto["ms"] == times and report.mdconv_auto["runtime"] == "ort-cpu"
    assert read_metadata(onnx.load(report.artifacts[0].path))["mixnet.mdconv"] == chosen


@pytest.mark.slow
def test_measured_on_openvino_for_cpu_triton(tmp_path):
    cfg = ExportConfig(variant="s", img_size=64, out_dir=tmp_path / "out", engine="skip", mdconv="auto",
                       triton_repo=tmp_path / "repo", triton_kind="cpu", triton_backend="openvino")  # fmt: skip
    report = run_export(cfg)
    auto = json.loads((Path(cfg.out_dir) / "mixnet_s.report.json").read_text())["mdconv_auto"]
    assert auto["runtime"] == "openvino" and set(auto["ms"]) == {"split", "merged"}
    assert all(ms > 0 for ms in auto["ms"].values())
    assert report.mdconv == auto["chosen"] == min(auto["ms"], key=auto["ms"].get)
