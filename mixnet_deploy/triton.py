"""Triton model repository: ``REPO/<model>/config.pbtxt`` plus ``REPO/<model>/<version>/model.{plan,onnx}``.

Data flow: the files a run wrote (its artifacts: precision ONNX; its engines: :class:`EngineResult`)
+ :class:`TritonOptions` -> :func:`choose_source` (which file, which precision) ->
:func:`model_config` (a :class:`TritonModel`: I/O read from the ONNX, batching from the profile,
preprocessing from the ONNX metadata) -> :func:`render_config` (``config.pbtxt`` text in the
``inference.ModelConfig`` text format) -> :func:`stage_version` (the version folder and the config are
assembled under temporary names; :meth:`StagedVersion.commit` renames them into place when the export
has succeeded, so a failed run leaves the repository as it was).

Choices (documented in docs/triton.md):

- Kind: ``--triton-kind gpu`` (default) or ``cpu``; the serving machine is not the export machine, so
  nothing is guessed from the hardware the export runs on. ``cpu`` always serves the ONNX file
  (ONNX Runtime's CPU provider, no accelerator): a TensorRT plan cannot run on KIND_CPU.
- File: on ``gpu``, a TensorRT engine built in this run (``model.plan``, platform ``tensorrt_plan``) when
  there is one of the chosen precision, else that precision's ONNX file (``model.onnx``, platform
  ``onnxruntime_onnx``) with ONNX Runtime's TensorRT execution accelerator set to that precision.
- Version: ``config.pbtxt`` pins ``version_policy: { specific: { versions: [N] } }`` to the version this
  run wrote (``--model-version N``). Triton's default policy (latest, 1) would serve the highest version
  folder, so with ``REPO/mixnet_s/2/`` present a run writing version 1 would leave version 2 served. Other
  version folders stay on disk (a rollback is a re-export with the older number); the report lists them.
- Classification: ``labels.txt`` (the class names, class_names.py) beside ``config.pbtxt`` and
  ``label_filename`` on the ``logits`` output, so Triton's classification extension (a client asks
  ``class_count=k``) answers ``"score:index:label"``; with ``--top-k`` the ``scores``/``classes`` outputs
  are served too. The input is whatever the ONNX takes: ``TYPE_UINT8 [H, W, 3]`` for uint8-nhwc.
- Warm-up: ``model_warmup`` runs one all-zero batch of each profile size (min, opt, max) at load, so no
  first request pays the engine's (or ONNX Runtime's TensorRT provider's) first-run cost.
- Precision: ``--triton-precision auto`` (default) takes the fastest precision the run wrote
  (int8 > fp16 > fp32); an explicit precision that the run did not write is an InputError.

Nothing here needs tritonclient; :func:`schema_check` uses it (lazily) when installed, and the tests
parse every generated config with Triton's own ``model_config_pb2.ModelConfig``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import precision_table
from .atomic import TMP_MARKER, environment_errors, unwritable, write_text
from .batching import BatchProfile
from .contract import (
    ENGINE_SUFFIXES,
    META_BATCH_PROFILE,
    META_CLASS_NAMES,
    META_MODEL,
    META_PRECISION,
    META_PREFIX,
    ONNX_SUFFIX,
    OUTPUT_NAME,
    shape_string,
)
from .engine_build import EngineResult, manifest_path_for
from .errors import InputError, VerificationError

log = logging.getLogger("mixnet_deploy")

KINDS = ("gpu", "cpu")
# --triton-backend, for --triton-kind cpu: which Triton backend runs the ONNX file. openvino_backend (src/openvino.cc)
# reads the file named by default_model_filename (its default is model.xml) with ov::Core::read_model.
BACKENDS = ("onnxruntime", "openvino")
OPENVINO_PLATFORM = "openvino"  # written as backend: "openvino" (the backend has no platform string)
LABELS_FILE = "labels.txt"  # Triton's classification extension: label_filename of the logits output
QUEUE_DELAY_US = 100  # dynamic batcher: wait at most 0.1 ms to fill a preferred batch
ENCODED_SUFFIX = "_encoded"  # mixnet-serve --encoded: the model of a file's bytes beside each model (serve.py)
MAX_VERSION = 2**31 - 1
MODEL_PLACEHOLDER = "{model}"  # in --model-name: timm's model name of the exported variant
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")

# Triton DataType -> numpy dtype name, for the types our graphs use (mixnet-serve binds its tensors with them)
TRITON_TO_NUMPY = {"TYPE_FP32": "float32", "TYPE_FP16": "float16", "TYPE_UINT8": "uint8", "TYPE_INT32": "int32",
                   "TYPE_INT64": "int64", "TYPE_STRING": "object"}  # fmt: skip

# ONNX TensorProto.DataType -> Triton DataType (model_config.proto)
ONNX_TO_TRITON = {
    1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 4: "TYPE_UINT16", 5: "TYPE_INT16", 6: "TYPE_INT32",
    7: "TYPE_INT64", 8: "TYPE_STRING", 9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64", 12: "TYPE_UINT32",
    13: "TYPE_UINT64", 16: "TYPE_BF16",
}  # fmt: skip


@dataclass(frozen=True)
class TritonOptions:
    repo: Path
    model_name: str | None = None  # None: mixnet_<variant>
    version: int = 1
    kind: str = "gpu"
    precision: str = "auto"
    batch: BatchProfile = BatchProfile()
    dla_core: int | None = None  # Jetson: run on this DLA core (GPU fallback)
    instance_count: int = 1
    backend: str = "onnxruntime"  # --triton-backend (cpu only): onnxruntime | openvino


@dataclass(frozen=True)
class TensorSpec:
    name: str
    data_type: str  # Triton TYPE_*
    dims: tuple[int, ...]  # without the batch dimension; -1 = variable


@dataclass(frozen=True)
class Source:
    """A file of this run that could be served: an ONNX or a TensorRT engine, and the ONNX it came from."""

    precision: str
    path: Path
    onnx: Path  # == path for ONNX files
    is_engine: bool


@dataclass(frozen=True)
class TritonModel:
    name: str
    platform: str  # tensorrt_plan | onnxruntime_onnx | openvino (backend: "openvino")
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    preferred_batch_sizes: tuple[int, ...]
    queue_delay_us: int
    kind: str  # gpu | cpu
    instance_count: int
    precision: str
    accelerator: dict[str, str] = field(default_factory=dict)  # ORT TensorRT EP parameters ({} = none)
    dla_core: int | None = None  # plan on DLA: instance_group secondary device
    parameters: dict[str, str] = field(default_factory=dict)
    version: int = 1  # the one version served (version_policy specific), whatever else the model folder holds
    labels: tuple[str, ...] = ()  # labels.txt beside config.pbtxt, label_filename of the logits output
    warmup_batches: tuple[int, ...] = ()  # model_warmup: one zero batch of each size

    @property
    def filename(self) -> str:
        return "model.plan" if self.platform == "tensorrt_plan" else "model.onnx"


# ---------------------------------------------------------------- options


def default_model_name(variant: str) -> str:
    """timm's model name of a variant: ``mixnet_s``, ``mixnet_xl``, ``tf_mixnet_s``."""
    from .arch import get_variant

    return get_variant(str(variant)).model_name


