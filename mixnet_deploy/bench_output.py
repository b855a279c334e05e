"""Benchmark results for machines (JSON), people (Markdown / terminal tables) and eyes (PNG/SVG/PDF plot).

matplotlib is imported inside the plot functions only, so the rest works without it; :func:`check_plot_path`
checks before any work that it is there and that the file's suffix names a format it writes.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from .atomic import atomic_path, write_json, write_text
from .bench import UNSTABLE_CV, BenchResult

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
ENERGY_COLUMN = ("J/img", "{:.4f}")  # shown where tegrastats measured it (a Jetson)


def cell(fmt: str, value) -> str:
    """A value in its format; '-' for a figure not measured (a percentile with too few calls, no energy)."""
    return "-" if value is None else fmt.format(value)


def label(row: dict) -> str:
    """``mixnet_s.onnx [ort-cpu]`` style name of a result row's model/runtime."""
    return row["model"]["name"]


def rows(result: BenchResult | dict) -> list[dict]:
    data = result.as_dict() if isinstance(result, BenchResult) else result
    return data["results"]


def _data(result: BenchResult | dict) -> dict:
    return result.as_dict() if isinstance(result, BenchResult) else result


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


def _energy(r: dict):
    return (r.get("energy") or {}).get("j_per_image")


def _has_energy(data: dict) -> bool:
    return isinstance(data.get("energy"), dict)


def percentile_note(data: dict) -> str:
    """Which percentiles need how many timed calls ('-' in the tables where fewer were made)."""
    need = data.get("percentile_min_calls") or {}
    shown = ", ".join(f"{k} >= {v}" for k, v in need.items() if v > 1)
    return f"'-': not enough timed calls for that figure ({shown} calls; raise --duration-s or --iters)"


def text_table(result: BenchResult | dict) -> str:
    """Aligned plain-text table, one line per model/runtime and batch, with its precision."""
    data = _data(result)
    names = [label(r) for r in data["results"]]
    width = max([len("model"), *map(len, names)])
    columns = list(COLUMNS) + ([(ENERGY_COLUMN[0], None, ENERGY_COLUMN[1])] if _has_energy(data) else [])
    head = f"{'model':<{width}} {'precision':>9} " + " ".join(f"{h:>8}" for h, _, _ in columns)
    lines = [head]
    for name, r in zip(names, data["results"]):
        cells = " ".join(f"{cell(fmt, r[key] if key else _energy(r)):>8}" for _, key, fmt in columns)
        precision = r["model"].get("precision") or "?"
        lines.append(f"{name:<{width}} {precision:>9} {cells}" + ("  UNSTABLE" if r.get("unstable") else ""))
    if any(r[key] is None for r in data["results"] for _, key, _ in COLUMNS):
        lines.append(percentile_note(data))
    return "\n".join(lines)


def unstable_line(result: BenchResult | dict) -> str | None:
    """One line for all unstable cases (None: none was), for stderr."""
    bad = [r for r in rows(result) if r.get("unstable")]
    if not bad:
        return None
    worst = max(bad, key=lambda r: r["cv"])
    return (f"{len(bad)} of {len(rows(result))} case(s) unstable (CV > {UNSTABLE_CV:.0%}, UNSTABLE in the table; "
            f"worst {label(worst)} batch {worst['batch']}: {worst['cv']:.1%}): other load on the machine, frequency "
            "scaling or too short a run; the median is the robust figure")  # fmt: skip


def markdown(result: BenchResult | dict, title: str = "Latency") -> str:
    data = _data(result)
    out = [f"# {title}", "", *(f"- {line}" for line in environment_lines(data["environment"]))]
    cfg = data["config"]
    timing = f"{cfg['iters']} calls" if cfg.get("iters") else f"{cfg.get('duration_s')} s"
    energy = data.get("energy")
    out += [
        f"- measured {data['created']}: warm-up {cfg.get('warmup_s')} s, {timing} per case "
        f"in {cfg.get('rounds', 1)} interleaved round(s)",
        f"- {percentile_note(data)}",
        "- energy: " + (f"tegrastats every {energy['interval_ms']} ms, rail(s) {', '.join(energy['rails']) or '?'}"
                        if isinstance(energy, dict) else str(energy)),
    ]  # fmt: skip
    columns = list(COLUMNS) + ([(ENERGY_COLUMN[0], None, ENERGY_COLUMN[1])] if _has_energy(data) else [])
    out += ["", "| model | precision | " + " | ".join(h for h, _, _ in columns) + " |",
            "|---|---|" + "---:|" * len(columns)]  # fmt: skip
    for r in data["results"]:
        cells = " | ".join(cell(fmt, r[key] if key else _energy(r)) for _, key, fmt in columns)
        flag = " (unstable)" if r.get("unstable") else ""
        out.append(f"| {label(r)}{flag} | {r['model'].get('precision') or '?'} | {cells} |")
    if data.get("artifacts") is not None:
        out += ["", "## Per artifact", "", *artifact_markdown(data)]
    return "\n".join(out) + "\n"


