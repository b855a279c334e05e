"""Issue 14: every MixNet timm ships (xl, xxl, tf_s/m/l), exact against timm, and no guess between look-alikes.

The oracles in tests/oracles were made by timm 1.0.31 itself (tests/oracles/make_timm_oracles.py, in a
separate venv); the weights are rebuilt here from the stored seed through OUR timm-layout mapping.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from model_facts import count_multi_group
from safetensors.torch import save_file
from timm_oracle import load_oracle

from mixnet_deploy.arch import VARIANTS, get_variant, scale_stage_depth
from mixnet_deploy.cli import export_main
from mixnet_deploy.errors import InputError
from mixnet_deploy.export_reports import read_report
from mixnet_deploy.fold import fold_bn
from mixnet_deploy.lowering import lower
from mixnet_deploy.model import MixNet, build_model, init_random, same_pads
from mixnet_deploy.onnx_export import op_counts, read_metadata
from mixnet_deploy.parity import ParityConfig, run_parity
from mixnet_deploy.pipeline import ExportConfig, run_export
from mixnet_deploy.runtimes import ort_session, run_ort, run_torch
from mixnet_deploy.triton import default_model_name
from mixnet_deploy.weights import find_timm_cache, load_model, own_to_timm

NEW_ORACLES = ["mixnet_xl_224", "mixnet_xxl_224", "tf_mixnet_s_224", "tf_mixnet_m_224", "tf_mixnet_l_224",
               "tf_mixnet_l_256"]  # fmt: skip

# timm 1.0.31: sum(p.numel() for p in timm.create_model(name).parameters()) (issue 14, MIXNET.md)
TIMM_PARAMS = {
    "s": 4_134_606, "m": 5_014_382, "l": 7_329_252, "xl": 11_896_768, "xxl": 23_961_752,
    "tf_s": 4_134_606, "tf_m": 5_014_382, "tf_l": 7_329_252,
}  # fmt: skip


@pytest.mark.parametrize("variant", list(TIMM_PARAMS))
def test_param_counts_equal_timms(variant):
    with torch.device("meta"):
        model = MixNet(get_variant(variant))
    assert sum(p.numel() for p in model.parameters()) == TIMM_PARAMS[variant]


def test_depth_scaled_per_stage_as_timm():
    assert [len(s) for s in VARIANTS["xl"].stages] == [1, 2, 5, 5, 5, 5]
    assert [len(s) for s in VARIANTS["xxl"].stages] == [1, 3, 5, 5, 5, 5]
    assert scale_stage_depth((1, 3), 1.2) == (1, 4)  # the added block goes to the last row
    assert scale_stage_depth((1, 1), 1.3) == (1, 2)  # round(2.6) = 3, distributed from the back
    assert scale_stage_depth((1, 3), 1.0) == (1, 3)
    assert VARIANTS["xl"].stem_ch == 40 and VARIANTS["xxl"].stem_ch == 56 and VARIANTS["xl"].head_ch == 1536


def test_tf_ports_differ_only_in_padding_and_bn_eps():
    for base in "sml":
        tf, pt = VARIANTS[f"tf_{base}"], VARIANTS[base]
        assert tf.stages == pt.stages and tf.stem_ch == pt.stem_ch
        assert (tf.padding, tf.bn_eps, pt.padding, pt.bn_eps) == ("same", 1e-3, "pytorch", 1e-5)
        assert tf.model_name == f"tf_mixnet_{base}" == default_model_name(f"tf_{base}")
    assert {m.eps for m in build_model("tf_s").modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1e-3}


@pytest.mark.parametrize("size,k,before,after", [(224, 3, 0, 1), (112, 5, 1, 2), (14, 7, 2, 3), (15, 3, 1, 1)])
def test_same_pads_as_tensorflow(size, k, before, after):
    assert same_pads(size, k, 2) == (before, after)  # stride 2: asymmetric on even sizes
    assert same_pads(size, k, 1) == (k // 2, k // 2)


@pytest.mark.parametrize("name", NEW_ORACLES)
def test_timm_layout_keys_and_shapes(name):
    oracle = load_oracle(name)
    spec = get_variant(oracle["variant"])
    ours = own_to_timm(build_model(spec).state_dict(), spec)
    assert list(ours) == oracle["keys"]
    assert {k: tuple(v.shape) for k, v in ours.items()} == oracle["shapes"]


@pytest.mark.parametrize("name", NEW_ORACLES)
def test_torch_model_reproduces_timm(oracle_checkpoint, name):
    path, x, oracle = oracle_checkpoint(name)
    model, info = load_model(oracle["variant"], path)
    assert info.variant_reason == "given by --variant"
    assert np.abs(run_torch(model, x) - oracle["logits"]).max() <= 1e-4


EXPORTS = [(name, "split") for name in NEW_ORACLES] + [
    ("tf_mixnet_s_224", "merged"),
    ("tf_mixnet_m_224", "merged"),
    ("tf_mixnet_l_256", "merged"),
]


@pytest.mark.parametrize("name,mdconv", EXPORTS)
def test_fp32_onnx_reproduces_timm(tmp_path, oracle_checkpoint, name, mdconv):
    """The exported, BN-folded ONNX file in ONNX Runtime against timm's own logits, fp32 within 1e-4."""
    weights, x, oracle = oracle_checkpoint(name)
    spec = get_variant(oracle["variant"])
    cfg = ExportConfig(variant=spec.name, weights=str(weights), img_size=oracle["size"], out_dir=tmp_path,
                       mdconv=mdconv, engine="skip")  # fmt: skip
    run_export(cfg)
    path = tmp_path / f"{spec.model_name}.onnx"
    assert np.abs(run_ort(ort_session(str(path)), x) - oracle["logits"]).max() <= 1e-4
    proto = onnx.load(str(path))
    ops = op_counts(proto)
    assert not {"BatchNormalization", "Pad", "Shape"} & set(ops)
    if mdconv == "merged":
        assert "Split" not in ops  # the stride-2 SAME stages merged too
    meta = read_metadata(proto)
    assert (meta["mixnet.variant"], meta["mixnet.model"], meta["mixnet.padding"]) == (
        spec.name, spec.model_name, spec.padding
    )  # fmt: skip


