"""Checkpoints: our own layout and timm's, from .pth/.pt (weights only) or .safetensors.

Loading never runs pickled code: ``torch.load(..., weights_only=True)`` or safetensors. The
layout is detected from the key names, converted to ours, and loaded strictly; a mismatch
names the first offending keys and the variant the checkpoint looks like.

Our layout differs from timm's in three places: blocks are numbered flat (``blocks.7``, not
``blocks.2.3``), stem and head are submodules (``stem.conv``, ``head.bn``), and every conv that a
BN follows is a :class:`~mixnet_deploy.model.MixedConv2d` (``conv_dw.convs.0.weight`` where timm
has ``conv_dw.weight`` for a single kernel).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
import re
import types
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .arch import VARIANT_CHOICES, VARIANTS, VariantSpec, get_variant, normalize_variant
from .data import Preprocess, synthetic_crops
from .errors import InputError
from .model import MixNet, build_model, init_random

OWN_FORMAT = "mixnet-deploy"
RANDOM_SEED = 0

_TIMM_TOP = {"conv_stem.weight": "stem.conv.convs.0.weight", "conv_head.weight": "head.conv.convs.0.weight"}
_TIMM_BN = {"bn1": "stem.bn", "bn2": "head.bn"}
_TIMM_BLOCK = re.compile(r"^blocks\.(\d+)\.(\d+)\.(.+)$")
_TIMM_CONV = re.compile(r"^(conv_pw|conv_dw|conv_pwl)\.(?:(\d+)\.)?weight$")
_OWN_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_OWN_CONV = re.compile(r"^(conv_pw|conv_dw|conv_pwl)\.convs\.(\d+)\.weight$")


@dataclass(frozen=True)
class WeightsInfo:
    source: str  # file path, or "random-init(seed=0)"
    layout: str  # "timm", "mixnet-deploy" or "random"
    sha256: str  # of the canonical state_dict (our key names), independent of the container
    variant: str
    num_classes: int
    variant_reason: str = ""  # why this variant: the flag, the only fit by shapes, or a reliable hint

    @property
    def is_random(self) -> bool:
        return self.layout == "random"


def timm_to_own(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a timm ``mixnet_*`` state_dict to our layout (stage-nested blocks become flat)."""
    stage_sizes: dict[int, int] = {}
    for key in state:
        if m := _TIMM_BLOCK.match(key):
            s, j = int(m[1]), int(m[2])
            stage_sizes[s] = max(stage_sizes.get(s, 0), j + 1)
    offsets, total = {}, 0
    for s in sorted(stage_sizes):
        offsets[s], total = total, total + stage_sizes[s]
    multi = {k.rsplit(".", 2)[0] for k in state if re.search(r"\.conv_(pw|dw|pwl)\.\d+\.weight$", k)}
    out = {}
    for key, value in state.items():
        if key in _TIMM_TOP:
            new = _TIMM_TOP[key]
        elif (top := key.split(".", 1)[0]) in _TIMM_BN:
            new = _TIMM_BN[top] + "." + key.split(".", 1)[1]
        elif m := _TIMM_BLOCK.match(key):
            n, rest = offsets[int(m[1])] + int(m[2]), m[3]
            if c := _TIMM_CONV.match(rest):
                group = c[2] if f"blocks.{m[1]}.{m[2]}.{c[1]}" in multi else "0"
                rest = f"{c[1]}.convs.{group}.weight"
            new = f"blocks.{n}.{rest}"
        else:
            new = key
        out[new] = value
    return out


