"""Energy per image from tegrastats (issue 21): the rail parser on lines recorded on Jetsons, and the sampler with a
stand-in ``tegrastats`` on the PATH (no Jetson here)."""

import json
import os
import stat
import subprocess
import sys

import pytest
from test_bench import SleepRunner
from test_serve import wait_gone

from mixnet_deploy import bench_output, energy
from mixnet_deploy.bench import NO_TEGRASTATS, BenchConfig, run_benchmark

# Lines as tegrastats printed them on real boards. Orin Nano (JetPack 6) and Orin NX (JetPack 5) lines are the
# ones recorded in henrygd/beszel's agent/gpu_test.go; the TX2 line (L4T 32, no unit) is from the same file; the
# AGX Xavier line (L4T 32) from stardetect_agent's tegrastats test; the Nano line (L4T 32, POM_5V_IN) and the
# AGX Orin line (JetPack 5: no VDD_IN, VIN_SYS_5V0 among its rails) follow NVIDIA's documented formats.
RECORDED = {
    "orin-nano": ("06-18-2025 11:25:24 RAM 3452/7620MB (lfb 25x4MB) SWAP 1518/16384MB (cached 174MB) CPU "
                  "[1%@1420,2%@1420,0%@1420,2%@1420,2%@729,1%@729] GR3D_FREQ 0% cpu@50.031C soc2@49.031C soc0@50C "
                  "gpu@49.031C tj@50.25C soc1@50.25C VDD_IN 4824mW/4824mW VDD_CPU_GPU_CV 518mW/518mW "
                  "VDD_SOC 1475mW/1475mW", 4824, "VDD_IN"),
    "orin-nx": ("11-15-2024 08:38:09 RAM 6185/7620MB (lfb 8x2MB) SWAP 851/3810MB (cached 1MB) CPU "
                "[15%@729,11%@729,14%@729,13%@729,11%@729,8%@729] EMC_FREQ 43%@2133 GR3D_FREQ 63%@[621] NVDEC off "
                "NVJPG off NVJPG1 off VIC off OFA off APE 200 cpu@53.968C soc2@52.437C soc0@50.75C gpu@53.343C "
                "tj@53.968C soc1@51.656C VDD_IN 12479mW/12479mW VDD_CPU_GPU_CV 4667mW/4667mW VDD_SOC 2817mW/2817mW",
                12479, "VDD_IN"),
    "tx2": ("RAM 3276/7859MB (lfb 5x4MB) SWAP 1626/12122MB (cached 181MB) CPU [44%@1421,49%@2031,67%@2034,17%@1420,"
            "25%@1419,8%@1420] EMC_FREQ 1%@1866 GR3D_FREQ 0%@114 APE 150 MTS fg 1% bg 1% PLL@42.5C MCPU@42.5C "
            "PMIC@50C Tboard@38C GPU@39.5C BCPU@42.5C thermal@41.3C Tdiode@39.25C VDD_SYS_GPU 182/182 "
            "VDD_SYS_SOC 730/730 VDD_4V0_WIFI 0/0 VDD_IN 5297/5297 VDD_SYS_CPU 1917/1917 VDD_SYS_DDR 1241/1241",
            5297, "VDD_IN"),
    "agx-xavier": ("RAM 1545/31919MB (lfb 7400x4MB) SWAP 2/15959MB (cached 1MB) CPU [0%@1190,1%@1190] EMC_FREQ 1%@408 "
                   "GR3D_FREQ 12%@318 AO@38C GPU@39.5C CPU@40C thermal@38.8C GPU 120/100 CPU 468/450 SOC 937/900 "
                   "CV 0/0 VDDRQ 312/234 SYS5V 1458/1400", 120 + 468 + 937 + 0 + 312 + 1458,
                   "sum of GPU+CPU+SOC+CV+VDDRQ+SYS5V"),
    "nano": ("RAM 1510/3964MB (lfb 198x4MB) SWAP 0/1982MB (cached 0MB) CPU [5%@1479,2%@1479,1%@1479,0%@1479] "
             "EMC_FREQ 0% GR3D_FREQ 0% PLL@29C CPU@31C PMIC@100C GPU@30.5C AO@38.5C thermal@30.75C "
             "POM_5V_IN 2432/2432 POM_5V_GPU 0/0 POM_5V_CPU 407/407", 2432, "POM_5V_IN"),
    "agx-orin": ("RAM 2946/30536MB (lfb 6346x4MB) SWAP 0/15268MB (cached 0MB) CPU [1%@729,0%@729,0%@729,0%@729] "
                 "EMC_FREQ 0%@2133 GR3D_FREQ 0%@[0,0] VIC_FREQ 729 APE 174 CPU@48.375C Tboard@37C SOC2@44.843C "
                 "tj@48.375C VDD_GPU_SOC 2394mW/2394mW VDD_CPU_CV 399mW/399mW VIN_SYS_5V0 2820mW/2820mW "
                 "VDDQ_VDD2_1V8AO 301mW/301mW", 2394 + 399 + 2820 + 301,
                 "sum of VDD_GPU_SOC+VDD_CPU_CV+VIN_SYS_5V0+VDDQ_VDD2_1V8AO"),
}  # fmt: skip


