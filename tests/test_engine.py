"""TensorRT engine stage on a CPU: profiles, options, manifests, precision checks, the trtexec recipe.

Everything here runs without TensorRT; the TensorRT calls themselves are in test_engine_gpu.py.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from mixnet_deploy import engine_build as E
from mixnet_deploy.batching import BatchProfile
from mixnet_deploy.config import export_flags, flag_of
from mixnet_deploy.environment import parse_l4t_release, read_l4t_release
from mixnet_deploy.errors import EnvironmentFailure, InputError, VerificationError
from mixnet_deploy.export_reports import read_report
from mixnet_deploy.gpu_stack import gpu_stack_status
from mixnet_deploy.pipeline import engine_stage
from mixnet_deploy.trt_runner import engine_runner
from mixnet_deploy.trtexec import trtexec_recipe, write_trtexec_script

SYSTEM = {
    "tensorrt": "10.3.0",
    "cuda_runtime": "12.6",
    "cuda_driver": "12.6",
    "gpu": "Orin (nvgpu)",
    "compute_capability": "8.7",
    "l4t": "R36.4.0",
}
HAVE_TRT = gpu_stack_status()[0]
no_trt = pytest.mark.skipif(HAVE_TRT, reason="this machine has TensorRT and a GPU: the no-TensorRT path is moot")


# ---------------------------------------------------------------- profile and options


def test_profile_shapes_from_batch_profile():
    shapes = E.profile_shapes(BatchProfile(1, 8, 32), 224)
    assert shapes == {"input": {"min": [1, 3, 224, 224], "opt": [8, 3, 224, 224], "max": [32, 3, 224, 224]}}
    assert E.profile_shapes(BatchProfile(4, 4, 4), 256)["input"]["max"] == [4, 3, 256, 256]


@pytest.mark.parametrize(
    "onnx,precision,engine",
    [
        ("out/mixnet_s.onnx", "fp32", "out/mixnet_s.fp32.engine"),
        ("out/mixnet_s.fp16.onnx", "fp16", "out/mixnet_s.fp16.engine"),
        ("out/mixnet_l.int8.onnx", "int8", "out/mixnet_l.int8.engine"),
    ],
)
def test_engine_and_manifest_names(onnx, precision, engine):
    assert E.engine_path_for(onnx, precision) == Path(engine)
    assert E.manifest_path_for(engine) == Path(engine + ".json")


def test_dla_rejects_dynamic_batch_and_says_why():
    """The errors carry the field the user must change (the batch, not the DLA core; the compatibility option)."""
    with pytest.raises(InputError, match=r"DLA needs static shapes.*e\.g\. 8") as err:
        E.check_engine_options(E.EngineOptions(batch=BatchProfile(1, 8, 32), dla_core=0))
    assert (err.value.field, err.value.value) == ("batch", "1:8:32")
    assert err.value.render(flag_of).startswith("--batch '1:8:32' with DLA core 0: DLA needs static shapes")
    E.check_engine_options(E.EngineOptions(batch=BatchProfile(8, 8, 8), dla_core=1))
    with pytest.raises(InputError, match="--dla-core -1"):
        E.check_engine_options(E.EngineOptions(batch=BatchProfile(8, 8, 8), dla_core=-1))
    with pytest.raises(InputError, match="DLA engines are tied") as err:
        E.check_engine_options(E.EngineOptions(batch=BatchProfile(8, 8, 8), dla_core=0, hardware_compat=True))
    assert err.value.render(flag_of).startswith("--hardware-compat with DLA core 0: DLA engines are tied")
    with pytest.raises(InputError) as err:
        E.check_engine_options(E.EngineOptions(workspace_mib=0))
    assert err.value.render(flag_of).startswith("--workspace 0: expected a positive number of MiB")


def test_timing_cache_that_is_a_directory_is_refused(tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        E.check_engine_options(E.EngineOptions(timing_cache=tmp_path))


def test_l4t_release(tmp_path):
    f = tmp_path / "etc" / "nv_tegra_release"
    f.parent.mkdir()
    f.write_text("# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: Fri Sep 13\n")
    assert read_l4t_release(tmp_path) == "R36.4.0"
    assert read_l4t_release(tmp_path / "absent") is None


@pytest.mark.parametrize("text", ["", "\n", "   \n\n"])
def test_l4t_release_empty_file_is_none(tmp_path, text):
    """An empty release file (both old parsers raised IndexError on it) reads as no L4T release."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nv_tegra_release").write_text(text)
    assert parse_l4t_release(text) is None and read_l4t_release(tmp_path) is None