def encoded_model_name(name: str) -> str:
    """``mixnet_s`` -> ``mixnet_s_encoded``: the model whose input is an image file's bytes (mixnet-serve --encoded)."""
    return name + ENCODED_SUFFIX


def precision_choices() -> tuple[str, ...]:
    """``--triton-precision``: auto (the fastest written, see :func:`mixnet_deploy.precision_table.by_speed`) or one."""
    return ("auto", *precision_table.names())


def model_name_of(opts: TritonOptions, variant: str) -> str:
    """--model-name with ``{model}`` replaced by timm's model name of the variant (presets: ``{model}_cpu``);
    default: that name alone (``mixnet_s``)."""
    return str(opts.model_name or MODEL_PLACEHOLDER).replace(MODEL_PLACEHOLDER, default_model_name(variant))


def check_options(opts: TritonOptions) -> TritonOptions:
    """Validate the options before any work: InputError carrying the ExportConfig field (``model_version``)."""
    if opts.model_name is not None and not _NAME_RE.match(str(opts.model_name).replace(MODEL_PLACEHOLDER, "m")):
        raise InputError(
            "expected letters, digits, '_', '.', '-' (not starting with '.' or '-'), at most 128 characters: "
            "it becomes a folder name in the repository",
            field="model_name",
            value=opts.model_name,
        )
    v = opts.version
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_VERSION:
        raise InputError(f"expected an integer from 1 to {MAX_VERSION}", field="model_version", value=v)
    if opts.kind not in KINDS:
        raise InputError(f"expected one of {', '.join(KINDS)}", field="triton_kind", value=opts.kind)
    if opts.backend not in BACKENDS:
        raise InputError(f"expected one of {', '.join(BACKENDS)}", field="triton_backend", value=opts.backend)
    if opts.backend == "openvino" and opts.kind != "cpu":
        raise InputError("expected --triton-kind cpu with it (OpenVINO's Triton backend serves on the CPU here)",
                         field="triton_backend", value=opts.backend, problem=f"given with --triton-kind {opts.kind}")
    choices = precision_choices()
    if opts.precision not in choices:
        raise InputError(f"expected one of {', '.join(choices)}", field="triton_precision", value=opts.precision)
    repo = Path(opts.repo)
    if repo.exists() and not repo.is_dir():
        expected = "expected a directory (existing or new)"
        raise InputError(expected, field="triton_repo", value=str(repo), problem="is a file")
    parent = next((p for p in (repo, *repo.parents) if p.exists()), Path("."))
    if parent.is_dir() and not os.access(parent, os.W_OK | os.X_OK):  # the machine refuses: exit 3
        raise unwritable(parent)
    if not os.access(parent, os.W_OK | os.X_OK):
        expected = "expected a directory you can write to"
        raise InputError(expected, field="triton_repo", value=str(repo), problem="is not writable")
    return opts


