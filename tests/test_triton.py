"""Triton model repository: every config.pbtxt is parsed with Triton's own ModelConfig schema.

The schema is not ours: ``tritonclient.grpc.model_config_pb2`` is generated from Triton's
``model_config.proto``; ``google.protobuf.text_format.Parse`` rejects unknown fields, wrong
enum names and malformed text, i.e. what Triton's server rejects when it loads a config.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from mixnet_deploy import triton
from mixnet_deploy.batching import BatchProfile
from mixnet_deploy.cli import export_main
from mixnet_deploy.config import export_flags
from mixnet_deploy.engine_build import EngineResult
from mixnet_deploy.errors import InputError, VerificationError
from mixnet_deploy.export_reports import read_report
from mixnet_deploy.onnx_export import read_metadata

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="pip install tritonclient[grpc]")
text_format = pytest.importorskip("google.protobuf.text_format")


def parse(path_or_text) -> model_config_pb2.ModelConfig:
    text = Path(path_or_text).read_text() if isinstance(path_or_text, Path) else path_or_text
    return text_format.Parse(text, model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def exported(tmp_path_factory, random_checkpoint_s):
    """One CLI export at 224 with --batch 1:8:16 and --triton-repo (the issue's stated case)."""
    base = tmp_path_factory.mktemp("triton")
    out, repo = base / "out", base / "repo"
    argv = ["--variant", "s", "--weights", str(random_checkpoint_s), "--engine", "skip"]
    rc = export_main([*argv, "--out", str(out), "--batch", "1:8:16", "--triton-repo", str(repo)])
    assert rc == 0
    return {"out": out, "repo": repo, "report": read_report(out)}


def test_config_parses_as_triton_model_config(exported):
    repo = exported["repo"]
    cfg = parse(repo / "mixnet_s" / "config.pbtxt")
    assert cfg.name == "mixnet_s" and cfg.platform == "onnxruntime_onnx"
    assert cfg.max_batch_size == 16
    assert [(i.name, i.data_type, list(i.dims)) for i in cfg.input] == [
        ("input", model_config_pb2.TYPE_FP32, [3, 224, 224])
    ]
    assert [(o.name, o.data_type, list(o.dims)) for o in cfg.output] == [("logits", model_config_pb2.TYPE_FP32, [1000])]
    assert list(cfg.version_policy.specific.versions) == [1]  # the version this run wrote, whatever else is there
    assert cfg.HasField("dynamic_batching")
    assert list(cfg.dynamic_batching.preferred_batch_size) == [8, 16]
    assert 0 < cfg.dynamic_batching.max_queue_delay_microseconds <= 1000
    assert [(g.kind, g.count) for g in cfg.instance_group] == [(model_config_pb2.ModelInstanceGroup.KIND_GPU, 1)]
    (acc,) = cfg.optimization.execution_accelerators.gpu_execution_accelerator
    assert acc.name == "tensorrt" and acc.parameters["precision_mode"] == "FP32"
    assert acc.parameters["trt_profile_max_shapes"] == "input:16x3x224x224"


def test_repository_model_is_the_exported_file_and_params_are_its_metadata(exported):
    model_file = exported["repo"] / "mixnet_s" / "1" / "model.onnx"
    onnx_file = exported["out"] / "mixnet_s.onnx"
    assert model_file.read_bytes() == onnx_file.read_bytes()
    params = {k: v.string_value for k, v in parse(exported["repo"] / "mixnet_s" / "config.pbtxt").parameters.items()}
    meta = read_metadata(onnx.load(str(onnx_file), load_external_data=False))
    for key in ("mixnet.mean", "mixnet.std", "mixnet.input_size", "mixnet.interpolation", "mixnet.crop_pct"):
        assert params[key] == meta[key]
    assert [float(v) for v in params["mixnet.mean"].split(",")] == pytest.approx([0.485, 0.456, 0.406])
    assert params["mixnet.batch_profile"] == "1:8:16"
    t = exported["report"]["triton"]
    assert t["platform"] == "onnxruntime_onnx" and t["precision"] == "fp32" and t["schema_checked"] is True
    assert not [p for p in exported["repo"].rglob("*") if ".tmp-" in p.name]


# ---------------------------------------------------------------- small synthetic models (fast)


def tiny_onnx(path: Path, elem=TensorProto.FLOAT, batch="batch", metadata=None) -> Path:
    x = helper.make_tensor_value_info("input", elem, [batch, 3, 8, 8])
    y = helper.make_tensor_value_info("logits", elem, [batch, 3, 8, 8])
    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["logits"])], "tiny", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for key, value in (metadata or {"mixnet.mean": "0.5,0.5,0.5", "mixnet.input_size": "8"}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def art(precision, path):
    """An artifact of a run as the Triton stage reads it (pipeline.Artifact has more fields)."""
    return SimpleNamespace(precision=precision, path=path)


def opts(tmp_path, **kw):
    return triton.TritonOptions(repo=tmp_path / "repo", **kw)


def test_fp16_io_types_and_cpu_kind(tmp_path):
    src = tiny_onnx(tmp_path / "m.fp16.onnx", TensorProto.FLOAT16)
    info = triton.build_repository([art("fp16", str(src))], [], opts(tmp_path, kind="cpu"), "s")
    cfg = parse(Path(info["config"]))
    assert cfg.input[0].data_type == model_config_pb2.TYPE_FP16 and list(cfg.input[0].dims) == [3, 8, 8]
    assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert not cfg.HasField("optimization")  # no TensorRT accelerator on a CPU instance
    assert cfg.parameters["mixnet.mean"].string_value == "0.5,0.5,0.5"


def test_cpu_openvino_backend_serves_the_onnx_file_openvino_reads(exported, tmp_path):
    """--triton-backend openvino: backend "openvino" (Triton's openvino_backend), default_model_filename model.onnx
    (the backend's default is model.xml), checked against Triton's schema; the file runs in OpenVINO like in ORT."""
    import numpy as np
    import openvino as ov

    from mixnet_deploy.runtimes import ort_session, run_ort

    src = Path(exported["out"]) / "mixnet_s.onnx"
    info = triton.build_repository([art("fp32", str(src))], [], opts(tmp_path, kind="cpu", backend="openvino"), "s")
    cfg = parse(Path(info["config"]))
    assert cfg.backend == "openvino" and not cfg.platform and cfg.default_model_filename == "model.onnx"
    assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert not cfg.HasField("optimization") and info["schema_checked"] is True
    served = Path(info["model_file"])
    assert served.name == cfg.default_model_filename and served.read_bytes() == src.read_bytes()
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224), dtype=np.float32)
    compiled = ov.Core().compile_model(ov.Core().read_model(str(served)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = compiled.create_infer_request().infer({0: x})[compiled.output("logits")]
    want = run_ort(ort_session(str(src)), x)  # float32 on both: 1e-4 per unit of the logits' scale (noise inputs
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())  # give logits of ~100 here)


def test_static_batch_onnx_is_refused(tmp_path):
    src = tiny_onnx(tmp_path / "m.onnx", batch=4)
    with pytest.raises(VerificationError, match="symbolic batch"):
        triton.read_onnx_io(src)


def test_precision_choice(tmp_path):
    files = {p: tiny_onnx(tmp_path / f"m.{p}.onnx") for p in ("fp32", "fp16", "int8")}
    arts = [art(p, str(f)) for p, f in files.items()]
    sources = triton.collect_sources(arts)
    assert triton.choose_source(sources, "gpu", "auto").precision == "int8"
    assert triton.choose_source(sources[:2], "gpu", "auto").precision == "fp16"
    assert triton.choose_source(sources, "gpu", "fp16").path == files["fp16"]
    with pytest.raises(InputError, match="--triton-precision 'int8' but this run wrote no int8 model"):
        triton.choose_source(sources[:2], "gpu", "int8")
    with pytest.raises(InputError, match="no ONNX file or engine"):
        triton.choose_source([], "gpu", "auto")


@pytest.mark.parametrize("precision,mode", [("fp32", "FP32"), ("fp16", "FP16"), ("int8", "INT8")])
def test_trt_accelerator_precision_mode(tmp_path, precision, mode):
    src = tiny_onnx(tmp_path / f"m.{precision}.onnx")
    info = triton.build_repository([art(precision, str(src))], [], opts(tmp_path), "s")
    (acc,) = parse(Path(info["config"])).optimization.execution_accelerators.gpu_execution_accelerator
    assert acc.parameters["precision_mode"] == mode


def test_engine_becomes_model_plan(tmp_path):
    src = tiny_onnx(tmp_path / "m.fp16.onnx")
    engine = tmp_path / "m.fp16.engine"
    engine.write_bytes(b"not a real engine: the repository copies bytes")
    (tmp_path / "m.fp16.engine.json").write_text('{"tensorrt": "10.x"}')
    eng = [EngineResult(precision="fp16", onnx=str(src), path=str(engine), manifest=f"{engine}.json", bytes=0,
                        seconds=0.0, check={})]  # fmt: skip
    arts = [art("fp16", str(src))]
    info = triton.build_repository(arts, eng, opts(tmp_path, batch=BatchProfile(1, 1, 1), dla_core=0), "s")
    cfg = parse(Path(info["config"]))
    assert cfg.platform == "tensorrt_plan" and cfg.max_batch_size == 1
    assert not cfg.HasField("optimization")
    (group,) = cfg.instance_group
    assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert [(d.kind, d.device_id) for d in group.secondary_devices] == [
        (model_config_pb2.ModelInstanceGroup.SecondaryDevice.KIND_NVDLA, 0)
    ]
    version = Path(info["model_dir"]) / "1"
    assert (version / "model.plan").read_bytes() == engine.read_bytes()
    assert (version / "engine_manifest.json").is_file() and not (version / "model.onnx").exists()
    # KIND_CPU cannot run a plan: the ONNX file is served instead
    info = triton.build_repository(arts, eng, opts(tmp_path, kind="cpu", model_name="cpu_copy"), "s")
    assert parse(Path(info["config"])).platform == "onnxruntime_onnx"


def test_rewrite_replaces_version_keeps_others_and_leaves_no_temp(tmp_path):
    fp32 = tiny_onnx(tmp_path / "m.onnx")
    model_dir = tmp_path / "repo" / "mixnet_s"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.plan").write_bytes(b"stale engine of an earlier run")
    (model_dir / "2").mkdir()
    (model_dir / "2" / "model.onnx").write_bytes(b"other version")
    triton.build_repository([art("fp32", str(fp32))], [], opts(tmp_path), "s")
    assert sorted(p.name for p in (model_dir / "1").iterdir()) == ["model.onnx"]
    assert (model_dir / "2" / "model.onnx").read_bytes() == b"other version"
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "2", "config.pbtxt"]


