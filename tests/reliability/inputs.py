"""Every bad input file of the catalogue (a few seconds: random-weight checkpoints, one 64x64 export).

``make_inputs(folder)`` writes them all; each maker below writes one family and is small enough to read.
The pickles carry payloads that would create ``PWNED-*`` markers in the working directory if unpickled.
"""

from __future__ import annotations

import builtins
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np

# The system an engine manifest of foreign.engine was "built" on (engine-of-another-system cases).
FOREIGN_SYSTEM = {"tensorrt": "8.6.1", "cuda_runtime": "11.4", "cuda_driver": "11.4", "gpu": "Tesla K80",
                  "compute_capability": "3.7", "l4t": None}  # fmt: skip
PRESETS = {
    "not.toml": "img_size = = 64\n[",
    "unknown_key.toml": "imgsize = 64\n",
    "wrong_type.toml": 'img_size = "big"\n',
    "bool_int.toml": "img_size = true\n",
    "bad_value.toml": "img_size = 100\n",
    "bad_batch.toml": 'batch = "8:1:2"\n',
    "bad_engine.toml": 'engine = "maybe"\n',
    "table.toml": "[engine]\nmode = 'skip'\n",
    "ok.toml": 'engine = "skip"\n',  # a valid preset (a path an output must not overwrite)
}


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
    inputs.mkdir(parents=True, exist_ok=True)
    sd = checkpoints(inputs)
    plain_files(inputs)
    bad_checkpoints(inputs, sd)
    pickles(inputs, sd)
    onnx_files(inputs)
    engines(inputs)
    calibration_folders(inputs)
    label_inputs(inputs)
    output_folders(inputs)
    odd_files(inputs)
    odd_checkpoints(inputs, sd)
    foreign_onnx(inputs)
    for name, text in PRESETS.items():
        (inputs / name).write_text(text)
    return inputs


def checkpoints(inputs: Path) -> dict:
    """Good checkpoints (random mixnet_s in our and timm's layout, mixnet_m) and cut copies; the S state_dict."""
    import torch

    from mixnet_deploy.arch import get_variant
    from mixnet_deploy.model import build_model
    from mixnet_deploy.weights import own_to_timm, save_checkpoint

    gen = torch.Generator().manual_seed(0)
    s = build_model("s")
    with torch.no_grad():
        for p in s.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    sd = {k: v.detach().clone().contiguous() for k, v in s.state_dict().items()}
    save_checkpoint(s, inputs / "s.safetensors")
    save_checkpoint(build_model("m"), inputs / "m.safetensors")
    torch.save(own_to_timm(sd, get_variant("s")), inputs / "s_timm.pth")
    for src, dst, n in (("s.safetensors", "trunc.safetensors", None), ("s.safetensors", "head.safetensors", 100),
                        ("s_timm.pth", "trunc.pth", None)):  # fmt: skip
        data = (inputs / src).read_bytes()
        (inputs / dst).write_bytes(data[: len(data) // 2 if n is None else n])
    return sd


def plain_files(inputs: Path) -> None:
    """Files that are no checkpoint at all: empty, folders, a dangling link, text, random bytes, PNG, zip, JSON."""
    from PIL import Image

    (inputs / "empty.pth").write_bytes(b"")
    (inputs / "dir.pth").mkdir()
    (inputs / "dir.onnx").mkdir()
    (inputs / "dangling.pth").symlink_to(inputs / "no-such-target")
    (inputs / "text.pth").write_text("hello, I am not a checkpoint\n")
    (inputs / "text.safetensors").write_text("hello, I am not a checkpoint either\n")
    (inputs / "notes.txt").write_text("not a model\n")
    (inputs / "rand.pth").write_bytes(np.random.default_rng(1).bytes(4096))
    Image.new("RGB", (8, 8), (200, 10, 10)).save(inputs / "image.png")
    (inputs / "image.pth").write_bytes((inputs / "image.png").read_bytes())
    with zipfile.ZipFile(inputs / "zip.pth", "w") as z:
        z.writestr("readme.txt", "a zip file, not a torch checkpoint")
    (inputs / "json.safetensors").write_text(json.dumps({"weights": [1, 2, 3]}))
    (inputs / "bomb.safetensors").write_bytes((2**60).to_bytes(8, "little") + b"{}")


def bad_checkpoints(inputs: Path, sd: dict) -> None:
    """Readable checkpoints with the wrong content: not a state_dict, another model, wrong shape, NaN, Inf."""
    import torch
    from safetensors.torch import save_file

    torch.save([torch.zeros(2)], inputs / "list.pth")
    torch.save({"a": 1, "b": 2}, inputs / "ints.pth")
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)}, inputs / "resnet.pth")
    save_file({**sd, "blocks.3.conv_pw.convs.0.weight": torch.zeros(7, 7, 1, 1)}, str(inputs / "shape.safetensors"))
    save_file({k: v for i, (k, v) in enumerate(sd.items()) if i % 10 != 5}, str(inputs / "partial.safetensors"))
    key = "blocks.5.conv_dw.convs.0.weight"
    nan = {**sd, key: sd[key].clone()}
    nan[key][0, 0, 0, 0] = float("nan")
    save_file(nan, str(inputs / "nan.safetensors"))
    inf = {**sd, "classifier.bias": sd["classifier.bias"].clone()}
    inf["classifier.bias"][3] = float("inf")
    torch.save(inf, inputs / "inf.pth")


