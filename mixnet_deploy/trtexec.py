"""``DIR/<model>.trtexec.sh``: the trtexec commands equivalent to ``mixnet-export``'s engine build, plus benchmarks.

For Jetson users who drive trtexec from JetPack (``/usr/src/tensorrt/bin/trtexec``) and for anyone who
wants to reproduce a build by hand. Writing the recipe needs no TensorRT; running it does.

Flags, and the sources they were checked against:

- The script reads the TensorRT version of the trtexec it finds from its banner (``&&&& RUNNING
  TensorRT.trtexec [TensorRT v100300] ...``: ``NV_TENSORRT_VERSION``, major*10000+minor*100+patch from
  10.0, major*1000+minor*100+patch before) and picks the precision flags by it:
- TensorRT 10 (JetPack 6 ships 10.3): ``--stronglyTyped`` makes every tensor's precision the one in the
  ONNX file, so FP16 / INT8 (Q/DQ) ONNX files need no ``--fp16`` / ``--int8``. Except under
  ``--useDLACore``: trtexec 10.x then always sets kFP16 (and PREFER_PRECISION_CONSTRAINTS), which a
  strongly typed network rejects ("condition: !config.getFlag(BuilderFlag::kFP16)", NVIDIA/TensorRT#4228);
  DLA builds on 10.x are weakly typed with ``--fp16`` / ``--int8`` (the Q/DQ nodes and float16 types of the
  file still set the precision). TensorRT 11 removed ``--fp16`` / ``--int8`` and is always strongly typed
  (``--stronglyTyped``, ``--useCudaGraph``, ``--noDataTransfers`` are accepted no-ops; strongly typed DLA
  is new in 11.4), so no precision flag. TensorRT 8.6 / 9 have no strong typing: the builder flags.
- ``--memPoolSize=workspace:<MiB>`` replaced ``--workspace`` in TensorRT 10 (NVIDIA, "Migrating trtexec
  Usage from TensorRT 8.x to 10.x"); the unit without a suffix is MiB.
- ``--minShapes/--optShapes/--maxShapes=input:NxCxHxW``, ``--timingCacheFile``, ``--useDLACore``,
  ``--allowGPUFallback``, ``--hardwareCompatibilityLevel=ampere+``, ``--versionCompatible``,
  ``--skipInference``, ``--warmUp`` (ms), ``--duration`` (s), ``--percentile=90,95,99``,
  ``--exportTimes``: trtexec's help text (TensorRT ``samples/common/sampleOptions.cpp``).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable
from pathlib import Path

from . import __version__, precision_table
from .atomic import json_text, write_text
from .contract import MANIFEST_SUFFIX, input_name, input_shape, onnx_stem, shape_string
from .engine_build import EngineOptions, build_manifest, check_engine_options, is_strongly_typed
from .errors import EnvironmentFailure

SCRIPT_SUFFIX = ".trtexec.sh"  # DIR/mixnet_s.trtexec.sh: one per model, as its report
SCRIPT_MARK = "trtexec recipe written by mixnet-deploy"  # in its header: how a re-run knows the script is ours
DEFAULT_TIMING_CACHE = "trtexec.timing.cache"
WARMUP_MS = 500
DURATION_S = 10
PERCENTILES = "90,95,99"
JETPACK_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"
TRTEXEC_MISSING_EXIT = EnvironmentFailure.exit_code  # the machine lacks a tool, as --engine require without TensorRT


# Where trtexec is looked for: $TRTEXEC when set, else trtexec on the PATH, else JetPack's place. Not found: one line
# saying where it looked and how to point TRTEXEC at it, exit 3 (the machine lacks a tool, the recipe is fine).
FIND_TRTEXEC = f"""if [ -n "${{TRTEXEC:-}}" ]; then LOOKED="TRTEXEC=$TRTEXEC"
else LOOKED="trtexec on PATH ($PATH) and {JETPACK_TRTEXEC}"; fi
TRTEXEC="${{TRTEXEC:-$(command -v trtexec || echo {JETPACK_TRTEXEC})}}"
if ! {{ [ -f "$TRTEXEC" ] && [ -x "$TRTEXEC" ]; }} && ! command -v "$TRTEXEC" >/dev/null 2>&1; then
    echo "$0: trtexec not found: looked at $LOOKED; install TensorRT (JetPack ships {JETPACK_TRTEXEC}) or run" \\
        "TRTEXEC=/path/to/trtexec bash $0" >&2
    exit {TRTEXEC_MISSING_EXIT}
