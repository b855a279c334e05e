"""INT8 over FP16 (qdq.py) and the sensitivity search behind --int8-exclude (sensitivity.py)."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from outliers import make_case

from mixnet_deploy import precision_onnx, qdq, sensitivity
from mixnet_deploy.acceptance import labelled_judge, tolerance_judge
from mixnet_deploy.config import ExportConfig, check_config
from mixnet_deploy.data import CalibrationReader, Preprocess, synthetic_crops
from mixnet_deploy.errors import InputError, VerificationError
from mixnet_deploy.metrics import compare
from mixnet_deploy.pipeline import run_export
from mixnet_deploy.precision_table import row
from mixnet_deploy.runtimes import run_torch
from mixnet_deploy.weights import load_model

SIZE = 96
INT8_TOL = row("int8").tolerance


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """MixNet-S at 64 px (random weights), its FP32 graph and calibrated ranges (minmax, 4 synthetic fields)."""
    from mixnet_deploy.fold import fold_bn
    from mixnet_deploy.onnx_export import to_onnx

    model, _ = load_model("s")
    data = to_onnx(fold_bn(model), 64).SerializeToString()
    pre = Preprocess(size=64)
    images = synthetic_crops(4, pre)
    recipe = precision_onnx.Int8Recipe(method="minmax")
    out = tmp_path_factory.mktemp("small")
    cal = precision_onnx.calibrate(
        data, images.ids, lambda: iter(CalibrationReader(images, pre)), recipe, out, "m", "x"
    )
    amax = qdq.amax_of(precision_onnx.load_cache(cal.cache, cal.key))
    return onnx.load_from_string(data), qdq.Int8Builder(onnx.load_from_string(data), amax)


def test_weight_quantization_is_symmetric_per_channel_and_unclipped():
    gains = np.logspace(-6, 2, 9)[:, None, None, None]
    w = (np.random.default_rng(0).standard_normal((9, 4, 3, 3)) * gains).astype(np.float32)
    q, scale = qdq.quantize_weight(w)
    assert q.dtype == np.int8 and scale.dtype == np.float16 and scale.shape == (9,)
    s = scale.astype(np.float64)[:, None, None, None]
    assert (np.abs(q * s - w) <= s / 2 + 1e-12).all()  # round to nearest with the stored float16 scale
    assert (scale.astype(np.float64) >= np.abs(w).reshape(9, -1).max(1) / 127).all()  # never clipped
    levels = np.abs(q).reshape(9, -1).max(1)
    normal = scale >= np.finfo(np.float16).tiny  # amax >= 127 * 2**-14 ~ 0.0078
    assert normal.tolist() == [False] * 4 + [True] * 5
    assert (levels[normal] == 127).all()  # the full int8 range
    assert levels[0] < 127 and levels[3] >= 120  # subnormal float16 scales: fewer levels (graph_facts counts them)


def test_placement_inputs_of_convs_and_residual_skips(small):
    fp32, builder = small
    model = builder.build()
    producers = {o: n for n in model.graph.node for o in n.output}
    for conv in (n for n in model.graph.node if n.op_type == "Conv"):
        quantized = conv.name not in builder.se
        assert (producers[conv.input[0]].op_type == "DequantizeLinear") == quantized, conv.name
    consumers = {}
    for node in model.graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node.op_type)
    for dq in (n for n in model.graph.node if n.op_type == "DequantizeLinear"):
        assert set(consumers[dq.output[0]]) <= {"Conv", "Add"}  # inputs of weighted ops and residual skips only
    adds = qdq.residual_adds(model)
    assert len(adds) == 11 and all(producers[skip].op_type == "DequantizeLinear" for _, skip, _ in adds)
    facts = qdq.graph_facts(model)
    assert facts["float32_tensors"] == 0 and facts["opset"] == 19 and facts["qdq_nodes"] == 303
    assert qdq.facts_problems(facts, "int8") == []
    with_se = qdq.graph_facts(builder.build(qdq.Placement(quantize_se=True)))
    assert with_se["convs_quantized"] == with_se["convs"] == 123
    no_adds = qdq.graph_facts(builder.build(qdq.Placement(residual_adds=False)))
    assert no_adds["residual_adds_quantized"] == 0 and no_adds["qdq_nodes"] == 291  # 12 Q/DQ for 11 skips


def test_excluding_every_conv_gives_the_fp16_graph(small):
    """Q/DQ insertion changes nothing else: with every conv excluded the file is the FP16 file."""
    fp32, builder = small
    model = builder.build(qdq.Placement(exclude=tuple(builder.convs), residual_adds=True))
    fp16 = precision_onnx.to_fp16(fp32)
    assert [(n.op_type, list(n.input)) for n in model.graph.node] == [
        (n.op_type, list(n.input)) for n in fp16.graph.node
    ]
    assert {t.name: t.raw_data for t in model.graph.initializer} == {t.name: t.raw_data for t in fp16.graph.initializer}


def test_excluded_layer_and_its_residual_add_stay_float16(small):
    _, builder = small
    conv = "/blocks/blocks.2/conv_pwl/convs.0/Conv"
    model = builder.build(qdq.Placement(exclude=(conv,)))
    producers = {o: n for n in model.graph.node for o in n.output}
    node = next(n for n in model.graph.node if n.name == conv)
    assert node.input[0] in producers and producers[node.input[0]].op_type == "Split"
    assert any(t.name == node.input[1] and t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    add = next(n for n in model.graph.node if n.name == "/blocks/blocks.2/Add")
    assert all(producers[i].op_type != "DequantizeLinear" for i in add.input)  # no fusion without an INT8 conv
    assert qdq.graph_facts(model)["residual_adds_quantized"] == 10
    with pytest.raises(KeyError):
        builder.build(qdq.Placement(exclude=("/no/such/Conv",)))


def test_float32_leftovers_are_counted_and_refused(small):
    fp32, _ = small
    facts = qdq.graph_facts(fp32)
    assert facts["float32_tensors"] > 300
    assert "float32 compute tensors" in qdq.facts_problems(facts, "fp16")[0]
    mixed = precision_onnx.to_fp16(fp32, keep_fp32_ops=("Sigmoid",))
    assert qdq.graph_facts(mixed)["float32_tensors"] == 2 * 52  # 52 sigmoids and the Casts into them, no more


def test_fp16_with_float32_ops_fails_the_run_and_is_in_report(tmp_path, monkeypatch):
    real = precision_onnx.to_fp16
    monkeypatch.setattr(precision_onnx, "to_fp16", lambda proto, *a: real(proto, ("GlobalAveragePool",)))
    with pytest.raises(VerificationError, match="mixnet_s.fp16.onnx.*float32 compute tensors.*not kept"):
        run_export(ExportConfig(img_size=64, out_dir=tmp_path, engine="skip", fp16=True))
    saved = json.loads((tmp_path / "mixnet_s.failed.json").read_text())
    assert saved["artifacts"][1]["structure"]["float32_tensors"] == 2 * 14  # 13 SE pools + the head pool, + Casts
    assert not (tmp_path / "mixnet_s.fp16.onnx").exists()


# ---------------------------------------------------------------- sensitivity search (no ONNX Runtime)


def _fake(layers, damage: dict, reference):
    """evaluate(excluded): the reference plus a fixed noise pattern per layer still quantized."""
    rng = np.random.default_rng(1)
    noise = {name: rng.standard_normal(reference.shape) * damage.get(name, 0.01) for name in layers}
    calls = []

    def evaluate(excluded):
        calls.append(tuple(excluded))
        return reference + sum(noise[n] for n in layers if n not in excluded)

    return evaluate, calls


def test_auto_exclude_keeps_the_damaging_layers_only():
    layers = [f"conv{i}" for i in range(10)]
    reference = np.random.default_rng(0).standard_normal((8, 100)) * 3
    evaluate, calls = _fake(layers, {"conv3": 3.0, "conv7": 2.0}, reference)
    result = sensitivity.auto_exclude(evaluate, layers, reference, tolerance_judge(reference, INT8_TOL), cap=2)
    assert result.passed and result.layers == ["conv3", "conv7"]
    assert [r["layer"] for r in result.table[:2]] == ["conv3", "conv7"]  # most sensitive first
    assert result.baseline["mean_cosine"] < 0.99 <= result.final["mean_cosine"]
    assert len(calls) == result.steps == 1 + 10 + 2
    text = sensitivity.table_text(result)
    assert "conv3" in text.splitlines()[1] and text.splitlines()[1].endswith("fp16")


def test_auto_exclude_over_the_cap_names_what_it_would_need():
    layers = [f"conv{i}" for i in range(10)]
    reference = np.random.default_rng(0).standard_normal((8, 100)) * 3
    evaluate, _ = _fake(layers, {"conv1": 3.0, "conv4": 3.0, "conv8": 3.0}, reference)
    result = sensitivity.auto_exclude(evaluate, layers, reference, tolerance_judge(reference, INT8_TOL), cap=2)
    assert not result.passed and result.layers == []
    assert set(result.needed) >= {"conv1", "conv4", "conv8"} and len(result.needed) == 4  # doubling from the cap
    assert "cap" in result.failure() and "conv8" in result.failure()


def test_auto_exclude_failure_is_one_short_line():
    """Issue 21 item 11: beyond the cap on a net of 123 convolutions the message is one short line (the cap, the
    best figure within it, how many layers it would need, where the table is), not every layer's name."""
    layers = [f"blocks.{i}/conv_pw/Conv" for i in range(123)]
    reference = np.random.default_rng(0).standard_normal((8, 100)) * 3
    evaluate, _ = _fake(layers, dict.fromkeys(layers, 0.3), reference)
    result = sensitivity.auto_exclude(evaluate, layers, reference, tolerance_judge(reference, INT8_TOL), cap=24)
    text = result.failure()
    assert not result.passed and len(result.needed) > 24 and "\n" not in text and len(text) < 400, text
    assert sum(name in text for name in layers) <= 3 and "cap of 24 layers" in text
    assert f"it would need {len(result.needed)} (" in text and "int8_exclusion in the run's report" in text
    assert result.best["layers"] == 24 and f"best within it: {result.best['failure']} with 24 in float16" in text
    assert "cosine" in result.best["failure"]


