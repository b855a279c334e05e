"""The GPU stack, probed: TensorRT and cuda-python imported lazily (a one-line InputError naming the install when
absent), cuda-python's ``(err, value)`` calls checked, whether a usable CUDA device is there, and what the running
system is (TensorRT, CUDA runtime and driver, GPU, compute capability, L4T). Nothing here builds or runs an engine:
``engine_build.py`` builds, ``trt_runner.py`` runs; both, and ``config.py``'s ``--engine require`` check, probe here.

TensorRT ``samples/python/common_runtime.py``: cuda-python ``cudart`` calls return ``(err, value)``.
"""

from __future__ import annotations

from .environment import read_l4t_release
from .errors import EnvironmentFailure, InputError

INSTALL_HINT = (
    "install it with `pip install 'mixnet-deploy[gpu]'` on a machine with an NVIDIA GPU and driver "
    "(Jetson: JetPack's python3-libnvinfer), or use --engine skip / --trtexec to build elsewhere"
)


def import_tensorrt():
    try:
        import tensorrt
    except ImportError:
        raise InputError(f"TensorRT is not installed (Python module `tensorrt`): {INSTALL_HINT}") from None
    return tensorrt


def import_cudart():
    """cuda-python's runtime bindings: ``cuda.bindings.runtime`` (>= 12.8) or the older ``cuda.cudart``."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            raise InputError(f"cuda-python is not installed (module `cuda`): {INSTALL_HINT}") from None
    return cudart


CUDA_ERROR_INSUFFICIENT_DRIVER = 35  # cudaError_t.cudaErrorInsufficientDriver


def cuda_bindings_version() -> str | None:
    """The installed cuda-python bindings' version (``cuda-bindings``, or ``cuda-python`` before 12.6), or None."""
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("cuda-bindings", "cuda-python"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return None


def cuda_error_text(err, bindings_version: str | None = None) -> str:
    """``CUDA error <name>``; for cudaErrorInsufficientDriver under cuda-python 13 the reason and the fix too."""
    text = f"CUDA error {getattr(err, 'name', err)}"
    if getattr(err, "value", err) == CUDA_ERROR_INSUFFICIENT_DRIVER:
        bindings_version = bindings_version or cuda_bindings_version() or "?"
        if bindings_version.split(".")[0].isdigit() and int(bindings_version.split(".")[0]) >= 13:
            return (
                f"{text}: driver too old for cuda-python 13 (cuda-python {bindings_version} needs a CUDA 13 driver, "
                "R580 or newer); expected cuda-python>=12,<13 with a CUDA 12 driver (JetPack 6, most servers)"
            )
        return f"{text}: the NVIDIA driver is older than the CUDA runtime of cuda-python {bindings_version}"
    return text


def cuda_call(result):
    """cuda-python returns ``(err, *values)``; raise on an error, return the value(s)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if getattr(err, "value", err) != 0:  # cudaError_t.cudaSuccess == 0
        raise RuntimeError(cuda_error_text(err))
    return values[0] if len(values) == 1 else tuple(values) if values else None


def gpu_stack_status(cudart=None) -> tuple[bool, str]:
    """(True, "") when TensorRT, Polygraphy, cuda-python and a CUDA device are all present, else (False, why).

    ``cudart``: cuda-python's runtime module (default: imported here); tests pass a stand-in.
    """
    for module, what in (("tensorrt", "TensorRT"), ("polygraphy", "Polygraphy"), ("cuda", "cuda-python")):
        if cudart is not None and module == "cuda":
            continue
        try:
            __import__(module)
        except ImportError:
            return False, f"{what} is not installed (Python module `{module}`)"
    try:
        count = cuda_call((cudart or import_cudart()).cudaGetDeviceCount())
    except Exception as exc:  # no driver, no device: cudaErrorNoDevice / InsufficientDriver
        return False, f"no usable CUDA device ({exc})"
    if not count:
        return False, "no CUDA device found"
    return True, ""


def require_gpu_stack() -> None:
    """``--engine require`` on a machine without the GPU stack: an EnvironmentFailure (exit 3), not bad input."""
    ok, why = gpu_stack_status()
    if not ok:
        raise EnvironmentFailure(
            "build TensorRT engines", "(--engine require)", f"{why}; they need TensorRT and a CUDA GPU: {INSTALL_HINT}"
        )


def _version_text(v: int) -> str:
    """CUDA's integer versions: 12040 -> "12.4"."""
    return f"{v // 1000}.{(v % 1000) // 10}"


def running_system(device: int = 0) -> dict:
    """TensorRT, CUDA runtime and driver versions, GPU name and compute capability, L4T release."""
    trt = import_tensorrt()
    cudart = import_cudart()
    props = cuda_call(cudart.cudaGetDeviceProperties(device))
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return {
        "tensorrt": trt.__version__,
        "cuda_runtime": _version_text(cuda_call(cudart.cudaRuntimeGetVersion())),
        "cuda_driver": _version_text(cuda_call(cudart.cudaDriverGetVersion())),
        "gpu": name.strip("\x00 "),
        "compute_capability": f"{props.major}.{props.minor}",
        "l4t": read_l4t_release(),
    }
