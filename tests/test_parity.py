"""mixnet-parity: passes a correct export, fails a sabotaged copy, refuses bad input; runner dispatch."""

import json

import numpy as np
import onnx
import pytest
from model_facts import compare_runner
from onnx import numpy_helper

from mixnet_deploy import parity, precision_table
from mixnet_deploy.cli import parity_main
from mixnet_deploy.config import ExportConfig
from mixnet_deploy.errors import InputError
from mixnet_deploy.onnx_export import read_metadata, set_metadata
from mixnet_deploy.pipeline import run_export
from mixnet_deploy.runtimes import OrtRunner, available_runtimes, check_runtime, make_runner


@pytest.fixture(scope="module")
def s_onnx(tmp_path_factory, timm_fixture):
    """MixNet-S exported from timm's own weights (the shared fixture)."""
    out = tmp_path_factory.mktemp("parity_s")
    run_export(ExportConfig(weights=str(timm_fixture["weights"]), out_dir=out, engine="skip"))
    return out / "mixnet_s.onnx"


def _copy_with(src, dst, edit):
    model = onnx.load(str(src))
    edit(model)
    onnx.save(model, str(dst))
    return dst


def _scale_one_conv(model, factor=1.5, which=10):
    """Scale the weight of the ``which``-th Conv node: one tensor, nothing else changes."""
    conv = [n for n in model.graph.node if n.op_type == "Conv"][which]
    init = next(i for i in model.graph.initializer if i.name == conv.input[1])
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(factor), init.name))


@pytest.fixture(scope="module")
def sabotaged(s_onnx, tmp_path_factory):
    return _copy_with(s_onnx, tmp_path_factory.mktemp("sabotage") / "mixnet_s.onnx", _scale_one_conv)


def _run(capsys, *args):
    try:
        rc = parity_main([str(a) for a in args])
    except SystemExit as exc:  # argparse errors exit from parse_args
        rc = exc.code
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_correct_export_passes(s_onnx, timm_fixture, tmp_path, capsys):
    rc, out, err = _run(
        capsys, s_onnx, "--weights", timm_fixture["weights"], "--random", 6, "--json", tmp_path / "p.json", "--quiet"
    )
    assert rc == 0, err
    report = json.loads((tmp_path / "p.json").read_text())
    (res,) = report["results"]
    assert report["passed"] and res["passed"] and res["precision"] == "fp32"
    assert res["metrics"]["n"] == 6
    assert res["metrics"]["max_abs"] <= precision_table.row("fp32").tolerance.max_abs
    assert res["metrics"]["min_cosine"] >= precision_table.row("fp32").tolerance.min_cosine
    assert res["tolerance"] == precision_table.row("fp32").tolerance.__dict__
    assert res["tightest_passing"] == "fp32"
    assert res["notes"] == []  # same weights as the export: no sha256 mismatch note
    assert "PASS" in out and "1 of 1 candidate(s) pass" in out


def test_sabotaged_copy_fails_with_exit_1(s_onnx, sabotaged, timm_fixture, tmp_path, capsys):
    rc, out, err = _run(
        capsys, s_onnx, sabotaged, "--weights", timm_fixture["weights"], "--random", 4, "--json", tmp_path / "p.json"
    )
    assert rc == 1, err
    report = json.loads((tmp_path / "p.json").read_text())
    good, bad = report["results"]
    assert good["passed"] and not bad["passed"] and not report["passed"]
    assert bad["metrics"]["max_abs"] > precision_table.row("fp32").tolerance.max_abs
    assert any("max abs error" in f for f in bad["failures"])
    assert bad["required_tolerance"]["max_abs"] == bad["metrics"]["max_abs"]
    assert "FAIL" in out and "1 of 2 candidate(s) pass" in out


def test_parity_against_timm_logits(s_onnx, timm_fixture):
    """The harness's comparison, fed timm's own logits as the reference (an oracle we did not write)."""
    runner = OrtRunner(s_onnx)
    result = compare_runner(timm_fixture["logits"], runner, timm_fixture["input"], batch=3)
    assert result.passed, result.failures
    assert result.metrics.max_abs <= 1e-4 and result.metrics.top1 == 1.0


