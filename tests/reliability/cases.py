"""The bad-input catalogue (issue 8): one row per case, also the table of docs/errors.md.

A case runs one command (``mixnet-export``, ``mixnet-parity``, ``mixnet-bench``) with its arguments and must
exit with ``code`` (2 = bad input; 3 = environment failure), print one ``<prog>: error: ...`` line holding
every needle (the needles name the bad value; they are substrings, so the wording around them may change),
and leave nothing behind.
The input files the arguments name (``{in}/...``) are made by ``inputs.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ENTRY = {"export": "export_main", "parity": "parity_main", "bench": "bench_main"}
PROG = {"export": "mixnet-export", "parity": "mixnet-parity", "bench": "mixnet-bench"}
# Added to every case of a command unless the case gives the flag itself (fast runs; see docs/errors.md).
DEFAULTS = {
    "export": (("--img-size", "64"), ("--engine", "skip")),
    "parity": (("--quiet",), ("--random", "2")),
    "bench": (("--quiet",), ("--iters", "2"), ("--warmup-s", "0"), ("--batch", "1")),
}
EXCLUSIVE = {"--random": ("--images",), "--iters": ("--duration-s",)}


@dataclass(frozen=True)
class Case:
    id: str
    command: str  # export, parity or bench
    args: tuple[str, ...]  # {in}: the shared input folder, {case}: this case's own folder
    input: str  # what is wrong, in words (docs/errors.md)
    needles: tuple[str, ...]  # all must appear in the error line
    code: int = 2
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


def C(id, command, args, input, *needles, code=2, defaults=True):  # noqa: N802 - a table row
    return Case(id, command, tuple(args), input, tuple(needles), code, defaults)


W = "{in}/"  # shared input folder prefix
# fmt: off
CASES: list[Case] = [
    # ------------------------------------------------------------------ mixnet-export: variant and flags
    C("export-variant-unknown", "export", ["--variant", "xs"], "unknown variant", "'xs'",
      "expected one of s, m, l, xl, xxl, tf_s, tf_m, tf_l"),
    C("export-variant-empty", "export", ["--variant", ""], "empty variant", "''", "expected one of"),
    C("export-variant-prefixed", "export", ["--variant", "mixnet_xs"], "unknown mixnet_ name", "'mixnet_xs'"),
    C("export-variant-tf-unknown", "export", ["--variant", "tf_mixnet_xl"], "a tf_ port timm lacks", "'tf_mixnet_xl'"),
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
    C("weights-look-alike", "export", ["--weights", W + "s_timm.pth"], "fits mixnet_s and tf_mixnet_s, no --variant",
      "--variant needed", "s_timm.pth", "mixnet_s and tf_mixnet_s", "expected s or tf_s"),
    C("weights-timm-xxl", "export", ["--weights", "timm", "--variant", "xxl"], "timm has no mixnet_xxl weights",
      "mixnet_xxl without pretrained weights"),
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
      "does not exist", defaults=False),
    C("preset-directory", "export", ["--preset", W + "dir.pth"], "preset is a folder", "dir.pth",
      "is a directory", defaults=False),
    C("preset-not-toml", "export", ["--preset", W + "not.toml"], "not TOML", "not.toml", "not valid TOML",
      defaults=False),
    C("preset-binary", "export", ["--preset", W + "rand.pth"], "binary preset", "rand.pth", "TOML", defaults=False),
    C("preset-unknown-key", "export", ["--preset", W + "unknown_key.toml"], "unknown key imgsize", "'imgsize'",
      "img_size", defaults=False),
    C("preset-wrong-type", "export", ["--preset", W + "wrong_type.toml"], 'img_size = "big"', "'img_size'",
      "'big'", "an integer", defaults=False),
    C("preset-bool-for-int", "export", ["--preset", W + "bool_int.toml"], "img_size = true", "'img_size'",
      "an integer", defaults=False),
    C("preset-bad-value", "export", ["--preset", W + "bad_value.toml"], "img_size = 100", "'img_size'", "100",
      "multiple of 32", defaults=False),
    C("preset-bad-batch", "export", ["--preset", W + "bad_batch.toml"], 'batch = "8:1:2"', "'batch'", "8:1:2",
      defaults=False),
    C("preset-bad-engine", "export", ["--preset", W + "bad_engine.toml"], 'engine = "maybe"', "'engine'",
      "'maybe'", defaults=False),
    C("preset-table", "export", ["--preset", W + "table.toml"], "a [table] in a preset", "'engine'", "flat",
      defaults=False),
    # ------------------------------------------------------------------ calibration images
    C("calib-missing", "export", ["--int8", "--calib", W + "nope"], "--calib folder missing", "nope",
      "does not exist"),
    C("calib-is-file", "export", ["--int8", "--calib", W + "text.pth"], "--calib is a file", "text.pth",
      "not a directory"),
    C("calib-empty", "export", ["--int8", "--calib", W + "calib_empty"], "empty folder", "calib_empty",
      "no .jpg"),
    C("calib-not-images", "export", ["--int8", "--calib", W + "calib_text"], "only .txt/.csv files",
      "calib_text"),
    C("calib-corrupt", "export", ["--int8", "--calib", W + "calib_corrupt"], "only corrupt .jpg/.png/.webp",
      "calib_corrupt"),
    C("int8-without-calib", "export", ["--int8"], "--int8 without --calib", "--int8 needs calibration images",
      "--calib"),
    C("calib-without-int8", "export", ["--calib", W + "calib_empty"], "--calib without --int8", "--int8"),
    C("calib-method-bad", "export", ["--int8", "--calib", "synthetic", "--calib-method", "mean"],
      "unknown calibration method", "'mean'"),
    C("calib-count-zero", "export", ["--int8", "--calib", "synthetic", "--calib-count", "0"], "--calib-count 0",
      "0"),
    C("int8-exclude-without-int8", "export", ["--int8-exclude", "auto"], "--int8-exclude without --int8",
      "--int8-exclude 'auto' given without --int8"),
    C("int8-exclude-empty-name", "export", ["--int8", "--calib", "synthetic", "--int8-exclude", "a,,b"],
      "an empty layer name in --int8-exclude", "--int8-exclude 'a,,b'", "comma-separated Conv layer names"),
    # ------------------------------------------------------------------ lowering, engines, Triton
    C("mdconv-bad", "export", ["--mdconv", "fused"], "unknown MixConv lowering", "'fused'",
      "split, merged"),
    C("engine-require-no-trt", "export", ["--engine", "require"], "--engine require without TensorRT",
      "--engine require", "TensorRT", "pip install 'mixnet-deploy[gpu]'", code=3),  # the machine lacks it: exit 3
    C("workspace-zero", "export", ["--workspace", "0"], "--workspace 0", "'0'"),
    C("workspace-text", "export", ["--workspace", "1G"], "--workspace 1G", "'1G'"),
    C("dla-negative", "export", ["--dla-core=-1", "--batch", "1"], "--dla-core -1", "--dla-core -1"),
    C("dla-dynamic-batch", "export", ["--dla-core", "0", "--batch", "1:8:32"], "DLA with a dynamic batch",
      "--batch '1:8:32' with DLA core 0", "DLA needs static shapes"),
    C("dla-text", "export", ["--dla-core", "abc"], "--dla-core not a number", "invalid int value: 'abc'"),
    C("timing-cache-dir", "export", ["--timing-cache", W + "dir.pth"], "--timing-cache is a folder", "dir.pth"),
    C("triton-kind-bad", "export", ["--triton-repo", "{case}/repo", "--triton-kind", "tpu"], "--triton-kind tpu",
      "'tpu'"),
    C("triton-precision-bad", "export", ["--triton-repo", "{case}/repo", "--triton-precision", "fp8"],
      "--triton-precision fp8", "'fp8'"),
    C("triton-version-zero", "export", ["--triton-repo", "{case}/repo", "--model-version", "0"],
      "--model-version 0", "0"),
    C("triton-name-slash", "export", ["--triton-repo", "{case}/repo", "--model-name", "../escape"],
      "--model-name with a path", "../escape"),
    C("triton-repo-under-file", "export", ["--triton-repo", W + "text.pth/repo"], "--triton-repo under a file",
      "text.pth/repo"),
    # ------------------------------------------------------------------ mixnet-parity
    C("parity-missing", "parity", [W + "nope.onnx"], "candidate missing", "nope.onnx", "does not exist"),
    C("parity-directory", "parity", [W + "dir.onnx"], "candidate is a folder", "dir.onnx", "is a directory"),
    C("parity-empty-onnx", "parity", [W + "empty.onnx"], "empty .onnx", "empty.onnx", "expected an ONNX model"),
    C("parity-garbage-onnx", "parity", [W + "garbage.onnx"], "random bytes .onnx", "garbage.onnx",
      "ONNX Runtime cannot load it"),
    C("parity-truncated-onnx", "parity", [W + "trunc.onnx"], "truncated export", "trunc.onnx", "ONNX"),
    C("parity-text-onnx", "parity", [W + "text.onnx"], "text named .onnx", "text.onnx", "ONNX"),
    C("parity-not-mixnet", "parity", [W + "identity.onnx"], "valid ONNX, not MixNet", "identity.onnx"),
    C("parity-unknown-suffix", "parity", [W + "notes.txt"], "a .txt candidate", "notes.txt", ".onnx, .engine"),
    C("parity-checkpoint", "parity", [W + "s.safetensors"], "checkpoint as candidate", "s.safetensors",
      ".onnx, .engine or .plan"),
    C("parity-other-variant", "parity", [W + "s64.onnx", "--variant", "m"], "mixnet_s file, --variant m",
      "--variant 'm'", "are mixnet_s"),
    C("parity-variant-unknown", "parity", [W + "s64.onnx", "--variant", "xs"], "unknown variant", "'xs'"),
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
    C("parity-json-parent-missing", "parity", [W + "s64.onnx", "--json", W + "nope/p.json"],
      "--json in a missing folder", "nope/p.json", "does not exist"),
    C("parity-json-is-dir", "parity", [W + "s64.onnx", "--json", W + "dir.pth"], "--json is a folder", "dir.pth"),
    C("parity-engine-garbage", "parity", [W + "garbage.engine"], "garbage engine, no manifest",
      "garbage.engine", "manifest"),
    C("parity-engine-foreign", "parity", [W + "foreign.engine"], "engine manifest of another system",
      "foreign.engine", "TensorRT"),
    C("parity-engine-bad-manifest", "parity", [W + "badjson.engine"], "engine manifest not JSON",
      "badjson.engine", "manifest"),
    # ------------------------------------------------------------------ mixnet-parity --labels (issue 15)
    C("labels-loose-image", "parity", [W + "s64.onnx", "--images", W + "labels_flat", "--labels", "folder"],
      "--labels folder, an image outside any class folder", "'folder'", "image.png", "synset subfolder"),
    C("labels-unknown-synset", "parity", [W + "s64.onnx", "--images", W + "labels_unknown", "--labels", "folder"],
      "--labels folder, a subfolder that is no ImageNet-1k synset", "'n99999999'", "ImageNet-1k synset"),
    C("labels-csv-bad-class", "parity", [W + "s64.onnx", "--images", W + "labels_ok", "--labels",
      W + "labels_bad_class.csv"], "CSV class neither index nor synset", "labels_bad_class.csv:2", "'dog'"),
    C("labels-csv-index-range", "parity", [W + "s64.onnx", "--images", W + "labels_ok", "--labels",
      W + "labels_range.csv"], "CSV class index 1000", "labels_range.csv:1", "'1000'", "0-999"),
    C("labels-csv-duplicate", "parity", [W + "s64.onnx", "--images", W + "labels_ok", "--labels",
      W + "labels_dup.csv"], "CSV image labelled twice", "labels_dup.csv:3", "labelled again"),
    C("labels-csv-fields", "parity", [W + "s64.onnx", "--images", W + "labels_ok", "--labels",
      W + "labels_fields.csv"], "CSV row of three fields", "labels_fields.csv:1", "expected two"),
    C("labels-csv-unlabelled", "parity", [W + "s64.onnx", "--images", W + "labels_ok", "--labels",
      W + "labels_partial.csv"], "an image without a CSV row", "n01443537/b.png", "no row in"),
    C("labels-csv-binary", "parity", [W + "s64.onnx", "--images", W + "labels_ok", "--labels", W + "image.png"],
      "--labels is an image", "image.png", "not UTF-8"),
    C("labels-missing", "parity", [W + "s64.onnx", "--images", W + "labels_ok", "--labels", W + "nope.csv"],
      "--labels file missing", "--labels", "nope.csv", "does not exist"),
    C("labels-without-images", "parity", [W + "s64.onnx", "--labels", "folder"], "--labels with random inputs",
      "--labels 'folder' without images"),
    C("labels-drop-without-labels", "parity", [W + "s64.onnx", "--max-top1-drop", "1"],
      "--max-top1-drop without --labels", "--max-top1-drop 1.0 without labels"),
    C("labels-drop-negative", "parity", [W + "s64.onnx", "--images", W + "labels_ok", "--labels", "folder",
      "--max-top1-drop", "-1"], "--max-top1-drop -1", "--max-top1-drop -1.0", ">= 0"),
    C("labels-drop-text", "parity", [W + "s64.onnx", "--max-top1-drop", "a"], "--max-top1-drop a", "'a'"),
    C("labels-predictions-parent-missing", "parity", [W + "s64.onnx", "--predictions", W + "nope/p.jsonl"],
      "--predictions in a missing folder", "nope/p.jsonl", "does not exist"),
    # ------------------------------------------------------------------ mixnet-bench
    C("bench-missing", "bench", [W + "nope.onnx"], "model missing", "nope.onnx", "does not exist"),
    C("bench-directory", "bench", [W + "dir.onnx"], "model is a folder", "dir.onnx", "is a directory"),
    C("bench-empty-onnx", "bench", [W + "empty.onnx"], "empty .onnx", "empty.onnx", "ONNX"),
    C("bench-garbage-onnx", "bench", [W + "garbage.onnx"], "random bytes .onnx", "garbage.onnx", "ONNX"),
    C("bench-truncated-onnx", "bench", [W + "trunc.onnx"], "truncated export", "trunc.onnx", "ONNX"),
    C("bench-checkpoint-garbage", "bench", [W + "text.pth"], "garbage checkpoint", "text.pth"),
    C("bench-variant-unknown", "bench", ["xs"], "unknown variant / file", "'xs'"),
    C("bench-unknown-suffix", "bench", [W + "notes.txt"], "a .txt model", "notes.txt"),
    C("bench-batch-zero", "bench", [W + "s64.onnx", "--batch", "0"], "--batch 0", "'0'"),
    C("bench-batch-text", "bench", [W + "s64.onnx", "--batch", "a,b"], "--batch a,b", "'a,b'"),
    C("bench-batch-empty", "bench", [W + "s64.onnx", "--batch", ""], "--batch ''", "''"),
    C("bench-batch-negative", "bench", [W + "s64.onnx", "--batch=1,-2"], "--batch 1,-2", "1,-2"),
    C("bench-batch-over-fixed", "bench", [W + "identity.onnx", "--batch", "8"], "batch over a static model's",
      "8"),
    C("bench-runtime-bad", "bench", [W + "s64.onnx", "--runtime", "cuda"], "unknown runtime", "'cuda'"),
    C("bench-runtime-absent", "bench", [W + "s64.onnx", "--runtime", "ort-trt"], "provider not installed",
      "'ort-trt'", "TensorrtExecutionProvider"),
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
    C("bench-img-size-other", "bench", [W + "s64.onnx", "--img-size", "128"], "size not the file's", "128",
      "64x64 inputs only"),
    C("bench-json-under-file", "bench", [W + "s64.onnx", "--json", W + "text.pth/r.json"], "--json under a file",
      "text.pth/r.json"),
    C("bench-plot-parent-missing", "bench", [W + "s64.onnx", "--plot", W + "nope/p.png"],
      "--plot in a missing folder", "nope/p.png", "does not exist"),
    C("bench-plot-is-dir", "bench", [W + "s64.onnx", "--plot", W + "dir.pth"], "--plot is a folder", "dir.pth"),
    C("bench-markdown-proc", "bench", [W + "s64.onnx", "--markdown", "/proc/mixnet.md"], "--markdown in /proc",
      "/proc/mixnet.md"),
    C("bench-engine-garbage", "bench", [W + "garbage.engine"], "garbage engine, no manifest", "garbage.engine"),
    C("bench-engine-foreign", "bench", [W + "foreign.engine"], "engine manifest of another system",
      "foreign.engine", "TensorRT"),
]
# fmt: on
BY_ID = {c.id: c for c in CASES}
assert len(BY_ID) == len(CASES), "duplicate case ids"
