"""The TensorRT API the code uses exists in the real TensorRT Python bindings of every version we claim (issue 12).

The bindings wheels on PyPI (``tensorrt-cu12-bindings``, ~1.3 MB each) are NVIDIA's real ``tensorrt`` extension
module; with placeholder ``libnvinfer*.so.N`` built here they import on a CPU, so their classes, enums,
properties and signatures can be read (nothing can be called). tests/trt_surface.py scans mixnet_deploy for
the attribute chains used on TensorRT and resolves each one in each version. CI (.ci/run) sets
MIXNET_REQUIRE_TRT_API=1: there a missing wheel or compiler fails the test instead of skipping it.
"""

from __future__ import annotations

import os

import pytest
from trt_surface import ROLES, VERSIONS, Unavailable, check, prepare_bindings, scan, scan_source, wheel_for

REQUIRED = os.environ.get("MIXNET_REQUIRE_TRT_API") == "1"


@pytest.fixture(scope="module", params=list(VERSIONS))
def bindings(request, tmp_path_factory):
    """(module name, environment) under which the real bindings of one TensorRT version import."""
    try:
        return prepare_bindings(wheel_for(request.param), tmp_path_factory.mktemp(f"trt{request.param}"))
    except Unavailable as exc:
        if REQUIRED:
            pytest.fail(f"TensorRT {request.param} bindings unavailable, and CI requires the check: {exc}")
        pytest.skip(f"TensorRT {request.param} bindings unavailable: {exc}")


def test_the_scan_finds_the_engine_code():
    """A scan that finds nothing would pass everything: it must see the TensorRT objects the code works with."""
    chains, derived = scan()
    roots = {c.root for c in chains}
    assert len(chains) >= 30, len(chains)
    assert {"module", "builder", "network", "engine", "context", "inspector"} <= roots, roots
    assert roots & {"cfg", "config"} and "cache" in derived  # cache = cfg.get_timing_cache(): a derived type
    assert not any(c.root in ROLES and c.file.endswith(("bench.py", "parity.py", "pipeline.py")) for c in chains)


def test_the_code_uses_only_what_each_tensorrt_version_has(bindings):
    module, env = bindings
    chains, derived = scan()
    version, lacking = check(chains, derived, module, env)
    assert version in VERSIONS
    assert lacking == [], "\n".join(lacking)


WRONG = '''
import tensorrt as trt

def build(builder, network, engine, context):
    cfg = builder.create_builder_config()
    cfg.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    cfg.set_flag(trt.BuilderFlag.FP16)
    cfg.set_flag(trt.BuilderFlag.INT8)  # tensorrt: <11
    engine.get_binding_index("input")
    context.execute_async_v2([], 0)
    dtype = network.get_layer(0).get_output(0).dtyp
    cache = cfg.get_timing_cache()
    cache.serialise()
'''


def test_a_wrong_attribute_fails_the_check(bindings):
    """APIs removed in 10.0 (bindings, execute_async_v2), in 11.0 (BuilderFlag.FP16), typos found through types."""
    module, env = bindings
    chains, derived = scan_source(WRONG, "wrong.py")
    version, lacking = check(chains, derived, module, env)
    missing = {line.rsplit(" has no ", 1)[1] for line in lacking}
    expected = {"ICudaEngine.get_binding_index", "IExecutionContext.execute_async_v2", "ITensor.dtyp"}
    expected.add("ITimingCache.serialise")
    if version.startswith("11."):
        expected.add("BuilderFlag.FP16")  # INT8 is gone too, but its line is marked for TensorRT < 11
    assert missing == expected, lacking
