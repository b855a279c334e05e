"""mixnet-serve end to end: a real tritonserver 2.51 (PyTriton, ``[serve]``) as a subprocess on free loopback ports,
called with the real tritonclient over HTTP and gRPC; mixnet-predict --url against a local mixnet-predict.

The server tests need ``[serve]`` (it pins numpy<2: .ci/run installs it in a venv of its own and sets
MIXNET_REQUIRE_SERVE=1, which turns their skip into a failure). The exit-2 tests need no server.
Every wait is bounded (deadlines below); every server is checked to leave no process behind, by pid.
"""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURE

from mixnet_deploy.serve import SHUTDOWN_TIMEOUT_S

TRAINED = FIXTURE.parent / "trained_mixnet_s20"
START_TIMEOUT_S = 180  # tritonserver start plus every model loaded, on a loaded 2-core machine
GONE_TIMEOUT_S = 30  # after mixnet-serve ends, every process it started is gone by then


def _have_pytriton() -> bool:
    try:
        import pytriton.triton  # noqa: F401
    except ImportError:
        return False
    return True


def _needs_serve():
    if not _have_pytriton():
        reason = "mixnet-serve needs [serve] (nvidia-pytriton, numpy<2): pip install -e '.[cpu,test,serve]'"
        if os.environ.get("MIXNET_REQUIRE_SERVE") == "1":
            pytest.fail(f"MIXNET_REQUIRE_SERVE=1 but {reason}")
        pytest.skip(reason)
    if not TRAINED.is_dir():
        pytest.skip(f"no {TRAINED} (set MIXNET_FIXTURES)")


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def descendants(pid: int) -> dict[int, str]:
    """pid -> command of every process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    names = {}
    for entry in os.listdir("/proc"):
        if entry.isdecimal():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
            names[int(entry)] = stat[stat.index("(") + 1 : stat.rindex(")")]
    found, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            found[child] = names[child]
            todo.append(child)
    return found


def alive(pids) -> dict[int, str]:
    found = {}
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] != "Z":
            found[pid] = stat[stat.index("(") + 1 : stat.rindex(")")]
    return found


def wait_gone(pids, timeout_s: float = GONE_TIMEOUT_S) -> dict[int, str]:
    deadline = time.monotonic() + timeout_s
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive(pids)


class Server:
    """``mixnet-serve`` as a subprocess; ``ready`` waits (bounded) for /v2/models/<name>/ready of each name."""

    def __init__(self, models, names, tmp: Path, *extra: str):
        self.http, self.grpc, self.metrics = free_ports(3)
        self.log = tmp / f"serve-{self.http}.log"
        args = [*map(str, models), "--http-port", str(self.http), "--grpc-port", str(self.grpc),
                "--metrics-port", str(self.metrics), *extra]  # fmt: skip
        code = "from mixnet_deploy.cli import serve_main; raise SystemExit(serve_main())"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=out, stderr=subprocess.STDOUT)
        self.names = names
        self.seen: dict[int, str] = {}

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http}{path}"

    def ready(self) -> Server:
        deadline = time.monotonic() + START_TIMEOUT_S
        for name in self.names:
            while not self._ok(f"/v2/models/{name}/ready"):
                assert self.proc.poll() is None, f"mixnet-serve exited {self.proc.returncode}: {self.output()[-3000:]}"
                assert time.monotonic() < deadline, f"{name} not ready in {START_TIMEOUT_S} s: {self.output()[-3000:]}"
                time.sleep(0.25)
        self.seen = descendants(self.proc.pid)
        return self

    def _ok(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(self.url(path), timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics", timeout=10) as r:
            return r.read().decode()

    def stop(self, signum=signal.SIGTERM, since: float | None = None) -> tuple[int, float]:
        """(exit code, seconds to exit, from ``since`` if given, else from this ``signum``); then every process it
        started is gone."""
        self.seen |= descendants(self.proc.pid)
        t0 = time.monotonic() if since is None else since
        self.proc.send_signal(signum)
        try:
            code = self.proc.wait(SHUTDOWN_TIMEOUT_S + 30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        took = time.monotonic() - t0
        assert self.seen, "mixnet-serve started no process (tritonserver?)"
        assert wait_gone(self.seen) == {}, f"outlived mixnet-serve: {alive(self.seen)}"
        return code, took


# ---------------------------------------------------------------- the exported models (fixtures)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two files named as --triton-repo names them: mixnet_s (the trained 20-class fixture, float32-nchw, its class
    names) and tf_mixnet_s (seeded, uint8-nhwc pixels, top-5), both 64 px."""
    _needs_serve()
    from mixnet_deploy.config import ExportConfig
    from mixnet_deploy.pipeline import run_export

    out = tmp_path_factory.mktemp("served")
    run_export(ExportConfig(variant="s", weights=str(TRAINED / "state_dict.safetensors"),
                            class_names=TRAINED / "classes.txt",
                            img_size=64, out_dir=out / "a", engine="skip"))  # fmt: skip
    run_export(ExportConfig(variant="tf_s", img_size=64, out_dir=out / "b", engine="skip", input_format="uint8-nhwc",
                            top_k=5))  # fmt: skip
    return {"mixnet_s": out / "a" / "mixnet_s.onnx", "tf_mixnet_s": out / "b" / "tf_mixnet_s.onnx"}