def test_l4t_release_without_the_revision_pattern_keeps_its_first_line():
    assert parse_l4t_release("# R35 custom build\nmore\n") == "# R35 custom build"


# ---------------------------------------------------------------- manifest


def _manifest(tmp_path, **opts):
    onnx = tmp_path / "mixnet_s.fp16.onnx"
    onnx.write_bytes(b"onnx bytes")
    engine = tmp_path / "mixnet_s.fp16.engine"
    engine.write_bytes(b"engine bytes")
    manifest = E.build_manifest(
        engine_sha256=E.sha256_file(engine),
        onnx_path=onnx,
        onnx_sha256=E.sha256_file(onnx),
        precision="fp16",
        opts=E.EngineOptions(batch=BatchProfile(1, 8, 32), workspace_mib=1024, **opts),
        system=SYSTEM,
    )
    E.write_json(E.manifest_path_for(engine), manifest)
    return engine, manifest


def test_manifest_records_what_the_issue_lists(tmp_path):
    engine, m = _manifest(tmp_path)
    assert m["system"] == SYSTEM  # TensorRT, CUDA, driver, GPU, compute capability, L4T
    assert m["precision"] == "fp16" and m["workspace_mib"] == 1024 and m["dla_core"] is None
    assert m["profile"]["shapes"]["input"]["opt"] == [8, 3, 224, 224]
    assert m["onnx_sha256"] == E.sha256_file(tmp_path / "mixnet_s.fp16.onnx")
    assert m["engine_sha256"] == E.sha256_file(engine) and len(m["engine_sha256"]) == 64
    assert m["strongly_typed"] is True
    assert E.verify_engine_file(engine, SYSTEM)["precision"] == "fp16"  # the same system loads it


@pytest.mark.parametrize(
    "key,value,needle",
    [
        ("tensorrt", "10.7.0", "TensorRT 10.7.0 here, engine built with 10.3.0"),
        ("gpu", "NVIDIA H100", "GPU 'NVIDIA H100' here, engine built on 'Orin (nvgpu)'"),
        ("compute_capability", "9.0", "compute capability 9.0 here, engine built for 8.7"),
        ("l4t", None, "L4T absent here, engine built on L4T R36.4.0"),
    ],
)
def test_manifest_mismatch_names_what_differs(tmp_path, key, value, needle):
    engine, _ = _manifest(tmp_path)
    with pytest.raises(InputError) as exc:
        E.verify_engine_file(engine, {**SYSTEM, key: value})
    assert needle in str(exc.value) and "built for another system" in str(exc.value)
    assert len(str(exc.value).splitlines()) == 1


def test_manifest_lists_every_difference(tmp_path):
    engine, _ = _manifest(tmp_path)
    other = {**SYSTEM, "tensorrt": "11.4.1", "gpu": "NVIDIA L4", "compute_capability": "8.9", "l4t": None}
    with pytest.raises(InputError) as exc:
        E.verify_engine_file(engine, other)
    for needle in ("TensorRT 11.4.1", "GPU 'NVIDIA L4'", "compute capability 8.9", "L4T absent"):
        assert needle in str(exc.value)


def test_cuda_and_driver_differences_do_not_refuse(tmp_path):
    engine, _ = _manifest(tmp_path)
    E.verify_engine_file(engine, {**SYSTEM, "cuda_driver": "12.8", "cuda_runtime": "12.8"})


def test_tampered_engine_is_refused(tmp_path):
    engine, _ = _manifest(tmp_path)
    engine.write_bytes(b"engine bytes, modified")
    with pytest.raises(InputError, match="SHA-256 .* is not the manifest's .*replaced or modified"):
        E.verify_engine_file(engine, SYSTEM)


