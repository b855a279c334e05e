"""Issue 21: what mixnet-export tells its user: a short calibration folder, the verification inputs of every
precision, the summary when a verification fails, progress on a terminal.

Uses ../shared/fixtures/trained_mixnet_s20 (a MixNet-S trained to tell 20 photos apart) where accuracy must move.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import sys

import pytest
from conftest import FIXTURE

from mixnet_deploy.cli import export_main

TRAINED = FIXTURE.parent / "trained_mixnet_s20"


def trained():
    if not (TRAINED / "state_dict.safetensors").is_file():
        pytest.skip(f"trained fixture {TRAINED} absent (MIXNET_FIXTURES=DIR points at the fixtures)")
    return TRAINED


def few_photos(tmp_path, n: int):
    """The first ``n`` calibration photos of the trained fixture, in a folder of their own."""
    folder = tmp_path / f"photos{n}"
    folder.mkdir()
    for path in sorted((trained() / "calib").iterdir())[:n]:
        shutil.copy(path, folder / path.name)
    return folder


def export_args(tmp_path, *more: str) -> list[str]:
    weights = str(trained() / "state_dict.safetensors")
    return ["--variant", "s", "--weights", weights, "--img-size", "64", "--engine", "skip", "--out",
            str(tmp_path / "out"), *more]  # fmt: skip


def run_report(out) -> dict:
    """The run's report in ``out``: M.report.json when it succeeded, M.failed.json when verification failed."""
    path = out / "mixnet_s.report.json"
    return json.loads((path if path.is_file() else out / "mixnet_s.failed.json").read_text())


def test_short_calibration_folder_warns_once_and_is_in_the_report(tmp_path, capsys):
    """Item 5: 12 photos for --calib-count 512: one warning line (asked, found, used), also in the report."""
    photos = few_photos(tmp_path, 12)
    code = export_main(export_args(tmp_path, "--int8", "--calib", str(photos), "--calib-count", "512"))
    assert code in (0, 1)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "calibration asked for" in line]
    assert len(lines) == 1, err
    assert "asked for 512 images" in lines[0] and "has 12 image files" in lines[0]
    assert "using 10 to calibrate + 2 held out" in lines[0]
    report = run_report(tmp_path / "out")
    assert report["calibration"]["image_counts"] == {"asked": 512, "found": 12, "calibrated": 10, "held_out": 2}
    assert report["calibration"]["shortfall"] == lines[0]


def test_builtin_photos_are_small_licensed_and_natural():
    """Item 2: the built-in verification set ships in the package: 8 photos, <= 160 px, < 150 KB, each with its
    source and licence in the README beside them."""
    from PIL import Image

    from mixnet_deploy.data import BUILTIN_PHOTOS

    photos = sorted(BUILTIN_PHOTOS.glob("*.jpg"))
    readme = (BUILTIN_PHOTOS / "README.md").read_text()
    assert len(photos) == 8 and sum(p.stat().st_size for p in photos) < 150_000
    for path in photos:
        with Image.open(path) as im:
            assert max(im.size) <= 160 and im.mode == "RGB"
        assert path.name in readme
    assert readme.count("CC0") + readme.count("public domain") >= 8


def test_fp16_verdict_does_not_depend_on_int8_flags(tmp_path, capsys):
    """Item 2: the FP16 file is verified on the same photos (the built-in set: no photos given) with --fp16 alone
    and with --int8 --calib synthetic beside it, so its figures and verdict are the same; every precision of a
    run is verified on those images. The INT8 file, calibrated on colour fields, fails on photos: stdout still
    has the table (what passed, what was refused) and the error names the file."""
    runs = {}
    for name, more in (("alone", []), ("with_int8", ["--int8", "--calib", "synthetic"])):
        out = tmp_path / name
        code = export_main(["--img-size", "64", "--engine", "skip", "--out", str(out), "--fp16", *more])
        captured = capsys.readouterr()
        runs[name] = (code, run_report(out), captured)
    (code_a, alone, _), (code_b, both, printed) = runs["alone"], runs["with_int8"]
    assert alone["verification"] == both["verification"]
    assert alone["verification"]["images"] == 8 and "built-in photos" in alone["verification"]["source"]
    fp16 = [[a for a in r["artifacts"] if a["precision"] == "fp16"][0] for r in (alone, both)]
    assert fp16[0]["metrics"] == fp16[1]["metrics"] and fp16[0]["refused"] == fp16[1]["refused"] is False
    assert {a["verified_on"] for r in (alone, both) for a in r["artifacts"]} == {alone["verification"]["source"]}
    assert code_a == 0 and code_b == 1  # INT8 from colour fields does not compute FP32's logits on photos
    table = [line.split() for line in printed.out.splitlines()]
    rows = {words[0]: words[-1] for words in table if words and words[0] in ("fp32", "fp16", "int8")}
    assert rows == {"fp32": "passed", "fp16": "passed", "int8": "REFUSED"}, printed.out
    assert "nothing of this run was kept" in printed.out and "verified on: 8 built-in photos" in printed.out
    error = [line for line in printed.err.splitlines() if line.startswith("mixnet-export: error:")]
    assert len(error) == 1 and error[0].startswith("mixnet-export: error: mixnet_s.int8.onnx vs FP32 on 8 built-in")