# ---------------------------------------------------------------- which file goes in


def collect_sources(artifacts: Iterable, engines: Iterable[EngineResult] = ()) -> list[Source]:
    """Servable files of a run: its ONNX artifacts (with ``.precision`` and ``.path``) and its engines."""
    sources: list[Source] = []
    onnx_by_precision: dict[str, Path] = {}
    for artifact in artifacts:
        path = Path(artifact.path)
        if path.suffix == ONNX_SUFFIX and path.is_file():
            sources.append(Source(artifact.precision, path, path, False))
            onnx_by_precision.setdefault(artifact.precision, path)
    for built in engines:
        path = Path(built.path)
        if path.suffix not in ENGINE_SUFFIXES or not path.is_file():
            continue
        onnx = Path(built.onnx) if built.onnx and Path(built.onnx).is_file() else onnx_by_precision.get(built.precision)
        if onnx is None:
            log.warning("triton: engine %s has no ONNX file of this run to read its I/O from; not used", path)
            continue
        sources.append(Source(built.precision, path, onnx, True))
    return sources


def choose_source(sources: list[Source], kind: str, precision: str) -> Source:
    """The file the repository serves (see the module docstring for the rules)."""
    usable = [s for s in sources if kind == "gpu" or not s.is_engine]
    speed = precision_table.by_speed()
    written = sorted({s.precision for s in usable}, key=speed.index)
    if not written:
        raise InputError("this run wrote no ONNX file or engine to put into the repository", field="triton_repo")
    if precision == "auto":
        precision = written[0]
    elif precision not in written:
        raise InputError(
            f"expected one it wrote ({', '.join(written)}), or {precision} exported in the same run",
            field="triton_precision",
            value=precision,
            problem=f"but this run wrote no {precision} model",
        )
    candidates = [s for s in usable if s.precision == precision]
    return next((s for s in candidates if s.is_engine), candidates[0])


# ---------------------------------------------------------------- config


def read_onnx_io(path: str | os.PathLike) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...], dict[str, str]]:
    """Inputs, outputs (batch dimension dropped) and metadata_props of an ONNX file."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    initializers = {t.name for t in proto.graph.initializer}

    def spec(value) -> TensorSpec:
        t = value.type.tensor_type
        dtype = ONNX_TO_TRITON.get(t.elem_type)
        if dtype is None:
            raise VerificationError(f"{Path(path).name}: tensor {value.name!r} has ONNX type {t.elem_type}, "
                                    "which Triton has no type for")  # fmt: skip
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        if not dims or dims[0] != -1:
            raise VerificationError(
                f"{Path(path).name}: tensor {value.name!r} has shape {dims}: Triton batching needs a symbolic "
                "batch dimension first (export with a dynamic batch)"
            )
        return TensorSpec(value.name, dtype, tuple(dims[1:]))

    inputs = tuple(spec(v) for v in proto.graph.input if v.name not in initializers)
    outputs = tuple(spec(v) for v in proto.graph.output)
    return inputs, outputs, {p.key: p.value for p in proto.metadata_props}


def preferred_batch_sizes(profile: BatchProfile) -> tuple[int, ...]:
    """The profile's opt and max: the sizes the engine was tuned for and the largest it takes."""
    return tuple(sorted({profile.opt, profile.max}))


