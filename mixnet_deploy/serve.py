"""``mixnet-serve``: exported models served by NVIDIA's Triton Inference Server, through PyTriton (``[serve]``).

Data flow: :class:`ServeConfig` -> :func:`check_config` (ports free, files named) -> :func:`open_models` (each
file on a runner from ``runtimes.make_runner`` through ``predict.open_model``, one per ``--instances``, so any
runtime of ``runtimes.RUNTIMES`` serves with no code here; its Triton model from ``triton.model_config``, the
function ``mixnet-export --triton-repo`` writes ``config.pbtxt`` from: the same model name, tensors, dims,
batch size and ``mixnet.*`` parameters) -> :func:`serve` (PyTriton binds one infer function per instance with
dynamic batching, starts ``tritonserver`` 2.51 and its Python backend, waits for every model's
``/v2/models/<name>/ready``, then serves until SIGTERM or SIGINT).

- Outputs: ``logits`` from the runner; ``scores`` / ``classes`` (a ``--top-k`` file) are numpy's top-k of those
  logits (``graph_io.top_k_numpy``, the rule the export verified the graph's own against), so a runner that
  returns logits only (the runner contract) serves them too.
- ``--encoded``: beside each model ``<name>_encoded`` takes ``encoded``, the bytes of a JPEG/PNG/WebP file
  (BYTES ``[batch, 1]``); the server decodes, resizes and crops them with the model's own preprocessing from its
  metadata (``data.decode``, what ``mixnet-predict`` runs locally), one request per execution (no dynamic
  batcher: :func:`bind` says why), so a file that does not decode fails its own request only.
- Stopping: SIGTERM or SIGINT; Triton then refuses new requests, finishes those in flight (at most
  :data:`SHUTDOWN_TIMEOUT_S`), and the command exits 0. ``reaper.py`` ends every process the server started, even
  after a ``kill -9`` of ``mixnet-serve``.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import sysconfig
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .errors import EnvironmentFailure, InputError
from .option_fields import MODEL, RUNTIME, TRITON, flag_of, option, port_number, positional, positive_int

log = logging.getLogger("mixnet_deploy")

SHUTDOWN_TIMEOUT_S = 30  # Triton's --exit-timeout-secs: requests in flight at SIGTERM get this long to finish
INSTALL_HINT = "pip install 'mixnet-deploy[serve]' (nvidia-pytriton; it pins numpy<2: use a venv of its own)"


def serve_runtimes() -> tuple[str, ...]:
    """``--runtime`` as mixnet-parity and mixnet-bench take it for an exported file: auto or a runtime."""
    from .parity import candidate_runtimes

    return candidate_runtimes()


def _default_queue_delay() -> int:
    from .triton import QUEUE_DELAY_US

    return QUEUE_DELAY_US


@dataclass(frozen=True)
class ServeConfig:
    models: tuple[str, ...] = positional(
        "an .onnx, .engine or .plan file written by mixnet-export; each is served as the model "
        "mixnet-export --triton-repo names (mixnet_<variant>), with the same tensors",
        "MODEL",
        group=MODEL,
    )
    host: str = option("127.0.0.1", "address of the HTTP, gRPC and metrics endpoints (default {default})", group=TRITON)
    http_port: int = option(8000, "HTTP/REST port (default {default})", type=port_number, group=TRITON)
    grpc_port: int = option(8001, "gRPC port (default {default})", type=port_number, group=TRITON)
    metrics_port: int = option(8002, "Prometheus metrics port (default {default})", type=port_number, group=TRITON)
    max_batch: int = option(8, "largest batch a model runs, requests batched together (default {default})",
                            type=positive_int, metavar="N", group=TRITON)  # fmt: skip
    max_queue_delay_us: int = option(
        _default_queue_delay(), "dynamic batching: the longest a request waits for others, in microseconds "
        "(default {default})", type=int, metavar="US", group=TRITON)  # fmt: skip
    instances: int = option(1, "model instances, each with its own runner (default {default})", type=positive_int,
                            metavar="N", group=TRITON)  # fmt: skip
    encoded: bool = option(
        False, "also serve <name>_encoded per model: input 'encoded', the bytes of a JPEG/PNG/WebP file, decoded, "
        "resized and cropped by the server with the model's own preprocessing", group=TRITON)  # fmt: skip
    runtime: str = option("auto", "runtime (default {default}: by file type)", choices=serve_runtimes, group=RUNTIME)
    cuda_graph: bool = option(False, "TensorRT engines: replay a CUDA graph per batch size", group=RUNTIME)


# ---------------------------------------------------------------- checks before any work


def check_config(cfg: ServeConfig) -> None:
    """Model files that exist, distinct free ports, a batcher delay >= 0: InputError before anything loads."""
    from .contract import MODEL_SUFFIXES
    from .errors import file_problem

    for path in cfg.models:
        if Path(path).suffix.lower() not in MODEL_SUFFIXES:
            raise InputError(f"model {path!r}: expected an .onnx, .engine or .plan file written by mixnet-export")
        if problem := file_problem(path):
            raise InputError(f"model {path!r} {problem}: expected an .onnx, .engine or .plan file")
    if cfg.max_queue_delay_us < 0:
        raise InputError("expected 0 or more microseconds", field="max_queue_delay_us", value=cfg.max_queue_delay_us)
    ports = {}
    for name in ("http_port", "grpc_port", "metrics_port"):
        port = getattr(cfg, name)
        if port in ports:
            raise InputError(f"expected a port of its own (it is also {ports[port]})", field=name, value=port)
        ports[port] = flag_of(name, ServeConfig)
        check_port_free(cfg.host, port, name)


def check_port_free(host: str, port: int, name: str) -> None:
    """Bind ``host:port`` as the server would (SO_REUSEADDR, so a port in TIME_WAIT counts as free)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise InputError(f"expected an address of this machine ({exc.strerror})", field="host", value=host) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            verb = "is in use" if exc.errno == errno.EADDRINUSE else "cannot be bound"
            problem = f"{verb} on {host} ({exc.strerror})"
            raise InputError("expected a free port", field=name, value=port, problem=problem) from None


