"""TensorRT engines on a GPU (``pytest -m gpu`` with the ``[gpu]`` extra). Not run on the team's CPU machines.

One module fixture exports MixNet-S with timm's weights (the shared fixture) to FP32 / FP16 / INT8 ONNX
and builds their engines through ``mixnet-export --engine require`` (batch profile 1:8:32, a timing
cache). The tests then check what the issue lists: engines per precision, parity with ONNX Runtime within
each precision's tolerance, dynamic batch 1/8/32, timing-cache reuse, refusal of tampered manifests and
engines, CUDA-graph replay, and the trtexec recipe where a trtexec binary exists.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import every_file_accepted

from mixnet_deploy import engine_build as E
from mixnet_deploy.batching import BatchProfile
from mixnet_deploy.errors import InputError
from mixnet_deploy.export_reports import read_report
from mixnet_deploy.metrics import compare, failures
from mixnet_deploy.precision_table import tolerances
from mixnet_deploy.trt_runner import engine_runner

pytestmark = pytest.mark.gpu(needs=("tensorrt", "fixture"))

NAMES = {"fp32": "mixnet_s.onnx", "fp16": "mixnet_s.fp16.onnx", "int8": "mixnet_s.int8.onnx"}


def _export_flags() -> set[str]:
    from mixnet_deploy.config import export_flags

    return set(export_flags().values())


@pytest.fixture(scope="module")
def built(tmp_path_factory, timm_fixture):
    """Export S (timm weights) in every precision this checkout offers and build the engines."""
    from mixnet_deploy.cli import export_main

    out = tmp_path_factory.mktemp("engines")
    flags = _export_flags()
    args = ["--weights", str(timm_fixture["weights"]), "--out", str(out), "--engine", "require"]
    args += ["--batch", "1:8:32", "--timing-cache", str(out / "timing.cache"), "--workspace", "2048"]
    if "--fp16" in flags:
        args.append("--fp16")
    if "--int8" in flags:
        args += ["--int8", "--calib", "synthetic"]
    t = time.perf_counter()
    with every_file_accepted():  # engines, not accuracy: INT8 from colour fields is refused on photos
        assert export_main(args) == 0
    report = read_report(out)
    return {"out": out, "report": report, "seconds": time.perf_counter() - t, "timm": timm_fixture}


def _engine(built, precision) -> Path:
    path = E.engine_path_for(built["out"] / NAMES[precision], precision)
    if not (built["out"] / NAMES[precision]).is_file():
        pytest.skip(f"{NAMES[precision]} was not exported (its --{precision} flag is not in this checkout)")
    return path


def _ort(onnx_path: Path, x: np.ndarray) -> np.ndarray:
    from mixnet_deploy.runtimes import ort_session, run_ort

    return run_ort(ort_session(str(onnx_path)), x)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_and_manifest_per_precision(built, precision):
    path = _engine(built, precision)
    assert path.is_file() and E.manifest_path_for(path).is_file()
    manifest = E.verify_engine_file(path)  # this system: must pass
    assert manifest["precision"] == precision
    assert manifest["profile"]["shapes"]["input"]["max"] == [32, 3, 224, 224]
    assert manifest["workspace_mib"] == 2048 and manifest["system"]["gpu"]
    assert manifest["onnx_sha256"] == E.sha256_file(built["out"] / NAMES[precision])
    layers = manifest["engine_check"]["layers_by_precision"]
    if precision != "fp32":  # the engine really computes in the asked precision
        assert layers.get(precision, 0) > 0, layers


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_parity_with_onnxruntime(built, precision):
    """Engine vs the FP32 ONNX in ONNX Runtime (CPU), within the precision's row of precision_table.PRECISIONS."""
    path = _engine(built, precision)
    if precision not in tolerances():
        pytest.skip(f"no {precision} row in precision_table.PRECISIONS in this checkout")
    x = np.random.default_rng(0).standard_normal((8, 3, 224, 224), dtype=np.float32)
    x = np.concatenate([built["timm"]["input"], x])
    reference = _ort(built["out"] / NAMES["fp32"], x)
    runner = engine_runner(path)
    try:
        out = runner.run(x)
    finally:
        runner.close()
    metrics = compare(reference, out)
    assert failures(metrics, tolerances()[precision]) == [], metrics
    if precision == "fp32":  # and timm's own logits, as the ONNX export is checked
        assert np.abs(out[:2] - built["timm"]["logits"]).max() < 1e-3


@pytest.mark.parametrize("batch", [1, 8, 32])
def test_dynamic_batch(built, batch):
    path = _engine(built, "fp32")
    x = np.random.default_rng(batch).standard_normal((batch, 3, 224, 224), dtype=np.float32)
    runner = engine_runner(path)
    try:
        out = runner.run(x)
        assert out.shape == (batch, 1000) and out.dtype == np.float32
        assert failures(compare(_ort(built["out"] / NAMES["fp32"], x), out), tolerances()["fp32"]) == []
        with pytest.raises(InputError, match="1 <= N <= 32"):
            runner.run(np.zeros((33, 3, 224, 224), np.float32))
    finally:
        runner.close()


