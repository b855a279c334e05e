"""ExportConfig: every export option declared once, on its dataclass field, and checked before any work.

Each field carries its :class:`~mixnet_deploy.option_fields.Option` (option_fields.py: help, flag,
metavar, choices, group, the argparse type and, for a value given as text (``--batch 1:8:32``), its
parser). Everything else is derived from the fields: the ``mixnet-export`` parser (as for
``mixnet-parity`` and ``mixnet-bench`` from their configs), the preset keys (presets.py), the flag an
error names (:func:`flag_of`), the choices check. Adding an option is one field here (plus whatever
reads it).

The config is built as defaults <- preset <- given flags: the generated parser leaves a flag that was
not given out of the namespace, so the namespace is exactly the given flags (:func:`given_values`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from . import option_fields, precision_table
from .acceptance import DEFAULT_MAX_TOP1_DROP, LABELLED_HOLDOUT_MAX, holdout_needed
from .arch import DEFAULT_IMG_SIZE, MAX_IMG_SIZE, VARIANTS
from .atomic import environment_failure, unwritable
from .batching import BatchProfile, parse_batch_profile
from .contract import (
    CALIB_METHODS,
    DEFAULT_BIAS_CORRECTION,
    DEFAULT_CALIB_COUNT,
    DEFAULT_CALIB_METHOD,
    DEFAULT_EQUALIZE,
    FLOAT_INPUT,
    INPUT_FORMATS,
    MDCONV_AUTO,
    MDCONV_CHOICES,
    MIN_OPSET,
)
from .errors import InputError
from .option_fields import (
    ENGINE,
    MODEL,
    PRECISION,
    TRITON,
    Option,
    choice_metavar,
    nonempty_path,
    option,
    positive_int,
)
from .output_paths import check_apart
from .sensitivity import parse_exclude
from .triton import BACKENDS as TRITON_BACKENDS
from .triton import KINDS as TRITON_KINDS

MAX_OPSET = 21
ENGINE_MODES = ("auto", "require", "skip")


@dataclass(frozen=True)
class ExportConfig:
    variant: str | None = option(
        None,
        "the MixNet (also timm's names: mixnet_xl, tf_mixnet_s, ...); default: the checkpoint's when its shapes or "
        "a reliable hint name one variant (tf_* and s/m/l look alike: exit 2), else s",
        metavar=choice_metavar(VARIANTS),  # shown, not checked as a list: timm's names are accepted too
        group=MODEL,
    )
    weights: str | None = option(
        None,
        "checkpoint (.pth/.pt/.safetensors; timm or mixnet-deploy layout), or 'timm' for timm's pretrained "
        "file from the local Hugging Face cache; default: seeded random weights (with a warning)",
        group=MODEL,
    )
    img_size: int = option(
        DEFAULT_IMG_SIZE, "input height = width, a multiple of 32 (default {default})", type=int, group=MODEL
    )
    out_dir: Path = option(Path("artifacts"), "output folder (default {default})", flag="--out", type=nonempty_path)
    opset: int = option(MIN_OPSET, f"ONNX opset, {MIN_OPSET}..{MAX_OPSET} (default {{default}})", type=int, group=MODEL)
    mdconv: str = option(
        "split",
        "MixConv lowering (default {default}): split: Split -> Conv per kernel -> Concat; merged: one depthwise "
        "conv, kernels zero-padded to the largest, and grouped 1x1 convs (exact, faster on ONNX Runtime CPU); "
        "auto: both timed on the runtime that will run the file (TensorRT when an engine is built, else ONNX "
        "Runtime, or OpenVINO for --triton-backend openvino), the faster kept",
        choices=(*MDCONV_CHOICES, MDCONV_AUTO),
        group=MODEL,
    )
    input_format: str = option(
        FLOAT_INPUT,
        "graph input (default {default}): float32-nchw: 'input' float32 [N,3,H,W], ImageNet-normalised; "
        "uint8-nhwc: 'image' uint8 [N,H,W,3] RGB pixels, resized and centre-cropped (cast, layout and "
        "normalisation inside the graph; 4x fewer input bytes)",
        choices=INPUT_FORMATS,
        group=MODEL,
    )
    top_k: int | None = option(
        None,
        "also output 'scores' (softmax, float32 [N,K]) and 'classes' (int32 [N,K]) beside 'logits', computed in "
        "the graph; K from 1 to the model's classes",
        type=int,
        metavar="K",
        group=MODEL,
    )
    class_names: Path | None = option(
        None,
        "class names, one per line, as many as the model's classes (stored in the ONNX metadata and Triton's "
        "labels.txt); default: ImageNet-1k's for 1000 classes",
        type=nonempty_path,
        metavar="FILE",
        group=MODEL,
    )
    fp16: bool = option(False, "also write DIR/mixnet_<v>.fp16.onnx (float16, fp32 I/O)", group=PRECISION)
    int8: bool = option(False, "also write DIR/mixnet_<v>.int8.onnx (QDQ); needs --calib", group=PRECISION)
    calib: str | None = option(
        None,
        "INT8 calibration images (folder, recursive; 'synthetic': smoke test)",
        metavar="DIR|synthetic",
        group=PRECISION,
    )
    calib_method: str = option(
        DEFAULT_CALIB_METHOD, "INT8 calibration method (default {default})", choices=CALIB_METHODS, group=PRECISION
    )
    calib_count: int = option(
        DEFAULT_CALIB_COUNT,
        "calibration images used (default {default}); up to 16 more are held out for verification",
        type=positive_int,
        metavar="N",
        group=PRECISION,
    )
    int8_exclude: tuple[str, ...] = option(
        (),
        "Conv layers kept in FP16 in the INT8 file: auto (the most sensitive on the held-out images, until the INT8 "
        "tolerance passes, at most a fifth of the convs) or names as printed by auto, comma-separated",
        metavar="auto|NAME[,NAME...]",
        parse=parse_exclude,  # parsed once, here at the edge: the config holds the names
        group=PRECISION,
    )
    labels: str | None = option(
        None,
        "labels of the --calib images, as mixnet-parity --labels: 'folder' (synset subfolders) or a CSV of "
        "image,class; FP16/INT8 are then accepted by their top-1 drop against FP32 on the held-out images",
        metavar="folder|CSV",
        group=PRECISION,
    )
    max_top1_drop: float = option(
        DEFAULT_MAX_TOP1_DROP,
        "with --labels: the largest top-1 drop against FP32 accepted, in percentage points, judged on the upper "
        "bound of the 95%% paired-bootstrap interval (default {default})",
        type=float,
        metavar="POINTS",
        group=PRECISION,
    )
    holdout: int | None = option(
        None,
        "images of --calib held out to verify FP16/INT8, not calibrated on (default: 16, or with --labels half "
        f"the images up to {LABELLED_HOLDOUT_MAX}; a 1-point bound needs {holdout_needed(1.0)})",
        type=positive_int,
        metavar="N",
        group=PRECISION,
    )
    keep_refused: bool = option(
        False,
        "keep an FP16/INT8 file that fails verification as DIR/mixnet_<v>.<precision>.refused.onnx (marked "
        "refused in the report; the run still exits 1), e.g. to measure it with mixnet-parity --labels",
        group=PRECISION,
    )
    equalize: bool = option(
        DEFAULT_EQUALIZE,
        "INT8: cross-layer equalization of the depthwise -> ReLU -> pointwise pairs before calibration (exact in "
        "FP32; default {default}, measured in docs/precision.md)",
        group=PRECISION,
    )
    bias_correction: bool = option(
        DEFAULT_BIAS_CORRECTION,
        "INT8: subtract the mean quantization error of each quantized conv from its bias (default {default}, "
        "measured in docs/precision.md)",
        group=PRECISION,
    )
    engine: str = option(
        "auto", "TensorRT engine build (default {default})", choices=ENGINE_MODES, group=ENGINE
    )
    batch: BatchProfile = option(
        BatchProfile(),
        "batch profile MIN:OPT:MAX for engines and Triton (default {default})",
        parse=parse_batch_profile,
        group=ENGINE,
    )
    workspace_mib: int | None = option(
        None,
        "TensorRT workspace limit (default: TRT's)",
        flag="--workspace",
        type=positive_int,
        metavar="MiB",
        group=ENGINE,
    )
    timing_cache: Path | None = option(
        None, "TensorRT timing cache, loaded and saved", type=nonempty_path, metavar="FILE", group=ENGINE
    )
    dla_core: int | None = option(
        None, "Jetson DLA core with GPU fallback (static --batch)", type=int, metavar="N", group=ENGINE
    )
    hardware_compat: bool = option(False, "engines for any Ampere or newer GPU", group=ENGINE)
    version_compat: bool = option(False, "engines loadable by newer TensorRT (same major)", group=ENGINE)
    trtexec: bool = option(False, "write DIR/<model>.trtexec.sh: the trtexec build/bench commands", group=ENGINE)
    triton_repo: Path | None = option(
        None, "also write a Triton model repository", type=nonempty_path, metavar="REPO", group=TRITON
    )
    model_name: str | None = option(None, "Triton model name (default mixnet_<variant>)", group=TRITON)
    model_version: int = option(1, "Triton model version folder (default {default})", type=int, group=TRITON)
    triton_kind: str = option(
        "gpu",
        "Triton instance kind (default {default}; cpu serves the ONNX file)",
        choices=TRITON_KINDS,
        group=TRITON,
    )
    triton_backend: str = option(
        "onnxruntime",
        "Triton backend of --triton-kind cpu (default {default}): onnxruntime, or openvino (OpenVINO's backend reads "
        "model.onnx; on a CPU with bf16 it computes in bf16: the backend has no f32 pin)",
        choices=TRITON_BACKENDS,
        group=TRITON,
    )
    triton_precision: str = option(
        "auto",
        "precision put into the Triton repo (default {default}: the fastest written, int8 > fp16 > fp32)",
        metavar=choice_metavar(("auto", *precision_table.names())),  # checked by triton.check_options
        group=TRITON,
    )
    wait: bool = option(
        True,
        "another run is writing --out or --triton-repo: wait for it (default), or --no-wait: "
        "exit 2 at once, naming the folder and that run's process id",
    )

    def engine_options(self):
        from .engine_build import EngineOptions

        return EngineOptions(
            batch=self.batch,
            img_size=self.img_size,
            workspace_mib=self.workspace_mib,
            timing_cache=None if self.timing_cache is None else Path(self.timing_cache),
            dla_core=self.dla_core,
            hardware_compat=self.hardware_compat,
            version_compat=self.version_compat,
            input_format=self.input_format,
        )


# ---------------------------------------------------------------- derived from the declarations


def options() -> dict[str, Option]:
    """ExportConfig field name -> its Option, in declaration order."""
    return option_fields.options(ExportConfig)


def flag_of(name: str) -> str:
    """The ``mixnet-export`` flag of a field: declared, else ``--`` + the name with dashes."""
    return option_fields.flag_of(name, ExportConfig)


def export_flags() -> dict[str, str]:
    """ExportConfig field name -> its ``mixnet-export`` flag, for every option the parser generates."""
    return {name: flag_of(name) for name in options()}


def add_export_options(parser: argparse.ArgumentParser) -> dict:
    """One argparse option per ExportConfig field (option_fields.add_options); returns the groups by title."""
    return option_fields.add_options(parser, ExportConfig)


def given_values(namespace: argparse.Namespace | Mapping[str, object]) -> dict[str, object]:
    """The ExportConfig fields given as flags, as field values."""
    return option_fields.given_values(namespace, ExportConfig)


# ---------------------------------------------------------------- checks before any work


def check_img_size(size: int) -> int:
    if not isinstance(size, int) or size <= 0 or size % 32 or size > MAX_IMG_SIZE:
        raise InputError(f"expected a positive multiple of 32 up to {MAX_IMG_SIZE}", field="img_size", value=size)
    return size


def check_choices(cfg: ExportConfig) -> None:
    for name, opt in options().items():
        value = getattr(cfg, name)
        choices = option_fields.choices_of(opt)
        if choices and value not in choices:
            raise InputError(f"expected one of {', '.join(choices)}", field=name, value=value)


def check_config(cfg: ExportConfig) -> ExportConfig:
    """Validate everything that can be validated before any work is done."""
    from .arch import normalize_variant
    from .graph_io import check_top_k

    if cfg.variant is not None:
        try:
            normalize_variant(cfg.variant)
        except ValueError as exc:  # "unknown variant 'xs': expected one of ..."
            raise InputError(str(exc), field="variant") from None
    check_apart({"out_dir": cfg.out_dir, "triton_repo": cfg.triton_repo, "timing_cache": cfg.timing_cache},
                {"weights": cfg.weights, "calib": cfg.calib}, ExportConfig)  # fmt: skip
    check_img_size(cfg.img_size)
    if not isinstance(cfg.opset, int) or not MIN_OPSET <= cfg.opset <= MAX_OPSET:
        raise InputError(f"expected an integer from {MIN_OPSET} to {MAX_OPSET}", field="opset", value=cfg.opset)
    check_choices(cfg)
    check_top_k(cfg.top_k)  # against the model's classes once it is loaded (pipeline.served_ends)
    check_engine_config(cfg)
    check_precision_config(cfg)
    if cfg.triton_repo is not None:
        check_triton_config(cfg)
    prepare_out_dir(cfg.out_dir)
    return cfg


def check_engine_config(cfg: ExportConfig) -> None:
    """Engine / trtexec options (InputError), and ``--engine require`` without TensorRT + GPU (EnvironmentFailure,
    exit 3), before any work."""
    from .engine_build import check_engine_options
    from .gpu_stack import require_gpu_stack

    check_engine_options(cfg.engine_options())
    if cfg.dla_core is not None and not (cfg.fp16 or cfg.int8):
        raise InputError(
            f"DLA runs FP16/INT8 only: expected {flag_of('fp16')} and/or {flag_of('int8')} with it",
            field="dla_core",
            value=cfg.dla_core,
        )
    if cfg.dla_core is not None and cfg.mdconv == MDCONV_AUTO and cfg.engine != "skip":
        raise InputError(  # auto times FP32 engines, which DLA cannot run: choose the lowering for it
            f"expected {flag_of('mdconv')} split or merged with a DLA engine (auto times FP32 engines, which DLA "
            "cannot run)", field="mdconv", value=cfg.mdconv)  # fmt: skip
    if cfg.engine == "require":
        require_gpu_stack()


def check_precision_config(cfg: ExportConfig) -> None:
    """--fp16/--int8/--calib*: InputError before any work (a missing or empty --calib folder too)."""
    from .data import SYNTHETIC, find_images

    calib = flag_of("calib")
    if cfg.int8 and cfg.calib is None:
        raise InputError(
            f"expected {calib} DIR (a folder of JPEG/PNG/WebP photos), or {calib} {SYNTHETIC} for a smoke test",
            field="int8",
            problem="needs calibration images",
        )
    if cfg.calib is not None and not cfg.int8 and not (cfg.labels is not None and cfg.fp16):
        int8 = flag_of("int8")
        raise InputError(f"expected {int8} with it (or {flag_of('fp16')} {flag_of('labels')} ...)", field="calib",
                         value=cfg.calib, problem=f"given without {int8}")  # fmt: skip
    if not isinstance(cfg.calib_count, int) or cfg.calib_count < 1:
        raise InputError("expected a positive integer", field="calib_count", value=cfg.calib_count)
    if cfg.int8_exclude and not cfg.int8:
        int8, shown = flag_of("int8"), ",".join(cfg.int8_exclude)
        raise InputError(f"expected {int8} with it", field="int8_exclude", value=shown, problem=f"given without {int8}")
    if cfg.int8 and cfg.calib == SYNTHETIC and Path(SYNTHETIC).is_dir():
        raise InputError(
            f"expected ./{SYNTHETIC} for that folder (the bare word means synthetic colour fields; run elsewhere "
            "for those)",
            field="calib", value=cfg.calib, problem=f"is ambiguous: a folder ./{SYNTHETIC} exists here",
        )  # fmt: skip
    if cfg.int8 and cfg.calib != SYNTHETIC:
        find_images(cfg.calib, field="calib")
    check_acceptance_config(cfg)


def check_acceptance_config(cfg: ExportConfig) -> None:
    """--labels, --max-top1-drop, --holdout, --keep-refused: InputError before any work (labels read and matched)."""
    import math

    from .data import SYNTHETIC, find_images
    from .labels import labelled_images

    calib = flag_of("calib")
    for name in ("labels", "holdout"):
        value = getattr(cfg, name)
        if value is not None and cfg.calib is None:
            raise InputError(f"expected {calib} DIR with it", field=name, value=value, problem=f"given without {calib}")
    if cfg.labels is not None:
        if cfg.calib == SYNTHETIC:
            raise InputError(f"expected {calib} DIR of the labelled photos", field="labels", value=cfg.labels,
                             problem=f"given with {calib} {SYNTHETIC}")  # fmt: skip
        labelled_images(cfg.calib, cfg.labels)  # a bad CSV, an unlabelled image: exit 2 now
    drop = cfg.max_top1_drop
    if not isinstance(drop, (int, float)) or not math.isfinite(drop):
        raise InputError("expected a finite number of percentage points", field="max_top1_drop", value=drop)
    if drop != DEFAULT_MAX_TOP1_DROP and cfg.labels is None:
        raise InputError(f"expected {flag_of('labels')} with it (the drop is measured on labelled images)",
                         field="max_top1_drop", value=drop, problem=f"given without {flag_of('labels')}")  # fmt: skip
    if cfg.holdout is not None and (not isinstance(cfg.holdout, int) or cfg.holdout < 1):
        raise InputError("expected a positive integer", field="holdout", value=cfg.holdout)
    if cfg.holdout is not None and cfg.calib not in (None, SYNTHETIC):
        files = len(find_images(cfg.calib, field="calib"))
        if cfg.holdout >= files:
            raise InputError(f"expected fewer than the {files} image files of {calib} (one or more calibrate)",
                             field="holdout", value=cfg.holdout)  # fmt: skip
    if cfg.keep_refused and not (cfg.fp16 or cfg.int8):
        flags = f"{flag_of('fp16')} and/or {flag_of('int8')}"
        raise InputError(f"expected {flags} with it", field="keep_refused", problem=f"given without {flags}")


def written_precisions(cfg: ExportConfig) -> tuple[str, ...]:
    """The precisions a run of ``cfg`` writes: the reference (no option), and each one whose row's option is on."""
    rows = precision_table.PRECISIONS.values()
    return tuple(r.name for r in rows if r.option is None or getattr(cfg, r.option))


