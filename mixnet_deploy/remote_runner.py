"""A model on a Triton server (``mixnet-serve``, or Triton on a ``--triton-repo``) as a runner (runner_contract.py):
``mixnet-predict --url`` classifies through it exactly as through a local file.

``http://HOST:PORT`` or ``grpc://HOST:PORT`` with tritonclient (``[serve]`` or ``[test]``); the model's input
(name, Triton type, dims), its ``max_batch_size`` and its ``mixnet.*`` parameters (the preprocessing and, where
stored, the class names: what ``config.pbtxt`` carries) come from the server's model config, so the client
preprocesses as the model's metadata says, as ``predict.open_model`` does for a file.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import numpy as np

from .contract import FLOAT_INPUT, OUTPUT_NAME, PIXEL_INPUT, input_format_of
from .errors import InputError
from .runner_contract import Runner

SCHEMES = ("http", "grpc")
TIMEOUT_S = 60.0


def client_of(url: str):
    """(tritonclient module, client) of ``http://HOST:PORT`` / ``grpc://HOST:PORT``; InputError for another URL."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or not parts.hostname or parts.port is None or parts.path not in ("", "/"):
        raise InputError("expected http://HOST:PORT or grpc://HOST:PORT", field="url", value=url)
    try:
        if parts.scheme == "http":
            import tritonclient.http as module

            client = module.InferenceServerClient(parts.netloc, connection_timeout=TIMEOUT_S, network_timeout=TIMEOUT_S)
        else:
            import tritonclient.grpc as module

            client = module.InferenceServerClient(parts.netloc)
    except ImportError as exc:
        raise InputError(f"--url needs tritonclient ({exc}): expected pip install 'tritonclient[http,grpc]' (or "
                         "mixnet-deploy[serve])") from None  # fmt: skip
    return module, client


def model_config(module, client, name: str) -> dict:
    """The served model's config as a dict (the gRPC client's protobuf as JSON)."""
    if module.__name__.endswith("grpc"):
        return client.get_model_config(name, as_json=True)["config"]
    return client.get_model_config(name)


class TritonRunner(Runner):
    """``run`` sends one request per batch (the input as the model takes it) and returns its ``logits``."""

    runtime = "triton"

    def __init__(self, url: str, model_name: str):
        self.module, self.client = client_of(url)
        try:
            ready = self.client.is_model_ready(model_name)
        except Exception as exc:  # refused connection, DNS, TLS: tritonclient raises its own and the transport's
            raise InputError(f"no Triton server answers ({str(exc).strip()[:200]}): expected mixnet-serve or "
                             "Triton there", field="url", value=url) from None  # fmt: skip
        if not ready:
            served = [m["name"] if isinstance(m, dict) else m.name for m in self._index()]
            raise InputError(f"expected a model {url} serves ready: {', '.join(served) or 'none'}",
                             field="model_name", value=model_name, problem="is not ready")  # fmt: skip
        config = model_config(self.module, self.client, model_name)
        (inp,) = config["input"]
        self.model_name, self.url = model_name, url
        self.name = f"{model_name} [{url}]"
        self.input_name = inp["name"]
        self.datatype = inp["data_type"].removeprefix("TYPE_")
        self.metadata = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.input_format = PIXEL_INPUT if self.datatype == "UINT8" else FLOAT_INPUT
        if input_format_of(self.metadata) != self.input_format:
            raise InputError(f"{self.name}: input {self.input_name!r} is {self.datatype}: expected a model "
                             "served by mixnet-serve or a mixnet-export --triton-repo")  # fmt: skip
        self.max_batch = int(config.get("max_batch_size") or 0) or None
        self.precision = None

    def _index(self) -> list:
        index = self.client.get_model_repository_index()
        return list(index) if isinstance(index, list) else list(index.models)

    def run(self, x: np.ndarray) -> np.ndarray:
        dtype = np.uint8 if self.input_format == PIXEL_INPUT else np.float32
        x = np.ascontiguousarray(x, dtype=dtype)
        request = self.module.InferInput(self.input_name, list(x.shape), "UINT8" if dtype == np.uint8 else "FP32")
        request.set_data_from_numpy(x)
        wanted = [self.module.InferRequestedOutput(OUTPUT_NAME)]
        result = self.client.infer(self.model_name, [request], outputs=wanted)
        return result.as_numpy(OUTPUT_NAME).astype(np.float32, copy=False)

    def close(self) -> None:
        self.client.close()
