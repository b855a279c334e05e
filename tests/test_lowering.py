"""MixConv lowerings: ``merged`` must compute what the ``split`` design computes, to float rounding.

References we did not write: ``torch.nn.functional.conv2d`` (per-group convs of the split design),
the stored timm logits (through ONNX Runtime), torch's own FLOP counter (for the MAC count).
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch
from conftest import every_file_accepted
from model_facts import count_multi_group
from torch.utils.flop_counter import FlopCounterMode

from mixnet_deploy.config import ExportConfig
from mixnet_deploy.fold import fold_bn
from mixnet_deploy.lowering import (
    graph_cost,
    is_equal_split_pointwise,
    is_mixed_depthwise,
    lower,
    merge_depthwise_kernels,
    merge_grouped_pointwise,
    pad_kernel_centred,
)
from mixnet_deploy.model import MixedConv2d, build_model
from mixnet_deploy.onnx_export import read_metadata, to_onnx
from mixnet_deploy.pipeline import run_export
from mixnet_deploy.runtimes import ort_session, run_ort

VARIANTS = ("s", "m", "l")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # Thousands of tiny float64 per-group convs: one thread is ~100x faster than two contended ones.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


ODD_SIZES = [(15, 23), (9, 7), (17, 17), (33, 31)]  # odd, non-square: stride 2 rounds the output size down


def _stage_configs(variant: str) -> list[tuple]:
    """Every distinct multi-group MixedConv2d of a variant not already in an earlier variant.

    A config is (in, out, kernels, depthwise); S, then M, then L, so each is tested once.
    """
    seen = set()
    for earlier in VARIANTS[: VARIANTS.index(variant)]:
        seen.update(_all_configs(earlier))
    return [c for c in _all_configs(variant) if c not in seen]


def _all_configs(variant: str) -> list[tuple]:
    found = []
    for m in build_model(variant).modules():
        if isinstance(m, MixedConv2d) and len(m.convs) > 1:
            kernels = tuple(c.kernel_size[0] for c in m.convs)
            key = (sum(m.in_splits), sum(m.out_splits), kernels, m.convs[0].groups > 1)
            if key not in found:
                found.append(key)
    return found


def _random_mixed(in_ch, out_ch, kernels, depthwise, stride, seed) -> MixedConv2d:
    gen = torch.Generator().manual_seed(seed)
    conv = MixedConv2d(in_ch, out_ch, kernels, stride, depthwise=depthwise, bias=True).double()
    with torch.no_grad():
        for c in conv.convs:
            c.weight.copy_(torch.randn(c.weight.shape, generator=gen, dtype=torch.float64))
            c.bias.copy_(torch.randn(c.bias.shape, generator=gen, dtype=torch.float64))
    return conv


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


# ------------------------------------------------------------------ tensor math


@pytest.mark.parametrize("k,size", [(3, 5), (3, 9), (5, 11), (7, 7)])
def test_padded_kernel_is_the_same_convolution(k, size):
    gen = torch.Generator().manual_seed(k * size)
    x = torch.randn(2, 4, 13, 11, generator=gen, dtype=torch.float64)
    w = torch.randn(4, 1, k, k, generator=gen, dtype=torch.float64)
    for stride in (1, 2):
        ref = torch.nn.functional.conv2d(x, w, stride=stride, padding=k // 2, groups=4)
        out = torch.nn.functional.conv2d(x, pad_kernel_centred(w, size), stride=stride, padding=size // 2, groups=4)
        assert out.shape == ref.shape
        assert _relative(out, ref) <= 1e-13


def test_merged_kernels_layout():
    ws = [torch.ones(3, 1, 3, 3), 2 * torch.ones(2, 1, 5, 5), 3 * torch.ones(1, 1, 7, 7)]
    w, b = merge_depthwise_kernels(ws, [None, torch.ones(2), None])
    assert w.shape == (6, 1, 7, 7)
    assert float(w[0, 0].sum()) == 9 and float(w[0, 0, 2:5, 2:5].sum()) == 9  # centred
    assert float(w[3, 0].sum()) == 50 and float(w[5, 0].sum()) == 147
    assert b.tolist() == [0, 0, 0, 1, 1, 0]
    assert merge_depthwise_kernels(ws, [None] * 3)[1] is None


def test_grouped_pointwise_refuses_unequal_groups():
    w, _ = merge_grouped_pointwise([torch.ones(4, 3, 1, 1), torch.ones(4, 3, 1, 1)], [None, None])
    assert w.shape == (8, 3, 1, 1)
    with pytest.raises(ValueError, match="equal groups"):
        merge_grouped_pointwise([torch.ones(5, 3, 1, 1), torch.ones(4, 3, 1, 1)], [None, None])
    with pytest.raises(ValueError, match="odd kernel"):
        pad_kernel_centred(torch.ones(1, 1, 4, 4), 7)


# ------------------------------------------------------------------ every stage of S, M, L, float64


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_stage_exact_in_float64_on_odd_sizes(variant):
    every = _all_configs(variant)
    assert any(dw for *_, dw in every) and any(not dw for *_, dw in every) and len(every) >= 19
    configs = _stage_configs(variant)
    assert configs
    for i, (in_ch, out_ch, kernels, depthwise) in enumerate(configs):
        for stride in (1, 2):
            split = _random_mixed(in_ch, out_ch, kernels, depthwise, stride, seed=i)
            merged = lower(split, "merged")
            assert len(merged.convs) == 1, f"{variant} {kernels}: not merged"
            assert merged.convs[0].groups == (in_ch if depthwise else len(kernels))
            for h, w in ODD_SIZES:
                x = torch.randn(2, in_ch, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(h * w))
                with torch.no_grad():
                    ref, out = split(x), merged(x)
                assert out.shape == ref.shape, (variant, kernels, stride, h, w)
                assert _relative(out, ref) <= 1e-12, (variant, kernels, stride, h, w)


@pytest.mark.parametrize("channels,kernels", [(11, (3, 5, 7)), (7, (3, 5)), (18, (3, 5, 7, 9, 11))])
def test_mixed_depthwise_with_remainder_channels(channels, kernels):
    # MixNet's widths divide evenly; timm's split gives the first group the remainder otherwise
    for stride in (1, 2):
        split = _random_mixed(channels, channels, kernels, True, stride, seed=channels)
        assert len(set(split.in_splits)) > 1
        merged = lower(split, "merged")
        for h, w in ODD_SIZES:
            x = torch.randn(2, channels, h, w, dtype=torch.float64)
            with torch.no_grad():
                assert _relative(merged(x), split(x)) <= 1e-12


def test_unequal_split_pointwise_stays_split_and_exact():
    conv = _random_mixed(7, 5, (1, 1), False, 1, seed=3)  # splits 4+3 -> 3+2: no Conv(group=2) equals it
    assert not is_equal_split_pointwise(conv) and not is_mixed_depthwise(conv)
    lowered = lower(conv, "merged")
    assert len(lowered.convs) == 2
    x = torch.randn(1, 7, 9, 9, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(lowered(x), conv(x))


# ------------------------------------------------------------------ whole models


@pytest.fixture(scope="module")
def folded_models():
    """Folded S, M, L with weights of normal-size activations (the timm oracles' recipe, our key names)."""
    from timm_oracle import random_state_dict

    models = {}
    for seed, variant in enumerate(VARIANTS, start=1):
        model = build_model(variant)
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        model.load_state_dict(random_state_dict(shapes, seed))
        models[variant] = fold_bn(model)
    return models


@pytest.mark.parametrize("variant", VARIANTS)
def test_whole_model_merged_equals_split_in_float64(variant, folded_models):
    split = copy.deepcopy(folded_models[variant]).double()
    merged = lower(split, "merged")
    assert count_multi_group(split) > 0 and count_multi_group(merged) == 0
    assert count_multi_group(split) == count_multi_group(folded_models[variant])  # input left unchanged
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, out = split(x), merged(x)
        ref_mean, out_mean = split(torch.zeros_like(x)), merged(torch.zeros_like(x))
    assert _relative(out, ref) <= 1e-10
    # most of a random-weight logit is input-independent: also compare what the input changes
    assert _relative(out - out_mean, ref - ref_mean) <= 1e-9


def test_lower_split_is_an_unchanged_copy_and_bad_mode_is_refused(folded_models):
    model = folded_models["s"]
    same = lower(model, "split")
    assert same is not model and count_multi_group(same) == count_multi_group(model)
    with pytest.raises(ValueError, match="expected one of split, merged"):
        lower(model, "fused")


def test_lowering_then_folding_equals_folding_then_lowering():
    model = build_model("s")
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_var.uniform_(0.5, 1.5)
            bn.running_mean.normal_(0, 0.1)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        a = lower(fold_bn(model), "merged")(x)
        b = fold_bn(lower(model, "merged"))(x)
    assert _relative(a, b) <= 1e-5


# ------------------------------------------------------------------ graphs: MACs and node counts


@pytest.mark.parametrize("mdconv", ["split", "merged"])
def test_graph_macs_match_torch_flop_counter(mdconv, folded_models):
    model = lower(folded_models["s"], mdconv)
    proto = to_onnx(model, 32)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(3, 3, 32, 32))
    cost = graph_cost(proto, batch=3)
    assert cost["macs"] * 2 == counter.get_total_flops()
    assert cost["nodes"] == len(proto.graph.node) and sum(cost["ops"].values()) == cost["nodes"]
    if mdconv == "merged":
        assert "Split" not in cost["ops"] and "Concat" not in cost["ops"]