NAMES = ("mixnet_s", "tf_mixnet_s", "mixnet_s_encoded", "tf_mixnet_s_encoded")
MAX_BATCH = 8


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    srv = Server(models.values(), NAMES, tmp_path_factory.mktemp("log"), "--encoded", "--max-batch", str(MAX_BATCH))
    try:
        yield srv.ready()
    finally:
        code, took = srv.stop()
        assert code == 0, srv.output()[-3000:]


def local(path):
    from mixnet_deploy.runtimes import make_runner

    return make_runner(path, "ort-cpu")


def clients(server):
    import tritonclient.grpc as grpc
    import tritonclient.http as http

    return [(http, http.InferenceServerClient(f"127.0.0.1:{server.http}")),
            (grpc, grpc.InferenceServerClient(f"127.0.0.1:{server.grpc}"))]  # fmt: skip


def infer(module, client, model, name, x, datatype, outputs=("logits",)):
    inp = module.InferInput(name, list(x.shape), datatype)
    inp.set_data_from_numpy(x)
    result = client.infer(model, [inp], outputs=[module.InferRequestedOutput(o) for o in outputs])
    return [result.as_numpy(o) for o in outputs]


def pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)


# ---------------------------------------------------------------- names, tensors, answers


def test_served_models_have_the_triton_repo_names_tensors_and_parameters(server, models):
    """Names and tensors as triton.model_config gives --triton-repo's config.pbtxt (read here from the ONNX
    itself with onnx, not through our code); the preprocessing parameters and class names are there too."""
    import onnx
    from tritonclient.http import InferenceServerClient

    client = InferenceServerClient(f"127.0.0.1:{server.http}")
    for name, path in models.items():
        graph = onnx.load(str(path)).graph
        config = client.get_model_config(name)
        assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [
            (i.name, {1: "TYPE_FP32", 2: "TYPE_UINT8"}[i.type.tensor_type.elem_type],
             [d.dim_value for d in i.type.tensor_type.shape.dim[1:]]) for i in graph.input]  # fmt: skip
        assert [t["name"] for t in config["output"]] == [o.name for o in graph.output]
        assert config["max_batch_size"] == MAX_BATCH and "dynamic_batching" in config
        params = {k: v["string_value"] for k, v in config["parameters"].items()}
        meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        for key in ("mixnet.input_size", "mixnet.mean", "mixnet.std", "mixnet.crop_pct", "mixnet.num_classes"):
            assert params[key] == meta[key], key
        encoded = client.get_model_config(f"{name}_encoded")
        assert [(t["name"], t["data_type"], t["dims"]) for t in encoded["input"]] == [("encoded", "TYPE_STRING", [1])]
    a = {k: v["string_value"] for k, v in client.get_model_config("mixnet_s")["parameters"].items()}
    assert a["mixnet.class_names"].split("\n") == (TRAINED / "classes.txt").read_text().split()