def test_cuda_graph_replay_and_event_timing(built):
    path = _engine(built, "fp32")
    x = np.random.default_rng(1).standard_normal((8, 3, 224, 224), dtype=np.float32)
    plain, graph = engine_runner(path), engine_runner(path, cuda_graph=True)
    try:
        np.testing.assert_allclose(graph.run(x), plain.run(x), rtol=0, atol=1e-5)
        np.testing.assert_allclose(graph.run(x[:1]), plain.run(x[:1]), rtol=0, atol=1e-5)  # new shape: new graph
        times = graph.time_batch(x, 20)
        assert len(times) == 20 and all(0 < t < 1000 for t in times)
    finally:
        plain.close()
        graph.close()


def test_make_runner_dispatches_engines(built):
    from mixnet_deploy.runtimes import make_runner

    runner = make_runner(_engine(built, "fp32"))
    try:
        assert runner.runtime == "tensorrt" and runner.max_batch == 32 and runner.precision == "fp32"
        assert runner.metadata.get("mixnet.variant") == "s"
    finally:
        runner.close()


def test_timing_cache_reuse(built, tmp_path):
    """The run saved a timing cache; rebuilding FP32 with it must be faster than the first (cold) build."""
    cache = built["out"] / "timing.cache"
    assert cache.is_file() and cache.stat().st_size > 0
    cold = next(e for e in built["report"]["engines"] if e["precision"] == "fp32")["seconds"]
    copy = tmp_path / "timing.cache"
    shutil.copy(cache, copy)
    opts = E.EngineOptions(batch=BatchProfile(1, 8, 32), workspace_mib=2048, timing_cache=copy)
    result = E.build_engine(built["out"] / NAMES["fp32"], "fp32", opts, tmp_path / "again.fp32.engine")
    assert result.seconds < 0.8 * cold, (result.seconds, cold)  # tolerance: at least 20 % faster
    assert copy.stat().st_size >= cache.stat().st_size * 0.9


def test_tampered_manifest_and_engine_are_refused(built, tmp_path):
    src = _engine(built, "fp32")
    engine = tmp_path / src.name
    shutil.copy(src, engine)
    manifest = json.loads(E.manifest_path_for(src).read_text())
    tampered = {**manifest, "system": {**manifest["system"], "tensorrt": "9.9.9"}}
    E.manifest_path_for(engine).write_text(json.dumps(tampered))
    with pytest.raises(InputError, match="engine built with 9.9.9"):
        engine_runner(engine)
    E.manifest_path_for(engine).write_text(json.dumps(manifest))
    with open(engine, "r+b") as f:  # flip one byte of the plan
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(InputError, match="SHA-256"):
        engine_runner(engine)


def _trtexec() -> str | None:
    found = shutil.which("trtexec")
    if found:
        return found
    return "/usr/src/tensorrt/bin/trtexec" if os.access("/usr/src/tensorrt/bin/trtexec", os.X_OK) else None


def test_trtexec_recipe_runs(built, tmp_path):
    trtexec = _trtexec()
    if trtexec is None:
        pytest.skip("no trtexec on PATH or at /usr/src/tensorrt/bin/trtexec")
    from mixnet_deploy.trtexec import trtexec_recipe

    precision = "fp16" if (built["out"] / NAMES["fp16"]).is_file() else "fp32"
    shutil.copy(built["out"] / NAMES[precision], tmp_path / NAMES[precision])
    script = tmp_path / "mixnet_s.trtexec.sh"
    opts = E.EngineOptions(batch=BatchProfile(1, 8, 32), workspace_mib=2048)
    script.write_text(trtexec_recipe([(NAMES[precision], precision)], opts, warmup_ms=100, duration_s=1))
    proc = subprocess.run(["bash", str(script)], env={**os.environ, "TRTEXEC": trtexec}, capture_output=True,
                          text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    engine = tmp_path / f"mixnet_s.{precision}.trtexec.engine"
    assert engine.is_file() and engine.stat().st_size > 1_000_000
    times = json.loads((tmp_path / f"mixnet_s.{precision}.trtexec.b8.times.json").read_text())
    assert len(times) > 0
    runner = engine_runner(engine, check_manifest=False)  # hand-built: no manifest
    try:
        x = built["timm"]["input"]
        tol = tolerances().get(precision, tolerances()["fp32"])
        assert failures(compare(_ort(tmp_path / NAMES[precision], x), runner.run(x)), tol) == []
    finally:
        runner.close()