def _artifact_columns(data: dict) -> list[tuple[str, callable]]:
    """(heading, row -> cell text) of the per-artifact table: accuracy, then latency per batch."""
    labelled = (data.get("images") or {}).get("labels") not in (None, "none")

    def acc(key: str, fmt: str, against_reference: bool = False):
        def get(row: dict) -> str:
            a = row["accuracy"]
            return "ref" if against_reference and a.get("is_reference") else cell(fmt, a.get(key))

        return get

    columns = [("MB", lambda row: cell("{:.2f}", row["size_mb"]))]
    if labelled:
        columns += [("top-1", acc("top1", "{:.4f}")), ("top-5", acc("top5", "{:.4f}"))]
    else:
        columns += [("agree", acc("agreement_top1", "{:.4f}", True)), ("min cos", acc("min_cosine", "{:.6f}", True))]
    energy = _has_energy(data)
    for b in data["config"]["batches"]:
        def lat(key: str, fmt: str, b=str(b)):
            return lambda row: cell(fmt, row["latency"].get(b, {}).get(key))

        columns += [(f"b{b} p50 ms", lat("p50_ms", "{:.2f}")), (f"b{b} p99 ms", lat("p99_ms", "{:.2f}")),
                    (f"b{b} img/s", lat("images_per_s", "{:.1f}"))]  # fmt: skip
        if energy:
            columns.append((f"b{b} J/img", lat("j_per_image", ENERGY_COLUMN[1])))
    return columns


def images_line(data: dict) -> str:
    """What the accuracy columns were measured on and against."""
    images = data["images"]
    labels = images.get("labels")
    against = (f"top-1/top-5 against the labels ({labels})" if labels not in (None, "none")
               else "top-1 agreement and min cosine against the FP32 model of the same variant and weights")
    return (f"accuracy on {images.get('n')} image(s) of {images.get('folder')} ({images.get('skipped')}): "
            f"{against}")  # fmt: skip


def artifact_table(result: BenchResult | dict) -> str:
    """Plain text: one line per model/runtime (status, precision, runtime, size, accuracy, latency per batch);
    why each refused one was refused below it."""
    data = _data(result)
    arts = data["artifacts"]
    columns = _artifact_columns(data)
    width = max([len("model"), *(len(a["name"]) for a in arts)])
    head = f"{'model':<{width}} {'status':>8} {'precision':>9} {'runtime':>9} " + " ".join(
        f"{h:>{max(8, len(h))}}" for h, _ in columns)
    lines = [images_line(data), head]
    for a in arts:
        cells = " ".join(f"{get(a):>{max(8, len(h))}}" for h, get in columns)
        lines.append(f"{a['name']:<{width}} {a['status']:>8} {a['precision'] or '?':>9} {a['runtime']:>9} {cells}")
    lines += [f"refused: {a['name']}: {a['why']}" for a in arts if a["why"]]
    lines += [f"note: {a['name']}: {a['accuracy']['note']}" for a in arts if a["accuracy"].get("note")]
    return "\n".join(lines)


def artifact_markdown(data: dict) -> list[str]:
    columns = _artifact_columns(data)
    out = [f"- {images_line(data)}", "",
           "| model | status | precision | runtime | " + " | ".join(h for h, _ in columns) + " |",
           "|---|---|---|---|" + "---:|" * len(columns)]  # fmt: skip
    for a in data["artifacts"]:
        status = f"refused: {a['why']}".replace("|", "\\|") if a["why"] else a["status"]
        if a["accuracy"].get("note"):
            status += f" ({a['accuracy']['note']})"
        out.append(f"| {a['name']} | {status} | {a['precision'] or '?'} | {a['runtime']} | "
                   + " | ".join(get(a) for _, get in columns) + " |")  # fmt: skip
    return out


def write_markdown(result: BenchResult | dict, path: str | os.PathLike, title: str = "Latency") -> Path:
    return write_text(path, markdown(result, title))


def write_result_json(result: BenchResult | dict, path: str | os.PathLike) -> Path:
    return write_json(path, result.as_dict() if isinstance(result, BenchResult) else result)


PLOT_FORMATS = ("png", "svg", "pdf")  # what matplotlib writes without extra software (its Agg, SVG, PDF backends)
PLOT_INSTALL = "pip install matplotlib, or pip install 'mixnet-deploy[plot]'"
MARKERS = "osD^v<>P*X"  # one per precision, in precision_table order: FP32 and FP16 lines never look alike


