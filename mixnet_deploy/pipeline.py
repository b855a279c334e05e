"""The export pipeline: checkpoint -> folded model -> verified ONNX artifacts -> <model>.report.json.

``run_export(ExportConfig)`` is what ``mixnet-export`` calls; every stage is a function of the
modules named after what they produce. The run writes into a stage folder and swaps its whole set in
only when every stage succeeded (export_set.py): a failed verification exits 1, keeps nothing of the run
(its report is ``<model>.failed.json``) and leaves the folder's previous export as it was. One run at a
time writes an output folder (and a Triton repository): folder_lock.py; the folder's ``report.json``
indexes every model's latest run there (export_reports.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from . import precision_table
from .atomic import remove_stale_temps, write_bytes, write_json
from .config import ExportConfig, check_config, triton_options, written_precisions
from .contract import MDCONV_AUTO, ONNX_SUFFIX, REFUSED_TAG, onnx_stem
from .engine_build import EngineResult
from .environment import QUIET, Progress, stopwatch, timed, versions
from .errors import EnvironmentFailure, VerificationError
from .export_reports import report_name
from .export_set import failed_name, planned_names, relocate, staged, survey
from .fold import fold_bn
from .lowering import lower
from .metrics import compare
from .onnx_export import build_metadata, check_graph, op_counts, set_metadata, to_onnx
from .runtimes import ort_session, run_ort, run_torch
from .weights import load_model

log = logging.getLogger("mixnet_deploy")

SERVED_CHECK_IMAGES = 4  # the served ends (uint8-nhwc / --top-k) are checked on the first photos of the set


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
    structure: dict = field(default_factory=dict)  # FP16/INT8: qdq.graph_facts (float32 tensors, Q/DQ, ...)
    served: dict = field(default_factory=dict)  # graph_io.check_served facts (uint8-nhwc / --top-k), nodes added
    acceptance: dict = field(default_factory=dict)  # FP16/INT8: what judged it (acceptance.py): top-1 drop or tolerance
    verified_on: str = ""  # the images it was compared on (Verification.source): the same for every precision
    refused: bool = False  # failed verification; kept (under a .refused name) only with --keep-refused


@dataclass
class ExportReport:
    variant: str
    img_size: int
    weights: dict
    mdconv: str = "split"  # the MixConv lowering of every artifact (also in the ONNX metadata mixnet.mdconv)
    mdconv_auto: dict = field(default_factory=dict)  # --mdconv auto: runtime, both lowerings' ms, the one chosen
    input_format: str = "float32-nchw"  # --input-format of every artifact (mixnet.input_format)
    top_k: int = 0  # --top-k (0: logits only)
    artifacts: list[Artifact] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    engines: list[EngineResult] = field(default_factory=list)  # TensorRT engines built in this run
    triton: dict = field(default_factory=dict)  # the Triton repository written (triton.build_repository)
    calibration: dict = field(default_factory=dict)  # INT8 calibration: images, method, cache, seconds
    int8_exclusion: dict = field(default_factory=dict)  # --int8-exclude: layers kept FP16, sensitivity table
    verification: dict = field(default_factory=dict)  # Verification.as_report: the images every file was checked on
    versions: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)  # the files this run wrote into the output folder
    previous_run: dict = field(default_factory=dict)  # export_set.Survey.outcome: replaced, removed, left alone

    def as_dict(self) -> dict:
        return asdict(self)


def warning(message: str) -> str:
    """Log a warning; returns it, for the report's notes."""
    log.warning("%s", message)
    return message


@dataclass(frozen=True)
class Verification:
    """The images every precision of a run is verified on, whatever else is asked (issue 21): the held-out photos
    of ``--calib DIR`` when the user gives photos, else the package's built-in photos (data.builtin_photos);
    never noise, never synthetic colour fields. ``crops``: uint8 [N, H, W, 3]; ``x``: normalized float32."""

    crops: np.ndarray
    x: np.ndarray
    source: str  # in words, with the count: "8 built-in photos (mixnet_deploy/verify_images, public domain / CC0)"
    ids: tuple[str, ...]

    def as_report(self) -> dict:
        return {"images": len(self.x), "source": self.source, "files": list(self.ids)}