def import_pytriton():
    """PyTriton's Triton, or InputError saying how to install it."""
    try:
        from pytriton.triton import Triton
    except ImportError as exc:
        raise InputError(f"mixnet-serve needs nvidia-pytriton ({exc}): expected {INSTALL_HINT}") from None
    return Triton


# ---------------------------------------------------------------- the served models


@dataclass
class Served:
    """One file: its Triton model (triton.TritonModel), one runner per instance, its preprocessing."""

    path: str
    model: object  # triton.TritonModel
    runners: list
    pre: object  # data.Preprocess

    def close(self) -> None:
        for runner in self.runners:
            runner.close()


def onnx_of(path: Path) -> Path:
    """The ONNX file whose I/O and metadata a model file has: itself, or the one an engine's manifest names."""
    from .contract import ONNX_SUFFIX
    from .engine_build import load_manifest, source_onnx

    if path.suffix.lower() == ONNX_SUFFIX:
        return path
    if (onnx := source_onnx(path, load_manifest(path))) is None:
        raise InputError(f"{path}: expected the ONNX file its manifest names beside it")
    return onnx


def open_models(cfg: ServeConfig) -> list[Served]:
    """Every file on its runners, with its Triton model; InputError for a file that does not load, and for two
    files that would be served under one name."""
    served: list[Served] = []
    try:
        for path in cfg.models:
            served.append(open_one(cfg, path))
            names = [s.model.name for s in served]
            if names.count(names[-1]) > 1:
                first = served[names.index(names[-1])].path
                raise InputError(f"{path} and {first} would both be served as {names[-1]!r} (mixnet-export "
                                 "--triton-repo's name): expected files of different variants")  # fmt: skip
    except BaseException:
        for s in served:
            s.close()
        raise
    return served


def open_one(cfg: ServeConfig, path: str) -> Served:
    from .batching import BatchProfile
    from .contract import ENGINE_SUFFIXES, META_CLASS_NAMES, META_VARIANT
    from .predict import open_model
    from .triton import Source, TritonOptions, model_config

    engine = Path(path).suffix.lower() in ENGINE_SUFFIXES
    opts = {"cuda_graph": True} if cfg.cuda_graph and engine else {}
    runners = []
    try:
        for _ in range(cfg.instances):
            runner, pre, _classes = open_model(path, cfg.runtime, cfg.max_batch, **opts)
            runners.append(runner)
        meta = runners[0].metadata
        if META_VARIANT not in meta:
            raise InputError(f"{path}: no {META_VARIANT} metadata: expected a model written by mixnet-export")
        profile = BatchProfile(1, cfg.max_batch, cfg.max_batch)
        source = Source(runners[0].precision or "fp32", Path(path), onnx_of(Path(path)), engine)
        triton_opts = TritonOptions(repo=Path("."), kind="cpu", batch=profile, instance_count=cfg.instances)
        model = model_config(source, triton_opts, meta[META_VARIANT])
        if META_CLASS_NAMES in meta:  # --triton-repo writes them as labels.txt; PyTriton has no label file
            model = replace(model, parameters={**model.parameters, META_CLASS_NAMES: meta[META_CLASS_NAMES]})
        model = replace(model, queue_delay_us=cfg.max_queue_delay_us)
    except BaseException:
        for runner in runners:
            runner.close()
        raise
    return Served(path, model, runners, pre)