def test_a_higher_version_on_disk_is_not_served(tmp_path):
    """repo/mixnet_s/2 present, this run writes 1: Triton's default policy (latest 1) would serve 2; the config
    pins version 1 (version_policy specific), and the report lists both folders."""
    fp32 = tiny_onnx(tmp_path / "m.onnx")
    (tmp_path / "repo" / "mixnet_s" / "2").mkdir(parents=True)
    (tmp_path / "repo" / "mixnet_s" / "2" / "model.onnx").write_bytes(b"an older run's version 2")
    info = triton.build_repository([art("fp32", str(fp32))], [], opts(tmp_path, version=1), "s")
    cfg = parse(Path(info["config"]))
    assert cfg.version_policy.WhichOneof("policy_choice") == "specific"
    assert list(cfg.version_policy.specific.versions) == [1]
    assert info["versions"] == [1, 2] and info["served_versions"] == [1]
    assert any("also holds version(s) 2" in n and "not served" in n for n in info["notes"])
    assert (tmp_path / "repo" / "mixnet_s" / "2" / "model.onnx").read_bytes() == b"an older run's version 2"


def test_a_staged_version_changes_nothing_until_committed(tmp_path):
    fp32 = tiny_onnx(tmp_path / "m.onnx")
    triton.build_repository([art("fp32", str(fp32))], [], opts(tmp_path), "s")
    repo = tmp_path / "repo"
    before = {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    _, staged = triton.stage_repository([art("fp32", str(fp32))], [], opts(tmp_path, version=4), "s")
    assert {p: p.read_bytes() for p in repo.rglob("*") if p.is_file() and ".tmp-" not in str(p)} == before
    staged.discard()
    assert {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()} == before


def test_failed_copy_keeps_the_old_version(tmp_path, monkeypatch):
    fp32 = tiny_onnx(tmp_path / "m.onnx")
    triton.build_repository([art("fp32", str(fp32))], [], opts(tmp_path), "s")
    model_dir = tmp_path / "repo" / "mixnet_s"
    before = (model_dir / "1" / "model.onnx").read_bytes()

    def broken_copy(src, dst):
        Path(dst).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(triton.shutil, "copyfile", broken_copy)
    with pytest.raises(OSError, match="disk full"):
        triton.build_repository([art("fp32", str(fp32))], [], opts(tmp_path, version=1), "s")
    assert (model_dir / "1" / "model.onnx").read_bytes() == before
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "config.pbtxt"]


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40))
def test_string_quoting_round_trips_through_protobuf(value):
    q = triton._quote(value)
    text = f"name: {q}\nparameters {{ key: {q} value {{ string_value: {q} }} }}"
    cfg = parse(text)
    assert cfg.name == value and cfg.parameters[value].string_value == value