def test_tampered_manifest_is_refused(tmp_path):
    engine, m = _manifest(tmp_path)
    E.manifest_path_for(engine).write_text(json.dumps({**m, "system": {**m["system"], "tensorrt": "10.0.1"}}))
    with pytest.raises(InputError, match="TensorRT 10.3.0 here, engine built with 10.0.1"):
        E.verify_engine_file(engine, SYSTEM)
    E.manifest_path_for(engine).write_text("{not json")
    with pytest.raises(InputError, match="unreadable engine manifest"):
        E.verify_engine_file(engine, SYSTEM)
    E.manifest_path_for(engine).write_text(json.dumps({**m, "schema": "other"}))
    with pytest.raises(InputError, match="not a mixnet-deploy engine manifest"):
        E.verify_engine_file(engine, SYSTEM)


def test_missing_manifest_or_engine(tmp_path):
    engine = tmp_path / "x.engine"
    with pytest.raises(InputError, match="does not exist"):
        E.verify_engine_file(engine, SYSTEM)
    engine.write_bytes(b"x")
    with pytest.raises(InputError, match=r"has no manifest \(x.engine.json\)"):
        E.verify_engine_file(engine, SYSTEM)


def test_hardware_and_version_compatible_engines(tmp_path):
    engine, _ = _manifest(tmp_path, hardware_compat=True, version_compat=True)
    E.verify_engine_file(engine, {**SYSTEM, "gpu": "NVIDIA A10", "compute_capability": "8.6", "tensorrt": "10.7.0"})
    with pytest.raises(InputError, match="ampere.*needs >= 8.0"):
        E.verify_engine_file(engine, {**SYSTEM, "gpu": "Tesla T4", "compute_capability": "7.5"})
    with pytest.raises(InputError, match="same major"):
        E.verify_engine_file(engine, {**SYSTEM, "tensorrt": "10.1.0"})  # older than the build
    with pytest.raises(InputError, match="same major"):
        E.verify_engine_file(engine, {**SYSTEM, "tensorrt": "11.0.0"})


# ---------------------------------------------------------------- precision of a built engine


def _layer(kind, fmt_in, fmt_out=None):
    return {
        "LayerType": kind,
        "Inputs": [{"Name": "a", "Format/Datatype": fmt_in}],
        "Outputs": [{"Name": "b", "Format/Datatype": fmt_out or fmt_in}],
    }


FP16_ENGINE = {
    "Layers": [
        _layer("Reformat", "Row major linear FP32", "Row major linear FP16 format"),
        _layer("CaskConvolution", "Channel major FP16 format where channel % 8 == 0"),
        _layer("CaskPooling", "Half"),
        _layer("Reformat", "Row major linear FP16 format", "Float"),
    ]
}
INT8_ENGINE = {"Layers": [_layer("CaskConvolution", "Thirty-two wide channel vectorized row major Int8 format")]}
FP32_ENGINE = {"Layers": [_layer("CaskConvolution", "Row major linear FP32"), _layer("CaskGemm", "Float")]}
DYNAMIC_ENGINE = {"Layers": [_layer("CaskConvolution", "N/A due to dynamic shapes")]}


def test_classify_inspector_formats():
    assert E.classify_format("Thirty-two wide channel vectorized row major Int8 format.") == "int8"
    assert E.classify_format("Row major linear FP16 format") == "fp16"
    assert E.classify_format("Half") == "fp16"
    assert E.classify_format("Float") == "fp32"
    assert E.classify_format("N/A due to dynamic shapes") is None


def test_layer_precisions_skip_reformats():
    assert E.layer_precisions(FP16_ENGINE) == Counter({"fp16": 2})
    assert E.layer_precisions(json.dumps(INT8_ENGINE)) == Counter({"int8": 1})
    assert E.layer_precisions(DYNAMIC_ENGINE) == Counter({None: 1})


def test_an_fp32_engine_for_fp16_or_int8_is_refused():
    with pytest.raises(VerificationError, match="asked for FP16 but the built engine has no FP16 layer"):
        E.check_engine_precision("fp16", E.layer_precisions(FP32_ENGINE), "mixnet_s.fp16.onnx")
    with pytest.raises(VerificationError, match="asked for INT8"):
        E.check_engine_precision("int8", E.layer_precisions(FP16_ENGINE), "mixnet_s.int8.onnx")
    assert E.check_engine_precision("fp16", E.layer_precisions(FP16_ENGINE), "x")["verdict"] == "fp16 layers present"
    assert E.check_engine_precision("int8", E.layer_precisions(INT8_ENGINE), "x")["layers_by_precision"] == {"int8": 1}
    assert E.check_engine_precision("fp16", E.layer_precisions(DYNAMIC_ENGINE), "x")["verdict"].startswith("unknown")