# ---------------------------------------------------------------- inference


def numpy_dtype(spec) -> np.dtype:
    from .triton import TRITON_TO_NUMPY

    return np.dtype(TRITON_TO_NUMPY[spec.data_type])


def outputs_of(model, logits: np.ndarray) -> dict[str, np.ndarray]:
    """The model's outputs from its logits: ``logits``, and a ``--top-k`` file's ``scores`` / ``classes``."""
    from .contract import CLASSES_NAME, OUTPUT_NAME, SCORES_NAME
    from .graph_io import top_k_numpy

    found = {OUTPUT_NAME: logits.astype(np.float32, copy=False)}
    specs = {t.name: t for t in model.outputs}
    if SCORES_NAME in specs or CLASSES_NAME in specs:
        k = (specs.get(SCORES_NAME) or specs[CLASSES_NAME]).dims[0]
        scores, classes = top_k_numpy(logits, k)
        found |= {SCORES_NAME: scores, CLASSES_NAME: classes}
    return {name: found[name].astype(numpy_dtype(spec), copy=False) for name, spec in specs.items()}


def decoded_pixels(blobs: np.ndarray, pre) -> np.ndarray:
    """BYTES ``[N, 1]`` of image files (one request's) -> uint8 crops ``[N, H, W, 3]`` (data.decode:
    mixnet-predict's path); InputError naming the first file of the request that does not decode."""
    from .data import decode

    crops = []
    for i, blob in enumerate(blobs.reshape(len(blobs), -1)[:, 0]):
        crop, why = decode(bytes(blob), pre)
        if crop is None:
            raise InputError(f"encoded image {i} of the request ({len(bytes(blob)):,} bytes) cannot be decoded "
                             f"({why}): expected the bytes of a JPEG, PNG or WebP file")  # fmt: skip
        crops.append(crop)
    return np.stack(crops)


def infer_functions(served: Served, encoded: bool) -> list:
    """One PyTriton infer function per runner (instance); ``encoded``: of the file-bytes model."""
    from pytriton.decorators import batch

    from .runner_contract import model_input

    def make(runner):
        if encoded:

            @batch
            def infer(**inputs):
                (blobs,) = inputs.values()
                pixels = decoded_pixels(blobs, served.pre)
                return outputs_of(served.model, runner.run(model_input(runner, pixels, served.pre.normalize(pixels))))
        else:

            @batch
            def infer(**inputs):
                (x,) = inputs.values()
                return outputs_of(served.model, runner.run(x))

        return infer

    return [make(runner) for runner in served.runners]


# ---------------------------------------------------------------- the server


def tensors(specs) -> list:
    from pytriton.model_config import Tensor

    return [Tensor(name=t.name, dtype=numpy_dtype(t).type, shape=t.dims) for t in specs]


def bind(triton, served: Served, encoded: bool) -> str:
    """Bind one model (or its ``_encoded`` twin) to PyTriton; its name.

    ``_encoded`` has no dynamic batcher: PyTriton 0.7 answers an execution, not a request (its infer function
    returns one dict of arrays per request, or raises, and the exception becomes one TritonModelException for
    every request of the execution), so in a batch of several clients' requests one undecodable file would fail
    them all. Each request runs alone; the model without ``_encoded`` keeps the batcher."""
    from pytriton.model_config import DynamicBatcher, ModelConfig

    from .contract import ENCODED_NAME
    from .triton import TensorSpec, encoded_model_name

    m = served.model
    name = encoded_model_name(m.name) if encoded else m.name
    inputs = (TensorSpec(ENCODED_NAME, "TYPE_STRING", (1,)),) if encoded else m.inputs
    batcher = None if encoded else DynamicBatcher(max_queue_delay_microseconds=m.queue_delay_us)
    config = ModelConfig(max_batch_size=m.max_batch_size, batcher=batcher)
    triton.bind(model_name=name, infer_func=infer_functions(served, encoded), inputs=tensors(inputs),
                outputs=tensors(m.outputs), config=config, strict=True)  # fmt: skip
    add_parameters(triton, name, m.parameters)
    return name


def add_parameters(triton, name: str, parameters: dict[str, str]) -> None:
    """The ``mixnet.*`` parameters --triton-repo writes into config.pbtxt (preprocessing, class names), for
    clients (``mixnet-predict --url``). PyTriton 0.7's ModelConfig has no field for them: they go into the
    model's TritonModelConfig, which PyTriton sends to Triton when ``run`` loads the models (the server starts
    only then: :func:`serve`); tests/test_serve.py reads them back from the server."""
    model = next(m for m in triton._model_manager.models if m.model_name == name)
    model._get_triton_model_config().backend_parameters.update(parameters)


