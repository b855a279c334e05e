#!/usr/bin/env python3
"""mixnet-serve's overhead: images/s and latency over HTTP and gRPC vs the same file on local ONNX Runtime (issue 23).

    .venv-serve/bin/python benchmarks/serve.py --model artifacts/mixnet_s.onnx --requests 256

One ``mixnet-serve MODEL`` (a subprocess on free loopback ports, ``--max-batch``, one instance, ORT CPU) and, in
the same run, the file on local ONNX Runtime (``runtimes.make_runner``, one session, called from the same number
of threads). For each concurrency (``--concurrency``, default 1,4,16): a warm-up of 2 x concurrency requests, then
``--requests`` batch-1 requests from that many threads (one tritonclient client each), each request timed from
send to answer; images/s = requests / wall time. Rounds alternate local, HTTP, gRPC per concurrency, so a change
of the machine's load hits all three. Writes ``--out/serve.json`` and ``serve.md`` with the load average at the
start and end (the machine is shared: compare within one run only).
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from test_serve import Server  # noqa: E402 - the tests' subprocess server: free ports, bounded ready wait

from mixnet_deploy.atomic import json_text, write_json, write_text  # noqa: E402
from mixnet_deploy.contract import META_VARIANT, OUTPUT_NAME, PIXEL_INPUT, input_name  # noqa: E402
from mixnet_deploy.runtimes import make_runner  # noqa: E402
from mixnet_deploy.triton import default_model_name  # noqa: E402


def sample(runner, rng) -> np.ndarray:
    shape = (1, *runner.input_shape[1:])
    if runner.input_format == PIXEL_INPUT:
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.standard_normal(shape, dtype=np.float32)


def timed(call, n: int, threads: int) -> dict:
    """``n`` calls from ``threads`` threads: per-call milliseconds, and images/s over the wall time."""

    def one(_):
        t0 = time.perf_counter()
        call()
        return (time.perf_counter() - t0) * 1e3

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(2 * threads)))  # warm-up
        t0 = time.perf_counter()
        ms = list(pool.map(one, range(n)))
        wall = time.perf_counter() - t0
    return {"images_per_s": round(n / wall, 1), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2), "requests": n}  # fmt: skip


def remote_call(module, address: str, model: str, name: str, x: np.ndarray, datatype: str):
    """One client per thread (tritonclient's HTTP client is not shared across threads)."""
    import threading

    local = threading.local()

    def call():
        if not hasattr(local, "client"):
            local.client = module.InferenceServerClient(address)
        inp = module.InferInput(name, list(x.shape), datatype)
        inp.set_data_from_numpy(x)
        local.client.infer(model, [inp], outputs=[module.InferRequestedOutput(OUTPUT_NAME)])

    return call


def markdown(result: dict) -> str:
    env = result["environment"]
    lines = [f"# mixnet-serve vs local ONNX Runtime: {result['model']}", "",
             f"Batch-1 requests, {result['requests']} per cell, one server instance (--max-batch {result['max_batch']}"
             f"), ORT CPU both sides. {env['cpu_count']} CPUs, load average {env['loadavg_start']} at the start, "
             f"{env['loadavg_end']} at the end (a shared machine). nvidia-pytriton {env['nvidia-pytriton']} "
             f"(tritonserver 2.51), onnxruntime {env['onnxruntime']}, tritonclient {env['tritonclient']}.", "",
             "| concurrency | path | images/s | p50 ms | p99 ms | images/s vs local |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for row in result["rows"]:
        lines.append(f"| {row['concurrency']} | {row['path']} | {row['images_per_s']} | {row['p50_ms']} | "
                     f"{row['p99_ms']} | {row['vs_local']:.2f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def measure(args) -> dict:
    import tritonclient.grpc as grpc
    import tritonclient.http as http

    runner = make_runner(args.model, "ort-cpu")
    name = default_model_name(runner.metadata[META_VARIANT])  # as mixnet-serve names it
    x = sample(runner, np.random.default_rng(0))
    datatype = "UINT8" if x.dtype == np.uint8 else "FP32"
    tensor = input_name(runner.input_format)
    logs = Path(tempfile.mkdtemp(prefix="mixnet-serve-bench-"))
    srv = Server([args.model], (name,), logs, "--max-batch", str(args.max_batch))
    rows = []
    try:
        srv.ready()
        for c in args.concurrency:
            base = timed(lambda: runner.run(x), args.requests, c)
            rows.append({"concurrency": c, "path": "local ORT", **base, "vs_local": 1.0})
            for label, module, address in (("HTTP", http, f"127.0.0.1:{srv.http}"),
                                           ("gRPC", grpc, f"127.0.0.1:{srv.grpc}")):  # fmt: skip
                got = timed(remote_call(module, address, name, tensor, x, datatype), args.requests, c)
                rows.append({"concurrency": c, "path": label, **got,
                             "vs_local": got["images_per_s"] / base["images_per_s"]})  # fmt: skip
    finally:
        srv.stop(signal.SIGTERM)
        runner.close()
    from mixnet_deploy.engine_build import sha256_file

    model = f"{args.model.name} (sha256 {sha256_file(args.model)})"  # by name and content: a path is this machine's
    return {"model": model, "served_as": name, "requests": args.requests, "max_batch": args.max_batch,
            "rows": rows}  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True, help="an .onnx file written by mixnet-export")
    p.add_argument("--requests", type=int, default=256, help="timed requests per concurrency and path")
    p.add_argument("--concurrency", type=lambda t: [int(v) for v in t.split(",")], default=[1, 4, 16])
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    env = {"loadavg_start": [round(v, 2) for v in os.getloadavg()], "cpu_count": os.cpu_count(),
           "python": platform.python_version(),
           **{pkg: version(pkg) for pkg in ("nvidia-pytriton", "onnxruntime", "tritonclient", "numpy")}}  # fmt: skip
    result = measure(args)
    env["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    result["environment"] = env
    write_json(args.out / "serve.json", result)
    write_text(args.out / "serve.md", markdown(result))
    print(json_text(result["rows"]))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
