"""FP16 and INT8 (QDQ) ONNX: accuracy against timm / the FP32 graph, graph structure, calibration cache."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import every_file_accepted
from model_facts import weight_dtypes
from PIL import Image
from test_data import skimage_data

from mixnet_deploy import contract, precision_onnx, qdq
from mixnet_deploy.config import ExportConfig, check_config
from mixnet_deploy.data import CalibrationReader, Preprocess, crop_image, synthetic_crops
from mixnet_deploy.errors import InputError, VerificationError
from mixnet_deploy.export_reports import read_report
from mixnet_deploy.metrics import compare
from mixnet_deploy.onnx_export import TRT_SAFE_OPS, check_graph, read_metadata, to_onnx
from mixnet_deploy.pipeline import run_export
from mixnet_deploy.precision_table import tolerances
from mixnet_deploy.runtimes import ort_session, run_ort

INT8_SIZE = 96


def photos() -> list[Path]:
    """scikit-image's bundled photos and scans (RGB and grey, PNG and JPEG), sorted."""
    return sorted(p for p in skimage_data().iterdir() if p.suffix in (".png", ".jpg"))


def variants(path: Path) -> list:
    """The photo, mirrored, and two off-centre crops: more natural inputs from few files."""
    with Image.open(path) as img:
        img = img.convert("RGB")
    w, h = img.size
    return [
        img,
        img.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        img.crop((0, 0, int(w * 0.7), int(h * 0.7))),
        img.crop((int(w * 0.3), int(h * 0.3), w, h)).transpose(Image.Transpose.FLIP_TOP_BOTTOM),
    ]


@pytest.fixture(scope="module")
def photo_split(tmp_path_factory):
    """Calibration folder from every other photo (with mirrored copies); held-out inputs from the rest."""
    files = photos()
    calib_dir = tmp_path_factory.mktemp("calib")
    for path in files[0::2]:
        for i, img in enumerate(variants(path)[:2]):
            img.save(calib_dir / f"{path.stem}_{i}.png")
    pre = Preprocess(size=INT8_SIZE)
    held = np.stack([crop_image(img, pre) for path in files[1::2] for img in variants(path)])
    return calib_dir, pre.normalize(held)


@pytest.fixture(scope="module")
def int8_export(tmp_path_factory, timm_fixture, photo_split):
    out = tmp_path_factory.mktemp("int8")
    cfg = ExportConfig(
        weights=str(timm_fixture["weights"]), img_size=INT8_SIZE, out_dir=out, engine="skip",
        int8=True, calib=str(photo_split[0]), calib_count=16,
    )  # fmt: skip
    return cfg, run_export(cfg)


@pytest.fixture(scope="module")
def fp16_export(tmp_path_factory, timm_fixture):
    out = tmp_path_factory.mktemp("fp16")
    report = run_export(ExportConfig(weights=str(timm_fixture["weights"]), out_dir=out, engine="skip", fp16=True))
    return out, report


@pytest.fixture(scope="module")
def small_fp32():
    from mixnet_deploy.fold import fold_bn
    from mixnet_deploy.weights import load_model

    model, _ = load_model("s")
    return to_onnx(fold_bn(model), 64).SerializeToString()


# ---------------------------------------------------------------- FP16


def test_fp16_matches_timm_logits(fp16_export, timm_fixture):
    out, _ = fp16_export
    logits = run_ort(ort_session(str(out / "mixnet_s.fp16.onnx")), timm_fixture["input"])
    m = compare(timm_fixture["logits"], logits)
    assert m.max_abs <= 2e-2 and m.min_cosine >= 0.9995, m
    assert m.max_abs > 0  # it really computes in float16: not bit-identical to float32