def verification_set(pre, sets) -> Verification:
    """:class:`Verification` from the calibration sets (data.CalibrationSets of a ``--calib DIR``: its held-out
    photos) or, without photos (no --calib, --calib synthetic), the built-in ones."""
    from .data import builtin_photos

    if sets is not None and not sets.synthetic:
        held = sets.held_out
        source = f"{len(held)} held-out images of {sets.source} (not calibrated on)"
    else:
        held = builtin_photos(pre)
        source = f"{len(held)} built-in photos (mixnet_deploy/verify_images: public domain / CC0)"
    return Verification(held.crops, pre.normalize(held.crops), source, tuple(name for name, _ in held.ids))


def photo_sets(cfg: ExportConfig, pre):
    """The calibration / held-out sets of ``--calib`` (data.calibration_sets, labels read), None without it."""
    from .data import calibration_sets
    from .labels import labelled_images

    if cfg.calib is None:
        return None
    labels = labelled_images(cfg.calib, cfg.labels).by_name() if cfg.labels is not None else None
    return calibration_sets(cfg.calib, pre, cfg.calib_count, holdout=cfg.holdout, labels=labels)


def verify_onnx(
    data: bytes, reference: np.ndarray, x: np.ndarray, precision: str, judge=None
) -> tuple[dict, dict, list[str]]:
    """Run a serialized ONNX model in ONNX Runtime (CPU) and compare with reference logits: (metrics, what judged
    it, failures). ``judge`` (acceptance.Judge) decides; by default the precision's tolerance."""
    from .acceptance import tolerance_judge

    out = run_ort(ort_session(data), x)
    record, bad = (judge or tolerance_judge(reference, precision_table.row(precision).tolerance))(out)
    return compare(reference, out).as_dict(), record, bad


@dataclass(frozen=True)
class Made:
    """One precision's model, made and verified in memory: its report entry, the model and its bytes, what failed."""

    artifact: Artifact
    model: object  # onnx.ModelProto
    blob: bytes
    failures: tuple[str, ...]
    timings: dict[str, float]


def make_verified(precision: str, path: Path, make, reference: np.ndarray, check: Verification, judge=None,
                  progress: Progress = QUIET) -> Made:  # fmt: skip
    """``make()`` -> checked ONNX model, serialized and verified against ``reference`` on ``check.x`` (by
    ``judge``, acceptance.py; default: the precision's tolerance)."""
    x = check.x

    def made():
        model = make()
        check_graph(model)
        return model, model.SerializeToString()

    progress.stage(f"export {precision}", path.name)
    (model, blob), made_s = timed(made)
    progress.stage(f"verify {precision}", f"vs {'PyTorch' if precision == 'fp32' else 'FP32'} on {check.source}")
    (metrics, record, bad), verify_s = timed(lambda: verify_onnx(blob, reference, x, precision, judge))
    structure = {}
    if precision != "fp32":  # what a strongly typed engine computes in float32, and what ORT's CPU provider did
        from .qdq import facts_problems, graph_facts, ort_cpu_casts

        structure = {**graph_facts(model), "ort_cpu_casts": ort_cpu_casts(blob)}
        bad = [*bad, *facts_problems(structure, precision)]  # a graph check fails the run like a metric
    artifact = Artifact(
        precision=precision, path=str(path), bytes=len(blob), nodes=len(model.graph.node), ops=op_counts(model),
        metrics=metrics, tolerance=asdict(precision_table.row(precision).tolerance), seconds=made_s,
        structure=structure, acceptance=record if precision != "fp32" else {}, verified_on=check.source,
        refused=bool(bad),
    )  # fmt: skip
    return Made(artifact, model, blob, tuple(bad), {f"make_{precision}": made_s, f"verify_{precision}": verify_s})