fi"""

# trt_major: TensorRT major version from the banner trtexec prints first ("[TensorRT v100300]" -> 10;
# 8.6.1 prints v8601). precision_flags FLAG gpu|dla: the precision flags of one build on that version.
SHELL_FUNCTIONS = r"""trt_banner() {
    local v
    v=$("$TRTEXEC" --help 2>&1 | sed -n 's/.*\[TensorRT v\([0-9][0-9]*\).*/\1/p' | head -n 1) || true
    if [ -z "$v" ]; then
        echo "$0: no '[TensorRT vNNNNNN]' banner from $TRTEXEC --help: expected trtexec 8.6 or newer" >&2
        exit 2
    fi
    echo "$v"
}
TRT_BANNER=$(trt_banner)
if [ "$TRT_BANNER" -ge 100000 ]; then TRT_MAJOR=$((TRT_BANNER / 10000)); TRT_MINOR=$((TRT_BANNER / 100 % 100))
else TRT_MAJOR=$((TRT_BANNER / 1000)); TRT_MINOR=$((TRT_BANNER / 100 % 10)); fi
TRT_VERSION="$TRT_MAJOR.$TRT_MINOR.$((TRT_BANNER % 100))"
echo "== trtexec: $TRTEXEC (TensorRT $TRT_VERSION)"
precision_flags() {
    if [ "$TRT_MAJOR" -ge 11 ]; then echo ""                # always strongly typed; --fp16/--int8 are gone
    elif [ "$TRT_MAJOR" -lt 10 ]; then echo "$1"            # 8.6 / 9: no strong typing
    elif [ "$2" = dla ]; then echo "$1"                     # 10.x DLA: weakly typed (trtexec sets FP16 there)
    else echo --stronglyTyped; fi
}
json_text() {  # $1 as a JSON string (backslashes and quotes escaped, control characters dropped); null when empty
    if [ -z "$1" ]; then echo null
    else printf '"%s"' "$(printf '%s' "$1" | tr -d '\000-\037' | sed 's/\\/\\\\/g; s/"/\\"/g')"; fi
}
fill_manifest() {  # stdin, whose only '@'s are @NAME@ marks -> stdout with shell variable NAME's value in each mark's
    local rest out="" name  # place; values are pasted as they are, never expanded or read as patterns
    rest=$(cat)
    while [[ $rest =~ @([A-Z0-9_]+)@ ]]; do
        name=${BASH_REMATCH[1]}
        out+="${rest%%"@$name@"*}${!name}"
        rest=${rest#*"@$name@"}
    done
    printf '%s\n' "$out$rest"
}
log_fact() {  # NAME LOG: the value of trtexec's first "[I] NAME: value" line (samples/common/sampleDevice.cpp)
    sed -n "s/^.*\[I\] $1: *//p" "$2" | head -n 1 | tr -d '\r'
}
l4t_release() {  # /etc/nv_tegra_release "# R36 (release), REVISION: 4.0, ..." -> R36.4.0 (environment.py's reading)
    local f=/etc/nv_tegra_release r
    [ -s "$f" ] || return 0
    r=$(sed -n 's/.*R\([0-9][0-9]*\) *(release), *REVISION: *\([0-9.]*[0-9]\).*/R\1.\2/p' "$f" | head -n 1)
    if [ -n "$r" ]; then echo "$r"; else head -n 1 "$f" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//' | cut -c 1-200; fi
}
manifest_facts() {  # BUILD_LOG ONNX ENGINE: the values a manifest records that only the build knows (sha256sum
    # reads stdin: given a name with a backslash, GNU sha256sum marks its line with a leading backslash)
    GPU=$(json_text "$(log_fact 'Selected Device' "$1")")
    CC=$(json_text "$(log_fact 'Compute Capability' "$1")")
    ONNX_SHA256=$(json_text "$(sha256sum < "$2" | cut -d ' ' -f 1)")
    ENGINE_SHA256=$(json_text "$(sha256sum < "$3" | cut -d ' ' -f 1)")
    if [ "$CC" = null ]; then echo "$0: no 'Compute Capability' line in $1: the manifest records null" >&2; fi
}
TRT=$(json_text "$TRT_VERSION")
L4T=$(json_text "$(l4t_release)")
MACHINE=$(json_text "$(uname -m)")"""


def trtexec_engine_name(onnx_name: str, precision: str) -> str:
    """'mixnet_s.fp16.onnx' -> 'mixnet_s.fp16.trtexec.engine' (never overwrites mixnet-export's checked engine)."""
    return precision_table.engine_name(onnx_name, precision, tool="trtexec")


def build_command(onnx_name: str, precision: str, opts: EngineOptions, timing_cache: str) -> list[str]:
    """The trtexec build command for one precision ONNX, as a list of words (shell variables left unquoted)."""
    shapes = opts.batch.shapes(opts.img_size, opts.input_format)
    name = input_name(opts.input_format)
    legacy_flag = precision_table.row(precision).trtexec_legacy_flag  # used where trtexec builds weakly typed
    words = [
        '"$TRTEXEC"',
        f"--onnx={shlex.quote(onnx_name)}",
        f"--saveEngine={shlex.quote(trtexec_engine_name(onnx_name, precision))}",
        f'$(precision_flags "{legacy_flag}" {"dla" if opts.dla_core is not None else "gpu"})',
        f"--minShapes={shape_string(shapes['min'], name)}",
        f"--optShapes={shape_string(shapes['opt'], name)}",
        f"--maxShapes={shape_string(shapes['max'], name)}",
    ]
    if opts.workspace_mib:
        words.append(f"--memPoolSize=workspace:{opts.workspace_mib}")
    words.append(f"--timingCacheFile={timing_cache}")
    if opts.dla_core is not None:
        words += [f"--useDLACore={opts.dla_core}", "--allowGPUFallback"]
    if opts.hardware_compat:
        words.append("--hardwareCompatibilityLevel=ampere+")
    if opts.version_compat:
        words.append("--versionCompatible")
    words.append("--skipInference")
    return words


def bench_command(
    onnx_name: str, precision: str, batch: int, opts: EngineOptions, warmup_ms: int, duration_s: int
) -> list[str]:
    """trtexec benchmark of the built engine at one batch size; per-inference times go to a JSON file."""
    engine = trtexec_engine_name(onnx_name, precision)
    words = [
        '"$TRTEXEC"',
        f"--loadEngine={shlex.quote(engine)}",
        f"--shapes={shape_string(input_shape(opts.input_format, batch, opts.img_size), input_name(opts.input_format))}",
    ]
    if opts.dla_core is not None:
        words.append(f"--useDLACore={opts.dla_core}")
    words += [
        f"--warmUp={warmup_ms}",
        f"--duration={duration_s}",
        f"--percentile={PERCENTILES}",
        "--useCudaGraph",
        "--noDataTransfers",
        f"--exportTimes={shlex.quote(engine[: -len('.engine')] + f'.b{batch}.times.json')}",
    ]
    return words


# The manifest's values that only the build knows, as the shell variables manifest_facts / the header set (JSON
# literals); everything else is known now. cuda_runtime / cuda_driver: trtexec does not print them (recorded null;
# the manifest check only logs them).
SHELL_FACTS = {"engine_sha256": "ENGINE_SHA256", "onnx_sha256": "ONNX_SHA256", "tensorrt": "TRT", "gpu": "GPU",
               "compute_capability": "CC", "l4t": "L4T", "machine": "MACHINE",
               "build_seconds": "BUILD_SECONDS"}  # fmt: skip


def manifest_template(onnx_name: str, precision: str, opts: EngineOptions, script: str) -> str:
    """The engine manifest ``mixnet-export`` writes (engine_build.build_manifest), as JSON text whose build-time
    values are ``@VAR@`` marks for shell variables (``@GPU@``), pasted in by the script's fill_manifest after a
    successful build (the text goes through a quoted heredoc: nothing in it is expanded), so mixnet-parity and
    mixnet-bench check a trtexec engine against the running system as they check ours."""
    mark = {key: f"@{var}@" for key, var in SHELL_FACTS.items()}
    system = {key: mark.get(key) for key in ("tensorrt", "cuda_runtime", "cuda_driver", "gpu", "compute_capability",
                                             "l4t")}  # fmt: skip
    check = {"verdict": f"not checked for precision: built by trtexec ({script}), not by mixnet-export",
             "built_by": "trtexec"}  # fmt: skip
    manifest = build_manifest(engine_sha256=mark["engine_sha256"], onnx_path=onnx_name, onnx_sha256=mark["onnx_sha256"],
                              precision=precision, opts=opts, system=system, engine_check=check,
                              build_seconds=mark["build_seconds"])  # fmt: skip
    strong_from = next(major for major in range(8, 13) if is_strongly_typed(f"{major}.0", opts.dla_core))
    manifest["strongly_typed"] = "@STRONG@"
    manifest["host"] = {"machine": mark["machine"], "python": None}
    text = "{\n" + ",\n".join(f"  {json_text(k)}: {json_text(v, indent=None)}" for k, v in manifest.items()) + "\n}"
    text = text.replace("@", "\\u0040")  # JSON's own escape: the marks are then the only '@'s fill_manifest sees
    for var in (*SHELL_FACTS.values(), "STRONG"):
        text = text.replace(f'"\\u0040{var}\\u0040"', f"@{var}@")
    strong = f'STRONG=$([ "$TRT_MAJOR" -ge {strong_from} ] && echo true || echo false)'
    return strong + "\n" + text


def manifest_steps(onnx_name: str, precision: str, opts: EngineOptions, script: str, log: str) -> list[str]:
    """Shell lines after a successful build: the engine's manifest, written to a temporary name and renamed."""
    engine = shlex.quote(trtexec_engine_name(onnx_name, precision))
    manifest_name = trtexec_engine_name(onnx_name, precision) + MANIFEST_SUFFIX
    manifest = shlex.quote(manifest_name)
    template = manifest_template(onnx_name, precision, opts, script).split("\n", 1)
    return [
        "BUILD_SECONDS=$((SECONDS - BUILD_START))",
        f"manifest_facts {log} {shlex.quote(onnx_name)} {engine}",
        template[0],
        f"fill_manifest > {manifest}.tmp <<'MANIFEST'",
        template[1],
        "MANIFEST",
        f"mv -f {manifest}.tmp {manifest}",
        "echo " + shlex.quote(f"== manifest: {manifest_name} (mixnet-parity / mixnet-bench check it)"),
    ]


def build_log_name(onnx_name: str, precision: str) -> str:
    """'mixnet_s.fp16.onnx' -> 'mixnet_s.fp16.trtexec.build.log': trtexec's build output, read for the manifest."""
    return trtexec_engine_name(onnx_name, precision)[: -len(".engine")] + ".build.log"


def script_name(onnx_name: str) -> str:
    """``mixnet_s.onnx`` (the run's FP32 file) -> ``mixnet_s.trtexec.sh``."""
    return onnx_stem(onnx_name) + SCRIPT_SUFFIX


def _lines(words: list[str]) -> str:
    return " \\\n    ".join(words)


def trtexec_recipe(
    entries: Iterable[tuple[str, str]],
    opts: EngineOptions,
    timing_cache: str | None = None,
    warmup_ms: int = WARMUP_MS,
    duration_s: int = DURATION_S,
) -> str:
    """The whole script for ``entries`` = (ONNX file name in the script's folder, precision) pairs."""
    check_engine_options(opts)
    entries = list(entries)
    script = script_name(entries[0][0]) if entries else f"mixnet{SCRIPT_SUFFIX}"
    cache = shlex.quote(timing_cache) if timing_cache else DEFAULT_TIMING_CACHE
    batches = sorted({opts.batch.min, opts.batch.opt, opts.batch.max})
    out = [
        "#!/usr/bin/env bash",
        f"# {SCRIPT_MARK} {__version__}: build and benchmark the TensorRT engines of",
        "# this export by hand (Jetson: trtexec ships with JetPack at /usr/src/tensorrt/bin/trtexec).",
        "#",
        f"#   bash {script}   # build, then benchmark every precision",
        f"#   TRTEXEC=/path/to/trtexec bash {script}",
        "#",
        "# The precision flags follow the TensorRT version in trtexec's banner ([TensorRT v100300] = 10.3.0):",
        "# 10.x: --stronglyTyped takes each tensor's precision from the ONNX file (no --fp16 / --int8), except",
        "# for DLA: trtexec 10.x always sets FP16 for a DLA core, which strong typing rejects, so DLA builds are",
        "# weakly typed with --fp16 / --int8. 11.x: always strongly typed, --fp16/--int8 are gone: no flag.",
        "# 8.6 / 9: no strong typing, --fp16 / --int8.",
        f"# Profile: batch {opts.batch} at {opts.img_size}x{opts.img_size}"
        + (f"; DLA core {opts.dla_core} with GPU fallback" if opts.dla_core is not None else "")
        + (f"; workspace {opts.workspace_mib} MiB" if opts.workspace_mib else "")
        + ".",
        "# Engines are written as *.trtexec.engine, each with the manifest mixnet-export writes (*.engine.json:",
        "# TensorRT version, GPU, compute capability, L4T, SHA-256s, profile), so mixnet-parity / mixnet-bench",
        "# accept them; unlike mixnet-export's *.engine, their precision was not checked. On Jetson, lock clocks first",
        "# (sudo nvpmodel -m 0; sudo jetson_clocks) and record nvpmodel -q / jetson_clocks --show.",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        *FIND_TRTEXEC.splitlines(),
        *SHELL_FUNCTIONS.splitlines(),
        "",
    ]
    for onnx_name, precision in entries:
        if opts.dla_core is not None and not precision_table.row(precision).dla:
            out += [f"# {onnx_name}: skipped for DLA (DLA runs FP16/INT8 only)", ""]
            continue
        out.append(f"# ---- {precision}: {onnx_name} -> {trtexec_engine_name(onnx_name, precision)}")
        log_name = build_log_name(onnx_name, precision)
        log = shlex.quote(log_name)
        out.append("echo " + shlex.quote(f"== build {precision}: {onnx_name} (log: {log_name})"))
        out.append("BUILD_START=$SECONDS")
        out.append(_lines(build_command(onnx_name, precision, opts, cache)) + f" 2>&1 | tee {log}")
        out += manifest_steps(onnx_name, precision, opts, script, log)
        for b in batches:
            out.append(f'echo "== benchmark {precision}, batch {b}"')
            out.append(_lines(bench_command(onnx_name, precision, b, opts, warmup_ms, duration_s)))
        out.append("")
    return "\n".join(out) + "\n"


def write_trtexec_script(out_dir: str | Path, artifacts: Iterable, opts: EngineOptions) -> Path:
    """Write ``DIR/<model>.trtexec.sh`` for every precision ONNX of the run (objects with .precision and .path)."""
    out_dir = Path(out_dir)
    entries = [(Path(a.path).name, a.precision) for a in artifacts]
    cache = os.path.abspath(opts.timing_cache) if opts.timing_cache is not None else None
    path = write_text(out_dir / script_name(entries[0][0]), trtexec_recipe(entries, opts, timing_cache=cache))
    path.chmod(0o755)
    return path