def test_network_without_the_precision_is_refused():
    E.check_network_dtypes("fp16", ["DataType.FLOAT", "DataType.HALF"], "a.fp16.onnx")
    E.check_network_dtypes("fp32", ["DataType.FLOAT"], "a.onnx")
    with pytest.raises(VerificationError, match="without HALF tensors"):
        E.check_network_dtypes("fp16", ["DataType.FLOAT"], "a.fp16.onnx")
    with pytest.raises(VerificationError, match="without INT8 tensors"):
        E.check_network_dtypes("int8", ["DataType.FLOAT", "DataType.HALF"], "a.int8.onnx")


# ---------------------------------------------------------------- the trtexec recipe

REQUIRED = (
    "--onnx=mixnet_s.fp16.onnx",
    "--minShapes=input:1x3x224x224",
    "--optShapes=input:8x3x224x224",
    "--maxShapes=input:32x3x224x224",
    "--saveEngine=mixnet_s.fp16.trtexec.engine",
    "--timingCacheFile=trtexec.timing.cache",
    "--warmUp=500",
    "--duration=10",
    "--percentile=90,95,99",
    "--useCudaGraph",
    "--noDataTransfers",
    "--exportTimes=mixnet_s.fp16.trtexec.b8.times.json",
    "--skipInference",
)


def test_recipe_names_files_shapes_and_benchmark_flags():
    text = trtexec_recipe([("mixnet_s.onnx", "fp32"), ("mixnet_s.fp16.onnx", "fp16")], E.EngineOptions())
    for needle in REQUIRED:
        assert needle in text, needle
    assert "--saveEngine=mixnet_s.fp32.trtexec.engine" in text
    assert "--memPoolSize" not in text and "--useDLACore" not in text  # only when asked


def test_recipe_dla_workspace_and_compat_flags():
    opts = E.EngineOptions(batch=BatchProfile(8, 8, 8), dla_core=1, workspace_mib=512)
    text = trtexec_recipe([("mixnet_s.onnx", "fp32"), ("mixnet_s.int8.onnx", "int8")], opts, timing_cache="/c/t.cache")
    assert "--useDLACore=1 \\\n    --allowGPUFallback" in text and "--memPoolSize=workspace:512" in text
    assert "--timingCacheFile=/c/t.cache" in text and "--hardwareCompatibilityLevel" not in text
    assert "--onnx=mixnet_s.onnx" not in text and "skipped for DLA" in text  # DLA: FP16/INT8 only
    text = trtexec_recipe([("m.onnx", "fp32")], E.EngineOptions(hardware_compat=True, version_compat=True))
    assert "--hardwareCompatibilityLevel=ampere+" in text and "--versionCompatible" in text
    with pytest.raises(InputError, match="DLA needs static shapes"):
        trtexec_recipe([("mixnet_s.int8.onnx", "int8")], E.EngineOptions(dla_core=0))


# A stand-in trtexec: prints the banner of NV_TENSORRT_VERSION as trtexec does first (samples/common/logging.h,
# defineTest: "<name> [TensorRT v" + NV_TENSORRT_VERSION + "]"), records its arguments, prints the device lines of
# samples/common/sampleDevice.cpp (setCudaDevice), writes the --saveEngine file, and refuses what the real one refuses:
# --stronglyTyped under --useDLACore on 10.x (it sets kFP16 there; NVIDIA/TensorRT#4228), --fp16 /
# --int8 on 11.x (removed), --stronglyTyped before 10.
STAND_IN = r"""#!/usr/bin/env bash
echo "&&&& RUNNING TensorRT.trtexec [TensorRT v{version}] [b26] # trtexec $*"
[ "${{1:-}}" = --help ] && exit 0
echo "$*" >> {log}
echo "[12/08/2026-01:00:00] [I] === Device Information ==="
echo "[12/08/2026-01:00:00] [I] Selected Device: Orin"
echo "[12/08/2026-01:00:00] [I] Compute Capability: 8.7"
major={major}
case " $* " in *" --useDLACore="*) dla=1 ;; *) dla=0 ;; esac
case " $* " in *" --stronglyTyped "*) strong=1 ;; *) strong=0 ;; esac
case " $* " in *" --fp16 "*|*" --int8 "*) weak=1 ;; *) weak=0 ;; esac
if [ $major -eq 10 ] && [ $dla = 1 ] && [ $strong = 1 ]; then
    echo "[E] Error[3]: IBuilder::buildSerializedNetwork: condition: !config.getFlag(BuilderFlag::kFP16)"; exit 1
fi
if [ $major -ge 11 ] && [ $weak = 1 ]; then echo "[E] Unknown option: --fp16/--int8"; exit 1; fi
if [ $major -lt 10 ] && [ $strong = 1 ]; then echo "[E] Unknown option: --stronglyTyped"; exit 1; fi
for a in "$@"; do case $a in --saveEngine=*) printf 'engine of %s' "$*" > "${{a#--saveEngine=}}" ;; esac; done
exit 0
"""
BANNERS = {"8.6.1": "8601", "10.3.0": "100300", "10.7.0": "100700", "11.4.0": "110400"}


