"""Issue 22: uint8 pixels in, top-k out, class names, Triton labels and warm-up, mixnet-predict.

The oracles: timm's own preprocessing (tests/oracles/timm_preprocess.npz, and data.py's transform that
test_data.py checks against it), the float32 file this toolkit verified against PyTorch, numpy's top-k,
Triton's ModelConfig protobuf, polygraphy's lint, and ``mixnet-parity --predictions``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from test_data import ORACLE, skimage_data

from mixnet_deploy import class_names, graph_io
from mixnet_deploy.batching import BatchProfile
from mixnet_deploy.config import ExportConfig
from mixnet_deploy.contract import IMAGE_NAME, INPUT_NAME, OUTPUT_NAME
from mixnet_deploy.data import Preprocess, decode, find_images, load_images
from mixnet_deploy.errors import InputError
from mixnet_deploy.metrics import compare, failures
from mixnet_deploy.pipeline import run_export
from mixnet_deploy.precision_table import tolerances
from mixnet_deploy.runtimes import make_runner, ort_session

SIZE = 96
K = 5


@pytest.fixture(scope="module")
def photos_dir() -> Path:
    return skimage_data()


@pytest.fixture(scope="module")
def names_file(tmp_path_factory) -> Path:
    """1000 made-up names (a fine-tuned checkpoint's file), none of them ImageNet's."""
    path = tmp_path_factory.mktemp("names") / "names.txt"
    path.write_text("".join(f"thing {i}\n" for i in range(1000)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def exports(tmp_path_factory, timm_fixture, photos_dir, names_file):
    """timm's MixNet-S at 96 px twice: float32-nchw (FP32), and uint8-nhwc + top-5 + FP16 + INT8 + Triton."""
    root = tmp_path_factory.mktemp("served")
    weights = str(timm_fixture["weights"])
    run_export(ExportConfig(weights=weights, img_size=SIZE, out_dir=root / "float", engine="skip"))
    report = run_export(ExportConfig(
        weights=weights, img_size=SIZE, out_dir=root / "pixels", engine="skip", input_format="uint8-nhwc", top_k=K,
        fp16=True, int8=True, calib=str(photos_dir), calib_count=16, class_names=names_file,
        triton_repo=root / "repo", triton_kind="cpu", triton_precision="fp32",
    ))  # fmt: skip
    return root, report


@pytest.fixture(scope="module")
def crops(photos_dir) -> np.ndarray:
    return load_images(find_images(photos_dir), Preprocess(size=SIZE), limit=12, quiet=True).crops


def test_pixel_input_equals_the_float_model_on_timm_preprocessing(exports, crops):
    """FP32: the uint8 file on pixels == the float32 file on the same pixels normalised the timm way."""
    root, _ = exports
    served = ort_session(str(root / "pixels" / "mixnet_s.onnx"))
    assert served.get_inputs()[0].name == IMAGE_NAME and served.get_inputs()[0].type == "tensor(uint8)"
    assert served.get_inputs()[0].shape[1:] == [SIZE, SIZE, 3]
    logits = served.run([OUTPUT_NAME], {IMAGE_NAME: crops})[0]
    x = Preprocess(size=SIZE).normalize(crops)
    reference = ort_session(str(root / "float" / "mixnet_s.onnx")).run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    assert np.abs(logits - reference).max() <= graph_io.PIXEL_MAX_ABS


def test_pixel_input_against_timms_own_transform_output(exports):
    """timm's create_transform tensors (stored oracle) into the float file vs our decoded crops into the uint8 file."""
    root, _ = exports
    data = skimage_data()
    with np.load(ORACLE) as z:
        stored = {k: z[k] for k in z.files if k.endswith("@96")}
    pre = Preprocess(size=SIZE)
    pixels = np.stack([decode((data / k.split("@")[0]).read_bytes(), pre)[0] for k in stored])
    timm_x = np.stack(list(stored.values()))
    served = ort_session(str(root / "pixels" / "mixnet_s.onnx")).run([OUTPUT_NAME], {IMAGE_NAME: pixels})[0]
    floats = ort_session(str(root / "float" / "mixnet_s.onnx")).run([OUTPUT_NAME], {INPUT_NAME: timm_x})[0]
    assert np.abs(served - floats).max() <= graph_io.PIXEL_MAX_ABS


def test_top_k_outputs_are_numpys_top_k_in_every_precision(exports, crops):
    root, _ = exports
    for name in ("mixnet_s.onnx", "mixnet_s.fp16.onnx", "mixnet_s.int8.onnx"):
        session = ort_session(str(root / "pixels" / name))
        assert [o.name for o in session.get_outputs()] == ["logits", "scores", "classes"]
        logits, scores, classes = session.run(None, {IMAGE_NAME: crops})
        assert scores.shape == classes.shape == (len(crops), K)
        assert classes.dtype == np.int32 and scores.dtype == np.float32
        assert graph_io.top_k_problems(logits, scores, classes) == [], name
        want_p, want_c = graph_io.top_k_numpy(logits, K)
        assert np.allclose(scores, want_p, atol=graph_io.SCORES_ATOL)


def test_top_k_is_exact_where_softmax_underflows():
    """Logits 200 apart: every probability but the first is 0.0, yet the classes follow the logits."""
    model = graph_io.add_top_k(_logits_identity(6), 3)
    logits = np.array([[0.0, 300.0, 100.0, 50.0, -20.0, 200.0]], np.float32)
    _, scores, classes = ort_session(model.SerializeToString()).run(None, {"x": logits})
    assert classes.tolist() == [[1, 5, 2]] and graph_io.top_k_problems(logits, scores, classes) == []


def _logits_identity(n: int) -> onnx.ModelProto:
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["x"], [OUTPUT_NAME])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", n])
    y = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", n])
    graph = helper.make_graph([node], "logits", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_top_k_check_catches_wrong_classes_and_scores():
    logits = np.array([[0.0, 3.0, 1.0, 2.0]], np.float32)
    good_p, good_c = graph_io.top_k_numpy(logits, 2)
    assert graph_io.top_k_problems(logits, good_p.astype(np.float32), good_c.astype(np.int32)) == []
    swapped = good_c[:, ::-1].astype(np.int32)
    assert graph_io.top_k_problems(logits, good_p.astype(np.float32), swapped)
    assert graph_io.top_k_problems(logits, (good_p * 0.9).astype(np.float32), good_c.astype(np.int32))


def test_fp16_and_int8_pixel_files_meet_their_tolerance_on_photos(exports, crops):
    root, report = exports
    x = Preprocess(size=SIZE).normalize(crops)
    reference = ort_session(str(root / "float" / "mixnet_s.onnx")).run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    for precision in ("fp16", "int8"):
        out = ort_session(str(root / "pixels" / f"mixnet_s.{precision}.onnx")).run([OUTPUT_NAME], {IMAGE_NAME: crops})
        assert failures(compare(reference, out[0]), tolerances()[precision]) == [], precision
    served = {a.precision: a.served for a in report.artifacts}
    assert set(served) == {"fp32", "fp16", "int8"}
    assert all(s["input_format"] == "uint8-nhwc" and s["input"]["bytes_per_image"] == SIZE * SIZE * 3
               for s in served.values())  # fmt: skip
    assert served["fp32"]["max_abs_vs_backbone"] == 0.0  # ONNX Runtime computes timm's float32 ops bit for bit
    assert served["fp32"]["checked_on"].endswith(f"held-out images of {skimage_data()} (not calibrated on)")


def test_graph_adds_five_preprocessing_and_four_top_k_nodes(exports):
    root, report = exports
    model = onnx.load(str(root / "pixels" / "mixnet_s.onnx"))
    first = [n.op_type for n in model.graph.node[:5]]
    assert first == ["Cast", "Transpose", "Div", "Sub", "Div"]
    assert [n.op_type for n in model.graph.node[-4:]] == ["TopK", "Softmax", "GatherElements", "Cast"]
    topk = next(n for n in model.graph.node if n.op_type == "TopK")
    k = next(t for t in model.graph.initializer if t.name == topk.input[1])
    assert onnx.numpy_helper.to_array(k).tolist() == [K]  # a constant K: what TensorRT's parser needs
    assert report.artifacts[0].served["nodes_added"] == 9
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["mixnet.input_format"] == "uint8-nhwc" and meta["mixnet.top_k"] == str(K)
    assert meta["mixnet.class_names"].split("\n")[7] == "thing 7"
    floats = onnx.load(str(root / "float" / "mixnet_s.onnx"))
    assert {p.key: p.value for p in floats.metadata_props}["mixnet.input_format"] == "float32-nchw"
    assert floats.graph.input[0].name == INPUT_NAME and len(floats.graph.output) == 1


def test_polygraphy_lint_is_clean_on_the_pixel_graph(exports, tmp_path):
    exe = Path(sys.executable).with_name("polygraphy")
    if not exe.is_file():
        pytest.skip("polygraphy is not installed (the [test] extra has it: pip install -e '.[cpu,test]')")
    root, _ = exports
    report = tmp_path / "lint.json"
    run = subprocess.run([str(exe), "check", "lint", str(root / "pixels" / "mixnet_s.onnx"), "-o", str(report)],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert report.is_file(), f"polygraphy lint wrote no report (exit {run.returncode}): {run.stderr[-2000:]}"
    found = json.loads(report.read_text())
    assert found["summary"]["failing"] == [] and found["lint_entries"] == []
    assert "preprocess/Cast" in found["summary"]["passing"] and "top_k/TopK" in found["summary"]["passing"]


def test_triton_repository_serves_pixels_with_labels_and_warmup(exports, names_file):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    root, report = exports
    model_dir = root / "repo" / "mixnet_s"
    config = text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    (inp,) = config.input
    assert inp.name == IMAGE_NAME and inp.data_type == model_config_pb2.TYPE_UINT8 and list(inp.dims) == [SIZE, SIZE, 3]
    outputs = {o.name: o for o in config.output}
    assert outputs["logits"].label_filename == "labels.txt"
    assert outputs["classes"].data_type == model_config_pb2.TYPE_INT32 and list(outputs["scores"].dims) == [K]
    assert (model_dir / "labels.txt").read_text() == names_file.read_text()
    assert [w.batch_size for w in config.model_warmup] == [1, 8, 32]
    for warm in config.model_warmup:
        assert warm.inputs[IMAGE_NAME].zero_data and warm.inputs[IMAGE_NAME].data_type == model_config_pb2.TYPE_UINT8
    assert "mixnet.class_names" not in config.parameters and config.parameters["mixnet.input_format"].string_value
    assert report.triton["labels"] == str(model_dir / "labels.txt")


def test_triton_imagenet_labels_for_a_1000_class_model_without_names(tmp_path):
    from mixnet_deploy.triton import TensorSpec, labels_of

    logits = (TensorSpec("logits", "TYPE_FP32", (1000,)),)
    assert labels_of({}, logits) == class_names.imagenet_classes()
    assert labels_of({}, (TensorSpec("logits", "TYPE_FP32", (20,)),)) == ()  # unknown names: no labels file
    assert labels_of({"mixnet.class_names": "a\nb"}, (TensorSpec("logits", "TYPE_FP32", (2,)),)) == ("a", "b")


def test_imagenet_class_names_follow_the_synset_order():
    from mixnet_deploy.labels import imagenet_synsets

    names = class_names.imagenet_classes()
    assert len(names) == len(imagenet_synsets()) == 1000
    assert names[0] == "tench, Tinca tinca" and names[1].startswith("goldfish")
    assert names[synset_position("n02123045")].startswith("tabby")  # a cat, where timm's index puts it (281)
    assert synset_position("n02123045") == 281
    assert names[999].startswith("toilet tissue")


def synset_position(wnid: str) -> int:
    from mixnet_deploy.labels import synset_index

    return synset_index()[wnid]


def test_class_names_file_checks(tmp_path):
    good = tmp_path / "names.txt"
    good.write_text("cat\ndog\n\n", encoding="utf-8")
    assert class_names.read_class_names(good, 2) == ("cat", "dog")
    with pytest.raises(InputError, match="has 2 lines") as err:
        class_names.read_class_names(good, 3)
    assert "expected 3 lines" in str(err.value)
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8"):
        class_names.read_class_names(latin, 1)
    assert class_names.class_names_of({"mixnet.num_classes": "3"}) == ("class 0", "class 1", "class 2")


def test_top_k_bounds():
    assert graph_io.check_top_k(None, 1000) == 0 and graph_io.check_top_k(1000, 1000) == 1000
    for bad in (0, -1, 1001):
        with pytest.raises(InputError, match="from 1 to 1000"):
            graph_io.check_top_k(bad, 1000)
    with pytest.raises(InputError, match="3839"):
        graph_io.check_top_k(5000, 21843)


def test_engine_profile_and_trtexec_follow_the_input_format():
    from mixnet_deploy.engine_build import EngineOptions, profile_shapes
    from mixnet_deploy.runtimes import ort_trt_options
    from mixnet_deploy.trtexec import bench_command, build_command

    assert profile_shapes(BatchProfile(1, 8, 32), 224, "uint8-nhwc") == {
        "image": {"min": [1, 224, 224, 3], "opt": [8, 224, 224, 3], "max": [32, 224, 224, 3]}}
    opts = EngineOptions(img_size=224, input_format="uint8-nhwc")
    words = build_command("m.onnx", "fp16", opts, "cache")
    assert "--minShapes=image:1x224x224x3" in words and "--maxShapes=image:32x224x224x3" in words
    assert "--shapes=image:8x224x224x3" in bench_command("m.onnx", "fp16", 8, opts, 200, 3)
    trt = ort_trt_options(Path("m.onnx"), "fp16", BatchProfile(1, 8, 32), 224, False, "uint8-nhwc")
    assert trt["trt_profile_max_shapes"] == "image:32x224x224x3"


def test_runners_take_pixels_and_refuse_floats(exports, crops):
    root, _ = exports
    runner = make_runner(root / "pixels" / "mixnet_s.onnx")
    assert runner.input_format == "uint8-nhwc" and runner.input_shape == (None, SIZE, SIZE, 3)
    assert runner.run(crops[:2]).shape == (2, 1000)
    with pytest.raises(InputError, match="expected uint8 pixels"):
        runner.run(Preprocess(size=SIZE).normalize(crops[:2]))


def test_parity_random_feeds_uint8_pixels_to_a_pixel_model(exports, timm_fixture, capsys):
    from mixnet_deploy.cli import parity_main

    root, _ = exports
    code = parity_main([str(root / "pixels" / "mixnet_s.onnx"), str(root / "float" / "mixnet_s.onnx"),
                        "--weights", str(timm_fixture["weights"]), "--random", "4", "--quiet"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "4 seeded random inputs (uint8, uniform 0..255, seed 0)" in out and "2 of 2 candidate(s) pass" in out


def test_predict_top5_equals_parity_predictions(exports, timm_fixture, photos_dir, tmp_path, capsys):
    """mixnet-predict's top-5 on a folder == mixnet-parity --predictions on the same folder, per model file."""
    from mixnet_deploy.cli import parity_main, predict_main

    root, _ = exports
    models = [root / "pixels" / "mixnet_s.onnx", root / "float" / "mixnet_s.onnx"]
    parity_file = tmp_path / "parity.jsonl"
    assert parity_main([*map(str, models), "--weights", str(timm_fixture["weights"]), "--images", str(photos_dir),
                        "--predictions", str(parity_file), "--quiet"]) == 0  # fmt: skip
    parity = [json.loads(line) for line in parity_file.read_text().splitlines()]
    for model in models:
        mine = tmp_path / f"{model.parent.name}.jsonl"
        assert predict_main([str(model), str(photos_dir), "--json", str(mine), "--quiet"]) == 0
        table = capsys.readouterr().out
        got = {p["image"]: p for p in map(json.loads, mine.read_text().splitlines())}
        want = {p["image"]: p["top5"] for p in parity if p["model"] == str(model)}
        assert want and set(got) == set(want)
        assert all(got[image]["classes"] == top5 for image, top5 in want.items())
        first = next(iter(got.values()))
        assert first["scores"] == sorted(first["scores"], reverse=True) and 0 < sum(first["scores"]) <= 1 + 1e-6
        names = first["names"]
        if model.parent.name == "pixels":  # the names exported with --class-names
            assert names[0] == f"thing {first['classes'][0]}"
        else:
            assert names[0] == class_names.imagenet_classes()[first["classes"][0]]
        assert names[0][:20] in table


def test_predict_on_a_checkpoint_uses_its_variants_preprocessing(timm_fixture, photos_dir):
    from mixnet_deploy.arch import get_variant
    from mixnet_deploy.predict import PredictConfig, predict
    from mixnet_deploy.runtimes import run_torch
    from mixnet_deploy.weights import load_model

    image = photos_dir / "chelsea.png"
    _, found = predict(PredictConfig(paths=(str(timm_fixture["weights"]), str(image)), top=3))
    spec = get_variant("s")
    pre = Preprocess(crop_pct=spec.crop_pct, interpolation=spec.interpolation, mean=spec.mean, std=spec.std)
    crop = decode(image.read_bytes(), pre)[0]
    logits = run_torch(load_model(None, timm_fixture["weights"])[0], pre.normalize(crop[None]))
    probs, classes = graph_io.top_k_numpy(logits, 3)
    assert len(found) == 1 and list(found[0].classes) == classes[0].tolist()
    assert np.allclose(found[0].scores, probs[0], atol=1e-6)
    assert found[0].names == tuple(class_names.imagenet_classes()[c] for c in classes[0])


def test_merged_lowering_and_fp16_follow_the_pixel_input(tmp_path):
    """--mdconv merged (seeded tf_s: SAME padding too) with uint8 input: each file checked on pixels at export."""
    report = run_export(ExportConfig(variant="tf_s", img_size=64, out_dir=tmp_path, engine="skip", mdconv="merged",
                                     input_format="uint8-nhwc", fp16=True))  # fmt: skip
    served = {a.precision: a.served for a in report.artifacts}
    assert served["fp32"]["max_abs_vs_backbone"] == 0.0 and served["fp16"]["input"]["name"] == IMAGE_NAME
    model = onnx.load(str(tmp_path / "tf_mixnet_s.fp16.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["mixnet.mdconv"] == "merged" and meta["mixnet.input_format"] == "uint8-nhwc"
    assert [o.name for o in model.graph.output] == [OUTPUT_NAME]  # no --top-k: logits only
