"""TensorRT engines: build (strongly typed, dynamic batch), manifest, and a runner.

Data flow: precision ONNX (``mixnet_s.fp16.onnx``) -> ``build_engine`` -> ``mixnet_s.fp16.engine`` plus
``mixnet_s.fp16.engine.json`` (the manifest). Loading an engine (``engine_runner``, bench, parity, Triton)
checks that manifest against the running system first.

Everything up to the TensorRT call is plain Python, tested on a CPU: profile shapes, option checks,
manifest building and checking, the precision classification of the engine inspector's output. The
TensorRT call itself is thin and built on Polygraphy's loaders; ``tensorrt``, ``polygraphy`` and
``cuda-python`` are imported inside functions, so ``import mixnet_deploy.engine`` works without them.

What the TensorRT code relies on (read, not guessed; the GPU tests in tests/test_engine_gpu.py run it):

- Polygraphy 0.53 ``polygraphy/backend/trt/loader.py``: ``NetworkFromOnnxPath(path, strongly_typed=...)``
  (sets ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``), ``EngineBytesFromNetwork(network, config=callable)``
  where ``config`` is any ``callable(builder, network) -> IBuilderConfig``, ``EngineFromBytes``.
- Polygraphy ``polygraphy/backend/trt/config.py``: ``CreateConfig(profiles=, memory_pool_limits=,
  load_timing_cache=, hardware_compatibility_level=, version_compatible=, profiling_verbosity=, fp16=, int8=)``.
  Its ``use_dla`` always picks DLA core 0 and, on TensorRT < 11, sets PREFER_PRECISION_CONSTRAINTS, which a
  strongly typed network rejects; so DLA is set in our config callable instead.
- TensorRT docs "Strongly Typed Networks for DLA" (11.x): FP16/INT8/PREFER/OBEY_PRECISION flags are not
  valid with strong typing; from 11.0 all networks are strongly typed and the STRONGLY_TYPED flag is
  deprecated and ignored. /work/shared/reference/DEPLOY.md: 10.x has STRONGLY_TYPED; 8.6/9 need the
  FP16/INT8 builder flags.
- TensorRT docs "Engine Inspector": ``engine.create_engine_inspector()``, ``inspector.execution_context =
  context``, ``get_engine_information(trt.LayerInformationFormat.JSON)``; detail needs
  ``ProfilingVerbosity.DETAILED``. Public inspector dumps show per-tensor ``"Format/Datatype"`` strings
  ("Row major linear FP16 format", "Thirty-two wide channel vectorized row major Int8 format", "Float",
  "Half") and "N/A due to dynamic shapes" when no execution context with input shapes is attached.
- TensorRT ``samples/python/common_runtime.py``: cuda-python ``cudart`` calls return ``(err, value)``;
  ``engine.get_tensor_name/get_tensor_mode/get_tensor_dtype/get_tensor_profile_shape``,
  ``context.set_input_shape/set_tensor_address/execute_async_v3(stream)``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from .atomic import write_bytes, write_json
from .batching import BatchProfile
from .errors import InputError, VerificationError
from .onnx_export import INPUT_NAME, OUTPUT_NAME
from .runtimes import Runner

log = logging.getLogger("mixnet_deploy")

PRECISIONS = ("fp32", "fp16", "int8")
MANIFEST_SCHEMA = "mixnet-deploy/engine-manifest/1"
L4T_RELEASE_FILE = Path("/etc/nv_tegra_release")
INSTALL_HINT = (
    "install it with `pip install 'mixnet-deploy[gpu]'` on a machine with an NVIDIA GPU and driver "
    "(Jetson: JetPack's python3-libnvinfer), or use --engine skip / --trtexec to build elsewhere"
)
# Layers that only move or reinterpret data; their tensor formats say nothing about compute precision.
_BOOKKEEPING_LAYERS = frozenset({"Reformat", "NoOp", "Shuffle", "Constant", "Identity", "Cast"})


# ---------------------------------------------------------------- options (CPU)


@dataclass(frozen=True)
class EngineOptions:
    """How engines are built; one set per run, shared by every precision."""

    batch: BatchProfile = BatchProfile()
    img_size: int = 224
    workspace_mib: int | None = None  # None: TensorRT's default (all device memory)
    timing_cache: Path | None = None  # loaded when present, saved after every build
    dla_core: int | None = None  # Jetson Orin: DLA core with GPU fallback; needs a static batch
    hardware_compat: bool = False  # HardwareCompatibilityLevel.AMPERE_PLUS
    version_compat: bool = False  # BuilderFlag.VERSION_COMPATIBLE


def check_engine_options(opts: EngineOptions) -> EngineOptions:
    """Refuse option combinations TensorRT would reject later (or silently ignore). InputError, one line."""
    if opts.workspace_mib is not None and (not isinstance(opts.workspace_mib, int) or opts.workspace_mib <= 0):
        raise InputError(f"--workspace {opts.workspace_mib!r}: expected a positive number of MiB, e.g. 1024")
    if opts.dla_core is not None:
        if not isinstance(opts.dla_core, int) or opts.dla_core < 0:
            raise InputError(f"--dla-core {opts.dla_core!r}: expected a DLA core index 0 or 1 (Jetson Orin)")
        if not opts.batch.is_static:
            raise InputError(
                f"--dla-core {opts.dla_core} with --batch {opts.batch}: DLA needs static shapes, "
                f"expected one batch size, e.g. --batch {opts.batch.opt}"
            )
        if opts.hardware_compat or opts.version_compat:
            raise InputError(
                f"--dla-core {opts.dla_core} with --hardware-compat/--version-compat: DLA engines are tied to "
                "their device and TensorRT version; expected one or the other"
            )
    if opts.timing_cache is not None and Path(opts.timing_cache).is_dir():
        raise InputError(f"--timing-cache {str(opts.timing_cache)!r} is a directory: expected a file (new or existing)")
    return opts


def profile_shapes(batch: BatchProfile, img_size: int) -> dict[str, dict[str, list[int]]]:
    """The optimization profile as ``{"input": {"min": [1,3,S,S], "opt": [...], "max": [...]}}``."""
    return {INPUT_NAME: {k: list(v) for k, v in batch.shapes(img_size).items()}}


def engine_path_for(onnx_path: str | Path, precision: str) -> Path:
    """``DIR/mixnet_s.onnx`` (fp32) -> ``DIR/mixnet_s.fp32.engine``; ``x.fp16.onnx`` -> ``x.fp16.engine``."""
    onnx_path = Path(onnx_path)
    stem = onnx_path.name[: -len(".onnx")] if onnx_path.name.endswith(".onnx") else onnx_path.stem
    if stem.endswith(f".{precision}"):
        stem = stem[: -len(precision) - 1]
    return onnx_path.with_name(f"{stem}.{precision}.engine")


def manifest_path_for(engine_path: str | Path) -> Path:
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- the running system


def read_l4t_release(path: str | Path = L4T_RELEASE_FILE) -> str | None:
    """Jetson's L4T release from ``/etc/nv_tegra_release`` ("# R36 (release), REVISION: 4.0, ..." -> "R36.4.0")."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return None
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"R{m.group(1)}.{m.group(2)}" if m else text.strip().splitlines()[0][:80] or None


