"""Export presets (export/*.toml, --preset FILE): every shipped preset runs on the CPU; keys and values are checked."""

from __future__ import annotations

import dataclasses
import re
import sys
import types
import typing
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import every_file_accepted

from mixnet_deploy import presets
from mixnet_deploy.batching import BatchProfile
from mixnet_deploy.cli import build_export_parser, export_config, export_main
from mixnet_deploy.config import ExportConfig, export_flags, given_values
from mixnet_deploy.errors import InputError
from mixnet_deploy.export_reports import read_report
from mixnet_deploy.onnx_export import read_metadata

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "export").glob("*.toml"))


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory):
    """Six generated images (PNG and JPEG, odd sizes) for the INT8 presets.

    This runs the presets' INT8 path end to end (load, calibrate, quantize, verify on a held-out image);
    the INT8 accuracy on real photos is precision_onnx.py's test, not this one's.
    """
    from PIL import Image

    root = tmp_path_factory.mktemp("calib")
    rng = np.random.default_rng(0)
    for i in range(6):
        img = rng.integers(0, 255, (80 + 8 * i, 96, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / f"img{i}.{'png' if i % 2 else 'jpg'}")
    return root


def test_presets_exist_and_are_documented():
    names = {p.stem for p in PRESETS}
    assert {"cpu-onnx", "triton-gpu-fp16", "jetson-orin-int8", "jetson-orin-dla"} <= names
    readme = (ROOT / "export" / "README.md").read_text()
    for p in PRESETS:
        assert f"`{p.name}`" in readme, f"{p.name} is not described in export/README.md"


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_preset_runs_on_cpu(preset, tmp_path, random_checkpoint_s, calib_dir, monkeypatch):
    """The issue's check: --engine skip, --variant s, --calib DIR where the preset quantizes (small sizes)."""
    monkeypatch.chdir(tmp_path)  # the presets' relative paths would land here
    raw = tomllib.loads(preset.read_text())
    values = presets.load_preset(preset)
    out, repo = tmp_path / "out", tmp_path / "repo"
    argv = ["--preset", str(preset), "--variant", "s", "--engine", "skip", "--img-size", "64", "--out", str(out)]
    argv += ["--weights", str(random_checkpoint_s)]
    if raw.get("int8"):
        argv += ["--calib", str(calib_dir), "--calib-count", "4"]
    if "triton_repo" in raw:
        argv += ["--triton-repo", str(repo)]
    with every_file_accepted():  # what is checked is that each preset runs: INT8 of random weights on 4 images at
        assert export_main(argv) == 0  # 64 px misses its tolerance on the held-out photo (figures still reported)

    report = read_report(out)
    expected = ["fp32"] + ["fp16"] * bool(raw.get("fp16")) + ["int8"] * bool(raw.get("int8"))
    assert [a["precision"] for a in report["artifacts"]] == expected
    assert report["engines"] == [] and report["img_size"] == 64  # flags beat the preset
    for a in report["artifacts"]:
        meta = read_metadata(onnx.load(a["path"], load_external_data=False))
        assert meta["mixnet.input_size"] == "64"
        assert meta["mixnet.mdconv"] == raw.get("mdconv", "split")  # the preset's value was applied
    if "triton_repo" in raw:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2

        name = raw.get("model_name", "{model}").replace("{model}", "mixnet_s")
        cfg = text_format.Parse((repo / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
        assert cfg.max_batch_size == values["batch"].max
        assert list(cfg.input[0].dims) == [3, 64, 64]
        kind = model_config_pb2.ModelInstanceGroup.Kind.Name(cfg.instance_group[0].kind)
        assert kind == f"KIND_{raw['triton_kind'].upper()}"
        assert report["triton"]["precision"] == raw["triton_precision"]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == (["out", "repo"] if "triton_repo" in raw else ["out"])  # nothing stray in the cwd


# ---------------------------------------------------------------- loading and checking


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(text)
    return path


def cli_config(argv):
    return export_config(build_export_parser().parse_args(argv))


@pytest.mark.parametrize(
    "text,needle",
    [
        ("img_sise = 224", "unknown key 'img_sise' (did you mean 'img_size'?)"),
        ("out = 'x'", "unknown key 'out'"),
        ("img_size = 'big'", "key 'img_size' = 'big' (str): expected an integer"),
        ("img_size = 224.0", "key 'img_size' = 224.0 (float): expected an integer"),
        ("fp16 = 1", "key 'fp16' = 1 (int): expected true or false"),
        ("dla_core = true", "key 'dla_core' = True (bool): expected an integer"),
        ("batch = [1, 8]", "key 'batch'"),
        ("batch = '8:1:32'", "key 'batch' = '8:1:32': expected MIN:OPT:MAX"),
        ("out_dir = 3", "key 'out_dir' = 3 (int): expected a path string"),
        ("[triton]\nkind = 'gpu'", "unknown key 'triton'"),
        ("engine = 'maybe'", "key 'engine' = 'maybe': expected one of auto, require, skip"),
        ("img_size = 100", "key 'img_size' = 100: expected a positive multiple of 32"),
        ("triton_kind = 'tpu'\ntriton_repo = 'r'", "key 'triton_kind' = 'tpu'"),
        ("opset = 9", "key 'opset' = 9: expected an integer from 17 to 21"),
        ("img_size = ", "not valid TOML"),
    ],
)
def test_bad_presets_name_the_key(tmp_path, text, needle):
    path = write(tmp_path, text)
    with pytest.raises(InputError) as err:
        cli_config(["--preset", str(path), "--out", str(tmp_path / "o")])
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_missing_preset_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        cli_config(["--preset", str(tmp_path / "nope.toml")])


def test_cli_flags_override_preset_even_when_equal_to_the_default(tmp_path):
    path = write(tmp_path, f"img_size = 256\nopset = 18\nbatch = '2:4:8'\nout_dir = '{tmp_path / 'p'}'\nfp16 = true")
    cfg = cli_config(["--preset", str(path), "--img-size", "224", "--out", str(tmp_path / "o")])
    assert cfg.img_size == 224  # given on the command line (224 is also the default)
    assert cfg.out_dir == tmp_path / "o"  # --out -> out_dir
    assert (cfg.opset, cfg.batch, cfg.fp16) == (18, BatchProfile(2, 4, 8), True)  # from the preset
    assert cli_config(["--preset", str(path)]).img_size == 256


def test_a_flag_fixes_a_bad_preset_value(tmp_path):
    path = write(tmp_path, "engine = 'maybe'")
    assert cli_config(["--preset", str(path), "--engine", "skip", "--out", str(tmp_path / "o")]).engine == "skip"


def test_error_from_a_flag_is_not_blamed_on_the_preset(tmp_path):
    path = write(tmp_path, "img_size = 64")
    with pytest.raises(InputError) as err:
        cli_config(["--preset", str(path), "--engine", "maybe", "--out", str(tmp_path / "o")])
    assert str(err.value).startswith("--engine 'maybe'")


def _sample(tp):
    """A valid TOML value for a field type (the converter must accept it)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if args and typing.get_origin(tp) in (typing.Union, types.UnionType):
        return _sample(args[0])
    samples = {bool: True, int: 1, float: 0.5, str: "x", Path: "some/path", BatchProfile: "1:2:4"}
    return {**samples, tuple[str, ...]: "x"}[tp]  # a tuple of names: int8_exclude, given as text


def test_every_config_field_is_a_preset_key_and_a_flag():
    """Fields other modules add become preset keys automatically; each must also have a flag to override it."""
    fields = presets.config_fields()
    assert list(fields) == [f.name for f in dataclasses.fields(ExportConfig)]
    for name, tp in fields.items():
        value = presets.convert(name, _sample(tp), tp, "t.toml")
        assert dataclasses.replace(ExportConfig(), **{name: value})  # a value of the field's type
        with pytest.raises(InputError, match=f"key {name!r}"):
            presets.convert(name, {"a": 1} if tp is not dict else 1, tp, "t.toml")
    parser, flags = build_export_parser(), export_flags()
    for name, tp in fields.items():  # each field's flag, parsed, gives that field (and only it)
        sample = _sample(tp)
        argv = [flags[name]] if sample is True else [flags[name], str(sample)]
        assert set(given_values(parser.parse_args(argv))) == {name}, argv
    cli_only = {"--help", "--preset", "--quiet", "--verbose"}
    listed = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", parser.format_help())) - cli_only
    # a boolean field that defaults to True also lists its negative form (--wait / --no-wait)
    negatives = {"--no-" + flags[f.name][2:] for f in dataclasses.fields(ExportConfig) if f.default is True}
    assert listed - negatives == set(flags.values()), "a flag without field or a field without flag"


def test_a_combination_error_names_the_key_the_flag_or_the_preset_it_came_with(tmp_path):
    """Check errors carry a field: the preset key when the preset set it; the flag when a flag gave it; a
    default rejected because of a preset value (the default dynamic batch with the preset's DLA core) as its
    flag after the preset's name."""
    out = ["--out", str(tmp_path / "o")]
    path = write(tmp_path, "dla_core = 0\nfp16 = true")
    with pytest.raises(InputError) as err:
        cli_config(["--preset", str(path), *out])
    assert err.value.field is None  # rendered here: the preset's name, then the flag
    shown = f"with preset {path}: --batch '1:8:32' with DLA core 0: DLA needs static shapes: expected one batch size"
    assert str(err.value).startswith(shown)
    with pytest.raises(InputError) as err:
        cli_config(["--preset", str(path), "--batch", "1:4:8", *out])
    assert str(err.value).startswith("--batch '1:4:8' with DLA core 0: DLA needs static shapes")
    assert cli_config(["--preset", str(path), "--batch", "4", *out]).batch == BatchProfile(4, 4, 4)
    path = write(tmp_path, "dla_core = 0\nfp16 = true\nbatch = 8\nhardware_compat = true")
    with pytest.raises(InputError) as err:
        cli_config(["--preset", str(path), *out])
    assert str(err.value).startswith(f"preset {path}: key 'hardware_compat' with DLA core 0: DLA engines are tied")
    path = write(tmp_path, f"triton_precision = 'int8'\ntriton_repo = '{tmp_path / 'r'}'")
    with pytest.raises(InputError) as err:
        cli_config(["--preset", str(path), *out])
    assert str(err.value) == (
        f"preset {path}: key 'triton_precision' = 'int8' but this run writes fp32 only: "
        "expected --int8 with it, or another precision"
    )
