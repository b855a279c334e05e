"""The runner contract every runtime follows (PyTorch, ONNX Runtime in ``runtimes.py``; TensorRT in
``trt_runner.py``; OpenVINO in ``openvino_runner.py``), in a module of its own so that the runners import it and
none imports another.

The runner contract (what :mod:`mixnet_deploy.parity`, :mod:`mixnet_deploy.bench` and the CLI rely
on; the TensorRT engine runner in ``mixnet_deploy.trt_runner`` follows it too):

``name: str``
    label for tables and plots, e.g. ``"mixnet_s.fp16.onnx [ort-cpu]"``.
``runtime: str``
    one of :data:`mixnet_deploy.runtimes.RUNTIMES` (``"torch"``, ``"ort-cpu"``, ``"ort-cuda"``, ``"ort-trt"``,
    ``"tensorrt"``, ``"openvino"``, ``"openvino-bf16"``).
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
``inference_precision: str | None``  (optional)
    the precision the runtime computes in when it is below the file's (``"bf16"``: OpenVINO's ``openvino-bf16``);
    parity judges such a run by :func:`mixnet_deploy.precision_table.judged_precision`. ``None``: the file's.
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

from .arch import MAX_IMG_SIZE, VARIANT_CHOICES, normalize_variant
from .contract import (
    FLOAT_INPUT,
    INPUT_NAME,
    META_INPUT_SIZE,
    META_NUM_CLASSES,
    META_VARIANT,
    OUTPUT_NAME,
    PIXEL_INPUT,
    input_format_of,
)
from .errors import InputError


class Runner:
    """Base class of the runners (see the module docstring for the contract)."""

    name: str = "runner"
    runtime: str = ""
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    input_shape: tuple[int | None, ...] = (None, 3, None, None)
    input_format: str = FLOAT_INPUT
    precision: str | None = None
    inference_precision: str | None = None
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


def checked_metadata(meta: Mapping[str, str], source: str) -> dict[str, str]:
    """A model file's ``mixnet.*`` metadata, its values checked where present: a variant this toolkit knows, a
    class count >= 1 and an input size from 1 to MAX_IMG_SIZE (InputError naming ``source``, the key, the value)."""
    meta = dict(meta)
    if META_VARIANT in meta:
        try:
            normalize_variant(meta[META_VARIANT])
        except ValueError:
            expected = f"expected one of {VARIANT_CHOICES}"
            raise InputError(f"{source}: {META_VARIANT} {meta[META_VARIANT]!r}: {expected}") from None
    for key, top in ((META_NUM_CLASSES, None), (META_INPUT_SIZE, MAX_IMG_SIZE)):
        text = meta.get(key)
        if text is None:
            continue
        value = int(text) if text.strip().isdecimal() else 0
        if not 0 < value <= (top or value):
            bound = f"1 to {top}" if top else ">= 1"
            raise InputError(f"{source}: {key} {text!r}: expected an integer {bound}")
    return meta


def shape_text(shape) -> str:
    """``[N, 3, 224, 224]``: ONNX Runtime's dims, symbolic ones by name (``?`` when unnamed)."""
    return "[" + ", ".join(str(d) if isinstance(d, int) else (d or "?") for d in shape) + "]"


FLOAT_TYPES = ("tensor(float)", "tensor(float16)", "tensor(double)")


def check_io(source: str, inputs, outputs, meta: Mapping[str, str]) -> None:
    """The runner contract of a model's tensors (ONNX Runtime's NodeArg: ``name``, ``type``, ``shape``): one
    float input [N, 3, H, W], a float first output [N, classes] with the metadata's class count; InputError."""
    pixels = input_format_of(meta) == PIXEL_INPUT
    want_in = "one uint8 input [N, H, W, 3]" if pixels else "one float input [N, 3, H, W]"
    want_out = "a float output [N, classes]"
    if len(inputs) != 1:
        names = ", ".join(repr(i.name) for i in inputs)
        raise InputError(f"{source}: {len(inputs)} inputs ({names}): expected {want_in}")
    (inp,) = inputs
    channels = inp.shape[3 if pixels else 1] if len(inp.shape) == 4 else None
    image = len(inp.shape) == 4 and (channels == 3 or not isinstance(channels, int))
    if (inp.type != "tensor(uint8)" if pixels else inp.type not in FLOAT_TYPES) or not image:
        raise InputError(f"{source}: input {inp.name!r} is {inp.type} {shape_text(inp.shape)}: expected {want_in}")
    out = outputs[0] if outputs else None
    if out is None or out.type not in FLOAT_TYPES or len(out.shape) != 2:
        shown = "none" if out is None else f"{out.name!r} is {out.type} {shape_text(out.shape)}"
        raise InputError(f"{source}: output {shown}: expected {want_out}")
    classes = meta.get(META_NUM_CLASSES)
    if classes is not None and isinstance(out.shape[1], int) and out.shape[1] != int(classes):
        raise InputError(f"{source}: output {out.name!r} is {shape_text(out.shape)} but its {META_NUM_CLASSES} is "
                         f"{classes}: expected [N, {classes}]")  # fmt: skip


def model_input(runner: Runner, pixels: np.ndarray | None, x: np.ndarray) -> np.ndarray:
    """What ``runner.run`` takes for one batch: the uint8 ``pixels`` [N, H, W, 3] for a uint8-nhwc model, the
    normalised float32 ``x`` [N, 3, H, W] (the same images, or random inputs) otherwise."""
    if runner.input_format != PIXEL_INPUT:
        return x
    if pixels is None:
        raise ValueError(f"{runner.name} takes uint8 pixels: the caller has only float inputs")
    return pixels