def test_wrong_weights_refused_before_the_comparison(s_onnx, timm_fixture, tmp_path, capsys, monkeypatch):
    """Reference built from other weights than the candidate's (its mixnet.weights_sha256): exit 2 before any
    input runs, one line naming --weights and both sha256s (issue 21: it used to fail after the whole run)."""
    from safetensors.torch import load_file, save_file

    from mixnet_deploy.weights import load_model

    state = load_file(str(timm_fixture["weights"]))
    state["classifier.weight"] = state["classifier.weight"] * 2
    other = tmp_path / "other.safetensors"
    save_file(state, str(other))

    def no_comparison(*args, **kwargs):
        raise AssertionError("the comparison ran")

    monkeypatch.setattr(parity, "evaluate", no_comparison)
    rc, out, err = _run(capsys, s_onnx, "--weights", other, "--random", 2, "--quiet")
    candidate_sha = read_metadata(onnx.load(str(s_onnx), load_external_data=False))["mixnet.weights_sha256"]
    (line,) = err.strip().splitlines()
    assert rc == 2 and out == ""
    assert line.startswith("mixnet-parity: error: --weights ") and str(other) in line
    assert candidate_sha[:12] in line and load_model("s", other)[1].sha256[:12] in line


def test_header_is_readable(s_onnx, timm_fixture, capsys):
    """The lines above the tables say what the reference and the inputs were in words, not a Python dict."""
    rc, out, err = _run(capsys, s_onnx, "--weights", timm_fixture["weights"], "--random", 3, "--quiet")
    assert rc == 0, err
    reference, inputs = out.splitlines()[:2]
    assert reference.startswith("reference: pytorch mixnet_s (unfolded, float32), weights ") and "(sha256 " in reference
    assert inputs == "inputs: 3 seeded random inputs (float32 standard normal, seed 0), 224x224"
    assert "{" not in reference + inputs


def test_images_header_names_folder_and_preprocessing(tmp_path):
    report = parity.ParityReport({"name": "ref", "weights": "w.safetensors", "weights_sha256": "ab" * 32}, {
        "kind": "images", "folder": "val", "img_size": 224, "n": 300, "skipped": "no file skipped", "labels": "l.csv",
        "preprocess": {"size": 224, "crop_pct": 0.875, "interpolation": "bicubic", "mean": (0.485, 0.456, 0.406),
                       "std": (0.229, 0.224, 0.225)}})  # fmt: skip
    assert parity.header_lines(report) == [
        "reference: ref, weights w.safetensors (sha256 abababababab)",
        "inputs: 300 image(s) of val (no file skipped), labels l.csv; resized to 256 (bicubic), centre crop 224x224, "
        "mean 0.485,0.456,0.406, std 0.229,0.224,0.225",
    ]


def test_precision_from_metadata_picks_the_tolerance(s_onnx, timm_fixture, tmp_path, capsys):
    def relabel(model):
        meta = read_metadata(model)
        meta["mixnet.precision"] = "fp7"
        set_metadata(model, meta)

    odd = _copy_with(s_onnx, tmp_path / "odd.onnx", relabel)
    rc, _, err = _run(capsys, odd, "--weights", timm_fixture["weights"], "--random", 2)
    assert rc == 2
    assert "precision 'fp7' has no tolerance" in err and "fp32" in err


@pytest.mark.filterwarnings("ignore:the float32 number:UserWarning")
def test_fp16_candidate_uses_the_fp16_row(s_onnx, timm_fixture, tmp_path, capsys):
    if "fp16" not in precision_table.PRECISIONS:
        pytest.skip("no fp16 row in precision_table.PRECISIONS yet (the precision issue adds it)")
    from onnxconverter_common import float16

    model = float16.convert_float_to_float16(onnx.load(str(s_onnx)), keep_io_types=True)
    meta = read_metadata(model)
    meta["mixnet.precision"] = "fp16"
    set_metadata(model, meta)
    path = tmp_path / "mixnet_s.fp16.onnx"
    onnx.save(model, str(path))
    rc, out, err = _run(capsys, path, "--weights", timm_fixture["weights"], "--random", 4, "--json", tmp_path / "j")
    report = json.loads((tmp_path / "j").read_text())
    (res,) = report["results"]
    assert res["precision"] == "fp16" and res["tolerance"] == precision_table.row("fp16").tolerance.__dict__
    assert res["metrics"]["max_abs"] > 1e-5  # float16 weights: not the fp32 graph relabelled
    assert rc == 0, out + err