def pickles(inputs: Path, sd: dict) -> None:
    """Pickles that would run code: each payload would create a PWNED-* marker in the working directory."""
    import torch

    touch = "open('PWNED-exec', 'w').close()"
    torch.save({"conv_stem.weight": torch.zeros(1), "x": Payload(os.system, "touch PWNED-system")},
               inputs / "evil_dict.pth")  # fmt: skip
    torch.save({"state_dict": sd, "hook": Payload(builtins.exec, touch)}, inputs / "evil_wrapped.pth")
    torch.save(Payload(builtins.exec, touch), inputs / "evil_legacy.pth", _use_new_zipfile_serialization=False)
    with open(inputs / "evil_raw.pt", "wb") as f:
        pickle.dump(Payload(os.system, "touch PWNED-raw"), f, protocol=2)


def onnx_files(inputs: Path) -> None:
    """A 64x64 export of s.safetensors (as run_export makes it), broken copies, a non-MixNet graph."""
    import onnx
    from onnx import TensorProto, helper

    _export(inputs / "s.safetensors", inputs / "s64.onnx")
    data = (inputs / "s64.onnx").read_bytes()
    (inputs / "trunc.onnx").write_bytes(data[: len(data) // 3])
    (inputs / "empty.onnx").write_bytes(b"")
    (inputs / "garbage.onnx").write_bytes(np.random.default_rng(2).bytes(3000))
    (inputs / "text.onnx").write_text("ir_version: 8\nthis is text\n")
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 64, 64])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 64, 64])
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["logits"])], "identity", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), inputs / "identity.onnx")
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])  # a static batch of 1, no metadata
    graph = helper.make_graph(_pool("input"), "static", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), inputs / "static.onnx")


def engines(inputs: Path) -> None:
    """Engines: garbage without a manifest, garbage with another system's manifest, a manifest that is not JSON."""
    from mixnet_deploy.engine_build import EngineOptions, build_manifest, sha256_file

    for name in ("garbage.engine", "garbage.plan", "foreign.engine", "badjson.engine"):
        (inputs / name).write_bytes(np.random.default_rng(3).bytes(2048))
    foreign = build_manifest(
        engine_sha256=sha256_file(inputs / "foreign.engine"), onnx_path=inputs / "s64.onnx",
        onnx_sha256=sha256_file(inputs / "s64.onnx"), precision="fp16", opts=EngineOptions(img_size=64),
        system=FOREIGN_SYSTEM,
    )  # fmt: skip
    (inputs / "foreign.engine.json").write_text(json.dumps(foreign))
    (inputs / "badjson.engine.json").write_text("{not json")


def calibration_folders(inputs: Path) -> None:
    """Image folders with no usable image: empty, only text files, only corrupt images (in a subfolder)."""
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


def label_inputs(inputs: Path) -> None:
    """mixnet-parity --labels: image folders in and out of the ImageNet layout, and bad image,class CSVs."""
    image = (inputs / "image.png").read_bytes()
    for rel in ("labels_flat/n01440764/a.png", "labels_flat/image.png", "labels_unknown/n99999999/a.png",
                "labels_ok/n01440764/a.png", "labels_ok/n01443537/b.png"):  # fmt: skip
        (inputs / rel).parent.mkdir(parents=True, exist_ok=True)
        (inputs / rel).write_bytes(image)
    csvs = {
        "labels_bad_class.csv": "n01440764/a.png,0\nn01443537/b.png,dog\n",
        "labels_range.csv": "n01440764/a.png,1000\n",
        "labels_dup.csv": "n01440764/a.png,0\nn01443537/b.png,1\nn01440764/a.png,0\n",
        "labels_fields.csv": "n01440764/a.png,0,tench\n",
        "labels_partial.csv": "image,class\nn01440764/a.png,n01440764\n",
    }
    for name, text in csvs.items():
        (inputs / name).write_text(text)


