"""Benchmark results for machines (JSON), people (Markdown / terminal tables) and eyes (PNG plot).

matplotlib is imported inside :func:`write_plot` only, so the rest works without it.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from .atomic import atomic_path, write_json, write_text
from .bench import BenchResult

COLUMNS = (
    ("batch", "batch", "{:d}"),
    ("p50 ms", "p50_ms", "{:.2f}"),
    ("p90 ms", "p90_ms", "{:.2f}"),
    ("p95 ms", "p95_ms", "{:.2f}"),
    ("p99 ms", "p99_ms", "{:.2f}"),
    ("mean ms", "mean_ms", "{:.2f}"),
    ("std ms", "std_ms", "{:.2f}"),
    ("CV", "cv", "{:.1%}"),
    ("img/s", "throughput_ips", "{:.1f}"),
    ("iters", "iterations", "{:d}"),
)


def label(row: dict) -> str:
    """``mixnet_s.onnx [ort-cpu]`` style name of a result row's model/runtime."""
    return row["model"]["name"]


def rows(result: BenchResult | dict) -> list[dict]:
    data = result.as_dict() if isinstance(result, BenchResult) else result
    return data["results"]


def environment_lines(env: dict) -> list[str]:
    cpu = env.get("cpu", {})
    v = env.get("versions", {})
    gpu = env.get("gpu")
    gpus = "absent" if not isinstance(gpu, list) else "; ".join(f"{g['name']} (driver {g['driver']})" for g in gpu)
    lines = [
        f"host {env.get('host')}: {cpu.get('model')}, {cpu.get('usable_cpus')} usable of {cpu.get('logical_cpus')} "
        f"logical CPUs, torch threads {cpu.get('torch_threads')}, governor {cpu.get('governor')}, "
        f"load average {cpu.get('load_average_1_5_15min')} (1/5/15 min, at the start)",
        f"GPU: {gpus}",
        "versions: " + ", ".join(f"{k} {v[k]}" for k in ("torch", "onnxruntime", "tensorrt", "onnx") if k in v),
    ]
    jetson = env.get("jetson")
    if isinstance(jetson, dict):
        lines.append(
            f"Jetson: L4T {jetson.get('l4t_release')}, board {jetson.get('board')}, "
            f"power mode {jetson.get('power_mode')}, jetson_clocks {str(jetson.get('jetson_clocks'))[:80]!r}"
        )
    return lines


def text_table(result: BenchResult | dict) -> str:
    """Aligned plain-text table, one line per model/runtime and batch."""
    data = rows(result)
    names = [label(r) for r in data]
    width = max([len("model"), *map(len, names)])
    head = f"{'model':<{width}} " + " ".join(f"{h:>8}" for h, _, _ in COLUMNS)
    lines = [head]
    for name, r in zip(names, data):
        cells = " ".join(f"{fmt.format(r[key]):>8}" for _, key, fmt in COLUMNS)
        lines.append(f"{name:<{width}} {cells}" + ("  UNSTABLE" if r.get("unstable") else ""))
    return "\n".join(lines)


def markdown(result: BenchResult | dict, title: str = "Latency") -> str:
    data = result.as_dict() if isinstance(result, BenchResult) else result
    out = [f"# {title}", "", *(f"- {line}" for line in environment_lines(data["environment"]))]
    cfg = data["config"]
    timing = f"{cfg['iters']} calls" if cfg.get("iters") else f"{cfg.get('duration_s')} s"
    out += [
        f"- measured {data['created']}: warm-up {cfg.get('warmup_s')} s, {timing} per case "
        f"in {cfg.get('rounds', 1)} interleaved round(s)",
        "",
        "| model | precision | " + " | ".join(h for h, _, _ in COLUMNS) + " |",
        "|---|---|" + "---:|" * len(COLUMNS),
    ]
    for r in data["results"]:
        cells = " | ".join(fmt.format(r[key]) for _, key, fmt in COLUMNS)
        flag = " (unstable)" if r.get("unstable") else ""
        out.append(f"| {label(r)}{flag} | {r['model'].get('precision') or '?'} | {cells} |")
    return "\n".join(out) + "\n"