def test_fp16_graph(fp16_export):
    out, report = fp16_export
    model = onnx.load(str(out / "mixnet_s.fp16.onnx"))
    check_graph(model)  # onnx.checker (full) + TensorRT-safe ops + names
    assert weight_dtypes(model, "Conv") == {"FLOAT16"}
    assert weight_dtypes(model, "Gemm") == {"FLOAT16"}
    assert not [t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    for value in (*model.graph.input, *model.graph.output):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # servers feed float32
    meta, fp32_meta = read_metadata(model), read_metadata(onnx.load(str(out / "mixnet_s.onnx")))
    assert meta.pop("mixnet.precision") == "fp16" and fp32_meta.pop("mixnet.precision") == "fp32"
    assert meta == fp32_meta
    (fp16,) = [a for a in report.artifacts if a.precision == "fp16"]
    assert fp16.bytes < 0.55 * report.artifacts[0].bytes
    assert fp16.tolerance == {**tolerances()["fp16"].__dict__}
    saved = read_report(out)
    assert [a["precision"] for a in saved["artifacts"]] == ["fp32", "fp16"]


def test_fp16_conversion_is_deterministic_and_keeps_weights_in_range(small_fp32):
    proto = onnx.load_from_string(small_fp32)
    a, b = precision_onnx.to_fp16(proto), precision_onnx.to_fp16(proto)
    assert a.SerializeToString() == b.SerializeToString()
    assert proto.graph.initializer[0].data_type == onnx.TensorProto.FLOAT  # the FP32 proto is not touched
    big = onnx.ModelProto()
    big.CopyFrom(proto)
    w = onnx.numpy_helper.to_array(big.graph.initializer[0]).copy()
    w.flat[0] = 1e5
    big.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(w, big.graph.initializer[0].name))
    with pytest.raises(ValueError, match="float16 range"):
        precision_onnx.to_fp16(big)


def test_fp16_beyond_tolerance_keeps_no_file(tmp_path, monkeypatch):
    real = precision_onnx.to_fp16

    def damaged(proto, *args):
        model = real(proto, *args)
        conv = next(n for n in model.graph.node if n.op_type == "Conv" and "stem" in n.input[1])
        init = next(t for t in model.graph.initializer if t.name == conv.input[1])
        init.CopyFrom(onnx.numpy_helper.from_array(-onnx.numpy_helper.to_array(init), init.name))
        return model

    monkeypatch.setattr(precision_onnx, "to_fp16", damaged)
    with pytest.raises(VerificationError, match="mixnet_s.fp16.onnx vs FP32.*not kept"):
        run_export(ExportConfig(img_size=64, out_dir=tmp_path, engine="skip", fp16=True))
    assert not (tmp_path / "mixnet_s.onnx").exists() and not (tmp_path / "mixnet_s.fp16.onnx").exists()  # no swap
    saved = json.loads((tmp_path / "mixnet_s.failed.json").read_text())
    assert saved["artifacts"][1]["precision"] == "fp16" and saved["artifacts"][1]["metrics"]["min_cosine"] < 0.9995
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


# ---------------------------------------------------------------- INT8


def test_int8_held_out_photos_against_fp32(int8_export, photo_split):
    """Natural images never seen in calibration (other photos, other crops): the issue's bar."""
    cfg, _ = int8_export
    _, held = photo_split
    out = Path(cfg.out_dir)
    fp32 = run_ort(ort_session(str(out / "mixnet_s.onnx")), held)
    int8 = run_ort(ort_session(str(out / "mixnet_s.int8.onnx")), held)
    m = compare(fp32, int8)
    assert len(held) >= 40
    assert m.mean_cosine >= 0.99 and m.top5_overlap >= 0.7, m
    assert m.max_abs > 1e-4  # really quantized


def test_int8_report(int8_export):
    cfg, report = int8_export
    (int8,) = [a for a in report.artifacts if a.precision == "int8"]
    assert Path(int8.path).name == "mixnet_s.int8.onnx"
    assert int8.metrics["mean_cosine"] >= 0.99 and int8.metrics["top5_overlap"] >= 0.7
    assert int8.metrics["n"] == 5  # 26 files < 16 + 16: a fifth of them held out (data.calibration_sets)
    cal = report.calibration
    assert cal["images"] == 16 and cal["method"] == contract.DEFAULT_CALIB_METHOD and not cal["cached"]
    assert Path(cal["cache"]).is_file() and Path(cal["cache"]).parent == Path(cfg.out_dir)
    assert "16 calibration + 5 held-out images" in cal["summary"]


