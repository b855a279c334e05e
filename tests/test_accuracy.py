"""Accuracy against ground truth (mixnet-parity --labels): synsets, labels, top-k, paired bootstrap, streaming."""

import csv
import json
import re
import shutil

import numpy as np
import pytest
from conftest import every_file_accepted
from test_parity import _run as _parity  # mixnet-parity in-process: (exit code, stdout, stderr)

from mixnet_deploy import accuracy, data, labels, metrics, parity
from mixnet_deploy.errors import InputError

# ---------------------------------------------------------------- the synset list


def test_synsets_are_the_imagenet_1k_order():
    wnids = labels.imagenet_synsets()
    assert len(wnids) == 1000 and len(set(wnids)) == 1000
    assert list(wnids) == sorted(wnids)
    assert all(re.fullmatch(r"n\d{8}", w) for w in wnids)
    # Well-known anchors of the ImageNet-1k class order: 0 tench, 1 goldfish, 207 golden retriever, 999 toilet tissue.
    assert (wnids[0], wnids[1], wnids[207], wnids[999]) == ("n01440764", "n01443537", "n02099601", "n15075141")
    assert labels.class_index("n02099601") == 207 and labels.class_index("207") == 207
    assert labels.class_index("1000") is None and labels.class_index("n00000000") is None


# ---------------------------------------------------------------- top-k and the paired bootstrap


def test_hits_and_accuracy():
    logits = np.zeros((3, 10), np.float32)
    logits[0, 4], logits[1, [2, 7]], logits[2, range(6)] = 1, (2, 1), np.arange(6, 0, -1)
    top = accuracy.top5(logits)
    assert top[0, 0] == 4 and top[1, :2].tolist() == [2, 7] and top[2].tolist() == [0, 1, 2, 3, 4]
    hit = accuracy.hits(top, np.array([4, 7, 5]))
    assert hit.tolist() == [[True, True], [False, True], [False, False]]
    assert accuracy.Accuracy.of(hit) == accuracy.Accuracy(3, 1 / 3, 2 / 3)


def _simulated(rng, n, probs):
    """Paired hits (reference, candidate) drawn from a known joint distribution over (1,1), (1,0), (0,1), (0,0)."""
    kind = rng.choice(4, size=n, p=probs)
    return np.isin(kind, (0, 1)), np.isin(kind, (0, 2))


def test_bootstrap_interval_covers_the_true_drop():
    """400 simulated data sets with a known drop of 3 points: the 95% interval covers it in 91-98.5% of them.

    A binomial of 400 trials at 0.95 has sd 0.011; the band also leaves room for the percentile bootstrap's
    slight under-coverage. The width must match the normal approximation 2 * 1.96 * sd(d) / sqrt(n) within 10%.
    """
    probs = (0.70, 0.06, 0.03, 0.21)  # P(both right), P(ref only), P(candidate only), P(both wrong)
    truth = 100 * (probs[1] - probs[2])
    sd = 100 * np.sqrt(probs[1] + probs[2] - (probs[1] - probs[2]) ** 2)  # of the per-image difference
    rng, n, covered, widths = np.random.default_rng(7), 300, 0, []
    for i in range(400):
        ref, cand = _simulated(rng, n, probs)
        iv = accuracy.paired_bootstrap(ref, cand, samples=2000, seed=i)
        assert iv.points == pytest.approx(100 * (ref.mean() - cand.mean()))
        covered += iv.low <= truth <= iv.high
        widths.append(iv.high - iv.low)
    assert 0.91 <= covered / 400 <= 0.985
    assert np.mean(widths) == pytest.approx(2 * 1.96 * sd / np.sqrt(n), rel=0.10)


def test_bootstrap_is_paired():
    """The same hits on both sides: drop 0 with a zero-width interval (an unpaired bootstrap would be wide)."""
    hit = np.random.default_rng(0).random(500) < 0.7
    iv = accuracy.paired_bootstrap(hit, hit.copy())
    assert (iv.points, iv.low, iv.high) == (0.0, 0.0, 0.0)