def own_to_timm(state: Mapping[str, torch.Tensor], spec: VariantSpec) -> dict[str, torch.Tensor]:
    """Rename our state_dict to timm's ``mixnet_*`` layout (the inverse of :func:`timm_to_own`)."""
    where = [(s, j) for s, stage in enumerate(spec.stages) for j in range(len(stage))]
    groups: dict[str, int] = {}
    for key in state:
        if m := re.match(r"^(.*\.conv_(?:pw|dw|pwl))\.convs\.(\d+)\.weight$", key):
            groups[m[1]] = max(groups.get(m[1], 0), int(m[2]) + 1)
    top = {v: k for k, v in _TIMM_TOP.items()}
    bn = {v: k for k, v in _TIMM_BN.items()}
    out = {}
    for key, value in state.items():
        if key in top:
            new = top[key]
        elif (prefix := key.rsplit(".", 1)[0]) in bn:
            new = bn[prefix] + "." + key.rsplit(".", 1)[1]
        elif m := _OWN_BLOCK.match(key):
            s, j = where[int(m[1])]
            rest = m[2]
            if c := _OWN_CONV.match(rest):
                single = groups[f"blocks.{m[1]}.{c[1]}"] == 1
                rest = f"{c[1]}.weight" if single else f"{c[1]}.{c[2]}.weight"
            new = f"blocks.{s}.{j}.{rest}"
        else:
            new = key
        out[new] = value
    return out


