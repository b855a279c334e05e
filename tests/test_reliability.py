"""Bad-input catalogue (issue 8): every case runs the real command in a subprocess and must

- exit with the catalogue's code (2 = bad input; 1 stays "verification failed"),
- print one line ``<prog>: error: ...`` on stderr that names the bad value (the case's needles),
- print no traceback (without ``--verbose``),
- leave no ``.onnx``/``.engine``/``.plan`` and no temporary file (``atomic.TMP_MARKER``) behind,
- never run a pickled payload (the payload files would create ``PWNED-*`` markers).

CASES is also the table in docs/errors.md: ``python tests/test_reliability.py`` runs the catalogue
and rewrites that file with the observed messages; ``test_docs_table_is_the_catalogue`` keeps them in
step. The cases run concurrently (one worker per core) in a session fixture; each test reads its result.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from mixnet_deploy.atomic import TMP_MARKER

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "errors.md"
ENTRY = {"export": "export_main", "parity": "parity_main", "bench": "bench_main"}
PROG = {"export": "mixnet-export", "parity": "mixnet-parity", "bench": "mixnet-bench"}
MODEL_SUFFIXES = (".onnx", ".engine", ".plan")
# Added to every case of a command unless the case gives the flag itself (fast runs; see docs/errors.md).
DEFAULTS = {
    "export": (("--img-size", "64"), ("--engine", "skip")),
    "parity": (("--quiet",), ("--random", "2")),
    "bench": (("--quiet",), ("--iters", "2"), ("--warmup-s", "0"), ("--batch", "1")),
}
EXCLUSIVE = {"--random": ("--images",), "--iters": ("--duration-s",)}
TIMEOUT_S = 180


@dataclass(frozen=True)
class Case:
    id: str
    command: str  # export, parity or bench
    args: tuple[str, ...]  # {in}: the shared input folder, {case}: this case's own folder
    input: str  # what is wrong, in words (docs/errors.md)
    needles: tuple[str, ...]  # all must appear in the error line
    code: int = 2
    needs_flag: str | None = None  # skip (not yet implemented) while the command's --help lacks it
    defaults: bool = True  # add DEFAULTS (presets: no, flags would override the preset's bad value)

    def argv(self, inputs: Path, case_dir: Path) -> list[str]:
        args = [a.replace("{in}", str(inputs)).replace("{case}", str(case_dir)) for a in self.args]
        if self.command == "export" and "--out" not in args and not any(a.startswith("--out=") for a in args):
            args += ["--out", str(case_dir / "out")]
        for flag, *value in DEFAULTS[self.command] if self.defaults else ():
            given = {a.split("=")[0] for a in args}
            if flag not in given and not given & set(EXCLUSIVE.get(flag, ())):
                args += [flag, *value]
        return args


def C(id, command, args, input, *needles, code=2, needs_flag=None):  # noqa: N802 - a table row
    defaults = needs_flag != "--preset"
    return Case(id, command, tuple(args), input, tuple(needles), code, needs_flag, defaults)


W = "{in}/"  # shared input folder prefix
# fmt: off
CASES: list[Case] = [
    # ------------------------------------------------------------------ mixnet-export: variant and flags
    C("export-variant-unknown", "export", ["--variant", "xl"], "unknown variant", "'xl'", "expected one of s, m, l"),
    C("export-variant-empty", "export", ["--variant", ""], "empty variant", "''", "expected one of"),
    C("export-variant-prefixed", "export", ["--variant", "mixnet_xl"], "unknown mixnet_ name", "'mixnet_xl'"),
    C("export-unknown-flag", "export", ["--fast"], "unknown flag", "unrecognized arguments: --fast"),
    C("export-flag-without-value", "export", ["--variant"], "flag without its value", "--variant", "expected one"),
    C("export-engine-bad", "export", ["--engine", "maybe"], "--engine value", "'maybe'", "auto, require, skip"),
    C("export-opset-low", "export", ["--opset", "11"], "opset too old", "--opset 11", "expected"),
    C("export-opset-text", "export", ["--opset", "abc"], "opset not a number", "invalid int value: 'abc'"),
    # ------------------------------------------------------------------ --img-size
    C("export-img-zero", "export", ["--img-size", "0"], "image size 0", "--img-size 0", "multiple of 32"),
    C("export-img-negative", "export", ["--img-size=-64"], "negative image size", "--img-size -64", "positive"),
    C("export-img-not-32", "export", ["--img-size", "100"], "size not a multiple of 32", "--img-size 100"),
    C("export-img-huge", "export", ["--img-size", "1048576"], "absurdly large size", "1048576", "up to 2048"),
    C("export-img-bignum", "export", ["--img-size", "9" * 30], "30-digit size", "9" * 30, "up to 2048"),
    C("export-img-text", "export", ["--img-size", "big"], "size not a number", "invalid int value: 'big'"),
    C("export-img-float", "export", ["--img-size", "224.0"], "size as a float", "invalid int value: '224.0'"),
    # ------------------------------------------------------------------ --batch
    C("export-batch-min-gt-opt", "export", ["--batch", "8:1:32"], "MIN > OPT", "'8:1:32'", "MIN <= OPT <= MAX"),
    C("export-batch-opt-gt-max", "export", ["--batch", "1:64:32"], "OPT > MAX", "'1:64:32'", "MIN <= OPT"),
    C("export-batch-zero", "export", ["--batch", "0:1:2"], "batch 0", "'0:1:2'", "1 <= MIN"),
    C("export-batch-zero-static", "export", ["--batch", "0"], "static batch 0", "'0'", "1 <= MIN"),
    C("export-batch-letters", "export", ["--batch", "a:b:c"], "not numbers", "'a:b:c'", "MIN:OPT:MAX"),
    C("export-batch-two-parts", "export", ["--batch", "1:8"], "two fields", "'1:8'", "MIN:OPT:MAX"),
    C("export-batch-four-parts", "export", ["--batch", "1:2:3:4"], "four fields", "'1:2:3:4'", "MIN:OPT:MAX"),
    C("export-batch-negative", "export", ["--batch=-1:2:3"], "negative", "'-1:2:3'", "MIN:OPT:MAX"),
    C("export-batch-float", "export", ["--batch", "1.5"], "fractional", "'1.5'", "MIN:OPT:MAX"),
    C("export-batch-huge", "export", ["--batch", "1:8:99999"], "MAX over 4096", "'1:8:99999'", "<= 4096"),
    C("export-batch-empty", "export", ["--batch", ""], "empty spec", "--batch ''", "MIN:OPT:MAX"),
    C("export-batch-superscript", "export", ["--batch", "1:2:\u00b3"], "a digit int() rejects", "1:2:\u00b3"),
    # ------------------------------------------------------------------ --out
    C("export-out-is-file", "export", ["--out", W + "text.pth"], "--out is a file", "text.pth", "is a file"),
    C("export-out-under-file", "export", ["--out", W + "text.pth/sub"], "--out under a file", "text.pth/sub"),
    C("export-out-proc", "export", ["--out", "/proc/mixnet-deploy"], "--out not creatable", "/proc/mixnet-deploy"),
    C("export-out-empty", "export", ["--out", ""], "--out ''", "--out", "'' is empty"),
    # ------------------------------------------------------------------ --weights
    C("weights-missing", "export", ["--weights", W + "nope.pth"], "missing file", "nope.pth", "does not exist"),
    C("weights-dangling-link", "export", ["--weights", W + "dangling.pth"], "dangling symlink", "dangling.pth"),
    C("weights-empty", "export", ["--weights", W + "empty.pth"], "empty file", "empty.pth", "is empty"),
    C("weights-directory", "export", ["--weights", W + "dir.pth"], "a directory", "dir.pth", "not a file"),
    C("weights-empty-arg", "export", ["--weights", ""], "--weights ''", "'.'", "not a file"),
    C("weights-text", "export", ["--weights", W + "text.pth"], "text file", "text.pth", "not a PyTorch checkpoint"),
    C("weights-random-bytes", "export", ["--weights", W + "rand.pth"], "random bytes", "rand.pth", "expected"),
    C("weights-png", "export", ["--weights", W + "image.pth"], "a PNG named .pth", "image.pth", "expected"),
    C("weights-zip-not-torch", "export", ["--weights", W + "zip.pth"], "zip, not torch", "zip.pth", "expected"),
    C("weights-trunc-pth", "export", ["--weights", W + "trunc.pth"], "truncated .pth", "trunc.pth", "expected"),
    C("weights-trunc-st", "export", ["--weights", W + "trunc.safetensors"], "truncated safetensors", "trunc."),
    C("weights-head-st", "export", ["--weights", W + "head.safetensors"], "100-byte safetensors", "head."),
    C("weights-json-st", "export", ["--weights", W + "json.safetensors"], "JSON named .safetensors", "json."),
    C("weights-huge-header", "export", ["--weights", W + "bomb.safetensors"], "header 2^60 bytes", "bomb."),
    C("weights-list", "export", ["--weights", W + "list.pth"], "a list of tensors", "list.pth", "state_dict"),
    C("weights-not-tensors", "export", ["--weights", W + "ints.pth"], "values not tensors", "ints.pth", "tensor"),
    C("weights-other-model", "export", ["--weights", W + "resnet.pth"], "another model", "resnet.pth", "MixNet"),
    C("weights-other-variant", "export", ["--weights", W + "m.safetensors", "--variant", "s"],
      "mixnet_m checkpoint, --variant s", "m.safetensors", "mixnet_s", "looks like mixnet_m"),
    C("weights-other-variant-timm", "export", ["--weights", W + "s_timm.pth", "--variant", "l"],
      "timm mixnet_s, --variant l", "s_timm.pth", "mixnet_l", "looks like mixnet_s"),
    C("weights-wrong-shape", "export", ["--weights", W + "shape.safetensors"], "one tensor of wrong shape",
      "shape.safetensors", "expected ("),
    C("weights-missing-key", "export", ["--weights", W + "partial.safetensors"], "tensors missing",
      "partial.safetensors", "missing"),
    C("weights-nan", "export", ["--weights", W + "nan.safetensors"], "NaN in a weight", "nan.safetensors", "finite"),
    C("weights-inf", "export", ["--weights", W + "inf.pth"], "Inf in a weight", "inf.pth", "finite"),
    C("weights-timm-no-variant", "export", ["--weights", "timm"], "timm without --variant", "--variant"),
    C("weights-timm-not-cached", "export", ["--weights", "timm", "--variant", "s"], "timm weights not in cache",
      "mixnet_s.ft_in1k", "Hugging Face cache"),
    # ------------------------------------------------------------------ pickles carrying code
    C("pickle-payload-in-dict", "export", ["--weights", W + "evil_dict.pth"], "os.system in a state_dict",
      "evil_dict.pth", "refused to unpickle", "posix.system"),
    C("pickle-payload-wrapped", "export", ["--weights", W + "evil_wrapped.pth"], "valid weights + exec payload",
      "evil_wrapped.pth", "refused to unpickle", "exec"),
    C("pickle-payload-legacy", "export", ["--weights", W + "evil_legacy.pth"], "legacy (non-zip) torch.save",
      "evil_legacy.pth", "refused to unpickle"),
    C("pickle-payload-raw", "export", ["--weights", W + "evil_raw.pt"], "plain pickle.dump payload",
      "evil_raw.pt", "refused to unpickle"),
    C("pickle-payload-bench", "bench", [W + "evil_dict.pth"], "bench of a payload checkpoint", "evil_dict.pth",
      "refused to unpickle"),
    C("pickle-payload-parity", "parity", [W + "s64.onnx", "--weights", W + "evil_wrapped.pth"],
      "parity --weights payload", "evil_wrapped.pth", "refused to unpickle"),
    # ------------------------------------------------------------------ presets
    C("preset-missing", "export", ["--preset", W + "nope.toml"], "preset file missing", "nope.toml",
      "does not exist", needs_flag="--preset"),
    C("preset-directory", "export", ["--preset", W + "dir.pth"], "preset is a folder", "dir.pth",
      "is a directory", needs_flag="--preset"),
    C("preset-not-toml", "export", ["--preset", W + "not.toml"], "not TOML", "not.toml", "not valid TOML",
      needs_flag="--preset"),
    C("preset-binary", "export", ["--preset", W + "rand.pth"], "binary preset", "rand.pth", "TOML",
      needs_flag="--preset"),
    C("preset-unknown-key", "export", ["--preset", W + "unknown_key.toml"], "unknown key imgsize", "'imgsize'",
      "img_size", needs_flag="--preset"),
    C("preset-wrong-type", "export", ["--preset", W + "wrong_type.toml"], 'img_size = "big"', "'img_size'",
      "'big'", "an integer", needs_flag="--preset"),
    C("preset-bool-for-int", "export", ["--preset", W + "bool_int.toml"], "img_size = true", "'img_size'",
      "an integer", needs_flag="--preset"),
    C("preset-bad-value", "export", ["--preset", W + "bad_value.toml"], "img_size = 100", "'img_size'", "100",
      "multiple of 32", needs_flag="--preset"),
    C("preset-bad-batch", "export", ["--preset", W + "bad_batch.toml"], 'batch = "8:1:2"', "'batch'", "8:1:2",
      needs_flag="--preset"),
    C("preset-bad-engine", "export", ["--preset", W + "bad_engine.toml"], 'engine = "maybe"', "'engine'",
      "'maybe'", needs_flag="--preset"),
    C("preset-table", "export", ["--preset", W + "table.toml"], "a [table] in a preset", "'engine'", "flat",
      needs_flag="--preset"),
    # ------------------------------------------------------------------ calibration images
    C("calib-missing", "export", ["--int8", "--calib", W + "nope"], "--calib folder missing", "nope",
      "does not exist", needs_flag="--calib"),
    C("calib-is-file", "export", ["--int8", "--calib", W + "text.pth"], "--calib is a file", "text.pth",
      "not a directory", needs_flag="--calib"),
    C("calib-empty", "export", ["--int8", "--calib", W + "calib_empty"], "empty folder", "calib_empty",
      "no .jpg", needs_flag="--calib"),
    C("calib-not-images", "export", ["--int8", "--calib", W + "calib_text"], "only .txt/.csv files",
      "calib_text", needs_flag="--calib"),
    C("calib-corrupt", "export", ["--int8", "--calib", W + "calib_corrupt"], "only corrupt .jpg/.png/.webp",
      "calib_corrupt", needs_flag="--calib"),
    C("int8-without-calib", "export", ["--int8"], "--int8 without --calib", "--calib", needs_flag="--int8"),
    C("calib-without-int8", "export", ["--calib", W + "calib_empty"], "--calib without --int8", "--int8",
      needs_flag="--calib"),
    C("calib-method-bad", "export", ["--int8", "--calib", "synthetic", "--calib-method", "mean"],
      "unknown calibration method", "'mean'", needs_flag="--calib-method"),
    C("calib-count-zero", "export", ["--int8", "--calib", "synthetic", "--calib-count", "0"], "--calib-count 0",
      "0", needs_flag="--calib-count"),
    # ------------------------------------------------------------------ lowering, engines, Triton
    C("mdconv-bad", "export", ["--mdconv", "fused"], "unknown MixConv lowering", "'fused'", "split",
      needs_flag="--mdconv"),
    C("engine-require-no-trt", "export", ["--engine", "require"], "--engine require without TensorRT",
      "--engine require", "TensorRT", needs_flag="--engine"),
    C("workspace-zero", "export", ["--workspace", "0"], "--workspace 0", "'0'", needs_flag="--workspace"),
    C("workspace-text", "export", ["--workspace", "1G"], "--workspace 1G", "'1G'", needs_flag="--workspace"),
    C("dla-negative", "export", ["--dla-core=-1", "--batch", "1"], "--dla-core -1", "--dla-core -1",
      needs_flag="--dla-core"),
    C("dla-dynamic-batch", "export", ["--dla-core", "0", "--batch", "1:8:32"], "DLA with a dynamic batch",
      "--dla-core 0", "static", needs_flag="--dla-core"),
    C("timing-cache-dir", "export", ["--timing-cache", W + "dir.pth"], "--timing-cache is a folder", "dir.pth",
      needs_flag="--timing-cache"),
    C("triton-kind-bad", "export", ["--triton-repo", "{case}/repo", "--triton-kind", "tpu"], "--triton-kind tpu",
      "'tpu'", needs_flag="--triton-kind"),
    C("triton-precision-bad", "export", ["--triton-repo", "{case}/repo", "--triton-precision", "fp8"],
      "--triton-precision fp8", "'fp8'", needs_flag="--triton-precision"),
    C("triton-version-zero", "export", ["--triton-repo", "{case}/repo", "--model-version", "0"],
      "--model-version 0", "0", needs_flag="--model-version"),
    C("triton-name-slash", "export", ["--triton-repo", "{case}/repo", "--model-name", "../escape"],
      "--model-name with a path", "../escape", needs_flag="--model-name"),
    C("triton-repo-under-file", "export", ["--triton-repo", W + "text.pth/repo"], "--triton-repo under a file",
      "text.pth/repo", needs_flag="--triton-repo"),
    # ------------------------------------------------------------------ mixnet-parity
    C("parity-missing", "parity", [W + "nope.onnx"], "candidate missing", "nope.onnx", "does not exist"),
    C("parity-directory", "parity", [W + "dir.onnx"], "candidate is a folder", "dir.onnx", "is a directory"),
    C("parity-empty-onnx", "parity", [W + "empty.onnx"], "empty .onnx", "empty.onnx", "expected an ONNX model"),
    C("parity-garbage-onnx", "parity", [W + "garbage.onnx"], "random bytes .onnx", "garbage.onnx", "ONNX"),
    C("parity-truncated-onnx", "parity", [W + "trunc.onnx"], "truncated export", "trunc.onnx", "ONNX"),
    C("parity-text-onnx", "parity", [W + "text.onnx"], "text named .onnx", "text.onnx", "ONNX"),
    C("parity-not-mixnet", "parity", [W + "identity.onnx"], "valid ONNX, not MixNet", "identity.onnx"),
    C("parity-checkpoint", "parity", [W + "s.safetensors"], "checkpoint as candidate", "s.safetensors",
      ".onnx, .engine or .plan"),
    C("parity-other-variant", "parity", [W + "s64.onnx", "--variant", "m"], "mixnet_s file, --variant m",
      "--variant m", "MixNet-S"),
    C("parity-variant-unknown", "parity", [W + "s64.onnx", "--variant", "xl"], "unknown variant", "'xl'"),
    C("parity-img-size", "parity", [W + "s64.onnx", "--img-size", "100"], "size not the file's", "100"),
    C("parity-random-zero", "parity", [W + "s64.onnx", "--random", "0"], "--random 0", "'0'", "positive"),
    C("parity-batch-text", "parity", [W + "s64.onnx", "--batch", "x"], "--batch x", "'x'"),
    C("parity-runtime-bad", "parity", [W + "s64.onnx", "--runtime", "gpu"], "unknown runtime", "'gpu'"),
    C("parity-runtime-absent", "parity", [W + "s64.onnx", "--runtime", "ort-cuda"], "provider not installed",
      "'ort-cuda'", "CUDAExecutionProvider"),
    C("parity-second-bad", "parity", [W + "s64.onnx", W + "garbage.onnx"], "second candidate garbage",
      "garbage.onnx"),
    C("parity-trt-for-onnx", "parity", [W + "s64.onnx", "--runtime", "tensorrt"], "runtime tensorrt for an ONNX",
      "tensorrt"),
    C("parity-images-is-file", "parity", [W + "s64.onnx", "--images", W + "text.pth"], "--images is a file",
      "text.pth"),
    C("parity-images-missing", "parity", [W + "s64.onnx", "--images", W + "nope"], "--images missing", "nope"),
    C("parity-images-empty", "parity", [W + "s64.onnx", "--images", W + "calib_empty"], "--images empty",
      "calib_empty"),
    C("parity-images-corrupt", "parity", [W + "s64.onnx", "--images", W + "calib_corrupt"],
      "--images all corrupt", "calib_corrupt"),
    C("parity-weights-trunc", "parity", [W + "s64.onnx", "--weights", W + "trunc.pth"], "truncated --weights",
      "trunc.pth"),
    C("parity-weights-variant", "parity", [W + "s64.onnx", "--weights", W + "m.safetensors"],
      "--weights of mixnet_m for an S file", "m.safetensors"),
    C("parity-json-under-file", "parity", [W + "s64.onnx", "--json", W + "text.pth/r.json"],
      "--json under a file", "text.pth/r.json"),
    C("parity-json-is-dir", "parity", [W + "s64.onnx", "--json", W + "dir.pth"], "--json is a folder", "dir.pth"),
    C("parity-engine-garbage", "parity", [W + "garbage.engine"], "garbage engine, no manifest",
      "garbage.engine", "manifest"),
    C("parity-engine-foreign", "parity", [W + "foreign.engine"], "engine manifest of another system",
      "foreign.engine", "TensorRT"),
    C("parity-engine-bad-manifest", "parity", [W + "badjson.engine"], "engine manifest not JSON",
      "badjson.engine", "manifest"),
    # ------------------------------------------------------------------ mixnet-bench
    C("bench-missing", "bench", [W + "nope.onnx"], "model missing", "nope.onnx", "does not exist"),
    C("bench-directory", "bench", [W + "dir.onnx"], "model is a folder", "dir.onnx", "is a directory"),
    C("bench-empty-onnx", "bench", [W + "empty.onnx"], "empty .onnx", "empty.onnx", "ONNX"),
    C("bench-garbage-onnx", "bench", [W + "garbage.onnx"], "random bytes .onnx", "garbage.onnx", "ONNX"),
    C("bench-truncated-onnx", "bench", [W + "trunc.onnx"], "truncated export", "trunc.onnx", "ONNX"),
    C("bench-checkpoint-garbage", "bench", [W + "text.pth"], "garbage checkpoint", "text.pth"),
    C("bench-variant-unknown", "bench", ["xl"], "unknown variant / file", "'xl'"),
    C("bench-unknown-suffix", "bench", [W + "notes.txt"], "a .txt model", "notes.txt"),
    C("bench-batch-zero", "bench", [W + "s64.onnx", "--batch", "0"], "--batch 0", "'0'"),
    C("bench-batch-text", "bench", [W + "s64.onnx", "--batch", "a,b"], "--batch a,b", "'a,b'"),
    C("bench-batch-empty", "bench", [W + "s64.onnx", "--batch", ""], "--batch ''", "''"),
    C("bench-batch-negative", "bench", [W + "s64.onnx", "--batch=1,-2"], "--batch 1,-2", "1,-2"),
    C("bench-batch-over-fixed", "bench", [W + "identity.onnx", "--batch", "8"], "batch over a static model's",
      "8"),
    C("bench-runtime-bad", "bench", [W + "s64.onnx", "--runtime", "cuda"], "unknown runtime", "'cuda'"),
    C("bench-runtime-absent", "bench", [W + "s64.onnx", "--runtime", "ort-trt"], "provider not installed",
      "'ort-trt'"),
    C("bench-iters-zero", "bench", [W + "s64.onnx", "--iters", "0"], "--iters 0", "'0'", "positive"),
    C("bench-warmup-negative", "bench", [W + "s64.onnx", "--warmup-s=-1"], "--warmup-s -1", "-1"),
    C("bench-duration-zero", "bench", [W + "s64.onnx", "--duration-s", "0"], "--duration-s 0", "0"),
    C("bench-duration-nan", "bench", [W + "s64.onnx", "--duration-s", "nan"], "--duration-s nan", "nan"),
    C("bench-duration-inf", "bench", [W + "s64.onnx", "--duration-s", "inf"], "--duration-s inf", "inf"),
    C("bench-threads-negative", "bench", [W + "s64.onnx", "--threads=-1"], "--threads -1", "-1"),
    C("bench-threads-huge", "bench", [W + "s64.onnx", "--threads", "100000"], "--threads 100000", "100000",
      "expected 0"),
    C("bench-rounds-zero", "bench", [W + "s64.onnx", "--rounds", "0"], "--rounds 0", "'0'", "positive"),
    C("bench-plan-garbage", "bench", [W + "garbage.plan"], "garbage .plan, no manifest", "garbage.plan"),
    C("bench-trt-for-onnx", "bench", [W + "s64.onnx", "--runtime", "tensorrt"], "runtime tensorrt for an ONNX",
      "s64.onnx", "tensorrt"),
    C("bench-img-size-text", "bench", ["s", "--img-size", "x"], "--img-size x", "'x'"),
    C("bench-json-under-file", "bench", [W + "s64.onnx", "--json", W + "text.pth/r.json"], "--json under a file",
      "text.pth/r.json"),
    C("bench-plot-is-dir", "bench", [W + "s64.onnx", "--plot", W + "dir.pth"], "--plot is a folder", "dir.pth"),
    C("bench-markdown-proc", "bench", [W + "s64.onnx", "--markdown", "/proc/mixnet.md"], "--markdown in /proc",
      "/proc/mixnet.md"),
    C("bench-engine-garbage", "bench", [W + "garbage.engine"], "garbage engine, no manifest", "garbage.engine"),
    C("bench-engine-foreign", "bench", [W + "foreign.engine"], "engine manifest of another system",
      "foreign.engine", "TensorRT"),
]
# fmt: on
BY_ID = {c.id: c for c in CASES}
FOREIGN_SYSTEM = {"tensorrt": "8.6.1", "cuda_runtime": "11.4", "cuda_driver": "11.4", "gpu": "Tesla K80",
                  "compute_capability": "3.7", "l4t": None}  # fmt: skip
assert len(BY_ID) == len(CASES), "duplicate case ids"


# ---------------------------------------------------------------------------------------------- inputs


class Payload:
    """Unpickling this would run ``func(arg)``: the markers it would create prove it never ran."""

    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


def payload_markers(folder: Path) -> list[Path]:
    """What a payload would have created: it writes PWNED-* into the working directory of the process."""
    return sorted(folder.rglob("PWNED-*"))


def make_inputs(inputs: Path) -> Path:
    """Every bad input file of the catalogue (a few seconds: random-weight checkpoints, one 64x64 export)."""
    import builtins

    import numpy as np
    import onnx
    import torch
    from onnx import TensorProto, helper
    from PIL import Image
    from safetensors.torch import save_file

    from mixnet_deploy.arch import get_variant
    from mixnet_deploy.fold import fold_bn
    from mixnet_deploy.model import build_model
    from mixnet_deploy.onnx_export import build_metadata, set_metadata, to_onnx
    from mixnet_deploy.weights import load_model, own_to_timm, save_checkpoint

    inputs.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    s = build_model("s")
    with torch.no_grad():
        for p in s.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    sd = {k: v.detach().clone().contiguous() for k, v in s.state_dict().items()}
    save_checkpoint(s, inputs / "s.safetensors")
    save_checkpoint(build_model("m"), inputs / "m.safetensors")
    torch.save(own_to_timm(sd, get_variant("s")), inputs / "s_timm.pth")

    def cut(src: str, dst: str, n: int | None = None):
        data = (inputs / src).read_bytes()
        (inputs / dst).write_bytes(data[: len(data) // 2 if n is None else n])

    cut("s.safetensors", "trunc.safetensors")
    cut("s.safetensors", "head.safetensors", 100)
    cut("s_timm.pth", "trunc.pth")
    (inputs / "empty.pth").write_bytes(b"")
    (inputs / "dir.pth").mkdir()
    (inputs / "dir.onnx").mkdir()
    (inputs / "dangling.pth").symlink_to(inputs / "no-such-target")
    (inputs / "text.pth").write_text("hello, I am not a checkpoint\n")
    (inputs / "notes.txt").write_text("not a model\n")
    (inputs / "rand.pth").write_bytes(np.random.default_rng(1).bytes(4096))
    Image.new("RGB", (8, 8), (200, 10, 10)).save(inputs / "image.png")
    (inputs / "image.pth").write_bytes((inputs / "image.png").read_bytes())
    with zipfile.ZipFile(inputs / "zip.pth", "w") as z:
        z.writestr("readme.txt", "a zip file, not a torch checkpoint")
    (inputs / "json.safetensors").write_text(json.dumps({"weights": [1, 2, 3]}))
    (inputs / "bomb.safetensors").write_bytes((2**60).to_bytes(8, "little") + b"{}")
    torch.save([torch.zeros(2)], inputs / "list.pth")
    torch.save({"a": 1, "b": 2}, inputs / "ints.pth")
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)}, inputs / "resnet.pth")
    bad = dict(sd)
    bad["blocks.3.conv_pw.convs.0.weight"] = torch.zeros(7, 7, 1, 1)
    save_file(bad, str(inputs / "shape.safetensors"))
    save_file({k: v for i, (k, v) in enumerate(sd.items()) if i % 10 != 5}, str(inputs / "partial.safetensors"))
    nan = dict(sd)
    nan["blocks.5.conv_dw.convs.0.weight"] = nan["blocks.5.conv_dw.convs.0.weight"].clone()
    nan["blocks.5.conv_dw.convs.0.weight"][0, 0, 0, 0] = float("nan")
    save_file(nan, str(inputs / "nan.safetensors"))
    inf = dict(sd)
    inf["classifier.bias"] = inf["classifier.bias"].clone()
    inf["classifier.bias"][3] = float("inf")
    torch.save(inf, inputs / "inf.pth")

    # Pickles that would run code: each payload would create a PWNED-* marker in the working directory.
    touch = "open('PWNED-exec', 'w').close()"
    torch.save({"conv_stem.weight": torch.zeros(1), "x": Payload(os.system, "touch PWNED-system")},
               inputs / "evil_dict.pth")  # fmt: skip
    torch.save({"state_dict": sd, "hook": Payload(builtins.exec, touch)}, inputs / "evil_wrapped.pth")
    torch.save(Payload(builtins.exec, touch), inputs / "evil_legacy.pth", _use_new_zipfile_serialization=False)
    with open(inputs / "evil_raw.pt", "wb") as f:
        pickle.dump(Payload(os.system, "touch PWNED-raw"), f, protocol=2)

    # ONNX files: a 64x64 export of s.safetensors (as run_export makes it), broken copies, a non-MixNet graph.
    model, info = load_model(None, inputs / "s.safetensors")
    proto = to_onnx(fold_bn(model), 64)
    set_metadata(proto, build_metadata(model.spec, info, 64, "fp32"))
    data = proto.SerializeToString()
    (inputs / "s64.onnx").write_bytes(data)
    (inputs / "trunc.onnx").write_bytes(data[: len(data) // 3])
    (inputs / "empty.onnx").write_bytes(b"")
    (inputs / "garbage.onnx").write_bytes(np.random.default_rng(2).bytes(3000))
    (inputs / "text.onnx").write_text("ir_version: 8\nthis is text\n")
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 64, 64])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 64, 64])
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["logits"])], "identity", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), inputs / "identity.onnx")

    # Engines: garbage without a manifest, garbage with another system's manifest, a manifest that is not JSON.
    for name in ("garbage.engine", "garbage.plan", "foreign.engine", "badjson.engine"):
        (inputs / name).write_bytes(np.random.default_rng(3).bytes(2048))
    from mixnet_deploy.engine import EngineOptions, build_manifest, sha256_file

    foreign = build_manifest(
        engine_sha256=sha256_file(inputs / "foreign.engine"), onnx_path=inputs / "s64.onnx",
        onnx_sha256=sha256_file(inputs / "s64.onnx"), precision="fp16", opts=EngineOptions(img_size=64),
        system=FOREIGN_SYSTEM,
    )  # fmt: skip
    (inputs / "foreign.engine.json").write_text(json.dumps(foreign))
    (inputs / "badjson.engine.json").write_text("{not json")

    # Calibration folders.
    (inputs / "calib_empty").mkdir()
    (inputs / "calib_text").mkdir()
    (inputs / "calib_text" / "labels.txt").write_text("cat\ndog\n")
    (inputs / "calib_text" / "data.csv").write_text("a,b\n")
    corrupt = inputs / "calib_corrupt" / "sub"
    corrupt.mkdir(parents=True)
    (corrupt / "a.jpg").write_bytes(np.random.default_rng(4).bytes(1000))
    (corrupt / "b.png").write_bytes((inputs / "image.png").read_bytes()[:40])
    (corrupt / "c.webp").write_bytes(b"")
    (corrupt / "d.jpeg").write_text("<html>not an image</html>")

    # Presets.
    presets = {
        "not.toml": "img_size = = 64\n[",
        "unknown_key.toml": "imgsize = 64\n",
        "wrong_type.toml": 'img_size = "big"\n',
        "bool_int.toml": "img_size = true\n",
        "bad_value.toml": "img_size = 100\n",
        "bad_batch.toml": 'batch = "8:1:2"\n',
        "bad_engine.toml": 'engine = "maybe"\n',
        "table.toml": "[engine]\nmode = 'skip'\n",
    }
    for name, text in presets.items():
        (inputs / name).write_text(text)
    return inputs


def snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): (p.stat().st_size if p.is_file() else -1) for p in folder.rglob("*")}


def help_text(command: str) -> str:
    return run_command(command, ["--help"], Path.cwd()).stdout


def run_command(command: str, args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """The installed console script (``mixnet-export`` ...) or, when not on PATH, its entry point via ``-c``."""
    script = shutil.which(PROG[command], path=os.path.dirname(sys.executable)) or shutil.which(PROG[command])
    code = f"from mixnet_deploy.cli import {ENTRY[command]} as main; raise SystemExit(main())"
    argv = [script] if script else [sys.executable, "-c", code]
    return subprocess.run([*argv, *args], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)


def case_env(home: Path) -> dict[str, str]:
    """No Hugging Face cache (so --weights timm fails the same everywhere), one thread per process."""
    return {"HF_HOME": str(home / "hf"), "HF_HUB_CACHE": str(home / "hf" / "hub"), "OMP_NUM_THREADS": "1"}


# A fork server: one process imports the package (torch, ONNX Runtime: ~1.5 s of CPU) once, then forks one
# child per case. Each child is a separate process that runs the command's entry point with the case's
# argv, cwd and environment, its stdout/stderr redirected to files at the file-descriptor level; its exit
# status is the command's. This makes ~130 process runs affordable on a 2-core CI machine.
# test_console_scripts_agree_with_the_fork_server runs a sample through the real console scripts.
FORK_SERVER = r"""
import importlib, json, os, sys, traceback
for name in ("torch", "onnx", "onnxruntime", "safetensors.torch", "PIL.Image", "mixnet_deploy.cli",
             "mixnet_deploy.pipeline", "mixnet_deploy.parity", "mixnet_deploy.bench", "mixnet_deploy.runtimes",
             "mixnet_deploy.presets", "mixnet_deploy.data", "mixnet_deploy.precision", "mixnet_deploy.engine",
             "mixnet_deploy.triton", "mixnet_deploy.report"):
    try:
        importlib.import_module(name)
    except ImportError:
        pass
