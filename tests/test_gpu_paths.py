"""The GPU code paths against stand-ins of the real APIs (issue 12): what would crash or mislead on a GPU machine.

Every stand-in reproduces one documented behaviour of the real library (cuda-python's ``(err, value)`` tuples and
its ``cudaError_t`` enum, ONNX Runtime's silent CPU fallback, trtexec's banner); the code under test is the real one.
"""

from __future__ import annotations

import enum
import sys
import types

import pytest

from mixnet_deploy import engine as E


class CudaError(enum.IntEnum):  # the values of cuda-python's cudaError_t
    cudaSuccess = 0
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100


class DriverTooOld:
    """cudart of cuda-python 13 on a CUDA 12 driver: every call fails with cudaErrorInsufficientDriver."""

    def cudaGetDeviceCount(self):
        return (CudaError.cudaErrorInsufficientDriver, 0)


@pytest.fixture
def fake_trt_modules(monkeypatch):
    """``tensorrt`` and ``polygraphy`` importable (empty modules), so gpu_stack_status reaches the CUDA check."""
    for name in ("tensorrt", "polygraphy"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))


def test_insufficient_driver_under_cuda_python_13_says_so(fake_trt_modules, monkeypatch):
    monkeypatch.setattr(E, "cuda_bindings_version", lambda: "13.0.1")
    ok, why = E.gpu_stack_status(cudart=DriverTooOld())
    assert not ok
    assert "cudaErrorInsufficientDriver" in why and "driver too old for cuda-python 13" in why
    assert "cuda-python>=12,<13" in why


def test_insufficient_driver_under_cuda_python_12_does_not_blame_13(fake_trt_modules, monkeypatch):
    monkeypatch.setattr(E, "cuda_bindings_version", lambda: "12.6.2")
    ok, why = E.gpu_stack_status(cudart=DriverTooOld())
    assert not ok and "cudaErrorInsufficientDriver" in why and "cuda-python 13" not in why


def test_no_device_is_reported_by_its_name(fake_trt_modules):
    class NoDevice:
        def cudaGetDeviceCount(self):
            return (CudaError.cudaErrorNoDevice, 0)

    ok, why = E.gpu_stack_status(cudart=NoDevice())
    assert not ok and why == "no usable CUDA device (CUDA error cudaErrorNoDevice)"


def test_a_device_found_passes(fake_trt_modules):
    class OneDevice:
        def cudaGetDeviceCount(self):
            return (CudaError.cudaSuccess, 1)

    assert E.gpu_stack_status(cudart=OneDevice()) == (True, "")