def test_http_and_grpc_answers_equal_the_local_runner(server, models):
    from mixnet_deploy.graph_io import top_k_numpy

    x = np.random.default_rng(1).standard_normal((3, 3, 64, 64), dtype=np.float32)
    want_a = local(models["mixnet_s"]).run(x)
    px = pixels(5)
    want_b = local(models["tf_mixnet_s"]).run(px)
    scores, classes = top_k_numpy(want_b, 5)
    for module, client in clients(server):
        (got,) = infer(module, client, "mixnet_s", "input", x, "FP32")
        assert got.shape == (3, 20) and np.abs(got - want_a).max() <= 1e-6
        logits, s, c = infer(module, client, "tf_mixnet_s", "image", px, "UINT8", ("logits", "scores", "classes"))
        assert np.abs(logits - want_b).max() <= 1e-6
        assert c.dtype == np.int32 and (c == classes).all() and np.abs(s - scores).max() <= 1e-6


def photo_bytes() -> list[bytes]:
    return [p.read_bytes() for p in sorted((TRAINED / "eval").glob("*.jpg"))[:3]]


def test_encoded_files_are_decoded_by_the_server_as_predict_does(server, models):
    """The server's decode + resize + crop (the model's metadata) gives the local runner's logits on the crops
    mixnet-predict's decoder makes; a PNG and a JPEG; garbage gets an error naming it, then the server serves."""
    from PIL import Image

    from mixnet_deploy.data import Preprocess, decode

    blobs = photo_bytes()
    png = io.BytesIO()
    Image.open(io.BytesIO(blobs[0])).save(png, "PNG")
    blobs.append(png.getvalue())
    for name, path in models.items():
        runner = local(path)
        pre = Preprocess.from_metadata(runner.metadata)
        crops = np.stack([decode(b, pre)[0] for b in blobs])
        want = runner.run(crops if runner.input_format == "uint8-nhwc" else pre.normalize(crops))
        batch = np.array([[b] for b in blobs], dtype=object)
        for module, client in clients(server):
            (got,) = infer(module, client, f"{name}_encoded", "encoded", batch, "BYTES")
            assert np.abs(got - want).max() <= 1e-6
            with pytest.raises(module.InferenceServerException, match="cannot be decoded.*not an image"):
                infer(module, client, f"{name}_encoded", "encoded", np.array([[b"not a photo"]], dtype=object),
                      "BYTES")  # fmt: skip
            (again,) = infer(module, client, f"{name}_encoded", "encoded", batch[:1], "BYTES")
            assert np.abs(again - want[:1]).max() <= 1e-6
    log = server.output()  # the server's own log: one line per refused file, no traceback (without --verbose)
    assert "request refused: encoded image 0 of the request (11 bytes) cannot be decoded" in log
    assert "Traceback" not in log


def test_an_undecodable_file_fails_alone_among_requests_sent_with_it(models, tmp_path):
    """#23: garbage sent at once with 6 valid files, under a batcher delay (1 s) that would put all seven in one
    execution of max batch 8: every valid request gets the local runner's logits, the garbage one an error naming
    it. (PyTriton 0.7 answers a failed execution with one error for all its requests: serve.bind.)"""
    import tritonclient.grpc as grpc

    from mixnet_deploy.data import Preprocess, decode

    srv = Server([models["mixnet_s"]], ("mixnet_s_encoded",), tmp_path, "--encoded", "--max-queue-delay-us",
                 "1000000").ready()  # fmt: skip
    try:
        runner = local(models["mixnet_s"])
        pre = Preprocess.from_metadata(runner.metadata)
        blobs = photo_bytes()
        want = runner.run(pre.normalize(np.stack([decode(b, pre)[0] for b in blobs])))
        client = grpc.InferenceServerClient(f"127.0.0.1:{srv.grpc}")
        sends = [*range(len(blobs)), None, *range(len(blobs))]  # None: the garbage

        def one(i):
            blob = b"not a photo" if i is None else blobs[i]
            try:
                return infer(grpc, client, "mixnet_s_encoded", "encoded", np.array([[blob]], dtype=object), "BYTES")[0]
            except grpc.InferenceServerException as exc:
                return exc

        with ThreadPoolExecutor(len(sends)) as pool:
            got = list(pool.map(one, sends, timeout=120))
    finally:
        code, _ = srv.stop()
    assert code == 0, srv.output()[-3000:]
    for i, answer in zip(sends, got):
        if i is None:
            assert re.search("encoded image 0 .*cannot be decoded.*not an image", str(answer)), answer
        else:
            assert isinstance(answer, np.ndarray), f"valid file {i} refused: {answer}"
            assert np.abs(answer - want[i : i + 1]).max() <= 1e-6


