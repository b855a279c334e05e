"""Latency measurement and statistics; every result carries the environment (``environment.py``).

Measurement: warm up for ``warmup_s`` seconds, then time calls for ``duration_s`` seconds (or
exactly ``iters`` calls). Runners with a ``time_batch`` hook (a GPU: CUDA events recorded around
each call, then synchronized) are timed by the device; the others by ``time.perf_counter``
around a synchronous ``run``. With ``rounds > 1`` every (model, batch) case is measured in
``rounds`` slices that alternate with the other cases, so slow drifts of a shared machine
(other processes, thermal or power state) hit all cases alike instead of one of them.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import numpy as np

from .arch import DEFAULT_IMG_SIZE, MAX_IMG_SIZE, VARIANTS
from .batching import MAX_BATCH
from .contract import ENGINE_SUFFIXES, META_INPUT_SIZE, PIXEL_INPUT
from .environment import environment
from .errors import InputError
from .option_fields import INPUTS, MEASUREMENT, MODEL, RUNTIME, choice_metavar, option, positional, positive_int
from .runner_contract import Runner
from .runtimes import RUNTIMES, random_inputs

if TYPE_CHECKING:
    from .energy import PowerSampler
    from .labels import LabelledImages


UNSTABLE_CV = 0.10  # coefficient of variation above which a run is reported as unstable
PERCENTILES = (50, 90, 95, 99)


def min_calls(percentile: int) -> int:
    """Timed calls a percentile needs before it is reported: at least one call beyond it (p90: 10, p95: 20,
    p99: 100); the median needs one. Fewer calls and the figure would be the maximum renamed."""
    return 1 if percentile <= 50 else math.ceil(100 / (100 - percentile))


def parse_batches(text: str) -> tuple[int, ...]:
    """``"1,8,32"`` -> ``(1, 8, 32)``; InputError naming the value otherwise."""
    try:
        batches = tuple(int(part) for part in text.split(","))
    except ValueError:
        expected = "expected comma-separated positive integers such as 1,8,32"
        raise InputError(expected, field="batch", value=text) from None
    if not batches or any(not 0 < b <= MAX_BATCH for b in batches):
        raise InputError(f"expected comma-separated positive integers up to {MAX_BATCH}", field="batch", value=text)
    if len(set(batches)) != len(batches):
        raise InputError("expected each batch size once", field="batch", value=text, problem="lists a size twice")
    return batches


def parse_runtimes(text: str) -> tuple[str, ...]:
    """``"torch,ort-cpu"`` -> ``("torch", "ort-cpu")``; every name checked (installed, known)."""
    from .runtimes import check_runtime

    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        expected = f"expected auto or a comma-separated list of {', '.join(RUNTIMES)}"
        raise InputError(expected, field="runtime", value=text)
    for name in names:
        if name != "auto":
            check_runtime(name)
    return names


RUNNER_FIELDS = ("models", "runtimes", "threads", "cuda_graph")  # how run_model_benchmark makes its runners


@dataclass(frozen=True)
class BenchConfig:
    models: tuple[str, ...] = positional(  # run_model_benchmark's; run_benchmark is given runners
        f".onnx, .engine/.plan, checkpoint file, or a variant {choice_metavar(VARIANTS)}", "MODEL", (), group=MODEL
    )
    runtimes: tuple[str, ...] = option(
        ("auto",),
        "comma-separated (default {default}: by file type)",
        flag="--runtime",
        metavar=choice_metavar(("auto", *RUNTIMES)) + "[,...]",
        parse=parse_runtimes,
        group=RUNTIME,
    )
    batches: tuple[int, ...] = option(
        (1, 8, 32), "comma-separated batch sizes (default {default})", flag="--batch", parse=parse_batches,
        group=MEASUREMENT,
    )  # fmt: skip
    warmup_s: float = option(1.0, "warm-up seconds per case (default {default})", type=float, group=MEASUREMENT)
    duration_s: float | None = option(  # per case; ignored when iters is set
        3.0, "timed seconds per case (default {default})", type=float, group=MEASUREMENT, exclusive="duration"
    )
    iters: int | None = option(  # exact number of timed calls per case
        None, "exact number of timed calls per case", type=positive_int, group=MEASUREMENT, exclusive="duration"
    )
    rounds: int = option(  # interleaved slices per case (see the module docstring)
        1, "interleave the cases in N rounds (default {default})", type=positive_int, metavar="N", group=MEASUREMENT
    )
    threads: int = option(
        0, "intra-op threads (default {default}: the runtime's default)", type=int, group=RUNTIME
    )
    img_size: int | None = option(  # when the model does not say (PyTorch from a variant name)
        None, f"input size when the model does not fix it (default {DEFAULT_IMG_SIZE})", type=positive_int,
        group=MODEL,
    )  # fmt: skip
    cuda_graph: bool = option(False, "TensorRT engines: replay a CUDA graph per batch size", group=RUNTIME)
    images: str | None = option(
        None,
        "folder of images: adds one row per model/runtime with its status (ok, or refused and why), precision, "
        "size, accuracy on every image (preprocessed as its metadata says) and latency per batch",
        metavar="DIR",
        group=INPUTS,
    )
    labels: str | None = option(
        None,
        "with --images: top-1/top-5 against ground truth, as mixnet-parity --labels: 'folder' (synset "
        "subfolders) or a CSV of image,class; without it: top-1 agreement and cosine against the FP32 model",
        metavar="folder|CSV",
        group=INPUTS,
    )
    seed: int = 0
    min_iters: int = 3  # even a call longer than the duration is timed this often

    def __post_init__(self):
        check_bench_config(self)


def check_bench_config(cfg: BenchConfig) -> None:
    cpus = os.cpu_count() or 1
    if not isinstance(cfg.threads, int) or not 0 <= cfg.threads <= 4 * cpus:  # 100000 threads: minutes to create
        expected = f"expected 0 (default) or 1..{4 * cpus} (4x the {cpus} CPUs here)"
        raise InputError(expected, field="threads", value=cfg.threads)
    if not cfg.batches or any(not isinstance(b, int) or not 0 < b <= MAX_BATCH for b in cfg.batches):
        shown = ",".join(map(str, cfg.batches))
        raise InputError(f"expected positive integers up to {MAX_BATCH}", field="batch", value=shown)
    if not (cfg.warmup_s >= 0 and math.isfinite(cfg.warmup_s)):
        raise InputError("expected a number of seconds >= 0", field="warmup_s", value=cfg.warmup_s)
    if cfg.iters is None:
        if cfg.duration_s is None or not (cfg.duration_s > 0 and math.isfinite(cfg.duration_s)):
            raise InputError("expected a number of seconds > 0", field="duration_s", value=cfg.duration_s)
    elif not isinstance(cfg.iters, int) or cfg.iters <= 0:
        raise InputError("expected a positive integer", field="iters", value=cfg.iters)
    if not isinstance(cfg.rounds, int) or cfg.rounds <= 0:
        raise InputError("expected a positive integer", field="rounds", value=cfg.rounds)
    if cfg.img_size is not None and not 0 < cfg.img_size <= MAX_IMG_SIZE:
        raise InputError(f"expected a size from 1 to {MAX_IMG_SIZE}", field="img_size", value=cfg.img_size)


def check_outputs(cfg: BenchConfig, **outputs) -> None:
    """The caller's output files (the CLI's ``json``, ``markdown``, ``plot``) apart from the models and images,
    before any work (output_paths.py)."""
    from .output_paths import check_apart, with_manifests

    inputs = {"models": with_manifests(cfg.models), "images": cfg.images, "labels": cfg.labels}
    check_apart(outputs, inputs, BenchConfig)


def check_images(cfg: BenchConfig) -> LabelledImages | None:
    """``--images`` and ``--labels`` read and checked before any work (None: no images given)."""
    from .labels import labelled_images

    if cfg.labels is not None and cfg.images is None:
        raise InputError("expected together with --images DIR", field="labels", value=cfg.labels,
                         problem="without images")  # fmt: skip
    return None if cfg.images is None else labelled_images(cfg.images, cfg.labels)


# ---------------------------------------------------------------- statistics


@dataclass(frozen=True)
class LatencyStats:
    batch: int
    iterations: int
    p50_ms: float
    p90_ms: float | None  # None: fewer timed calls than min_calls(90)
    p95_ms: float | None
    p99_ms: float | None
    mean_ms: float
    std_ms: float
    cv: float  # std / mean
    min_ms: float
    max_ms: float
    throughput_ips: float  # images per second: batch / mean latency
    unstable: bool  # cv > UNSTABLE_CV


def latency_stats(samples_ms: Sequence[float], batch: int) -> LatencyStats:
    """Statistics of per-call latencies (milliseconds) for calls of ``batch`` images."""
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0 or not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError("latency samples must be a non-empty list of finite, non-negative milliseconds")
    p50, p90, p95, p99 = (float(v) if a.size >= min_calls(p) else None
                          for p, v in zip(PERCENTILES, np.percentile(a, PERCENTILES)))  # fmt: skip
    mean = float(a.mean())
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    cv = std / mean if mean > 0 else 0.0
    return LatencyStats(
        batch=batch,
        iterations=int(a.size),
        p50_ms=p50,
        p90_ms=p90,
        p95_ms=p95,
        p99_ms=p99,
        mean_ms=mean,
        std_ms=std,
        cv=cv,
        min_ms=float(a.min()),
        max_ms=float(a.max()),
        throughput_ips=batch * 1e3 / mean if mean > 0 else float("inf"),
        unstable=cv > UNSTABLE_CV,
    )


# ---------------------------------------------------------------- measurement


def _time_calls(runner: Runner, x: np.ndarray, n: int) -> list[float]:
    timer = getattr(runner, "time_batch", None)
    if timer is not None:
        return [float(v) for v in timer(x, n)]
    run = runner.run
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        run(x)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def measure(
    runner: Runner,
    x: np.ndarray,
    warmup_s: float = 1.0,
    duration_s: float | None = 3.0,
    iters: int | None = None,
    min_iters: int = 3,
    windows: list[tuple[float, float]] | None = None,
) -> list[float]:
    """Warm up, then per-call latencies in milliseconds (``iters`` calls, or for ``duration_s``); the timed part's
    (start, end) ``time.perf_counter`` is appended to ``windows`` (energy readings are matched to it)."""
    end = time.perf_counter() + warmup_s
    _time_calls(runner, x, 1)  # at least one call: first-call allocations never count
    while time.perf_counter() < end:
        _time_calls(runner, x, 1)
    start = time.perf_counter()
    if iters is not None:
        samples = _time_calls(runner, x, iters)
    else:
        samples, chunk = [], 1
        end = start + duration_s
        while time.perf_counter() < end or len(samples) < min_iters:
            samples += _time_calls(runner, x, chunk)
            chunk = min(chunk * 2, 64)  # device timers batch their synchronization
    if windows is not None:
        windows.append((start, time.perf_counter()))
    return samples


def bench_input(runner: Runner, batch: int, img_size: int | None = None, seed: int = 0) -> np.ndarray:
    """Seeded input of the runner's shape (H, W from the model, else ``img_size``, else the default): float32
    [batch, 3, H, W], or uint8 pixels [batch, H, W, 3] for a uint8-nhwc model."""
    pixels = runner.input_format == PIXEL_INPUT
    shape = tuple(runner.input_shape)
    if len(shape) != 4:
        raise InputError(f"{runner.name}: input shape {shape}: expected [batch, 3, H, W]")
    if pixels:  # [N, H, W, 3] -> the NCHW positions read below
        shape = (shape[0], shape[3], shape[1], shape[2])
    size_meta = runner.metadata.get(META_INPUT_SIZE)
    fallback = img_size or (int(size_meta) if size_meta else DEFAULT_IMG_SIZE)
    h = shape[2] or fallback
    w = shape[3] or fallback
    if img_size and (h, w) != (img_size, img_size):
        raise InputError(f"{runner.name} takes {h}x{w} inputs only", field="img_size", value=img_size)
    if shape[0] is not None and shape[0] != batch:
        raise InputError(f"{runner.name} has a static batch of {shape[0]}", field="batch", value=batch)
    if runner.max_batch is not None and batch > runner.max_batch:
        raise InputError(f"{runner.name} accepts at most {runner.max_batch}", field="batch", value=batch)
    if pixels:
        return np.random.default_rng(seed).integers(0, 256, (batch, h, w, 3), dtype=np.uint8)
    return random_inputs((batch, shape[1] or 3, h, w), seed)


@dataclass
class CaseResult:
    model: dict  # runner.describe()
    stats: LatencyStats
    timer: str  # "device" (CUDA events) or "wall"
    warnings: list[str] = field(default_factory=list)
    energy: dict | None = None  # energy.PowerSampler.energy: on a Jetson (tegrastats on the PATH)

    def as_dict(self) -> dict:
        return {"model": self.model, "timer": self.timer, **asdict(self.stats), "warnings": self.warnings,
                "energy": self.energy}  # fmt: skip


NO_TEGRASTATS = "absent: no tegrastats on the PATH (not a Jetson)"


@dataclass
class BenchResult:
    environment: dict
    config: dict
    results: list[CaseResult]
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    energy: dict | str = NO_TEGRASTATS  # PowerSampler.describe(): the tool, interval and rails
    images: dict | None = None  # --images: what the accuracy columns were measured on
    artifacts: list[dict] | None = None  # --images: one row per model/runtime (artifact_table.py)

    def as_dict(self) -> dict:
        out = {
            "created": self.created,
            "environment": self.environment,
            "config": self.config,
            "percentile_min_calls": {f"p{p}": min_calls(p) for p in PERCENTILES},
            "energy": self.energy,
            "results": [r.as_dict() for r in self.results],
        }
        if self.artifacts is not None:
            out.update(images=self.images, artifacts=self.artifacts)
        return out


def _measure_cases(cases, cfg: BenchConfig, progress: bool) -> tuple[dict, dict]:
    """Per case: latencies (ms) and the timed windows, in ``cfg.rounds`` interleaved rounds."""
    samples: dict[int, list[float]] = {i: [] for i in range(len(cases))}
    windows: dict[int, list[tuple[float, float]]] = {i: [] for i in range(len(cases))}
    slice_s = cfg.duration_s / cfg.rounds if cfg.iters is None else None
    slice_iters = None if cfg.iters is None else max(1, math.ceil(cfg.iters / cfg.rounds))
    bar = _progress(len(cases) * cfg.rounds, progress)
    try:
        for rnd in range(cfg.rounds):
            warm = cfg.warmup_s if rnd == 0 else min(cfg.warmup_s, 0.2)
            for i, (runner, batch, x) in enumerate(cases):
                if bar is not None:
                    bar.set_postfix_str(f"{runner.name} batch {batch}", refresh=False)
                samples[i] += measure(runner, x, warm, slice_s, slice_iters, max(1, cfg.min_iters // cfg.rounds),
                                      windows[i])  # fmt: skip
                if bar is not None:
                    bar.update()
    finally:
        if bar is not None:
            bar.close()
    return samples, windows


def run_benchmark(
    runners: Sequence[Runner],
    cfg: BenchConfig,
    progress: bool = True,
    env: dict | None = None,
    sampler: PowerSampler | None = None,
) -> BenchResult:
    """Every runner at every batch size of ``cfg``; statistics per case, with the environment; with ``sampler``
    (tegrastats) the energy per image of each case too. Unstable cases are flagged in their results, not logged
    (the CLI prints one summary line)."""
    cases = [(r, b, bench_input(r, b, cfg.img_size, cfg.seed)) for r in runners for b in cfg.batches]
    with sampler if sampler is not None else contextlib.nullcontext():
        samples, windows = _measure_cases(cases, cfg, progress)
    results = []
    for i, (runner, batch, _) in enumerate(cases):
        stats = latency_stats(samples[i], batch)
        warnings = []
        if stats.unstable:
            warnings.append(
                f"unstable: coefficient of variation {stats.cv:.1%} > {UNSTABLE_CV:.0%} "
                "(other load on the machine, frequency scaling or too short a run; the median is the robust figure)"
            )
        timer = "device" if getattr(runner, "time_batch", None) is not None and _is_gpu(runner) else "wall"
        energy = None if sampler is None else sampler.energy(windows[i], stats.throughput_ips)
        results.append(CaseResult(runner.describe(), stats, timer, warnings, energy))
    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items() if k not in RUNNER_FIELDS}
    if cfg.iters is not None:
        config["duration_s"] = None  # ignored: exactly `iters` calls were timed
    described = NO_TEGRASTATS if sampler is None else sampler.describe()
    return BenchResult(env if env is not None else environment(), config, results, energy=described)


def _is_gpu(runner: Runner) -> bool:
    device = getattr(runner, "device", None)
    return runner.runtime == "tensorrt" or getattr(device, "type", None) == "cuda"


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="benchmark", unit="case", file=sys.stderr, leave=False)


def run_model_benchmark(cfg: BenchConfig, progress: bool = True, found: LabelledImages | None = None) -> BenchResult:
    """Every model of ``cfg`` under every runtime (runners made by :func:`~mixnet_deploy.runtimes.make_runner`).

    ``cfg.cuda_graph``: TensorRT engines replay a CUDA graph per batch size (other runtimes ignore it).
    ``cfg.images`` (``found``: its images, read by :func:`check_images`): first the accuracy of every model on
    them, then the latency; a model a runtime cannot load is a refused row instead of an error
    (artifact_table.py). With ``tegrastats`` on the PATH (a Jetson) each case's energy per image is measured too.
    """
    from .artifact_table import evaluate, rows
    from .batching import BatchProfile
    from .energy import power_sampler

    ordered = sorted(cfg.batches)
    profile = BatchProfile(ordered[0], ordered[len(ordered) // 2], ordered[-1])  # ort-trt's TensorRT profile
    artifacts = []
    try:
        for model in cfg.models:
            for runtime in cfg.runtimes:
                artifacts.append(_artifact(str(model), runtime, cfg, profile))
        images = None
        if cfg.images is not None:
            images = evaluate(artifacts, found if found is not None else check_images(cfg), ordered[-1], progress)
        runners = [a.runner for a in artifacts if a.runner is not None]
        result = run_benchmark(runners, cfg, progress, sampler=power_sampler())
        result.config["threads"] = cfg.threads
        if images is not None:
            result.images = images
            result.artifacts = rows(artifacts, [r.as_dict() for r in result.results], cfg.batches)
        return result
    finally:
        for a in artifacts:
            if a.runner is not None:
                a.runner.close()


def _artifact(model: str, runtime: str, cfg: BenchConfig, profile):
    """The model's runner under ``runtime``; with ``--images`` a refusal is recorded instead of raised."""
    from .artifact_table import Artifact
    from .errors import EnvironmentFailure
    from .runtimes import make_runner

    opts = {"cuda_graph": True} if cfg.cuda_graph and model.lower().endswith(ENGINE_SUFFIXES) else {}
    try:
        return Artifact(model, runtime, make_runner(model, runtime, threads=cfg.threads, img_size=cfg.img_size,
                                                    batch=profile, **opts))  # fmt: skip
    except (InputError, EnvironmentFailure) as exc:
        missing = isinstance(exc, InputError) and os.path.splitext(model)[1] and not os.path.exists(model)
        if cfg.images is None or missing:
            raise  # a path that is not there is bad input (exit 2), not a row refused for what it holds
        return Artifact(model, runtime, refused=str(exc))