def served_ends(cfg: ExportConfig, num_classes: int):
    """The graph ends this run serves (graph_io.Ends), checked against the model's classes (InputError)."""
    from .class_names import read_class_names
    from .graph_io import Ends, check_top_k

    names = None if cfg.class_names is None else read_class_names(cfg.class_names, num_classes)
    return Ends(cfg.input_format, check_top_k(cfg.top_k, num_classes), names)


class Server:
    """Adds the served ends (graph_io.py) to a verified model, checks them in ONNX Runtime on pixels, writes the
    file; returns its report entry (VerificationError, nothing written, when a check fails)."""

    def __init__(self, ends, pre, check: Verification):
        self.ends = ends
        self.pre = pre
        self.pixels = check.crops[:SERVED_CHECK_IMAGES]
        self.source = f"the first {len(self.pixels)} of {check.source}"

    def __call__(self, made: Made) -> Artifact:
        from .graph_io import check_served, serve

        model = serve(made.model, self.ends, self.pre.mean, self.pre.std)
        blob = model.SerializeToString()
        if not self.ends.changes_graph:  # float32-nchw, logits only: the verified graph, its metadata completed
            write_bytes(made.artifact.path, blob)
            return replace(made.artifact, bytes=len(blob))
        check_graph(model)
        checked = check_served(made.blob, blob, self.pixels, self.pre, made.artifact.precision, self.source)
        path = Path(made.artifact.path)
        if checked.problems:
            raise VerificationError(f"{path.name}: served ends: {'; '.join(checked.problems)}")
        write_bytes(path, blob)
        nodes_added = len(model.graph.node) - len(made.model.graph.node)
        served = {**checked.facts, "top_k": self.ends.top_k, "nodes_added": nodes_added}
        return replace(made.artifact, bytes=len(blob), nodes=len(model.graph.node), ops=op_counts(model),
                       served=served)  # fmt: skip


def export_fp32(cfg: ExportConfig, model, info, check: Verification, progress: Progress = QUIET
                ) -> tuple[Made, dict[str, float]]:  # fmt: skip
    """Fold, lower, export and verify the FP32 ONNX against the unfolded PyTorch model on ``check`` (nothing
    written)."""
    spec = model.spec
    progress.stage("fold", f"BatchNorm into the convs, {cfg.mdconv} MixConv")
    folded, fold_s = timed(lambda: lower(fold_bn(model), cfg.mdconv))  # exact rewrites, verified below
    reference = run_torch(model, check.x)

    def make():
        proto = to_onnx(folded, cfg.img_size, cfg.opset)
        return set_metadata(proto, build_metadata(spec, info, cfg.img_size, "fp32", mdconv=cfg.mdconv))

    made = make_verified("fp32", Path(cfg.out_dir) / precision_table.artifact_name(spec.model_name, "fp32"), make,
                         reference, check, progress=progress)  # fmt: skip
    timings = {"fold": fold_s, "export_fp32": made.timings["make_fp32"], "verify_fp32": made.timings["verify_fp32"]}
    return made, timings


RANDOM_WEIGHTS_WARNING = (
    "WARNING: no --weights given: exporting RANDOM weights (seeded). The outputs are meaningless "
    "for classification; pass --weights FILE (timm or mixnet-deploy checkpoint) for a real model."
)


def run_export(cfg: ExportConfig, progress: Progress = QUIET) -> ExportReport:
    """Check ``cfg``, then export while holding the locks of the output folder and the Triton repository;
    ``progress`` (environment.Progress) shows the stages on a terminal."""
    from .folder_lock import folder_locks

    check_config(cfg)
    with folder_locks((("out_dir", cfg.out_dir), ("triton_repo", cfg.triton_repo)), wait=cfg.wait):
        return export_locked(cfg, progress)