def _import_tensorrt():
    try:
        import tensorrt
    except ImportError:
        raise InputError(f"TensorRT is not installed (Python module `tensorrt`): {INSTALL_HINT}") from None
    return tensorrt


def _import_cudart():
    """cuda-python's runtime bindings: ``cuda.bindings.runtime`` (>= 12.8) or the older ``cuda.cudart``."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            raise InputError(f"cuda-python is not installed (module `cuda`): {INSTALL_HINT}") from None
    return cudart


def _cuda_call(result):
    """cuda-python returns ``(err, *values)``; raise on an error, return the value(s)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if getattr(err, "value", err) != 0:  # cudaError_t.cudaSuccess == 0
        raise RuntimeError(f"CUDA error {err}")
    return values[0] if len(values) == 1 else tuple(values) if values else None


def gpu_stack_status() -> tuple[bool, str]:
    """(True, "") when TensorRT, Polygraphy, cuda-python and a CUDA device are all present, else (False, why)."""
    for module, what in (("tensorrt", "TensorRT"), ("polygraphy", "Polygraphy"), ("cuda", "cuda-python")):
        try:
            __import__(module)
        except ImportError:
            return False, f"{what} is not installed (Python module `{module}`)"
    try:
        count = _cuda_call(_import_cudart().cudaGetDeviceCount())
    except Exception as exc:  # no driver, no device: cudaErrorNoDevice / InsufficientDriver
        return False, f"no usable CUDA device ({exc})"
    if not count:
        return False, "no CUDA device found"
    return True, ""


