"""Facts about models and graphs that only the tests ask for (the package does not need them)."""

import numpy as np
import onnx
from torch import nn

from mixnet_deploy.metrics import compare
from mixnet_deploy.model import MixedConv2d
from mixnet_deploy.parity import ParityResult, judge, run_batched
from mixnet_deploy.runner_contract import Runner

# Parameter counts of timm 1.0.31's definitions (BN affine parameters included).
PARAM_COUNTS = {
    "s": 4_134_606,
    "m": 5_014_382,
    "l": 7_329_252,
    "xl": 11_896_768,
    "xxl": 23_961_752,
    "tf_s": 4_134_606,
    "tf_m": 5_014_382,
    "tf_l": 7_329_252,
}


def count_batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def count_multi_group(model: nn.Module) -> int:
    """How many MixedConv2d stages still have several groups (each is a Split/Concat in the graph)."""
    return sum(isinstance(m, MixedConv2d) and len(m.convs) > 1 for m in model.modules())


def weight_dtypes(model: onnx.ModelProto, op_type: str = "Conv") -> set[str]:
    """Element types of the weights feeding ``op_type`` nodes (through a DequantizeLinear or a Cast)."""
    inits = {t.name: t for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    found = set()
    for node in (n for n in model.graph.node if n.op_type == op_type):
        name = node.input[1]
        while name not in inits and name in producers:
            name = producers[name].input[0]
        if name in inits:
            found.add(onnx.TensorProto.DataType.Name(inits[name].data_type))
    return found


def compare_runner(
    reference_logits: np.ndarray, runner: Runner, x: np.ndarray, batch: int = 8, notes: tuple[str, ...] = ()
) -> ParityResult:
    """Run one candidate on ``x`` and judge it against the reference logits by its own precision."""
    return judge(runner, compare(reference_logits, run_batched(runner, x, batch)), notes)
