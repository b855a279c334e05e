"""The TensorRT engine runner: an engine behind the runner contract of :mod:`mixnet_deploy.runtimes`.

Beside the other runners (``runtimes.py``: PyTorch, ONNX Runtime); :func:`mixnet_deploy.runtimes.make_runner`
imports it for ``.engine`` / ``.plan`` files. The engine's manifest is checked against the running system
first (:func:`mixnet_deploy.engine_build.verify_engine_file`). ``tensorrt``, ``polygraphy`` and ``cuda-python``
are imported when a runner is made, so ``import mixnet_deploy.trt_runner`` works without them.

What the code relies on: TensorRT ``samples/python/common_runtime.py``: cuda-python ``cudart`` calls return
``(err, value)``; ``engine.get_tensor_name/get_tensor_mode/get_tensor_dtype/get_tensor_profile_shape``,
``context.set_input_shape/set_tensor_address/execute_async_v3(stream)``; CUDA graphs captured per input shape
after one plain enqueue (TensorRT's deferred updates), see :class:`CudaGraphs`. The GPU tests in
tests/test_engine_gpu.py run it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .contract import (
    CLASSES_NAME,
    FLOAT_INPUT,
    IMAGE_NAME,
    INPUT_NAME,
    OUTPUT_NAME,
    PIXEL_INPUT,
    SCORES_NAME,
)
from .engine_build import source_onnx, verify_engine_file
from .errors import InputError
from .gpu_stack import cuda_call, import_cudart, import_tensorrt
from .runner_contract import Runner


class CudaGraphs:
    """One CUDA graph per input shape, captured from ``enqueue`` on ``stream`` and replayed with cudaGraphLaunch.

    ``enqueue()`` is one inference (``context.execute_async_v3``) returning its success. Capture: one plain
    enqueue first (TensorRT finishes deferred work after a shape change outside the capture), then the
    captured one, whose return is checked; the capture is ended in ``finally`` so a failure never leaves the
    stream capturing; the ``cudaGraph_t`` is destroyed once instantiated (the executable graph keeps what it
    needs; TensorRT ``samples/common/sampleInference.cpp`` and CUDA's graph samples do the same).
    """

    def __init__(self, cudart, stream, enqueue, name: str = "engine"):
        self._cudart, self._stream, self._enqueue, self.name = cudart, stream, enqueue, name
        self._execs: dict[tuple, object] = {}

    def __contains__(self, key) -> bool:
        return key in self._execs

    def capture(self, key) -> None:
        """Capture the graph of ``key`` (an input shape) unless it is there. RuntimeError when anything fails."""
        if key in self._execs:
            return
        cudart = self._cudart
        if not self._enqueue():
            raise RuntimeError(f"{self.name}: execute_async_v3 failed (before CUDA graph capture of {key})")
        cuda_call(cudart.cudaStreamSynchronize(self._stream))
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        cuda_call(cudart.cudaStreamBeginCapture(self._stream, mode))
        ok = False
        try:
            ok = bool(self._enqueue())
        finally:  # always end the capture; on failure drop what was captured
            err, graph = cudart.cudaStreamEndCapture(self._stream)
            if (not ok or getattr(err, "value", err) != 0) and graph:
                cudart.cudaGraphDestroy(graph)
        if not ok:
            raise RuntimeError(f"{self.name}: execute_async_v3 failed during CUDA graph capture of {key}")
        cuda_call((err, graph))
        try:
            self._execs[key] = cuda_call(cudart.cudaGraphInstantiate(graph, 0))
        finally:
            cudart.cudaGraphDestroy(graph)

    def launch(self, key) -> None:
        self.capture(key)
        cuda_call(self._cudart.cudaGraphLaunch(self._execs[key], self._stream))

    def close(self) -> None:
        for exec_graph in self._execs.values():
            self._cudart.cudaGraphExecDestroy(exec_graph)
        self._execs.clear()


class TrtEngineRunner(Runner):
    """A TensorRT engine behind the runner contract of :mod:`mixnet_deploy.runtimes`.

    Binds by tensor name, sets the input shape per batch, keeps device buffers for the profile's max batch,
    times with CUDA events, and optionally replays a CUDA graph captured per batch size.
    """

    runtime = "tensorrt"

    def __init__(self, path: str | Path, cuda_graph: bool = False, check_manifest: bool = True):
        path = Path(path)
        self.path = path
        self.manifest = verify_engine_file(path) if check_manifest else {}
        trt = import_tensorrt()
        from polygraphy.backend.trt import EngineFromBytes

        self._trt = trt
        self._cudart = cudart = import_cudart()
        self.engine = EngineFromBytes(path.read_bytes())()
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        served = ([INPUT_NAME], [IMAGE_NAME]), ([OUTPUT_NAME], [OUTPUT_NAME, SCORES_NAME, CLASSES_NAME])
        if inputs not in served[0] or outputs not in served[1]:
            raise InputError(f"{path.name}: tensors {inputs} -> {outputs}, expected {served[0]} -> {served[1]}")
        self.input_name = name = inputs[0]
        self.input_format = PIXEL_INPUT if name == IMAGE_NAME else FLOAT_INPUT
        self._in_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
        self._out_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(OUTPUT_NAME)))
        lo, _, hi = (tuple(s) for s in self.engine.get_tensor_profile_shape(name, 0))
        self.min_batch, self.max_batch = lo[0], hi[0]
        self.input_shape = (None if lo[0] != hi[0] else lo[0], *hi[1:])
        self.context.set_input_shape(name, hi)
        self.precision = self.manifest.get("precision")
        source = source_onnx(path, self.manifest)
        self.metadata = _onnx_metadata(source) if source is not None else {}
        self.name = f"{path.name} [tensorrt]"
        self.cuda_graph = cuda_graph
        self._stream = cuda_call(cudart.cudaStreamCreate())
        self._d_in = cuda_call(cudart.cudaMalloc(int(np.prod(hi)) * self._in_dtype.itemsize))
        self.context.set_tensor_address(name, int(self._d_in))
        self._d_outs = {}  # logits first; scores and classes (--top-k) need addresses too, run() reads logits
        for out in outputs:
            size = int(np.prod(tuple(self.context.get_tensor_shape(out))))
            item = np.dtype(trt.nptype(self.engine.get_tensor_dtype(out))).itemsize
            self._d_outs[out] = cuda_call(cudart.cudaMalloc(size * item))
            self.context.set_tensor_address(out, int(self._d_outs[out]))
        self._d_out = self._d_outs[OUTPUT_NAME]
        self._graphs = CudaGraphs(cudart, self._stream, self._execute, path.name)
        self._shape: tuple | None = None

    # -- helpers
    def _prepare(self, x: np.ndarray) -> tuple[np.ndarray, tuple]:
        if self.input_format == PIXEL_INPUT and x.dtype != np.uint8:  # a cast would wrap and truncate silently
            raise InputError(f"{self.name}: {x.dtype} input: expected uint8 pixels [N, H, W, 3] (a uint8-nhwc model)")
        x = np.ascontiguousarray(x, dtype=self._in_dtype)
        if x.ndim != 4 or not self.min_batch <= x.shape[0] <= self.max_batch:
            raise InputError(
                f"{self.path.name}: input shape {x.shape}: expected {list(self.input_shape)} with "
                f"{self.min_batch} <= N <= {self.max_batch} (the engine's profile)"
            )
        if x.shape != self._shape:
            if not self.context.set_input_shape(self.input_name, x.shape):
                raise InputError(f"{self.path.name}: input shape {x.shape} is outside the engine's profile")
            self._shape = x.shape
        return x, tuple(self.context.get_tensor_shape(OUTPUT_NAME))

    def _execute(self) -> bool:
        return bool(self.context.execute_async_v3(int(self._stream)))

    def _enqueue(self) -> None:
        """One inference on the stream: the CUDA graph of this shape (captured on first use), or execute_async_v3."""
        if self.cuda_graph:
            self._graphs.launch(self._shape)
        elif not self._execute():
            raise RuntimeError(f"{self.path.name}: execute_async_v3 failed")

    def _copy_in(self, x: np.ndarray) -> None:
        kind = self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        cuda_call(self._cudart.cudaMemcpyAsync(self._d_in, x.ctypes.data, x.nbytes, kind, self._stream))

    # -- the runner contract
    def run(self, x: np.ndarray) -> np.ndarray:
        cudart = self._cudart
        x, out_shape = self._prepare(x)
        out = np.empty(out_shape, dtype=self._out_dtype)
        self._copy_in(x)
        self._enqueue()
        kind = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        cuda_call(cudart.cudaMemcpyAsync(out.ctypes.data, self._d_out, out.nbytes, kind, self._stream))
        cuda_call(cudart.cudaStreamSynchronize(self._stream))
        return out.astype(np.float32, copy=False)

    def time_batch(self, x: np.ndarray, iters: int) -> list[float]:
        """Device milliseconds per inference (CUDA events around each enqueue; input copied once, not timed)."""
        cudart = self._cudart
        x, _ = self._prepare(x)
        self._copy_in(x)
        if self.cuda_graph:  # capture now, as warm-up: not inside the first timed sample of a new shape
            self._graphs.capture(self._shape)
        start, end = cuda_call(cudart.cudaEventCreate()), cuda_call(cudart.cudaEventCreate())
        times = []
        try:
            for _ in range(int(iters)):
                cuda_call(cudart.cudaEventRecord(start, self._stream))
                self._enqueue()
                cuda_call(cudart.cudaEventRecord(end, self._stream))
                cuda_call(cudart.cudaEventSynchronize(end))
                times.append(float(cuda_call(cudart.cudaEventElapsedTime(start, end))))
        finally:
            cudart.cudaEventDestroy(start)
            cudart.cudaEventDestroy(end)
        return times

    def describe(self) -> dict:
        return {**super().describe(), "cuda_graph": self.cuda_graph, "manifest": dict(self.manifest.get("system", {}))}

    def close(self) -> None:
        cudart = getattr(self, "_cudart", None)
        if cudart is None:
            return
        self._graphs.close()
        for ptr in (self._d_in, *self._d_outs.values()):
            cudart.cudaFree(ptr)
        cudart.cudaStreamDestroy(self._stream)
        self._cudart = None


def _onnx_metadata(onnx_path: Path) -> dict[str, str]:
    """The ``mixnet.*`` metadata of the engine's source ONNX."""
    import onnx

    from .onnx_export import read_metadata

    return read_metadata(onnx.load(str(onnx_path), load_external_data=False))


RUNNER_OPTIONS = ("cuda_graph", "check_manifest")


def engine_runner(path: str | Path, **opts) -> TrtEngineRunner:
    """The entry point :func:`mixnet_deploy.runtimes.make_runner` calls for ``.engine`` / ``.plan`` files."""
    unknown = sorted(set(opts) - set(RUNNER_OPTIONS))
    if unknown:
        raise InputError(f"engine runner options {unknown}: expected only {', '.join(RUNNER_OPTIONS)}")
    return TrtEngineRunner(path, **opts)