def _run_recipe(tmp_path, version="10.3.0", opts=None, precisions=("fp32", "fp16"), banner=True):
    """Run the written script with the stand-in trtexec of ``version``; (process, recorded calls)."""
    names = {"fp32": "mixnet_s.onnx", "fp16": "mixnet_s.fp16.onnx", "int8": "mixnet_s.int8.onnx"}
    art = [SimpleNamespace(precision=p, path=str(tmp_path / names[p])) for p in precisions]
    for a in art:
        Path(a.path).write_bytes(f"onnx {a.precision}".encode())
    script = write_trtexec_script(tmp_path, art, opts or E.EngineOptions(workspace_mib=1024))
    fake, log = tmp_path / "fake_trtexec", tmp_path / "calls.txt"
    text = STAND_IN.format(version=BANNERS[version], major=version.split(".")[0], log=log)
    fake.write_text(text if banner else text.replace("[TensorRT v", "[no version "))
    fake.chmod(0o755)
    env = {**os.environ, "TRTEXEC": str(fake)}
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, cwd="/", timeout=60)
    calls = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
    return proc, calls


def _builds(calls):
    return [c for c in calls if any(w.startswith("--onnx=") for w in c)]


@pytest.mark.parametrize("version", ["10.3.0", "10.7.0"])
def test_recipe_on_tensorrt_10_is_strongly_typed(tmp_path, version):
    proc, calls = _run_recipe(tmp_path, version)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    builds, benches = _builds(calls), [c for c in calls if any(w.startswith("--loadEngine=") for w in c)]
    assert len(builds) == 2 and len(benches) == 6  # 2 precisions x batches 1, 8, 32
    for c in builds:  # precision from the ONNX, no weak-typing flags
        assert "--stronglyTyped" in c and "--fp16" not in c and "--int8" not in c
        assert "--memPoolSize=workspace:1024" in c
    assert "--onnx=mixnet_s.fp16.onnx" in builds[1] and f"(TensorRT {version})" in proc.stdout


@pytest.mark.parametrize("version", ["10.3.0", "10.7.0"])
def test_recipe_dla_on_tensorrt_10_is_weakly_typed_with_the_precision_flags(tmp_path, version):
    opts = E.EngineOptions(batch=BatchProfile(8, 8, 8), dla_core=0)
    proc, calls = _run_recipe(tmp_path, version, opts, precisions=("fp32", "fp16", "int8"))
    assert proc.returncode == 0, proc.stdout + proc.stderr  # the stand-in refuses --stronglyTyped under DLA
    fp16, int8 = _builds(calls)  # fp32 is skipped for DLA
    assert "--fp16" in fp16 and "--int8" in int8 and "--useDLACore=0" in fp16 and "--useDLACore=0" in int8
    assert "--fp16" in int8  # the INT8 file is Q/DQ over an FP16 graph: its float parts need FP16 (issue 13)
    assert not any("--stronglyTyped" in c for c in (fp16, int8))