def trt_accelerator(precision: str, profile: BatchProfile, inputs: tuple[TensorSpec, ...], dla_core=None) -> dict:
    """Parameters of ONNX Runtime's TensorRT execution provider in Triton's onnxruntime backend.

    The profile shapes make the EP build one engine for the whole batch range (instead of rebuilding
    when a larger batch arrives); the engine cache keeps it across model reloads.
    """
    params = {"precision_mode": precision_table.row(precision).trt_precision_mode}

    def shapes(n: int) -> str:
        return ",".join(shape_string((n, *t.dims), t.name) for t in inputs)

    if all(d > 0 for t in inputs for d in t.dims):
        params |= {
            "trt_profile_min_shapes": shapes(profile.min),
            "trt_profile_opt_shapes": shapes(profile.opt),
            "trt_profile_max_shapes": shapes(profile.max),
        }
    params |= {"trt_engine_cache_enable": "1", "trt_engine_cache_path": "/tmp/triton_ort_trt_cache"}
    if dla_core is not None:
        params |= {"trt_dla_enable": "1", "trt_dla_core": str(dla_core)}
    return params


def preprocessing_parameters(metadata: Mapping[str, str], profile: BatchProfile) -> dict[str, str]:
    """What a client must do before sending pixels (mean, std, size, interpolation, crop_pct, ...); the class
    names are in labels.txt."""
    params = {k: v for k, v in sorted(metadata.items())
              if k.startswith((META_PREFIX, "mixnet_deploy.")) and k != META_CLASS_NAMES}  # fmt: skip
    params[META_BATCH_PROFILE] = str(profile)
    return params


def labels_of(metadata: Mapping[str, str], outputs: tuple[TensorSpec, ...]) -> tuple[str, ...]:
    """The labels file's lines: the model's class names (class_names.py), one per logit; none when the model
    has neither stored names nor ImageNet-1k's 1000 classes."""
    from .class_names import IMAGENET_CLASSES, class_names_of

    logits = next((t for t in outputs if t.name == OUTPUT_NAME), None)
    if logits is None or len(logits.dims) != 1:
        return ()
    if META_CLASS_NAMES not in metadata and logits.dims[0] != IMAGENET_CLASSES:
        return ()
    return class_names_of(metadata, logits.dims[0])


def warmup_batches(profile: BatchProfile) -> tuple[int, ...]:
    """model_warmup: the profile's sizes, so that no request pays a first-run cost for its batch size."""
    return tuple(sorted({profile.min, profile.opt, profile.max}))


def model_config(source: Source, opts: TritonOptions, variant: str) -> TritonModel:
    inputs, outputs, metadata = read_onnx_io(source.onnx)
    profile = opts.batch
    if source.is_engine:
        platform, accelerator = "tensorrt_plan", {}
    elif opts.backend == "openvino":
        platform, accelerator = OPENVINO_PLATFORM, {}
    else:
        platform = "onnxruntime_onnx"
        gpu = opts.kind == "gpu"
        accelerator = trt_accelerator(source.precision, profile, inputs, opts.dla_core) if gpu else {}
    return TritonModel(
        name=model_name_of(opts, variant),
        platform=platform,
        max_batch_size=profile.max,
        inputs=inputs,
        outputs=outputs,
        preferred_batch_sizes=preferred_batch_sizes(profile),
        queue_delay_us=QUEUE_DELAY_US,
        kind=opts.kind,
        instance_count=opts.instance_count,
        precision=source.precision,
        accelerator=accelerator,
        dla_core=opts.dla_core if source.is_engine else None,
        parameters=preprocessing_parameters(metadata, profile),
        version=opts.version,
        labels=labels_of(metadata, outputs),
        warmup_batches=warmup_batches(profile),
    )


