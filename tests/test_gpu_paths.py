"""The GPU code paths against stand-ins of the real APIs (issue 12): what would crash or mislead on a GPU machine.

Every stand-in reproduces one documented behaviour of the real library (cuda-python's ``(err, value)`` tuples and
its ``cudaError_t`` enum, ONNX Runtime's silent CPU fallback, trtexec's banner); the code under test is the real one.
"""

from __future__ import annotations

import enum
import sys
import types

import pytest

from mixnet_deploy import engine_build as E
from mixnet_deploy import gpu_stack as G
from mixnet_deploy import trt_runner as T


class CudaError(enum.IntEnum):  # the values of cuda-python's cudaError_t
    cudaSuccess = 0
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100


class DriverTooOld:
    """cudart of cuda-python 13 on a CUDA 12 driver: every call fails with cudaErrorInsufficientDriver."""

    def cudaGetDeviceCount(self):
        return (CudaError.cudaErrorInsufficientDriver, 0)


@pytest.fixture
def fake_trt_modules(monkeypatch):
    """``tensorrt`` and ``polygraphy`` importable (empty modules), so gpu_stack_status reaches the CUDA check."""
    for name in ("tensorrt", "polygraphy"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))


def test_insufficient_driver_under_cuda_python_13_says_so(fake_trt_modules, monkeypatch):
    monkeypatch.setattr(G, "cuda_bindings_version", lambda: "13.0.1")
    ok, why = G.gpu_stack_status(cudart=DriverTooOld())
    assert not ok
    assert "cudaErrorInsufficientDriver" in why and "driver too old for cuda-python 13" in why
    assert "cuda-python>=12,<13" in why


def test_insufficient_driver_under_cuda_python_12_does_not_blame_13(fake_trt_modules, monkeypatch):
    monkeypatch.setattr(G, "cuda_bindings_version", lambda: "12.6.2")
    ok, why = G.gpu_stack_status(cudart=DriverTooOld())
    assert not ok and "cudaErrorInsufficientDriver" in why and "cuda-python 13" not in why


def test_no_device_is_reported_by_its_name(fake_trt_modules):
    class NoDevice:
        def cudaGetDeviceCount(self):
            return (CudaError.cudaErrorNoDevice, 0)

    ok, why = G.gpu_stack_status(cudart=NoDevice())
    assert not ok and why == "no usable CUDA device (CUDA error cudaErrorNoDevice)"


def test_a_device_found_passes(fake_trt_modules):
    class OneDevice:
        def cudaGetDeviceCount(self):
            return (CudaError.cudaSuccess, 1)

    assert G.gpu_stack_status(cudart=OneDevice()) == (True, "")


# ---------------------------------------------------------------- ONNX Runtime GPU providers (items 4, 5)

# What onnxruntime-gpu 1.31.1 printed here (no CUDA libraries) while creating a CUDA session, abridged.
ORT_CUDA_LOG = (
    "[E:onnxruntime:Default, provider_bridge_ort.cc:2458 operator()] ... Failed to load library "
    "/venv/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime_providers_cuda.so with error: "
    "libcublasLt.so.13: cannot open shared object file: No such file or directory\n"
    "[W:onnxruntime:Default, onnxruntime_pybind_state.cc:1295 CreateExecutionProviderFactoryInstance] Failed to "
    "create CUDAExecutionProvider. Require cuDNN 9.* and CUDA 13.*. Please install all dependencies ...\n"
)


class CpuOnlySession:
    """What ONNX Runtime hands back after a silent fallback: a session whose providers are only the CPU."""

    def get_providers(self):
        return ["CPUExecutionProvider"]


def test_provider_check_refuses_a_cpu_fallback_naming_the_missing_library():
    from mixnet_deploy.errors import InputError
    from mixnet_deploy.runtimes import check_session_provider

    with pytest.raises(InputError) as err:
        check_session_provider(CpuOnlySession(), "ort-cuda", ORT_CUDA_LOG, "1.31.1")
    text = err.value.render("--runtime")
    assert err.value.exit_code == 2 and "\n" not in text
    assert text.startswith("--runtime 'ort-cuda': ONNX Runtime 1.31.1 would run on CPUExecutionProvider")
    assert "CUDAExecutionProvider cannot load libcublasLt.so.13" in text and "CUDA 13.*" in text