@pytest.mark.parametrize(
    "o,needle",
    [
        (dict(model_name="../evil"), "--model-name '../evil'"),
        (dict(model_name=".hidden"), "--model-name '.hidden'"),
        (dict(version=0), "--model-version 0"),
        (dict(kind="tpu"), "--triton-kind 'tpu'"),
        (dict(precision="fp8"), "--triton-precision 'fp8'"),
        (dict(backend="tensorflow", kind="cpu"), "--triton-backend 'tensorflow'"),
        (dict(backend="openvino"), "--triton-backend 'openvino' given with --triton-kind gpu"),
    ],
)
def test_bad_options(tmp_path, o, needle):
    with pytest.raises(InputError, match=needle.replace(".", r"\.")) as err:
        triton.check_options(opts(tmp_path, **o))
    assert err.value.field in export_flags()  # an ExportConfig field: the CLI names its flag, a preset its key


def test_repo_is_a_file(tmp_path):
    (tmp_path / "repo").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        triton.check_options(opts(tmp_path))


def test_cli_precision_not_exported_is_refused_before_work(tmp_path, capsys):
    argv = ["--engine", "skip", "--out", str(tmp_path / "o"), "--triton-repo", str(tmp_path / "r")]
    assert export_main([*argv, "--triton-precision", "int8", "--fp16"]) == 2
    err = capsys.readouterr().err
    assert "--triton-precision 'int8' but this run writes fp32, fp16 only: expected --int8 with it" in err
    assert not (tmp_path / "o" / "mixnet_s.onnx").exists()


