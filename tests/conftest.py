"""Shared test fixtures: the timm oracle in ../shared, exported models, GPU skipping."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
# MIXNET_SHARED: the team's shared folder when the checkout is not beside it (a git worktree elsewhere)
FIXTURE = Path(os.environ.get("MIXNET_SHARED", ROOT.parent / "shared")) / "fixtures" / "timm_mixnet_s"


def _has_gpu_stack() -> tuple[bool, str]:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False, "TensorRT is not installed (pip install mixnet-deploy[gpu])"
    try:
        import torch

        if not torch.cuda.is_available():
            return False, "no CUDA device visible to torch"
    except ImportError:  # pragma: no cover
        return False, "torch is not installed"
    return True, ""


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    ok, why = _has_gpu_stack()
    if not ok:
        marker = pytest.mark.skip(reason=f"GPU test: {why}")
        for item in gpu_items:
            item.add_marker(marker)


def pytest_report_header(config):
    ok, why = _has_gpu_stack()
    return f"mixnet-deploy GPU suite: {'enabled' if ok else 'skipped: ' + why}"


@pytest.fixture(scope="session")
def timm_fixture():
    """timm's own mixnet_s weights, input and logits (made with timm 1.0.31), or a skip saying why."""
    files = [FIXTURE / n for n in ("state_dict.safetensors", "input.npy", "logits.npy")]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        pytest.skip(f"timm oracle fixture absent ({missing[0]}): a checkout outside this team's machines")
    return {"weights": files[0], "input": np.load(files[1]), "logits": np.load(files[2])}


@pytest.fixture
def tmp_out(tmp_path):
    out = tmp_path / "out"
    return out


@pytest.fixture(autouse=True, scope="session")
def _quiet_threads():
    # Two cores on CI: keep torch from oversubscribing when ONNX Runtime runs beside it.
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    yield


@pytest.fixture(scope="session")
def oracle_checkpoint(tmp_path_factory):
    """Factory: write the weights a stored timm oracle was computed with as a timm-layout safetensors file.

    The key names and shapes come from *our* model converted to timm's layout, so a wrong
    mapping produces different weights and fails the comparison with timm's logits.
    """
    from safetensors.torch import save_file
    from timm_oracle import load_oracle, oracle_input, random_state_dict

    from mixnet_deploy.arch import get_variant
    from mixnet_deploy.model import build_model
    from mixnet_deploy.weights import own_to_timm

    made = {}

    def make(name: str):
        if name not in made:
            oracle = load_oracle(name)
            spec = get_variant(oracle["variant"])
            shapes = {k: tuple(v.shape) for k, v in own_to_timm(build_model(spec).state_dict(), spec).items()}
            path = tmp_path_factory.mktemp("oracle") / f"timm_{name}.safetensors"
            save_file(random_state_dict(shapes, oracle["seed"]), str(path))
            made[name] = (path, oracle_input(oracle["seed"], oracle["size"]), oracle)
        return made[name]

    return make


@pytest.fixture(scope="session")
def random_checkpoint_s(tmp_path_factory):
    """Seeded random MixNet-S weights (what mixnet-export uses without --weights), saved once per session."""
    from mixnet_deploy.weights import load_model, save_checkpoint

    return save_checkpoint(
        load_model("s", None)[0], tmp_path_factory.mktemp("random_s") / "mixnet_s_random.safetensors"
    )