def test_metrics_merge_equals_the_whole():
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((37, 20))
    out = ref + 0.3 * rng.standard_normal((37, 20))
    whole = metrics.compare(ref, out)
    parts = metrics.Metrics.merge([metrics.compare(ref[i : i + 8], out[i : i + 8]) for i in range(0, 37, 8)])
    for key, value in whole.as_dict().items():
        assert getattr(parts, key) == pytest.approx(value, rel=1e-12, abs=1e-15), key


def test_predictions_writer_is_atomic(tmp_path):
    path = tmp_path / "p.jsonl"
    with accuracy.PredictionsWriter(path) as w:
        w.write(["a.png", "b.png"], ["reference", "m.onnx"], [np.array([[1, 2], [3, 4]])] * 2, np.array([1, 9]))
        assert not path.exists()  # a temporary name until the run completes
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(d["image"], d["model"], d["top5"], d["label"]) for d in lines] == [
        ("a.png", "reference", [1, 2], 1), ("a.png", "m.onnx", [1, 2], 1),
        ("b.png", "reference", [3, 4], 9), ("b.png", "m.onnx", [3, 4], 9),
    ]  # fmt: skip
    with pytest.raises(KeyboardInterrupt), accuracy.PredictionsWriter(tmp_path / "q.jsonl") as w:
        w.write(["a.png"], ["reference"], [np.array([[1]])], None)
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl"]  # neither q.jsonl nor its temporary file


# ---------------------------------------------------------------- reading labels


def _tree(root, files):
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    return root


def test_folder_labels(tmp_path):
    root = _tree(tmp_path, ["n01443537/a.png", "n01440764/b.jpg", "n15075141/deeper/c.jpg"])
    found = labels.labelled_images(root, "folder")
    assert [found.name(i) for i in range(3)] == ["n01440764/b.jpg", "n01443537/a.png", "n15075141/deeper/c.jpg"]
    assert found.labels.tolist() == [0, 1, 999]


@pytest.mark.parametrize(
    "files,needle",
    [
        (["n01440764/a.png", "loose.png"], "with 1 image(s) directly in"),
        (["n01440764/a.png", "n99999999/b.png", "cats/c.png"], "no ImageNet-1k synset ('cats', 'n99999999')"),
    ],
)
def test_folder_label_errors(tmp_path, files, needle):
    with pytest.raises(InputError, match=re.escape(needle)) as err:
        labels.labelled_images(_tree(tmp_path, files), "folder")
    assert err.value.field == "labels"