def test_provider_check_for_ort_trt_wants_tensorrt_first():
    from mixnet_deploy.errors import InputError
    from mixnet_deploy.runtimes import check_session_provider

    class CudaFirst:
        def get_providers(self):
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    check_session_provider(CudaFirst(), "ort-cuda")  # what was asked for: no error
    with pytest.raises(InputError, match="would run on CUDAExecutionProvider, not TensorrtExecutionProvider"):
        check_session_provider(CudaFirst(), "ort-trt", ORT_CUDA_LOG)  # the log names CUDA's library, not TensorRT's


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider' is not in available provider names")
def test_ort_cuda_on_a_machine_without_cuda_exits_2_through_the_real_session(monkeypatch, tmp_path):
    """onnxruntime lists CUDA as available (as onnxruntime-gpu does, compiled in); the CPU build then falls back."""
    import onnxruntime as ort

    from mixnet_deploy.errors import InputError
    from mixnet_deploy.runtimes import OrtRunner

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has a CUDA provider: the fallback is not reproducible here")
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    model = _tiny_onnx(tmp_path)
    with pytest.raises(InputError, match=r"would run on CPUExecutionProvider, not CUDAExecutionProvider"):
        OrtRunner(model, "ort-cuda")
    assert OrtRunner(model, "ort-cpu").providers == ["CPUExecutionProvider"]


def test_capture_native_output_takes_what_native_code_writes_to_the_descriptors(capfd):
    import os

    from mixnet_deploy.runtimes import capture_native_output

    result, text = capture_native_output(lambda: (os.write(2, b"from C++\n"), os.write(1, b"from print\n"), 7)[-1])
    assert result == 7 and text == "from C++\nfrom print\n"
    assert capfd.readouterr() == ("", "")  # nothing reached the terminal


@pytest.mark.parametrize(
    "precision,fp16,int8",
    [("fp32", "False", "False"), ("fp16", "True", "False"), ("int8", "True", "True")],  # int8: Q/DQ over FP16
)
def test_ort_trt_options_follow_the_file_precision_and_batch(tmp_path, precision, fp16, int8):
    from mixnet_deploy.batching import BatchProfile
    from mixnet_deploy.runtimes import ort_trt_options

    model = tmp_path / f"mixnet_s.{precision}.onnx"
    opts = ort_trt_options(model, precision, BatchProfile(1, 8, 32), 256)
    assert opts["trt_fp16_enable"] == fp16 and opts["trt_int8_enable"] == int8
    assert opts["trt_profile_min_shapes"] == "input:1x3x256x256"
    assert opts["trt_profile_opt_shapes"] == "input:8x3x256x256"
    assert opts["trt_profile_max_shapes"] == "input:32x3x256x256"
    assert opts["trt_engine_cache_enable"] == opts["trt_timing_cache_enable"] == "True"
    assert opts["trt_engine_cache_path"] == opts["trt_timing_cache_path"] == str(
        tmp_path / f"mixnet_s.{precision}.ort-trt-cache"
    )
    assert all(isinstance(v, str) for v in opts.values())  # the provider parses 'True'/'False' strings


def test_ort_trt_provider_list_puts_cuda_between_tensorrt_and_cpu(tmp_path):
    from mixnet_deploy.batching import BatchProfile
    from mixnet_deploy.runtimes import ort_providers

    model = _tiny_onnx(tmp_path, precision="fp16")
    (trt, opts), cuda, cpu = ort_providers(model, "ort-trt", BatchProfile(2, 4, 4))
    assert (trt, cuda, cpu) == ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    assert opts["trt_fp16_enable"] == "True" and opts["trt_profile_max_shapes"] == "input:4x3x32x32"
    assert ort_providers(model, "ort-cuda", BatchProfile()) == ("CUDAExecutionProvider", "CPUExecutionProvider")


