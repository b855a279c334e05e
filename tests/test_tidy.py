"""No node that computes nothing in any artifact, by a tool we did not write: onnxslim 0.1.98 must find nothing to
remove (node count unchanged) in every precision and lowering and with the served ends, and its version of a file
must compute what the file computes (ONNX Runtime). On main it took S split from 360 to 329 nodes (14 Identity from
torch.onnx's initializer dedup, 17 Constant split sizes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxslim
import pytest

from mixnet_deploy.config import ExportConfig
from mixnet_deploy.contract import PIXEL_INPUT
from mixnet_deploy.onnx_export import NO_OPS, TRT_SAFE_OPS, check_graph, to_onnx
from mixnet_deploy.pipeline import run_export
from mixnet_deploy.runtimes import ort_session

SIZE = 64
KINDS = {  # (mdconv, input format, top-k): every lowering, both inputs, with and without the top-k ends
    "split": ("split", "float32-nchw", None),
    "merged-uint8-topk": ("merged", PIXEL_INPUT, 5),
}


@pytest.fixture(scope="module", params=list(KINDS))
def exported(request, tmp_path_factory, timm_fixture):
    mdconv, input_format, top_k = KINDS[request.param]
    out = tmp_path_factory.mktemp(request.param)
    cfg = ExportConfig(weights=str(timm_fixture["weights"]), img_size=SIZE, out_dir=out, engine="skip", fp16=True,
                       int8=True, calib="synthetic", calib_count=8, holdout=4, mdconv=mdconv,
                       input_format=input_format, top_k=top_k)  # fmt: skip
    report = run_export(cfg)
    return {a.precision: Path(a.path) for a in report.artifacts}, input_format


def _inputs(session, input_format: str) -> dict:
    (inp,) = session.get_inputs()
    rng = np.random.default_rng(3)
    if input_format == PIXEL_INPUT:
        return {inp.name: rng.integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)}
    return {inp.name: rng.standard_normal((2, 3, SIZE, SIZE), dtype=np.float32)}


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_onnxslim_finds_nothing_to_remove(exported, precision):
    paths, input_format = exported
    model = onnx.load(str(paths[precision]))
    assert not {n.op_type for n in model.graph.node} & set(NO_OPS)
    slim = onnxslim.slim(onnx.load(str(paths[precision])))
    assert len(slim.graph.node) == len(model.graph.node), precision
    ours, theirs = ort_session(model.SerializeToString()), ort_session(slim.SerializeToString())
    feed = _inputs(ours, input_format)
    for a, b in zip(ours.run(None, feed), theirs.run(None, feed)):
        assert np.array_equal(a, b)


@pytest.mark.slow
def test_every_conv_bias_is_an_initializer(exported):
    """What ONNX Runtime's quantizer warned about on main ("bias not an initializer": SE biases behind Identity)."""
    paths, _ = exported
    for precision in ("fp32", "fp16"):
        model = onnx.load(str(paths[precision]))
        inits = {t.name for t in model.graph.initializer}
        biases = [n.input[2] for n in model.graph.node if n.op_type == "Conv" and len(n.input) > 2]
        assert biases and all(b in inits for b in biases), precision


def test_check_graph_refuses_a_no_op(random_checkpoint_s):
    from mixnet_deploy.errors import VerificationError
    from mixnet_deploy.fold import fold_bn
    from mixnet_deploy.weights import load_model

    model = to_onnx(fold_bn(load_model("s", str(random_checkpoint_s))[0]), 32)
    assert {"Identity", "Constant"} <= TRT_SAFE_OPS  # TensorRT parses them; they are refused as no-ops
    check_graph(model)
    first = model.graph.node[0]
    moved = onnx.helper.make_node("Identity", [first.output[0]], ["moved"])
    for node in model.graph.node[1:]:
        node.input[:] = ["moved" if i == first.output[0] else i for i in node.input]
    model.graph.node.insert(1, moved)
    with pytest.raises(VerificationError, match="compute nothing"):
        check_graph(model)