def _quote(text: str) -> str:
    """A protobuf text-format string literal (non-ASCII as octal UTF-8 bytes)."""
    out = []
    for byte in str(text).encode():
        ch = chr(byte)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 32 <= byte < 127:
            out.append(ch)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def _tensor(t: TensorSpec, label_filename: str = "") -> str:
    dims = ", ".join(str(d) for d in t.dims)
    labels = f"\n    label_filename: {_quote(label_filename)}" if label_filename else ""
    return f"  {{\n    name: {_quote(t.name)}\n    data_type: {t.data_type}\n    dims: [ {dims} ]{labels}\n  }}"


def _warmup(m: TritonModel) -> list[str]:
    """model_warmup: one all-zero batch of each size in ``m.warmup_batches``, every input."""
    lines = ["model_warmup ["]
    for i, size in enumerate(m.warmup_batches):
        lines += ["  {", f"    name: {_quote(f'zeros_batch_{size}')}", f"    batch_size: {size}"]
        for t in m.inputs:
            dims = ", ".join(str(d) for d in t.dims)
            lines += ["    inputs {", f"      key: {_quote(t.name)}",
                      f"      value {{ data_type: {t.data_type} dims: [ {dims} ] zero_data: true }}", "    }"]
        lines.append("  }," if i < len(m.warmup_batches) - 1 else "  }")
    return [*lines, "]"]


def render_config(m: TritonModel) -> str:
    """``config.pbtxt``: Triton's ``inference.ModelConfig`` in protobuf text format."""
    lines = [
        "# Written by mixnet-export (mixnet-deploy). Schema: Triton inference.ModelConfig (model_config.proto).",
        f"name: {_quote(m.name)}",
        *(
            [f"backend: {_quote(m.platform)}", f"default_model_filename: {_quote(m.filename)}"]
            if m.platform == OPENVINO_PLATFORM
            else [f"platform: {_quote(m.platform)}"]
        ),
        f"max_batch_size: {m.max_batch_size}",
        f"version_policy: {{ specific: {{ versions: [ {m.version} ] }} }}",
        "input [\n" + ",\n".join(_tensor(t) for t in m.inputs) + "\n]",
        "output [\n"
        + ",\n".join(_tensor(t, LABELS_FILE if m.labels and t.name == OUTPUT_NAME else "") for t in m.outputs)
        + "\n]",
        "dynamic_batching {",
        f"  preferred_batch_size: [ {', '.join(str(b) for b in m.preferred_batch_sizes)} ]",
        f"  max_queue_delay_microseconds: {m.queue_delay_us}",
        "}",
    ]
    group = ["instance_group [", "  {", f"    count: {m.instance_count}", f"    kind: KIND_{m.kind.upper()}"]
    if m.dla_core is not None:
        group.append(f"    secondary_devices [ {{ kind: KIND_NVDLA, device_id: {m.dla_core} }} ]")
    lines += group + ["  }", "]"]
    if m.accelerator:
        lines += ["optimization {", "  execution_accelerators {", "    gpu_execution_accelerator [", "      {"]
        lines.append('        name: "tensorrt"')
        for key, value in m.accelerator.items():
            lines.append(f"        parameters {{ key: {_quote(key)} value: {_quote(value)} }}")
        lines += ["      }", "    ]", "  }", "}"]
    if m.warmup_batches and all(d > 0 for t in m.inputs for d in t.dims):
        lines += _warmup(m)
    for key, value in m.parameters.items():
        lines.append(f"parameters {{ key: {_quote(key)} value {{ string_value: {_quote(value)} }} }}")
    return "\n".join(lines) + "\n"


def schema_check(text: str) -> bool:
    """Parse ``text`` as Triton's ModelConfig when tritonclient is installed (True), else False.

    Raises VerificationError when the text does not parse: a config Triton would refuse to load.
    """
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        return False
    try:
        text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise VerificationError(f"config.pbtxt does not parse as Triton's ModelConfig: {exc}") from None
    return True


# ---------------------------------------------------------------- files