def test_ort_trt_option_names_exist_in_the_installed_tensorrt_provider():
    """Where onnxruntime-gpu is installed: every key we pass is a key its TensorRT provider library knows."""
    import re
    from pathlib import Path

    import onnxruntime as ort

    from mixnet_deploy.batching import BatchProfile
    from mixnet_deploy.runtimes import ort_trt_options

    lib = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_tensorrt.so"
    if not lib.is_file():
        pytest.skip(f"onnxruntime {ort.__version__} without the TensorRT provider library (CPU build)")
    known = set(re.findall(rb"\btrt_[a-z0-9_]+", lib.read_bytes()))
    ours = {k.encode() for k in ort_trt_options(Path("m.onnx"), "int8", BatchProfile(), 224)}
    assert ours <= known, sorted(ours - known)


def _tiny_onnx(tmp_path, precision="fp32"):
    """A 1x1 convolution, pooled to 2 "classes", with the toolkit's tensor names and metadata (input
    [N, 3, 32, 32], output [N, 2]: the runner contract)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["conv"]), helper.make_node("GlobalAveragePool", ["conv"], ["pool"]),
         helper.make_node("Flatten", ["pool"], ["logits"])],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in {"mixnet.precision": precision, "mixnet.input_size": "32"}.items():
        model.metadata_props.add(key=key, value=value)
    path = tmp_path / f"tiny.{precision}.onnx"
    onnx.save(model, str(path))
    return path


# ---------------------------------------------------------------- the GPU suite cannot pass untested (item 6)


def _pytest(tmp_path, *args):
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "MIXNET_FIXTURES": str(tmp_path)}  # an empty folder: the fixture is missing on any machine
    env.pop("MIXNET_REQUIRE_GPU", None)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_engine_gpu.py", *args]
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_gpu_suite_under_m_gpu_fails_naming_the_missing_prerequisite(tmp_path):
    proc = _pytest(tmp_path, "-m", "gpu", "-k", "test_dynamic_batch")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-2000:]  # pytest's "tests failed": errors at setup, nothing passed or skipped
    assert "3 errors" in out and "skipped" not in out and "passed" not in out, out[-2000:]
    ok, why = G.gpu_stack_status()
    expected = str(tmp_path) if ok else why  # the first missing prerequisite: the stack, else the (empty) fixture
    assert f"GPU test selected (-m gpu) but {expected}" in out, out[-2000:]


def test_gpu_suite_in_a_plain_run_skips_with_the_reason_printed(tmp_path):
    proc = _pytest(tmp_path, "-k", "test_dynamic_batch", "-rs")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "3 skipped" in out, out[-2000:]
    assert "SKIPPED" in out and "GPU test:" in out, out[-2000:]


# ---------------------------------------------------------------- DLA on TensorRT 10 (item 3, the Python build)


@pytest.mark.parametrize(
    "version,dla_core,strong",
    [("8.6.1", None, False), ("10.3.0", None, True), ("10.3.0", 0, False), ("10.7.0", 1, False),
     ("11.4.0", None, True), ("11.4.0", 0, True)],
)  # fmt: skip
def test_dla_on_tensorrt_10_builds_weakly_typed(version, dla_core, strong):
    """Strongly typed DLA is new in 11.4; 10.x builds DLA engines with the FP16/INT8 builder flags."""
    assert E.is_strongly_typed(version, dla_core) is strong


def test_the_manifest_records_how_a_dla_engine_was_typed():
    from mixnet_deploy.batching import BatchProfile

    system = {"tensorrt": "10.3.0", "gpu": "Orin (nvgpu)", "compute_capability": "8.7"}
    common = dict(engine_sha256="0" * 64, onnx_path="m.fp16.onnx", onnx_sha256="1" * 64, precision="fp16")
    common["system"] = system
    dla = E.build_manifest(opts=E.EngineOptions(batch=BatchProfile(8, 8, 8), dla_core=0), **common)
    gpu = E.build_manifest(opts=E.EngineOptions(), **common)
    assert dla["strongly_typed"] is False and gpu["strongly_typed"] is True


# ---------------------------------------------------------------- CUDA graphs of the engine runner (item 7)


class RecordingCudart:
    """cuda-python's cudart as far as graph capture goes: ``(err, value)`` tuples, every call recorded."""

    class cudaStreamCaptureMode(enum.IntEnum):
        cudaStreamCaptureModeThreadLocal = 1

    def __init__(self):
        self.calls: list[str] = []
        self.capturing = False
        self.live_graphs: set[int] = set()
        self._next = 100

    def _handle(self):
        self._next += 1
        return self._next

    def cudaStreamSynchronize(self, stream):
        self.calls.append("sync")
        return (CudaError.cudaSuccess,)

    def cudaStreamBeginCapture(self, stream, mode):
        self.calls.append("begin")
        self.capturing = True
        return (CudaError.cudaSuccess,)

    def cudaStreamEndCapture(self, stream):
        self.calls.append("end")
        self.capturing = False
        graph = self._handle()
        self.live_graphs.add(graph)
        return (CudaError.cudaSuccess, graph)

    def cudaGraphInstantiate(self, graph, flags):
        self.calls.append("instantiate")
        return (CudaError.cudaSuccess, self._handle())

    def cudaGraphDestroy(self, graph):
        self.calls.append("destroy")
        self.live_graphs.discard(graph)
        return (CudaError.cudaSuccess,)

    def cudaGraphLaunch(self, exec_graph, stream):
        self.calls.append("launch")
        return (CudaError.cudaSuccess,)

    def cudaGraphExecDestroy(self, exec_graph):
        self.calls.append("exec-destroy")
        return (CudaError.cudaSuccess,)


