"""The runner contract every runtime follows (PyTorch, ONNX Runtime in ``runtimes.py``; TensorRT in
``trt_runner.py``), in a module of its own so that the runners import it and none imports another.

The runner contract (what :mod:`mixnet_deploy.parity`, :mod:`mixnet_deploy.bench` and the CLI rely
on; the TensorRT engine runner in ``mixnet_deploy.trt_runner`` follows it too):

``name: str``
    label for tables and plots, e.g. ``"mixnet_s.fp16.onnx [ort-cpu]"``.
``runtime: str``
    one of :data:`mixnet_deploy.runtimes.RUNTIMES` (``"torch"``, ``"ort-cpu"``, ``"ort-cuda"``, ``"ort-trt"``,
    ``"tensorrt"``).
``input_name`` / ``output_name: str``
    the tensor names (``"input"`` / ``"logits"`` for everything this toolkit writes).
``input_shape: tuple[int | None, ...]``
    ``(None, 3, 224, 224)``: ``None`` for a dynamic dimension (``(None, 224, 224, 3)`` for uint8-nhwc).
``input_format: str``
    ``"float32-nchw"`` or ``"uint8-nhwc"`` (``--input-format``): what ``run`` takes; :func:`model_input`
    picks it from a batch of pixels and its normalised floats.
``precision: str | None``
    ``"fp32"``, ``"fp16"``, ``"int8"`` (from the ONNX metadata ``mixnet.precision`` or the engine
    manifest); ``None`` when unknown.
``max_batch: int | None``
    the largest batch the runner accepts (an engine's profile max), ``None`` for no limit.
``metadata: dict[str, str]``
    the ``mixnet.*`` metadata of the source ONNX (may be empty).
``run(x: np.ndarray) -> np.ndarray``
    float32 ``[N, 3, H, W]`` (or uint8 ``[N, H, W, 3]``) in, float32 ``[N, classes]`` logits out, synchronous
    (results on the host).
``time_batch(x: np.ndarray, iters: int) -> list[float]``  (optional)
    milliseconds per call, measured on the device (CUDA events recorded around each enqueue, then
    synchronized); :mod:`mixnet_deploy.bench` uses it when present and wall-clock time otherwise.
``close() -> None``
    release sessions / contexts (optional; the base class has a no-op).

For ``.engine`` / ``.plan`` files :func:`mixnet_deploy.runtimes.make_runner` imports ``mixnet_deploy.trt_runner``
lazily and calls ``engine_runner(path, **opts)``, which returns such an object (``opts`` may hold
``cuda_graph: bool``; unknown options should raise :class:`InputError`).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import numpy as np

from .contract import FLOAT_INPUT, INPUT_NAME, META_VARIANT, OUTPUT_NAME, PIXEL_INPUT


class Runner:
    """Base class of the runners (see the module docstring for the contract)."""

    name: str = "runner"
    runtime: str = ""
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    input_shape: tuple[int | None, ...] = (None, 3, None, None)
    input_format: str = FLOAT_INPUT
    precision: str | None = None
    max_batch: int | None = None
    metadata: Mapping[str, str] = MappingProxyType({})  # read-only default; runners set their own

    def run(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        pass

    def describe(self) -> dict:
        """What a report records about the runner."""
        return {
            "name": self.name,
            "runtime": self.runtime,
            "precision": self.precision,
            "input_shape": list(self.input_shape),
            "input_format": self.input_format,
            "variant": self.metadata.get(META_VARIANT),
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def model_input(runner: Runner, pixels: np.ndarray | None, x: np.ndarray) -> np.ndarray:
    """What ``runner.run`` takes for one batch: the uint8 ``pixels`` [N, H, W, 3] for a uint8-nhwc model, the
    normalised float32 ``x`` [N, 3, H, W] (the same images, or random inputs) otherwise."""
    if runner.input_format != PIXEL_INPUT:
        return x
    if pixels is None:
        raise ValueError(f"{runner.name} takes uint8 pixels: the caller has only float inputs")
    return pixels
