"""Shared test fixtures: the timm oracle in ../shared, exported models, GPU skipping."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
# The team's shared fixtures live beside the checkout (../shared/fixtures); MIXNET_FIXTURES points elsewhere.
FIXTURE = Path(os.environ.get("MIXNET_FIXTURES") or ROOT.parent / "shared" / "fixtures") / "timm_mixnet_s"
FIXTURE_FILES = ("state_dict.safetensors", "input.npy", "logits.npy")

# ---------------------------------------------------------------- GPU tests
#
# ``@pytest.mark.gpu`` tests need TensorRT, Polygraphy, cuda-python and a CUDA device (what the engine code
# uses: torch may well be the CPU build, as in docker/Dockerfile). ``@pytest.mark.gpu(needs=(...))`` names
# other prerequisites too. A plain run skips them with the reason; a run that selects them (``-m gpu``, or
# MIXNET_REQUIRE_GPU=1) FAILS each one whose prerequisite is missing, so a GPU suite cannot pass having
# tested nothing.


def _tensorrt_stack() -> str | None:
    from mixnet_deploy.gpu_stack import gpu_stack_status

    ok, why = gpu_stack_status()
    return None if ok else f"{why} (pip install 'mixnet-deploy[gpu]' on a machine with an NVIDIA GPU and driver)"


def _torch_cuda() -> str | None:
    import torch

    return None if torch.cuda.is_available() else f"torch {torch.__version__} sees no CUDA device (a CPU build?)"


def _ort_gpu() -> str | None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        return None
    return f"onnxruntime {ort.__version__} has no CUDA provider (pip install onnxruntime-gpu, not onnxruntime)"


def _timm_fixture() -> str | None:
    missing = [n for n in FIXTURE_FILES if not (FIXTURE / n).is_file()]
    return f"the timm fixture {FIXTURE / missing[0]} is absent (MIXNET_FIXTURES=DIR points at it)" if missing else None


GPU_PREREQUISITES = {
    "tensorrt": _tensorrt_stack,
    "torch-cuda": _torch_cuda,
    "ort-gpu": _ort_gpu,
    "fixture": _timm_fixture,
}
_checked: dict[str, str | None] = {}


def missing_prerequisite(needs) -> str | None:
    """The first missing prerequisite of ``needs`` (names in GPU_PREREQUISITES), as a reason; None if all there."""
    for need in needs:
        if need not in _checked:
            _checked[need] = GPU_PREREQUISITES[need]()
        if _checked[need]:
            return _checked[need]
    return None


def gpu_tests_required(config) -> bool:
    """``-m gpu`` (or an expression selecting gpu tests) or MIXNET_REQUIRE_GPU=1."""
    expr = config.getoption("markexpr", "") or ""
    return os.environ.get("MIXNET_REQUIRE_GPU") == "1" or bool(re.search(r"(?<!not )\bgpu\b", expr))


def _needs(item) -> tuple[str, ...]:
    marker = item.get_closest_marker("gpu")
    return tuple(marker.kwargs.get("needs", ("tensorrt",)))


def pytest_collection_modifyitems(config, items):
    if gpu_tests_required(config):
        return  # pytest_runtest_setup fails them instead
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            why = missing_prerequisite(_needs(item))
            if why:
                item.add_marker(pytest.mark.skip(reason=f"GPU test: {why}"))


def pytest_runtest_setup(item):
    if item.get_closest_marker("gpu") is not None and gpu_tests_required(item.config):
        why = missing_prerequisite(_needs(item))
        if why:
            pytest.fail(f"GPU test selected (-m gpu) but {why}", pytrace=False)


def pytest_report_header(config):
    why = missing_prerequisite(("tensorrt",))
    state = "required (-m gpu)" if gpu_tests_required(config) else "enabled" if not why else "skipped: " + why
    return f"mixnet-deploy GPU suite: {state}; timm fixture: {_timm_fixture() or FIXTURE}"


@pytest.fixture(scope="session")
def timm_fixture(tmp_path_factory):
    """timm's own mixnet_s weights, input and logits (made with timm 1.0.31), or a skip saying why.

    ``bare``: the fixture's file as timm wrote it. Its keys and shapes fit ``mixnet_s`` and ``tf_mixnet_s``
    alike, so loading it needs an explicit variant (issue 14). ``weights``: the same tensors with
    safetensors metadata ``variant = "s"`` (a reliable hint, as our own checkpoints carry), for the
    many tests about other things that load it without a variant.
    """
    from safetensors.torch import load_file, save_file

    files = [FIXTURE / n for n in FIXTURE_FILES]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        pytest.skip(f"timm oracle fixture absent ({missing[0]}): a checkout outside this team's machines")
    labelled = tmp_path_factory.mktemp("timm_fixture") / "mixnet_s_timm.safetensors"
    save_file(load_file(str(files[0])), str(labelled), metadata={"variant": "s"})
    return {"weights": labelled, "bare": files[0], "input": np.load(files[1]), "logits": np.load(files[2])}


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
    mapping produces different weights and fails the comparison with timm's logits. The file has
    no metadata (like a timm checkpoint): ``mixnet_m`` and ``tf_mixnet_m`` files look alike, so
    loading one needs the oracle's variant given explicitly.
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
            save_file(random_state_dict(shapes, oracle["seed"], oracle["gain"]), str(path))
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


@contextlib.contextmanager
def every_file_accepted():
    """Tests of graph structure and engines (not accuracy) with ``--calib synthetic``: an INT8 file calibrated on
    colour fields is refused on photos since every precision is verified on them (issue 21), so these accept
    every file's figures (they are still measured and reported)."""
    from mixnet_deploy import acceptance

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(acceptance, "tolerance_judge", lambda reference, tolerance: lambda out: ({"criterion": "none"}, []))
        yield