def counter(text: str, metric: str, model: str) -> float:
    match = re.search(rf'^{metric}{{model="{model}",version="1"}} (\S+)$', text, re.M)
    assert match, f"no {metric} for {model} in the metrics"
    return float(match.group(1))


def test_64_requests_16_in_flight_succeed_in_fewer_executions(server):
    """Triton's own metrics (the metrics port): 64 inferences in fewer than 64 executions (dynamic batching)."""
    import tritonclient.grpc as grpc

    before = server.metrics_text()
    client = grpc.InferenceServerClient(f"127.0.0.1:{server.grpc}")
    px = pixels(64, seed=2)

    def one(i):
        return infer(grpc, client, "tf_mixnet_s", "image", px[i : i + 1], "UINT8")[0]

    with ThreadPoolExecutor(16) as pool:
        got = np.concatenate(list(pool.map(one, range(64), timeout=120)))
    assert np.abs(got - local(server_model(server, "tf_mixnet_s")).run(px)).max() <= 1e-6
    deadline = time.monotonic() + 10
    while True:  # counters are updated as responses complete
        after = server.metrics_text()
        done = counter(after, "nv_inference_count", "tf_mixnet_s") - counter(before, "nv_inference_count",
                                                                               "tf_mixnet_s")  # fmt: skip
        if done >= 64 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    runs = counter(after, "nv_inference_exec_count", "tf_mixnet_s") - counter(before, "nv_inference_exec_count",
                                                                              "tf_mixnet_s")  # fmt: skip
    assert done == 64 and 0 < runs < 64, (done, runs)


def server_model(server, name) -> Path:
    return next(Path(a) for a in server.proc.args if Path(a).name == f"{name}.onnx")


BAD = [  # (model, input name, array, datatype, what the error must name)
    ("mixnet_s", "input", np.zeros((1, 3, 64, 64), np.float64), "FP64", r"FP64|TYPE_FP64|datatype"),
    ("mixnet_s", "input", np.zeros((1, 3, 32, 32), np.float32), "FP32", r"shape|\[1,3,32,32\]"),
    ("mixnet_s", "input", np.zeros((MAX_BATCH + 1, 3, 64, 64), np.float32), "FP32", rf"batch.size.*{MAX_BATCH}"),
    ("mixnet_x", "input", np.zeros((1, 3, 64, 64), np.float32), "FP32", r"unknown model.*mixnet_x|mixnet_x"),
    ("mixnet_s", "pixels", np.zeros((1, 3, 64, 64), np.float32), "FP32", r"pixels"),
]


@pytest.mark.parametrize("model,name,x,datatype,needle", BAD, ids=["dtype", "shape", "batch", "model", "input"])
def test_bad_requests_get_an_error_naming_it_and_the_server_keeps_serving(server, model, name, x, datatype, needle):
    good = np.zeros((1, 3, 64, 64), np.float32)
    for module, client in clients(server):
        with pytest.raises(module.InferenceServerException) as caught:
            infer(module, client, model, name, x, datatype)
        assert re.search(needle, str(caught.value), re.I), str(caught.value)
        (ok,) = infer(module, client, "mixnet_s", "input", good, "FP32")
        assert ok.shape == (1, 20)


