"""What a re-run may touch (issue 20): ownership of an output folder's files, the swap, outputs apart from inputs.

Fast (tiny files, no export): the end-to-end re-run matrix is in tests/test_interrupt.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest
from onnx import TensorProto, helper, save

from mixnet_deploy.config import ExportConfig
from mixnet_deploy.engine_build import MANIFEST_SCHEMA
from mixnet_deploy.errors import InputError
from mixnet_deploy.export_set import relocate, signals_held, staged, survey
from mixnet_deploy.output_paths import check_apart
from mixnet_deploy.parity import ParityConfig


def tiny_onnx(path: Path, model: str | None) -> Path:
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])
    proto = helper.make_model(helper.make_graph([helper.make_node("Relu", ["input"], ["logits"])], "g", [x], [y]))
    if model is not None:
        entry = proto.metadata_props.add()
        entry.key, entry.value = "mixnet.model", model
    save(proto, str(path))
    return path


def manifest(engine: Path, sha: str | None = None) -> None:
    sha = sha or hashlib.sha256(engine.read_bytes()).hexdigest()
    (engine.parent / (engine.name + ".json")).write_text(json.dumps({"schema": MANIFEST_SCHEMA, "engine_sha256": sha}))


@pytest.fixture
def folder(tmp_path):
    """Files named like mixnet_s's: some mixnet-export wrote (metadata, manifest, header, report), some not."""
    out = tmp_path / "out"
    out.mkdir()
    tiny_onnx(out / "mixnet_s.onnx", "mixnet_s")  # ours by metadata (no report lists it)
    tiny_onnx(out / "mixnet_s.int8.onnx", "mixnet_m")  # another model's metadata under S's name: not ours
    tiny_onnx(out / "mixnet_s.timm.onnx", "mixnet_s")  # our metadata, but not a name we write: a user's copy
    (out / "mixnet_s.fp16.engine").write_bytes(b"engine we built")
    manifest(out / "mixnet_s.fp16.engine")
    (out / "mixnet_s.fp32.engine").write_bytes(b"an engine trtexec built, beside a copied manifest")
    manifest(out / "mixnet_s.fp32.engine", sha="0" * 64)
    (out / "mixnet_s.trtexec.sh").write_text("#!/usr/bin/env bash\n# trtexec recipe written by mixnet-deploy 0.1\n")
    (out / "mixnet_s.int8.calib-0123456789abcdef.json").write_text("{}")  # caches: never touched
    (out / "mixnet_m.onnx").write_bytes(b"another model's file")
    (out / "mixnet_s.fp16.onnx").symlink_to(out / "mixnet_s.onnx")  # a link is never ours, even to our file
    return out


def test_survey_owns_only_what_it_can_show_it_wrote(folder):
    found = survey(folder, "mixnet_s", planned=["mixnet_s.onnx", "mixnet_s.report.json"])
    assert found.owned == {"mixnet_s.onnx", "mixnet_s.fp16.engine", "mixnet_s.fp16.engine.json",
                           "mixnet_s.fp32.engine.json", "mixnet_s.trtexec.sh"}  # fmt: skip
    assert found.foreign == ("mixnet_s.fp16.onnx", "mixnet_s.fp32.engine", "mixnet_s.int8.onnx", "mixnet_s.timm.onnx")
    outcome = found.outcome(["mixnet_s.onnx", "mixnet_s.report.json"])
    assert outcome == {
        "replaced": ["mixnet_s.onnx"],
        "removed": ["mixnet_s.fp16.engine", "mixnet_s.fp16.engine.json", "mixnet_s.fp32.engine.json",
                    "mixnet_s.trtexec.sh"],
        "left_alone": ["mixnet_s.fp16.onnx", "mixnet_s.fp32.engine", "mixnet_s.int8.onnx", "mixnet_s.timm.onnx"],
    }  # fmt: skip


