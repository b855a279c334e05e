"""TensorRT engines: build (strongly typed, dynamic batch) and manifest.

Data flow: precision ONNX (``mixnet_s.fp16.onnx``) -> ``build_engine`` -> ``mixnet_s.fp16.engine`` plus
``mixnet_s.fp16.engine.json`` (the manifest). Loading an engine (``trt_runner.engine_runner``, bench, parity,
Triton) checks that manifest against the running system first. The runner is in ``trt_runner.py``, the
export stage that calls ``build_engine`` in ``pipeline.py``; precision facts come from ``precision_table.py``.

Everything up to the TensorRT call is plain Python, tested on a CPU: profile shapes, option checks,
manifest building and checking, the precision classification of the engine inspector's output. The
TensorRT call itself is thin and built on Polygraphy's loaders; ``tensorrt``, ``polygraphy`` and
``cuda-python`` are imported inside functions, so ``import mixnet_deploy.engine_build`` works without them.
The CUDA/TensorRT probing (imports, device checks, the running system) is in ``gpu_stack.py``.

What the TensorRT code relies on (read, not guessed; the GPU tests in tests/test_engine_gpu.py run it):

- Polygraphy 0.53 ``polygraphy/backend/trt/loader.py``: ``NetworkFromOnnxPath(path, strongly_typed=...)``
  (sets ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``), ``EngineBytesFromNetwork(network, config=callable)``
  where ``config`` is any ``callable(builder, network) -> IBuilderConfig``, ``EngineFromBytes``.
- Polygraphy ``polygraphy/backend/trt/config.py``: ``CreateConfig(profiles=, memory_pool_limits=,
  load_timing_cache=, hardware_compatibility_level=, version_compatible=, profiling_verbosity=, fp16=, int8=)``.
  Its ``use_dla`` always picks DLA core 0 and, on TensorRT < 11, sets PREFER_PRECISION_CONSTRAINTS, which a
  strongly typed network rejects; so DLA is set in our config callable instead.
- DLA on TensorRT 10 is built weakly typed with the FP16/INT8 builder flags (:func:`is_strongly_typed`):
  strongly typed DLA is new in 11.4 (NVIDIA/TensorRT#4228; DEPLOY.md of the shared reference).
- TensorRT docs "Strongly Typed Networks for DLA" (11.x): FP16/INT8/PREFER/OBEY_PRECISION flags are not
  valid with strong typing; from 11.0 all networks are strongly typed and the STRONGLY_TYPED flag is
  deprecated and ignored. /work/shared/reference/DEPLOY.md: 10.x has STRONGLY_TYPED; 8.6/9 need the
  FP16/INT8 builder flags.
- TensorRT docs "Engine Inspector": ``engine.create_engine_inspector()``, ``inspector.execution_context =
  context``, ``get_engine_information(trt.LayerInformationFormat.JSON)``; detail needs
  ``ProfilingVerbosity.DETAILED``. Public inspector dumps show per-tensor ``"Format/Datatype"`` strings
  ("Row major linear FP16 format", "Thirty-two wide channel vectorized row major Int8 format", "Float",
  "Half") and "N/A due to dynamic shapes" when no execution context with input shapes is attached.
- TensorRT ``samples/python/common_runtime.py``: cuda-python ``cudart`` calls return ``(err, value)``.
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

from . import __version__, precision_table
from .arch import DEFAULT_IMG_SIZE
from .atomic import write_bytes, write_json
from .batching import BatchProfile
from .contract import FLOAT_INPUT, INPUT_NAME, MANIFEST_SUFFIX, input_name
from .environment import timed
from .errors import InputError, VerificationError
from .gpu_stack import import_tensorrt, running_system

log = logging.getLogger("mixnet_deploy")

MANIFEST_SCHEMA = "mixnet-deploy/engine-manifest/1"
# Layers that only move or reinterpret data; their tensor formats say nothing about compute precision.
_BOOKKEEPING_LAYERS = frozenset({"Reformat", "NoOp", "Shuffle", "Constant", "Identity", "Cast"})


# ---------------------------------------------------------------- options (CPU)


@dataclass(frozen=True)
class EngineOptions:
    """How engines are built; one set per run, shared by every precision."""

    batch: BatchProfile = BatchProfile()
    img_size: int = DEFAULT_IMG_SIZE
    workspace_mib: int | None = None  # None: TensorRT's default (all device memory)
    timing_cache: Path | None = None  # loaded when present, saved after every build
    dla_core: int | None = None  # Jetson Orin: DLA core with GPU fallback; needs a static batch
    hardware_compat: bool = False  # HardwareCompatibilityLevel.AMPERE_PLUS
    version_compat: bool = False  # BuilderFlag.VERSION_COMPATIBLE
    input_format: str = FLOAT_INPUT  # the ONNX input: its name and layout in the profile (graph_io.py)


def check_engine_options(opts: EngineOptions) -> EngineOptions:
    """Refuse option combinations TensorRT would reject later (or silently ignore): an InputError carrying the
    option's field. A DLA core with a dynamic batch names ``batch`` (the default profile is dynamic: the batch
    is what a DLA user must change); with a compatibility option it names that option (DLA engines are never
    portable, so the compatibility request is what has to go)."""
    if opts.workspace_mib is not None and (not isinstance(opts.workspace_mib, int) or opts.workspace_mib <= 0):
        raise InputError(
            "expected a positive number of MiB, e.g. 1024", field="workspace_mib", value=opts.workspace_mib
        )
    if opts.dla_core is not None:
        if not isinstance(opts.dla_core, int) or opts.dla_core < 0:
            raise InputError("expected a DLA core index 0 or 1 (Jetson Orin)", field="dla_core", value=opts.dla_core)
        on_dla = f"with DLA core {opts.dla_core}"
        if not opts.batch.is_static:
            expected = f"DLA needs static shapes: expected one batch size, e.g. {opts.batch.opt}"
            raise InputError(expected, field="batch", value=str(opts.batch), problem=on_dla)
        if opts.hardware_compat or opts.version_compat:
            compat = "hardware_compat" if opts.hardware_compat else "version_compat"
            expected = "DLA engines are tied to their device and TensorRT version: expected one or the other"
            raise InputError(expected, field=compat, problem=on_dla)
    if opts.timing_cache is not None and Path(opts.timing_cache).is_dir():
        shown = str(opts.timing_cache)
        raise InputError(
            "expected a file (new or existing)", field="timing_cache", value=shown, problem="is a directory"
        )
    return opts


def profile_shapes(
    batch: BatchProfile, img_size: int, input_format: str = FLOAT_INPUT
) -> dict[str, dict[str, list[int]]]:
    """The optimization profile as ``{"input": {"min": [1,3,S,S], "opt": [...], "max": [...]}}`` (``image``
    ``[N,S,S,3]`` for uint8-nhwc)."""
    return {input_name(input_format): {k: list(v) for k, v in batch.shapes(img_size, input_format).items()}}


def engine_path_for(onnx_path: str | Path, precision: str) -> Path:
    """``DIR/mixnet_s.onnx`` (fp32) -> ``DIR/mixnet_s.fp32.engine``; ``x.fp16.onnx`` -> ``x.fp16.engine``."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(precision_table.engine_name(onnx_path.name, precision))