def _csv(path, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def test_csv_labels(tmp_path):
    root = _tree(tmp_path / "img", ["a.png", "sub/b.JPEG", "c.jpg"])
    table = _csv(tmp_path / "l.csv", [["image", "class"], ["a.png", "5"], ["sub/b", "n01443537"], ["c.jpg", "999"],
                                      ["not_here.jpg", "3"]])  # fmt: skip
    found = labels.labelled_images(root, str(table))
    assert found.labels.tolist() == [5, 999, 1]  # sorted: a.png, c.jpg, sub/b.JPEG (matched without its suffix)
    assert found.warnings == (f"1 labelled image(s) of {str(table)!r} are not in the folder ('not_here.jpg')",)


@pytest.mark.parametrize(
    "rows,needle",
    [
        ([["a.png", "n123"]], "l.csv:1: class 'n123': expected an index 0-999"),
        ([["a.png", "1000"]], "class '1000'"),
        ([["a.png", "1"], ["b.png", "2"], ["a.png", "1"]], "l.csv:3: 'a.png' is labelled again (first on line 1)"),
        ([["a.png", "1", "x"]], "l.csv:1: 3 field(s): expected two"),
        ([["a.png", "1"]], "1 of 2 image(s) have no row in"),
        ([], "no label rows"),
    ],
)
def test_csv_label_errors(tmp_path, rows, needle):
    root = _tree(tmp_path / "img", ["a.png", "b.png"])
    with pytest.raises(InputError, match=re.escape(needle)):
        labels.labelled_images(root, str(_csv(tmp_path / "l.csv", rows)))


# ---------------------------------------------------------------- streaming


def test_image_batches_decode_one_batch_at_a_time(tmp_path, monkeypatch):
    """Bounded memory: consuming the first batch has decoded that batch only, not the folder."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "9.png").write_bytes(b"broken")
    calls = []
    real = data.read_crop
    monkeypatch.setattr(data, "read_crop", lambda p, pre: calls.append(p) or real(p, pre))
    cfg = parity.ParityConfig(candidates=("x.onnx",), images=str(tmp_path), batch=4, predictions="p.jsonl")
    skipped = {}
    batches, total, _ = parity.input_batches(cfg, labels.labelled_images(tmp_path), 32, {}, skipped)
    names, pixels, x, y = next(batches)
    assert total == 10 and len(calls) == 4 and names == ["0.png", "1.png", "2.png", "3.png"] and y is None
    assert x.shape == (4, 3, 32, 32) and x.dtype == np.float32
    assert pixels.shape == (4, 32, 32, 3) and pixels.dtype == np.uint8  # what a uint8-nhwc candidate takes
    rest = list(batches)
    assert [len(b[0]) for b in rest] == [4, 1] and skipped == {"9.png": "not an image"}


# ---------------------------------------------------------------- mixnet-parity --labels on real models

SIZE = 96


@pytest.fixture(scope="module")
def exported(tmp_path_factory, timm_fixture):
    """MixNet-S with timm's weights at 96 px: FP32 and an INT8 copy calibrated on synthetic fields (so it errs)."""
    from mixnet_deploy.pipeline import ExportConfig, run_export

    out = tmp_path_factory.mktemp("acc_export")
    cfg = ExportConfig(
        weights=str(timm_fixture["weights"]), img_size=SIZE, out_dir=out, engine="skip", int8=True,
        calib="synthetic", calib_count=8,
    )  # fmt: skip
    with every_file_accepted():  # the copy must err: verified on photos it would be refused
        run_export(cfg)
    return out / "mixnet_s.onnx", out / "mixnet_s.int8.onnx"


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    """scikit-image's photos and their mirror images, saved as PNG (grey ones too)."""
    from test_precision import photos, variants

    root = tmp_path_factory.mktemp("acc_photos")
    for path in photos():
        for i, img in enumerate(variants(path)[:2]):
            img.save(root / f"{path.stem}_{i}.png")
    return root


def _ort_logits(model, folder):
    """Logits of an ONNX file on the folder's images, run by ONNX Runtime directly (not through parity)."""
    import onnx

    from mixnet_deploy.onnx_export import read_metadata
    from mixnet_deploy.runtimes import ort_session, run_ort

    pre = data.Preprocess.from_metadata(read_metadata(onnx.load(str(model), load_external_data=False)))
    paths = data.find_images(folder)
    loaded = data.load_images(paths, pre, root=folder, quiet=True)
    assert not loaded.skipped
    names = [p.relative_to(folder).as_posix() for p in paths]
    return names, run_ort(ort_session(str(model)), pre.normalize(loaded.crops))


@pytest.fixture(scope="module")
def ort_logits(exported, photo_dir):
    """FP32 and INT8 logits on the photos, from ONNX Runtime directly, in sorted file order."""
    names, fp32 = _ort_logits(exported[0], photo_dir)
    return names, fp32, _ort_logits(exported[1], photo_dir)[1]


@pytest.fixture(scope="module")
def fp32_top(ort_logits):
    names, fp32, _ = ort_logits
    return dict(zip(names, accuracy.top5(fp32)))


def test_labelled_by_its_own_top1(exported, photo_dir, fp32_top, ort_logits, timm_fixture, tmp_path, capsys):
    """ImageNet layout labelled with the FP32 file's own top-1: it scores exactly 1.0, and INT8 its agreement."""
    wnids = labels.imagenet_synsets()
    root = tmp_path / "val"
    for name, top in fp32_top.items():
        (root / wnids[top[0]]).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo_dir / name, root / wnids[top[0]] / name)
    out, pred = tmp_path / "p.json", tmp_path / "pred.jsonl"
    rc, stdout, err = _parity(capsys, *exported, "--weights", timm_fixture["weights"], "--images", root,
                              "--labels", "folder", "--json", out, "--predictions", pred, "--quiet")  # fmt: skip
    assert rc in (0, 1), err
    report = json.loads(out.read_text())
    fp32, int8 = report["results"]
    n = len(fp32_top)
    assert fp32["accuracy"] == {"n": n, "top1": 1.0, "top5": 1.0}
    _, fp32_logits, int8_logits = ort_logits
    agreement = float(np.mean(fp32_logits.argmax(1) == int8_logits.argmax(1)))
    assert int8["accuracy"]["top1"] == agreement and int8["accuracy"]["n"] == n
    assert agreement < 1.0, "the synthetic-calibrated INT8 copy should err on some photo (else the check is weak)"
    ref = report["reference"]["accuracy"]
    drop = int8["accuracy_drop"]["top1"]
    assert drop["points"] == pytest.approx(100 * (ref["top1"] - agreement))
    assert drop["low"] <= drop["points"] <= drop["high"] and drop["confidence"] == 0.95
    assert "accuracy (n=" in stdout and "drop, points (95%)" in stdout
    lines = [json.loads(line) for line in pred.read_text().splitlines()]
    assert len(lines) == 3 * n and {d["model"] for d in lines} == {"reference", str(exported[0]), str(exported[1])}
    for d in lines:
        if d["model"] == str(exported[0]):
            assert d["label"] == d["top5"][0] == fp32_top[d["image"].split("/", 1)[1]][0]