def state_dict_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over sorted keys, dtypes, shapes and bytes: the same weights hash the same in any container."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _unwrap(obj, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model", "state_dict_ema", "model_ema"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise InputError(f"{path}: not a checkpoint: expected a state_dict (a mapping of names to tensors)")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise InputError(f"{path}: not a state_dict: expected only string keys with tensor values")
    prefix = os.path.commonprefix(list(obj))
    strip = next((p for p in ("module.", "model.", "_orig_mod.") if prefix.startswith(p)), "")
    return {k[len(strip) :]: v for k, v in obj.items()}


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a state_dict without running code. Returns (tensors, safetensors metadata or {})."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"weights file {str(path)!r} does not exist")
    if not path.is_file():
        raise InputError(f"weights {str(path)!r} is not a file: expected a .pth/.pt/.safetensors checkpoint")
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"weights file {str(path)!r} is empty: expected a .pth/.pt/.safetensors checkpoint")
    with open(path, "rb") as f:
        head = f.read(16)
    looks_safetensors = path.suffix == ".safetensors" or (len(head) > 8 and head[8:9] == b"{")
    if looks_safetensors:
        from safetensors import safe_open

        _check_safetensors_frame(path, head, size)
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # safetensors raises several types for corrupt files
            raise InputError(f"{path}: not a readable safetensors file ({_first_line(exc)})") from exc
        return _unwrap(tensors, path), meta
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # torch.save: a zip, or a legacy pickle
        raise InputError(
            f"{path}: not a PyTorch checkpoint (starts with {head[:8]!r}, neither a zip nor a pickle): "
            "expected .pth/.pt/.safetensors"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise InputError(
            f"{path}: refused to unpickle (weights_only=True): the file holds objects other than tensors "
            f"({_unpickle_reason(exc)}); expected a plain state_dict or a .safetensors file"
        ) from exc
    except Exception as exc:  # truncated zip, not a pickle at all, ...
        raise InputError(
            f"{path}: not a readable PyTorch checkpoint ({_first_line(exc)}); expected .pth/.pt/.safetensors"
        ) from exc
    return _unwrap(obj, path), {}


def _check_safetensors_frame(path: Path, head: bytes, size: int) -> None:
    """A safetensors file starts with its JSON header's length (8 bytes, little-endian) and the header's ``{``:
    a file that does not (a text file renamed) is named as not safetensors, with its first bytes, before the
    library's internal wording ("header too large")."""
    length = int.from_bytes(head[:8], "little") if len(head) >= 8 else -1
    if not (0 < length <= size - 8 and head[8:9] == b"{"):
        raise InputError(
            f"{path}: not a safetensors file (starts with {head[:8]!r}, not an 8-byte header length and a JSON "
            "header): expected .safetensors written by safetensors, or .pth/.pt"
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    if not text or len(text[0]) < 8:  # KeyError('101') says nothing alone
        return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    sentence = text[0].split(". ")[0]  # the first sentence, not torch's advice after it
    return sentence[:200]


def _unpickle_reason(exc: BaseException) -> str:
    """The line of torch's weights_only refusal that says what was refused (not its 'set weights_only=False')."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for line in lines:  # "Unsupported global: GLOBAL exec ...", "... unsupported GLOBAL posix.system ..."
        if "nsupported" in line:
            return line.split("WeightsUnpickler error:")[-1].strip().split(". ")[0][:200]
    skip = ("Weights only load failed", "Please file an issue", "Check the documentation", "(1)", "(2)")
    lines = [ln for ln in lines if not ln.startswith(skip) and "weights_only" not in ln]
    return lines[0][:200] if lines else "unsupported pickle content"


def detect_layout(state: Mapping[str, torch.Tensor], path: str = "checkpoint") -> str:
    if "conv_stem.weight" in state:
        return "timm"
    if "stem.conv.convs.0.weight" in state:
        return "mixnet-deploy"
    sample = ", ".join(list(state)[:3])
    raise InputError(
        f"{path}: not a MixNet checkpoint: found keys {sample}, ...; expected timm's 'conv_stem.weight' "
        "or mixnet-deploy's 'stem.conv.convs.0.weight'"
    )


@functools.cache
def expected_shapes(variant: str, num_classes: int = 1000) -> Mapping[str, tuple[int, ...]]:
    """Our state_dict's key -> shape for a variant (built on the meta device: no memory, no init)."""
    with torch.device("meta"):
        model = MixNet(get_variant(variant, num_classes))
    return types.MappingProxyType({k: tuple(v.shape) for k, v in model.state_dict().items()})


def candidate_variants(state: Mapping[str, torch.Tensor]) -> tuple[str, ...]:
    """Every variant whose keys and shapes an own-layout state_dict has exactly (``s`` and ``tf_s`` both fit
    one file: the tf ports differ only in padding and BN eps, which no tensor records)."""
    head = state.get("classifier.weight")
    num_classes = int(head.shape[0]) if head is not None and head.ndim == 2 else 1000
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    return tuple(name for name in VARIANTS if shapes == dict(expected_shapes(name, num_classes)))


_HF_CACHE_REPO = re.compile(r"models--timm--((?:tf_)?mixnet_[a-z]+)(?:\.[\w-]+)?$")


def variant_hint(path: str | os.PathLike, meta: Mapping[str, str]) -> tuple[str, str] | None:
    """(variant, reason) from a reliable hint, or None: our safetensors metadata ``variant``, a Hugging
    Face cache folder ``models--timm--<model>.<tag>`` on the path, or the timm ``config.json``
    (``architecture``) that the Hub stores beside the weights. Names that no variant has are ignored."""
    found = []
    if meta.get("variant"):
        found.append((meta["variant"], f"safetensors metadata variant={meta['variant']!r}"))
    for part in Path(path).parts:
        if m := _HF_CACHE_REPO.match(part):
            found.append((m[1], f"Hugging Face cache path {part}"))
    config = Path(path).parent / "config.json"
    if config.is_file():
        try:
            arch = json.loads(config.read_text())["architecture"]
            found.append((str(arch), f"{config.name} beside it: architecture={arch!r}"))
        except (OSError, ValueError, KeyError, TypeError):
            pass
    for name, reason in found:
        try:
            return normalize_variant(name), reason
        except ValueError:
            continue
    return None


def choose_variant(
    state: Mapping[str, torch.Tensor], meta: Mapping[str, str], path: str, variant: str | None
) -> tuple[str, str]:
    """(variant, why) for an own-layout state_dict: the explicit ``variant``, else the only one whose keys
    and shapes fit, else a reliable hint (:func:`variant_hint`). Never a guess between look-alikes:
    a checkpoint that fits several variants without a hint is an InputError naming them."""
    fits = candidate_variants(state)
    hint = variant_hint(path, meta)
    if variant is not None:
        given = get_variant(variant).name
        if hint is not None and hint[0] != given and {hint[0], given} <= set(fits):  # look-alikes: shapes fit both
            named = get_variant(hint[0]).model_name
            raise InputError(
                f"expected {hint[0]} (or no --variant): {path}'s {hint[1]} names {named}, and its shapes fit both",
                field="variant", value=variant, problem=f"contradicts the weights ({named})",
            )  # fmt: skip
        return given, "given by --variant"
    if not fits:
        looks = guess_variant(state)
        if hint is not None or looks is not None:  # fits none: the keys check then says what does not fit
            return hint or (looks, "its stem width and block count (it fits no variant exactly)")
        expected = f"{path} matches no MixNet variant by its shapes: expected one of {VARIANT_CHOICES} (then the error "
        expected += "says why)"
        raise InputError(expected, field="variant", problem="is needed")
    names = " and ".join(get_variant(v).model_name for v in fits)
    if hint is not None:
        if hint[0] not in fits:
            named = get_variant(hint[0]).model_name
            raise InputError(f"{path}: its {hint[1]} names {named}, but its shapes fit {names}")
        return hint[0], hint[1] + (f" (its shapes fit {names})" if len(fits) > 1 else "")
    if len(fits) == 1:
        return fits[0], f"the only variant whose keys and shapes fit ({names})"
    raise InputError(
        f"expected {' or '.join(fits)} (the weights' origin), or safetensors metadata 'variant'",
        field="variant",
        problem=f"needed: {path} fits {names} (the same keys and shapes: tf_mixnet_* differ in padding and BN eps "
        "only) and nothing says which",
    )


def guess_variant(state: Mapping[str, torch.Tensor]) -> str | None:
    """The variant whose stem width and block count match an own-layout state_dict, if any."""
    stem = state.get("stem.conv.convs.0.weight")
    n_blocks = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    for name, spec in VARIANTS.items():
        if stem is not None and stem.shape[0] == spec.stem_ch and n_blocks == len(spec.blocks):
            return name
    return None


FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_tensors(state: Mapping[str, torch.Tensor], path: str) -> None:
    """Values a MixNet can hold, before anything is built from them (InputError naming the tensor):
    floating point tensors (integer ``num_batches_tracked`` aside) that are finite in float32, BN variances
    >= 0, a classifier of at least one class. Otherwise an int64 or complex tensor would be cast silently
    (torch drops the imaginary part with a warning) and a negative variance would surface as NaN outputs,
    blamed on ONNX Runtime."""
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        if value.dtype not in FLOAT_DTYPES:
            names = "/".join(str(d).removeprefix("torch.") for d in FLOAT_DTYPES)
            raise InputError(f"{path}: {key} is {value.dtype}: expected a floating point tensor ({names})")
        as_float32 = value.to(torch.float32)
        if not torch.isfinite(as_float32).all():
            raise InputError(f"{path}: {key} holds NaN or Inf values (in float32): expected finite weights")
        if key.endswith("running_var") and (as_float32 < 0).any():
            raise InputError(
                f"{path}: {key} holds negative values (min {as_float32.min().item():.3g}): expected BN running "
                "variances >= 0"
            )
    head = state.get("classifier.weight")
    if head is not None and head.ndim == 2 and head.shape[0] < 1:
        raise InputError(f"{path}: classifier.weight has shape {tuple(head.shape)}, 0 classes: expected at least 1")


def _check_keys(state: Mapping[str, torch.Tensor], model: MixNet, path: str) -> None:
    expected = model.state_dict()
    looks = guess_variant(state)
    hint = f"; the checkpoint looks like {get_variant(looks).model_name}" if looks else "; it matches no MixNet variant"
    want = model.spec.model_name
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(
                f"missing {', '.join(missing[:3])}" + (f" (+{len(missing) - 3} more)" if len(missing) > 3 else "")
            )
        if unexpected:
            more = f" (+{len(unexpected) - 3} more)" if len(unexpected) > 3 else ""
            parts.append(f"unexpected {', '.join(unexpected[:3])}{more}")
        raise InputError(f"{path}: does not fit {want}: {'; '.join(parts)}{hint}")
    for key, ref in expected.items():
        if tuple(state[key].shape) != tuple(ref.shape):
            raise InputError(
                f"{path}: does not fit {want}: {key} has shape {tuple(state[key].shape)}, "
                f"expected {tuple(ref.shape)}{hint}"
            )


def hf_hub_cache() -> Path:
    """The local Hugging Face hub cache: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub."""
    home = os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface"))
    return Path(os.environ.get("HF_HUB_CACHE") or os.path.join(home, "hub"))


def find_timm_cache(variant: str) -> Path:
    """timm's pretrained weights of a variant (``mixnet_xl.ra_in1k``, ``tf_mixnet_s.in1k``, ...) from the
    local Hugging Face cache (never downloads)."""
    spec = get_variant(variant)
    if spec.pretrained is None:
        have = ", ".join(v for v, s in VARIANTS.items() if s.pretrained)
        raise InputError(
            f"expected a variant timm has weights for ({have}), or a checkpoint file",
            field="weights",
            value="timm",
            problem=f"with --variant {spec.name}: timm defines {spec.model_name} without pretrained weights",
        )
    hub = hf_hub_cache()
    repo = hub / f"models--timm--{spec.pretrained}" / "snapshots"
    for name in ("model.safetensors", "pytorch_model.bin"):
        found = sorted(repo.glob(f"*/{name}"))
        if found:
            return found[-1]
    raise InputError(
        f"expected {repo}/<rev>/model.safetensors (fetch it where there is network: "
        f"huggingface-cli download timm/{spec.pretrained}), or a checkpoint file",
        field="weights",
        value="timm",
        problem=f"finds no timm/{spec.pretrained} in the Hugging Face cache {hub}",
    )


def _random_model(variant: str | None) -> tuple[MixNet, WeightsInfo]:
    spec = get_variant(variant or "s")
    # BN statistics from seeded colour fields (numpy only: no decoder, no verification photo): a trained net's scale
    pre = Preprocess()
    fields = torch.from_numpy(pre.normalize(synthetic_crops(16, pre).crops))
    model = init_random(build_model(spec), RANDOM_SEED, images=fields)
    why = "given by --variant" if variant else "the default for random weights"
    info = WeightsInfo(
        f"random-init(seed={RANDOM_SEED})", "random", state_dict_sha256(model.state_dict()), spec.name, 1000, why
    )
    return model, info


def load_model(variant: str | None, weights: str | os.PathLike | None = None) -> tuple[MixNet, WeightsInfo]:
    """Build a MixNet and fill it: from a checkpoint file, timm's cached weights, or seeded random init.

    ``variant`` may be None when ``weights`` is a file: the checkpoint's own variant is used when its
    shapes or a reliable hint name exactly one (:func:`choose_variant`); look-alikes are never guessed.
    """
    if weights is None:
        return _random_model(variant)
    timm_tag = None
    if str(weights) == "timm":
        if variant is None:
            have = ", ".join(v for v, sp in VARIANTS.items() if sp.pretrained)
            raise InputError(
                f"expected --variant ({have}) with it", field="weights", value="timm", problem="needs a variant"
            )
        weights = find_timm_cache(variant)
        timm_tag = get_variant(variant).pretrained
    path = str(weights)
    state, meta = read_state_dict(weights)
    layout = detect_layout(state, path)
    if layout == "timm":
        state = timm_to_own(state)
    check_tensors(state, path)
    name, why = choose_variant(state, meta, path, variant)
    if timm_tag is not None:
        why = f"--weights timm with --variant {variant}: timm/{timm_tag}"
    head = state.get("classifier.weight")
    num_classes = int(head.shape[0]) if head is not None and head.ndim == 2 else 1000
    model = build_model(name, num_classes)
    _check_keys(state, model, path)
    model.load_state_dict({k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()})
    model.eval()
    return model, WeightsInfo(path, layout, state_dict_sha256(model.state_dict()), name, num_classes, why)


def save_checkpoint(model: MixNet, path: str | os.PathLike) -> Path:
    """Write our own layout as safetensors with the variant in its metadata (atomically)."""
    from safetensors.torch import save_file

    from .atomic import atomic_path

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": OWN_FORMAT, "variant": model.spec.name, "num_classes": str(model.spec.num_classes)}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return Path(path)
