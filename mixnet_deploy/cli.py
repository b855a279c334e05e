"""Command-line entry points: argument parsing that becomes calls of the library, nothing more.

Exit codes: 0 success, 1 verification failed, 2 bad input, 130 interrupted. Errors are one
line without a traceback; ``--verbose`` shows the traceback and debug logging.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import InputError, VerificationError


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump) and exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run_cli(prog: str, argv: Sequence[str] | None, build: Callable[[], Parser], main: Callable) -> int:
    parser = build()
    args = parser.parse_args(argv)
    verbose = getattr(args, "verbose", False)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", stream=sys.stderr, force=True
    )
    previous = signal.signal(signal.SIGTERM, _sigterm)  # so atomic writes clean up on `kill`
    try:
        return int(main(args) or 0)
    except (InputError, VerificationError) as exc:
        if verbose:
            traceback.print_exc()
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; no partial artifact was kept", file=sys.stderr)
        return 130
    except Exception as exc:  # an unexpected failure is still one line unless --verbose
        if verbose:
            traceback.print_exc()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"{prog}: error: {type(exc).__name__}: {first} (run with --verbose for the traceback)", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


# ---------------------------------------------------------------- mixnet-export


def build_export_parser() -> Parser:
    p = Parser(
        prog="mixnet-export",
        description="Fold, export and verify MixNet-S/M/L as ONNX (and, where available, TensorRT engines).",
    )
    p.add_argument("--variant", help="s, m or l (also mixnet_s, ...); default: the checkpoint's, else s")
    p.add_argument(
        "--weights",
        help="checkpoint (.pth/.pt/.safetensors; timm or mixnet-deploy layout), or 'timm' for timm's pretrained "
        "file from the local Hugging Face cache; default: seeded random weights (with a warning)",
    )
    p.add_argument("--img-size", type=int, default=224, help="input height = width, a multiple of 32 (default 224)")
    p.add_argument("--out", type=Path, default=Path("artifacts"), help="output directory (default ./artifacts)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 17..21 (default 17)")
    p.add_argument("--engine", default="auto", help="TensorRT engine build: auto (default), require, skip")
    p.add_argument(
        "--batch", default="1:8:32", help="batch profile MIN:OPT:MAX for engines and Triton (default 1:8:32)"
    )
    p.add_argument("--verbose", action="store_true", help="debug logging and tracebacks")
    return p


def export_config_from_args(args: argparse.Namespace):
    from .pipeline import ExportConfig
    from .profile import parse_batch_profile

    return ExportConfig(
        variant=args.variant,
        weights=args.weights,
        img_size=args.img_size,
        out_dir=args.out,
        opset=args.opset,
        engine=args.engine,
        batch=parse_batch_profile(args.batch),
        verbose=args.verbose,
    )


def print_export_summary(report) -> None:
    print(f"mixnet_{report.variant} @ {report.img_size}x{report.img_size}, weights: {report.weights['source']}")
    print(f"{'precision':<9} {'file':<28} {'MB':>6} {'nodes':>6} {'max abs':>9} {'min cos':>9}")
    for a in report.artifacts:
        m = a.metrics
        print(
            f"{a.precision:<9} {Path(a.path).name:<28} {a.bytes / 1e6:>6.2f} {a.nodes:>6} "
            f"{m['max_abs']:>9.2e} {m['min_cosine']:>9.6f}"
        )
    for note in report.notes:
        if not note.startswith("WARNING"):
            print(note)
    print(f"report: {Path(report.artifacts[0].path).parent / 'report.json'}  ({report.timings_s['total']:.1f} s)")


def _export(args) -> int:
    from .pipeline import run_export

    report = run_export(export_config_from_args(args))
    print_export_summary(report)
    return 0


def export_main(argv: Sequence[str] | None = None) -> int:
    return run_cli("mixnet-export", argv, build_export_parser, _export)


if __name__ == "__main__":
    sys.exit(export_main())