def _graphs(results):
    """CudaGraphs over a recording cudart whose enqueue returns ``results`` in turn (an exception is raised)."""
    cudart, results = RecordingCudart(), list(results)

    def enqueue():
        cudart.calls.append("enqueue-capturing" if cudart.capturing else "enqueue")
        r = results.pop(0)
        if isinstance(r, Exception):
            raise r
        return r

    return cudart, T.CudaGraphs(cudart, stream=7, enqueue=enqueue, name="m.engine")


def test_cuda_graph_is_captured_once_per_shape_and_its_graph_destroyed():
    cudart, graphs = _graphs([True, True, True, True])
    graphs.launch((8, 3, 224, 224))
    graphs.launch((8, 3, 224, 224))  # replay: no new capture
    assert cudart.calls == ["enqueue", "sync", "begin", "enqueue-capturing", "end", "instantiate", "destroy",
                            "launch", "launch"]  # fmt: skip
    assert not cudart.live_graphs  # the cudaGraph_t does not outlive its instantiation
    graphs.capture((1, 3, 224, 224))
    assert (1, 3, 224, 224) in graphs and not cudart.live_graphs
    graphs.close()
    assert cudart.calls.count("exec-destroy") == 2


@pytest.mark.parametrize("failure", [False, RuntimeError("CUDA error inside enqueue")], ids=["returns-false", "raises"])
def test_a_failed_capture_ends_the_capture_and_keeps_nothing(failure):
    cudart, graphs = _graphs([True, failure])
    with pytest.raises(RuntimeError, match="CUDA graph capture|inside enqueue"):
        graphs.launch((8, 3, 224, 224))
    assert not cudart.capturing and "end" in cudart.calls  # the stream is not left capturing
    assert not cudart.live_graphs and (8, 3, 224, 224) not in graphs and "launch" not in cudart.calls


def test_time_batch_captures_before_the_first_timed_sample():
    """The engine runner's time_batch: capture (warm-up) first, then only launches between the events."""
    cudart, graphs = _graphs([True, True])
    events = []

    class Timing(RecordingCudart):
        def cudaEventCreate(self):
            return (CudaError.cudaSuccess, len(events))

        def cudaEventRecord(self, event, stream):
            cudart.calls.append("record")
            return (CudaError.cudaSuccess,)

        def cudaEventSynchronize(self, event):
            return (CudaError.cudaSuccess,)

        def cudaEventElapsedTime(self, start, end):
            return (CudaError.cudaSuccess, 0.5)

        def cudaEventDestroy(self, event):
            return (CudaError.cudaSuccess,)

    runner = object.__new__(T.TrtEngineRunner)  # the real methods, without an engine
    runner._cudart, runner._graphs, runner.cuda_graph, runner._stream = Timing(), graphs, True, 7
    runner._prepare = lambda x: (x, None)
    runner._copy_in = lambda x: None
    runner._shape = (8, 3, 224, 224)
    assert runner.time_batch(None, 2) == [0.5, 0.5]
    first = cudart.calls.index("record")
    assert "instantiate" in cudart.calls[:first]  # captured before timing started
    assert cudart.calls[first:] == ["record", "launch", "record", "record", "launch", "record"]