def output_folders(inputs: Path) -> None:
    """Output folders a re-run must leave as they are (issue 20): one holding a mixnet_s.onnx that mixnet-export
    did not write, one holding a good export (s64.onnx, with our metadata), a Triton repository whose version
    folder is a file, one whose mixnet_s holds a config.pbtxt we did not write, one whose mixnet_s is a KIND_CPU
    model."""
    (inputs / "out_foreign").mkdir()
    (inputs / "out_foreign" / "mixnet_s.onnx").write_bytes(b"an ONNX file someone else wrote")
    (inputs / "out_previous").mkdir()
    (inputs / "out_previous" / "mixnet_s.onnx").write_bytes((inputs / "s64.onnx").read_bytes())
    (inputs / "repo_version_file" / "mixnet_s").mkdir(parents=True)
    (inputs / "repo_version_file" / "mixnet_s" / "1").write_text("a file where version folder 1 would go")
    (inputs / "repo_foreign_config" / "mixnet_s").mkdir(parents=True)
    (inputs / "repo_foreign_config" / "mixnet_s" / "config.pbtxt").write_text('name: "mixnet_s"\nbackend: "python"\n')
    (inputs / "repo_cpu_model" / "mixnet_s").mkdir(parents=True)
    param = 'parameters {{ key: "mixnet.{}" value {{ string_value: "{}" }} }}'
    (inputs / "repo_cpu_model" / "mixnet_s" / "config.pbtxt").write_text("\n".join([
        "# Written by mixnet-export (mixnet-deploy).", 'name: "mixnet_s"', 'platform: "onnxruntime_onnx"',
        'input [\n  {\n    name: "input"\n    data_type: TYPE_FP32\n    dims: [ 3, 64, 64 ]\n  }\n]',
        "instance_group [\n  {\n    count: 1\n    kind: KIND_CPU\n  }\n]",
        param.format("model", "mixnet_s"), param.format("precision", "fp32"), ""]))  # fmt: skip


def odd_files(inputs: Path) -> None:
    """Files that hang or lie (issue 20): a FIFO, /dev/zero and a 65 MiB file named as images; float and 32-bit
    integer pixels (TIFFs named .png); a FIFO as preset and as labels file."""
    from PIL import Image

    special = inputs / "calib_special"
    special.mkdir()
    os.mkfifo(special / "fifo.jpg")  # opening it for reading would wait for a writer forever
    (special / "zero.png").symlink_to("/dev/zero")  # reading it would never end
    with open(special / "big.jpg", "wb") as f:  # sparse: no disk used; over the per-image byte cap
        f.truncate(65 * 2**20)
    deep = inputs / "images_deep"
    deep.mkdir()
    Image.fromarray(np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64), "F").save(deep / "f.png", "TIFF")
    Image.fromarray(np.full((64, 64), 2**20, np.int32), "I").save(deep / "i32.png", "TIFF")
    os.mkfifo(inputs / "fifo.toml")
    os.mkfifo(inputs / "fifo.csv")
    (inputs / "labels_999.csv").write_text("n01440764/a.png,999\nn01443537/b.png,1\n")