def test_auto_exclude_nothing_when_int8_passes():
    layers = ["a", "b"]
    reference = np.random.default_rng(0).standard_normal((4, 100)) * 3
    evaluate, calls = _fake(layers, {}, reference)
    result = sensitivity.auto_exclude(evaluate, layers, reference, tolerance_judge(reference, INT8_TOL), cap=1)
    assert result.passed and result.layers == [] and result.table == [] and calls == [()]


def test_auto_exclude_stops_when_the_labelled_judge_accepts():
    """With --labels the search stops at the first exclusion whose top-1 drop is bounded, though its cosine would
    still fail the tolerance: the same criterion as the export's verdict."""
    layers = [f"conv{i}" for i in range(6)]
    labels = np.arange(40) % 10
    reference = np.eye(100)[labels] * 6.0
    rng = np.random.default_rng(2)
    noise = {n: rng.uniform(0, 1.5, reference.shape) for n in layers}  # cosine damage, argmax kept
    flips = np.zeros_like(reference)
    flips[np.arange(10), labels[:10]] = -12.0  # conv5 alone turns 10 images wrong

    def evaluate(excluded):
        out = reference + sum(noise[n] for n in layers if n not in excluded)
        return out + (flips if "conv5" not in excluded else 0)

    judge = labelled_judge(reference, labels, 1.0)
    result = sensitivity.auto_exclude(evaluate, layers, reference, judge, cap=3)
    assert result.passed and result.layers == ["conv5"]
    assert result.final["acceptance"]["accepted"] and result.final["mean_cosine"] < 0.99
    by_cosine = sensitivity.auto_exclude(evaluate, layers, reference, tolerance_judge(reference, INT8_TOL), cap=3)
    assert by_cosine.layers != ["conv5"]  # the tolerance asks for other layers, or fails