def manifest_path_for(engine_path: str | Path) -> Path:
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + MANIFEST_SUFFIX)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
        "profile": {"batch": str(opts.batch), "shapes": profile_shapes(opts.batch, opts.img_size, opts.input_format)},
        "workspace_mib": opts.workspace_mib,
        "dla_core": opts.dla_core,
        "hardware_compat": "ampere+" if opts.hardware_compat else None,
        "version_compat": opts.version_compat,
        "strongly_typed": is_strongly_typed(str(system.get("tensorrt", "0")), opts.dla_core),
        "system": {
            k: system.get(k) for k in ("tensorrt", "cuda_runtime", "cuda_driver", "gpu", "compute_capability", "l4t")
        },
        "host": {"machine": platform.machine(), "python": platform.python_version()},
        "engine_check": dict(engine_check or {}),
        "build_seconds": build_seconds,
    }


def is_strongly_typed(trt_version: str, dla_core: int | None) -> bool:
    """Whether an engine is built as a strongly typed network on this TensorRT version.

    11.x: always (weak typing is gone). 10.x: yes, except for DLA: strongly typed DLA is new in 11.4, and
    TensorRT 10 builds DLA engines weakly typed with the FP16/INT8 builder flags (as trtexec 10.x does).
    8.6 / 9: no (builder flags).
    """
    major = _trt_major(trt_version)
    return major >= 11 or (major == 10 and dla_core is None)