@pytest.mark.parametrize("dla", [False, True])
def test_recipe_on_tensorrt_11_has_no_precision_flag(tmp_path, dla):
    opts = E.EngineOptions(batch=BatchProfile(8, 8, 8), dla_core=0 if dla else None)
    proc, calls = _run_recipe(tmp_path, "11.4.0", opts, precisions=("fp16", "int8"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for c in _builds(calls):
        assert not {"--fp16", "--int8", "--stronglyTyped"} & set(c), c


def test_recipe_on_tensorrt_8_6_uses_the_builder_flags(tmp_path):
    proc, calls = _run_recipe(tmp_path, "8.6.1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    fp32, fp16 = _builds(calls)
    assert not {"--stronglyTyped", "--fp16"} & set(fp32) and "--fp16" in fp16 and "--stronglyTyped" not in fp16


def test_recipe_without_a_trtexec_banner_stops_before_building(tmp_path):
    proc, calls = _run_recipe(tmp_path, banner=False)
    assert proc.returncode == 2 and calls == []
    assert "no '[TensorRT vNNNNNN]' banner" in proc.stderr


def test_recipe_without_trtexec_says_where_it_looked(tmp_path):
    """Issue 21 item 6: no trtexec is 'not found', naming where the script looked and how to set TRTEXEC (exit 3,
    the machine lacks a tool), not 'no banner'."""
    script = write_trtexec_script(tmp_path, [SimpleNamespace(precision="fp32", path=str(tmp_path / "m.onnx"))],
                                  E.EngineOptions())  # fmt: skip
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    env.pop("TRTEXEC", None)
    for given, looked in ((None, ["trtexec on PATH (/usr/bin:/bin)", "/usr/src/tensorrt/bin/trtexec"]),
                          (str(tmp_path / "nope" / "trtexec"), [f"TRTEXEC={tmp_path}/nope/trtexec"])):  # fmt: skip
        run_env = env if given is None else {**env, "TRTEXEC": given}
        proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=run_env, timeout=60)
        assert proc.returncode == EnvironmentFailure.exit_code == 3, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "trtexec not found: looked at" in lines[0], proc.stderr
        assert all(w in lines[0] for w in looked) and "TRTEXEC=/path/to/trtexec bash" in lines[0]
        assert "banner" not in proc.stderr and not list(tmp_path.glob("*.engine*"))


def test_recipe_writes_the_manifest_parity_and_bench_check(tmp_path, capsys):
    """Issue 21 item 7: after a successful build the script writes the manifest mixnet-export writes (TensorRT
    version from the banner, GPU and compute capability from trtexec's device lines, both SHA-256s, the profile);
    the manifest check of parity / bench accepts it on that system and refuses another, and the commands get past
    'has no manifest' to where TensorRT itself is needed."""
    from mixnet_deploy.environment import read_l4t_release

    proc, _ = _run_recipe(tmp_path, "10.3.0", opts=E.EngineOptions(batch=BatchProfile(1, 4, 8), workspace_mib=1024))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for onnx, precision in (("mixnet_s.onnx", "fp32"), ("mixnet_s.fp16.onnx", "fp16")):
        engine = tmp_path / f"mixnet_s.{precision}.trtexec.engine"
        manifest = E.load_manifest(engine)
        assert manifest["schema"] == E.MANIFEST_SCHEMA and manifest["precision"] == precision
        assert manifest["onnx"] == onnx and manifest["onnx_sha256"] == E.sha256_file(tmp_path / onnx)
        assert manifest["engine_sha256"] == E.sha256_file(engine) and manifest["strongly_typed"] is True
        assert manifest["profile"]["shapes"]["input"]["max"] == [8, 3, 224, 224] and manifest["workspace_mib"] == 1024
        assert manifest["system"] == {"tensorrt": "10.3.0", "cuda_runtime": None, "cuda_driver": None, "gpu": "Orin",
                                      "compute_capability": "8.7", "l4t": read_l4t_release()}  # fmt: skip
        python_built = E.build_manifest(engine_sha256="", onnx_path=onnx, onnx_sha256="", precision=precision,
                                        opts=E.EngineOptions(), system={})  # fmt: skip
        assert set(manifest) == set(python_built) and set(manifest["system"]) == set(python_built["system"])
        here = {"tensorrt": "10.3.0.30", "gpu": "Orin", "compute_capability": "8.7", "l4t": read_l4t_release(),
                "cuda_runtime": "12.6", "cuda_driver": "12.6"}  # fmt: skip
        assert E.verify_engine_file(engine, system=here) == manifest  # Python's tensorrt may say 10.3.0.30
        with pytest.raises(InputError, match="built for another system: .*GPU 'NVIDIA A100'"):
            E.verify_engine_file(engine, system={**here, "gpu": "NVIDIA A100", "compute_capability": "8.0"})
        with pytest.raises(InputError, match="TensorRT 10.4.0 here, engine built with 10.3.0"):
            E.verify_engine_file(engine, system={**here, "tensorrt": "10.4.0"})
    assert not list(tmp_path.glob("*.tmp"))
    if HAVE_TRT:  # the engine is the stand-in's text: TensorRT would refuse to load it
        return
    from mixnet_deploy.cli import bench_main, parity_main

    engine = str(tmp_path / "mixnet_s.fp16.trtexec.engine")
    for main, args in ((parity_main, [engine, "--quiet", "--random", "2"]), (bench_main, [engine, "--quiet"])):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "has no manifest" not in err and "cannot run this engine here" in err, err


ODD = 'a $HOME `touch PWNED` b\\c "q" @GPU@'  # what a shell or a template would expand in a name or a value


def _odd_stand_in(folder, log):
    """The stand-in trtexec of 10.3, naming a GPU with the characters a shell would read."""
    fake = folder / "fake_trtexec"
    gpu_line = shlex.quote(f"[12/08/2026-01:00:00] [I] Selected Device: Orin {ODD}")
    fake.write_text(STAND_IN.format(version="100300", major=10, log=log).replace(
        'echo "[12/08/2026-01:00:00] [I] Selected Device: Orin"', f"echo {gpu_line}"))  # fmt: skip
    fake.chmod(0o755)
    return fake


def test_recipe_in_a_folder_a_shell_would_expand(tmp_path):
    """Issue 21 (review): the manifest went through an unquoted heredoc, and the echo lines named files inside double
    quotes, so '$', a backtick or a backslash in a name was expanded (or run). An export with --trtexec into a folder
    whose path holds them, with a timing cache there and a GPU name from trtexec's log that holds them and quotes: the
    script runs, trtexec gets the paths as they are, the manifest is JSON with exactly these values, nothing ran."""
    from mixnet_deploy.cli import export_main

    out, cache = tmp_path / f"out {ODD}", tmp_path / f"cache {ODD}" / "t.cache"
    cache.parent.mkdir()
    args = ["--out", str(out), "--img-size", "64", "--engine", "skip", "--trtexec", "--timing-cache", str(cache)]
    assert export_main(args) == 0
    log = tmp_path / "calls.txt"
    env = {**os.environ, "TRTEXEC": str(_odd_stand_in(tmp_path, log))}
    proc = subprocess.run(["bash", str(out / "mixnet_s.trtexec.sh")], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not list(tmp_path.rglob("PWNED"))
    assert f"--timingCacheFile={cache}" in log.read_text().splitlines()[0]
    manifest = E.load_manifest(out / "mixnet_s.fp32.trtexec.engine")
    assert manifest["system"]["gpu"] == f"Orin {ODD}" and manifest["onnx"] == "mixnet_s.onnx"
    assert manifest["engine_sha256"] == E.sha256_file(out / "mixnet_s.fp32.trtexec.engine")


def test_recipe_manifest_keeps_names_as_they_are(tmp_path):
    """The manifest text is pasted literally: an ONNX name with '$', a backtick, a backslash, quotes and an '@VAR@'
    mark comes out of the script as it went in (the unquoted heredoc turned '\\\\' into '\\' and ran the backtick)."""
    name = f"m {ODD}.onnx"
    (tmp_path / name).write_bytes(b"onnx fp32")
    script = write_trtexec_script(tmp_path, [SimpleNamespace(precision="fp32", path=str(tmp_path / name))],
                                  E.EngineOptions())  # fmt: skip
    env = {**os.environ, "TRTEXEC": str(_odd_stand_in(tmp_path, tmp_path / "calls.txt"))}
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, cwd="/", timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    engine = tmp_path / f"m {ODD}.fp32.trtexec.engine"
    manifest = json.loads((tmp_path / f"m {ODD}.fp32.trtexec.engine.json").read_text())
    assert manifest["onnx"] == name and manifest["system"]["gpu"] == f"Orin {ODD}"
    assert manifest["onnx_sha256"] == E.sha256_file(tmp_path / name)
    assert manifest["engine_sha256"] == E.sha256_file(engine) and manifest["strongly_typed"] is True
    assert f"== build fp32: {name} (log: m {ODD}.fp32.trtexec.build.log)" in proc.stdout
    assert not list(tmp_path.rglob("PWNED"))


def test_the_stand_in_refuses_what_trtexec_10_refuses(tmp_path):
    """The stand-in is strict: the old recipe (always --stronglyTyped) fails its DLA build on 10.x."""
    log = tmp_path / "log"
    fake = tmp_path / "trtexec"
    fake.write_text(STAND_IN.format(version="100300", major=10, log=log))
    fake.chmod(0o755)
    args = [str(fake), "--onnx=m.fp16.onnx", "--stronglyTyped", "--useDLACore=0", "--allowGPUFallback"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "kFP16" in proc.stdout


# ---------------------------------------------------------------- the export stage


def _report(tmp_path, precisions=("fp32", "fp16")):
    names = {"fp32": "mixnet_s.onnx", "fp16": "mixnet_s.fp16.onnx", "int8": "mixnet_s.int8.onnx"}
    return SimpleNamespace(
        artifacts=[SimpleNamespace(precision=p, path=str(tmp_path / names[p])) for p in precisions],
        notes=[],
        engines=[],
        timings_s={},
    )


def test_stage_writes_recipe_for_every_artifact_of_the_run(tmp_path):
    from mixnet_deploy.pipeline import ExportConfig, run_engine_stage

    report = _report(tmp_path, ("fp32", "fp16", "int8"))
    run_engine_stage(ExportConfig(out_dir=tmp_path, engine="skip", trtexec=True), report.artifacts)
    text = (tmp_path / "mixnet_s.trtexec.sh").read_text()
    for name in ("mixnet_s.onnx", "mixnet_s.fp16.onnx", "mixnet_s.int8.onnx"):
        assert f"--onnx={name}" in text
    assert os.access(tmp_path / "mixnet_s.trtexec.sh", os.X_OK)
    assert not list(tmp_path.glob(".*tmp-*"))  # atomic write, no stray temp file


@no_trt
def test_stage_auto_without_tensorrt_skips_with_a_prominent_note(tmp_path):
    results, notes = engine_stage(_report(tmp_path).artifacts, E.EngineOptions(), "auto")
    assert results == [] and len(notes) == 1
    assert notes[0].startswith("WARNING: no TensorRT engine built") and "pip install 'mixnet-deploy[gpu]'" in notes[0]
    assert engine_stage(_report(tmp_path).artifacts, E.EngineOptions(), "skip") == ([], [])
    with pytest.raises(EnvironmentFailure, match=r"\(--engine require\): TensorRT is not installed"):
        engine_stage(_report(tmp_path).artifacts, E.EngineOptions(), "require")


def test_engine_runner_refuses_unknown_options_and_unmanifested_engines(tmp_path):
    with pytest.raises(InputError, match="engine runner options"):
        engine_runner(tmp_path / "x.engine", fp16=True)
    (tmp_path / "x.engine").write_bytes(b"garbage")
    with pytest.raises(InputError, match="has no manifest"):
        engine_runner(tmp_path / "x.engine")


# ---------------------------------------------------------------- the CLI


def test_cli_trtexec_recipe(tmp_path):
    """The whole export at 64x64 with --trtexec (and --fp16 where this checkout has it): the recipe names
    every precision ONNX of the run and the profile shapes."""
    from mixnet_deploy.cli import export_main

    fp16 = "--fp16" in export_flags().values()
    args = ["--out", str(tmp_path), "--img-size", "64", "--engine", "skip", "--trtexec", "--batch", "1:8:32"]
    assert export_main(args + (["--fp16"] if fp16 else [])) == 0
    text = (tmp_path / "mixnet_s.trtexec.sh").read_text()
    if fp16:
        assert "--onnx=mixnet_s.fp16.onnx" in text and "--saveEngine=mixnet_s.fp16.trtexec.engine" in text
    for needle in ("--onnx=mixnet_s.onnx", "--minShapes=input:1x3x64x64", "--optShapes=input:8x3x64x64",
                   "--maxShapes=input:32x3x64x64", "--saveEngine=mixnet_s.fp32.trtexec.engine"):  # fmt: skip
        assert needle in text
    report = read_report(tmp_path)
    assert any("trtexec recipe" in n for n in report["notes"]) and report["engines"] == []