def export_locked(cfg: ExportConfig, progress: Progress = QUIET) -> ExportReport:
    """The export into a stage folder (export_set.py), swapped in only when every stage succeeded: a bad input
    found late, a failed verification, Ctrl-C or a kill leave the previous export of the model as it was."""
    out_dir = Path(cfg.out_dir)
    for folder in (out_dir, cfg.triton_repo):  # left by a run killed with SIGKILL (nothing can clean up then)
        for path in remove_stale_temps(folder) if folder is not None else ():
            log.info("removed %s (a temporary file of a killed run)", path)
    elapsed = stopwatch()
    progress.stage("load", cfg.weights or "random weights")
    (model, info), load_s = timed(lambda: load_model(cfg.variant, cfg.weights))
    ends = served_ends(cfg, model.spec.num_classes)  # --top-k and --class-names against the model: before any work
    auto = {}
    if cfg.mdconv == MDCONV_AUTO:
        auto = choose_mdconv(cfg, model, info)
        cfg = replace(cfg, mdconv=auto["chosen"])
    name = model.spec.model_name
    engines = cfg.engine != "skip"
    previous = survey(out_dir, name, planned_names(name, written_precisions(cfg), engines, cfg.trtexec))
    with staged(out_dir, name) as stage:
        work = replace(cfg, out_dir=stage.path)  # every stage writes into the stage folder
        parts = {"notes": [warning(RANDOM_WEIGHTS_WARNING)] if info.is_random else [], "artifacts": [],
                 "timings_s": {"load": load_s}, "mdconv_auto": auto}  # fmt: skip
        try:
            run_stages(work, model, info, ends, parts, stage, reuse_from=out_dir, progress=progress)
        except VerificationError as exc:  # nothing swapped in; M.failed.json says why
            parts["notes"] = [*parts["notes"], f"verification failed: {exc}"]
            keep_refused_files(parts["artifacts"], stage.path, out_dir)
            failed = _assemble(cfg, model.spec, info, parts, stage)
            path = write_json(out_dir / failed_name(name), failed.as_dict())
            raise VerificationError(f"{exc}; the folder's export of {name} is unchanged, this run's report: "
                                    f"{path}", report=failed) from exc  # fmt: skip
        except EnvironmentFailure as exc:  # a full disk: named by the file's final path, not the stage's
            exc.subject = relocate(exc.subject, str(stage.path), str(cfg.out_dir))
            raise
        parts["timings_s"]["total"] = elapsed()
        report = _assemble(cfg, model.spec, info, parts, stage, previous)
        write_json(stage.path / report_name(name), report.as_dict())
        stage.commit(previous)
    progress.stage("done", f"{report.timings_s['total']:.1f} s")
    return report


def choose_mdconv(cfg: ExportConfig, model, info) -> dict:
    """--mdconv auto: both lowerings timed on the file's runtime (lowering_choice.py); logged, for the report."""
    from .lowering_choice import choose_lowering, target_runtime

    runtime = target_runtime(cfg.engine, cfg.triton_repo, cfg.triton_kind, cfg.triton_backend)
    meta = build_metadata(model.spec, info, cfg.img_size, "fp32")
    (found, seconds) = timed(lambda: choose_lowering(fold_bn(model), meta, cfg.img_size, cfg.opset, runtime,
                                                     cfg.batch.opt, cfg.engine_options()))  # fmt: skip
    found["seconds"] = round(seconds, 1)
    ms = ", ".join(f"{m} {v:.2f} ms" for m, v in found["ms"].items())
    log.info("--mdconv auto on %s at batch %d: %s: %s kept", runtime, cfg.batch.opt, ms, found["chosen"])
    return found


def keep_refused_files(artifacts, stage_dir: Path, out_dir: Path) -> None:
    """--keep-refused: the refused files (``<model>.<precision>.refused.onnx``) of a failed run move from the stage
    folder to ``out_dir`` beside its ``<model>.failed.json``; nothing else of the failed run is swapped in."""
    for a in artifacts:
        name = Path(a.path).name
        if a.refused and name.endswith(REFUSED_TAG + ONNX_SUFFIX) and (stage_dir / name).is_file():
            os.replace(stage_dir / name, out_dir / name)


