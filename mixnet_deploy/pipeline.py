"""The export pipeline: checkpoint -> folded model -> verified ONNX artifacts -> report.json.

``run_export(ExportConfig)`` is what ``mixnet-export`` calls; every stage is a function of the
modules named after what they produce. Nothing is written under its final name before it has
been verified: a failed verification exits 1 and keeps no model file of that precision.
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .atomic import remove_stale_temps, write_bytes, write_json
from .config import ExportConfig, check_config, triton_options
from .errors import VerificationError
from .fold import fold_bn
from .lowering import lower
from .onnx_export import build_metadata, check_graph, op_counts, set_metadata, to_onnx
from .parity import TOLERANCES, compare, failures
from .runtimes import ort_session, run_ort, run_torch
from .weights import load_model

log = logging.getLogger("mixnet_deploy")

VERIFY_BATCH = 4
VERIFY_SEED = 1234


@dataclass
class Artifact:
    precision: str
    path: str
    bytes: int
    nodes: int
    ops: dict[str, int]
    metrics: dict
    tolerance: dict
    seconds: float


@dataclass
class ExportReport:
    variant: str
    img_size: int
    weights: dict
    mdconv: str = "split"  # the MixConv lowering of every artifact (also in the ONNX metadata mixnet.mdconv)
    artifacts: list[Artifact] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    engines: list[dict] = field(default_factory=list)  # TensorRT engines built in this run (engine.EngineResult)
    triton: dict = field(default_factory=dict)  # the Triton repository written (triton.build_repository)
    calibration: dict = field(default_factory=dict)  # INT8 calibration: images, method, cache, seconds
    versions: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    def warn(self, message: str) -> None:
        """Log a warning and keep it in the report."""
        log.warning("%s", message)
        self.notes.append(message)


def versions() -> dict[str, str]:
    import onnx
    import torch

    found = {"mixnet_deploy": __version__, "python": platform.python_version(), "torch": torch.__version__}
    found["onnx"] = onnx.__version__
    try:
        import onnxruntime

        found["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        found["onnxruntime"] = "absent"
    return found


def verification_inputs(img_size: int, n: int = VERIFY_BATCH, seed: int = VERIFY_SEED) -> np.ndarray:
    """Seeded standard-normal images: the scale of ImageNet-normalized pixels."""
    return np.random.default_rng(seed).standard_normal((n, 3, img_size, img_size), dtype=np.float32)


def verify_onnx(data: bytes, reference: np.ndarray, x: np.ndarray, precision: str) -> tuple[dict, list[str]]:
    """Run a serialized ONNX model in ONNX Runtime (CPU) and compare with reference logits."""
    out = run_ort(ort_session(data), x)
    metrics = compare(reference, out)
    return metrics.as_dict(), failures(metrics, TOLERANCES[precision])


def run_export(cfg: ExportConfig) -> ExportReport:
    check_config(cfg)
    out_dir = Path(cfg.out_dir)
    t0 = time.perf_counter()
    model, info = load_model(cfg.variant, cfg.weights)
    spec = model.spec
    report = ExportReport(spec.name, cfg.img_size, asdict(info), versions=versions())
    if info.is_random:
        msg = (
            "WARNING: no --weights given: exporting RANDOM weights (seeded). The outputs are meaningless "
            "for classification; pass --weights FILE (timm or mixnet-deploy checkpoint) for a real model."
        )
        report.warn(msg)
    report.timings_s["load"] = time.perf_counter() - t0

    t = time.perf_counter()
    folded = lower(fold_bn(model), cfg.mdconv)  # exact rewrites; verified below against the unfolded model
    report.mdconv = cfg.mdconv
    report.timings_s["fold"] = time.perf_counter() - t

    x = verification_inputs(cfg.img_size)
    reference = run_torch(model, x)

    t = time.perf_counter()
    proto = to_onnx(folded, cfg.img_size, cfg.opset)
    set_metadata(proto, build_metadata(spec, info, cfg.img_size, "fp32", mdconv=cfg.mdconv))
    check_graph(proto)
    data = proto.SerializeToString()
    export_s = time.perf_counter() - t
    report.timings_s["export_fp32"] = export_s

    path = out_dir / f"{spec.model_name}.onnx"
    t = time.perf_counter()
    metrics, bad = verify_onnx(data, reference, x, "fp32")
    report.timings_s["verify_fp32"] = time.perf_counter() - t
    artifact = Artifact(
        "fp32", str(path), len(data), len(proto.graph.node), op_counts(proto), metrics,
        asdict(TOLERANCES["fp32"]), export_s,
    )  # fmt: skip
    report.artifacts.append(artifact)
    clear_previous_run(out_dir, spec.model_name)  # the folder never mixes two runs' report, models, engines
    if bad:
        write_json(out_dir / "report.json", report.as_dict())
        raise VerificationError(f"{path.name}: ONNX Runtime disagrees with PyTorch: {'; '.join(bad)}")
    try:
        write_bytes(path, data)
        run_precision_stage(cfg, report, proto, data)
        run_engine_stage(cfg, report)
        if cfg.triton_repo is not None:
            run_triton_stage(cfg, report)
        report.timings_s["total"] = time.perf_counter() - t0
        write_json(out_dir / "report.json", report.as_dict())
    except VerificationError:
        raise  # the failing precision kept no file; report.json says why
    except BaseException:  # bad input found late (unreadable calibration images), Ctrl-C, kill, a crash
        clear_previous_run(out_dir, spec.model_name)  # this run's files too: no half-finished set is left
        raise
    return report


def run_precision_stage(cfg: ExportConfig, report: ExportReport, proto, data: bytes) -> None:
    """FP16 / INT8 ONNX from the verified FP32 graph, each verified in ONNX Runtime (CPU) against the
    FP32 file on held-out inputs; a precision beyond its tolerance keeps no file and the run exits 1."""
    if not (cfg.fp16 or cfg.int8):
        return
    from .data import CalibrationReader, Preprocess, calibration_sets
    from .onnx_export import read_metadata
    from .precision import Int8Recipe, artifact_name, calibrate, int8_problems, quantize_int8, to_fp16

    out_dir, name = Path(cfg.out_dir), Path(report.artifacts[0].path).name.removesuffix(".onnx")
    pre = Preprocess.from_metadata(read_metadata(proto))
    sets = None
    if cfg.int8:
        sets = calibration_sets(cfg.calib, pre, cfg.calib_count)
        if sets.synthetic:
            msg = (
                "WARNING: --calib synthetic: INT8 ranges come from random colour fields, not photos. For smoke "
                "tests only: the INT8 file's accuracy on real images is unknown; pass --calib DIR for a real one."
            )
            report.warn(msg)
        x = pre.normalize(sets.held_out.crops)
    else:
        x = verification_inputs(cfg.img_size)
    reference = run_ort(ort_session(data), x)

    candidates = []  # (precision, make) in order; each made, verified, kept or refused
    if cfg.fp16:
        candidates.append(("fp16", lambda: to_fp16(proto)))
    if cfg.int8:
        recipe = Int8Recipe(method=cfg.calib_method)

        def make_int8():
            calib = calibrate(
                data, sets.calib.ids, lambda: iter(CalibrationReader(sets.calib, pre)), recipe, out_dir, name,
                sets.source,
            )  # fmt: skip
            report.calibration = {**asdict(calib), "cache": str(calib.cache), "summary": sets.summary()}
            report.timings_s["calibrate_int8"] = calib.seconds
            how = "cached, calibration skipped" if calib.cached else f"calibrated in {calib.seconds:.1f} s"
            report.notes.append(f"int8: {recipe.method} ranges over {sets.summary()} ({how}; {calib.cache.name})")
            model = quantize_int8(data, calib, recipe)
            problems = int8_problems(model)
            if problems:
                raise VerificationError(f"{artifact_name(name, 'int8')}: not TensorRT-style QDQ: {problems[0]}")
            return model

        candidates.append(("int8", make_int8))

    refused = []
    for precision, make in candidates:
        path = out_dir / artifact_name(name, precision)
        t = time.perf_counter()
        model = make()
        check_graph(model)
        blob = model.SerializeToString()
        made_s = time.perf_counter() - t
        t = time.perf_counter()
        metrics, bad = verify_onnx(blob, reference, x, precision)
        report.timings_s[f"verify_{precision}"] = time.perf_counter() - t
        report.timings_s[f"make_{precision}"] = made_s
        report.artifacts.append(
            Artifact(precision, str(path), len(blob), len(model.graph.node), op_counts(model), metrics,
                     asdict(TOLERANCES[precision]), made_s)
        )  # fmt: skip
        if bad:
            _remove(path)
            refused.append(f"{path.name} vs FP32 on {len(x)} held-out inputs: {'; '.join(bad)}")
        else:
            write_bytes(path, blob)
    if refused:
        write_json(out_dir / "report.json", report.as_dict())
        raise VerificationError("; ".join(refused) + " (file not kept)")


def run_engine_stage(cfg: ExportConfig, report: ExportReport) -> None:
    """TensorRT engines and DIR/trtexec.sh for every precision ONNX the run wrote (report.artifacts)."""
    from .engine import engine_stage

    opts = cfg.engine_options()
    if cfg.trtexec:
        from .trtexec import write_trtexec_script

        script = write_trtexec_script(cfg.out_dir, report.artifacts, opts)
        report.notes.append(f"trtexec recipe: {script}")
    t = time.perf_counter()
    results, notes = engine_stage(report.artifacts, opts, cfg.engine)
    for note in notes:
        report.warn(note)
    report.engines.extend(asdict(r) for r in results)
    if results:
        report.timings_s["engines"] = time.perf_counter() - t


def run_triton_stage(cfg: ExportConfig, report: ExportReport) -> None:
    """Triton model repository from the files this run wrote (report.artifacts, report.engines)."""
    from .triton import build_repository

    t = time.perf_counter()
    report.triton = build_repository(report.artifacts, report.engines, triton_options(cfg), report.variant)
    report.timings_s["triton"] = time.perf_counter() - t
    for note in report.triton["notes"]:
        report.warn(note)
    report.notes.append(report.triton["summary"])


def clear_previous_run(out_dir: Path, model_name: str) -> None:
    """Remove report.json and the model's artifacts (``<name>.onnx``, ``<name>.<precision>.onnx``, engines and
    their manifests) from ``out_dir``, so that what a run leaves comes from that run alone. Calibration caches
    stay (they are keyed by content)."""
    out_dir = Path(out_dir)
    patterns = (f"{model_name}.onnx", f"{model_name}.*.onnx", f"{model_name}.*.engine", f"{model_name}.*.engine.json",
                f"{model_name}.*.plan", "report.json")  # fmt: skip
    for pattern in patterns:
        for path in out_dir.glob(pattern):
            _remove(path)
    for path in remove_stale_temps(out_dir):  # left by a run killed with SIGKILL (nothing can clean up then)
        log.info("removed %s (a temporary file of a killed run)", path.name)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