@pytest.mark.parametrize("spec", ["", "a,,b", "auto,x", " , "])
def test_exclude_spec_refused(spec):
    with pytest.raises(InputError, match="--int8-exclude") as err:
        sensitivity.parse_exclude(spec)
    assert err.value.field == "int8_exclude" and err.value.value == spec


def test_exclude_needs_int8(tmp_path):
    with pytest.raises(InputError, match="given without --int8"):
        check_config(ExportConfig(out_dir=tmp_path, engine="skip", int8_exclude=("auto",)))
    assert sensitivity.parse_exclude(" a , b") == ("a", "b") and sensitivity.parse_exclude(None) == ()


def test_cli_unknown_exclude_name_is_one_line_exit_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mixnet_deploy.cli", "--img-size", "64", "--int8", "--calib", "synthetic",
         "--calib-count", "4", "--calib-method", "minmax", "--int8-exclude", "/no/such/Conv", "--engine", "skip",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "int8" in last and "exclude '/no/such/Conv': expected Conv layer names" in last  # the flag or the field
    assert not list(tmp_path.glob("*.int8.onnx"))


# ---------------------------------------------------------------- the outlier case, end to end


@pytest.fixture(scope="module")
def outlier_case(tmp_path_factory):
    """A trained-like MixNet-S, with and without outlier channels before block 1's projection conv."""
    case = make_case(tmp_path_factory.mktemp("outliers"), SIZE)
    case["logits"] = tuple(run_torch(m, case["held"]) for m in case["models"])
    return case