def run_stages(cfg: ExportConfig, model, info, ends, parts: dict, stage, reuse_from: Path,
               progress: Progress = QUIET) -> None:  # fmt: skip
    """FP32, FP16 / INT8, engines, Triton (staged) into ``cfg.out_dir`` (the stage folder), collected in
    ``parts``, each model file with the served ``ends`` (graph_io.Ends); VerificationError when an artifact
    fails its check (its file is not kept)."""
    from .data import Preprocess

    pre = Preprocess.from_metadata(build_metadata(model.spec, info, cfg.img_size, mdconv=cfg.mdconv))
    sets = photo_sets(cfg, pre)
    check = verification_set(pre, sets)
    parts["verification"] = check.as_report()
    fp32, timings = export_fp32(cfg, model, info, check, progress)
    _merge(parts, [fp32.artifact], timings, ())
    if fp32.failures:
        path = Path(fp32.artifact.path)
        raise VerificationError(f"{path.name}: ONNX Runtime disagrees with PyTorch on {check.source}: "
                                f"{'; '.join(fp32.failures)}")  # fmt: skip
    serve = Server(ends, pre, check)
    parts["artifacts"][-1] = serve(fp32)  # the FP32 file with its served ends, written
    name = model.spec.model_name
    precisions = run_precision_stage(cfg, name, fp32.model, fp32.blob, serve, reuse_from, sets, check, progress)
    _merge(parts, precisions.artifacts, precisions.timings, precisions.notes, calibration=precisions.calibration,
           int8_exclusion=precisions.int8_exclusion)  # fmt: skip
    if precisions.refused:
        kept = "kept as .refused.onnx: --keep-refused" if cfg.keep_refused else "file not kept"
        raise VerificationError("; ".join(precisions.refused) + f" ({kept})")
    progress.stage("engine", cfg.engine + (" + trtexec recipe" if cfg.trtexec else ""))
    engines, notes, timings = run_engine_stage(cfg, parts["artifacts"])
    _merge(parts, (), timings, notes, engines=engines)
    if cfg.triton_repo is not None:
        progress.stage("triton", str(cfg.triton_repo))
        triton, notes, timings = run_triton_stage(cfg, model.spec.name, parts["artifacts"], engines, stage)
        _merge(parts, (), timings, notes, triton=triton)


def _merge(parts: dict, artifacts, timings: dict, notes, **more) -> None:
    """Add a stage's return values to what ``run_export`` has collected so far (its local dict)."""
    parts["artifacts"] = [*parts["artifacts"], *artifacts]
    parts["timings_s"] = {**parts["timings_s"], **timings}
    parts["notes"] = [*parts["notes"], *notes]
    parts.update(more)


def _assemble(cfg: ExportConfig, spec, info, parts: dict, stage, previous=None) -> ExportReport:
    """The ExportReport of the run from the stages' values, its paths moved from the stage folder to
    ``cfg.out_dir``; with ``previous`` (the folder's Survey: a run that succeeded), the files it wrote and
    what swapping them in replaces, removes and leaves alone."""
    report = ExportReport(
        variant=spec.name, img_size=cfg.img_size, weights=asdict(info), mdconv=cfg.mdconv,
        input_format=cfg.input_format, top_k=cfg.top_k or 0, versions=versions(), **parts,
    )  # fmt: skip
    report = relocate(report, str(stage.path), str(cfg.out_dir))
    if previous is not None:
        report.files = [*stage.written(), report_name(spec.model_name)]
        report.previous_run = previous.outcome(report.files)
    return report


@dataclass(frozen=True)
class PrecisionStage:
    """What the FP16 / INT8 stage returns: the artifacts (kept or refused), calibration, timings, notes."""

    artifacts: tuple[Artifact, ...] = ()
    calibration: dict = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()  # one line per precision beyond its tolerance (no file kept)
    int8_exclusion: dict = field(default_factory=dict)  # sensitivity.Exclusion of --int8-exclude


