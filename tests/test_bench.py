"""mixnet-bench: statistics against the standard library, environment capture, JSON/Markdown/PNG output,
and agreement with a plain InferenceSession.run loop."""

import json
import statistics
import time

import numpy as np
import pytest

from mixnet_deploy import bench, bench_output, environment, precision_table
from mixnet_deploy.bench import BenchConfig, latency_stats, measure, parse_batches, run_benchmark
from mixnet_deploy.cli import bench_main
from mixnet_deploy.config import ExportConfig
from mixnet_deploy.errors import InputError
from mixnet_deploy.pipeline import run_export
from mixnet_deploy.runtimes import OrtRunner, Runner


@pytest.fixture(scope="module")
def s_onnx(tmp_path_factory, timm_fixture):
    out = tmp_path_factory.mktemp("bench_s")
    run_export(ExportConfig(weights=str(timm_fixture["weights"]), out_dir=out, engine="skip"))
    return out / "mixnet_s.onnx"


def _run(capsys, *args):
    try:
        rc = bench_main([str(a) for a in args])
    except SystemExit as exc:
        rc = exc.code
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


# ---------------------------------------------------------------- statistics


def test_stats_match_the_standard_library():
    rng = np.random.default_rng(1)
    samples = list(rng.gamma(4.0, 2.0, size=501))
    s = latency_stats(samples, batch=8)
    q = statistics.quantiles(samples, n=100, method="inclusive")  # q[k-1] = k-th percentile, linear
    assert s.p50_ms == pytest.approx(statistics.median(samples), rel=1e-12)
    assert (s.p90_ms, s.p95_ms, s.p99_ms) == pytest.approx((q[89], q[94], q[98]), rel=1e-12)
    assert s.mean_ms == pytest.approx(statistics.fmean(samples), rel=1e-12)
    assert s.std_ms == pytest.approx(statistics.stdev(samples), rel=1e-9)
    assert s.cv == pytest.approx(statistics.stdev(samples) / statistics.fmean(samples), rel=1e-9)
    assert s.throughput_ips == pytest.approx(8 * 1000 / statistics.fmean(samples), rel=1e-12)
    assert s.iterations == 501 and s.min_ms == min(samples) and s.max_ms == max(samples)
    assert s.unstable  # gamma(4) has CV 0.5


def test_steady_samples_are_stable():
    s = latency_stats([10.0, 10.1, 9.9, 10.05, 9.95], batch=1)
    assert not s.unstable and s.cv < 0.01


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [-1.0]])
def test_stats_refuse_bad_samples(bad):
    with pytest.raises(ValueError):
        latency_stats(bad, 1)


@pytest.mark.parametrize("text", ["0", "1,x", "", "1,1", "-4", "100000"])
def test_batch_list_refused(text):
    with pytest.raises(InputError, match="--batch"):
        parse_batches(text)


def test_config_refused():
    with pytest.raises(InputError, match="--duration-s"):
        BenchConfig(duration_s=0)
    with pytest.raises(InputError, match="--warmup-s"):
        BenchConfig(warmup_s=-1)
    with pytest.raises(InputError, match="--iters"):
        BenchConfig(iters=0)


# ---------------------------------------------------------------- measurement with known timings


class SleepRunner(Runner):
    runtime = "torch"

    def __init__(self, ms: float, name: str = "sleep"):
        self.ms, self.name, self.calls = ms, name, 0
        self.input_shape = (None, 3, 8, 8)
        self.metadata = {}

    def run(self, x):
        self.calls += 1
        time.sleep(self.ms / 1e3)
        return np.zeros((len(x), 10), np.float32)


class DeviceTimedRunner(SleepRunner):
    """Stands in for a CUDA-event timer: reports the device's time per call."""

    def time_batch(self, x, iters):
        self.calls += iters
        return [2.5] * iters


def test_measure_times_the_calls():
    r = SleepRunner(4.0)
    samples = measure(r, np.zeros((1, 3, 8, 8), np.float32), warmup_s=0.0, iters=12)
    assert len(samples) == 12 and r.calls == 13  # one warm-up call always
    assert min(samples) >= 4.0 and statistics.median(samples) < 40.0  # sleep never returns early


def test_duration_mode_and_device_timer_hook():
    r = DeviceTimedRunner(0.0)
    cfg = BenchConfig(batches=(1, 2), warmup_s=0.0, duration_s=0.05, rounds=2)
    res = run_benchmark([r], cfg, progress=False, env={})
    assert [c.stats.batch for c in res.results] == [1, 2]
    for c in res.results:
        assert c.stats.p50_ms == 2.5 and c.stats.p99_ms == 2.5 and not c.stats.unstable
        assert c.stats.throughput_ips == pytest.approx(c.stats.batch * 400)