def write_markdown(result: BenchResult | dict, path: str | os.PathLike, title: str = "Latency") -> Path:
    return write_text(path, markdown(result, title))


def write_result_json(result: BenchResult | dict, path: str | os.PathLike) -> Path:
    return write_json(path, result.as_dict() if isinstance(result, BenchResult) else result)


def write_plot(result: BenchResult | dict, path: str | os.PathLike) -> Path:
    """PNG: latency percentiles (p50 solid, p50-p90 band, p99 dashed) and throughput against batch size.

    One colour per model/runtime; the legend (right of the throughput panel) names them for both panels.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        from .errors import InputError

        raise InputError("matplotlib is not installed (pip install matplotlib)", field="plot", value=path) from exc

    series: dict[str, list[dict]] = defaultdict(list)
    for r in rows(result):
        series[label(r)].append(r)
    fig, (ax_lat, ax_thr) = plt.subplots(1, 2, figsize=(13, 5))
    cmap = plt.get_cmap("tab10" if len(series) <= 10 else "tab20")
    for i, (name, points) in enumerate(series.items()):
        points = sorted(points, key=lambda r: r["batch"])
        color = cmap(i % cmap.N)
        b = [r["batch"] for r in points]
        ax_lat.plot(b, [r["p50_ms"] for r in points], "o-", color=color)
        ax_lat.fill_between(b, [r["p50_ms"] for r in points], [r["p90_ms"] for r in points], color=color, alpha=0.15)
        ax_lat.plot(b, [r["p99_ms"] for r in points], "x--", color=color)
        ax_thr.plot(b, [r["throughput_ips"] for r in points], "o-", color=color, label=name)
    for ax in (ax_lat, ax_thr):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.grid(True, which="both", alpha=0.3)
        batches = sorted({r["batch"] for r in rows(result)})
        ax.set_xticks(batches, [str(v) for v in batches])
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("latency per call (ms, log)")
    ax_lat.set_title("latency: p50 (line), p50-p90 (band), p99 (dashed)")
    ax_thr.set_ylim(bottom=0)
    ax_thr.set_ylabel("throughput (images/s)")
    ax_thr.set_title("throughput")
    ax_thr.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    finally:
        plt.close(fig)
    return Path(path)


def comparison_markdown(result: BenchResult | dict, baseline_runtime: str = "torch") -> str:
    """Per variant and batch: median of every runtime/precision and its speed-up over ``baseline_runtime``."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows(result):
        groups[(r["model"].get("variant") or "?", r["batch"])].append(r)
    out = [
        "| variant | batch | runtime | precision | p50 ms | p90 ms | img/s | speed-up vs PyTorch eager (p50) |",
        "|---|---:|---|---|---:|---:|---:|---:|",
    ]
    for (variant, batch), group in sorted(groups.items()):
        base = next((r for r in group if r["model"]["runtime"] == baseline_runtime), None)
        for r in group:
            ratio = f"{base['p50_ms'] / r['p50_ms']:.2f}x" if base else "n/a"
            out.append(
                f"| {variant.upper()} | {batch} | {r['model']['runtime']} | {r['model'].get('precision') or '?'} | "
                f"{r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['throughput_ips']:.1f} | {ratio} |"
            )
    return "\n".join(out) + "\n"


def check_output_path(path: str | os.PathLike, field: str) -> Path:
    """Refuse, before any work, an output whose folder does not exist or is not writable.

    ``field`` is the option that named the file (``json``, ``markdown``, ``plot``): errors name it.
    """
    from .errors import InputError

    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise InputError("expected a file name", field=field, value=path, problem="is a directory")
    if not parent.is_dir():
        raise InputError(f"folder {str(parent)!r} does not exist", field=field, value=path)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"folder {str(parent)!r} is not writable", field=field, value=path)
    probe = parent / f".{path.name}.probe-{os.getpid()}"  # os.access says yes to root even where it cannot (/proc)
    try:
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as exc:
        raise InputError(f"cannot write in folder {str(parent)!r} ({exc.strerror})", field=field, value=path) from None
    return path
