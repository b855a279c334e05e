import os
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from timm_oracle import load_oracle

from mixnet_deploy.arch import get_variant
from mixnet_deploy.errors import InputError
from mixnet_deploy.model import build_model, init_random
from mixnet_deploy.runtimes import run_torch
from mixnet_deploy.weights import (
    find_timm_cache,
    load_model,
    own_to_timm,
    read_state_dict,
    save_checkpoint,
    timm_to_own,
)


def test_timm_fixture_reproduced_by_torch_model(timm_fixture):
    model, info = load_model(None, timm_fixture["weights"])
    assert (info.layout, info.variant) == ("timm", "s")
    out = run_torch(model, timm_fixture["input"])
    assert np.abs(out - timm_fixture["logits"]).max() <= 1e-5


@pytest.mark.parametrize("name", ["mixnet_s_224", "mixnet_m_224", "mixnet_l_224"])
def test_our_timm_layout_matches_timms_keys_and_shapes(name):
    oracle = load_oracle(name)
    spec = get_variant(oracle["variant"])
    ours = own_to_timm(build_model(spec).state_dict(), spec)
    assert list(ours) == oracle["keys"]  # same names, same order as timm's state_dict
    assert {k: tuple(v.shape) for k, v in ours.items()} == oracle["shapes"]


def test_timm_to_own_and_back_is_identity(timm_fixture):
    state, _ = read_state_dict(timm_fixture["weights"])
    model = build_model("s")
    own = timm_to_own(state)
    assert set(own) == set(model.state_dict())
    back = own_to_timm(own, model.spec)
    assert list(back) == list(state)
    assert all(torch.equal(back[k], state[k]) for k in state)


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "module."])
def test_pth_wrappers(tmp_path, timm_fixture, wrap):
    state, _ = read_state_dict(timm_fixture["weights"])
    obj = {
        "plain": state,
        "state_dict": {"state_dict": state, "epoch": 3},
        "model": {"model": state},
        "module.": {f"module.{k}": v for k, v in state.items()},
    }[wrap]
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    model, info = load_model("s", path)
    assert info.layout == "timm"
    assert np.abs(run_torch(model, timm_fixture["input"]) - timm_fixture["logits"]).max() <= 1e-5


def test_own_format_roundtrip(tmp_path):
    model = init_random(build_model("m"), seed=5)
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    loaded, info = load_model(None, path)
    assert (info.layout, info.variant) == ("mixnet-deploy", "m")
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64), dtype=np.float32)
    np.testing.assert_array_equal(run_torch(loaded, x), run_torch(model, x))
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_sha256_independent_of_container(tmp_path, timm_fixture):
    _, a = load_model("s", timm_fixture["weights"])
    state, _ = read_state_dict(timm_fixture["weights"])
    torch.save({"state_dict": state}, tmp_path / "x.pt")
    _, b = load_model("s", tmp_path / "x.pt")
    assert a.sha256 == b.sha256


def test_other_variant_named(timm_fixture):
    with pytest.raises(InputError, match=r"does not fit mixnet_m: .*looks like mixnet_s"):
        load_model("m", timm_fixture["weights"])


def test_shape_mismatch_named(tmp_path):
    state = build_model("s").state_dict()
    state["head.conv.convs.0.weight"] = torch.zeros(1536, 199, 1, 1)
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(InputError, match=r"head\.conv\.convs\.0\.weight has shape \(1536, 199, 1, 1\), expected"):
        load_model("s", tmp_path / "bad.safetensors")


def test_other_model_refused(tmp_path):
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "resnet.pth")
    with pytest.raises(InputError, match="not a MixNet checkpoint"):
        load_model("s", tmp_path / "resnet.pth")


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_pickle_payload_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open("evil.pth", "wb") as f:
        pickle.dump({"state_dict": _Payload()}, f)
    with pytest.raises(InputError, match="weights_only"):
        load_model("s", "evil.pth")
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()


@pytest.mark.parametrize("content", [b"", b"\x80\x04garbage", b"PK\x03\x04truncated"])
def test_unreadable_files(tmp_path, content):
    path = tmp_path / "w.pth"
    path.write_bytes(content)
    with pytest.raises(InputError, match="w.pth"):
        load_model("s", path)


def test_timm_cache_is_looked_up_locally(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(InputError, match="no timm/mixnet_s.ft_in1k in the Hugging Face cache"):
        find_timm_cache("s")
    snap = tmp_path / "models--timm--mixnet_s.ft_in1k" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    state = own_to_timm(init_random(build_model("s")).state_dict(), build_model("s").spec)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snap / "model.safetensors"))
    _, info = load_model("s", "timm")
    assert info.source.endswith("model.safetensors") and info.layout == "timm"


@pytest.mark.parametrize("name", ["mixnet_m_224", "mixnet_l_224", "mixnet_l_256"])
def test_timm_oracles_m_l_in_torch(oracle_checkpoint, name):
    path, x, oracle = oracle_checkpoint(name)
    model, info = load_model(oracle["variant"], path)  # without it: m and tf_m look alike (test_variants.py)
    assert info.variant == oracle["variant"][-1]
    assert np.abs(run_torch(model, x) - oracle["logits"]).max() <= 1e-4


def test_text_named_safetensors_is_named_as_not_safetensors(tmp_path):
    """Issue 21 item 12: a text file named .safetensors is 'not a safetensors file' with its first bytes (as the
    .pth case), not the library's internal 'header too large'."""
    path = tmp_path / "notes.safetensors"
    path.write_text("hello, I am a text file\n")
    with pytest.raises(InputError, match=r"not a safetensors file \(starts with b'hello, I'") as err:
        load_model("s", path)
    assert "header too large" not in str(err.value).lower()