def require_gpu_stack() -> None:
    ok, why = gpu_stack_status()
    if not ok:
        raise InputError(f"--engine require: {why}; TensorRT engines need TensorRT and a CUDA GPU: {INSTALL_HINT}")


def _version_text(v: int) -> str:
    """CUDA's integer versions: 12040 -> "12.4"."""
    return f"{v // 1000}.{(v % 1000) // 10}"


def running_system(device: int = 0) -> dict:
    """TensorRT, CUDA runtime and driver versions, GPU name and compute capability, L4T release."""
    trt = _import_tensorrt()
    cudart = _import_cudart()
    props = _cuda_call(cudart.cudaGetDeviceProperties(device))
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return {
        "tensorrt": trt.__version__,
        "cuda_runtime": _version_text(_cuda_call(cudart.cudaRuntimeGetVersion())),
        "cuda_driver": _version_text(_cuda_call(cudart.cudaDriverGetVersion())),
        "gpu": name.strip("\x00 "),
        "compute_capability": f"{props.major}.{props.minor}",
        "l4t": read_l4t_release(),
    }


# ---------------------------------------------------------------- manifest (CPU)


def build_manifest(
    *,
    engine_sha256: str,
    onnx_path: str | Path,
    onnx_sha256: str,
    precision: str,
    opts: EngineOptions,
    system: Mapping,
    engine_check: Mapping | None = None,
    build_seconds: float | None = None,
) -> dict:
    """Everything needed to decide later whether an engine may run on a system, and what it was built from."""
    return {
        "schema": MANIFEST_SCHEMA,
        "mixnet_deploy": __version__,
        "precision": precision,
        "onnx": Path(onnx_path).name,
        "onnx_sha256": onnx_sha256,
        "engine_sha256": engine_sha256,
        "profile": {"batch": str(opts.batch), "shapes": profile_shapes(opts.batch, opts.img_size)},
        "workspace_mib": opts.workspace_mib,
        "dla_core": opts.dla_core,
        "hardware_compat": "ampere+" if opts.hardware_compat else None,
        "version_compat": opts.version_compat,
        "strongly_typed": _trt_major(str(system.get("tensorrt", "0"))) >= 10,
        "system": {
            k: system.get(k) for k in ("tensorrt", "cuda_runtime", "cuda_driver", "gpu", "compute_capability", "l4t")
        },
        "host": {"machine": platform.machine(), "python": platform.python_version()},
        "engine_check": dict(engine_check or {}),
        "build_seconds": build_seconds,
    }


def _trt_major(version: str) -> int:
    m = re.match(r"(\d+)", version or "")
    return int(m.group(1)) if m else 0


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version or "")[:4])


def manifest_differences(manifest: Mapping, system: Mapping, engine_sha256: str | None = None) -> list[str]:
    """What makes the engine unusable here, one readable item each (empty: it may run).

    Refused: another TensorRT version (a version-compatible engine: same major, same or newer here), another
    GPU model or compute capability (a hardware-compatible engine: any compute capability >= 8.0), another
    L4T release, an engine file whose SHA-256 is not the manifest's. CUDA runtime and driver versions are
    recorded but only differ-logged: TensorRT engines do not depend on them beyond the TensorRT build itself.
    """
    built = manifest.get("system", {})
    diffs = []
    if engine_sha256 is not None and manifest.get("engine_sha256") != engine_sha256:
        diffs.append(
            f"engine SHA-256 {engine_sha256[:12]}... is not the manifest's "
            f"{str(manifest.get('engine_sha256'))[:12]}... "
            "(the engine file was replaced or modified)"
        )
    b_trt, h_trt = str(built.get("tensorrt")), str(system.get("tensorrt"))
    if manifest.get("version_compat"):
        if _trt_major(b_trt) != _trt_major(h_trt) or _version_tuple(h_trt) < _version_tuple(b_trt):
            diffs.append(f"TensorRT {h_trt} here, version-compatible engine built with {b_trt} (needs same major, >=)")
    elif b_trt != h_trt:
        diffs.append(f"TensorRT {h_trt} here, engine built with {b_trt}")
    b_cc, h_cc = str(built.get("compute_capability")), str(system.get("compute_capability"))
    if manifest.get("hardware_compat"):
        if _version_tuple(h_cc) < (8, 0):
            diffs.append(f"compute capability {h_cc} here, hardware-compatible (ampere+) engine needs >= 8.0")
    else:
        if b_cc != h_cc:
            diffs.append(f"compute capability {h_cc} here, engine built for {b_cc}")
        if built.get("gpu") != system.get("gpu"):
            diffs.append(f"GPU {system.get('gpu')!r} here, engine built on {built.get('gpu')!r}")
    if built.get("l4t") != system.get("l4t"):
        diffs.append(f"L4T {system.get('l4t') or 'absent'} here, engine built on L4T {built.get('l4t') or 'absent'}")
    return diffs


