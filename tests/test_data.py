"""Image loading and preprocessing: timm's eval transform reproduced, garbage never crashes it."""

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mixnet_deploy.arch import get_variant
from mixnet_deploy.data import (
    CalibrationReader,
    ImageSet,
    Preprocess,
    calibration_sets,
    decode,
    find_images,
    load_images,
    synthetic_crops,
)
from mixnet_deploy.errors import InputError
from mixnet_deploy.onnx_export import build_metadata
from mixnet_deploy.weights import WeightsInfo

ORACLE = Path(__file__).parent / "oracles" / "timm_preprocess.npz"


def skimage_data() -> Path:
    """scikit-image's bundled photos (a test dependency), or a skip saying why."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("skimage")
    except ImportError:
        spec = None
    if spec is None or spec.origin is None:
        pytest.skip("scikit-image is not installed (pip install mixnet-deploy[test])")
    return Path(spec.origin).parent / "data"


def png_bytes(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def test_matches_timm_eval_transform():
    """timm's own create_transform output (tests/oracles/make_preprocess_oracle.py) for RGB, grey and JPEG."""
    data = skimage_data()
    with np.load(ORACLE) as z:
        meta = json.loads(str(z["meta"]))
        stored = {k: z[k] for k in z.files if k != "meta"}
    assert len(stored) == 6
    for key, expected in stored.items():
        name, size = key.split("@")
        raw = (data / name).read_bytes()
        if hashlib.sha256(raw).hexdigest() != meta["files"][name]:
            pytest.skip(f"scikit-image's {name} differs from the one the oracle was made with")
        pre = Preprocess(size=int(size))
        crop, why = decode(raw, pre)
        assert why == "" and crop.shape == (int(size), int(size), 3) and crop.dtype == np.uint8
        assert np.abs(pre.normalize(crop[None])[0] - expected).max() <= 1e-6, key


def test_preprocess_from_onnx_metadata():
    spec = get_variant("m")
    meta = build_metadata(spec, WeightsInfo("x", "mixnet-deploy", "0" * 64, "m", 1000), 256, "fp32")
    pre = Preprocess.from_metadata(meta)
    assert pre == Preprocess(size=256, crop_pct=spec.crop_pct, interpolation="bicubic", mean=spec.mean, std=spec.std)
    assert pre.scale_size == 292  # floor(256 / 0.875), as timm computes it
    with pytest.raises(InputError, match="metadata"):
        Preprocess.from_metadata({"mixnet.input_size": "224"})
    with pytest.raises(InputError, match="interpolation 'cubic'"):
        Preprocess(interpolation="cubic")


def test_resize_keeps_aspect_and_crops_center():
    pre = Preprocess(size=32)  # scale 36
    img = np.zeros((40, 120, 3), np.uint8)
    img[:, 54:66] = 255  # a bright vertical bar in the middle
    crop, _ = decode(png_bytes(img), pre)
    assert crop.shape == (32, 32, 3)
    column = crop[16, :, 0].astype(int)
    assert column[14:18].min() > 200 and column[:8].max() < 30 and column[-8:].max() < 30


MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"GIF89a", b"BM"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=st.sampled_from(MAGIC), body=st.binary(max_size=512))
def test_arbitrary_bytes_never_raise(prefix, body):
    crop, why = decode(prefix + body, Preprocess(size=32))
    assert (crop is None) != (why == "")
    if crop is not None:
        assert crop.shape == (32, 32, 3) and crop.dtype == np.uint8


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(min_value=0, max_value=10_000), flip=st.integers(min_value=0, max_value=10_000))
def test_truncated_or_corrupted_images_never_raise(cut, flip):
    rng = np.random.default_rng(0)
    for fmt in ("PNG", "JPEG", "WEBP"):
        raw = bytearray(png_bytes(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8), fmt))
        raw[flip % len(raw)] ^= 0xFF
        crop, why = decode(bytes(raw[: cut % (len(raw) + 1)]), Preprocess(size=32))
        assert (crop is None) != (why == "")


def test_decompression_bomb_and_aspect_guards(monkeypatch):
    wide = png_bytes(np.zeros((2, 200, 3), np.uint8))
    assert decode(wide, Preprocess(size=32)) == (None, "aspect ratio over 32:1")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    crop, why = decode(png_bytes(np.zeros((20, 20, 3), np.uint8)), Preprocess(size=32))
    assert crop is None and "decompression bomb" in why