def test_labels_off_the_top5_score_zero(exported, photo_dir, fp32_top, timm_fixture, tmp_path, capsys):
    """A CSV (indices and synsets mixed, with a header) of classes outside each image's FP32 top 5: 0.0 / 0.0."""
    wnids = labels.imagenet_synsets()
    rows = [["image", "class"]]
    for i, (name, top) in enumerate(sorted(fp32_top.items())):
        wrong = next(c for c in range(10) if c not in top)
        rows.append([name, str(wrong) if i % 2 else wnids[wrong]])
    table = _csv(tmp_path / "labels.csv", rows)
    out = tmp_path / "p.json"
    rc, _, err = _parity(capsys, exported[0], "--weights", timm_fixture["weights"], "--images", photo_dir,
                         "--labels", table, "--json", out, "--quiet")  # fmt: skip
    assert rc == 0, err
    (fp32,) = json.loads(out.read_text())["results"]
    assert fp32["accuracy"] == {"n": len(fp32_top), "top1": 0.0, "top5": 0.0}


def test_max_top1_drop_fails_a_worse_candidate(exported, photo_dir, fp32_top, timm_fixture, tmp_path, capsys):
    """A copy whose classifier always says class 0: the drop bound fails it, with the drop in the message."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(exported[0]))
    bias = next(i for i in model.graph.initializer if i.name == "classifier.bias")
    value = numpy_helper.to_array(bias).copy()
    value[0] += 1e4
    bias.CopyFrom(numpy_helper.from_array(value, bias.name))
    broken = tmp_path / "always_tench.onnx"
    onnx.save(model, str(broken))
    table = _csv(tmp_path / "l.csv", [[name, str(top[0])] for name, top in fp32_top.items()])
    out = tmp_path / "p.json"
    args = (exported[0], broken, "--weights", timm_fixture["weights"], "--images", photo_dir, "--labels", table)
    rc, stdout, err = _parity(capsys, *args, "--max-top1-drop", 5, "--json", out, "--quiet")
    assert rc == 1, err
    good, bad = json.loads(out.read_text())["results"]
    assert not any("top-1 drop" in f for f in good["failures"])
    assert any(re.fullmatch(r"top-1 drop \d+\.\d\d points > 5", f) for f in bad["failures"]), bad["failures"]


# Bad label inputs through the CLI (exit 2, one line, nothing left behind): the labels-* rows of
# tests/reliability/cases.py, run by tests/test_reliability.py and listed in docs/errors.md.
