"""Property tests (Hypothesis) over what users type and what folders hold (issue 8).

Every parser either returns a value that satisfies its documented contract or raises InputError naming
the input; nothing else escapes (no ValueError, IndexError, ... that would surface as exit 1 or a
traceback). The image decoder takes arbitrary bytes and mangled real images: it returns a crop or a
reason, never raises, and a folder of such files is loaded with every file either used or skipped and counted.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from mixnet_deploy.batching import MAX_BATCH, BatchProfile, parse_batch_profile
from mixnet_deploy.config import MAX_IMG_SIZE, ExportConfig, check_img_size
from mixnet_deploy.errors import InputError

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Text a user might type: digits, separators, signs, spaces, unicode digits that int() does or does not accept.
SPEC_ALPHABET = st.sampled_from(list("0123456789:,;-+ .e_xX\t") + ["\u00b2", "\u0661", "\uff11", "\u2167", "\x00"])
spec_text = st.one_of(st.text(SPEC_ALPHABET, max_size=16), st.text(max_size=16))


# ---------------------------------------------------------------------------------------------- --batch


@FAST
@given(spec_text)
@example("1:2:\u00b3")  # isdigit() but not int(): was a ValueError (exit 1)
@example("\uff11:\uff12:\uff13")  # full-width digits: int() accepts them
@example(" 1 : 8 : 32 ")
def test_batch_spec_any_text(text):
    try:
        profile = parse_batch_profile(text)
    except InputError as exc:
        assert repr(text) in str(exc) and "MIN:OPT:MAX" in str(exc)
        assert "\n" not in str(exc).strip()
        return
    assert 1 <= profile.min <= profile.opt <= profile.max <= MAX_BATCH


triple = st.tuples(*[st.integers(-5, MAX_BATCH + 5)] * 3)


@FAST
@given(triple)
def test_batch_spec_accepts_exactly_ordered_triples(t):
    text = ":".join(map(str, t))
    ok = 1 <= t[0] <= t[1] <= t[2] <= MAX_BATCH
    if ok:
        assert parse_batch_profile(text) == BatchProfile(*t)
        assert parse_batch_profile(str(BatchProfile(*t))) == BatchProfile(*t)  # round trip
    else:
        with pytest.raises(InputError):
            parse_batch_profile(text)


@FAST
@given(st.integers(-10, MAX_BATCH + 10))
def test_batch_spec_single_number_is_static(n):
    if 1 <= n <= MAX_BATCH:
        assert parse_batch_profile(str(n)) == BatchProfile(n, n, n)
        assert parse_batch_profile(str(n)).is_static
    else:
        with pytest.raises(InputError):
            parse_batch_profile(str(n))


# ---------------------------------------------------------------------------------------------- --img-size


@FAST
@given(st.one_of(st.integers(), st.integers(-64, 4200), st.sampled_from([0, 32, 2048, 2080, -32, 10**30])))
def test_img_size_accepts_exactly_positive_multiples_of_32(n):
    ok = 0 < n <= MAX_IMG_SIZE and n % 32 == 0
    if ok:
        assert check_img_size(n) == n
    else:
        with pytest.raises(InputError, match=f"--img-size {n}"):
            check_img_size(n)


def parse_or_exit(parser: argparse.ArgumentParser, argv: list[str]):
    """(namespace, None) or (None, exit code, stderr) - argparse's errors are exit 2 with one line."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            return parser.parse_args(argv), None, ""
        except SystemExit as exc:
            return None, exc.code, err.getvalue()


@FAST
@given(spec_text)
def test_img_size_flag_any_text(text):
    from mixnet_deploy.cli import build_export_parser

    ns, code, err = parse_or_exit(build_export_parser(), [f"--img-size={text}"])
    if ns is None:
        assert code == 2 and "--img-size" in err and len(err.strip().splitlines()) == 1
        return
    try:
        assert check_img_size(ns.img_size) % 32 == 0
    except InputError as exc:
        assert "--img-size" in str(exc)


# ---------------------------------------------------------------------------------------------- whole export argv