@pytest.fixture
def messy_folder(tmp_path):
    """Good images in nested folders, beside garbage of every kind."""
    rng = np.random.default_rng(1)
    (tmp_path / "a" / "b").mkdir(parents=True)
    good = {
        "a/one.png": png_bytes(rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)),
        "a/b/two.JPG": png_bytes(rng.integers(0, 256, (70, 40, 3), dtype=np.uint8), "JPEG"),
        "three.webp": png_bytes(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8), "WEBP"),
        "grey.png": png_bytes(rng.integers(0, 256, (30, 30), dtype=np.uint8)),
    }
    bad = {
        "empty.jpg": b"",
        "text.png": b"hello, not an image",
        "random.jpeg": rng.integers(0, 256, 4000, dtype=np.uint8).tobytes(),
        "truncated.png": good["a/one.png"][:300],
        "a/wide.png": png_bytes(np.zeros((1, 100, 3), np.uint8)),
    }
    for name, data in {**good, **bad}.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "notes.txt").write_text("ignored: not an image suffix")
    (tmp_path / "dir.jpg").mkdir()  # a folder with an image suffix
    return tmp_path, sorted(good), sorted(bad)


def test_load_images_skips_and_counts(messy_folder):
    root, good, bad = messy_folder
    paths = find_images(root)
    assert len(paths) == len(good) + len(bad)  # .txt and the folder are not listed
    loaded = load_images(paths, Preprocess(size=32), root=root, quiet=True)
    assert sorted(name for name, _ in loaded.ids) == good
    assert sorted(loaded.skipped) == bad
    assert loaded.crops.shape == (len(good), 32, 32, 3)
    assert "5 unreadable file(s) skipped" in loaded.skip_summary()
    assert all(len(sha) == 64 for _, sha in loaded.ids)


def test_load_images_limit(messy_folder):
    root, good, _ = messy_folder
    loaded = load_images(find_images(root), Preprocess(size=32), limit=2, root=root, quiet=True)
    assert len(loaded) == 2


@pytest.mark.parametrize("kind", ["missing", "file", "empty"])
def test_find_images_refuses(tmp_path, kind):
    target = tmp_path / "x"
    if kind == "file":
        target.write_text("x")
    elif kind == "empty":
        target.mkdir()
        (target / "a.txt").write_text("x")
    with pytest.raises(InputError, match="--calib"):
        find_images(target)


def test_calibration_sets_hold_out_disjoint_images(messy_folder):
    root, good, _ = messy_folder
    pre = Preprocess(size=32)
    sets = calibration_sets(str(root), pre, count=10, quiet=True)
    assert len(sets.held_out) == 1 and len(sets.calib) == 3  # a fifth held out when images are scarce
    assert not {i for i, _ in sets.held_out.ids} & {i for i, _ in sets.calib.ids}
    assert sorted(i for i, _ in [*sets.held_out.ids, *sets.calib.ids]) == good
    assert sets.found == 9 and len(sets.skipped) == 5
    again = calibration_sets(str(root), pre, count=10, quiet=True)
    assert again.calib.ids == sets.calib.ids  # deterministic order
    small = calibration_sets(str(root), pre, count=2, held_out_max=1, quiet=True)
    assert len(small.calib) == 2 and len(small.held_out) == 1


def test_calibration_sets_need_two_images(tmp_path):
    (tmp_path / "one.png").write_bytes(png_bytes(np.zeros((8, 8, 3), np.uint8)))
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(InputError, match="1 readable image"):
        calibration_sets(str(tmp_path), Preprocess(size=32), count=8, quiet=True)


def test_synthetic_sets_and_reader():
    pre = Preprocess(size=32)
    sets = calibration_sets("synthetic", pre, count=10)
    assert sets.synthetic and len(sets.calib) == 10 and len(sets.held_out) == 16
    assert not np.array_equal(sets.calib.crops[:10], sets.held_out.crops[:10])
    assert np.array_equal(synthetic_crops(3, pre).crops, synthetic_crops(3, pre).crops)
    reader = CalibrationReader(sets.calib, pre, batch_size=4)
    batches = list(reader)
    assert len(reader) == 3 and [len(b["input"]) for b in batches] == [4, 4, 2]
    assert all(b["input"].dtype == np.float32 and b["input"].shape[1:] == (3, 32, 32) for b in batches)
    assert reader.get_next() is None
    reader.rewind()
    assert np.array_equal(reader.get_next()["input"], batches[0]["input"])
    x = np.concatenate([b["input"] for b in batches])
    assert np.allclose(x, pre.normalize(sets.calib.crops)) and -2.2 < x.min() < x.max() < 2.7


