import dataclasses

import pytest
import torch
from model_facts import PARAM_COUNTS

from mixnet_deploy.arch import VARIANTS, get_variant, normalize_variant, round_channels, split_channels
from mixnet_deploy.model import build_model


@pytest.mark.parametrize("variant", ["s", "m", "l"])
def test_param_counts_exact(variant):
    model = build_model(variant)
    assert sum(p.numel() for p in model.parameters()) == PARAM_COUNTS[variant]


def test_timm_state_dict_sizes():
    # timm's mixnet_s has 396 state_dict entries, mixnet_m/l 479 (MIXNET.md)
    assert [len(build_model(v).state_dict()) for v in "sml"] == [396, 479, 479]


def test_l_widths_follow_the_multiplier():
    spec = VARIANTS["l"]
    widths = sorted({b.out_ch for b in spec.blocks})
    assert spec.stem_ch == 32
    assert widths == [32, 40, 56, 104, 160, 264]
    assert round_channels(200, 1.3) == 264 and round_channels(120, 1.3) == 160


def test_building_l_never_changes_m():
    before = dataclasses.astuple(get_variant("m"))
    build_model("l")
    build_model("l")
    assert dataclasses.astuple(get_variant("m")) == before
    assert sum(p.numel() for p in build_model("m").parameters()) == PARAM_COUNTS["m"]


def test_specs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        VARIANTS["s"].stem_ch = 99
    with pytest.raises(dataclasses.FrozenInstanceError):
        VARIANTS["s"].blocks[0].out_ch = 99


def test_no_shared_activation_instances():
    acts = [m for m in build_model("s").modules() if isinstance(m, (torch.nn.ReLU, torch.nn.SiLU))]
    assert len(acts) > 40
    assert len({id(a) for a in acts}) == len(acts)


@pytest.mark.parametrize("size", [160, 224, 256, 320])
def test_any_multiple_of_32(size):
    model = build_model("s")
    with torch.no_grad():
        assert model(torch.zeros(1, 3, size, size)).shape == (1, 1000)


def test_stage_block_counts():
    assert [len(s) for s in VARIANTS["s"].stages] == [1, 2, 4, 3, 3, 3]
    assert [len(s) for s in VARIANTS["m"].stages] == [1, 2, 4, 4, 4, 4]


def test_split_channels_first_group_takes_remainder():
    assert split_channels(10, 3) == (4, 3, 3)
    assert split_channels(240, 2) == (120, 120)


@pytest.mark.parametrize(
    "name,expected",
    [("s", "s"), ("MixNet_M", "m"), ("mixnet-l", "l"), ("mixnet_s", "s"), ("mixnet_xl", "xl"), ("XXL", "xxl"),
     ("tf_mixnet_s", "tf_s"), ("tf-mixnet-l", "tf_l"), ("tf_m", "tf_m")],
)  # fmt: skip
def test_normalize_variant(name, expected):
    assert normalize_variant(name) == expected


@pytest.mark.parametrize("name", ["xs", "tf_xl", "tf_mixnet_xxl", "mixnet_tf_s"])
def test_unknown_variant_names_choices(name):
    with pytest.raises(ValueError, match=f"'{name}'.*s, m, l, xl, xxl, tf_s, tf_m, tf_l"):
        normalize_variant(name)


def test_forward_prints_nothing(capsys):
    with torch.no_grad():
        build_model("s")(torch.zeros(1, 3, 64, 64))
    assert capsys.readouterr().out == ""