SYNTHETIC_CALIB_WARNING = (
    "WARNING: --calib synthetic: INT8 ranges come from random colour fields, not photos. For smoke "
    "tests only: the INT8 file's accuracy on real images is unknown; pass --calib DIR for a real one."
)


@dataclass(frozen=True)
class Int8Made:
    """The INT8 model (None when --int8-exclude auto needs more layers than its cap) and what made it."""

    model: object  # onnx.ModelProto | None
    calibration: dict
    notes: tuple[str, ...]
    exclusion: dict
    refused: str = ""  # why there is no model
    timings: dict[str, float] = field(default_factory=dict)


EQUALIZE_MAX_ABS = 1e-5  # equalized vs unequalized FP32 graph, per unit of the largest |logit| (exact up to rounding)


def equalized_graph(proto, reference: np.ndarray, x: np.ndarray, file: str):
    """The FP32 graph with cross-layer equalization (int8_fixes.py), checked exact against ``reference`` on ``x``:
    (graph, what the report records)."""
    from .int8_fixes import equalize

    model, facts = equalize(proto)
    max_abs = float(np.abs(run_ort(ort_session(model.SerializeToString()), x) - reference).max())
    bound = EQUALIZE_MAX_ABS * max(1.0, float(np.abs(reference).max()))
    if not max_abs <= bound:
        raise VerificationError(f"{file}: cross-layer equalization changed the FP32 logits by {max_abs:.3g} > "
                                f"{bound:.3g}")  # fmt: skip
    return model, {**asdict(facts), "max_abs_vs_fp32": max_abs, "bound": bound, "text": facts.describe()}


def make_int8(cfg: ExportConfig, name: str, proto, sets, pre, reference: np.ndarray, x: np.ndarray, judge,
              reuse_from: Path | None = None, progress: Progress = QUIET) -> Int8Made:  # fmt: skip
    """Calibrate (or reuse the cache in ``reuse_from``, default the output folder), then Q/DQ on the FP16 graph
    (qdq.py) with the layers --int8-exclude keeps in FP16 (sensitivity.py; auto searches on the held-out ``x``
    until ``judge`` accepts), after the fixes --equalize / --bias-correction ask for (int8_fixes.py)."""
    from .data import CalibrationReader
    from .int8_fixes import input_means
    from .precision_onnx import Int8Recipe, calibrate, int8_problems, load_cache
    from .qdq import Int8Builder, Placement, amax_of, conv_inputs
    from .sensitivity import as_report, int8_with_exclusion, table_text

    recipe = Int8Recipe(method=cfg.calib_method, exclude=cfg.int8_exclude, equalize=cfg.equalize,
                        bias_correction=cfg.bias_correction)  # fmt: skip
    fixes = {"equalize": {}, "bias_correction": cfg.bias_correction}
    if cfg.equalize:
        proto, fixes["equalize"] = equalized_graph(proto, reference, x, precision_table.artifact_name(name, "int8"))
    data = proto.SerializeToString()
    batches = lambda: iter(CalibrationReader(sets.calib, pre))  # noqa: E731
    progress.stage("calibrate", f"{recipe.method} over {len(sets.calib)} images (or the cache)")
    with progress.bar(len(sets.calib), "calibrate", "img") as bar:
        calib = calibrate(data, sets.calib.ids, batches, recipe, Path(cfg.out_dir), name, sets.source,
                          progress=bar.update, reuse_from=reuse_from)  # fmt: skip
    how = "cached, calibration skipped" if calib.cached else f"calibrated in {calib.seconds:.1f} s"
    notes = [f"int8: {recipe.method} ranges over {sets.summary()} ({how}; {calib.cache.name})"]
    notes += [f"int8: {fixes['equalize']['text']}"] if cfg.equalize else []
    calibration = {**asdict(calib), "cache": str(calib.cache), "summary": sets.summary(), "fixes": fixes,
                   "image_counts": sets.counts(cfg.calib_count)}  # fmt: skip
    short = sets.shortfall(cfg.calib_count)
    if short:
        notes.append(warning(short))
        calibration["shortfall"] = short
    amax = amax_of(load_cache(calib.cache, calib.key))
    means, means_s = timed(lambda: input_means(proto, conv_inputs(proto), amax, batches()) if cfg.bias_correction
                           else None)  # fmt: skip
    builder = Int8Builder(proto, amax, means)
    progress.stage("int8", f"Q/DQ, --int8-exclude {','.join(recipe.exclude) or 'none'}")
    (model, exclusion), search_s = timed(lambda: int8_with_exclusion(builder, recipe.exclude, reference, x, judge,
                                                                     progress))  # fmt: skip
    timings = {"calibrate_int8": calib.seconds, "int8_exclude": search_s, **({"bias_means": means_s} if means else {})}
    if exclusion.table:
        notes.append(f"int8 sensitivity ({exclusion.steps} INT8 files run):\n{table_text(exclusion)}")
    if not exclusion.passed:
        return Int8Made(None, calibration, tuple(notes), as_report(exclusion), exclusion.failure(), timings)
    if exclusion.layers:
        notes.append(f"int8: kept in FP16 ({exclusion.mode}): {', '.join(exclusion.layers)}")
    problems = int8_problems(model, unquantized=builder.unquantized(Placement(exclude=tuple(exclusion.layers))))
    if problems:
        raise VerificationError(f"{precision_table.artifact_name(name, 'int8')}: not TensorRT-style QDQ: {problems[0]}")
    return Int8Made(model, calibration, tuple(notes), as_report(exclusion), "", timings)


