#!/usr/bin/env python3
"""MixConv lowerings side by side: timm's own export vs plain vs split vs merged, on ONNX Runtime CPU.

    python benchmarks/lowering.py --timm-onnx TIMM_ONNX_DIR           # S, M, L; batch 1 and 8
    python benchmarks/lowering.py --variants s --batches 1 --rounds 30
    python benchmarks/lowering.py --tensorrt                              # GPU: also TensorRT engines

Graphs per variant, all with the same weights (the stored timm oracles' weights, rebuilt by
``tests/timm_oracle.random_state_dict``: S seed 6, M seed 1, L seed 2; XL, XXL and tf_* as
tests/oracles/make_timm_oracles.py lists them; ``--variants xl,tf_s``):

* ``timm``: timm's own ``torch.onnx.export`` of ``mixnet_<v>`` (BN not folded). Exported here when
  timm is importable, else read from ``--timm-onnx DIR/timm_mixnet_<v>.onnx``; left out when neither.
* ``plain``: our unfolded model exported as it is (no timm needed): the baseline of "folding costs nothing".
* ``split``: the default export (BN folded, Split -> Conv per kernel -> Concat).
* ``merged``: ``--mdconv merged`` (one depthwise conv per mixed stage, grouped 1x1 convs).
* diagnostics (``--diagnostics``): ``merged-dw`` (depthwise merged, 1x1 left split: why the grouped
  1x1 rewrite is part of ``merged``) and ``split-rm`` (split with SE pooling as ReduceMean like timm's).

Every graph's logits are compared with timm's stored logits (tests/oracles) before timing.
Timing: one process, one ONNX Runtime session per graph (``--threads``), warm-up, then ``--rounds``
rounds in which every graph runs ``calls`` times in a rotating order; a graph's figure is the
median of its per-round mean latencies, a ratio the median of the per-round ratios (so a load change
on the shared machine hits both sides of a ratio alike). MACs and node counts come from the ONNX graph.

Writes ``--out/lowering_cpu.json`` and ``.md`` (``lowering_tensorrt.*`` with ``--tensorrt``).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import io
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from tqdm import tqdm

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))  # timm_oracle: the oracle weights, without timm

from timm_oracle import load_oracle, oracle_input, random_state_dict  # noqa: E402

from mixnet_deploy.arch import get_variant  # noqa: E402
from mixnet_deploy.atomic import json_text, write_json, write_text  # noqa: E402
from mixnet_deploy.contract import INPUT_NAME, OUTPUT_NAME  # noqa: E402
from mixnet_deploy.fold import fold_bn  # noqa: E402
from mixnet_deploy.lowering import graph_cost, lower  # noqa: E402
from mixnet_deploy.model import build_model  # noqa: E402
from mixnet_deploy.onnx_export import to_onnx  # noqa: E402
from mixnet_deploy.runtimes import ort_session, run_ort  # noqa: E402
from mixnet_deploy.weights import timm_to_own  # noqa: E402

log = logging.getLogger("benchmarks")
ORACLES = {
    "s": "mixnet_s_224", "m": "mixnet_m_224", "l": "mixnet_l_224", "xl": "mixnet_xl_224", "xxl": "mixnet_xxl_224",
    "tf_s": "tf_mixnet_s_224", "tf_m": "tf_mixnet_m_224", "tf_l": "tf_mixnet_l_224",
}  # fmt: skip
IMG = 224
MATCH_TOL = 1e-4  # max abs logits difference to timm's stored logits


# ---------------------------------------------------------------- graphs


def oracle_weights(variant: str) -> tuple[dict, dict]:
    oracle = load_oracle(ORACLES[variant])
    return random_state_dict(oracle["shapes"], oracle["seed"], oracle["gain"]), oracle


def timm_graph(variant: str, timm_state: dict, timm_dir: Path | None) -> tuple[bytes | None, dict]:
    """timm's own export: made here when timm imports, else read from ``timm_dir``."""
    try:
        import timm
    except ImportError:
        timm = None
    if timm is not None:
        model = timm.create_model(get_variant(variant).model_name, pretrained=False)
        model.load_state_dict(timm_state, strict=True)
        buf = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model.eval(), (torch.zeros(1, 3, IMG, IMG),), buf, dynamo=False, opset_version=17,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            )  # fmt: skip
        data = buf.getvalue()
        source = f"exported here: timm {timm.__version__} torch.onnx.export (legacy exporter, opset 17, dynamic batch)"
        return data, {"source": source, "sha256": hashlib.sha256(data).hexdigest()}
    if timm_dir is None:
        return None, {"source": "absent: timm not importable and no --timm-onnx DIR"}
    path = Path(timm_dir) / f"timm_{get_variant(variant).model_name}.onnx"
    if not path.is_file():
        return None, {"source": f"absent: {path} not found"}
    data = path.read_bytes()
    proto = onnx.load_from_string(data)
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    source = (
        f"read from {path}: timm's own torch.onnx.export of {get_variant(variant).model_name} with the oracle weights "
        f"(producer {proto.producer_name} {proto.producer_version}, opset {opset}); made outside this venv"
    )
    return data, {"source": source, "sha256": hashlib.sha256(data).hexdigest()}


