"""``--mdconv auto``: both lowerings timed on the runtime that will run the file, the faster one kept.

The runtime (:func:`target_runtime`): TensorRT when this run builds an engine (``--engine require``, or ``auto`` with
the GPU stack present; not run on the CPU-only machines of this project), OpenVINO or ONNX Runtime for a CPU Triton
repository as ``--triton-backend`` says, ONNX Runtime's CPU provider otherwise. Each lowering of the BN-folded model is
exported as ``mixnet-export`` exports it and timed at the profile's opt batch: the runners alternate in ``ROUNDS``
rounds of ``CALLS`` calls after a warm-up, a lowering's figure is the median of its per-round medians. The choice and
both figures go into the report (``mdconv_auto``).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from .contract import MDCONV_CHOICES, META_MDCONV

ROUNDS = 5
CALLS = 5
WARMUP = 2


def target_runtime(engine: str, triton_repo, triton_kind: str, triton_backend: str) -> str:
    """The runtime the exported file will run on (the module doc's rules): tensorrt, openvino or ort-cpu."""
    from .gpu_stack import gpu_stack_status

    if engine == "require" or engine == "auto" and gpu_stack_status()[0]:
        return "tensorrt"
    if triton_repo is not None and triton_kind == "cpu" and triton_backend == "openvino":
        return "openvino"
    return "ort-cpu"


def median_ms(runners: dict, x: np.ndarray) -> dict[str, float]:
    """Median per-call milliseconds of every runner, interleaved (rotating order), a warm-up first."""
    names = list(runners)
    for runner in runners.values():
        for _ in range(WARMUP):
            runner.run(x)
    rounds: dict[str, list[float]] = {n: [] for n in names}
    for r in range(ROUNDS):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times = []
            for _ in range(CALLS):
                t = time.perf_counter()
                runners[name].run(x)
                times.append((time.perf_counter() - t) * 1e3)
            rounds[name].append(float(np.median(times)))
    return {n: float(np.median(v)) for n, v in rounds.items()}


def _runner(path: Path, runtime: str, engine_options):
    from .runtimes import make_runner

    if runtime != "tensorrt":
        return make_runner(path, runtime)
    from .engine_build import build_engine

    built = build_engine(path, "fp32", engine_options)
    return make_runner(built.path, "tensorrt")


def choose_lowering(
    folded, metadata: dict, img_size: int, opset: int, runtime: str, batch: int, engine_options=None
) -> dict:
    """``{"runtime", "batch", "ms": {lowering: median ms}, "chosen"}``: the faster lowering of ``folded`` (its files
    carrying ``metadata``) on ``runtime`` (ties: split, the design's graph)."""
    from .lowering import lower
    from .onnx_export import set_metadata, to_onnx
    from .runtimes import random_inputs

    with tempfile.TemporaryDirectory(prefix="mixnet-mdconv-auto-") as tmp:
        runners = {}
        try:
            for mdconv in MDCONV_CHOICES:
                path = Path(tmp) / f"{mdconv}.onnx"
                proto = set_metadata(to_onnx(lower(folded, mdconv), img_size, opset), {**metadata, META_MDCONV: mdconv})
                path.write_bytes(proto.SerializeToString())
                runners[mdconv] = _runner(path, runtime, engine_options)
            ms = median_ms(runners, random_inputs((batch, 3, img_size, img_size), 0))
        finally:
            for runner in runners.values():
                runner.close()
    chosen = min(MDCONV_CHOICES, key=lambda m: (ms[m], MDCONV_CHOICES.index(m)))
    return {"runtime": runtime, "batch": batch, "ms": {m: round(v, 3) for m, v in ms.items()}, "chosen": chosen}