def test_a_file_the_run_would_write_but_did_not_is_refused(folder):
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(InputError) as info:
        survey(folder, "mixnet_s", planned=["mixnet_s.onnx", "mixnet_s.int8.onnx", "mixnet_s.fp16.onnx"])
    assert info.value.field == "out_dir" and "holds mixnet_s.fp16.onnx, mixnet_s.int8.onnx" in str(info.value)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_a_report_lists_what_it_wrote_and_only_its_models_names(folder):
    report = {"variant": "s", "artifacts": [{"path": str(folder / "mixnet_s.int8.onnx")}],
              "files": ["mixnet_m.onnx", "mixnet_s.timm.onnx"]}  # fmt: skip
    (folder / "mixnet_s.report.json").write_text(json.dumps(report))
    found = survey(folder, "mixnet_s", planned=["mixnet_s.int8.onnx"])  # listed: ours, whatever its metadata
    assert {"mixnet_s.int8.onnx", "mixnet_s.timm.onnx", "mixnet_s.report.json"} <= found.owned
    assert "mixnet_m.onnx" not in found.owned  # a report of S never hands over M's files
    assert "mixnet_s.timm.onnx" not in found.outcome([])["removed"]  # listed, but not a name we write: kept


def test_someone_elses_report_json_is_refused(tmp_path):
    (tmp_path / "report.json").write_text(json.dumps({"accuracy": 0.9}))
    with pytest.raises(InputError, match="holds report.json"):
        survey(tmp_path, "mixnet_s", planned=[])


def test_stage_is_discarded_unless_committed(tmp_path):
    with pytest.raises(RuntimeError):
        with staged(tmp_path, "mixnet_s") as stage:
            (stage.path / "mixnet_s.onnx").write_bytes(b"x")
            raise RuntimeError("a stage failed")
    assert list(tmp_path.iterdir()) == []
    with staged(tmp_path, "mixnet_s") as stage:
        (stage.path / "mixnet_s.onnx").write_bytes(b"new")
        stage.commit(survey(tmp_path, "mixnet_s", planned=["mixnet_s.onnx"]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mixnet_s.onnx", "report.json"]


def test_relocate_moves_every_path_of_a_report():
    @dataclass(frozen=True)
    class Item:
        path: str
        notes: tuple[str, ...]

    moved = relocate({"a": [Item("o/.s.stage/m.onnx", ("see o/.s.stage/m.sh",))], "n": 3}, "o/.s.stage", "o")
    assert moved == {"a": [Item("o/m.onnx", ("see o/m.sh",))], "n": 3}


def test_signals_are_held_until_the_swap_is_done(caplog):
    done, handlers = [], (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    with caplog.at_level(logging.WARNING, logger="mixnet_deploy"):
        with signals_held():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
            done.append(True)  # reached: the signals raised nothing inside the block
    assert done and "the swap completed" in caplog.text
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # restored


# ---------------------------------------------------------------- outputs apart from inputs


def test_outputs_that_are_inputs_by_another_name(tmp_path):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"weights")
    (tmp_path / "link.json").symlink_to(weights)
    os.link(weights, tmp_path / "hard.json")
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    for out in (tmp_path / "link.json", tmp_path / "hard.json", tmp_path / "." / "w.safetensors"):
        with pytest.raises(InputError, match=r"is --weights '.*w\.safetensors'") as info:
            check_apart({"json": out}, {"weights": str(weights)}, ParityConfig)
        assert info.value.field == "json" and str(out) in str(info.value)
    with pytest.raises(InputError, match="lies inside --images .*read back as one of that folder's images"):
        check_apart({"predictions": images / "sub" / "p.PNG"}, {"images": str(images)}, ParityConfig)
    check_apart({"json": images / "r.json"}, {"images": str(images)}, ParityConfig)  # not an image: no mix
    check_apart({"json": tmp_path / "r.json"}, {"weights": "timm", "images": None}, ParityConfig)  # keywords: skipped
    check_apart({"json": tmp_path / "images.json"}, {"images": str(images)}, ParityConfig)  # beside, not inside


def test_export_checks_outputs_before_any_work(tmp_path):
    from mixnet_deploy.config import check_config

    calib = tmp_path / "calib"
    calib.mkdir()
    with pytest.raises(InputError, match="is --calib") as info:
        check_config(ExportConfig(out_dir=calib / "." / "out" / "..", int8=True, calib=str(calib)))
    assert info.value.field == "out_dir"
    assert list(calib.iterdir()) == []  # refused before the folder was made