def test_predict_url_prints_the_local_predictions(server, models, capsys):
    """mixnet-predict --url over HTTP and gRPC: the same table as mixnet-predict on the file (class names from
    the served config's parameters: the fixture's 20 names)."""
    from mixnet_deploy.cli import predict_main

    images = [str(p) for p in sorted((TRAINED / "eval").glob("*.jpg"))[:5]]
    assert predict_main([str(models["mixnet_s"]), *images, "--quiet"]) == 0
    want = capsys.readouterr().out.splitlines()[1:]
    names = (TRAINED / "classes.txt").read_text().split()
    assert any(n in "\n".join(want) for n in names)
    for url in (f"http://127.0.0.1:{server.http}", f"grpc://127.0.0.1:{server.grpc}"):
        assert predict_main(["--url", url, "--model-name", "mixnet_s", *images, "--quiet", "--batch", "3"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0] == f"model: mixnet_s [{url}]" and out[1:] == want


# ---------------------------------------------------------------- stopping


def test_sigterm_with_requests_in_flight_completes_them_and_exits_0(models, tmp_path):
    """16 requests of a full batch at once (one instance: they queue); SIGTERM once the first is answered: every
    one is answered, at least one after the signal, and the server exits 0 within SHUTDOWN_TIMEOUT_S. (A request
    sent after SIGTERM is refused: Triton's 'Server is stopping'.)"""
    import tritonclient.grpc as grpc

    srv = Server([models["tf_mixnet_s"]], ("tf_mixnet_s",), tmp_path, "--max-batch", str(MAX_BATCH)).ready()
    client = grpc.InferenceServerClient(f"127.0.0.1:{srv.grpc}")
    x = pixels(MAX_BATCH, seed=3)
    done: list[float] = []

    def one(_):
        out = infer(grpc, client, "tf_mixnet_s", "image", x, "UINT8")[0]
        done.append(time.monotonic())
        return out

    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(one, i) for i in range(16)]
        deadline = time.monotonic() + 60
        while not done and time.monotonic() < deadline:
            time.sleep(0.005)
        sent = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        results = [f.result(timeout=SHUTDOWN_TIMEOUT_S + 30) for f in futures]
    assert all(r.shape == (MAX_BATCH, 1000) for r in results)
    assert sum(t > sent for t in done) >= 1, "no request was in flight at SIGTERM"
    code, took = srv.stop(since=sent)  # already signalled: a second SIGTERM is harmless; timed from the first
    assert code == 0 and took <= SHUTDOWN_TIMEOUT_S, (code, took, srv.output()[-2000:])


def test_kill_9_leaves_no_tritonserver_or_stub(models, tmp_path):
    srv = Server([models["mixnet_s"]], ("mixnet_s",), tmp_path).ready()
    seen = srv.seen
    assert {"tritonserver", "triton_python_b"} <= set(seen.values()), seen
    srv.proc.kill()
    srv.proc.wait(10)
    assert wait_gone(seen) == {}, f"outlived kill -9 of mixnet-serve: {alive(seen)}"


# ---------------------------------------------------------------- exit 2, nothing started


def port_args() -> list[str]:
    flags = ("--http-port", "--grpc-port", "--metrics-port")
    return [a for flag, port in zip(flags, free_ports(3)) for a in (flag, str(port))]


def run_serve(*args: str, pre: str = "") -> subprocess.CompletedProcess:
    code = f"{pre}from mixnet_deploy.cli import serve_main; raise SystemExit(serve_main())"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


def error_line(proc) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("mixnet-serve: error: "), proc.stderr
    return lines[0]