def se_pool_as_reducemean(data: bytes) -> bytes:
    """Diagnostic: the SE GlobalAveragePools (all but the head's) as ReduceMean(axes=[2,3]) like timm's graph."""
    proto = onnx.load_from_string(data)
    pools = [n for n in proto.graph.node if n.op_type == "GlobalAveragePool"]
    for node in pools[:-1]:  # the last one is the head's pool
        node.op_type = "ReduceMean"
        node.attribute.extend([onnx.helper.make_attribute("axes", [2, 3]), onnx.helper.make_attribute("keepdims", 1)])
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def our_graphs(variant: str, timm_state: dict, diagnostics: bool) -> dict[str, bytes]:
    model = build_model(variant)
    model.load_state_dict(timm_to_own(timm_state))
    folded = fold_bn(model)
    graphs = {
        "plain": to_onnx(model, IMG).SerializeToString(),
        "split": to_onnx(lower(folded, "split"), IMG).SerializeToString(),
        "merged": to_onnx(lower(folded, "merged"), IMG).SerializeToString(),
    }
    if diagnostics:
        graphs["merged-dw"] = to_onnx(lower(folded, "merged", grouped_pointwise=False), IMG).SerializeToString()
        graphs["split-rm"] = se_pool_as_reducemean(graphs["split"])
    return graphs


# ---------------------------------------------------------------- timing


def interleaved(runs: dict, x: np.ndarray, rounds: int, target_s: float, progress) -> dict[str, list[float]]:
    """Per-round mean latency (ms) of every callable in ``runs``, interleaved, rotating order each round."""
    names = list(runs)
    for run in runs.values():  # warm-up: first-call allocations and kernel selection
        for _ in range(3):
            run(x)
    t0 = time.perf_counter()
    runs[names[0]](x)
    calls = max(1, int(target_s / max(time.perf_counter() - t0, 1e-4)))
    per_round: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            t = time.perf_counter()
            for _ in range(calls):
                runs[name](x)
            per_round[name].append((time.perf_counter() - t) / calls * 1e3)
        progress.update(1)
    return per_round


def summarize(per_round: dict[str, list[float]], reference: str) -> dict[str, dict]:
    out = {}
    for name, times in per_round.items():
        row = {"median_ms": float(np.median(times)), "rounds_ms": [round(t, 3) for t in times]}
        if reference in per_round:
            ratios = np.asarray(per_round[reference]) / np.asarray(times)
            row[f"speedup_vs_{reference}"] = float(np.median(ratios))
        if "plain" in per_round:
            row["speedup_vs_plain"] = float(np.median(np.asarray(per_round["plain"]) / np.asarray(times)))
        out[name] = row
    return out


# ---------------------------------------------------------------- TensorRT (GPU only; lazily imported)


def tensorrt_cases(graphs: dict[str, bytes], batches, rounds: int, target_s: float, workdir: Path, progress) -> dict:
    """Build an engine of each lowering (FP32 and FP16 graphs) and time them side by side. Needs a GPU."""
    from mixnet_deploy.batching import BatchProfile
    from mixnet_deploy.bench import bench_input
    from mixnet_deploy.engine_build import EngineOptions, build_engine
    from mixnet_deploy.precision_onnx import to_fp16
    from mixnet_deploy.trt_runner import engine_runner

    results = {}
    opts = EngineOptions(batch=BatchProfile(min(batches), max(batches), max(batches)), img_size=IMG)
    for prec in ("fp32", "fp16"):
        runners = {}
        for name in ("split", "merged"):
            data = graphs[name]
            if prec == "fp16":
                data = to_fp16(onnx.load_from_string(data)).SerializeToString()
            path = workdir / f"{name}.{prec}.onnx"
            path.write_bytes(data)
            built = build_engine(path, prec, opts)
            runners[name] = engine_runner(built.path)  # EngineResult.path
        for b in batches:
            x = bench_input(runners["split"], b, IMG)
            per_round = interleaved({n: r.run for n, r in runners.items()}, x, rounds, target_s, progress)
            results[f"{prec}/b{b}"] = summarize(per_round, "split")
    return results


# ---------------------------------------------------------------- report


