"""OpenVINO as a runtime (``openvino``: f32 pinned; ``openvino-bf16``), measured against what we did not write:
PyTorch through mixnet-parity (the same tolerances as on ONNX Runtime), ONNX Runtime's logits, OpenVINO's own
per-layer performance counters and its report of the precision it compiled for.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import openvino as ov
import pytest

from mixnet_deploy import precision_table
from mixnet_deploy.cli import bench_main, parity_main, predict_main
from mixnet_deploy.config import ExportConfig
from mixnet_deploy.errors import InputError
from mixnet_deploy.pipeline import run_export
from mixnet_deploy.runtimes import RUNTIMES, available_runtimes, make_runner

SIZE = 64
CPU_BF16 = {"avx512_bf16", "amx_bf16"}  # what OpenVINO's CPU plugin computes bf16 on


@pytest.fixture(scope="module")
def files(tmp_path_factory, timm_fixture):
    out = tmp_path_factory.mktemp("ov")
    cfg = ExportConfig(weights=str(timm_fixture["weights"]), img_size=SIZE, out_dir=out, engine="skip", fp16=True,
                       int8=True, calib="synthetic", calib_count=8, holdout=4)  # fmt: skip
    return {a.precision: Path(a.path) for a in run_export(cfg).artifacts}


def test_runtimes_are_listed_and_installed():
    assert {"openvino", "openvino-bf16"} <= set(RUNTIMES) and RUNTIMES["openvino"] is None
    assert {"openvino", "openvino-bf16"} <= set(available_runtimes())


def test_f32_is_pinned_and_matches_onnx_runtime(files):
    x = np.random.default_rng(0).standard_normal((2, 3, SIZE, SIZE), dtype=np.float32)
    ov_runner = make_runner(files["fp32"], "openvino", threads=1)
    ort = make_runner(files["fp32"], "ort-cpu").run(x)
    d = ov_runner.describe()
    assert d["inference_precision"] == "fp32" and d["threads"] == 1 and d["openvino"] == ov.get_version().split("-")[0]
    assert np.abs(ov_runner.run(x) - ort).max() <= precision_table.row("fp32").tolerance.max_abs


def test_bf16_reports_the_precision_it_ran_in(files):
    """bf16 where the CPU computes it (avx512_bf16 / AMX), f32 elsewhere: read back, not assumed."""
    flags = set(Path("/proc/cpuinfo").read_text().split())
    runner = make_runner(files["fp32"], "openvino-bf16")
    assert runner.inference_precision == ("bf16" if flags & CPU_BF16 else "fp32")
    assert precision_table.judged_precision("fp32", runner.inference_precision) == (
        "fp16" if flags & CPU_BF16 else "fp32"
    )


def test_a_bf16_run_is_judged_like_fp16_never_tighter():
    assert precision_table.judged_precision("fp32", "bf16") == "fp16"
    assert precision_table.judged_precision("fp16", "bf16") == "fp16"
    assert precision_table.judged_precision("int8", "bf16") == "int8"
    assert precision_table.judged_precision("fp32", None) == "fp32"


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["ort-cpu", "openvino"])
def test_parity_same_tolerances_as_onnx_runtime(files, timm_fixture, runtime, tmp_path, capsys):
    out = tmp_path / "p.json"
    args = [*(str(files[p]) for p in ("fp32", "fp16", "int8")), "--weights", str(timm_fixture["weights"]),
            "--random", "8", "--runtime", runtime, "--json", str(out), "--quiet"]  # fmt: skip
    rc = parity_main(args)
    report = json.loads(out.read_text())
    assert rc == 0, capsys.readouterr().err
    got = {r["precision"]: r for r in report["results"]}
    assert set(got) == {"fp32", "fp16", "int8"} and all(r["passed"] for r in got.values())
    for precision, r in got.items():
        assert r["tolerance"] == json.loads(json.dumps(precision_table.row(precision).tolerance.__dict__))
        assert r["candidate"]["runtime"] == runtime
    if runtime == "openvino":
        assert {r["candidate"]["inference_precision"] for r in got.values()} == {"fp32"}


def test_bench_records_the_openvino_version(files, tmp_path):
    out = tmp_path / "b.json"
    rc = bench_main([str(files["fp32"]), "--runtime", "openvino,ort-cpu", "--batch", "1", "--iters", "3",
                     "--warmup-s", "0", "--threads", "1", "--json", str(out), "--quiet"])  # fmt: skip
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["environment"]["versions"]["openvino"] == ov.__version__
    assert [r["model"]["runtime"] for r in result["results"]] == ["openvino", "ort-cpu"]


def test_predict_agrees_with_onnx_runtime(files, tmp_path, capsys):
    from PIL import Image

    image = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (80, 90, 3), dtype=np.uint8)).save(image)
    lines = {}
    for runtime in ("ort-cpu", "openvino"):
        args = [str(files["fp32"]), str(image), "--runtime", runtime, "--json", str(tmp_path / runtime)]
        assert predict_main(args) == 0
        lines[runtime] = json.loads((tmp_path / runtime).read_text().splitlines()[0])
    assert lines["openvino"]["classes"] == lines["ort-cpu"]["classes"]


def test_openvino_refuses_an_engine_and_a_checkpoint(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    with pytest.raises(InputError, match="expected tensorrt or auto"):
        make_runner(engine, "openvino")
    with pytest.raises(InputError, match="needs an .onnx or .engine file"):
        make_runner("s", "openvino-bf16")


def _executed(path: Path) -> collections.Counter:
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERF_COUNT": "YES"})
    request = compiled.create_infer_request()
    request.infer({0: np.zeros((1, 3, SIZE, SIZE), np.float32)})
    done = [i for i in request.profiling_info if i.status == ov.ProfilingInfo.Status.EXECUTED]
    return collections.Counter(i.node_type for i in done)


def test_split_pointwise_groups_become_one_group_convolution(files):
    """OpenVINO fuses Split -> bias-free 1x1 convs -> Concat into a GroupConvolution (timm's graph gets it): only
    the 13 mixed depthwise stages of S stay split. On main (biases on the group convs) 34 splits stayed."""
    import onnx

    model = onnx.load(str(files["fp32"]))
    executed = _executed(files["fp32"])
    assert sum(n.op_type == "Split" for n in model.graph.node) == 34
    assert executed["VariadicSplit"] == executed["Concat"] == 13
