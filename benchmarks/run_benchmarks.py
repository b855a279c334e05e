#!/usr/bin/env python3
"""The standard comparison: PyTorch eager vs ONNX Runtime FP32 / FP16 / INT8 for MixNet-S, M, L.

    python benchmarks/run_benchmarks.py                        # export into a temp folder, CPU runtimes
    python benchmarks/run_benchmarks.py --artifacts DIR        # reuse mixnet_<v>[.fp16|.int8].onnx in DIR
    python benchmarks/run_benchmarks.py --variants s --batch 1 --duration-s 2

Writes ``benchmarks/results/<host>-<date>.json`` (every case with its environment) and ``.md``
(the comparison table: median per runtime/precision and its speed-up over PyTorch eager, then
the full percentile table). All cases run in one process, interleaved in ``--rounds`` rounds, so
a load change on the machine affects every case alike and the ratios stay fair.

Models: ONNX files from ``mixnet-export`` (FP16 / INT8 too when this version of mixnet-export
offers ``--fp16`` / ``--int8``; INT8 is calibrated on synthetic images here, which changes its
accuracy but not its latency; where mixnet-export refuses the INT8 file of random weights, pass
``--artifacts`` with exports of real checkpoints). PyTorch eager is the unfolded float32 model of
the same variant.
GPU runtimes are added when present: ONNX Runtime's CUDA / TensorRT providers, PyTorch on CUDA,
and ``mixnet_<v>.<precision>.engine`` files found in ``--artifacts``.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from mixnet_deploy.atomic import write_text
from mixnet_deploy.bench import BenchConfig, parse_batches, run_benchmark
from mixnet_deploy.bench_output import (
    comparison_markdown,
    markdown,
    text_table,
    unstable_line,
    write_plot,
    write_result_json,
)
from mixnet_deploy.runtimes import available_runtimes, make_runner

HERE = Path(__file__).resolve().parent
PRECISION_SUFFIX = {"fp32": "", "fp16": ".fp16", "int8": ".int8"}
log = logging.getLogger("benchmarks")


def export_flags() -> list[str]:
    """The precision flags this version of mixnet-export offers (read from its --help)."""
    text = subprocess.run(
        [sys.executable, "-c", "from mixnet_deploy.cli import export_main; export_main(['--help'])"],
        capture_output=True,
        text=True,
    ).stdout
    flags = []
    if "--fp16" in text:
        flags.append("--fp16")
    if "--int8" in text:
        flags += ["--int8", "--calib", "synthetic"]
    return flags


def export(variant: str, out: Path, flags: list[str]) -> None:
    cmd = [sys.executable, "-c", "import sys; from mixnet_deploy.cli import export_main; sys.exit(export_main())"]
    cmd += ["--variant", variant, "--out", str(out), "--engine", "skip", *flags]
    log.info("exporting MixNet-%s: %s", variant.upper(), " ".join(cmd[3:]))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode == 1 and "--int8" in flags:  # INT8 refused by its verification: benchmark the others
        log.warning("MixNet-%s: INT8 refused (%s); exporting without it", variant.upper(), proc.stderr.strip()[-300:])
        export(variant, out, [f for f in flags if f not in ("--int8", "--calib", "synthetic")])
    elif proc.returncode != 0:
        raise SystemExit(f"mixnet-export failed for {variant}:\n{proc.stderr[-2000:]}")


def runners_for(variant: str, folder: Path, runtimes: list[str], threads: int) -> list:
    base = folder / f"mixnet_{variant}.onnx"
    # PyTorch eager: the unfolded float32 model of the variant, PyTorch's default init. The values do not
    # change the work (checked: no denormal activations for S, M, L), so latency is that of any checkpoint.
    out = [make_runner(base, "torch", threads=threads)]
    if "torch" in runtimes and _torch_cuda():
        out.append(make_runner(base, "torch", threads=threads, device="cuda"))
    for precision, suffix in PRECISION_SUFFIX.items():
        path = folder / f"mixnet_{variant}{suffix}.onnx"
        if not path.is_file():
            log.warning("%s absent: no %s row for MixNet-%s", path.name, precision, variant.upper())
            continue
        for runtime in ("ort-cpu", "ort-cuda", "ort-trt"):
            if runtime in runtimes:
                out.append(make_runner(path, runtime, threads=threads))
        engine = folder / f"mixnet_{variant}.{precision}.engine"
        if "tensorrt" in runtimes and engine.is_file():
            out.append(make_runner(engine, "tensorrt"))
    return out


def _torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default="s,m,l")
    p.add_argument("--artifacts", type=Path, help="folder with mixnet_<v>[.fp16|.int8].onnx (default: export now)")
    p.add_argument("--batch", default="1,8")
    p.add_argument("--warmup-s", type=float, default=1.0)
    p.add_argument("--duration-s", type=float, default=4.5, help="timed seconds per case, over all rounds")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--host-label", default=socket.gethostname(), help="file name prefix (default: host name)")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--plot", action="store_true", help="also write a PNG")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    runtimes = available_runtimes()
    cfg = BenchConfig(
        batches=parse_batches(args.batch), warmup_s=args.warmup_s, duration_s=args.duration_s, rounds=args.rounds
    )
    with tempfile.TemporaryDirectory(prefix="mixnet-bench-") as tmp:
        folder = args.artifacts or Path(tmp)
        if args.artifacts is None:
            flags = export_flags()
            if "--fp16" not in flags or "--int8" not in flags:
                log.warning("mixnet-export offers %s: benchmarking what exists", flags or "FP32 only")
            for v in variants:
                export(v, folder, flags)
        runners = [r for v in variants for r in runners_for(v, folder, runtimes, args.threads)]
        log.info("%d runners x %d batch sizes, %d rounds", len(runners), len(cfg.batches), cfg.rounds)
        result = run_benchmark(runners, cfg, progress=not args.quiet)
        for r in runners:
            r.close()

    result.config["threads"] = args.threads
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{args.host_label}-{datetime.date.today().isoformat()}"
    write_result_json(result, stem.with_suffix(".json"))
    env = result.environment
    text = (
        f"# MixNet latency on {args.host_label}\n\n"
        f"Machine: {env['cpu']['model']} ({env['cpu']['usable_cpus']} CPUs usable), GPU: "
        f"{env['gpu'] if isinstance(env['gpu'], str) else ', '.join(g['name'] for g in env['gpu'])}. "
        "Median (p50) per call; speed-up = PyTorch eager p50 / this p50 (same variant and batch).\n\n"
        + comparison_markdown(result)
        + "\n"
        + markdown(result, title="All percentiles").replace("# All percentiles", "## All percentiles")
    )
    write_text(stem.with_suffix(".md"), text)
    if args.plot:
        write_plot(result, stem.with_suffix(".png"))
    print(comparison_markdown(result))
    if not args.quiet:
        print(text_table(result), file=sys.stderr)
        print(unstable_line(result) or "no unstable case", file=sys.stderr)
    print(f"wrote {stem}.json and {stem}.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
