"""Runners: one interface over the PyTorch reference, ONNX Runtime and TensorRT engines.

Every runner is called with a numpy array under the ONNX names (input ``input`` float32
``[N, 3, H, W]``, or ``image`` uint8 ``[N, H, W, 3]`` for ``--input-format uint8-nhwc``; output ``logits``
float32 ``[N, classes]``, the first output); FP16 graphs with float16 inputs get
their input cast and their output cast back, so callers always deal in float32.

The runner contract (what :mod:`mixnet_deploy.parity`, :mod:`mixnet_deploy.bench` and the CLI rely
on) is :class:`mixnet_deploy.runner_contract.Runner`; the TensorRT runner is in :mod:`mixnet_deploy.trt_runner`.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch

from . import precision_table
from .arch import DEFAULT_IMG_SIZE
from .batching import BatchProfile
from .contract import (
    ENGINE_SUFFIXES,
    FLOAT_INPUT,
    INPUT_NAME,
    META_INPUT_SIZE,
    META_NUM_CLASSES,
    META_PRECISION,
    META_VARIANT,
    ONNX_SUFFIX,
    OUTPUT_NAME,
    PIXEL_INPUT,
    input_format_of,
    input_name,
    onnx_stem,
    shape_string,
)
from .errors import InputError
from .openvino_runner import HINTS as OPENVINO_HINTS
from .openvino_runner import OpenVinoRunner, import_openvino
from .runner_contract import Runner, check_io, checked_metadata

log = logging.getLogger("mixnet_deploy")

# runtime name -> ONNX Runtime execution provider (None: not ONNX Runtime); openvino / openvino-bf16: OpenVINO's CPU
# plugin with f32 pinned / in bf16 (openvino_runner.py)
RUNTIMES: Mapping[str, str | None] = MappingProxyType({
    "torch": None,
    "ort-cpu": "CPUExecutionProvider",
    "ort-cuda": "CUDAExecutionProvider",
    "ort-trt": "TensorrtExecutionProvider",
    "tensorrt": None,
    **dict.fromkeys(OPENVINO_HINTS),
})
OPENVINO_RUNTIMES = tuple(OPENVINO_HINTS)
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors")


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise InputError(
            "onnxruntime is not installed: expected `pip install mixnet-deploy[cpu]` (or [gpu] for onnxruntime-gpu)"
        ) from exc
    return onnxruntime


def ort_session(model: bytes | str, providers: tuple = ("CPUExecutionProvider",), threads: int = 0):
    """An ONNX Runtime session on a serialized model or a path, with full graph optimization.

    ``providers``: names, or ``(name, {option: value})`` pairs, in ONNX Runtime's order of preference.
    """
    ort = import_onnxruntime()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(model, sess_options=opts, providers=list(providers))


def capture_native_output(fn):
    """``(fn(), text)``: what ``fn`` wrote to the process's stdout/stderr file descriptors, kept off the terminal.

    ONNX Runtime's C++ logger and its Python "EP Error ... Falling back" notice write there directly; the
    text says which library a GPU provider could not load, and the caller turns it into one line.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    with tempfile.TemporaryFile(mode="w+b") as sink:
        try:
            for fd in saved:
                os.dup2(sink.fileno(), fd)
            result = fn()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
        sink.seek(0)
        return result, sink.read().decode(errors="replace")


# "Failed to load library .../libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: cannot open ..."
_LOAD_FAILURE = re.compile(r"libonnxruntime_providers_(\w+)\.so with error: (\S+?): cannot open shared object file")
_REQUIRES = re.compile(r"Require ([^.]*\.\*(?: and [^.]*\.\*)?)")  # "Require cuDNN 9.* and CUDA 13.*"
_PROVIDER_LIBRARY = {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "tensorrt"}


def check_session_provider(session, runtime: str, ort_log: str = "", ort_version: str = "?") -> None:
    """Refuse a session whose first provider is not the one ``runtime`` asked for (InputError, one line).

    ONNX Runtime lists CUDA/TensorRT in ``get_available_providers()`` when compiled in, even where their
    libraries are missing; creating the session then logs a warning and silently runs on the CPU.
    ``session.get_providers()`` is what the session really has; ``ort_log`` (its captured log) names the
    library that could not be loaded.
    """
    wanted = RUNTIMES[runtime]
    got = list(session.get_providers())
    if got and got[0] == wanted:
        return
    failures = dict((lib, missing) for lib, missing in _LOAD_FAILURE.findall(ort_log))
    missing = failures.get(_PROVIDER_LIBRARY.get(wanted, ""))
    why = f"{wanted} cannot load {missing}" if missing else f"{wanted} could not be created"
    needs = _REQUIRES.search(ort_log)
    hint = f" (onnxruntime-gpu {ort_version} needs {needs.group(1)})" if needs else ""
    raise InputError(
        f"ONNX Runtime {ort_version} would run on {got[0] if got else 'no provider'}, not {wanted}: {why}{hint}; "
        "expected the provider's CUDA/TensorRT libraries on the library path, or --runtime ort-cpu",
        field="runtime",
        value=runtime,
    )


