"""mixnet-bench --images [--labels]: one row per artifact (issue 21), checked against what we did not write: the
labels of the trained 20-class MixNet-S fixture, and ONNX Runtime run directly on crops made with PIL as timm's
eval transform makes them."""

import json
import os
import shutil

import numpy as np
import onnx
import pytest
from conftest import FIXTURE
from PIL import Image
from test_bench import _run
from test_energy import stand_in_tegrastats
from test_parity import _scale_one_conv

from mixnet_deploy.config import ExportConfig
from mixnet_deploy.pipeline import run_export

TRAINED = FIXTURE.parent / "trained_mixnet_s20"
SIZE = 128  # exported at 128 px: fast, and the trained model still tells most photos apart
N = 40  # the first N held-out photos (sorted), 2 per class
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    if not (TRAINED / "state_dict.safetensors").is_file():
        pytest.skip(f"trained fixture {TRAINED} absent (MIXNET_FIXTURES=DIR points at the fixtures)")
    out = tmp_path_factory.mktemp("artifacts")
    run_export(ExportConfig(variant="s", weights=str(TRAINED / "state_dict.safetensors"), img_size=SIZE, fp16=True,
                            out_dir=out / "art", engine="skip"))  # fmt: skip
    model = onnx.load(str(out / "art" / "mixnet_s.onnx"))
    _scale_one_conv(model, factor=3.0)  # an FP32 copy that computes something else
    onnx.save(model, str(out / "art" / "broken.onnx"))
    rows = (TRAINED / "eval_labels.csv").read_text().splitlines()[1 : N + 1]
    (out / "val").mkdir()
    for row in rows:
        shutil.copy(TRAINED / "eval" / row.split(",")[0], out / "val")
    (out / "labels.csv").write_text("image,class\n" + "\n".join(rows) + "\n")
    return out