PATH_FLAGS = {"--out", "--timing-cache", "--triton-repo", "--preset", "--weights", "--calib"}
FLAGS = [
    "--variant", "--img-size", "--opset", "--engine", "--batch", "--workspace", "--dla-core", "--model-name",
    "--model-version", "--triton-kind", "--triton-precision", "--mdconv", "--calib-method", "--calib-count",
]  # fmt: skip
SWITCHES = ["--fp16", "--hardware-compat", "--version-compat", "--trtexec", "--int8"]
VALUES = st.one_of(
    st.sampled_from(["s", "m", "l", "xl", "0", "-1", "64", "1:8:32", "8:1:2", "skip", "auto", "gpu", "cpu", "fp16",
                     "int8", "merged", "split", "entropy", "minmax", "", " ", "nan", "1e9", "mixnet_s"]),
    st.text(SPEC_ALPHABET, max_size=8),
    st.text(max_size=8),
)  # fmt: skip


@st.composite
def export_argv(draw):
    argv = []
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["flag", "flag", "switch"]))
        if kind == "switch":
            argv.append(draw(st.sampled_from(SWITCHES)))
        else:
            argv.append(f"{draw(st.sampled_from(FLAGS))}={draw(VALUES)}")
    return argv


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(export_argv())
def test_export_arguments_never_escape_as_other_errors(argv):
    """parse -> ExportConfig -> check_config (everything checked before work) raises InputError or passes."""
    from mixnet_deploy.cli import build_export_parser, export_config
    from mixnet_deploy.config import check_config, export_flags

    parser = build_export_parser()
    known = {*export_flags().values(), "--preset", "--verbose"}
    argv = [a for a in argv if a.split("=")[0] in known]  # flags another issue has not added yet
    ns, code, err = parse_or_exit(parser, argv)
    if ns is None:
        assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        return
    with tempfile.TemporaryDirectory() as tmp:
        try:
            cfg = export_config(ns)
            cfg = dataclasses.replace(cfg, out_dir=Path(tmp) / "out")
            if getattr(cfg, "triton_repo", None) is not None:
                cfg = dataclasses.replace(cfg, triton_repo=Path(tmp) / "triton")
            check_config(cfg)
        except InputError as exc:
            text = str(exc)
            assert text.strip() and "\n" not in text.strip(), text


# ---------------------------------------------------------------------------------------------- presets


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)  # ints, floats and strings: JSON's forms are valid TOML


def preset_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(ExportConfig)]


scalar = st.one_of(
    st.booleans(), st.integers(-(2**63), 2**63 - 1), st.integers(-3, 300), st.floats(), st.text(max_size=10),
    st.sampled_from(["s", "m", "skip", "auto", "1:8:32", "8", "fp16", "gpu", "cpu", "merged", "entropy", "64"]),
)  # fmt: skip
preset_value = st.one_of(scalar, st.lists(scalar, max_size=3))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.one_of(st.sampled_from(preset_fields()), st.from_regex(r"[a-z_]{1,12}", fullmatch=True)),
                       preset_value, max_size=4))  # fmt: skip
def test_preset_values_never_escape_as_other_errors(values):
    presets = pytest.importorskip("mixnet_deploy.presets")
    path_fields = {"out_dir", "timing_cache", "triton_repo", "weights", "calib", "preset"}
    values = {k: v for k, v in values.items() if k not in path_fields}  # kept in the temporary folder below
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "p.toml"
        file.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in values.items()))
        try:
            loaded = presets.load_preset(file)
            cfg = presets.apply_preset(ExportConfig(out_dir=Path(tmp) / "out"), loaded, set(), str(file))
        except InputError as exc:
            text = str(exc)
            assert str(file) in text and "\n" not in text.strip(), text
            return
        assert isinstance(cfg, ExportConfig)
        for key, value in loaded.items():
            assert getattr(cfg, key) == value


# ---------------------------------------------------------------------------------------------- images


