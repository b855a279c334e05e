"""Deterministic random weights, inputs and stored timm logits for MixNet oracles.

timm itself is *not* needed here: the stored ``tests/oracles/timm_<variant>_<size>.npz``
files were produced once by ``tests/oracles/make_timm_oracles.py`` (run in a separate
venv with timm installed).  A test rebuilds the very same weights and input with
:func:`random_state_dict` and :func:`oracle_input`, loads them into our own model and
compares its logits with :func:`load_oracle`'s ``logits``.

Weight rules (:func:`random_state_dict`), float32 unless noted, one legacy
``np.random.RandomState((zlib.crc32(key) + seed) % 2**32)`` stream per key (its
stream is frozen across numpy versions and platforms):

* ``*.num_batches_tracked``                 -> int64 scalar 0 (shape ``()``)
* BatchNorm (module name, i.e. the second-to-last dotted segment, starts with ``bn``):
  ``weight`` ~ U(0.5, 1.5), ``bias`` ~ N(0, 0.1), ``running_mean`` ~ N(0, 0.1),
  ``running_var`` ~ U(0.5, 1.5)
* 4-D conv weights                          -> N(0, sqrt(CONV_GAIN / fan_in)),
  fan_in = shape[1] * shape[2] * shape[3], CONV_GAIN = 1.6
* 2-D (linear) weights                      -> N(0, 1 / sqrt(shape[1]))
* any other tensor (1-D biases: classifier, SE convs) -> N(0, 0.01)

Values are drawn in float64 by numpy and cast to float32.

Why CONV_GAIN = 1.6 and not He's 2: the running statistics are random, so BatchNorm does
not normalise, and a random swish/SE MixNet is bistable.  With gain 2 the activations grow
~3x per stage (logits std 150 (S) to 5000 (L@256), intermediates > 1e4, FP16-unsafe); with
gain <= 1.5 the signal decays to a bias-driven fixed point and the logits no longer depend
on the input at all (the two batch rows agree to 4 digits).  1.6 sits between the two:
over seeds 1..6 the logits std is 0.5..20, intermediate |activations| stay below ~500, and
the two rows differ by 6..30 % of the logits std.  Even so ~99 % of the logits pattern is
input-independent (white-noise input is averaged out by the global pool), so tests should
also compare ``logits[0] - logits[1]`` with a tolerance relative to its own scale.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

ORACLE_DIR = Path(__file__).resolve().parent / "oracles"
CONV_GAIN = 1.6


def _is_bn(key: str) -> bool:
    parts = key.split(".")
    return len(parts) >= 2 and parts[-2].startswith("bn")


def _draw(key: str, shape: tuple[int, ...], rs: np.random.RandomState, gain: float = CONV_GAIN) -> np.ndarray:
    leaf = key.rsplit(".", 1)[-1]
    if _is_bn(key):
        if leaf in ("weight", "running_var"):
            return rs.uniform(0.5, 1.5, size=shape)
        if leaf in ("bias", "running_mean"):
            return rs.normal(0.0, 0.1, size=shape)
    if len(shape) == 4:
        fan_in = shape[1] * shape[2] * shape[3]
        return rs.normal(0.0, np.sqrt(gain / fan_in), size=shape)
    if len(shape) == 2:
        return rs.normal(0.0, 1.0 / np.sqrt(shape[1]), size=shape)
    return rs.normal(0.0, 0.01, size=shape)


def random_state_dict(
    shapes: Mapping[str, tuple[int, ...]], seed: int, gain: float = CONV_GAIN
) -> dict[str, torch.Tensor]:
    """Deterministic float32 weights for a timm-layout MixNet state_dict (rules: module doc; ``gain``
    replaces CONV_GAIN for the deeper/wider nets, whose activations grow faster: see ``load_oracle``)."""
    out: dict[str, torch.Tensor] = {}
    for key, shape in shapes.items():
        shape = tuple(int(s) for s in shape)
        if key.endswith("num_batches_tracked"):
            out[key] = torch.zeros((), dtype=torch.int64)
            continue
        rs = np.random.RandomState((zlib.crc32(key.encode()) + seed) % 2**32)
        arr = np.asarray(_draw(key, shape, rs, gain), dtype=np.float32).reshape(shape)
        out[key] = torch.from_numpy(np.ascontiguousarray(arr))
    return out


def oracle_input(seed: int, size: int) -> np.ndarray:
    """Float32 input batch of shape (2, 3, size, size), standard normal."""
    rs = np.random.RandomState(seed)
    return rs.standard_normal((2, 3, size, size)).astype(np.float32)


def oracle_path(name: str, size: int | None = None) -> Path:
    """Path of a stored oracle; ``name`` is e.g. ``"mixnet_m_224"``, ``"timm_mixnet_m_224"``
    or ``"mixnet_m"`` together with ``size=224``."""
    stem = name[:-4] if name.endswith(".npz") else name
    if size is not None:
        stem = f"{stem}_{size}"
    if not stem.startswith("timm_"):
        stem = f"timm_{stem}"
    return ORACLE_DIR / f"{stem}.npz"


def load_oracle(name: str, size: int | None = None) -> dict:
    """Load a stored timm oracle.

    Returns a dict with ``logits`` (float32, shape (2, 1000)), ``seed`` (int), ``size`` (int),
    ``gain`` (the conv gain the weights were drawn with; CONV_GAIN for files that do not store one),
    ``variant`` (str), ``timm_version`` (str), ``keys`` (list of state_dict keys in timm's
    order) and ``shapes`` (dict key -> tuple), so that
    ``random_state_dict(o["shapes"], o["seed"], o["gain"])`` and ``oracle_input(o["seed"], o["size"])``
    rebuild exactly what timm was run on.
    """
    with np.load(oracle_path(name, size), allow_pickle=False) as z:
        shapes = {k: tuple(v) for k, v in json.loads(str(z["shapes"])).items()}
        return {
            "logits": z["logits"].astype(np.float32),
            "seed": int(z["seed"]),
            "gain": float(z["gain"]) if "gain" in z.files else CONV_GAIN,
            "size": int(z["size"]),
            "variant": str(z["variant"]),
            "timm_version": str(z["timm_version"]),
            "keys": [str(k) for k in z["keys"]],
            "shapes": shapes,
        }
