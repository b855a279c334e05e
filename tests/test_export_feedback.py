"""Issue 21: what mixnet-export tells its user: a short calibration folder, the verification inputs of every
precision, the summary when a verification fails, progress on a terminal.

Uses ../shared/fixtures/trained_mixnet_s20 (a MixNet-S trained to tell 20 photos apart) where accuracy must move.
"""

from __future__ import annotations

import json
import shutil

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


def run_report(tmp_path) -> dict:
    """The run's report: M.report.json when it succeeded, M.failed.json when verification failed."""
    out = tmp_path / "out"
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
    report = run_report(tmp_path)
    assert report["calibration"]["images"] == {"asked": 512, "found": 12, "calibrated": 10, "held_out": 2}
    assert report["calibration"]["shortfall"] == lines[0]