def test_unstable_run_warns(monkeypatch, caplog):
    class Jittery(SleepRunner):
        def time_batch(self, x, iters):
            return [1.0 if i % 2 else 3.0 for i in range(iters)]

    res = run_benchmark([Jittery(0)], BenchConfig(batches=(1,), warmup_s=0, iters=20), progress=False, env={})
    (case,) = res.results
    assert case.stats.unstable and "coefficient of variation" in case.warnings[0]


def test_static_batch_and_max_batch_are_respected():
    r = SleepRunner(0)
    r.max_batch = 4
    with pytest.raises(InputError, match="at most 4"):
        run_benchmark([r], BenchConfig(batches=(8,), warmup_s=0, iters=1), progress=False, env={})


# ---------------------------------------------------------------- environment


def test_environment_here_records_absent_parts(tmp_path):
    env = environment.environment(root=tmp_path, run_tool=lambda argv: None)
    assert env["gpu"] == "absent" or isinstance(env["gpu"], list)  # torch may still see a GPU elsewhere
    assert env["jetson"] == "absent"
    assert env["versions"]["tensorrt"] in ("absent",) or env["versions"]["tensorrt"][0].isdigit()
    assert env["cpu"]["logical_cpus"] >= 1
    real = environment.environment()
    assert real["cpu"]["model"] != "absent" and real["versions"]["onnxruntime"] != "absent"