def ort_trt_options(
    model_path: Path, precision: str | None, batch: BatchProfile, img_size: int, cache: bool = True,
    input_format: str = FLOAT_INPUT,
) -> dict[str, str]:  # fmt: skip
    """TensorRT execution provider options for one ONNX file (names as in onnxruntime-gpu 1.31's provider).

    Precision from the file's ``mixnet.precision`` (ONNX Runtime's TensorRT provider builds weakly typed:
    FP16 / INT8 kernels need the flags; an INT8 file is INT8 Q/DQ over an FP16 graph, so it gets both);
    one optimization profile from ``batch``; engines and the timing
    cache in ``<model stem>.ort-trt-cache/`` beside the model, so a second run does not rebuild.
    """
    name = input_name(input_format)
    shapes = {k: shape_string(v, name) for k, v in batch.shapes(img_size, input_format).items()}
    wanted = precision_table.weak_typing_flags(precision) if precision in precision_table.PRECISIONS else ()
    opts = {  # the precision table's builder flags (fp16 / int8) are the provider's trt_<flag>_enable
        f"trt_{row.builder_flag}_enable": str(row.builder_flag in wanted)
        for row in precision_table.PRECISIONS.values()
        if row.builder_flag
    }
    opts.update({
        "trt_profile_min_shapes": shapes["min"],
        "trt_profile_opt_shapes": shapes["opt"],
        "trt_profile_max_shapes": shapes["max"],
    })  # fmt: skip
    if cache:
        folder = str(ort_trt_cache_dir(model_path))
        opts.update(
            trt_engine_cache_enable="True",
            trt_engine_cache_path=folder,
            trt_timing_cache_enable="True",
            trt_timing_cache_path=folder,
        )
    return opts


def ort_trt_cache_dir(model_path: Path) -> Path:
    """``DIR/mixnet_s.fp16.onnx`` -> ``DIR/mixnet_s.fp16.ort-trt-cache``, the TensorRT provider's engines."""
    return model_path.with_name(f"{onnx_stem(model_path.name)}.ort-trt-cache")


def run_ort(session, x: np.ndarray) -> np.ndarray:
    return session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]


def random_inputs(shape: tuple[int, ...], seed: int | np.random.Generator) -> np.ndarray:
    """Seeded standard-normal float32 inputs (the scale of ImageNet-normalized pixels): the one maker of the
    export's verification inputs, parity's random inputs and the benchmarks' inputs. With a Generator,
    consecutive calls continue one stream: batches of it are the values of one call."""
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
        self.metadata = {META_VARIANT: spec.name} if spec is not None else {}
        if img_size:
            self.metadata[META_INPUT_SIZE] = str(img_size)

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
        if importlib.util.find_spec("openvino") is not None:
            found += OPENVINO_RUNTIMES
    except (ImportError, ValueError):
        pass
    return found


def check_runtime(runtime: str) -> str:
    """Validate a runtime name and that it is installed; returns it or raises InputError."""
    if runtime not in RUNTIMES:
        raise InputError(f"expected one of {', '.join(RUNTIMES)}", field="runtime", value=runtime)
    if runtime in OPENVINO_RUNTIMES:
        import_openvino()
    provider = RUNTIMES[runtime]
    if provider is not None:
        ort = import_onnxruntime()
        have = ort.get_available_providers()
        if provider not in have:
            usable = ", ".join(r for r, p in RUNTIMES.items() if p in have) or "none"
            hint = " (install onnxruntime-gpu: pip install mixnet-deploy[gpu])" if runtime != "ort-cpu" else ""
            expected = f"ONNX Runtime {ort.__version__} has no {provider}{hint}; ONNX Runtime runtimes installed here: "
            raise InputError(expected + usable, field="runtime", value=runtime)
    return runtime


_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
             "tensor(uint8)": np.uint8}  # FLOAT_TYPES, and uint8-nhwc pixels  # fmt: skip


