"""Runners: one interface over the PyTorch reference, ONNX Runtime and TensorRT engines.

Every runner is called with a numpy array under the ONNX names (input ``input`` float32
``[N, 3, H, W]``, output ``logits`` float32 ``[N, classes]``); FP16 graphs with float16 inputs get
their input cast and their output cast back, so callers always deal in float32.

The runner contract (what :mod:`mixnet_deploy.parity`, :mod:`mixnet_deploy.bench` and the CLI rely
on) is :class:`mixnet_deploy.runner.Runner`; the TensorRT runner is in :mod:`mixnet_deploy.trt_runner`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .engine import ENGINE_SUFFIXES
from .errors import InputError
from .onnx_export import INPUT_NAME, OUTPUT_NAME
from .runner import Runner

# runtime name -> ONNX Runtime execution provider (None: not ONNX Runtime)
RUNTIMES: dict[str, str | None] = {
    "torch": None,
    "ort-cpu": "CPUExecutionProvider",
    "ort-cuda": "CUDAExecutionProvider",
    "ort-trt": "TensorrtExecutionProvider",
    "tensorrt": None,
}
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors")


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise InputError(
            "onnxruntime is not installed: expected `pip install mixnet-deploy[cpu]` (or [gpu] for onnxruntime-gpu)"
        ) from exc
    return onnxruntime


def ort_session(model: bytes | str, providers: tuple[str, ...] = ("CPUExecutionProvider",), threads: int = 0):
    """An ONNX Runtime session on a serialized model or a path, with full graph optimization."""
    ort = import_onnxruntime()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(model, sess_options=opts, providers=list(providers))


def run_ort(session, x: np.ndarray) -> np.ndarray:
    return session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]


def random_inputs(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Seeded standard-normal float32 inputs (the scale of ImageNet-normalized pixels): the one maker of the
    export's verification inputs, parity's random inputs and the benchmarks' inputs."""
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