def check_manifest(
    manifest: Mapping, system: Mapping, engine_path: str | Path, engine_sha256: str | None = None
) -> None:
    """Raise InputError naming every difference that makes the engine unusable on ``system``."""
    if manifest.get("schema") != MANIFEST_SCHEMA:
        raise InputError(
            f"{manifest_path_for(engine_path)}: not a mixnet-deploy engine manifest (schema {manifest.get('schema')!r})"
        )
    diffs = manifest_differences(manifest, system, engine_sha256)
    if diffs:
        raise InputError(f"{Path(engine_path).name}: built for another system: {'; '.join(diffs)}; rebuild it here")
    built = manifest.get("system", {})
    for key in ("cuda_runtime", "cuda_driver"):
        if built.get(key) != system.get(key):
            log.info("%s: %s %s here, %s at build time", Path(engine_path).name, key, system.get(key), built.get(key))


def load_manifest(engine_path: str | Path) -> dict:
    path = manifest_path_for(engine_path)
    if not path.is_file():
        raise InputError(
            f"{str(engine_path)!r} has no manifest ({path.name}): expected an engine written by mixnet-export "
            "(an engine built by hand, e.g. by trtexec.sh, is benchmarked with trtexec itself)"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable engine manifest ({exc}): expected the JSON mixnet-export wrote") from None
    if not isinstance(manifest, dict):
        raise InputError(f"{path}: expected a JSON object")
    return manifest


def verify_engine_file(engine_path: str | Path, system: Mapping | None = None) -> dict:
    """Load the manifest beside ``engine_path`` and check it against ``system`` (default: this machine)."""
    if not Path(engine_path).is_file():
        raise InputError(f"{str(engine_path)!r} does not exist: expected a TensorRT engine file")
    manifest = load_manifest(engine_path)
    if system is None:
        try:
            system = running_system()
        except InputError as exc:  # no TensorRT / CUDA here: say which engine cannot run
            raise InputError(f"{Path(engine_path).name}: cannot run this engine here: {exc}") from None
    check_manifest(manifest, system, engine_path, sha256_file(engine_path))
    return manifest


# ---------------------------------------------------------------- precision checks (CPU)


def classify_format(text: str) -> str | None:
    """An inspector ``Format/Datatype`` string -> "int8" / "fp16" / "fp32" / None (unknown, N/A, other types)."""
    t = str(text).lower()
    if "int8" in t:
        return "int8"
    if "fp16" in t or "half" in t:
        return "fp16"
    if "fp32" in t or "float" in t:
        return "fp32"
    return None


_RANK = {"int8": 0, "fp16": 1, "fp32": 2}


def layer_precisions(engine_info: Mapping | str) -> Counter:
    """Count compute layers by their lowest tensor precision, from the engine inspector's JSON.

    Reformat / shuffle / no-op layers are skipped; a layer whose tensors have no known type counts as None.
    """
    info = json.loads(engine_info) if isinstance(engine_info, str) else engine_info
    counts: Counter = Counter()
    for layer in info.get("Layers", []):
        if not isinstance(layer, Mapping) or layer.get("LayerType") in _BOOKKEEPING_LAYERS:
            continue
        tensors = [*layer.get("Inputs", ()), *layer.get("Outputs", ())]
        kinds = {classify_format(t.get("Format/Datatype", "")) for t in tensors if isinstance(t, Mapping)} - {None}
        counts[min(kinds, key=_RANK.__getitem__) if kinds else None] += 1
    return counts


def check_engine_precision(precision: str, counts: Counter, name: str) -> dict:
    """Fail (VerificationError) when an FP16/INT8 engine has no compute layer of that precision."""
    known = {k: v for k, v in counts.items() if k is not None}
    summary = {"layers_by_precision": {str(k): v for k, v in sorted(counts.items(), key=lambda kv: str(kv[0]))}}
    if not known:
        log.warning("%s: the engine inspector reported no tensor types; precision taken from the network", name)
        return {**summary, "verdict": "unknown (inspector gave no tensor types)"}
    if precision in ("fp16", "int8") and not known.get(precision):
        raise VerificationError(
            f"{name}: asked for {precision.upper()} but the built engine has no {precision.upper()} layer "
            f"(layers by precision: {known}); refusing to keep an engine of another precision"
        )
    return {**summary, "verdict": f"{precision} layers present" if precision != "fp32" else "fp32"}


def check_network_dtypes(precision: str, dtype_names: Iterable[str], name: str) -> None:
    """Strongly typed: the parsed network must carry the precision (HALF tensors for fp16, INT8 for int8)."""
    names = {str(d).upper().rsplit(".", 1)[-1] for d in dtype_names}
    wanted = {"fp16": "HALF", "int8": "INT8"}.get(precision)
    if wanted and wanted not in names:
        raise VerificationError(
            f"{name}: parsed as a strongly typed network without {wanted} tensors (found {sorted(names)}): "
            f"the file is not a {precision.upper()} graph"
        )


# ---------------------------------------------------------------- build (GPU)


@dataclass
class EngineResult:
    precision: str
    onnx: str
    path: str
    manifest: str
    bytes: int
    seconds: float
    check: dict


def build_engine(onnx_path: str | Path, precision: str, opts: EngineOptions, engine_path: str | Path | None = None):
    """Build, check and write one engine and its manifest. Returns an :class:`EngineResult`."""
    import time

    if precision not in PRECISIONS:
        raise InputError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    check_engine_options(opts)
    onnx_path = Path(onnx_path)
    engine_path = Path(engine_path) if engine_path is not None else engine_path_for(onnx_path, precision)
    trt = _import_tensorrt()
    from polygraphy.backend.trt import (
        CreateConfig,
        EngineBytesFromNetwork,
        EngineFromBytes,
        NetworkFromOnnxPath,
        Profile,
    )

    system = running_system()
    major = _trt_major(trt.__version__)
    strongly_typed = major >= 10
    if opts.dla_core is not None and precision == "fp32":
        raise InputError(f"--dla-core {opts.dla_core}: DLA runs FP16/INT8 only, not {onnx_path.name} (fp32)")
    shapes = opts.batch.shapes(opts.img_size)
    profile = Profile().add(INPUT_NAME, min=shapes["min"], opt=shapes["opt"], max=shapes["max"])
    config_kwargs = {
        "profiles": [profile],
        "profiling_verbosity": trt.ProfilingVerbosity.DETAILED,  # the inspector needs it for tensor types
    }
    if opts.workspace_mib:
        config_kwargs["memory_pool_limits"] = {trt.MemoryPoolType.WORKSPACE: opts.workspace_mib << 20}
    if opts.timing_cache is not None and Path(opts.timing_cache).is_file():
        config_kwargs["load_timing_cache"] = str(opts.timing_cache)
    if opts.hardware_compat:
        config_kwargs["hardware_compatibility_level"] = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if opts.version_compat:
        config_kwargs["version_compatible"] = True
    if not strongly_typed:  # TensorRT 8.6 / 9: the same ONNX with the matching builder flags
        config_kwargs["fp16"] = precision == "fp16"
        config_kwargs["int8"] = precision == "int8"
    create_config = CreateConfig(**config_kwargs)
    captured = {}

    def config(builder, network):
        if strongly_typed:
            dtypes = [network.get_layer(i).get_output(j).dtype for i in range(network.num_layers)
                      for j in range(network.get_layer(i).num_outputs)]  # fmt: skip
            check_network_dtypes(precision, (str(d) for d in dtypes), onnx_path.name)
        cfg = create_config(builder, network)
        if opts.dla_core is not None:
            if builder.num_DLA_cores <= opts.dla_core:
                raise InputError(f"--dla-core {opts.dla_core}: this device has {builder.num_DLA_cores} DLA cores")
            cfg.default_device_type = trt.DeviceType.DLA
            cfg.DLA_core = opts.dla_core
            cfg.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        captured["config"] = cfg
        return cfg

    # TensorRT 10: STRONGLY_TYPED flag; 11+: always strongly typed (flag deprecated, so not set).
    network = NetworkFromOnnxPath(str(onnx_path), strongly_typed=(major == 10))
    t0 = time.perf_counter()
    data = bytes(EngineBytesFromNetwork(network, config=config)())
    seconds = time.perf_counter() - t0

    engine = EngineFromBytes(data)()
    check = check_engine_precision(precision, layer_precisions(inspect_engine(engine, shapes["opt"])), onnx_path.name)
    if opts.timing_cache is not None and "config" in captured:
        cache = captured["config"].get_timing_cache()
        if cache is not None:
            write_bytes(opts.timing_cache, bytes(cache.serialize()))
    manifest = build_manifest(
        engine_sha256=hashlib.sha256(data).hexdigest(),
        onnx_path=onnx_path,
        onnx_sha256=sha256_file(onnx_path),
        precision=precision,
        opts=opts,
        system=system,
        engine_check=check,
        build_seconds=round(seconds, 3),
    )
    write_bytes(engine_path, data)
    write_json(manifest_path_for(engine_path), manifest)
    return EngineResult(
        precision, str(onnx_path), str(engine_path), str(manifest_path_for(engine_path)), len(data), seconds, check
    )


def inspect_engine(engine, input_shape) -> dict:
    """The engine inspector's JSON, with an execution context at ``input_shape`` (else dynamic shapes are N/A)."""
    import tensorrt as trt

    context = engine.create_execution_context()
    context.set_input_shape(INPUT_NAME, tuple(input_shape))
    inspector = engine.create_engine_inspector()
    inspector.execution_context = context
    return json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


# ---------------------------------------------------------------- runner (GPU)


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
        trt = _import_tensorrt()
        from polygraphy.backend.trt import EngineFromBytes

        self._trt = trt
        self._cudart = cudart = _import_cudart()
        self.engine = EngineFromBytes(path.read_bytes())()
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if inputs != [INPUT_NAME] or outputs != [OUTPUT_NAME]:
            raise InputError(
                f"{path.name}: tensors {inputs} -> {outputs}, expected [{INPUT_NAME!r}] -> [{OUTPUT_NAME!r}]"
            )
        self._in_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(INPUT_NAME)))
        self._out_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(OUTPUT_NAME)))
        lo, _, hi = (tuple(s) for s in self.engine.get_tensor_profile_shape(INPUT_NAME, 0))
        self.min_batch, self.max_batch = lo[0], hi[0]
        self.input_shape = (None if lo[0] != hi[0] else lo[0], *hi[1:])
        self.context.set_input_shape(INPUT_NAME, hi)
        out_max = tuple(self.context.get_tensor_shape(OUTPUT_NAME))
        self.precision = self.manifest.get("precision")
        self.metadata = _onnx_metadata(path.with_name(self.manifest["onnx"])) if self.manifest.get("onnx") else {}
        self.name = f"{path.name} [tensorrt]"
        self.cuda_graph = cuda_graph
        self._stream = _cuda_call(cudart.cudaStreamCreate())
        self._d_in = _cuda_call(cudart.cudaMalloc(int(np.prod(hi)) * self._in_dtype.itemsize))
        self._d_out = _cuda_call(cudart.cudaMalloc(int(np.prod(out_max)) * self._out_dtype.itemsize))
        self.context.set_tensor_address(INPUT_NAME, int(self._d_in))
        self.context.set_tensor_address(OUTPUT_NAME, int(self._d_out))
        self._graphs: dict[tuple, object] = {}
        self._shape: tuple | None = None

    # -- helpers
    def _prepare(self, x: np.ndarray) -> tuple[np.ndarray, tuple]:
        x = np.ascontiguousarray(x, dtype=self._in_dtype)
        if x.ndim != 4 or not self.min_batch <= x.shape[0] <= self.max_batch:
            raise InputError(
                f"{self.path.name}: input shape {x.shape}: expected [N, 3, H, W] with "
                f"{self.min_batch} <= N <= {self.max_batch} (the engine's profile)"
            )
        if x.shape != self._shape:
            if not self.context.set_input_shape(INPUT_NAME, x.shape):
                raise InputError(f"{self.path.name}: input shape {x.shape} is outside the engine's profile")
            self._shape = x.shape
        return x, tuple(self.context.get_tensor_shape(OUTPUT_NAME))

    def _enqueue(self) -> None:
        """One inference on the stream: a captured CUDA graph for this shape, or execute_async_v3."""
        cudart = self._cudart
        if not self.cuda_graph:
            if not self.context.execute_async_v3(int(self._stream)):
                raise RuntimeError(f"{self.path.name}: execute_async_v3 failed")
            return
        exec_graph = self._graphs.get(self._shape)
        if exec_graph is None:
            # One plain enqueue after a shape change lets TensorRT finish its deferred updates before capture.
            self.context.execute_async_v3(int(self._stream))
            _cuda_call(cudart.cudaStreamSynchronize(self._stream))
            mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
            _cuda_call(cudart.cudaStreamBeginCapture(self._stream, mode))
            self.context.execute_async_v3(int(self._stream))
            graph = _cuda_call(cudart.cudaStreamEndCapture(self._stream))
            exec_graph = _cuda_call(cudart.cudaGraphInstantiate(graph, 0))
            self._graphs[self._shape] = exec_graph
        _cuda_call(cudart.cudaGraphLaunch(exec_graph, self._stream))

    def _copy_in(self, x: np.ndarray) -> None:
        kind = self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        _cuda_call(self._cudart.cudaMemcpyAsync(self._d_in, x.ctypes.data, x.nbytes, kind, self._stream))

    # -- the runner contract
    def run(self, x: np.ndarray) -> np.ndarray:
        cudart = self._cudart
        x, out_shape = self._prepare(x)
        out = np.empty(out_shape, dtype=self._out_dtype)
        self._copy_in(x)
        self._enqueue()
        kind = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _cuda_call(cudart.cudaMemcpyAsync(out.ctypes.data, self._d_out, out.nbytes, kind, self._stream))
        _cuda_call(cudart.cudaStreamSynchronize(self._stream))
        return out.astype(np.float32, copy=False)

    def time_batch(self, x: np.ndarray, iters: int) -> list[float]:
        """Device milliseconds per inference (CUDA events around each enqueue; input copied once, not timed)."""
        cudart = self._cudart
        x, _ = self._prepare(x)
        self._copy_in(x)
        start, end = _cuda_call(cudart.cudaEventCreate()), _cuda_call(cudart.cudaEventCreate())
        times = []
        try:
            for _ in range(int(iters)):
                _cuda_call(cudart.cudaEventRecord(start, self._stream))
                self._enqueue()
                _cuda_call(cudart.cudaEventRecord(end, self._stream))
                _cuda_call(cudart.cudaEventSynchronize(end))
                times.append(float(_cuda_call(cudart.cudaEventElapsedTime(start, end))))
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
        for g in self._graphs.values():
            cudart.cudaGraphExecDestroy(g)
        self._graphs.clear()
        for ptr in (self._d_in, self._d_out):
            cudart.cudaFree(ptr)
        cudart.cudaStreamDestroy(self._stream)
        self._cudart = None