def loader_environment() -> None:
    """The Python backend's stub links libpython: put this interpreter's LIBDIR on the loader path."""
    libdir = sysconfig.get_config_var("LIBDIR")
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    if libdir and libdir not in paths:
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([*paths, libdir])


def one_line_refusal(record: logging.LogRecord) -> bool:
    """PyTriton logs the traceback of every failed request: a bad file of --encoded is one line (without
    --verbose); the client gets the whole message either way."""
    marker = f"{InputError.__module__}.{InputError.__name__}: "
    text = record.getMessage()
    if marker in text:
        record.msg, record.args = "request refused: " + text.rsplit(marker, 1)[1].strip(), ()
    return True


def triton_config(cfg: ServeConfig, verbose: bool):
    """The endpoints and shutdown time; tritonserver's log (PyTriton copies it to stdout) and PyTriton's own
    only with --verbose."""
    from pytriton.triton import TritonConfig

    if not verbose:
        logging.getLogger("pytriton").setLevel(logging.WARNING)
        logging.getLogger("pytriton.proxy.inference").addFilter(one_line_refusal)
    return TritonConfig(http_address=cfg.host, http_port=cfg.http_port, grpc_address=cfg.host,
                        grpc_port=cfg.grpc_port, metrics_address=cfg.host, metrics_port=cfg.metrics_port,
                        allow_metrics=True, exit_timeout_secs=SHUTDOWN_TIMEOUT_S,
                        log_verbose=1 if verbose else None, log_file=None if verbose else Path(os.devnull))  # fmt: skip


def serve(cfg: ServeConfig, announce=print, verbose: bool = False) -> int:
    """Serve until SIGTERM/SIGINT; 0 when stopped so. ``announce``: the lines saying what is served where."""
    check_config(cfg)
    Triton = import_pytriton()  # noqa: N806 - a class
    served = open_models(cfg)
    try:
        loader_environment()
        from .reaper import start_reaper

        start_reaper()
        stop = stop_event()
        from pytriton.triton import TritonLifecyclePolicy

        later = TritonLifecyclePolicy(launch_triton_on_startup=False)  # bound (with parameters) first, then loaded
        with Triton(config=triton_config(cfg, verbose), triton_lifecycle_policy=later) as triton:
            names = [bind(triton, s, encoded) for s in served for encoded in (False, *((True,) if cfg.encoded else ()))]
            start(triton)
            for line in endpoint_lines(cfg, names, served):
                announce(line)
            while not stop.wait(0.5):
                if not triton.is_alive():
                    raise EnvironmentFailure("keep serving", "tritonserver", "it stopped (run with --verbose)")
            drain(triton)
    finally:
        for s in served:
            s.close()
    return 0


def start(triton) -> None:
    """Start tritonserver and load every model (PyTriton's ``run``); a failure there is the machine's, not the
    input's (the files loaded on their runners already): EnvironmentFailure, exit 3, one line naming it."""
    from pytriton.client.exceptions import PyTritonClientError
    from pytriton.exceptions import PyTritonError
    from tritonclient.utils import InferenceServerException  # a model's load refused

    try:
        triton.run()
    except (PyTritonError, PyTritonClientError, InferenceServerException, TimeoutError, RuntimeError, OSError) as exc:
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise EnvironmentFailure("start", "tritonserver and its models (PyTriton)",
                                 f"{first} (run with --verbose for its log)") from exc  # fmt: skip


def stop_event() -> threading.Event:
    """An event set by SIGTERM or SIGINT (instead of run_cli's KeyboardInterrupt: stopping is a clean exit)."""
    import signal

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def drain(triton) -> None:
    """Stop tritonserver first (SIGINT: it refuses new requests and waits up to SHUTDOWN_TIMEOUT_S for those in
    flight, which PyTriton's handlers in this process still answer), then PyTriton (its handlers, workspace)."""
    server = triton._triton_server  # PyTriton 0.7's TritonServer: stop() sends SIGINT and waits
    if server is not None:
        server.stop()


def endpoint_lines(cfg: ServeConfig, names: list[str], served: list[Served]) -> list[str]:
    host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    lines = [f"serving {', '.join(names)} (max batch {cfg.max_batch}, {cfg.instances} instance(s) each, "
             f"queue delay {cfg.max_queue_delay_us} us)"]  # fmt: skip
    lines += [f"  {s.model.name}: {s.path} on {s.runners[0].runtime}" for s in served]
    lines += [f"http://{host}:{cfg.http_port}  grpc://{host}:{cfg.grpc_port}  "
              f"metrics http://{host}:{cfg.metrics_port}/metrics  (SIGTERM or Ctrl-C stops)"]  # fmt: skip
    return lines