def _conv_pads(proto: onnx.ModelProto) -> list[tuple[int, int, tuple[int, ...]]]:
    """(kernel, stride, pads) of every Conv."""
    out = []
    for node in proto.graph.node:
        if node.op_type == "Conv":
            att = {a.name: list(a.ints) for a in node.attribute}
            out.append((att["kernel_shape"][0], att["strides"][0], tuple(att.get("pads", [0, 0, 0, 0]))))
    return out


@pytest.mark.parametrize("mdconv", ["split", "merged"])
def test_tf_graph_has_static_asymmetric_conv_pads(tmp_path, mdconv):
    run_export(ExportConfig(variant="tf_s", img_size=64, out_dir=tmp_path, mdconv=mdconv, engine="skip"))
    path = tmp_path / "tf_mixnet_s.onnx"
    convs = _conv_pads(onnx.load(str(path)))
    stride2 = [(k, pads) for k, s, pads in convs if s == 2]
    # stem + every stride-2 stage (S: 4), per kernel group when split; SAME at even sizes: k//2-1 before, k//2 after
    assert len(stride2) == (1 + 1 + 3 + 3 + 5 if mdconv == "split" else 5)
    assert all(pads == (k // 2 - 1, k // 2 - 1, k // 2, k // 2) for k, pads in stride2)
    assert all(pads == (k // 2,) * 4 for k, s, pads in convs if s == 1)
    # mixnet-parity: the reference is the unfolded tf_mixnet_s (variant from the file's metadata)
    report = run_parity(ParityConfig(candidates=(str(path),), random_n=2))
    assert report.passed and "tf_mixnet_s" in report.reference["name"]


@pytest.mark.parametrize("size", [33, 64])
def test_merged_equals_split_under_same_padding_float64(size):
    """The merged kernel's centring under SAME padding (lowering.py's proof), also at odd sizes."""
    split = fold_bn(init_random(build_model("tf_m"), seed=3)).double()
    merged = lower(split, "merged")
    assert count_multi_group(merged) == 0
    x = torch.randn(1, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(size))
    with torch.no_grad():
        ref, out = split(x), merged(x)
    assert (out - ref).abs().max().item() <= 1e-9 * max(1.0, ref.abs().max().item())


# ------------------------------------------------------------------ no silent guess


def test_ambiguous_checkpoint_needs_variant(timm_fixture):
    with pytest.raises(InputError) as err:
        load_model(None, timm_fixture["bare"])
    message = str(err.value)
    assert "--variant needed" in message and "expected s or tf_s" in message
    assert "mixnet_s" in message and "tf_mixnet_s" in message
    model, info = load_model("tf_s", timm_fixture["bare"])  # explicit: exported as asked
    assert (info.variant, info.variant_reason, model.spec.padding) == ("tf_s", "given by --variant", "same")


def test_ambiguous_checkpoint_cli_exits_2_naming_both(tmp_path, timm_fixture, capsys):
    out = tmp_path / "out"
    assert export_main(["--weights", str(timm_fixture["bare"]), "--out", str(out), "--engine", "skip"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "--variant" in err and "mixnet_s" in err and "tf_mixnet_s" in err
    assert not list(out.glob("*.onnx"))


def test_explicit_variant_in_summary_line_and_report(tmp_path, timm_fixture, capsys):
    out = tmp_path / "out"
    args = ["--weights", str(timm_fixture["bare"]), "--variant", "tf_mixnet_s", "--img-size", "64", "--out", str(out)]
    assert export_main([*args, "--engine", "skip"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("tf_mixnet_s @ 64x64") and "variant tf_s: given by --variant" in first
    report = read_report(out)
    assert (report["variant"], report["weights"]["variant_reason"]) == ("tf_s", "given by --variant")


def _timm_file(folder, variant: str, activations: bool = False):
    """A timm-layout safetensors file without metadata; ``activations``: weights of normal-size outputs."""
    spec = get_variant(variant)
    model = init_random(build_model(spec)) if activations else build_model(spec)
    state = own_to_timm(model.state_dict(), spec)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def test_hf_cache_path_is_a_reliable_hint(tmp_path):
    path = _timm_file(tmp_path / "models--timm--tf_mixnet_s.in1k" / "snapshots" / "abc", "s")
    _, info = load_model(None, path)
    assert info.variant == "tf_s" and "models--timm--tf_mixnet_s.in1k" in info.variant_reason


def test_hub_config_json_is_a_reliable_hint(tmp_path):
    path = _timm_file(tmp_path / "copy", "m")
    (path.parent / "config.json").write_text(json.dumps({"architecture": "tf_mixnet_m", "num_classes": 1000}))
    _, info = load_model(None, path)
    assert info.variant == "tf_m" and "architecture='tf_mixnet_m'" in info.variant_reason


def test_hint_contradicting_shapes_is_refused(tmp_path):
    path = _timm_file(tmp_path / "models--timm--mixnet_l.ft_in1k" / "snapshots" / "abc", "s")
    with pytest.raises(InputError, match="names mixnet_l, but its shapes fit mixnet_s and tf_mixnet_s"):
        load_model(None, path)


def test_unique_shapes_need_no_hint(tmp_path):
    path = _timm_file(tmp_path / "plain", "xl")
    _, info = load_model(None, path)
    assert info.variant == "xl" and info.variant_reason.startswith("the only variant")


# ------------------------------------------------------------------ --weights timm: seven tags


TAGS = {"s": "mixnet_s.ft_in1k", "m": "mixnet_m.ft_in1k", "l": "mixnet_l.ft_in1k", "xl": "mixnet_xl.ra_in1k",
        "tf_s": "tf_mixnet_s.in1k", "tf_m": "tf_mixnet_m.in1k", "tf_l": "tf_mixnet_l.in1k"}  # fmt: skip


def test_weights_timm_finds_all_seven_tags(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    for variant, tag in TAGS.items():
        snap = tmp_path / f"models--timm--{tag}" / "snapshots" / "rev1"
        snap.mkdir(parents=True)
        (snap / "model.safetensors").write_bytes(b"")
        assert find_timm_cache(variant) == snap / "model.safetensors"
    with pytest.raises(InputError, match="without pretrained weights"):
        find_timm_cache("xxl")


def test_weights_timm_tf_port_loads_with_its_preprocessing(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    _timm_file(tmp_path / "models--timm--tf_mixnet_s.in1k" / "snapshots" / "rev1", "s", activations=True)
    out = tmp_path / "out"
    report = run_export(ExportConfig(variant="tf_s", weights="timm", img_size=64, out_dir=out, engine="skip"))
    assert report.weights["variant_reason"] == "--weights timm with --variant tf_s: timm/tf_mixnet_s.in1k"
    meta = read_metadata(onnx.load(str(out / "tf_mixnet_s.onnx")))
    # timm 1.0.31's pretrained_cfg of all seven tags: 224 px, crop 0.875, bicubic, ImageNet mean/std
    assert meta["mixnet.mean"] == "0.485,0.456,0.406" and meta["mixnet.std"] == "0.229,0.224,0.225"
    assert (meta["mixnet.interpolation"], meta["mixnet.crop_pct"]) == ("bicubic", "0.875")