def test_images_folder(s_onnx, timm_fixture, tmp_path, capsys):
    pytest.importorskip("mixnet_deploy.data")
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (80 + 10 * i, 96, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "p.json"
    rc, _, err = _run(capsys, s_onnx, "--weights", timm_fixture["weights"], "--images", tmp_path, "--json", out)
    assert rc == 0, err
    report = json.loads(out.read_text())
    assert report["inputs"]["kind"] == "images" and report["inputs"]["n"] == 3
    assert "1 unreadable" in report["inputs"]["skipped"]


@pytest.mark.parametrize("make", ["missing", "file", "empty"])
def test_bad_images_folder_names_the_images_option(tmp_path, make):
    """The image-folder check (find_images) carries ``images``, not the export's ``calib``: the CLI names --images."""
    folder = tmp_path / "imgs"
    if make == "file":
        folder.write_text("x")
    elif make == "empty":
        folder.mkdir()
    with pytest.raises(InputError) as err:
        parity.check_accuracy_options(parity.ParityConfig(candidates=("m.onnx",), images=str(folder)))
    assert (err.value.field, str(err.value.value)) == ("images", str(folder))
    assert "'synthetic'" not in str(err.value) and str(err.value).startswith(f"--images '{folder}'")


# ---------------------------------------------------------------- runner dispatch


def test_runtime_names_are_checked():
    assert {"torch", "ort-cpu"} <= set(available_runtimes())
    with pytest.raises(InputError, match="expected one of torch, ort-cpu"):
        check_runtime("onnx")
    if "ort-trt" not in available_runtimes():
        with pytest.raises(InputError, match="TensorrtExecutionProvider"):
            check_runtime("ort-trt")


def test_engine_file_dispatches_to_engine_module(tmp_path):
    """Without TensorRT an engine file is refused with InputError (never an ImportError traceback)."""
    pytest.importorskip("mixnet_deploy.engine_build")
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed: the GPU suite covers engines")
    except ImportError:
        pass
    fake = tmp_path / "m.engine"
    fake.write_bytes(b"\x00" * 64)
    with pytest.raises(InputError):
        make_runner(fake)
    with pytest.raises(InputError, match=r"--runtime 'ort-cpu' cannot run .*m\.engine .*expected tensorrt"):
        make_runner(fake, "ort-cpu")


def test_torch_runner_from_onnx_metadata(s_onnx):
    runner = make_runner(s_onnx, "torch")
    assert runner.runtime == "torch" and runner.input_shape == (None, 3, 224, 224)
    out = runner.run(np.zeros((2, 3, 224, 224), np.float32))
    assert out.shape == (2, 1000) and out.dtype == np.float32


@pytest.mark.gpu(needs=("ort-gpu", "fixture"))
def test_ort_cuda_candidate_passes(s_onnx, timm_fixture, capsys):
    rc, out, err = _run(capsys, s_onnx, "--weights", timm_fixture["weights"], "--runtime", "ort-cuda", "--random", 8)
    assert rc == 0, out + err


def test_random_inputs_stream_batch_by_batch_with_the_values_of_one_call():
    """--random N is generated a batch at a time (memory: one batch, so N can be large); the values are those
    of one random_inputs call of N, whatever the batch."""
    from mixnet_deploy.parity import random_batches
    from mixnet_deploy.runtimes import random_inputs

    whole = random_inputs((11, 3, 8, 8), 5)
    for batch in (1, 4, 11, 32):
        parts = list(random_batches(8, 11, 5, batch))
        assert [len(names) for names, _, _, _ in parts] == [min(batch, 11 - i) for i in range(0, 11, batch)]
        assert all(pixels is None for _, pixels, _, _ in parts)
        assert np.array_equal(np.concatenate([x for _, _, x, _ in parts]), whole)
