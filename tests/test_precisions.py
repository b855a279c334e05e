"""The precision table: every row consistent with its key and with what the stages expect of it."""

from __future__ import annotations

import pytest

from mixnet_deploy import precision_table
from mixnet_deploy.errors import InputError


def test_rows_are_keyed_by_name_and_ranked_once():
    rows = precision_table.PRECISIONS
    assert all(r.name == key for key, r in rows.items())
    assert sorted(r.speed_rank for r in rows.values()) == list(range(len(rows)))
    assert precision_table.by_speed() == ("int8", "fp16", "fp32")  # what Triton's auto picks first
    assert precision_table.names()[0] == "fp32"  # the reference every other precision is made from


def test_reduced_precisions_carry_their_tensorrt_facts():
    for name, r in precision_table.PRECISIONS.items():
        reduced = name != "fp32"
        assert (r.trt_tensor_type is not None) == reduced and (r.builder_flag is not None) == reduced
        assert r.dla == reduced and bool(r.trtexec_legacy_flag) == reduced
        assert r.trt_precision_mode == name.upper()


@pytest.mark.parametrize(
    "precision,onnx,engine,trtexec",
    [
        ("fp32", "mixnet_s.onnx", "mixnet_s.fp32.engine", "mixnet_s.fp32.trtexec.engine"),
        ("fp16", "mixnet_s.fp16.onnx", "mixnet_s.fp16.engine", "mixnet_s.fp16.trtexec.engine"),
        ("int8", "mixnet_s.int8.onnx", "mixnet_s.int8.engine", "mixnet_s.int8.trtexec.engine"),
    ],
)
def test_file_names(precision, onnx, engine, trtexec):
    assert precision_table.artifact_name("mixnet_s", precision) == onnx
    assert precision_table.engine_name(onnx, precision) == engine
    assert precision_table.engine_name(onnx, precision, tool="trtexec") == trtexec


def test_unknown_precision_is_bad_input_and_the_table_is_read_only():
    with pytest.raises(InputError, match="precision 'fp8': expected one of fp32, fp16, int8"):
        precision_table.row("fp8")
    with pytest.raises(TypeError):
        precision_table.PRECISIONS["fp8"] = precision_table.PRECISIONS["fp16"]  # type: ignore[index]


def test_weakly_typed_builds_of_the_int8_file_also_enable_fp16():
    """The INT8 file is Q/DQ over an FP16 graph (issue 13): a weakly typed build without the FP16 flag would run
    its float parts in FP32."""
    assert precision_table.weak_typing_flags("int8") == ("fp16", "int8")
    assert precision_table.weak_typing_flags("fp16") == ("fp16",)
    assert precision_table.weak_typing_flags("fp32") == ()