def check_plot_path(path: str | os.PathLike) -> Path:
    """``--plot FILE`` before any work: a suffix the writer honours (.png, .svg, .pdf) and matplotlib importable."""
    from .errors import InputError

    path = Path(path)
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in PLOT_FORMATS:
        expected = f"expected a file name ending {', '.join('.' + f for f in PLOT_FORMATS)} (the plot's format)"
        raise InputError(expected, field="plot", value=str(path))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InputError(f"expected matplotlib, which is not installed ({PLOT_INSTALL})", field="plot",
                         value=str(path), problem="needs matplotlib") from None  # fmt: skip
    return path


def plot_title(data: dict) -> str:
    """Host, CPU, threads, load and date of the run: a plot seen alone still says where it was measured."""
    env, cfg = data["environment"], data["config"]
    cpu = env.get("cpu", {})
    threads = cfg.get("threads") or f"runtime default (torch {cpu.get('torch_threads', '?')})"
    load = cpu.get("load_average_1_5_15min", "?")
    load = load[0] if isinstance(load, list) else load  # the 1-minute figure
    return (f"mixnet-bench on {env.get('host', '?')} ({cpu.get('model', '?')}), threads {threads}, "
            f"load {load}, {data['created'][:16].replace('T', ' ')} UTC")  # fmt: skip


def _marker(precision: str | None) -> str:
    from . import precision_table

    names = list(precision_table.names())
    return MARKERS[names.index(precision) % len(MARKERS)] if precision in names else "x"


def plot_figure(result: BenchResult | dict):
    """The figure: latency percentiles (p50 solid, p50-p90 band, p99 dashed) and throughput against batch size.

    One colour per model/runtime and one marker per precision; unstable points ringed in red; percentiles
    without enough calls left out. The title says host, threads, load and date.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = _data(result)
    series: dict[str, list[dict]] = defaultdict(list)
    for r in data["results"]:
        series[label(r)].append(r)
    fig, (ax_lat, ax_thr) = plt.subplots(1, 2, figsize=(13, 5.4))
    cmap = plt.get_cmap("tab10" if len(series) <= 10 else "tab20")
    for i, (name, points) in enumerate(series.items()):
        points = sorted(points, key=lambda r: r["batch"])
        color, precision = cmap(i % cmap.N), points[0]["model"].get("precision")
        marker, b = _marker(precision), [r["batch"] for r in points]
        ax_lat.plot(b, [r["p50_ms"] for r in points], "-", marker=marker, color=color)
        band = [r for r in points if r["p90_ms"] is not None]
        ax_lat.fill_between([r["batch"] for r in band], [r["p50_ms"] for r in band], [r["p90_ms"] for r in band],
                            color=color, alpha=0.15)  # fmt: skip
        tail = [r for r in points if r["p99_ms"] is not None]
        ax_lat.plot([r["batch"] for r in tail], [r["p99_ms"] for r in tail], "--", marker=marker, color=color,
                    fillstyle="none")  # fmt: skip
        ax_thr.plot(b, [r["throughput_ips"] for r in points], "-", marker=marker, color=color,
                    label=f"{name} ({precision or '?'})")  # fmt: skip
    _mark_unstable(data["results"], ax_lat, ax_thr)
    _axes(data, ax_lat, ax_thr)
    fig.suptitle(plot_title(data), fontsize=9)
    fig.tight_layout()
    return fig


def _mark_unstable(results: list[dict], ax_lat, ax_thr) -> None:
    bad = [r for r in results if r.get("unstable")]
    if not bad:
        return
    ring = {"marker": "o", "s": 160, "facecolors": "none", "edgecolors": "red", "linewidths": 1.5, "zorder": 5}
    ax_lat.scatter([r["batch"] for r in bad], [r["p50_ms"] for r in bad], **ring)
    ax_thr.scatter([r["batch"] for r in bad], [r["throughput_ips"] for r in bad],
                   label=f"unstable (CV > {UNSTABLE_CV:.0%})", **ring)  # fmt: skip


def _axes(data: dict, ax_lat, ax_thr) -> None:
    batches = sorted({r["batch"] for r in data["results"]})
    for ax in (ax_lat, ax_thr):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_xticks(batches, [str(v) for v in batches])
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("latency per call (ms, log)")
    ax_lat.set_title("latency: p50 (line), p50-p90 (band), p99 (dashed, open markers)", fontsize=9)
    ax_thr.set_ylim(bottom=0)
    ax_thr.set_ylabel("throughput (images/s)")
    ax_thr.set_title("throughput; marker = precision", fontsize=9)
    ax_thr.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)


def write_plot(result: BenchResult | dict, path: str | os.PathLike) -> Path:
    """The figure of :func:`plot_figure` in the format of ``path``'s suffix (.png, .svg, .pdf)."""
    import matplotlib.pyplot as plt

    path = check_plot_path(path)
    fig = plot_figure(result)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=path.suffix.lower().lstrip("."), dpi=110)
    finally:
        plt.close(fig)
    return path


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
                f"{r['p50_ms']:.2f} | {cell('{:.2f}', r['p90_ms'])} | {r['throughput_ips']:.1f} | {ratio} |"
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