def odd_checkpoints(inputs: Path, sd: dict) -> None:
    """Checkpoints that load but lie: a negative BN running_var, int64 and complex64 weights, 0 classes, 3 classes
    (with its 64x64 export), and timm's mixnet_s layout in a Hugging Face cache folder of tf_mixnet_s."""
    import torch
    from safetensors.torch import save_file

    from mixnet_deploy.arch import get_variant
    from mixnet_deploy.weights import own_to_timm

    negvar = {**sd, "blocks.2.bn1.running_var": -sd["blocks.2.bn1.running_var"].abs() - 1}
    save_file(negvar, str(inputs / "negvar.safetensors"))
    key = "blocks.4.conv_pw.convs.0.weight"
    torch.save({**sd, key: (sd[key] * 100).to(torch.int64)}, inputs / "int64.pth")
    torch.save({**sd, key: sd[key].to(torch.complex64) * (1 + 1j)}, inputs / "complex.pth")
    zero = {**sd, "classifier.weight": sd["classifier.weight"][:0], "classifier.bias": sd["classifier.bias"][:0]}
    save_file(zero, str(inputs / "zero_classes.safetensors"))
    three = {**sd, "classifier.weight": sd["classifier.weight"][:3], "classifier.bias": sd["classifier.bias"][:3]}
    save_file(three, str(inputs / "s3.safetensors"), metadata={"variant": "s"})
    _export(inputs / "s3.safetensors", inputs / "s3_64.onnx")
    hf = inputs / "hf" / "models--timm--tf_mixnet_s.in1k" / "snapshots" / "0123abc"
    hf.mkdir(parents=True)
    save_file(own_to_timm(sd, get_variant("s")), str(hf / "model.safetensors"))


def _export(weights: Path, onnx_path: Path) -> None:
    """A 64x64 FP32 export of ``weights`` with its metadata, as run_export writes it."""
    from mixnet_deploy.fold import fold_bn
    from mixnet_deploy.onnx_export import build_metadata, set_metadata, to_onnx
    from mixnet_deploy.weights import load_model

    model, info = load_model(None, weights)
    proto = to_onnx(fold_bn(model), 64)
    onnx_path.write_bytes(set_metadata(proto, build_metadata(model.spec, info, 64, "fp32")).SerializeToString())


def foreign_onnx(inputs: Path) -> None:
    """Small ONNX graphs carrying s64.onnx's mixnet.* metadata that break the runner contract (float32
    [N, 3, H, W] in, float32 [N, classes] out), and s64.onnx with bad metadata values."""
    import onnx
    from onnx import TensorProto, helper

    from mixnet_deploy.onnx_export import read_metadata, set_metadata

    meta = read_metadata(onnx.load(str(inputs / "s64.onnx")))
    f32, n = TensorProto.FLOAT, "N"
    head = [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["f"])]  # fmt: skip
    weight = helper.make_tensor("w", f32, [3, 10], np.ones(30, np.float32))
    graphs = {
        "out10": ([*head, helper.make_node("MatMul", ["f", "w"], ["logits"])], [("input", f32, [n, 3, 64, 64])],
                  ("logits", f32, [n, 10]), [weight]),
        "argmax": ([*head, helper.make_node("ArgMax", ["f"], ["logits"], axis=1, keepdims=0)],
                   [("input", f32, [n, 3, 64, 64])], ("logits", TensorProto.INT64, [n]), []),
        "two_inputs": ([helper.make_node("Add", ["input", "other"], ["sum"]), *_pool("sum")],
                       [("input", f32, [n, 3, 64, 64]), ("other", f32, [n, 3, 64, 64])], ("logits", f32, [n, 3]), []),
        "rank2": ([helper.make_node("Identity", ["input"], ["logits"])], [("input", f32, [n, 1000])],
                  ("logits", f32, [n, 1000]), []),
        "uint8": ([helper.make_node("Cast", ["input"], ["x"], to=f32), *_pool("x")],
                  [("input", TensorProto.UINT8, [n, 3, 64, 64])], ("logits", f32, [n, 3]), []),
    }  # fmt: skip
    for name, (nodes, ins, out, init) in graphs.items():
        graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info(*i) for i in ins],
                                  [helper.make_tensor_value_info(*out)], init)  # fmt: skip
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        onnx.save(set_metadata(model, meta), inputs / f"{name}.onnx")
    bad_meta = {"meta_variant": ("mixnet.variant", "zz"), "meta_classes": ("mixnet.num_classes", "many"),
                "meta_size": ("mixnet.input_size", "big"), "meta_interp": ("mixnet.interpolation", "sinc")}  # fmt: skip
    for name, (key, value) in bad_meta.items():
        model = onnx.load(str(inputs / "s64.onnx"))
        onnx.save(set_metadata(model, {**meta, key: value}), inputs / f"{name}.onnx")


def _pool(x: str) -> list:
    """Nodes ``x`` [N, 3, H, W] -> ``logits`` [N, 3] (global average pool, flatten)."""
    from onnx import helper

    return [helper.make_node("GlobalAveragePool", [x], ["pooled"]), helper.make_node("Flatten", ["pooled"], ["logits"])]