def test_another_configuration_is_refused_not_replaced(tmp_path):
    """Issue 21 item 3: a KIND_GPU model into the folder of a KIND_CPU one (two presets, one default name) is
    refused naming what the folder holds and --model-name; the same configuration again replaces it; a
    config.pbtxt we did not write is never replaced."""
    fp32 = tiny_onnx(tmp_path / "m.onnx", metadata={"mixnet.model": "mixnet_s", "mixnet.precision": "fp32"})
    triton.build_repository([art("fp32", str(fp32))], [], opts(tmp_path, kind="cpu"), "s")
    repo = tmp_path / "repo"
    before = {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    assert triton.read_configuration(before[repo / "mixnet_s" / "config.pbtxt"].decode()) == {
        "model": "mixnet_s", "input": "input TYPE_FP32", "platform": "onnxruntime_onnx", "kind": "KIND_CPU",
        "precision": "fp32"}  # fmt: skip
    with pytest.raises(InputError) as err:
        triton.build_repository([art("fp32", str(fp32))], [], opts(tmp_path, kind="gpu"), "s")
    text = err.value.render()
    assert f"--model-name 'mixnet_s' is taken: {repo / 'mixnet_s'} holds another configuration" in text
    assert "KIND_CPU" in text and "KIND_GPU" in text and "mixnet_s_gpu_fp32" in text and "--model-version" in text
    assert {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()} == before  # nothing replaced, no temp
    triton.build_repository([art("fp32", str(fp32))], [], opts(tmp_path, kind="cpu", version=2), "s")  # same: fine
    info = triton.build_repository([art("fp32", str(fp32))], [], opts(tmp_path, model_name="{model}_gpu"), "s")
    assert info["model_dir"] == str(repo / "mixnet_s_gpu") and parse(Path(info["config"])).name == "mixnet_s_gpu"
    for version in (1, 2):  # the same OpenVINO configuration again (backend: "openvino", no platform line) is fine
        ov = opts(tmp_path, kind="cpu", backend="openvino", model_name="{model}_ov", version=version)
        triton.build_repository([art("fp32", str(fp32))], [], ov, "s")
    with pytest.raises(InputError, match=r"holds another configuration, mixnet_s fp32 openvino KIND_CPU"):
        triton.build_repository([art("fp32", str(fp32))], [], opts(tmp_path, kind="cpu", model_name="{model}_ov"), "s")
    (repo / "theirs").mkdir()
    (repo / "theirs" / "config.pbtxt").write_text('name: "theirs"\nplatform: "pytorch_libtorch"\n')
    with pytest.raises(InputError, match="holds a config.pbtxt mixnet-export did not write"):
        triton.build_repository([art("fp32", str(fp32))], [], opts(tmp_path, model_name="theirs"), "s")


def test_the_triton_presets_serve_distinct_models():
    from mixnet_deploy.config import ExportConfig, triton_options
    from mixnet_deploy.presets import apply_preset, load_preset

    root = Path(__file__).resolve().parents[1] / "export"
    names = set()
    for preset in ("triton-cpu-onnx.toml", "triton-gpu-fp16.toml"):
        cfg = apply_preset(ExportConfig(), load_preset(root / preset), set(), preset)
        names.add(triton.model_name_of(triton_options(cfg), "s"))
    assert names == {"mixnet_s_cpu", "mixnet_s"}