def _onnx_metadata(onnx_path: Path) -> dict[str, str]:
    """The ``mixnet.*`` metadata of the engine's source ONNX when it lies beside the engine (else empty)."""
    if not onnx_path.is_file():
        return {}
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


# ---------------------------------------------------------------- the export stage


def engine_stage(artifacts: Iterable, opts: EngineOptions, mode: str) -> tuple[list[EngineResult], list[str]]:
    """Build one engine per precision ONNX of the run (``artifacts``: objects with .precision and .path).

    ``mode``: ``auto`` builds when the GPU stack is present, else returns a note saying why and how;
    ``require`` raises InputError then; ``skip`` does nothing. Returns (results, notes).
    """
    if mode == "skip":
        return [], []
    ok, why = gpu_stack_status()
    if not ok:
        if mode == "require":
            require_gpu_stack()
        note = f"WARNING: no TensorRT engine built (--engine auto): {why}. Engines need a CUDA GPU and TensorRT"
        return [], [f"{note}: {INSTALL_HINT}"]
    results = []
    for artifact in artifacts:
        if opts.dla_core is not None and artifact.precision == "fp32":
            log.info("engine: %s skipped for DLA (DLA runs FP16/INT8 only)", Path(artifact.path).name)
            continue
        name = engine_path_for(artifact.path, artifact.precision).name
        log.info("engine: building %s from %s ...", name, artifact.path)
        results.append(build_engine(artifact.path, artifact.precision, opts))
    return results, []