# ------------------------------------------------------------------ through the pipeline and ONNX Runtime


@pytest.fixture(scope="module")
def merged_export(tmp_path_factory, timm_fixture):
    out = tmp_path_factory.mktemp("merged")
    report = run_export(ExportConfig(weights=str(timm_fixture["weights"]), out_dir=out, engine="skip", mdconv="merged"))
    return out / "mixnet_s.onnx", report


def test_merged_export_reproduces_timm_logits(merged_export, timm_fixture):
    path, report = merged_export
    out = run_ort(ort_session(str(path)), timm_fixture["input"])
    assert np.abs(out - timm_fixture["logits"]).max() <= 1e-4
    model = onnx.load(str(path))
    assert read_metadata(model)["mixnet.mdconv"] == "merged"
    assert report.mdconv == "merged"
    ops = graph_cost(model)["ops"]
    assert "Split" not in ops and "Concat" not in ops
    groups = [a.i for n in model.graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "group"]
    assert any(g == 2 for g in groups)  # the grouped 1x1 convs are part of `merged`


def test_bad_mdconv_is_an_input_error(tmp_path):
    from mixnet_deploy.errors import InputError

    with pytest.raises(InputError, match="--mdconv 'fused'"):
        run_export(ExportConfig(out_dir=tmp_path, engine="skip", mdconv="fused"))