def _export(case, tmp_path, weights: str, exclude=None, equalize=False):
    """Without cross-layer equalization unless asked: it rescales exactly these outliers away (next test)."""
    cfg = ExportConfig(
        weights=str(case[weights]), img_size=SIZE, out_dir=tmp_path, engine="skip", int8=True,
        calib=str(case["calib"]), calib_count=16, int8_exclude=sensitivity.parse_exclude(exclude), equalize=equalize,
    )  # fmt: skip
    return run_export(cfg)


def test_outliers_leave_the_float_network_unchanged(outlier_case):
    clean, planted = outlier_case["logits"]
    m = compare(clean, planted)
    assert m.min_cosine > 0.99999 and m.max_abs < 1e-3 * np.abs(clean).max(), m
    from safetensors.numpy import load_file

    bn = load_file(str(outlier_case["planted"]))["blocks.1.bn2.weight"]
    assert np.abs(bn).max() > 100 * np.median(np.abs(bn))


@pytest.mark.slow
def test_outliers_sink_int8_and_auto_exclusion_fixes_them(outlier_case, tmp_path):
    report = _export(outlier_case, tmp_path / "clean", "clean")  # the same network without outliers passes
    assert report.artifacts[-1].metrics["mean_cosine"] >= 0.99
    with pytest.raises(VerificationError, match="mean cosine"):
        _export(outlier_case, tmp_path / "none", "planted")
    failed = json.loads((tmp_path / "none" / "mixnet_s.failed.json").read_text())["artifacts"][-1]["metrics"]
    assert failed["mean_cosine"] < 0.99

    report = _export(outlier_case, tmp_path / "auto", "planted", "auto")
    ex = report.int8_exclusion
    planted = {f"/blocks/blocks.1/conv_pwl/convs.{g}/Conv" for g in (0, 1)}
    assert ex["passed"] and set(ex["layers"]) == planted  # few layers: exactly the two projection convs
    assert {r["layer"] for r in ex["table"][:2]} == planted and len(ex["table"]) == 97
    assert ex["baseline"]["mean_cosine"] < 0.99 <= report.artifacts[-1].metrics["mean_cosine"]
    assert len(ex["layers"]) <= ex["cap"] == 24
    assert any(n.startswith("int8 sensitivity") and "/blocks/blocks.1/conv_pwl" in n for n in report.notes)
    int8 = onnx.load(str(tmp_path / "auto" / "mixnet_s.int8.onnx"))
    assert qdq.graph_facts(int8)["convs_quantized"] == 95

    names = ",".join(ex["layers"])  # the printed names work as an explicit list and give the same file
    again = _export(outlier_case, tmp_path / "names", "planted", names)
    assert again.int8_exclusion["mode"] == "names" and again.int8_exclusion["table"] == []
    assert (tmp_path / "names" / "mixnet_s.int8.onnx").read_bytes() == (
        tmp_path / "auto" / "mixnet_s.int8.onnx"
    ).read_bytes()
    assert again.calibration["key"] != report.calibration["key"]  # the exclusion is part of the cache key


@pytest.mark.slow
def test_equalization_rescales_the_outliers_away(outlier_case, tmp_path):
    """The outliers sit in a depthwise -> ReLU -> pointwise pair (block 1): equalization (the default) evens the
    channel ranges, and the INT8 file passes without any layer in FP16."""
    report = _export(outlier_case, tmp_path, "planted", equalize=True)
    assert report.calibration["fixes"]["equalize"]["pairs"] == 3
    assert report.artifacts[-1].metrics["mean_cosine"] >= 0.99 and report.int8_exclusion["layers"] == []


@pytest.mark.slow
def test_auto_over_the_cap_exits_1_naming_layers(outlier_case, tmp_path, monkeypatch):
    monkeypatch.setattr(sensitivity, "MAX_EXCLUDE_FRACTION", 0.0)  # cap 0: the two layers are over it
    with pytest.raises(VerificationError, match=r"it would need \d+ \(.*blocks\.1/conv_pwl"):
        _export(outlier_case, tmp_path, "planted", "auto")
    saved = json.loads((tmp_path / "mixnet_s.failed.json").read_text())
    assert not saved["int8_exclusion"]["passed"] and saved["int8_exclusion"]["cap"] == 0
    assert not (tmp_path / "mixnet_s.int8.onnx").exists()