def test_a_port_in_use_is_named_and_nothing_starts(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    with busy:
        model = tmp_path / "m.onnx"
        model.write_bytes(b"")
        http, metrics = free_ports(2)
        proc = run_serve(str(model), "--http-port", str(http), "--grpc-port", str(port), "--metrics-port",
                         str(metrics))  # fmt: skip
    line = error_line(proc)
    assert f"--grpc-port {port} is in use on 127.0.0.1" in line


def test_a_missing_model_is_exit_2_before_anything_starts(tmp_path):
    assert "nope.onnx' does not exist" in error_line(run_serve(str(tmp_path / "nope.onnx"), *port_args()))


def test_a_corrupt_model_is_exit_2(tmp_path):
    """Garbage named .onnx: ONNX Runtime refuses it (the model loads after the [serve] check, so this needs it)."""
    _needs_serve()
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    assert "garbage.onnx" in error_line(run_serve(str(garbage), *port_args()))


def test_without_serve_installed_it_says_how_to_install(models):
    """PyTriton hidden from the import system (without [serve] the catalogue's serve-not-installed case runs it)."""
    ports = port_args()
    proc = run_serve(str(models["mixnet_s"]), *ports, pre="import sys; sys.modules['pytriton'] = None; ")
    assert "pip install 'mixnet-deploy[serve]'" in error_line(proc)


def test_a_model_that_fails_to_load_is_exit_3_naming_it(models):
    """tritonserver starts; the model's load is refused (injected where PyTriton loads it, as Triton refuses a
    model whose initialize fails): exit 3 (the environment's failure, not bad input: 2, nor a failed check: 1),
    one line naming what failed and Triton's reason."""
    inject = ("from tritonclient.utils import InferenceServerException as E; from pytriton.models import manager; "
              "manager.ModelManager._load_model = lambda *a, **k: (_ for _ in ()).throw(E("
              "\"load failed for model 'mixnet_s': Model initialize error\\nTraceback ...\")); ")  # fmt: skip
    proc = run_serve(str(models["mixnet_s"]), *port_args(), pre=inject)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 3 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("mixnet-serve: error: cannot start tritonserver and its models (PyTriton): "
                               "load failed for model 'mixnet_s': Model initialize error"), lines[0]  # fmt: skip


# ---------------------------------------------------------------- runner selection (no server)


def test_runtimes_come_from_the_runner_factory():
    """--runtime is parity's choice list, i.e. runtimes.RUNTIMES: a runtime added there serves with no serve code."""
    from mixnet_deploy.option_fields import choices_of, options
    from mixnet_deploy.runtimes import RUNTIMES
    from mixnet_deploy.serve import ServeConfig

    assert set(choices_of(options(ServeConfig)["runtime"])) == {"auto", *RUNTIMES} - {"torch"}


def test_openvino_serves_what_it_computes_locally(models, tmp_path):
    """--runtime openvino (#24's RUNTIMES entry) serves with no serve code: HTTP and gRPC answers equal the local
    OpenVINO runner's (max abs <= 1e-6, same runtime), and the server leaves nothing behind."""
    pytest.importorskip("openvino", reason="--runtime openvino needs [openvino]")
    from mixnet_deploy.runtimes import make_runner

    srv = Server([models["mixnet_s"]], ("mixnet_s",), tmp_path, "--runtime", "openvino").ready()
    try:
        x = np.random.default_rng(7).standard_normal((2, 3, 64, 64), dtype=np.float32)
        want = make_runner(models["mixnet_s"], "openvino").run(x)
        for module, client in clients(srv):
            (got,) = infer(module, client, "mixnet_s", "input", x, "FP32")
            assert np.abs(got - want).max() <= 1e-6
    finally:
        code, _ = srv.stop()
    assert code == 0, srv.output()[-3000:]


def test_an_engine_is_served_with_the_onnx_its_manifest_names(tmp_path):
    """Tensors and metadata of an engine come from the ONNX file its manifest names beside it (the lookup the
    TensorRT runner shares); an ONNX file is its own; a manifest naming a missing file is exit 2."""
    import json

    from mixnet_deploy.engine_build import manifest_path_for
    from mixnet_deploy.errors import InputError
    from mixnet_deploy.serve import onnx_of

    engine, onnx = tmp_path / "m.engine", tmp_path / "m.onnx"
    engine.write_bytes(b"")
    onnx.write_bytes(b"")
    manifest_path_for(engine).write_text(json.dumps({"onnx": "m.onnx"}))
    assert onnx_of(engine) == onnx and onnx_of(onnx) == onnx
    onnx.unlink()
    with pytest.raises(InputError, match="m.engine: expected the ONNX file its manifest names"):
        onnx_of(engine)


def test_an_engine_is_opened_on_its_runner_with_cuda_graphs(monkeypatch, tmp_path):
    """--cuda-graph reaches make_runner for an engine (the TensorRT runner's option), not for an ONNX file.
    (TensorRT itself is not run here: the runner factory is recorded, not called.)"""
    from mixnet_deploy import predict, serve

    calls = []

    def fake_open(path, runtime, batch, **opts):
        calls.append((Path(path).suffix, runtime, batch, opts))
        raise RuntimeError("recorded")

    monkeypatch.setattr(predict, "open_model", fake_open)
    for name in ("m.engine", "m.onnx"):
        cfg = serve.ServeConfig(models=(str(tmp_path / name),), cuda_graph=True, runtime="auto", max_batch=4)
        with pytest.raises(RuntimeError, match="recorded"):
            serve.open_one(cfg, cfg.models[0])
    assert calls == [(".engine", "auto", 4, {"cuda_graph": True}), (".onnx", "auto", 4, {})]