import mixnet_deploy.cli as cli
jobs, workers = json.load(sys.stdin), int(sys.argv[1])
running, results = {}, {}

def start(job):
    sys.stdout.flush(); sys.stderr.flush()
    pid = os.fork()
    if pid:
        running[pid] = job
        return
    code = 99
    try:
        os.chdir(job["cwd"])
        os.environ.update(job["env"])
        for fd, name in ((1, "stdout"), (2, "stderr")):
            f = os.open(os.path.join(job["cwd"], ".case-" + name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(f, fd)
            os.close(f)
        code = getattr(cli, job["entry"])(job["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
    except BaseException:
        traceback.print_exc()
        code = 99
    finally:
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(code if isinstance(code, int) else 1)

for job in jobs:
    while len(running) >= workers:
        pid, status = os.wait()
        results[running.pop(pid)["id"]] = os.waitstatus_to_exitcode(status)
    start(job)
while running:
    pid, status = os.wait()
    results[running.pop(pid)["id"]] = os.waitstatus_to_exitcode(status)
json.dump(results, sys.stdout)
"""


@dataclass
class Outcome:
    case: Case
    argv: list[str]
    code: int
    stdout: str
    stderr: str
    case_dir: Path

    def error_lines(self) -> list[str]:
        return [ln for ln in self.stderr.splitlines() if ln.strip() and not ln.startswith("WARNING")]


def run_cases(cases: list[Case], inputs: Path, root: Path, extra: tuple[str, ...] = ()) -> dict[str, Outcome]:
    """Run cases concurrently in forked children of one pre-imported process; {case id: Outcome}."""
    jobs, dirs = [], {}
    for case in cases:
        case_dir = dirs[case.id] = root / case.id
        case_dir.mkdir(parents=True, exist_ok=True)
        argv = [*case.argv(inputs, case_dir), *extra]
        jobs.append({"id": case.id, "entry": ENTRY[case.command], "argv": argv, "cwd": str(case_dir),
                     "env": case_env(root)})  # fmt: skip
    workers = str(max(2, os.cpu_count() or 2))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", FORK_SERVER, workers], input=json.dumps(jobs), capture_output=True, text=True,
        timeout=TIMEOUT_S * 3, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, f"fork server failed:\n{proc.stderr[-3000:]}"
    codes = json.loads(proc.stdout)
    out = {}
    for job, case in zip(jobs, cases):
        d = dirs[case.id]
        texts = [(d / f".case-{n}").read_text(errors="replace") for n in ("stdout", "stderr")]
        for n in ("stdout", "stderr"):
            (d / f".case-{n}").unlink()
        out[case.id] = Outcome(case, job["argv"], codes[case.id], texts[0], texts[1], d)
    return out


def flags_available() -> dict[str, str]:
    return {cmd: help_text(cmd) for cmd in ENTRY}


# ---------------------------------------------------------------------------------------------- tests


@pytest.fixture(scope="session")
def catalogue(request, tmp_path_factory):
    """Runs the selected cases once, concurrently; returns (inputs, {id: Outcome}, skipped {id: why})."""
    inputs = make_inputs(tmp_path_factory.mktemp("bad-inputs"))
    before = snapshot(inputs)
    helps = flags_available()
    wanted = {
        item.callspec.params["case_id"]
        for item in request.session.items
        if hasattr(item, "callspec") and "case_id" in item.callspec.params
    } or set(BY_ID)
    skipped = {
        c.id: f"{PROG[c.command]} has no {c.needs_flag} yet"
        for c in CASES
        if c.needs_flag and c.needs_flag not in helps[c.command]
    }
    todo = [c for c in CASES if c.id in wanted and c.id not in skipped]
    outcomes = run_cases(todo, inputs, tmp_path_factory.mktemp("cases"))
    return inputs, before, outcomes, skipped


@pytest.mark.parametrize("case_id", list(BY_ID))
def test_bad_input_fails_cleanly(catalogue, case_id):
    inputs, _, outcomes, skipped = catalogue
    if case_id in skipped:
        pytest.skip(skipped[case_id])
    o = outcomes[case_id]
    case, prog = o.case, PROG[o.case.command]
    detail = f"{prog} {' '.join(o.argv)}\nexit {o.code}\nstderr:\n{o.stderr}\nstdout:\n{o.stdout[-2000:]}"
    assert o.code == case.code, detail
    assert "Traceback" not in o.stderr, detail
    lines = o.error_lines()
    assert len(lines) == 1, f"expected one error line:\n{detail}"
    assert lines[0].startswith(f"{prog}: error: "), detail
    for needle in case.needles:
        assert needle in lines[0], f"{needle!r} not in the message:\n{detail}"
    left = [p for p in o.case_dir.rglob("*") if p.suffix in MODEL_SUFFIXES or TMP_MARKER in p.name]
    assert not left, f"left behind: {left}\n{detail}"
    assert not payload_markers(o.case_dir), "a pickled payload ran"


def test_inputs_untouched_and_no_payload_ran(catalogue):
    inputs, before, outcomes, _ = catalogue
    assert outcomes, "no case ran"
    assert not payload_markers(inputs)
    assert snapshot(inputs) == before, "a failing command changed its inputs (temp files, partial writes?)"


SAMPLE = ("export-img-not-32", "weights-trunc-pth", "pickle-payload-wrapped", "parity-garbage-onnx", "bench-batch-zero")


def test_verbose_shows_the_traceback(catalogue, tmp_path):
    inputs = catalogue[0]
    outcomes = run_cases([BY_ID[i] for i in SAMPLE], inputs, tmp_path, extra=("--verbose",))
    for case_id, o in outcomes.items():
        assert o.code == o.case.code, f"{case_id}: {o.stderr}"
        assert "Traceback" in o.stderr and f"{PROG[o.case.command]}: error: " in o.stderr, case_id


@pytest.mark.parametrize("case_id", SAMPLE)
def test_console_scripts_agree_with_the_fork_server(catalogue, tmp_path, case_id):
    """The installed console script, started from nothing, fails as the forked entry point did."""
    inputs, _, outcomes, _ = catalogue
    case = BY_ID[case_id]
    forked = outcomes[case_id]
    proc = run_command(case.command, case.argv(inputs, forked.case_dir), forked.case_dir,
                       {**os.environ, **case_env(tmp_path)})  # fmt: skip
    assert proc.returncode == forked.code == case.code
    assert "Traceback" not in proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == forked.error_lines()
    assert not payload_markers(forked.case_dir)


def test_pickle_payloads_would_run_if_unpickled_unsafely(catalogue, tmp_path):
    """The payload files are real: plain pickle.load runs them (in a throwaway process)."""
    inputs = catalogue[0]
    code = "import pickle, sys; pickle.load(open(sys.argv[1], 'rb'))"
    subprocess.run([sys.executable, "-c", code, str(inputs / "evil_raw.pt")], cwd=tmp_path, timeout=60)
    assert [p.name for p in payload_markers(tmp_path)] == ["PWNED-raw"]


def test_engine_manifest_of_another_system_is_refused(catalogue):
    """Where TensorRT runs (GPU CI), foreign.engine fails on its manifest; the check itself runs here."""
    from mixnet_deploy.engine import verify_engine_file
    from mixnet_deploy.errors import InputError

    here = {**FOREIGN_SYSTEM, "tensorrt": "10.3.0", "gpu": "NVIDIA H100", "compute_capability": "9.0"}
    with pytest.raises(InputError) as info:
        verify_engine_file(catalogue[0] / "foreign.engine", system=here)
    text = str(info.value)
    assert "foreign.engine" in text and "8.6.1" in text and "10.3.0" in text and "Tesla K80" in text
    assert verify_engine_file(catalogue[0] / "foreign.engine", system=FOREIGN_SYSTEM)["precision"] == "fp16"


# ---------------------------------------------------------------------------------------------- docs


def docs_row(case: Case, message: str) -> str:
    cmd = f"{PROG[case.command]} {' '.join(_show(a) for a in case.args)}"
    return f"| `{case.id}` | {case.input} | `{cmd}` | {_md(message)} | {case.code} |"


def _show(arg: str) -> str:
    return arg.replace("{in}/", "") if arg else "''"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def normalize(message: str, outcome: Outcome, inputs: Path) -> str:
    text = message.replace(str(outcome.case_dir), "CASE").replace(str(inputs) + "/", "").replace(str(inputs), "IN")
    text = text.replace(str(outcome.case_dir.parent), "CASES")
    return text


def render_docs(outcomes: dict[str, Outcome], inputs: Path) -> str:
    head = [
        "# Bad inputs: the error catalogue",
        "",
        "Every row is a case of `tests/test_reliability.py`, run as a subprocess by the test suite, which checks:",
        "the exit code below (2 = bad input, 1 = verification failed), exactly one `<prog>: error:` line on stderr",
        "that names the value (the message column is what this version printed), no traceback unless `--verbose`,",
        "no `.onnx`/`.engine`/`.plan` and no temporary file left behind, and no pickled payload executed.",
        "Regenerate with `python tests/test_reliability.py` (the test suite fails when a case is missing here).",
        "",
        "Every export case also gets `--out CASE/out` and, unless it sets them or uses `--preset` (flags would",
        "override the preset's bad value), `--img-size 64 --engine skip`; parity cases `--quiet --random 2`; bench",
        "cases `--quiet --iters 2 --warmup-s 0 --batch 1`. Input files (`s.safetensors` = random mixnet_s weights,",
        "`trunc.pth`, `evil_*.pth` = pickles whose unpickling would run `os.system`/`exec`, ...) are made by",
        "`make_inputs` in the test file. Paths in messages are shortened: `CASE` = the case's folder.",
        "",
        "Interrupted and repeated runs (`tests/test_interrupt.py`): every artifact is written under a temporary",
        "name in its folder and renamed when complete. Ctrl-C or `kill` (SIGTERM) exits 130 and leaves no temporary",
        "file and no model file; a run that fails after it started writing (e.g. a calibration folder of unreadable",
        "images) removes what it wrote; a re-run into a folder first removes the previous run's `report.json`,",
        "ONNX files, engines and manifests of that model, so report, manifest and models always come from one run.",
        "`kill -9` allows no cleanup: the complete temporary file stays (never a file under the final name) and the",
        "next run into the folder deletes it. Calibration caches are kept (keyed by content).",
        "",
        "| case | input | command | message | exit |",
        "|---|---|---|---|---|",
    ]
    rows = []
    for case in CASES:
        o = outcomes.get(case.id)
        if o is None:
            message = "(not run: the flag does not exist yet)"
        else:
            lines = o.error_lines()
            message = normalize(lines[0] if lines else "(no message)", o, inputs)
        rows.append(docs_row(case, message))
    return "\n".join(head + rows) + "\n"


def test_docs_table_is_the_catalogue():
    text = DOCS.read_text() if DOCS.is_file() else ""
    documented = dict(re.findall(r"^\| `([^`]+)` \| .* \| (\d) \|$", text, flags=re.M))
    for case in CASES:
        assert case.id in documented, f"{case.id} missing from docs/errors.md: run python tests/test_reliability.py"
        assert int(documented[case.id]) == case.code, f"{case.id}: exit code differs in docs/errors.md"
    assert set(documented) <= set(BY_ID), f"docs/errors.md has rows of no case: {set(documented) - set(BY_ID)}"


if __name__ == "__main__":  # python tests/test_reliability.py: run the catalogue, rewrite docs/errors.md
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        ins = make_inputs(Path(tmp) / "in")
        helps = flags_available()
        todo = [c for c in CASES if not c.needs_flag or c.needs_flag in helps[c.command]]
        results = run_cases(todo, ins, Path(tmp) / "cases")
        DOCS.parent.mkdir(exist_ok=True)
        DOCS.write_text(render_docs(results, ins))
        bad = [i for i, o in results.items() if o.code != o.case.code or len(o.error_lines()) != 1]
        print(f"wrote {DOCS} ({len(CASES)} cases); unexpected: {bad or 'none'}")