def _trt_major(version: str) -> int:
    m = re.match(r"(\d+)", version or "")
    return int(m.group(1)) if m else 0


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version or "")[:4])


def _same_release(built: str, here: str) -> bool:
    """The same TensorRT, to the precision both know: trtexec's banner says 10.3.0 (a trtexec.sh manifest) where
    Python's ``tensorrt.__version__`` may say 10.3.0.30."""
    b, h = _version_tuple(built), _version_tuple(here)
    n = min(len(b), len(h))
    return built == here or (n >= 3 and b[:n] == h[:n])


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
    elif not _same_release(b_trt, h_trt):
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
            f"{str(engine_path)!r} has no manifest ({path.name}): expected an engine written by mixnet-export or "
            "by its <model>.trtexec.sh (both write one; an engine built otherwise is benchmarked with trtexec)"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable engine manifest ({exc}): expected the JSON mixnet-export wrote") from None
    if not isinstance(manifest, dict):
        raise InputError(f"{path}: expected a JSON object")
    return manifest


def source_onnx(engine_path: str | Path, manifest: Mapping) -> Path | None:
    """The ONNX file the engine was built from, as its manifest names it, when it lies beside the engine."""
    name = manifest.get("onnx")
    onnx = Path(engine_path).with_name(name) if name else None
    return onnx if onnx is not None and onnx.is_file() else None


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
    for precision in precision_table.by_speed():  # "int8" before "float": a format names its narrowest type
        if any(word in t for word in precision_table.row(precision).inspector_words):
            return precision
    return None


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
        counts[min(kinds, key=lambda p: precision_table.row(p).speed_rank) if kinds else None] += 1
    return counts


def check_engine_precision(precision: str, counts: Counter, name: str) -> dict:
    """Fail (VerificationError) when an FP16/INT8 engine has no compute layer of that precision."""
    known = {k: v for k, v in counts.items() if k is not None}
    summary = {"layers_by_precision": {str(k): v for k, v in sorted(counts.items(), key=lambda kv: str(kv[0]))}}
    if not known:
        log.warning("%s: the engine inspector reported no tensor types; precision taken from the network", name)
        return {**summary, "verdict": "unknown (inspector gave no tensor types)"}
    if precision_table.row(precision).trt_tensor_type and not known.get(precision):
        raise VerificationError(
            f"{name}: asked for {precision.upper()} but the built engine has no {precision.upper()} layer "
            f"(layers by precision: {known}); refusing to keep an engine of another precision"
        )
    return {**summary, "verdict": f"{precision} layers present" if precision != "fp32" else "fp32"}


def check_network_dtypes(precision: str, dtype_names: Iterable[str], name: str) -> None:
    """Strongly typed: the parsed network must carry the precision's tensor type (HALF for fp16, INT8 for int8)."""
    names = {str(d).upper().rsplit(".", 1)[-1] for d in dtype_names}
    wanted = precision_table.row(precision).trt_tensor_type
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


def _config_kwargs(trt, opts: EngineOptions, precision: str, strongly_typed: bool) -> dict:
    """Polygraphy ``CreateConfig`` keywords: the profile, pools, timing cache, compatibility, legacy flags."""
    from polygraphy.backend.trt import Profile

    shapes = opts.batch.shapes(opts.img_size, opts.input_format)
    name = input_name(opts.input_format)
    kwargs = {
        "profiles": [Profile().add(name, min=shapes["min"], opt=shapes["opt"], max=shapes["max"])],
        "profiling_verbosity": trt.ProfilingVerbosity.DETAILED,  # the inspector needs it for tensor types
    }
    if opts.workspace_mib:
        kwargs["memory_pool_limits"] = {trt.MemoryPoolType.WORKSPACE: opts.workspace_mib << 20}
    if opts.timing_cache is not None and Path(opts.timing_cache).is_file():
        kwargs["load_timing_cache"] = str(opts.timing_cache)
    if opts.hardware_compat:
        kwargs["hardware_compatibility_level"] = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if opts.version_compat:
        kwargs["version_compatible"] = True
    if not strongly_typed:  # 8.6 / 9, and DLA on 10.x: the same ONNX with the matching builder flags
        for flag in precision_table.weak_typing_flags(precision):
            kwargs[flag] = True
    return kwargs