@pytest.mark.parametrize("board", list(RECORDED))
def test_input_power_of_recorded_lines(board):
    line, mw, rail = RECORDED[board]
    rails = energy.parse_rails(line)
    assert "RAM" not in rails and "SWAP" not in rails  # "3452/7620MB" is memory, not a rail
    assert energy.input_power(rails) == (float(mw), rail)


def test_line_without_rails_gives_no_reading():
    assert energy.input_power(energy.parse_rails("RAM 3452/7620MB (lfb 25x4MB) GR3D_FREQ 0%")) is None


def stand_in_tegrastats(folder, milliwatts: int = 5000):
    """A ``tegrastats`` that prints an Orin line (VDD_IN = ``milliwatts``) every --interval ms and records its
    arguments; the folder goes first on the PATH."""
    script = folder / "tegrastats"
    script.write_text(f"""#!{sys.executable}
import sys, time
open({str(folder / "argv.json")!r}, "w").write(__import__("json").dumps(sys.argv[1:]))
interval = int(sys.argv[sys.argv.index("--interval") + 1]) / 1000
while True:
    print("RAM 3452/7620MB (lfb 25x4MB) GR3D_FREQ 0% cpu@50.0C VDD_IN {milliwatts}mW/{milliwatts}mW "
          "VDD_CPU_GPU_CV 518mW/518mW VDD_SOC 1475mW/1475mW", flush=True)
    time.sleep(interval)
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_sampler_with_a_stand_in_tegrastats_on_the_path(tmp_path, monkeypatch):
    stand_in_tegrastats(tmp_path, 5000)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    sampler = energy.power_sampler()
    assert sampler is not None and sampler.exe == str(tmp_path / "tegrastats")
    cfg = BenchConfig(batches=(1, 2), warmup_s=0, duration_s=0.6)
    res = run_benchmark([SleepRunner(5.0, "s [x]")], cfg, progress=False, env={}, sampler=sampler)
    assert json.loads((tmp_path / "argv.json").read_text()) == ["--interval", str(energy.INTERVAL_MS)]
    for case in res.results:
        e = case.energy
        assert e["readings"] >= energy.MIN_READINGS and e["interval_ms"] == 100 and e["rail"] == "VDD_IN"
        assert e["mean_power_w"] == 5.0
        assert e["j_per_image"] == pytest.approx(5.0 / case.stats.throughput_ips, rel=1e-12)
    assert res.energy["rails"] == ["VDD_IN"] and res.energy["interval_ms"] == 100
    table = bench_output.text_table(res)
    assert "J/img" in table.splitlines()[0]
    assert f"{res.results[0].energy['j_per_image']:.4f}" in table.splitlines()[1]
    assert sampler._proc.poll() is not None  # tegrastats stopped with the benchmark


def test_tegrastats_ends_when_the_benchmark_is_killed(tmp_path):
    """kill -9 of the process sampling power leaves no tegrastats: its next line meets a closed pipe (SIGPIPE for the
    real tool, BrokenPipeError for the stand-in) and it ends within a few intervals; checked by pid, bounded."""
    exe = stand_in_tegrastats(tmp_path)
    code = (f"import os, sys, time\nfrom mixnet_deploy.energy import PowerSampler\n"
            f"with PowerSampler({str(exe)!r}) as s:\n    print(s._proc.pid, flush=True)\n    time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        os.kill(child, 0)  # sampling
    finally:
        parent.kill()
        parent.wait(10)
    assert wait_gone([child], timeout_s=10) == {}, f"tegrastats {child} outlived kill -9"


def test_readings_outside_the_timed_windows_do_not_count():
    readings = [(1.0, 9000.0, "VDD_IN"), (2.5, 4000.0, "VDD_IN"), (2.7, 6000.0, "VDD_IN"), (4.0, 9000.0, "VDD_IN")]
    sampler = energy.PowerSampler("tegrastats", readings=readings)
    e = sampler.energy([(2.0, 3.0)], images_per_s=100.0)
    assert (e["readings"], e["mean_power_w"]) == (2, 5.0) and e["j_per_image"] == pytest.approx(0.05)
    short = sampler.energy([(2.6, 2.65)], images_per_s=100.0)
    assert short["j_per_image"] is None and "0 tegrastats reading(s)" in short["why"]


def test_no_tegrastats_no_energy(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert energy.power_sampler() is None
    res = run_benchmark([SleepRunner(0)], BenchConfig(batches=(1,), warmup_s=0, iters=3), progress=False, env={})
    assert res.energy == NO_TEGRASTATS and res.results[0].energy is None
    assert "J/img" not in bench_output.text_table(res)