def test_fp16_and_int8_paths_on_the_merged_lowering(tmp_path):
    cfg = ExportConfig(img_size=64, out_dir=tmp_path, engine="skip", mdconv="merged", fp16=True, int8=True,
                       calib="synthetic", calib_count=8)  # fmt: skip
    with every_file_accepted():  # a graph test: INT8 from colour fields is refused on photos
        report = run_export(cfg)
    assert [a.precision for a in report.artifacts] == ["fp32", "fp16", "int8"]
    for artifact in report.artifacts:
        model = onnx.load(artifact.path)
        assert read_metadata(model)["mixnet.mdconv"] == "merged", artifact.precision
        ops = {n.op_type for n in model.graph.node}
        assert "Split" not in ops and "Concat" not in ops, artifact.precision
        kernels = {tuple(a.ints) for n in model.graph.node if n.op_type == "Conv" for a in n.attribute
                   if a.name == "kernel_shape"}  # fmt: skip
        assert (11, 11) in kernels and (9, 9) in kernels  # the merged depthwise stages survived the conversion


def test_cli_mdconv_flag():
    """The flag reaches the config; a bad value is the catalogue's case mdconv-bad (tests/reliability/cases.py)."""
    from mixnet_deploy.cli import build_export_parser, export_config

    args = build_export_parser().parse_args(["--mdconv", "merged"])
    assert export_config(args).mdconv == "merged"
    assert export_config(build_export_parser().parse_args([])).mdconv == "split"


def test_stages_a_centred_kernel_cannot_reproduce_stay_split():
    conv = _random_mixed(8, 8, (3, 5), True, 1, seed=4)
    conv.convs[1].padding = (1, 1)  # not k // 2: "same" output no more, one padded kernel cannot match
    assert not is_mixed_depthwise(conv)
    assert len(lower(conv, "merged").convs) == 2


def test_split_keeps_its_groups_and_moves_pointwise_biases_after_the_concat(random_checkpoint_s):
    """split: the equal-split 1x1 stages' convs carry no bias, one Add after the Concat does (as timm's BN after the
    Concat), exactly: float64 against the folded model, which computes the biases on the convs."""
    from mixnet_deploy.weights import load_model

    folded = fold_bn(load_model("s", str(random_checkpoint_s))[0]).double()
    lowered = lower(folded, "split")
    stages = [m for m in lowered.modules() if isinstance(m, MixedConv2d) and is_equal_split_pointwise(m)]
    assert stages and all(m.shift is not None and all(c.bias is None for c in m.convs) for m in stages)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(lowered(x), folded(x), rtol=0, atol=1e-10)
    graph = to_onnx(lower(fold_bn(load_model("s", str(random_checkpoint_s))[0]), "split"), 64).graph
    split_outputs = {o for n in graph.node if n.op_type == "Split" for o in n.output}
    pointwise = [n for n in graph.node if n.op_type == "Conv" and n.input[0] in split_outputs
                 and next(a.ints for a in n.attribute if a.name == "kernel_shape") == [1, 1]]  # fmt: skip
    assert len(pointwise) == sum(len(m.convs) for m in stages) and all(len(n.input) == 2 for n in pointwise)