def oracle(onnx_path, val, labels_csv=None):
    """ONNX Runtime on crops made by PIL: shorter side to floor(size / 0.875) bicubic, centre crop, normalise."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    crops = []
    for path in sorted(val.iterdir()):
        img = Image.open(path).convert("RGB")
        scale = int(SIZE / 0.875)
        w, h = img.size
        img = img.resize((scale, int(scale * h / w)) if w <= h else (int(scale * w / h), scale), Image.BICUBIC)
        left, top = round((img.width - SIZE) / 2), round((img.height - SIZE) / 2)
        x = (np.asarray(img.crop((left, top, left + SIZE, top + SIZE)), np.float32) / 255 - MEAN) / STD
        crops.append(x.transpose(2, 0, 1).astype(np.float32))
    return session.run(None, {"input": np.stack(crops)})[0]


def _artifacts(path):
    return {a["name"]: a for a in json.loads(path.read_text())["artifacts"]}


def test_labelled_table_status_accuracy_latency(folder, tmp_path, capsys):
    art = folder / "art"
    (tmp_path / "mixnet_s.engine").write_bytes(b"not an engine")  # there, but nothing this machine can load
    models = [art / "mixnet_s.onnx", art / "mixnet_s.fp16.onnx", art / "broken.onnx", tmp_path / "mixnet_s.engine"]
    rc, out, err = _run(capsys, *models, "--images", folder / "val", "--labels", folder / "labels.csv",
                        "--batch", "1,4", "--iters", "2", "--warmup-s", "0", "--json", tmp_path / "b.json",
                        "--markdown", tmp_path / "b.md", "--quiet")  # fmt: skip
    assert rc == 1, err  # an artifact is refused
    rows = _artifacts(tmp_path / "b.json")
    labels = np.array([int(r.split(",")[1]) for r in (folder / "labels.csv").read_text().splitlines()[1:]])
    for name, path in (("mixnet_s.onnx [ort-cpu]", models[0]), ("mixnet_s.fp16.onnx [ort-cpu]", models[1])):
        logits = oracle(path, folder / "val")
        top5 = np.argsort(-logits, axis=1)[:, :5]
        row = rows[name]
        assert row["status"] == "ok" and row["why"] is None and row["accuracy"]["images"] == N
        assert abs(row["accuracy"]["top1"] - np.mean(top5[:, 0] == labels)) <= 1 / N  # one borderline crop at most
        assert abs(row["accuracy"]["top5"] - np.mean((top5 == labels[:, None]).any(1))) <= 1 / N
        assert row["size_mb"] == os.path.getsize(path) / 1e6
        assert set(row["latency"]) == {"1", "4"} and all(v["p50_ms"] > 0 for v in row["latency"].values())
        assert all(v["p99_ms"] is None and v["iterations"] == 2 for v in row["latency"].values())
    assert rows["mixnet_s.onnx [ort-cpu]"]["accuracy"]["top1"] >= 0.8  # the trained fixture tells photos apart
    broken = rows["broken.onnx [ort-cpu]"]
    assert broken["status"] == "refused" and broken["why"].startswith("against mixnet_s.onnx [ort-cpu]: ")
    assert "cosine" in broken["why"] and broken["latency"]["1"]["p50_ms"] > 0  # still measured
    engine = rows["mixnet_s.engine [auto]"]
    assert engine["status"] == "refused" and "manifest" in engine["why"] and engine["latency"] == {}
    head = next(line for line in out.splitlines() if line.startswith("model") and "status" in line)
    assert head.split()[:8] == ["model", "status", "precision", "runtime", "MB", "top-1", "top-5", "b1"]
    assert "refused: broken.onnx [ort-cpu]: against mixnet_s.onnx" in out
    md = (tmp_path / "b.md").read_text()
    assert "## Per artifact" in md and "| mixnet_s.fp16.onnx [ort-cpu] | ok | fp16 | ort-cpu | " in md


def test_a_path_that_is_not_there_is_bad_input_not_a_row(folder, tmp_path, capsys):
    """A mistyped model path exits 2 with one line before any timing, as without --images (only a file that is
    there but cannot run here becomes a refused row)."""
    art = folder / "art"
    rc, out, err = _run(capsys, art / "mixnet_s.onnx", tmp_path / "typo.onnx", "--images", folder / "val",
                        "--iters", "2", "--warmup-s", "0", "--quiet")  # fmt: skip
    assert rc == 2 and "typo.onnx" in err and "Traceback" not in err, err


def test_unlabelled_table_agreement_and_cosine_against_fp32(folder, tmp_path, capsys):
    art = folder / "art"
    rc, out, err = _run(capsys, art / "mixnet_s.onnx", art / "mixnet_s.fp16.onnx", "s", "--images", folder / "val",
                        "--img-size", SIZE, "--batch", "4", "--iters", "2", "--warmup-s", "0", "--json",
                        tmp_path / "b.json", "--quiet")  # fmt: skip
    assert rc == 0, err
    rows = _artifacts(tmp_path / "b.json")
    fp32, fp16 = oracle(art / "mixnet_s.onnx", folder / "val"), oracle(art / "mixnet_s.fp16.onnx", folder / "val")
    cosine = (fp32 * fp16).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(fp16, axis=1)
    half = rows["mixnet_s.fp16.onnx [ort-cpu]"]["accuracy"]
    assert half["reference"] == "mixnet_s.onnx [ort-cpu]" and "top1" not in half
    assert abs(half["agreement_top1"] - np.mean(fp32.argmax(1) == fp16.argmax(1))) <= 1 / N
    assert half["min_cosine"] == pytest.approx(cosine.min(), abs=1e-5)
    assert rows["mixnet_s.onnx [ort-cpu]"]["accuracy"]["is_reference"]
    eager = rows["mixnet_s [torch]"]
    assert eager["status"] == "ok" and eager["accuracy"] == {"note": "latency only: default-init PyTorch weights"}
    head = next(line for line in out.splitlines() if line.startswith("model") and "status" in line)
    assert head.split()[5:7] == ["agree", "min"]
    assert " ref " in next(line for line in out.splitlines() if line.startswith("mixnet_s.onnx") and " ok " in line)


def test_without_images_no_table_and_energy_on_a_jetson(folder, tmp_path, capsys, monkeypatch):
    """Without --images the output is the latency table alone; with a (stand-in) tegrastats it gets J/img."""
    stand_in_tegrastats(tmp_path, 7000)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    rc, out, err = _run(capsys, folder / "art" / "mixnet_s.onnx", "--batch", "1", "--duration-s", "0.6",
                        "--warmup-s", "0", "--json", tmp_path / "b.json", "--quiet")  # fmt: skip
    assert rc == 0, err
    data = json.loads((tmp_path / "b.json").read_text())
    assert "artifacts" not in data and "status" not in out
    (case,) = data["results"]
    assert data["energy"]["interval_ms"] == 100 and data["energy"]["rails"] == ["VDD_IN"]
    assert case["energy"]["j_per_image"] == pytest.approx(7.0 / case["throughput_ips"], rel=1e-12)
    assert out.splitlines()[0].split()[-1] == "J/img"
