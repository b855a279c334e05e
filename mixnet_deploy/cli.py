"""Command-line entry points: argument parsing that becomes calls of the library, nothing more.

Exit codes: 0 success, 1 verification failed, 2 bad input, 3 environment failure (full disk,
permission, read-only file system, the GPU stack missing when --engine require asked for it),
130 interrupted. Errors are one line without a traceback; ``--verbose`` shows the traceback and
debug logging.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from . import option_fields
from .arch import VARIANT_CHOICES
from .config import ExportConfig, add_export_options, given_values
from .contract import PIXEL_INPUT, onnx_stem
from .errors import EnvironmentFailure, InputError, VerificationError
from .option_fields import RUN


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump) and exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run_cli(prog: str, argv: Sequence[str] | None, build: Callable[[], Parser], main: Callable, config: type) -> int:
    """Parse, run ``main(args)``, and turn every failure into one line and an exit code; an InputError's
    field is named as the flag ``config`` (the command's config class) declares for it."""
    parser = build()
    args = parser.parse_args(argv)
    verbose = getattr(args, "verbose", False)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", stream=sys.stderr, force=True
    )
    previous = signal.signal(signal.SIGTERM, _sigterm)  # so atomic writes clean up on `kill`
    try:
        code = int(main(args) or 0)
        sys.stdout.flush()  # a closed or full stdout fails here, not in the interpreter's exit
        return code
    except BrokenPipeError:  # `| head -1`: the reader is gone; quiet, as a Unix tool killed by SIGPIPE
        _detach_stdout()
        return SIGPIPE_EXIT
    except (InputError, VerificationError, EnvironmentFailure) as exc:
        if verbose:
            traceback.print_exc()
        flag = partial(option_fields.flag_of, config=config)
        message = exc.render(flag) if isinstance(exc, InputError) else str(exc)  # fields named as flags
        print(f"{prog}: error: {message}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # the machine refused a write that did not go through atomic.py: still exit 3
        if exc.errno == errno.ENAMETOOLONG:  # a path built from a preset or a folder name: bad input
            expected = f"expected names of at most {option_fields.NAME_MAX} bytes"
            print(f"{prog}: error: {exc.filename!r}: {exc.strerror}: {expected}", file=sys.stderr)
            return InputError.exit_code
        failure = _environment_failure(exc)
        if failure is None:
            return _unexpected(prog, exc, verbose)
        if verbose:
            traceback.print_exc()
        print(f"{prog}: error: {failure}", file=sys.stderr)
        return failure.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; no partial artifact was kept", file=sys.stderr)
        return 130
    except Exception as exc:  # an unexpected failure is still one line unless --verbose
        return _unexpected(prog, exc, verbose)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _environment_failure(exc: OSError):
    """The failure of a write without a file name: our files go through atomic.py, so it is standard output
    (``> /dev/full``); stdout is then detached so the interpreter's exit does not fail on it again."""
    from .atomic import ENVIRONMENT_ERRNOS, environment_failure

    if exc.filename is not None:
        return environment_failure(exc, "use", exc.filename)
    if exc.errno not in ENVIRONMENT_ERRNOS:
        return None
    _detach_stdout()
    return EnvironmentFailure("write", "standard output", exc.strerror or os.strerror(exc.errno), errno=exc.errno)


SIGPIPE_EXIT = 128 + signal.SIGPIPE  # 141: what a shell reports for a tool that SIGPIPE ended


def _detach_stdout() -> None:
    """Point stdout at /dev/null, so that the buffered rest is dropped silently at exit (Python's advice for
    SIGPIPE: https://docs.python.org/3/library/signal.html#note-on-sigpipe)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _unexpected(prog: str, exc: Exception, verbose: bool) -> int:
    if verbose:
        traceback.print_exc()
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    print(f"{prog}: error: {type(exc).__name__}: {first} (run with --verbose for the traceback)", file=sys.stderr)
    return 1


# ---------------------------------------------------------------- mixnet-export


def build_export_parser() -> Parser:
    """The options are generated from ExportConfig's fields (config.py); --preset and --verbose are CLI-only."""
    p = Parser(
        prog="mixnet-export",
        description=f"Fold, export and verify MixNet ({VARIANT_CHOICES}) as ONNX (and, where "
        "available, TensorRT engines).",
    )
    run = add_export_options(p)[RUN]
    run.add_argument(
        "--preset", type=Path, metavar="FILE", help="TOML preset of these options (export/*.toml); flags override it"
    )
    run.add_argument("--quiet", action="store_true", help="no progress lines (shown only on a terminal anyway)")
    add_verbose(run)
    return p


def add_verbose(group) -> None:
    group.add_argument("--verbose", action="store_true", help="debug logging and tracebacks")


def export_config(args: argparse.Namespace) -> ExportConfig:
    """The ExportConfig of a command line: defaults <- the --preset file's values <- the flags given."""
    given = given_values(args)
    cfg = ExportConfig(**given)
    if getattr(args, "preset", None) is not None:
        from .output_paths import check_apart
        from .presets import apply_preset, load_preset

        check_apart({"out_dir": cfg.out_dir, "triton_repo": cfg.triton_repo}, {"preset": args.preset}, ExportConfig)
        cfg = apply_preset(cfg, load_preset(args.preset), set(given), str(args.preset))
    return cfg


def print_export_summary(report, failed: bool = False) -> None:
    """The run's table on stdout; ``failed``: a run that failed verification (nothing of it kept), its report
    being ``<model>.failed.json``."""
    from .acceptance import verdict_line
    from .arch import get_variant
    from .export_reports import INDEX_NAME, report_name
    from .export_set import failed_name

    print(
        f"{get_variant(report.variant).model_name} @ {report.img_size}x{report.img_size}, weights: "
        f"{report.weights['source']}, mdconv: {report.mdconv}; variant {report.variant}: "
        f"{report.weights.get('variant_reason', '')}"
    )
    if report.mdconv_auto:
        auto = report.mdconv_auto
        timed = ", ".join(f"{m} {ms:.2f} ms" for m, ms in auto["ms"].items())
        print(f"mdconv auto: {timed} on {auto['runtime']} at batch {auto['batch']}: {auto['chosen']} kept")
    print(
        f"{'precision':<9} {'file':<28} {'MB':>6} {'nodes':>6} {'max abs':>9} {'min cos':>9} {'mean cos':>9} "
        f"{'top-1':>5} {'top-5':>5}  {'status':<8} "
        f"(vs {'PyTorch' if len(report.artifacts) < 2 else 'PyTorch / FP32 ONNX'})"
    )
    for a in report.artifacts:
        m = a.metrics
        status = "REFUSED" if a.refused else "passed" if failed else "kept"
        print(
            f"{a.precision:<9} {Path(a.path).name:<28} {a.bytes / 1e6:>6.2f} {a.nodes:>6} "
            f"{m['max_abs']:>9.2e} {m['min_cosine']:>9.6f} {m['mean_cosine']:>9.6f} {m['top1']:>5.2f} "
            f"{m['top5_overlap']:>5.2f}  {status}"
        )
    if report.verification:
        print(f"verified on: {report.verification['source']} (every precision)")
    served = report.artifacts[0].served
    if served and (served["input_format"] == PIXEL_INPUT or served["top_k"]):
        worst = max(a.served.get("max_abs_vs_backbone", 0.0) for a in report.artifacts if a.served)
        print(f"served: {served['input']['name']} {served['input']['type']} ({served['input']['bytes_per_image']:,} "
              f"bytes per image) -> {', '.join(served['outputs'])}; {served['nodes_added']} nodes added; max abs "
              f"{worst:.2g} vs each file's float32-nchw graph on {served['checked_on']}")
    for a in report.artifacts:
        if a.acceptance.get("criterion") == "top1_drop":
            print(verdict_line(a.precision, a.acceptance))
    for e in report.engines:  # engine.EngineResult
        print(f"engine    {Path(e.path).name:<28} {e.bytes / 1e6:>6.2f}  built in {e.seconds:.1f} s")
    for note in report.notes:
        if not note.startswith("WARNING"):
            print(note)
    for what, names in report.previous_run.items():  # export_set.Survey.outcome
        if names:
            print(f"{what.replace('_', ' ')}: {', '.join(names)}")
    first = Path(report.artifacts[0].path)
    model = onnx_stem(first.name)
    if failed:
        print(f"nothing of this run was kept (a file was refused); report: {first.parent / failed_name(model)}")
        return
    report_path = first.parent / report_name(model)
    print(f"report: {report_path} (folder index: {first.parent / INDEX_NAME})  ({report.timings_s['total']:.1f} s)")


def _export(args) -> int:
    from .environment import Progress
    from .pipeline import run_export

    try:
        report = run_export(export_config(args), Progress(enabled=False) if args.quiet else Progress())
    except VerificationError as exc:  # stdout still says what passed and what was refused
        if exc.report is not None and exc.report.artifacts:
            print_export_summary(exc.report, failed=True)
        raise
    print_export_summary(report)
    return 0


def export_main(argv: Sequence[str] | None = None) -> int:
    return run_cli("mixnet-export", argv, build_export_parser, _export, ExportConfig)


# ---------------------------------------------------------------- mixnet-parity


def build_parity_parser() -> Parser:
    """The options are generated from ParityConfig's fields (parity.py); the output files are CLI-only."""
    from .parity import ParityConfig

    description = (
        "Compare exported models (ONNX / TensorRT engines) with the unfolded float32 PyTorch reference "
        "on the same inputs; the tolerance comes from each candidate's precision metadata. "
        "Exit 0: all pass, 1: any fails, 2: bad input, 3: environment failure (disk, permissions), 130: interrupted."
    )
    return config_parser("mixnet-parity", description, ParityConfig, "write the full results as JSON")


def config_parser(prog: str, description: str, config: type, json_help: str) -> Parser:
    """A command's parser generated from ``config``, plus the CLI-only --json FILE, --quiet and --verbose."""
    p = Parser(prog=prog, description=description)
    run = option_fields.add_options(p, config)[RUN]
    run.add_argument("--json", type=Path, metavar="FILE", help=json_help)
    add_quiet_verbose(run)
    return p


def add_quiet_verbose(group) -> None:
    group.add_argument("--quiet", action="store_true", help="no progress output")
    add_verbose(group)


def _parity(args) -> int:
    from .atomic import write_json
    from .bench_output import check_output_path
    from .parity import ParityConfig, check_outputs, header_lines, parity_table, run_parity

    for path, name in ((args.json, "json"), (getattr(args, "predictions", None), "predictions")):
        if path:
            check_output_path(path, name)
    cfg = ParityConfig(**option_fields.given_values(args, ParityConfig))
    check_outputs(cfg, json=args.json)
    report = run_parity(cfg, progress=not args.quiet)
    print("\n".join(header_lines(report)))
    for result in report.results:
        print(parity_table(result, report.reference.get("accuracy")))
    passed = sum(r.passed for r in report.results)
    print(f"{passed} of {len(report.results)} candidate(s) pass")
    if args.json:
        write_json(args.json, report.as_dict())
    return 0 if report.passed else 1


def parity_main(argv: Sequence[str] | None = None) -> int:
    from .parity import ParityConfig

    return run_cli("mixnet-parity", argv, build_parity_parser, _parity, ParityConfig)


# ---------------------------------------------------------------- mixnet-bench


def build_bench_parser() -> Parser:
    """The options are generated from BenchConfig's fields (bench.py); the output files are CLI-only."""
    from .bench import BenchConfig

    p = Parser(
        prog="mixnet-bench",
        description="Latency percentiles and throughput of models per runtime and batch size, with the environment; "
        "with --images one row per model with its status, accuracy and latency (exit 1 when one is refused).",
    )
    run = option_fields.add_options(p, BenchConfig)[RUN]
    run.add_argument("--json", type=Path, metavar="FILE", help="write results + environment as JSON")
    run.add_argument("--markdown", type=Path, metavar="FILE", help="write a Markdown table")
    run.add_argument("--plot", type=Path, metavar="FILE", help="write a plot: .png, .svg or .pdf (needs matplotlib)")
    add_quiet_verbose(run)
    return p


def _bench(args) -> int:
    from .bench import BenchConfig, check_images, check_outputs, run_model_benchmark
    from .bench_output import (
        artifact_table,
        check_output_path,
        check_plot_path,
        text_table,
        unstable_line,
        write_markdown,
        write_plot,
        write_result_json,
    )

    for name in ("json", "markdown", "plot"):
        if getattr(args, name):
            check_output_path(getattr(args, name), name)
    if args.plot:
        check_plot_path(args.plot)
    cfg = BenchConfig(**option_fields.given_values(args, BenchConfig))
    check_outputs(cfg, **{name: getattr(args, name) for name in ("json", "markdown", "plot")})
    found = check_images(cfg)
    result = run_model_benchmark(cfg, progress=not args.quiet, found=found)
    print(text_table(result))
    if result.artifacts is not None:
        print(artifact_table(result))
    unstable = unstable_line(result)
    if unstable and not args.quiet:
        print(f"mixnet-bench: {unstable}", file=sys.stderr)
    if args.json:
        write_result_json(result, args.json)
    if args.markdown:
        write_markdown(result, args.markdown)
    if args.plot:
        write_plot(result, args.plot)
    return 1 if any(a["status"] != "ok" for a in result.artifacts or ()) else 0


def bench_main(argv: Sequence[str] | None = None) -> int:
    from .bench import BenchConfig

    return run_cli("mixnet-bench", argv, build_bench_parser, _bench, BenchConfig)


# ---------------------------------------------------------------- mixnet-predict


def build_predict_parser() -> Parser:
    """The options are generated from PredictConfig's fields (predict.py); the output file is CLI-only."""
    from .predict import PredictConfig

    description = (
        "Classify image files with any exported model (ONNX, TensorRT engine) or checkpoint: the top-N "
        "class names with probabilities per image, preprocessed as the model's metadata says."
    )
    return config_parser("mixnet-predict", description, PredictConfig, "write JSON lines, one object per image")


def _predict(args) -> int:
    from .atomic import write_text
    from .bench_output import check_output_path
    from .predict import PredictConfig, check_outputs, json_lines, predict, predictions_table

    cfg = PredictConfig(**option_fields.given_values(args, PredictConfig))
    if args.json:
        check_output_path(args.json, "json")
        check_outputs(cfg, json=args.json)
    model, predictions = predict(cfg, not args.quiet)
    print(f"model: {model}")
    print(predictions_table(predictions))
    if args.json:
        write_text(args.json, json_lines(predictions, model))
    return 0


def predict_main(argv: Sequence[str] | None = None) -> int:
    from .predict import PredictConfig

    return run_cli("mixnet-predict", argv, build_predict_parser, _predict, PredictConfig)


# ---------------------------------------------------------------- mixnet-serve


def build_serve_parser() -> Parser:
    """The options are generated from ServeConfig's fields (serve.py); --verbose is CLI-only."""
    from .serve import ServeConfig

    p = Parser(
        prog="mixnet-serve",
        description="Serve exported models on NVIDIA's Triton Inference Server (PyTriton: pip install "
        "'mixnet-deploy[serve]'), over HTTP and gRPC with dynamic batching, as mixnet-export --triton-repo names "
        "them. SIGTERM or Ctrl-C stops it (exit 0) after the requests in flight.",
    )
    add_verbose(option_fields.add_options(p, ServeConfig)[RUN])
    return p


def _serve(args) -> int:
    from .serve import ServeConfig, serve

    cfg = ServeConfig(**option_fields.given_values(args, ServeConfig))
    return serve(cfg, announce=lambda line: print(line, flush=True), verbose=args.verbose)


def serve_main(argv: Sequence[str] | None = None) -> int:
    from .serve import ServeConfig

    return run_cli("mixnet-serve", argv, build_serve_parser, _serve, ServeConfig)


if __name__ == "__main__":
    sys.exit(export_main())
