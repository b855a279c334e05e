#!/usr/bin/env python3
"""Our export against its peers on the CPU: timm's own export, onnxslim's version of it, ours split and merged, on
ONNX Runtime and OpenVINO (f32 pinned, and bf16), in one process.

    python benchmarks/peers.py --timm TIMM.onnx [--weights W.safetensors] [--threads 2] [--rounds 15]

``--timm``: timm's own ``torch.onnx.export`` of mixnet_s with the same checkpoint, made once in a tools venv
(benchmarks/timm_export.py). Our graphs are exported here from ``--weights`` (default: the team's timm fixture)
exactly as ``mixnet-export`` makes them (fold, lower, export, tidy); every graph's logits are checked against timm's
file on ONNX Runtime before timing (max abs <= 1e-4).

Timing: batch 1, ``--threads`` intra-op threads, one runner per (graph, runtime). ``--rounds`` rounds; in each, every
runner in a rotating order runs a slice: ``--warmup`` untimed calls, then ``--calls`` timed calls (their median is
the slice's figure). A graph's figure is the median of its slices; a ratio (speed-up over timm's file, > 1 = faster)
the median of the per-round ratios on the same runtime, so a load change on the shared machine hits both sides alike.
The load average before and after, the versions, the precision OpenVINO reports it ran in, the MACs and the GFLOP/s
reached against the machine's FP32 peak (from its CPU flags and clock) go into ``--out/peers.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FIXTURE = ROOT.parent / "shared" / "fixtures" / "timm_mixnet_s" / "state_dict.safetensors"
GOALS = {  # (graph, runtime) -> the least speed-up over timm's own export that issue #24 asks for
    ("split", "ort-cpu"): 1.0, ("split", "openvino"): 1.0, ("split", "openvino-bf16"): 1.0,
    ("merged", "ort-cpu"): 2.0, ("merged", "openvino"): 1.3,
}  # fmt: skip
MATCH_TOL = 1e-4
RUNTIMES = ("ort-cpu", "openvino", "openvino-bf16")


def our_graphs(weights: str, variant: str, img: int) -> dict[str, onnx.ModelProto]:
    from mixnet_deploy.fold import fold_bn
    from mixnet_deploy.lowering import lower
    from mixnet_deploy.onnx_export import to_onnx
    from mixnet_deploy.weights import load_model

    model, _ = load_model(variant, weights)
    folded = fold_bn(model)
    return {m: to_onnx(lower(folded, m), img) for m in ("split", "merged")}


def fp32_peak(threads: int) -> dict:
    """FP32 FLOP/s peak of ``threads`` cores: 2 FMA pipes x SIMD lanes (16 with avx512f, 8 with avx2) x 2 FLOP x
    the clock /proc/cpuinfo reports (no turbo counted)."""
    text = Path("/proc/cpuinfo").read_text()
    flags = set(re.search(r"^flags\s*:\s*(.*)$", text, re.M)[1].split())
    mhz = float(re.search(r"^cpu MHz\s*:\s*([\d.]+)", text, re.M)[1])
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    fma = 2  # FMA pipes per core (Zen 2-4, Skylake-SP and later server cores)
    per_cycle = 2 * lanes * fma  # FLOP per cycle per core (an FMA is 2 FLOP)
    model = re.search(r"^model name\s*:\s*(.*)$", text, re.M)[1]
    return {"cpu": model, "mhz": mhz, "simd_fp32_lanes": lanes, "fma_pipes_assumed": 2, "cores": threads,
            "flop_per_cycle_per_core": per_cycle, "gflops": round(threads * per_cycle * mhz / 1e3, 1),
            "flags": sorted(f for f in flags if f in {"avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile",
                                                       "avx512_vnni", "avx_vnni"})}  # fmt: skip


def slices(runners: dict, x: np.ndarray, rounds: int, warmup: int, calls: int) -> dict[tuple, list[float]]:
    """Per-round median latency (ms) of every runner; rotating order; a warm-up before every slice."""
    keys = list(runners)
    out: dict[tuple, list[float]] = {k: [] for k in keys}
    for r in range(rounds):
        for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
            run = runners[key].run
            for _ in range(warmup):
                run(x)
            times = []
            for _ in range(calls):
                t = time.perf_counter()
                run(x)
                times.append((time.perf_counter() - t) * 1e3)
            out[key].append(float(np.median(times)))
        print(f"round {r + 1}/{rounds}", file=sys.stderr)
    return out


def measure(args) -> dict:
    import onnxslim

    from mixnet_deploy.engine_build import sha256_file
    from mixnet_deploy.environment import environment
    from mixnet_deploy.lowering import graph_cost
    from mixnet_deploy.runtimes import make_runner

    def file_id(path) -> str:
        return f"{Path(path).name} (sha256 {sha256_file(path)})"

    timm = onnx.load(args.timm)
    graphs = {"timm": timm, "timm-onnxslim": onnxslim.slim(onnx.load(args.timm)),
              **our_graphs(args.weights, args.variant, args.img_size)}  # fmt: skip
    x = np.random.default_rng(0).standard_normal((1, 3, args.img_size, args.img_size), dtype=np.float32)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name, proto in graphs.items():
            paths[name] = Path(tmp) / f"{name}.onnx"
            onnx.save(proto, str(paths[name]))
        runners = {(g, rt): make_runner(paths[g], rt, threads=args.threads) for g in graphs for rt in RUNTIMES}
        reference = runners[("timm", "ort-cpu")].run(x)
        agreement = {f"{g} [{rt}]": float(np.abs(r.run(x) - reference).max()) for (g, rt), r in runners.items()}
        bad = {k: v for k, v in agreement.items() if "bf16" not in k and not v <= MATCH_TOL}
        if bad:
            raise SystemExit(f"graphs disagree with timm's file on ONNX Runtime beyond {MATCH_TOL}: {bad}")
        per_round = slices(runners, x, args.rounds, args.warmup, args.calls)
        ran_in = {rt: runners[("timm", rt)].describe().get("inference_precision", "fp32") for rt in RUNTIMES}
        for r in runners.values():
            r.close()
    peak = fp32_peak(args.threads)
    rows = []
    for (g, rt), times in per_round.items():
        macs = graph_cost(graphs[g])["macs"]
        ms = float(np.median(times))
        ratio = float(np.median(np.asarray(per_round[("timm", rt)]) / np.asarray(times)))
        goal = GOALS.get((g, rt))
        measured = not rt.endswith("bf16") or ran_in[rt] == "bf16"  # a CPU without bf16 runs the bf16 hint in f32
        rows.append({"graph": g, "runtime": rt, "ran_in": ran_in[rt], "nodes": len(graphs[g].graph.node),
                     "median_ms": round(ms, 3), "slices_ms": [round(t, 3) for t in times],
                     "speedup_vs_timm": round(ratio, 3), "macs": macs, "gflops": round(2 * macs / ms / 1e6, 2),
                     "of_fp32_peak": round(2 * macs / ms / 1e6 / peak["gflops"], 3), "goal": goal,
                     "goal_met": None if goal is None or not measured else ratio >= goal})  # fmt: skip
    return {
        "kind": "mixnet-deploy peers benchmark (issue #24)",
        "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": {k: str(v) for k, v in vars(args).items() if k not in ("timm", "weights", "out")},
        "inputs": {k: file_id(getattr(args, k)) for k in ("timm", "weights")},  # by name and content, not a path
        "load_average": {"before": [round(v, 2) for v in load_before],
                         "after": [round(v, 2) for v in os.getloadavg()]},  # fmt: skip
        "fp32_peak": peak,
        "agreement_max_abs_vs_timm_ort": agreement,
        "environment": environment(),
        "results": rows,
    }


def markdown(result: dict) -> str:
    peak, load, v = result["fp32_peak"], result["load_average"], result["environment"]["versions"]
    lines = [
        "# Peers: timm's own export vs ours, ONNX Runtime and OpenVINO (CPU)",
        "",
        f"Written {result['written']} by `benchmarks/peers.py`. Batch 1, {result['config']['threads']} threads, "
        f"{result['config']['rounds']} rounds of interleaved slices ({result['config']['warmup']} warm-up + "
        f"{result['config']['calls']} timed calls each). Load average (1, 5, 15 min) before {load['before']}, "
        f"after {load['after']} (a machine shared with other agents).",
        f"Versions: onnxruntime {v.get('onnxruntime')}, openvino {v.get('openvino')}, onnx {v.get('onnx')}, "
        f"torch {v.get('torch')}, numpy {v.get('numpy')}.",
        f"CPU: {peak['cpu']}, {peak['mhz']:.0f} MHz, flags {', '.join(peak['flags'])}: FP32 peak of "
        f"{peak['cores']} cores = {peak['cores']} x {peak['flop_per_cycle_per_core']} FLOP/cycle x "
        f"{peak['mhz'] / 1e3:.3f} GHz = {peak['gflops']} GFLOP/s.",
        "",
        "| graph | runtime | ran in | nodes | median ms | speed-up vs timm | GFLOP/s | of FP32 peak | goal |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["results"]:
        verdict = {True: "met", False: "NOT met", None: f"not measured (ran {r['ran_in']})"}[r["goal_met"]]
        goal = "" if r["goal"] is None else f">= {r['goal']}x: {verdict}"
        lines.append(f"| {r['graph']} | {r['runtime']} | {r['ran_in']} | {r['nodes']} | {r['median_ms']:.2f} | "
                     f"{r['speedup_vs_timm']:.2f}x | {r['gflops']:.1f} | {r['of_fp32_peak']:.1%} | {goal} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timm", required=True, help="timm's own ONNX export (benchmarks/timm_export.py)")
    parser.add_argument("--weights", default=str(FIXTURE), help="the checkpoint timm's file was made from")
    parser.add_argument("--variant", default="s")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    from mixnet_deploy.atomic import json_text, write_text

    result = measure(args)
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / "peers.json", json_text(result))
    write_text(args.out / "peers.md", markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