def ort_providers(path: Path, runtime: str, batch: BatchProfile) -> tuple:
    """ONNX Runtime's provider list for ``runtime``: ort-trt = TensorRT (with options), then CUDA, then CPU."""
    if runtime == "ort-cpu":
        return ("CPUExecutionProvider",)
    if runtime == "ort-cuda":
        return ("CUDAExecutionProvider", "CPUExecutionProvider")
    import onnx

    from .onnx_export import read_metadata

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends for files that are not ONNX
        raise InputError(f"{path}: cannot read it as ONNX ({str(exc).strip()[:200]}): expected an ONNX model") from None
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    meta = read_metadata(model)
    img_size = int(meta.get(META_INPUT_SIZE) or (dims[2] if len(dims) == 4 and dims[2] else DEFAULT_IMG_SIZE))
    try:
        ort_trt_cache_dir(path).mkdir(exist_ok=True)
        cache = True
    except OSError as exc:
        log.warning("ort-trt: no engine cache beside %s (%s); every run rebuilds", path.name, exc)
        cache = False
    options = ort_trt_options(path, meta.get(META_PRECISION), batch, img_size, cache, input_format_of(meta))
    return (("TensorrtExecutionProvider", options), "CUDAExecutionProvider", "CPUExecutionProvider")


class OrtRunner(Runner):
    """An ONNX file in ONNX Runtime with one execution provider (with CPU fallback for the GPU ones)."""

    def __init__(
        self, path: str | os.PathLike, runtime: str = "ort-cpu", threads: int = 0, batch: BatchProfile | None = None
    ):
        """``batch``: the batch sizes ``ort-trt`` builds its TensorRT profile for (default 1:8:32)."""
        check_runtime(runtime)
        if RUNTIMES[runtime] is None:
            expected = "expected ort-cpu, ort-cuda or ort-trt"
            raise InputError(expected, field="runtime", value=runtime, problem="is not an ONNX Runtime runtime")
        self.path = Path(path)
        if not self.path.is_file():
            what = "is a directory" if self.path.is_dir() else "does not exist"
            raise InputError(f"{str(path)!r} {what}: expected an ONNX file")
        providers = ort_providers(self.path, runtime, batch or BatchProfile())
        try:
            if runtime == "ort-cpu":
                self.session, ort_log = ort_session(str(self.path), providers, threads), ""
            else:  # keep ONNX Runtime's fallback warnings off the terminal; check_session_provider reads them
                self.session, ort_log = capture_native_output(lambda: ort_session(str(self.path), providers, threads))
        except Exception as exc:  # ONNX Runtime raises its own exception types for unreadable files
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            why = first[:200]
            raise InputError(f"{self.path}: ONNX Runtime cannot load it ({why}): expected an ONNX model") from None
        if ort_log.strip():
            log.debug("ONNX Runtime while creating the %s session:\n%s", runtime, ort_log.rstrip())
        try:
            check_session_provider(self.session, runtime, ort_log, import_onnxruntime().__version__)
        except InputError:
            cache = ort_trt_cache_dir(self.path)
            if runtime == "ort-trt" and cache.is_dir() and not any(cache.iterdir()):
                cache.rmdir()  # made for this session; leave nothing behind when it is refused
            raise
        self.runtime = runtime
        self.name = f"{self.path.name} [{runtime}]"
        self.metadata = checked_metadata(self.session.get_modelmeta().custom_metadata_map, str(self.path))
        check_io(str(self.path), self.session.get_inputs(), self.session.get_outputs(), self.metadata)
        (inp,), outs = self.session.get_inputs(), self.session.get_outputs()
        self.input_name, self.output_name = inp.name, outs[0].name
        self.input_shape = tuple(d if isinstance(d, int) else None for d in inp.shape)
        self.input_dtype = _NP_TYPES[inp.type]
        self.input_format = PIXEL_INPUT if inp.type == "tensor(uint8)" else FLOAT_INPUT
        self.precision = self.metadata.get(META_PRECISION)
        self.providers = self.session.get_providers()
        if self.input_shape and self.input_shape[0] is not None:
            self.max_batch = self.input_shape[0]

    def run(self, x: np.ndarray) -> np.ndarray:
        if self.input_format == PIXEL_INPUT and x.dtype != np.uint8:  # a cast would wrap and truncate silently
            raise InputError(f"{self.name}: {x.dtype} input: expected uint8 pixels [N, H, W, 3] (a uint8-nhwc model)")
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

    meta = checked_metadata(read_metadata(onnx.load(str(path), load_external_data=False)), str(path))
    variant = meta.get(META_VARIANT)
    if variant is None:
        raise InputError(f"{path}: no mixnet.variant metadata: expected an ONNX file written by mixnet-export")
    model = build_model(variant, int(meta.get(META_NUM_CLASSES, 1000)))
    return model, int(img_size or meta.get(META_INPUT_SIZE, DEFAULT_IMG_SIZE)), meta