def test_jetson_environment_from_files_and_tools(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text(
        "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: Fri Sep 13 2024\n"
    )
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")
    (tmp_path / "proc/cpuinfo").write_text("processor\t: 0\nmodel name\t: ARMv8 Processor rev 1 (v8l)\n")
    tools = {
        "nvpmodel": "NV Power Mode: MAXN\n0",
        "jetson_clocks": "SOC family:tegra234  Machine:NVIDIA Jetson AGX Orin Developer Kit\nonline CPUs: 0-11",
        "nvidia-smi": None,
    }
    env = environment.environment(root=tmp_path, run_tool=lambda argv: tools.get(argv[0]))
    j = env["jetson"]
    assert j["l4t_release"] == "R36.4.0"
    assert j["board"] == "NVIDIA Jetson AGX Orin Developer Kit"
    assert j["power_mode"] == "MAXN (mode 0)"
    assert j["jetson_clocks"].startswith("SOC family:tegra234")
    assert env["cpu"]["model"] == "ARMv8 Processor rev 1 (v8l)"


def test_gpu_from_nvidia_smi():
    line = "NVIDIA H100 80GB HBM3, 550.54.15, 81559 MiB, 9.0"
    (gpu,) = environment.gpu_info(lambda argv: line)
    assert gpu == {"name": "NVIDIA H100 80GB HBM3", "driver": "550.54.15", "memory": "81559 MiB",
                   "compute_capability": "9.0"}  # fmt: skip


# ---------------------------------------------------------------- the CLI on a real export


def test_bench_cli_writes_json_markdown_and_png(s_onnx, tmp_path, capsys):
    out_json, out_md, out_png = tmp_path / "b.json", tmp_path / "b.md", tmp_path / "b.png"
    rc, out, err = _run(
        capsys, s_onnx, "--batch", "1,4", "--warmup-s", "0.2", "--duration-s", "0.4",
        "--json", out_json, "--markdown", out_md, "--plot", out_png, "--quiet",
    )  # fmt: skip
    assert rc == 0, err
    data = json.loads(out_json.read_text())
    assert [r["batch"] for r in data["results"]] == [1, 4]
    for r in data["results"]:
        for key in ("p50_ms", "mean_ms", "std_ms", "cv", "throughput_ips"):
            assert r[key] > 0, key
        for p in (90, 95, 99):  # a percentile only where enough calls back it
            assert (r[f"p{p}_ms"] is None) == (r["iterations"] < bench.min_calls(p))
        shown = [r[f"p{p}_ms"] for p in (50, 90, 95, 99) if r[f"p{p}_ms"] is not None]
        assert shown == sorted(shown) and shown[-1] <= r["max_ms"]
        assert r["iterations"] >= 3 and r["model"]["precision"] == "fp32" and r["timer"] == "wall"
        assert r["throughput_ips"] == pytest.approx(r["batch"] * 1000 / r["mean_ms"])
    env = data["environment"]
    assert {"host", "cpu", "gpu", "versions", "jetson"} <= set(env)
    assert "| mixnet_s.onnx [ort-cpu]" in out_md.read_text()
    assert "mixnet_s.onnx [ort-cpu]" in out
    from PIL import Image

    with Image.open(out_png) as img:
        assert img.format == "PNG" and img.width > 600 and img.height > 300


def test_median_agrees_with_plain_inferencesession_loop(s_onnx):
    """Batch-1 median of the harness vs a hand-written InferenceSession.run loop, interleaved 3 times."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(s_onnx), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    runner = OrtRunner(s_onnx)
    cfg = BenchConfig(batches=(1,), warmup_s=0.2, duration_s=0.6)
    plain, harness = [], []
    for _ in range(3):
        for _ in range(5):
            sess.run(None, {"input": x})
        times, end = [], time.perf_counter() + 0.6
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            sess.run(None, {"input": x})
            times.append((time.perf_counter() - t0) * 1e3)
        plain.append(statistics.median(times))
        harness.append(run_benchmark([runner], cfg, progress=False, env={}).results[0].stats.p50_ms)
    ratio = statistics.median(harness) / statistics.median(plain)
    assert 1 / 1.5 <= ratio <= 1.5, (harness, plain)


def test_report_renders_from_json_dict(s_onnx):
    res = run_benchmark(
        [SleepRunner(1.0, "a [x]"), DeviceTimedRunner(0, "b [y]")],
        BenchConfig(batches=(1, 2), warmup_s=0, iters=3),
        progress=False,
        env={"host": "h", "cpu": {}, "versions": {}},
    )
    data = json.loads(json.dumps(res.as_dict()))
    md = bench_output.markdown(data)
    assert md.count("| a [x]") == 2 and md.count("| b [y]") == 2
    table = bench_output.comparison_markdown(data)
    assert "| ? | 1 | torch |" in table


# ---------------------------------------------------------------- GPU (pytest -m gpu; not run here)


@pytest.mark.gpu(needs=("torch-cuda", "fixture"))
def test_cuda_event_timing_and_outputs_on_gpu(timm_fixture):
    from mixnet_deploy import metrics
    from mixnet_deploy.runtimes import make_runner
    from mixnet_deploy.weights import load_model

    model, _ = load_model(None, timm_fixture["weights"])
    runner = make_runner(model, device="cuda", img_size=224)
    assert runner.runtime == "torch-cuda"
    m = metrics.compare(timm_fixture["logits"], runner.run(timm_fixture["input"]))
    assert not metrics.failures(m, precision_table.row("fp32").tolerance), m
    res = run_benchmark([runner], BenchConfig(batches=(1, 8), warmup_s=0.2, duration_s=0.5), progress=False)
    for case in res.results:
        assert case.timer == "device" and 0 < case.stats.p50_ms < 1000
    assert res.environment["gpu"] != "absent"


@pytest.mark.gpu(needs=("ort-gpu", "fixture"))
def test_ort_gpu_providers_bench(s_onnx):
    from mixnet_deploy.runtimes import available_runtimes

    gpu = [r for r in ("ort-cuda", "ort-trt") if r in available_runtimes()]
    res = bench.run_model_benchmark(
        BenchConfig(models=(str(s_onnx),), runtimes=tuple(gpu), batches=(1, 8), warmup_s=1, duration_s=1)
    )
    assert all(c.stats.p50_ms > 0 for c in res.results)
    assert {c.model["runtime"] for c in res.results} == set(gpu)


# ---------------------------------------------------------------- issue 21: honest tables, checked outputs, plot


@pytest.mark.parametrize(("n", "shown"), [(3, (50,)), (10, (50, 90)), (20, (50, 90, 95)), (99, (50, 90, 95)),
                                          (100, (50, 90, 95, 99))])  # fmt: skip
def test_percentiles_only_with_enough_calls(n, shown):
    """A percentile needs a call beyond it (p90: 10, p95: 20, p99: 100); fewer and it is None, never the max."""
    samples = list(np.linspace(1.0, 2.0, n))
    s = latency_stats(samples, 1)
    values = {50: s.p50_ms, 90: s.p90_ms, 95: s.p95_ms, 99: s.p99_ms}
    assert {p for p, v in values.items() if v is not None} == set(shown)
    q = statistics.quantiles(samples, n=100, method="inclusive")
    for p in shown[1:]:
        assert values[p] == pytest.approx(q[p - 1], rel=1e-12)


def test_terminal_table_has_precision_and_marks_missing_percentiles():
    class Fp16(SleepRunner):
        precision = "fp16"

        def time_batch(self, x, iters):  # steady times: a noisy machine must not mark the case unstable here
            return [2.0] * iters

    res = run_benchmark([Fp16(0, "half [x]")], BenchConfig(batches=(32,), warmup_s=0, iters=3), progress=False,
                        env={"host": "h", "cpu": {}, "versions": {}})  # fmt: skip
    head, row, note = bench_output.text_table(res).splitlines()
    assert head.split()[:3] == ["model", "precision", "batch"]
    assert row.split()[2:4] == ["fp16", "32"] and row.split()[5:8] == ["-", "-", "-"]  # p90, p95, p99
    assert "p99 >= 100" in note
    data = json.loads(json.dumps(res.as_dict()))
    assert data["results"][0]["p99_ms"] is None and data["results"][0]["iterations"] == 3
    assert data["percentile_min_calls"] == {"p50": 1, "p90": 10, "p95": 20, "p99": 100}
    assert "| half [x] | fp16 | 32 |" in bench_output.markdown(data)


class Jittery(SleepRunner):
    def time_batch(self, x, iters):
        return [1.0 if i % 2 else 3.0 for i in range(iters)]


def _jittery_benchmark(cfg, progress=True, found=None):
    """Nine unstable cases (three models x three batches), as a loaded machine gives them."""
    runners = [Jittery(0, f"m{i} [x]") for i in range(3)]
    return run_benchmark(runners, BenchConfig(batches=(1, 2, 4), warmup_s=0, iters=20), progress=False, env={})


@pytest.mark.parametrize("quiet", [False, True])
def test_unstable_cases_one_line_or_none_with_quiet(monkeypatch, capsys, quiet):
    monkeypatch.setattr(bench, "run_model_benchmark", _jittery_benchmark)
    rc, out, err = _run(capsys, "s", *(["--quiet"] if quiet else []))
    assert rc == 0, err
    assert out.count("UNSTABLE") == 9
    unstable = [line for line in err.splitlines() if "unstable" in line]
    assert unstable == [] if quiet else len(unstable) == 1 and "9 of 9 case(s) unstable" in unstable[0]


def _no_work(*args, **kwargs):
    raise AssertionError("the benchmark ran")


def test_plot_needs_matplotlib_before_any_work(monkeypatch, capsys, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    monkeypatch.setattr(bench, "run_model_benchmark", _no_work)
    rc, out, err = _run(capsys, "s", "--plot", tmp_path / "b.png", "--quiet")
    (line,) = err.strip().splitlines()
    assert rc == 2 and out == "" and "b.png" in line
    assert "pip install matplotlib" in line and "mixnet-deploy[plot]" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["out.txt", "out", "out.jpeg"])
def test_plot_suffix_the_writer_cannot_honour_is_refused(monkeypatch, capsys, tmp_path, name):
    monkeypatch.setattr(bench, "run_model_benchmark", _no_work)
    rc, _, err = _run(capsys, "s", "--plot", tmp_path / name, "--quiet")
    assert rc == 2 and name in err and ".png, .svg, .pdf" in err
    assert list(tmp_path.iterdir()) == []


def _mixed_result():
    class Fp16(DeviceTimedRunner):
        precision = "fp16"

    class Fp32(DeviceTimedRunner):
        precision = "fp32"

    runners = [Fp32(0, "a.onnx [ort-cpu]"), Fp16(0, "a.fp16.onnx [ort-cpu]"), Jittery(0, "j [x]")]
    env = {"host": "bench-host", "cpu": {"model": "CPU X", "torch_threads": 2, "load_average_1_5_15min": [1.5, 1, 1]}}
    res = run_benchmark(runners, BenchConfig(batches=(1, 4), warmup_s=0, iters=20, threads=2), progress=False,
                        env=env)  # fmt: skip
    res.config["threads"] = 2
    return res


@pytest.mark.parametrize(("suffix", "magic"), [("svg", b"<?xml"), ("pdf", b"%PDF"), ("png", b"\x89PNG")])
def test_plot_written_in_the_format_of_its_suffix(tmp_path, suffix, magic):
    path = bench_output.write_plot(_mixed_result(), tmp_path / f"b.{suffix}")
    assert path.read_bytes().startswith(magic)
    assert [p.name for p in tmp_path.iterdir()] == [f"b.{suffix}"]


def test_plot_title_precision_markers_and_unstable_rings():
    import matplotlib.pyplot as plt

    res = _mixed_result()
    fig = bench_output.plot_figure(res)
    try:
        title = fig._suptitle.get_text()
        assert "bench-host" in title and "threads 2" in title and res.created[:10] in title and "load 1.5" in title
        _, ax_thr = fig.axes
        lines = {ln.get_label().split(" (")[0]: ln for ln in ax_thr.get_lines()}
        assert lines["a.onnx [ort-cpu]"].get_marker() != lines["a.fp16.onnx [ort-cpu]"].get_marker()
        (ring,) = [c for c in ax_thr.collections if c.get_label().startswith("unstable")]
        unstable = sorted((r.stats.batch, r.stats.throughput_ips) for r in res.results if r.stats.unstable)
        ringed = sorted(map(tuple, ring.get_offsets().tolist()))
        assert len(unstable) == 2 and np.allclose(ringed, unstable)
    finally:
        plt.close(fig)