@torch.no_grad()
def run_torch(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    return model.eval()(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


# ---------------------------------------------------------------- the runner interface


class TorchRunner(Runner):
    """A PyTorch module in eval mode under ``torch.inference_mode`` (CPU, or CUDA with event timing)."""

    runtime = "torch"

    def __init__(self, model: torch.nn.Module, name: str = "pytorch", device: str = "cpu", img_size: int | None = None):
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise InputError(f"device {device!r}: no CUDA device visible to torch; expected cpu")
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.runtime = "torch" if self.device.type == "cpu" else f"torch-{self.device.type}"
        self.name = name if self.device.type == "cpu" else f"{name} ({self.device.type})"
        spec = getattr(model, "spec", None)
        self.precision = "fp32"
        self.input_shape = (None, 3, img_size, img_size)
        self.metadata = {"mixnet.variant": spec.name} if spec is not None else {}
        if img_size:
            self.metadata["mixnet.input_size"] = str(img_size)

    def _forward(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
        return self.model(t)

    def run(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self._forward(x).float().cpu().numpy()

    def time_batch(self, x: np.ndarray, iters: int) -> list[float]:
        """Per-call milliseconds: CUDA events on a GPU (input already on the device), wall clock on a CPU."""
        import time

        out = []
        with torch.inference_mode():
            if self.device.type != "cuda":
                t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
                for _ in range(iters):
                    t0 = time.perf_counter()
                    self.model(t)
                    out.append((time.perf_counter() - t0) * 1e3)
                return out
            t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
            pairs = range(iters)
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in pairs]
            torch.cuda.synchronize(self.device)
            for start, end in events:
                start.record()
                self.model(t)
                end.record()
            torch.cuda.synchronize(self.device)
            return [start.elapsed_time(end) for start, end in events]


def available_runtimes() -> list[str]:
    """The runtimes usable on this machine (ONNX Runtime providers only when installed)."""
    found = ["torch"]
    try:
        providers = set(import_onnxruntime().get_available_providers())
    except InputError:
        providers = set()
    found += [r for r, p in RUNTIMES.items() if p is not None and p in providers]
    try:
        import importlib.util

        if importlib.util.find_spec("tensorrt") is not None:
            found.append("tensorrt")
    except (ImportError, ValueError):
        pass
    return found


def check_runtime(runtime: str) -> str:
    """Validate a runtime name and that it is installed; returns it or raises InputError."""
    if runtime not in RUNTIMES:
        raise InputError(f"runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
    provider = RUNTIMES[runtime]
    if provider is not None:
        ort = import_onnxruntime()
        have = ort.get_available_providers()
        if provider not in have:
            usable = ", ".join(r for r, p in RUNTIMES.items() if p in have) or "none"
            hint = " (install onnxruntime-gpu: pip install mixnet-deploy[gpu])" if runtime != "ort-cpu" else ""
            raise InputError(
                f"runtime {runtime!r}: ONNX Runtime {ort.__version__} has no {provider}{hint}; "
                f"ONNX Runtime runtimes installed here: {usable}"
            )
    return runtime


_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


class OrtRunner(Runner):
    """An ONNX file in ONNX Runtime with one execution provider (with CPU fallback for the GPU ones)."""

    def __init__(self, path: str | os.PathLike, runtime: str = "ort-cpu", threads: int = 0):
        check_runtime(runtime)
        if RUNTIMES[runtime] is None:
            raise InputError(f"runtime {runtime!r} is not an ONNX Runtime runtime: expected ort-cpu/ort-cuda/ort-trt")
        self.path = Path(path)
        if not self.path.is_file():
            what = "is a directory" if self.path.is_dir() else "does not exist"
            raise InputError(f"{str(path)!r} {what}: expected an ONNX file")
        providers = (RUNTIMES[runtime],) if runtime == "ort-cpu" else (RUNTIMES[runtime], "CPUExecutionProvider")
        try:
            self.session = ort_session(str(self.path), providers, threads)
        except Exception as exc:  # ONNX Runtime raises its own exception types for unreadable files
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            why = first[:200]
            raise InputError(f"{self.path}: ONNX Runtime cannot load it ({why}): expected an ONNX model") from None
        self.runtime = runtime
        self.name = f"{self.path.name} [{runtime}]"
        (inp,), outs = self.session.get_inputs(), self.session.get_outputs()
        self.input_name, self.output_name = inp.name, outs[0].name
        self.input_shape = tuple(d if isinstance(d, int) else None for d in inp.shape)
        self.input_dtype = _NP_TYPES.get(inp.type, np.float32)
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.precision = self.metadata.get("mixnet.precision")
        self.providers = self.session.get_providers()
        if self.input_shape and self.input_shape[0] is not None:
            self.max_batch = self.input_shape[0]

    def run(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=self.input_dtype)
        out = self.session.run([self.output_name], {self.input_name: x})[0]
        return out.astype(np.float32, copy=False)

    def describe(self) -> dict:
        return {**super().describe(), "path": str(self.path), "providers": self.providers}


def _torch_from_onnx_metadata(path: Path, img_size: int | None):
    """An unfolded float32 PyTorch model of the variant an ONNX file names, for timing only.

    PyTorch's default init (no checkpoint, no BN statistics pass): latency does not depend on the values.
    """
    import onnx

    from .model import build_model
    from .onnx_export import read_metadata

    meta = read_metadata(onnx.load(str(path), load_external_data=False))
    variant = meta.get("mixnet.variant")
    if variant is None:
        raise InputError(f"{path}: no mixnet.variant metadata: expected an ONNX file written by mixnet-export")
    model = build_model(variant, int(meta.get("mixnet.num_classes", 1000)))
    return model, int(img_size or meta.get("mixnet.input_size", 224)), meta


def make_runner(
    target: str | os.PathLike | torch.nn.Module,
    runtime: str = "auto",
    threads: int = 0,
    img_size: int | None = None,
    **opts,
) -> Runner:
    """One runner for a model file, a variant name or a module.

    ``target``:
    - ``.onnx`` file: ONNX Runtime (``runtime`` ``auto`` = ``ort-cpu``); with ``runtime="torch"`` an
      unfolded PyTorch model of the variant in its metadata, default init (latency only);
    - ``.engine`` / ``.plan``: ``mixnet_deploy.trt_runner.engine_runner(path, **opts)`` (TensorRT);
    - ``.pth`` / ``.pt`` / ``.safetensors`` checkpoint: PyTorch with those weights; a variant name
      (``s``, ``mixnet_m``): PyTorch with default init (latency only);
    - a ``torch.nn.Module``: PyTorch.
    ``threads``: intra-op threads (0 = the runtime's default). ``device="cuda"`` in ``opts`` for PyTorch.
    """
    if isinstance(target, torch.nn.Module):
        if runtime not in ("auto", "torch"):
            raise InputError(f"runtime {runtime!r} for a PyTorch module: expected torch")
        _set_torch_threads(threads)
        return TorchRunner(target, img_size=img_size, **opts)
    text = str(target)
    path = Path(text)
    suffix = path.suffix.lower()
    if runtime != "auto" and runtime not in RUNTIMES:
        raise InputError(f"runtime {runtime!r}: expected auto or one of {', '.join(RUNTIMES)}")
    if suffix in ENGINE_SUFFIXES:
        return _engine_runner(text, runtime, **opts)
    if suffix == ".onnx":
        return _onnx_runner(text, runtime, threads, img_size, **opts)
    if runtime not in ("auto", "torch"):
        raise InputError(f"{text}: runtime {runtime!r} needs an .onnx or .engine file")
    model = _torch_model(text) if suffix in CHECKPOINT_SUFFIXES else _variant_model(text)
    _set_torch_threads(threads)
    return TorchRunner(model, name=f"mixnet_{model.spec.name} [torch]", img_size=img_size or 224, **opts)


def _engine_runner(text: str, runtime: str, **opts) -> Runner:
    path = Path(text)
    if runtime not in ("auto", "tensorrt"):
        raise InputError(f"{text}: a TensorRT engine runs only with runtime tensorrt, not {runtime!r}")
    if not path.is_file():
        raise InputError(f"{text!r} does not exist: expected a TensorRT engine file")
    try:
        from .trt_runner import engine_runner
    except ImportError as exc:
        raise InputError(
            f"{text}: TensorRT engines need mixnet_deploy.trt_runner and TensorRT "
            f"(pip install mixnet-deploy[gpu] on a machine with an NVIDIA GPU): {exc}"
        ) from None
    return engine_runner(path, **opts)


def _onnx_runner(text: str, runtime: str, threads: int, img_size: int | None, **opts) -> Runner:
    path = Path(text)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise InputError(f"{text!r} {what}: expected an ONNX file")
    if runtime == "torch":
        _set_torch_threads(threads)
        model, size, meta = _torch_from_onnx_metadata(path, img_size)
        runner = TorchRunner(model, name=f"mixnet_{model.spec.name} [torch]", img_size=size, **opts)
        runner.metadata = {**meta, "mixnet.precision": "fp32"}
        return runner
    if runtime == "tensorrt":
        raise InputError(f"{text}: runtime tensorrt needs an engine file; for ONNX use ort-trt or build one")
    if opts:
        raise InputError(f"options {sorted(opts)} do not apply to ONNX Runtime")
    return OrtRunner(path, "ort-cpu" if runtime == "auto" else runtime, threads)


def _torch_model(text: str) -> torch.nn.Module:
    from .weights import load_model

    if not Path(text).is_file():
        raise InputError(f"{text!r} does not exist: expected a checkpoint file")
    return load_model(None, Path(text))[0]


def _variant_model(text: str) -> torch.nn.Module:
    """Default init: a variant name is for timing, not for outputs."""
    from .arch import normalize_variant
    from .model import build_model

    try:
        normalize_variant(text)
    except ValueError:
        raise InputError(
            f"model {text!r}: expected an .onnx, .engine/.plan or checkpoint file, or a variant name (s, m, l)"
        ) from None
    return build_model(text)


def _set_torch_threads(threads: int) -> None:
    if threads:
        torch.set_num_threads(threads)
