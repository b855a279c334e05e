"""timm's own ONNX export of a MixNet, the peer benchmarks/peers.py measures ours against.

Needs timm, so it runs in a tools venv outside the repository, not in the test environment (as
tests/oracles/make_timm_oracles.py): a venv with ``torch==2.14.1 torchvision==0.29.1 timm==1.0.31`` (timm imports
torchvision), then

    <tools-venv>/bin/python benchmarks/timm_export.py WEIGHTS.safetensors OUT.onnx [--variant mixnet_s] [--opset 17]

The export is what a timm user runs: ``timm.create_model(variant)`` with the checkpoint, eval mode, the TorchScript
exporter at opset 17 with a dynamic batch (BatchNormalization unfolded in the graph, as timm leaves it; the exporter's
constant folding on). Input ``input`` float32 [N, 3, 224, 224], output ``logits``.
"""

from __future__ import annotations

import argparse

import timm
import torch
from safetensors.torch import load_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", help="timm state dict (.safetensors)")
    parser.add_argument("out", help="ONNX file to write")
    parser.add_argument("--variant", default="mixnet_s")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--img-size", type=int, default=224)
    args = parser.parse_args()
    model = timm.create_model(args.variant, pretrained=False)
    model.load_state_dict(load_file(args.weights), strict=True)
    model.eval()
    dummy = torch.zeros(1, 3, args.img_size, args.img_size)
    with torch.no_grad():
        torch.onnx.export(model, (dummy,), args.out, dynamo=False, opset_version=args.opset, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          do_constant_folding=True)  # fmt: skip
    print(f"wrote {args.out}: timm {timm.__version__}, torch {torch.__version__}, opset {args.opset}")


if __name__ == "__main__":
    main()