def real_images() -> dict[str, bytes]:
    """Small real files of each format the loader looks for (made with Pillow)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8))
    out = {}
    for fmt, suffix in (("JPEG", ".jpg"), ("PNG", ".png"), ("WEBP", ".webp")):
        buf = io.BytesIO()
        img.save(buf, fmt)
        out[suffix] = buf.getvalue()
    gray = io.BytesIO()
    img.convert("L").save(gray, "PNG")
    out[".gray.png"] = gray.getvalue()
    return out


REAL = real_images()


@st.composite
def mangled_image(draw):
    """A real JPEG/PNG/WebP, truncated, with bytes overwritten, or with bytes inserted."""
    data = bytearray(REAL[draw(st.sampled_from(sorted(REAL)))])
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["cut", "flip", "insert"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "cut":
            del data[pos:]
        elif op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        else:
            data[pos:pos] = draw(st.binary(max_size=16))
        if not data:
            break
    return bytes(data)


image_bytes = st.one_of(st.binary(max_size=2048), mangled_image())


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression-bomb or absurd-aspect probe)."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


@FAST
@given(image_bytes)
@example(b"")
@example(png_header(100_000, 100_000))  # 10 gigapixels claimed
@example(png_header(10_000, 1))  # 10000:1 aspect ratio
@example(REAL[".jpg"][:100])
def test_image_decoder_never_raises(data):
    data_mod = pytest.importorskip("mixnet_deploy.data")
    pre = data_mod.Preprocess(size=32)
    crop, why = data_mod.decode(data, pre)
    if crop is None:
        assert isinstance(why, str) and why
    else:
        assert why == "" and crop.shape == (32, 32, 3) and crop.dtype == np.uint8


def test_real_images_decode():
    data_mod = pytest.importorskip("mixnet_deploy.data")
    for name, blob in REAL.items():
        crop, why = data_mod.decode(blob, data_mod.Preprocess(size=32))
        assert crop is not None, f"{name}: {why}"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from([".jpg", ".png", ".webp", ".JPEG", ".txt"]), image_bytes), max_size=6))
def test_image_folder_every_file_used_or_skipped_and_counted(files):
    data_mod = pytest.importorskip("mixnet_deploy.data")
    pre = data_mod.Preprocess(size=32)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i, (suffix, blob) in enumerate(files):
            (root / f"f{i}{suffix}").write_bytes(blob)
        candidates = [f for f in files if f[0].lower() in (".jpg", ".jpeg", ".png", ".webp")]
        try:
            paths = data_mod.find_images(root)
        except InputError as exc:
            assert not candidates and str(root) in str(exc)
            return
        assert len(paths) == len(candidates)
        loaded = data_mod.load_images(paths, pre, root=root, quiet=True)
        assert len(loaded) + len(loaded.skipped) == len(paths)
        assert loaded.crops.shape[1:] == (32, 32, 3)
        assert all(why for why in loaded.skipped.values())
        if loaded.skipped:
            assert str(len(loaded.skipped)) in loaded.skip_summary()


@FAST
@given(st.dictionaries(st.sampled_from(["mixnet.input_size", "mixnet.crop_pct", "mixnet.interpolation", "mixnet.mean",
                                        "mixnet.std"]), st.one_of(st.text(max_size=12), st.sampled_from(
                                            ["224", "0.875", "bicubic", "0.5,0.5,0.5", "1,2", "0,0,0", "nan", "-1"])),
                       max_size=5))  # fmt: skip
@example({"mixnet.mean": "1,2"})  # two channels: numpy broadcasting fails later, far from the cause
@example({"mixnet.std": "0,0,0"})  # division by zero: inf inputs
def test_preprocess_metadata_is_checked(meta):
    """Metadata of a foreign or edited ONNX file: a usable Preprocess or InputError, never a late numpy error."""
    data_mod = pytest.importorskip("mixnet_deploy.data")
    full = {"mixnet.input_size": "224", "mixnet.crop_pct": "0.875", "mixnet.interpolation": "bicubic",
            "mixnet.mean": "0.485,0.456,0.406", "mixnet.std": "0.229,0.224,0.225", **meta}  # fmt: skip
    try:
        pre = data_mod.Preprocess.from_metadata(full)
    except InputError:
        return
    assume(pre.size <= 512)
    assert len(pre.mean) == len(pre.std) == 3
    assert all(math.isfinite(v) for v in (*pre.mean, *pre.std)) and all(v > 0 for v in pre.std)
    assert 0 < pre.crop_pct <= 1 and math.isfinite(pre.crop_pct)


# ---------------------------------------------------------------------------------------------- bench flags


@FAST
@given(spec_text)
def test_bench_batches_any_text(text):
    bench = pytest.importorskip("mixnet_deploy.bench")
    try:
        batches = bench.parse_batches(text)
    except InputError as exc:
        assert repr(text) in str(exc)
        return
    assert batches and all(1 <= b <= MAX_BATCH for b in batches) and len(set(batches)) == len(batches)


@FAST
@given(st.one_of(st.text(max_size=20), st.lists(st.sampled_from(["auto", "torch", "ort-cpu", "ort-cuda", "x", ""]),
                                                max_size=3).map(",".join)))  # fmt: skip
def test_bench_runtimes_any_text(text):
    bench = pytest.importorskip("mixnet_deploy.bench")
    try:
        names = bench.parse_runtimes(text)
    except InputError as exc:
        assert str(exc).strip() and "\n" not in str(exc).strip()
        return
    assert names and all(n in ("auto", "torch", "ort-cpu") for n in names)