def markdown(result: dict) -> str:
    env = result["environment"]
    lines = [
        "# MixConv lowerings on ONNX Runtime CPU",
        "",
        f"{result['date']}; onnxruntime {env['onnxruntime']}, torch {env['torch']}; {env['threads']} intra-op "
        f"threads on {env['cpu_count']} CPUs ({env['cpu']}); load average {env['loadavg_start']} at the start, "
        f"{env['loadavg_end']} at the end (a shared machine: ratios are medians of per-round ratios).",
        f"Rounds: {result['rounds']} per case, graphs interleaved in one process. Speed-up = reference time / "
        "graph time (> 1: faster). MACs: Conv/Gemm multiply-accumulates from the ONNX shapes (the zeros of "
        "merged kernels count).",
        "",
        "| variant | batch | graph | nodes | MACs (G) | median ms | vs timm | vs plain | max abs vs timm logits |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for v, vr in result["variants"].items():
        for b, cases in vr["batches"].items():
            for g, row in cases.items():
                cost = vr["graphs"][g]["cost"][b]
                vt = row.get("speedup_vs_timm")
                lines.append(
                    f"| {v.upper()} | {b} | {g} | {cost['nodes']} | {cost['macs'] / 1e9:.3f} | "
                    f"{row['median_ms']:.2f} | {'-' if vt is None else f'{vt:.2f}x'} | "
                    f"{row['speedup_vs_plain']:.2f}x | {vr['graphs'][g]['max_abs_vs_timm_logits']:.1e} |"
                )
    lines += ["", "Where each timm graph came from:", ""]
    for v, vr in result["variants"].items():
        lines.append(f"- {v.upper()}: {vr['timm_graph']['source']} (sha256 {vr['timm_graph'].get('sha256', '-')})")
    if result.get("tensorrt"):
        lines += ["", "## TensorRT", "", "```", json_text(result["tensorrt"], indent=1), "```"]
    return "\n".join(lines) + "\n"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default="s,m,l")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--timm-onnx", type=Path, help="folder with timm_mixnet_<v>.onnx (when timm is not importable)")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--round-s", type=float, default=0.3, help="seconds per graph per round (default 0.3)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="ONNX Runtime intra-op threads")
    p.add_argument("--diagnostics", action="store_true", help="also merged-dw and split-rm (see the module doc)")
    p.add_argument("--tensorrt", action="store_true", help="also TensorRT engines of split and merged (GPU only)")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    variants = [v.strip().lower() for v in args.variants.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    torch.set_num_threads(args.threads)

    import onnxruntime

    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "rounds": args.rounds,
        "round_s": args.round_s,
        "environment": {
            "onnxruntime": onnxruntime.__version__,
            "torch": torch.__version__,
            "threads": args.threads,
            "cpu_count": os.cpu_count(),
            "cpu": cpu_name(),
            "loadavg_start": [round(v, 2) for v in os.getloadavg()],
        },
        "variants": {},
    }
    total = len(variants) * len(batches) * args.rounds
    progress = tqdm(total=total, desc="rounds", file=sys.stderr, disable=args.quiet)
    graphs_by_variant = {}
    for v in variants:
        timm_state, oracle = oracle_weights(v)
        timm_data, timm_info = timm_graph(v, timm_state, args.timm_onnx)
        graphs = ({"timm": timm_data} if timm_data is not None else {}) | our_graphs(v, timm_state, args.diagnostics)
        graphs_by_variant[v] = graphs
        sessions = {g: ort_session(d, threads=args.threads) for g, d in graphs.items()}
        x_oracle = oracle_input(oracle["seed"], oracle["size"])
        vr = {"timm_graph": timm_info, "graphs": {}, "batches": {}}
        for g, d in graphs.items():
            err = float(np.abs(run_ort(sessions[g], x_oracle) - oracle["logits"]).max())
            if err > MATCH_TOL:
                raise SystemExit(f"{v}/{g}: logits differ from timm's by {err:.3g} > {MATCH_TOL}: not timing it")
            proto = onnx.load_from_string(d)
            vr["graphs"][g] = {
                "max_abs_vs_timm_logits": err,
                "cost": {str(b): graph_cost(proto, b) for b in batches},
            }
        for b in batches:
            x = np.random.default_rng(b).standard_normal((b, 3, IMG, IMG), dtype=np.float32)
            runs = {g: (lambda x, s=s: run_ort(s, x)) for g, s in sessions.items()}
            per_round = interleaved(runs, x, args.rounds, args.round_s, progress)
            vr["batches"][str(b)] = summarize(per_round, "timm" if "timm" in graphs else "plain")
            log.info(
                "%s b%d: %s", v.upper(), b,
                ", ".join(f"{g} {r['median_ms']:.1f} ms" for g, r in vr["batches"][str(b)].items()),
            )  # fmt: skip
        result["variants"][v] = vr
        del sessions
    progress.close()
    result["environment"]["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]

    name = "lowering_cpu"
    if args.tensorrt:  # not run on the CPU machine this was written on
        name = "lowering_tensorrt"
        trt_progress = tqdm(total=len(variants) * 2 * len(batches) * args.rounds, file=sys.stderr, disable=args.quiet)
        result["tensorrt"] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for v in variants:
                result["tensorrt"][v] = tensorrt_cases(
                    graphs_by_variant[v], batches, args.rounds, args.round_s, Path(tmp), trt_progress
                )
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"{name}.json", result)
    write_text(args.out / f"{name}.md", markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
