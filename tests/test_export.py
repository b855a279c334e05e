import numpy as np
import onnx
import pytest

from mixnet_deploy.config import ExportConfig
from mixnet_deploy.contract import INPUT_NAME
from mixnet_deploy.fold import fold_bn
from mixnet_deploy.onnx_export import TRT_SAFE_OPS, check_graph, op_counts, read_metadata
from mixnet_deploy.pipeline import run_export
from mixnet_deploy.runtimes import ort_session, run_ort
from mixnet_deploy.weights import load_model


@pytest.fixture(scope="module")
def s_export(tmp_path_factory, timm_fixture):
    out = tmp_path_factory.mktemp("s")
    report = run_export(ExportConfig(weights=str(timm_fixture["weights"]), out_dir=out, engine="skip"))
    return out / "mixnet_s.onnx", report


def test_fixture_reproduced_through_onnxruntime(s_export, timm_fixture):
    path, _ = s_export
    out = run_ort(ort_session(str(path)), timm_fixture["input"])
    assert np.abs(out - timm_fixture["logits"]).max() <= 1e-4


@pytest.mark.parametrize("name,size", [("mixnet_m_224", 224), ("mixnet_l_224", 224), ("mixnet_l_256", 256)])
def test_timm_oracles_m_l_through_onnxruntime(tmp_path, oracle_checkpoint, name, size):
    weights, x, oracle = oracle_checkpoint(name)
    cfg = ExportConfig(variant=oracle["variant"], weights=str(weights), img_size=size, out_dir=tmp_path, engine="skip")
    run_export(cfg)
    out = run_ort(ort_session(str(tmp_path / f"{oracle['variant']}.onnx")), x)
    assert np.abs(out - oracle["logits"]).max() <= 1e-4


def test_graph_structure(s_export):
    path, _ = s_export
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    check_graph(model)
    ops = op_counts(model)
    assert "BatchNormalization" not in ops
    assert not any("Sequence" in op for op in ops)
    assert set(ops) <= TRT_SAFE_OPS
    assert ops["Split"] == ops["Concat"] == 34  # every multi-group stage of MixNet-S
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (inp,) = model.graph.input
    dims = inp.type.tensor_type.shape.dim
    assert inp.name == INPUT_NAME and inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 224, 224]
    assert [o.name for o in model.graph.output] == ["logits"]


def test_split_conv_concat_pattern(s_export):
    model = onnx.load(str(s_export[0]))
    producers = {out: n for n in model.graph.node for out in n.output}
    for node in (n for n in model.graph.node if n.op_type == "Concat"):
        kinds = {producers[i].op_type for i in node.input}
        assert kinds == {"Conv"}
        (split,) = {producers[producers[i].input[0]].op_type for i in node.input}
        assert split == "Split"


def test_metadata(s_export):
    path, report = s_export
    meta = read_metadata(onnx.load(str(path)))
    assert meta["mixnet.variant"] == "s" and meta["mixnet.precision"] == "fp32"
    assert meta["mixnet.input_size"] == "224"
    assert meta["mixnet.mean"] == "0.485,0.456,0.406" and meta["mixnet.std"] == "0.229,0.224,0.225"
    assert meta["mixnet.weights_sha256"] == report.weights["sha256"] and len(meta["mixnet.weights_sha256"]) == 64
    assert meta["mixnet_deploy.version"]


def test_dynamic_batch(s_export):
    session = ort_session(str(s_export[0]))
    for n in (1, 3, 8):
        assert run_ort(session, np.zeros((n, 3, 224, 224), np.float32)).shape == (n, 1000)


def test_export_is_byte_identical(tmp_path, timm_fixture):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        run_export(ExportConfig(weights=str(timm_fixture["weights"]), out_dir=out, engine="skip"))
    assert (a / "mixnet_s.onnx").read_bytes() == (b / "mixnet_s.onnx").read_bytes()


def test_report_has_parity_and_timings(s_export):
    _, report = s_export
    (fp32,) = [a for a in report.artifacts if a.precision == "fp32"]
    assert fp32.metrics["max_abs"] <= 1e-4 and fp32.metrics["min_cosine"] >= 0.99999
    assert {"load", "fold", "export_fp32", "verify_fp32", "total"} <= set(report.timings_s)
    assert report.versions["onnxruntime"] != "absent"


def test_folded_graph_has_no_bn_even_for_random_l():
    model, _ = load_model("l")
    from mixnet_deploy.onnx_export import to_onnx

    assert "BatchNormalization" not in op_counts(to_onnx(fold_bn(model), 64))