def make_runner(
    target: str | os.PathLike | torch.nn.Module,
    runtime: str = "auto",
    threads: int = 0,
    img_size: int | None = None,
    batch: BatchProfile | None = None,
    **opts,
) -> Runner:
    """One runner for a model file, a variant name or a module.

    ``target``:
    - ``.onnx`` file: ONNX Runtime (``runtime`` ``auto`` = ``ort-cpu``) or OpenVINO (``openvino[-bf16]``);
      with ``runtime="torch"`` an unfolded PyTorch model of the variant in its metadata, default init (latency only);
    - ``.engine`` / ``.plan``: ``mixnet_deploy.trt_runner.engine_runner(path, **opts)`` (TensorRT);
    - ``.pth`` / ``.pt`` / ``.safetensors`` checkpoint: PyTorch with those weights; a variant name
      (``s``, ``mixnet_m``): PyTorch with default init (latency only);
    - a ``torch.nn.Module``: PyTorch.
    ``threads``: intra-op threads (0 = the runtime's default). ``batch``: the batch sizes the caller will run
    (``ort-trt`` builds its TensorRT profile for them). ``device="cuda"`` in ``opts`` for PyTorch.
    """
    if isinstance(target, torch.nn.Module):
        if runtime not in ("auto", "torch"):
            raise InputError("a PyTorch module runs in torch: expected torch", field="runtime", value=runtime)
        _set_torch_threads(threads)
        return TorchRunner(target, img_size=img_size, **opts)
    text = str(target)
    path = Path(text)
    suffix = path.suffix.lower()
    if runtime != "auto" and runtime not in RUNTIMES:
        raise InputError(f"expected auto or one of {', '.join(RUNTIMES)}", field="runtime", value=runtime)
    if suffix in ENGINE_SUFFIXES:
        return _engine_runner(text, runtime, **opts)
    if suffix == ONNX_SUFFIX:
        return _onnx_runner(text, runtime, threads, img_size, batch, **opts)
    if runtime not in ("auto", "torch"):
        problem = f"needs an .onnx or .engine file, not {text}"
        raise InputError("expected auto or torch for it", field="runtime", value=runtime, problem=problem)
    model = _torch_model(text) if suffix in CHECKPOINT_SUFFIXES else _variant_model(text)
    _set_torch_threads(threads)
    return TorchRunner(model, name=f"{model.spec.model_name} [torch]", img_size=img_size or DEFAULT_IMG_SIZE, **opts)


def _engine_runner(text: str, runtime: str, **opts) -> Runner:
    path = Path(text)
    if runtime not in ("auto", "tensorrt"):
        problem = f"cannot run {text} (a TensorRT engine)"
        raise InputError("expected tensorrt or auto for it", field="runtime", value=runtime, problem=problem)
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


def _onnx_runner(
    text: str, runtime: str, threads: int, img_size: int | None, batch: BatchProfile | None, **opts
) -> Runner:
    path = Path(text)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise InputError(f"{text!r} {what}: expected an ONNX file")
    if runtime == "torch":
        _set_torch_threads(threads)
        model, size, meta = _torch_from_onnx_metadata(path, img_size)
        runner = TorchRunner(model, name=f"{model.spec.model_name} [torch]", img_size=size, **opts)
        runner.metadata = {**meta, META_PRECISION: "fp32"}
        return runner
    if runtime == "tensorrt":
        expected = "expected ort-trt for an ONNX file (or build an engine)"
        problem = f"needs an engine file, not {text}"
        raise InputError(expected, field="runtime", value=runtime, problem=problem)
    if opts:
        raise InputError(f"options {sorted(opts)} do not apply to ONNX Runtime or OpenVINO")
    if runtime in OPENVINO_RUNTIMES:
        return OpenVinoRunner(path, runtime, threads)
    return OrtRunner(path, "ort-cpu" if runtime == "auto" else runtime, threads, batch)


def _torch_model(text: str) -> torch.nn.Module:
    from .weights import load_model

    if not Path(text).is_file():
        raise InputError(f"{text!r} does not exist: expected a checkpoint file")
    return load_model(None, Path(text))[0]


def _variant_model(text: str) -> torch.nn.Module:
    """Default init: a variant name is for timing, not for outputs."""
    from .arch import VARIANT_CHOICES, normalize_variant
    from .model import build_model

    try:
        normalize_variant(text)
    except ValueError:
        raise InputError(
            f"model {text!r}: expected an .onnx, .engine/.plan or checkpoint file, "
            f"or a variant name ({VARIANT_CHOICES})"
        ) from None
    return build_model(text)


def _set_torch_threads(threads: int) -> None:
    if threads:
        torch.set_num_threads(threads)
