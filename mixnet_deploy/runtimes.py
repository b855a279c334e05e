"""Runners: the PyTorch reference and ONNX Runtime, called with numpy arrays by ONNX names."""

from __future__ import annotations

import numpy as np
import torch

from .errors import InputError
from .onnx_export import INPUT_NAME, OUTPUT_NAME


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


@torch.no_grad()
def run_torch(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    return model.eval()(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()