def _network_config(trt, opts: EngineOptions, precision: str, onnx_name: str, strongly_typed: bool, captured: dict):
    """The ``config(builder, network)`` callable: checks the parsed network's types, then sets DLA."""
    from polygraphy.backend.trt import CreateConfig

    create_config = CreateConfig(**_config_kwargs(trt, opts, precision, strongly_typed))

    def config(builder, network):
        if strongly_typed:
            dtypes = [network.get_layer(i).get_output(j).dtype for i in range(network.num_layers)
                      for j in range(network.get_layer(i).num_outputs)]  # fmt: skip
            check_network_dtypes(precision, (str(d) for d in dtypes), onnx_name)
        cfg = create_config(builder, network)
        if opts.dla_core is not None:
            if builder.num_DLA_cores <= opts.dla_core:
                count = builder.num_DLA_cores
                expected = f"expected a DLA core index below {count} (this device has {count} DLA cores)"
                raise InputError(expected, field="dla_core", value=opts.dla_core)
            cfg.default_device_type = trt.DeviceType.DLA
            cfg.DLA_core = opts.dla_core
            cfg.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        captured["config"] = cfg
        return cfg

    return config


def build_engine(onnx_path: str | Path, precision: str, opts: EngineOptions, engine_path: str | Path | None = None):
    """Build, check and write one engine and its manifest. Returns an :class:`EngineResult`."""
    row = precision_table.row(precision)
    check_engine_options(opts)
    onnx_path = Path(onnx_path)
    engine_path = Path(engine_path) if engine_path is not None else engine_path_for(onnx_path, precision)
    trt = import_tensorrt()
    from polygraphy.backend.trt import EngineBytesFromNetwork, EngineFromBytes, NetworkFromOnnxPath

    system = running_system()
    major = _trt_major(trt.__version__)
    if opts.dla_core is not None and not row.dla:
        expected = f"DLA runs FP16/INT8 only: expected an FP16 or INT8 ONNX file, not {onnx_path.name} ({precision})"
        raise InputError(expected, field="dla_core", value=opts.dla_core)
    captured: dict = {}
    strongly_typed = is_strongly_typed(trt.__version__, opts.dla_core)
    config = _network_config(trt, opts, precision, onnx_path.name, strongly_typed, captured)
    # TensorRT 10: STRONGLY_TYPED flag (not for DLA); 11+: always strongly typed (flag deprecated, so not set).
    network = NetworkFromOnnxPath(str(onnx_path), strongly_typed=(major == 10 and strongly_typed))
    data, seconds = timed(lambda: bytes(EngineBytesFromNetwork(network, config=config)()))
    opt_shape = opts.batch.shapes(opts.img_size, opts.input_format)["opt"]
    layers = layer_precisions(inspect_engine(EngineFromBytes(data)(), opt_shape, input_name(opts.input_format)))
    check = check_engine_precision(precision, layers, onnx_path.name)
    if opts.timing_cache is not None and "config" in captured:
        cache = captured["config"].get_timing_cache()
        if cache is not None:
            write_bytes(opts.timing_cache, bytes(cache.serialize()))
    manifest = build_manifest(
        engine_sha256=hashlib.sha256(data).hexdigest(), onnx_path=onnx_path, onnx_sha256=sha256_file(onnx_path),
        precision=precision, opts=opts, system=system, engine_check=check, build_seconds=round(seconds, 3),
    )  # fmt: skip
    write_bytes(engine_path, data)
    write_json(manifest_path_for(engine_path), manifest)
    return EngineResult(
        precision=precision, onnx=str(onnx_path), path=str(engine_path),
        manifest=str(manifest_path_for(engine_path)), bytes=len(data), seconds=seconds, check=check,
    )  # fmt: skip


def inspect_engine(engine, input_shape, name: str = INPUT_NAME) -> dict:
    """The engine inspector's JSON, with an execution context at ``input_shape`` (else dynamic shapes are N/A)."""
    import tensorrt as trt

    context = engine.create_execution_context()
    context.set_input_shape(name, tuple(input_shape))
    inspector = engine.create_engine_inspector()
    inspector.execution_context = context
    return json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