def refused_path(path: Path) -> Path:
    """``mixnet_s.int8.onnx`` -> ``mixnet_s.int8.refused.onnx`` (--keep-refused)."""
    return path.with_name(onnx_stem(path.name) + REFUSED_TAG + ONNX_SUFFIX)


def acceptance_setup(cfg: ExportConfig, sets, check: Verification, reference_of) -> tuple:
    """The FP32 reference on the verification images, the judge and the notes of a precision stage."""
    from .acceptance import holdout_needed, holdout_warning, labelled_judge

    x = check.x
    reference = reference_of(x)
    notes = [warning(SYNTHETIC_CALIB_WARNING)] if sets is not None and sets.synthetic else []
    if sets is None or sets.held_out_labels is None:
        return reference, None, notes
    n, drop = len(x), cfg.max_top1_drop
    notes.append(f"accepted by top-1 drop on {n} labelled held-out images ({cfg.labels}): upper bound of the 95% "
                 f"interval <= {drop:g} points (a bound of {drop:g} needs {holdout_needed(drop) or 'no count of'} "
                 "images); cosine figures are information")  # fmt: skip
    too_few = holdout_warning(n, drop)
    if too_few:
        notes.append(warning(too_few))
    return reference, labelled_judge(reference, sets.held_out_labels, drop), notes