def test_int8_graph_is_tensorrt_explicit_quantization(int8_export):
    cfg, _ = int8_export
    model = onnx.load(str(Path(cfg.out_dir) / "mixnet_s.int8.onnx"))
    check_graph(model)
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops <= TRT_SAFE_OPS
    assert not ops & {"QLinearConv", "ConvInteger", "MatMulInteger", "QLinearMatMul"}
    se = qdq.se_convs(onnx.load(str(Path(cfg.out_dir) / "mixnet_s.onnx")))
    assert len(se) == 26  # 13 SE blocks x (reduce, expand): 1x1 convs on 1x1 maps, kept float16 (qdq.QUANTIZE_SE)
    assert precision_onnx.int8_problems(model, unquantized=se) == []
    assert precision_onnx.int8_problems(model)[0].endswith("weight is not an int8 initializer behind DequantizeLinear")
    inits = {t.name: t for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    qdq_nodes = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    zero_points = [onnx.numpy_helper.to_array(inits[n.input[2]]) for n in qdq_nodes]
    assert all(z.dtype == np.int8 and not z.any() for z in zero_points)  # int8, symmetric
    assert not [t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT32]  # no int32 bias
    convs = [n for n in model.graph.node if n.op_type == "Conv" and n.name not in se]
    for conv in convs:
        dq = producers[conv.input[1]]
        weight, scale = inits[dq.input[0]], inits[dq.input[1]]
        assert weight.data_type == onnx.TensorProto.INT8
        assert list(scale.dims) == [weight.dims[0]], conv.name  # one scale per output channel
        assert producers[conv.input[0]].op_type == "DequantizeLinear"
        if len(conv.input) > 2:
            assert conv.input[2] not in producers or producers[conv.input[2]].op_type == "Identity"
        assert inits[dq.input[1]].data_type == onnx.TensorProto.FLOAT16  # float16 scales: DQ outputs float16
    assert weight_dtypes(model, "Gemm") == {"FLOAT16"}  # the classifier stays float16 (INT8_OP_TYPES)
    assert read_metadata(model)["mixnet.precision"] == "int8"


def test_int8_is_float16_between_the_quantized_convs(int8_export):
    """Strongly typed TensorRT computes each tensor in its ONNX type: nothing but I/O may be float32."""
    cfg, report = int8_export
    model = onnx.load(str(Path(cfg.out_dir) / "mixnet_s.int8.onnx"))
    assert qdq.float32_tensors(model) == []  # ONNX type inference over every node output
    assert next(o.version for o in model.opset_import if o.domain == "") == qdq.QDQ_OPSET == 19
    for value in (*model.graph.input, *model.graph.output):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # servers feed and read float32
    scales = [t for t in model.graph.initializer if t.name.endswith("_scale")]
    assert scales and {t.data_type for t in scales} == {onnx.TensorProto.FLOAT16}
    assert not [t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    (int8,) = [a for a in report.artifacts if a.precision == "int8"]
    facts = int8.structure
    assert facts["float32_tensors"] == 0 and facts["scale_types"] == ["FLOAT16"]
    assert facts["residual_adds"] == facts["residual_adds_quantized"] == 11  # TensorRT fuses each into its conv
    assert facts["convs_quantized"] == facts["convs"] - 26 == 97
    assert facts["ort_cpu_casts"]["float32_nodes"]  # ORT's CPU provider runs some of it in float32: reported
    saved = read_report(cfg.out_dir)
    assert saved["artifacts"][-1]["structure"]["float32_tensors"] == 0


def test_int8_second_run_uses_cache(int8_export):
    cfg, first = int8_export
    out = Path(cfg.out_dir)
    before = (out / "mixnet_s.int8.onnx").read_bytes()
    again = run_export(cfg)
    assert again.calibration["cached"] and again.calibration["seconds"] == 0.0
    assert again.calibration["cache"] == first.calibration["cache"]
    assert (out / "mixnet_s.int8.onnx").read_bytes() == before
    assert any("cached, calibration skipped" in n for n in again.notes)


def test_calibration_cache_key_and_recalibration(tmp_path, small_fp32):
    pre = Preprocess(size=64)
    images = synthetic_crops(4, pre)
    calls = []

    def batches(imgs=images):
        calls.append(1)
        return iter(CalibrationReader(imgs, pre))

    def run(ids=images.ids, method="minmax", data=small_fp32, source="x"):
        recipe = precision_onnx.Int8Recipe(method=method)
        return precision_onnx.calibrate(data, ids, batches, recipe, tmp_path, "mixnet_s", source)

    first = run()
    assert not first.cached and len(calls) == 1 and first.cache.is_file()
    assert run().cached and len(calls) == 1  # same model, images, method: no calibration
    assert run(source="elsewhere").cached  # the key is about content, not where it was read
    changed_image = [images.ids[0], (images.ids[1][0], "f" * 64), *images.ids[2:]]
    assert not run(ids=changed_image).cached and len(calls) == 2
    assert not run(method="percentile").cached and len(calls) == 3
    other_model = small_fp32 + b" "  # any byte of the FP32 file
    assert precision_onnx.calibration_key(other_model, images.ids, precision_onnx.Int8Recipe())["key"] != first.key
    assert len({p.name for p in tmp_path.iterdir()}) == 3
    first.cache.write_text("{not json")  # corrupted: recalibrated and rewritten
    redone = run()
    assert not redone.cached and len(calls) == 4 and json.loads(first.cache.read_text())["mixnet_deploy"]["key"]
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def _int8(data: bytes, cal) -> bytes:
    amax = qdq.amax_of(precision_onnx.load_cache(cal.cache, cal.key))
    return qdq.Int8Builder(onnx.load_from_string(data), amax).build().SerializeToString()


def test_cached_and_fresh_ranges_give_the_same_model(tmp_path, small_fp32):
    pre = Preprocess(size=64)
    images = synthetic_crops(4, pre)
    recipe = precision_onnx.Int8Recipe(method="minmax")
    cal = precision_onnx.calibrate(
        small_fp32, images.ids, lambda: iter(CalibrationReader(images, pre)), recipe, tmp_path, "m", "x"
    )
    a = _int8(small_fp32, cal)
    again = precision_onnx.calibrate(small_fp32, images.ids, lambda: iter([]), recipe, tmp_path, "m", "x")
    assert again.cached
    assert _int8(small_fp32, again) == a
    excluded = precision_onnx.Int8Recipe(method="minmax", exclude=("auto",))  # --int8-exclude is in the key
    assert precision_onnx.calibration_key(small_fp32, images.ids, excluded)["key"] != cal.key


def test_synthetic_merged_fp16_and_int8_together(tmp_path, caplog):
    cfg = ExportConfig(
        img_size=64, out_dir=tmp_path, engine="skip", mdconv="merged", fp16=True, int8=True,
        calib="synthetic", calib_count=8, calib_method="minmax",
    )  # fmt: skip
    with every_file_accepted():  # a graph test: INT8 from colour fields is refused on photos
        report = run_export(cfg)
    assert [a.precision for a in report.artifacts] == ["fp32", "fp16", "int8"]
    for name, prec in (("mixnet_s.fp16.onnx", "fp16"), ("mixnet_s.int8.onnx", "int8")):
        model = onnx.load(str(tmp_path / name))
        check_graph(model)
        meta = read_metadata(model)
        assert meta["mixnet.precision"] == prec and meta["mixnet.mdconv"] == "merged"
    int8 = onnx.load(str(tmp_path / "mixnet_s.int8.onnx"))
    assert (
        precision_onnx.int8_problems(int8, unquantized=qdq.se_convs(onnx.load(str(tmp_path / "mixnet_s.onnx")))) == []
    )
    assert [a.structure["float32_tensors"] for a in report.artifacts[1:]] == [0, 0]
    assert any(n.startswith("WARNING: --calib synthetic") for n in report.notes)
    assert "--calib synthetic" in caplog.text


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"int8": True}, "--int8 needs calibration images"),
        ({"calib": "synthetic"}, "without --int8"),
        ({"int8": True, "calib": "synthetic", "calib_method": "kl"}, "--calib-method 'kl'"),
        ({"int8": True, "calib": "synthetic", "calib_count": 0}, "--calib-count 0"),
        ({"int8": True, "calib": "/nonexistent/photos"}, "does not exist"),
    ],
)
def test_precision_config_refused(tmp_path, kwargs, needle):
    with pytest.raises(InputError, match=needle.replace("(", r"\(")):
        check_config(ExportConfig(out_dir=tmp_path, engine="skip", **kwargs))