def check_triton_config(cfg: ExportConfig) -> None:
    """The Triton options, and a ``--triton-precision`` this run does not write (named: it is the one checked)."""
    from .triton import check_options

    check_options(triton_options(cfg))
    wanted, written = cfg.triton_precision, written_precisions(cfg)
    if wanted != "auto" and wanted not in written:
        raise InputError(
            f"expected {flag_of(wanted)} with it, or another precision",
            field="triton_precision",
            value=wanted,
            problem=f"but this run writes {', '.join(written)} only",
        )


def prepare_out_dir(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    shown = str(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError("expected a directory (existing or new)", field="out_dir", value=shown, problem="is a file")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        failure = environment_failure(exc, "create directory", out_dir)  # permission, read-only: exit 3
        if failure is not None:
            raise failure from None
        raise InputError(f"cannot create directory ({exc.strerror})", field="out_dir", value=shown) from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise unwritable(out_dir)  # read-only file system or permission: exit 3
    return out_dir


def triton_options(cfg: ExportConfig):
    from .triton import TritonOptions

    return TritonOptions(
        repo=Path(cfg.triton_repo),
        model_name=cfg.model_name,
        version=cfg.model_version,
        kind=cfg.triton_kind,
        backend=cfg.triton_backend,
        precision=cfg.triton_precision,
        batch=cfg.batch,
        dla_core=cfg.dla_core,
    )
