import pytest
import torch
from model_facts import count_batchnorms
from torch.nn.utils.fusion import fuse_conv_bn_weights as torch_fuse

from mixnet_deploy.fold import fold_bn, fuse_conv_bn_weights
from mixnet_deploy.model import build_model, init_random


def test_fuse_matches_torch_fusion_utility():
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(8, 4, 3, 3, generator=g), torch.randn(8, generator=g)
    mean, var = torch.randn(8, generator=g), torch.rand(8, generator=g) + 0.5
    gamma, beta = torch.randn(8, generator=g), torch.randn(8, generator=g)
    ours = fuse_conv_bn_weights(w, b, mean, var, 1e-5, gamma, beta)
    theirs = torch_fuse(w, b, mean, var, 1e-5, gamma, beta)
    torch.testing.assert_close(ours[0], theirs[0].data)
    torch.testing.assert_close(ours[1], theirs[1].data)


@pytest.mark.parametrize("variant", ["s", "m", "l"])
def test_folded_equals_unfolded_in_float64(variant):
    model = init_random(build_model(variant), seed=3).double()
    folded = fold_bn(model)
    assert count_batchnorms(model) > 0 and count_batchnorms(folded) == 0
    x = torch.randn(2, 3, 96, 96, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, out = model(x), folded(x)
    scale = ref.abs().max().item()
    assert scale > 0.1  # activations of normal size, so the comparison means something
    assert (out - ref).abs().max().item() <= 1e-10 * max(1.0, scale)


def test_split_groups_get_their_own_bn_slice():
    # MixNet-S block 1 has a split expand 1x1 (2 groups) followed by one BN over both groups.
    model = init_random(build_model("s"), seed=0)
    block = model.blocks[1]
    assert len(block.conv_pw.convs) == 2
    folded = fold_bn(model).blocks[1]
    bn = block.bn1
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    half = block.conv_pw.out_splits[0]
    torch.testing.assert_close(
        folded.conv_pw.convs[1].weight, block.conv_pw.convs[1].weight * scale[half:, None, None, None]
    )


def test_fold_leaves_input_untouched_and_refuses_training_mode():
    model = init_random(build_model("s"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fold_bn(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="eval"):
        fold_bn(model.train())