def versions_in(model_dir: str | os.PathLike) -> list[int]:
    """The version folders of a model folder (numeric names, as Triton reads them), ascending."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdecimal())


@dataclass
class StagedVersion:
    """A version folder and its ``config.pbtxt``, assembled under temporary names beside the model folder;
    :meth:`commit` renames them into place (replacing an older folder of the same version), :meth:`discard`
    removes them. Until ``commit`` the repository is as it was."""

    model_dir: Path
    version: int
    tmp: Path  # REPO/.<model>.<version>.tmp-<pid>: the version folder
    config: Path  # REPO/.<model>.config.pbtxt.tmp-<pid>
    labels: Path | None = None  # REPO/.<model>.labels.txt.tmp-<pid> (a model with class names)

    def commit(self) -> None:
        final = self.model_dir / str(self.version)
        old = self.model_dir.parent / f".{self.model_dir.name}.{self.version}.old{TMP_MARKER}{os.getpid()}"
        with environment_errors(final, "write"):
            self.model_dir.mkdir(exist_ok=True)
            if final.exists():
                os.replace(final, old)
            os.replace(self.tmp, final)
            if self.labels is not None:
                os.replace(self.labels, self.model_dir / LABELS_FILE)
            os.replace(self.config, self.model_dir / "config.pbtxt")
        shutil.rmtree(old, ignore_errors=True)

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            self.config.unlink()
        if self.labels is not None:
            with contextlib.suppress(FileNotFoundError):
                self.labels.unlink()


CONFIG_MARK = "# Written by mixnet-export"  # the first line of every config.pbtxt render_config writes


def configuration(m: TritonModel) -> dict[str, str]:
    """What makes a served model the same one: the network, its input, platform, instance kind, precision (a
    re-export of that may replace it; batch sizes and warm-up are updates of the same model)."""
    return {"model": m.parameters.get(META_MODEL, "?"), "input": f"{m.inputs[0].name} {m.inputs[0].data_type}",
            "platform": m.platform, "kind": f"KIND_{m.kind.upper()}",
            "precision": m.parameters.get(META_PRECISION, "?")}  # fmt: skip


def read_configuration(text: str) -> dict[str, str] | None:
    """:func:`configuration` of a config.pbtxt render_config wrote (None: not ours)."""
    if not text.startswith(CONFIG_MARK):
        return None

    def find(pattern: str) -> str:
        m = re.search(pattern, text)
        return m[1] if m else "?"

    param = r'key: "{}" value {{ string_value: "([^"]*)" }}'
    name, dtype = find(r'input \[\s*\{\s*name: "([^"]*)"'), find(r"input \[[^]]*?data_type: (\w+)")
    return {"model": find(param.format(re.escape(META_MODEL))), "input": f"{name} {dtype}",
            "platform": find(r'(?:platform|backend): "([^"]*)"'), "kind": find(r"kind: (KIND_\w+)"),
            "precision": find(param.format(re.escape(META_PRECISION)))}  # fmt: skip


def check_same_configuration(model_dir: Path, model: TritonModel) -> None:
    """A model folder holding another configuration (or a config.pbtxt mixnet-export did not write) is not
    replaced: InputError naming what it holds and how to serve this one beside it (issue 21: two presets wrote
    the same ``mixnet_s`` and the second silently replaced a KIND_CPU FP32 model with a KIND_GPU FP16 one)."""
    path = model_dir / "config.pbtxt"
    try:
        text = path.read_text(errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return
    held, wanted = read_configuration(text), configuration(model)
    if held == wanted:
        return
    show = lambda c: f"{c['model']} {c['precision']} {c['platform']} {c['kind']} ({c['input']})"  # noqa: E731
    what = f"another configuration, {show(held)}" if held else "a config.pbtxt mixnet-export did not write"
    suggestion = f"{model.name}_{model.kind}_{model.precision}"
    raise InputError(
        f"expected another --model-name for {show(wanted)} (e.g. {suggestion}; {MODEL_PLACEHOLDER} stands for the "
        "model name), or remove that folder to replace it (--model-version cannot help: the versions of a model "
        "share one config.pbtxt)",
        field="model_name", value=model.name, problem=f"is taken: {model_dir} holds {what}",
    )  # fmt: skip


def stage_version(repo: str | os.PathLike, model: TritonModel, source: Source, version: int) -> StagedVersion:
    """Copy the served file (and an engine's manifest) into a temporary version folder in ``repo`` and write the
    config beside it (:class:`StagedVersion`); a full disk or a read-only repository: EnvironmentFailure (exit 3)
    naming the version folder, after removing what was copied."""
    model_dir = Path(repo) / model.name
    final = model_dir / str(version)
    if final.exists() and not final.is_dir():
        raise InputError(f"{final} is a file: expected a version directory", field="triton_repo")
    files = [(Path(source.path), model.filename)]
    manifest = manifest_path_for(source.path)
    if source.is_engine and manifest.is_file():
        files.append((manifest, "engine_manifest.json"))
    tag = f"{TMP_MARKER}{os.getpid()}"
    labels = Path(repo) / f".{model.name}.{LABELS_FILE}{tag}" if model.labels else None
    staged = StagedVersion(model_dir, version, Path(repo) / f".{model.name}.{version}{tag}",
                           Path(repo) / f".{model.name}.config.pbtxt{tag}", labels)  # fmt: skip
    with environment_errors(final, "write", needed=sum(src.stat().st_size for src, _ in files)):
        try:
            shutil.rmtree(staged.tmp, ignore_errors=True)
            staged.tmp.mkdir(parents=True)
            for src, name in files:
                shutil.copyfile(src, staged.tmp / name)
            if labels is not None:
                write_text(labels, "\n".join(model.labels) + "\n")
            write_text(staged.config, render_config(model))
        except BaseException:
            staged.discard()
            raise
    return staged


def stage_repository(
    artifacts: Iterable, engines: Iterable[EngineResult], opts: TritonOptions, variant: str
) -> tuple[dict, StagedVersion]:
    """The Triton stage of ``run_export``: choose, configure, stage (nothing in the repository changes until the
    caller commits the :class:`StagedVersion`). Returns what goes into <model>.report.json, and the staged version."""
    check_options(opts)
    engines = list(engines)
    source = choose_source(collect_sources(artifacts, engines), opts.kind, opts.precision)
    model = model_config(source, opts, variant)
    text = render_config(model)
    checked = schema_check(text)
    check_same_configuration(Path(opts.repo) / model.name, model)
    staged = stage_version(opts.repo, model, source, opts.version)
    model_dir = staged.model_dir
    notes = []
    if source.is_engine and opts.batch.min != 1:
        notes.append(
            f"triton: the engine's profile starts at batch {opts.batch.min}; Triton's dynamic batcher also "
            "forms smaller batches, which this engine rejects: build with --batch 1:OPT:MAX for Triton"
        )
    if opts.kind == "gpu" and not source.is_engine and engines:
        notes.append(f"triton: no {source.precision} engine was built in this run; serving the ONNX file")
    versions = sorted({*versions_in(model_dir), opts.version})
    others = [v for v in versions if v != opts.version]
    if others:
        notes.append(
            f"triton: {model_dir} also holds version(s) {', '.join(map(str, others))}, kept on disk and not "
            f"served: config.pbtxt pins version_policy to {opts.version} (--model-version)"
        )
    info = {
        "model_dir": str(model_dir),
        "config": str(model_dir / "config.pbtxt"),
        "model_file": str(model_dir / str(opts.version) / model.filename),
        "source": str(source.path),
        "platform": model.platform,
        "precision": model.precision,
        "kind": model.kind,
        "max_batch_size": model.max_batch_size,
        "version": opts.version,
        "versions": versions,  # the version folders the model folder holds after this run
        "served_versions": [opts.version],  # version_policy: specific
        "schema_checked": checked,
        "labels": str(model_dir / LABELS_FILE) if model.labels else None,
        "warmup_batches": list(model.warmup_batches),
        "notes": notes,
        "summary": f"triton: {model_dir} ({model.platform}, {model.precision}, KIND_{model.kind.upper()}, "
        f"max_batch_size {model.max_batch_size}, version {opts.version} served)",
    }
    return info, staged


def build_repository(artifacts: Iterable, engines: Iterable[EngineResult], opts: TritonOptions, variant: str) -> dict:
    """:func:`stage_repository`, committed at once: writes ``repo/<model>/<version>/<model file>`` and
    ``repo/<model>/config.pbtxt``. Other versions in the model folder stay on disk, not served."""
    info, staged = stage_repository(artifacts, engines, opts, variant)
    staged.commit()
    return info
