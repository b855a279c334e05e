"""Issue 25: FP16/INT8 accepted by their top-1 drop on labelled held-out images; equalization and bias correction."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from conftest import FIXTURE
from test_data import png_bytes

from mixnet_deploy import acceptance
from mixnet_deploy.config import ExportConfig, check_config
from mixnet_deploy.data import Preprocess, calibration_sets
from mixnet_deploy.errors import InputError, VerificationError
from mixnet_deploy.fold import fold_bn
from mixnet_deploy.int8_fixes import bias_shift, equalize, input_means
from mixnet_deploy.labels import labelled_images
from mixnet_deploy.lowering import lower
from mixnet_deploy.onnx_export import to_onnx
from mixnet_deploy.pipeline import run_export
from mixnet_deploy.precision_onnx import int8_problems
from mixnet_deploy.qdq import Int8Builder, Placement, conv_inputs, quantize_weight
from mixnet_deploy.runtimes import ort_session, random_inputs, run_ort
from mixnet_deploy.weights import load_model

TRAINED = FIXTURE.parent / "trained_mixnet_s20"


def trained_fixture():
    if not (TRAINED / "state_dict.safetensors").is_file():
        pytest.skip(f"trained fixture {TRAINED} absent (MIXNET_FIXTURES=DIR points at the fixtures)")
    return TRAINED


# ---------------------------------------------------------------- the criterion


def test_holdout_needed_follows_the_rule_of_three():
    assert acceptance.holdout_needed(1.0) == 300 and acceptance.holdout_needed(0.5) == 600
    assert acceptance.holdout_needed(3.0) == 100 and acceptance.holdout_needed(-5) is None
    assert acceptance.holdout_warning(300, 1.0) is None
    text = acceptance.holdout_warning(50, 1.0)
    assert "50 labelled held-out images" in text and "at least 300" in text and "6.0 points" in text
    assert "no count of held-out images" in acceptance.holdout_warning(1000, -5)


def _logits(labels: np.ndarray, wrong: np.ndarray, classes: int = 10) -> np.ndarray:
    """One-hot-ish logits predicting ``labels``, except where ``wrong``: the next class."""
    pred = np.where(wrong, (labels + 1) % classes, labels)
    out = np.zeros((len(labels), classes))
    out[np.arange(len(labels)), pred] = 5.0
    return out


def test_judge_accepts_by_the_upper_bound_of_the_drop():
    labels = np.arange(200) % 10
    ref = _logits(labels, np.zeros(200, bool))  # FP32: all right
    same = acceptance.judge_top1(ref, ref, labels, 1.0)
    assert same.accepted and same.top1_drop["high"] == 0 and same.failures() == []
    two = np.zeros(200, bool)
    two[[3, 77]] = True  # two images flip to wrong: drop 1 point, interval above 0
    verdict = acceptance.judge_top1(ref, _logits(labels, two), labels, 1.0)
    assert verdict.top1_drop["points"] == pytest.approx(1.0) and verdict.top1_drop["high"] > 1.0
    assert not verdict.accepted and "upper bound > --max-top1-drop 1" in verdict.failures()[0]
    assert acceptance.judge_top1(ref, _logits(labels, two), labels, 3.0).accepted
    impossible = acceptance.judge_top1(ref, ref, labels, -5.0)  # 5 points better than FP32: never
    assert not impossible.accepted and impossible.reference["top1"] == 1.0


def test_labelled_judge_decides_where_the_tolerance_would_refuse():
    """Logits far from FP32 by cosine but with the same top-1 pass by accuracy, and fail by the tolerance."""
    from mixnet_deploy.precision_table import row

    labels = np.arange(64) % 10
    ref = _logits(labels, np.zeros(64, bool))
    noisy = ref + np.random.default_rng(0).uniform(0, 2.0, ref.shape)  # argmax kept (5 + <2 vs <2)
    assert acceptance.labelled_judge(ref, labels, 1.0)(noisy)[1] == []
    assert acceptance.tolerance_judge(ref, row("int8").tolerance)(noisy)[1]  # cosine well below 0.99


# ---------------------------------------------------------------- held-out images and labels


@pytest.fixture
def labelled_folder(tmp_path):
    rng = np.random.default_rng(3)
    rows = ["image,class"]
    for i in range(12):
        (tmp_path / "imgs" / f"c{i % 3}").mkdir(parents=True, exist_ok=True)
        name = f"c{i % 3}/img{i:02d}.png"
        (tmp_path / "imgs" / name).write_bytes(png_bytes(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)))
        rows.append(f"{name},{i % 3}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "imgs", tmp_path / "labels.csv"


def test_calibration_sets_carry_the_labels_of_the_held_out_images(labelled_folder):
    root, csv = labelled_folder
    pre = Preprocess(size=32)
    labels = labelled_images(root, str(csv)).by_name()
    sets = calibration_sets(str(root), pre, count=4, quiet=True, labels=labels)
    assert len(sets.held_out) == 8 and len(sets.calib) == 4  # all beyond --calib-count (more than half)
    expected = [int(name.split("/")[0][1]) for name, _ in sets.held_out.ids]
    assert sets.held_out_labels.tolist() == expected and "8 held-out labelled" in sets.summary()
    half = calibration_sets(str(root), pre, count=10, quiet=True, labels=labels)
    assert len(half.held_out) == 6 and len(half.calib) == 6
    fixed = calibration_sets(str(root), pre, count=10, quiet=True, labels=labels, holdout=3)
    assert len(fixed.held_out) == 3 and len(fixed.calib) == 9
    assert calibration_sets("synthetic", pre, count=2, holdout=5).held_out.crops.shape[0] == 5
    with pytest.raises(InputError, match="expected at least 13") as err:
        calibration_sets(str(root), pre, count=4, quiet=True, holdout=12)
    assert err.value.field == "holdout"


@pytest.mark.parametrize(
    "kwargs, field, match",
    [
        ({"fp16": True, "labels": "folder"}, "labels", "given without --calib"),
        ({"int8": True, "calib": "synthetic", "labels": "folder"}, "labels", "synthetic"),
        ({"int8": True, "calib": "synthetic", "max_top1_drop": float("nan")}, "max_top1_drop", "finite"),
        ({"int8": True, "calib": "synthetic", "max_top1_drop": 2.0}, "max_top1_drop", "--labels"),
        ({"fp16": True, "holdout": 4}, "holdout", "given without --calib"),
        ({"keep_refused": True}, "keep_refused", "--fp16"),
    ],
)
def test_acceptance_options_checked_before_any_work(tmp_path, kwargs, field, match):
    with pytest.raises(InputError, match=match) as err:
        check_config(ExportConfig(out_dir=tmp_path / "out", engine="skip", **kwargs))
    assert err.value.field == field


def test_labels_read_and_matched_before_any_work(tmp_path, labelled_folder):
    root, csv = labelled_folder
    lines = csv.read_text().splitlines()
    (tmp_path / "short.csv").write_text("\n".join(lines[:-1]) + "\n")  # one image without a label
    with pytest.raises(InputError, match="1 of 12 image"):
        check_config(ExportConfig(out_dir=tmp_path / "out", engine="skip", int8=True, calib=str(root),
                                  labels=str(tmp_path / "short.csv")))  # fmt: skip
    ok = ExportConfig(out_dir=tmp_path / "out", engine="skip", fp16=True, calib=str(root), labels=str(csv))
    assert check_config(ok) is ok  # --calib with --fp16 --labels alone: the held-out images judge FP16


def test_fp16_refused_by_an_impossible_bound_and_kept_with_keep_refused(tmp_path, labelled_folder):
    """Random weights, labelled photos: FP16 agrees with FP32, so a -5 point bound refuses it (exit 1)."""
    root, csv = labelled_folder
    cfg = dict(img_size=64, engine="skip", fp16=True, calib=str(root), labels=str(csv), holdout=6)
    run_export(ExportConfig(out_dir=tmp_path / "ok", **cfg))
    kept = json.loads((tmp_path / "ok" / "mixnet_s.report.json").read_text())
    fp16 = kept["artifacts"][1]
    assert fp16["acceptance"]["criterion"] == "top1_drop" and fp16["acceptance"]["n"] == 6
    assert fp16["acceptance"]["accepted"] and not fp16["refused"]
    assert any("at least 300" in n for n in kept["notes"])  # too few to bound 1 point: warned
    with pytest.raises(VerificationError, match="upper bound > --max-top1-drop -5"):
        run_export(ExportConfig(out_dir=tmp_path / "keep", max_top1_drop=-5.0, keep_refused=True, **cfg))
    refused = tmp_path / "keep" / "mixnet_s.fp16.refused.onnx"
    report = json.loads((tmp_path / "keep" / "mixnet_s.failed.json").read_text())  # a failed run: its own report
    assert refused.is_file() and not (tmp_path / "keep" / "mixnet_s.fp16.onnx").exists()
    assert report["artifacts"][1]["refused"] and report["artifacts"][1]["path"] == str(refused)
    assert onnx.load(str(refused)).graph.node  # a whole model, loadable by mixnet-parity


# ---------------------------------------------------------------- equalization and bias correction


@pytest.mark.parametrize("mdconv", ["split", "merged"])
def test_equalization_is_exact_in_fp32_and_evens_the_ranges(mdconv):
    model, _ = load_model("s", None)
    proto = to_onnx(lower(fold_bn(model), mdconv), 64)
    equalized, facts = equalize(proto)
    assert facts.pairs == 3 and facts.skipped == 13  # MixNet-S: ReLU in the first three blocks, Swish after
    x = random_inputs((2, 3, 64, 64), 5)
    before = run_ort(ort_session(proto.SerializeToString()), x)
    after = run_ort(ort_session(equalized.SerializeToString()), x)
    assert np.abs(after - before).max() <= 1e-5 * max(1.0, np.abs(before).max())
    changed = [a.name for a, b in zip(proto.graph.initializer, equalized.graph.initializer)
               if not np.array_equal(onnx.numpy_helper.to_array(a), onnx.numpy_helper.to_array(b))]  # fmt: skip
    assert changed  # the weights did change: not a no-op


def test_equalization_exact_on_the_trained_fixture():
    root = trained_fixture()
    model, _ = load_model("s", str(root / "state_dict.safetensors"))
    proto = to_onnx(fold_bn(model), 224)
    equalized, facts = equalize(proto)
    x = random_inputs((2, 3, 224, 224), 7)
    diff = run_ort(ort_session(equalized.SerializeToString()), x) - run_ort(ort_session(proto.SerializeToString()), x)
    assert facts.pairs == 3 and np.abs(diff).max() <= 1e-5  # the bound, absolute


@pytest.mark.parametrize("group", [1, 2, 6])
def test_bias_shift_is_the_mean_output_error(group):
    """With circular padding (every pixel read by every kernel tap: no border effect), the mean of
    conv(clip(x), Wq) - conv(x, W) per output channel is exactly the shift."""
    rng = np.random.default_rng(group)
    w = rng.standard_normal((6, 6 // group, 3, 3)).astype(np.float32)
    q, scale = quantize_weight(w)
    wq = q.astype(np.float32) * scale.astype(np.float32).reshape(-1, 1, 1, 1)
    x = (rng.standard_normal((4, 6, 9, 9)) * 2 + 0.5).astype(np.float32)
    clipped = np.clip(x, -1.5, 1.5)
    def conv(a, k):
        padded = torch.nn.functional.pad(torch.from_numpy(a).double(), (1, 1, 1, 1), mode="circular")
        return torch.nn.functional.conv2d(padded, torch.from_numpy(k).double(), groups=group).numpy()

    measured = (conv(clipped, wq) - conv(x, w)).mean(axis=(0, 2, 3))
    mean, clipped_mean = x.astype(np.float64).mean((0, 2, 3)), clipped.astype(np.float64).mean((0, 2, 3))
    expected = bias_shift(w, wq, group, mean, clipped_mean)
    np.testing.assert_allclose(expected, measured, atol=1e-9)


def test_bias_correction_changes_only_the_quantized_biases():
    model, _ = load_model("s", None)
    proto = to_onnx(fold_bn(model), 64)
    x = random_inputs((2, 3, 64, 64), 2)
    amax = {t: 4.0 for t in conv_inputs(proto)} | {n.input[i]: 4.0 for n in proto.graph.node if n.op_type == "Add"
                                                  for i in range(2)}  # fmt: skip
    means = input_means(proto, conv_inputs(proto), amax, [{"input": x}])
    builder = Int8Builder(proto, amax, means)
    corrected = builder.build()
    plain = Int8Builder(proto, amax).build()
    assert int8_problems(corrected, unquantized=builder.unquantized(Placement())) == []
    fixed = [n for n in corrected.graph.node if n.op_type == "Conv" and n.input[2].endswith("_bias_corrected")]
    assert len(fixed) == len(builder.candidates()) and len(plain.graph.node) == len(corrected.graph.node)


def test_fixes_are_in_the_calibration_cache_key():
    from dataclasses import replace

    from mixnet_deploy.precision_onnx import Int8Recipe, calibration_key

    ids = [("a.png", "0" * 64)]
    base = Int8Recipe()
    keys = {calibration_key(b"onnx", ids, r)["key"] for r in (base, replace(base, equalize=not base.equalize),
                                                               replace(base, bias_correction=True))}  # fmt: skip
    assert len(keys) == 3


def test_input_means_per_tensor_of_its_own_size():
    """Channel means of tensors of different spatial sizes: each divided by its own count of values."""
    from onnx import TensorProto, helper, numpy_helper

    eye = numpy_helper.from_array(np.eye(2, dtype=np.float32).reshape(2, 2, 1, 1), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], strides=[2, 2], name="down"),
         helper.make_node("Conv", ["y", "w"], ["z"], name="same")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2, 8, 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [None, 2, 4, 4])], [eye],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(0).standard_normal((3, 2, 8, 8)).astype(np.float32) + 1.0
    means = input_means(model, ["x", "y"], {"y": 1.5}, [{"x": x[:2]}, {"x": x[2:]}])
    sub = x[:, :, ::2, ::2].astype(np.float64)
    np.testing.assert_allclose(means.plain["x"], x.astype(np.float64).mean((0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(means.plain["y"], sub.mean((0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(means.clipped["y"], np.clip(sub, -1.5, 1.5).mean((0, 2, 3)), rtol=1e-6)