def test_headline_fp16_export_of_random_weights_passes_on_photos(tmp_path, capsys):
    """`mixnet-export --variant s --fp16` (random weights, 224 px) is kept: the random init measures its BN statistics
    on smooth colour fields (not the verification photos), so its logits on photos have a trained net's size and
    FP16 meets its tolerance there (statistics from white noise gave logits in the hundreds, min cosine 0.9992)."""
    code = export_main(["--variant", "s", "--engine", "skip", "--out", str(tmp_path), "--fp16"])
    assert code == 0, capsys.readouterr().err
    fp32, fp16 = run_report(tmp_path)["artifacts"][:2]
    assert fp16["precision"] == "fp16" and fp16["metrics"]["min_cosine"] >= 0.9995
    assert fp32["metrics"]["max_abs"] <= 1e-3  # logits of a few units: FP32's bound holds in absolute terms too


class Terminal(io.StringIO):
    """stderr as a terminal (what a pty would say to isatty)."""

    def isatty(self) -> bool:
        return True


STAGE_LINE = re.compile(r"^\[\s*\d+\.\d s\] ([a-z0-9 +]+)(: .*)?$")


def test_progress_shows_on_a_terminal_only():
    """Item 8: a stage line with the elapsed seconds and bars with an ETA, on a terminal; nothing when stderr is a
    pipe or a file, nothing with --quiet (enabled=False)."""
    from mixnet_deploy.environment import Progress

    tty, pipe, quiet = Terminal(), io.StringIO(), Terminal()
    for stream, enabled in ((tty, None), (pipe, None), (quiet, False)):
        progress = Progress(stream, enabled)
        progress.stage("calibrate", "percentile over 64 images")
        with progress.bar(3, "calibrate", "img") as bar:
            bar.update(3)
    assert pipe.getvalue() == "" and quiet.getvalue() == ""
    first = tty.getvalue().splitlines()[0]
    assert STAGE_LINE.match(first) and first.endswith("] calibrate: percentile over 64 images")
    assert re.search(r"calibrate: 100%.*3/3", tty.getvalue())  # the bar (cleared when done: leave=False)


def test_sensitivity_search_has_a_bar_with_an_eta():
    """Item 8: --int8-exclude auto's leave-one-out runs (a hundred on S) show count, rate and remaining time."""
    import numpy as np

    from mixnet_deploy import sensitivity
    from mixnet_deploy.acceptance import tolerance_judge
    from mixnet_deploy.environment import Progress
    from mixnet_deploy.precision_table import row

    layers = [f"conv{i}" for i in range(10)]
    reference = np.random.default_rng(0).standard_normal((4, 20)) * 3
    damage = {name: np.random.default_rng(i).standard_normal(reference.shape) * 0.5 for i, name in enumerate(layers)}
    tty = Terminal()
    judge = tolerance_judge(reference, row("int8").tolerance)
    sensitivity.auto_exclude(lambda excluded: reference + sum(d for n, d in damage.items() if n not in excluded),
                             layers, reference, judge, 2, Progress(tty))  # fmt: skip
    text = tty.getvalue()
    assert "int8 sensitivity" in text and "10/10" in text and re.search(r"\d\d:\d\d<\d\d:\d\d", text), text


def test_export_prints_its_stages_on_a_terminal(tmp_path, monkeypatch):
    """Item 8: mixnet-export on a terminal: a line per stage (load, fold, export and verify of each precision,
    calibrate with its bar, int8), also when a file is then refused; --quiet: none."""
    from mixnet_deploy.cli import export_main

    tty = Terminal()
    monkeypatch.setattr(sys, "stderr", tty)
    export_main(["--img-size", "64", "--engine", "skip", "--out", str(tmp_path / "a"), "--fp16", "--int8", "--calib",
                 "synthetic", "--calib-count", "8"])  # fmt: skip
    stages = [m[1] for line in tty.getvalue().splitlines() if (m := STAGE_LINE.match(line))]
    expected = ["load", "fold", "export fp32", "verify fp32", "calibrate", "int8", "export fp16", "verify fp16",
                "export int8", "verify int8"]  # fmt: skip
    assert stages == expected, tty.getvalue()
    assert "calibrate: " in tty.getvalue() and "8/8" in tty.getvalue()  # the calibration bar
    quiet = Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    assert export_main(["--img-size", "64", "--engine", "skip", "--out", str(tmp_path / "b"), "--quiet"]) == 0
    assert not [line for line in quiet.getvalue().splitlines() if STAGE_LINE.match(line)], quiet.getvalue()