def run_precision_stage(cfg: ExportConfig, name: str, proto, data: bytes, serve, reuse_from: Path | None,
                        sets, check: Verification, progress: Progress = QUIET) -> PrecisionStage:  # fmt: skip
    """FP16 / INT8 ONNX of model ``name`` from the verified FP32 graph, each verified in ONNX Runtime (CPU)
    against the FP32 file on ``check``, the images the FP32 file was verified on (by its top-1 drop with --labels,
    else its tolerance); ``sets``: the --calib photos (data.CalibrationSets; None without --calib); a refused
    precision keeps no file (``refused``), or with --keep-refused a .refused one. ``serve`` (a :class:`Server`)
    adds the served ends to a verified model and writes it; ``reuse_from``: the folder whose calibration cache
    is reused (default ``cfg.out_dir``)."""
    if not (cfg.fp16 or cfg.int8):
        return PrecisionStage()
    from .acceptance import tolerance_judge
    from .precision_onnx import to_fp16

    session = ort_session(data)
    reference, judge, notes = acceptance_setup(cfg, sets, check, lambda inputs: run_ort(session, inputs))
    timings = {}
    int8 = None
    if cfg.int8:
        auto_judge = judge or tolerance_judge(reference, precision_table.row("int8").tolerance)
        int8 = make_int8(cfg, name, proto, sets, serve.pre, reference, check.x, auto_judge, reuse_from, progress)
        timings |= int8.timings
        notes += int8.notes

    makers = {"fp16": lambda: to_fp16(proto), "int8": lambda: int8.model}  # one per row with an option
    artifacts, refused = [], []
    for precision in [p for p in written_precisions(cfg) if precision_table.row(p).option is not None]:
        path = Path(cfg.out_dir) / precision_table.artifact_name(name, precision)
        if precision_table.row(precision).quantized and int8.model is None:
            refused.append(f"{path.name}: {int8.refused}")
            continue
        made = make_verified(precision, path, makers[precision], reference, check, judge, progress)
        artifact = made.artifact
        timings |= made.timings
        if made.failures:
            refused.append(f"{path.name} vs FP32 on {check.source}: {'; '.join(made.failures)}")
            if cfg.keep_refused:
                artifact = replace(artifact, path=str(write_bytes(refused_path(path), made.blob)))
                notes.append(warning(f"{path.name} refused, kept as {Path(artifact.path).name} (--keep-refused)"))
            artifacts.append(artifact)
        else:
            artifacts.append(serve(made))
    calibration, exclusion = (int8.calibration, int8.exclusion) if int8 is not None else ({}, {})
    return PrecisionStage(tuple(artifacts), calibration, timings, tuple(notes), tuple(refused), exclusion)


def engine_stage(artifacts: Iterable[Artifact], opts, mode: str) -> tuple[list[EngineResult], list[str]]:
    """Build one engine per precision ONNX of the run (``artifacts``: objects with .precision and .path).

    ``mode``: ``auto`` builds when the GPU stack is present, else returns a note saying why and how;
    ``require`` raises EnvironmentFailure (exit 3) then; ``skip`` does nothing. Returns (results, notes).
    """
    from .engine_build import build_engine, engine_path_for
    from .gpu_stack import INSTALL_HINT, gpu_stack_status, require_gpu_stack

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
        if opts.dla_core is not None and not precision_table.row(artifact.precision).dla:
            log.info("engine: %s skipped for DLA (DLA runs FP16/INT8 only)", Path(artifact.path).name)
            continue
        name = engine_path_for(artifact.path, artifact.precision).name
        log.info("engine: building %s from %s ...", name, artifact.path)
        results.append(build_engine(artifact.path, artifact.precision, opts))
    return results, []


def run_engine_stage(cfg: ExportConfig, artifacts: list[Artifact]) -> tuple[list[EngineResult], list[str], dict]:
    """TensorRT engines and DIR/<model>.trtexec.sh for every precision ONNX the run wrote: (engines, notes, timings)."""
    opts = cfg.engine_options()
    notes = []
    if cfg.trtexec:
        from .trtexec import write_trtexec_script

        notes.append(f"trtexec recipe: {write_trtexec_script(cfg.out_dir, artifacts, opts)}")
    (results, warnings), seconds = timed(lambda: engine_stage(artifacts, opts, cfg.engine))
    notes += [warning(w) for w in warnings]
    return results, notes, {"engines": seconds} if results else {}


def run_triton_stage(
    cfg: ExportConfig, variant: str, artifacts: list[Artifact], engines: list[EngineResult], stage
) -> tuple[dict, list[str], dict]:
    """Triton model repository from the files this run wrote, staged: its version folder is renamed into place
    when ``stage`` (export_set.Stage) commits. Returns (what <model>.report.json records, notes, timings)."""
    from .triton import stage_repository

    (triton, version), seconds = timed(lambda: stage_repository(artifacts, engines, triton_options(cfg), variant))
    stage.pending.append(version)
    notes = [warning(n) for n in triton["notes"]] + [triton["summary"]]
    return triton, notes, {"triton": seconds}