def test_normalize_matches_definition():
    pre = Preprocess(size=2)
    crops = np.array([[[[0, 128, 255]] * 2] * 2], np.uint8)
    x = pre.normalize(crops)
    expected = (np.array([0, 128, 255]) / 255 - np.array(pre.mean)) / np.array(pre.std)
    assert x.shape == (1, 3, 2, 2) and np.allclose(x[0, :, 0, 0], expected, atol=1e-6)
    assert isinstance(ImageSet(crops).skip_summary(), str)


# ---------------------------------------------------------------- issue 20: files that hang or lie


def test_special_and_oversized_files_are_skipped_and_counted(tmp_path, monkeypatch):
    """A FIFO (a blocking open would hang), a link to /dev/zero (an endless read) and a file over the byte cap
    are skipped with their reasons beside the usable images; nothing blocks (a hang fails by pytest's timeout
    of the whole run, so the FIFO is also opened in a thread with a deadline here)."""
    import os
    import threading

    from mixnet_deploy import data

    image = io.BytesIO()
    Image.new("RGB", (40, 40), (10, 120, 200)).save(image, "PNG")
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(image.getvalue())
    os.mkfifo(tmp_path / "fifo.jpg")
    (tmp_path / "zero.jpg").symlink_to("/dev/zero")
    (tmp_path / "big.png").write_bytes(image.getvalue() + b"\0" * 5000)  # a valid PNG, over a 4 KiB cap
    monkeypatch.setattr(data, "MAX_IMAGE_BYTES", 4096)
    result = {}
    worker = threading.Thread(target=lambda: result.update(
        loaded=load_images(find_images(tmp_path), Preprocess(size=32), root=tmp_path, quiet=True)))  # fmt: skip
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "reading the folder blocked"
    loaded = result["loaded"]
    assert sorted(n for n, _ in loaded.ids) == ["a.png", "b.png"]
    assert loaded.skipped == {"big.png": "over the 4,096-byte cap", "fifo.jpg": "not a regular file (a FIFO)",
                              "zero.jpg": "not a regular file (a character device)"}  # fmt: skip
    assert loaded.skip_summary().startswith("3 unreadable file(s) skipped")


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, "PNG") if mode else Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def test_16_bit_png_is_scaled_not_clipped():
    """A 16-bit greyscale PNG (Pillow's I;16) crops as its 8-bit version does (within rounding); Pillow's own
    convert("RGB") clips it to white."""
    ramp8 = np.tile(np.arange(0, 256, dtype=np.uint8), (256, 1))
    ramp16 = ramp8.astype(np.uint16) * 257  # 255 -> 65535: the same picture in 16 bits
    assert Image.open(io.BytesIO(_png(ramp16))).mode.startswith("I;16")
    pre = Preprocess(size=64)
    crop16, why16 = decode(_png(ramp16), pre)
    crop8, why8 = decode(_png(ramp8), pre)
    assert why16 == why8 == ""
    assert np.abs(crop16.astype(int) - crop8.astype(int)).max() <= 1
    assert crop16.std() > 50  # a ramp, not a blank
    clipped = np.asarray(Image.open(io.BytesIO(_png(ramp16))).convert("RGB"))
    assert (clipped[:, 1:] == 255).mean() > 0.99  # what the old path fed calibration: white


def test_float_and_32_bit_pixels_are_refused():
    pre = Preprocess(size=32)
    for array, mode, why in ((np.full((40, 40), 0.5, np.float32), "F", "float pixels (mode F)"),
                             (np.full((40, 40), 2**20, np.int32), "I", "32-bit integer pixels (mode I)")):  # fmt: skip
        buf = io.BytesIO()
        Image.fromarray(array, mode).save(buf, "TIFF")
        assert decode(buf.getvalue(), pre) == (None, why)


def test_one_colour_images_are_kept_and_warned_about(tmp_path, caplog):
    from mixnet_deploy.data import iter_crops

    Image.new("RGB", (40, 40), (255, 255, 255)).save(tmp_path / "blank.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    paths = find_images(tmp_path)
    with caplog.at_level("WARNING", logger="mixnet_deploy"):
        loaded = load_images(paths, Preprocess(size=32), root=tmp_path, quiet=True)
    assert len(loaded) == 2 and loaded.constant == ["blank.png"]
    assert "1 image(s) decode to a single colour: blank.png" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="mixnet_deploy"):
        assert sum(len(i) for i, _ in iter_crops(paths, Preprocess(size=32), 8, {}, tmp_path)) == 2
    assert "blank.png" in caplog.text
