import json
import subprocess
import sys
from dataclasses import replace
from types import MappingProxyType

from mixnet_deploy import precision_table
from mixnet_deploy.cli import export_main
from mixnet_deploy.export_reports import read_report


def run_cli(*args):
    proc = subprocess.run(
        [sys.executable, "-m", "mixnet_deploy.cli", *args], capture_output=True, text=True, timeout=300
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_export_success(tmp_path):
    rc, out, err = run_cli("--variant", "s", "--out", str(tmp_path), "--engine", "skip")
    assert rc == 0, err
    assert (tmp_path / "mixnet_s.onnx").is_file()
    report = read_report(tmp_path)
    metrics = report["artifacts"][0]["metrics"]  # on photos: random weights give logits in the hundreds
    assert report["variant"] == "s" and metrics["max_abs"] < 1e-3 * metrics["scale"] and metrics["scale"] >= 1
    assert "RANDOM weights" in err  # loud warning without --weights
    assert "mixnet_s.onnx" in out


def test_verification_failure_exits_1_and_keeps_no_model(tmp_path, monkeypatch, capsys):
    impossible = precision_table.Tolerance(
        max_abs=0.0, min_cosine=1.1, min_mean_cosine=1.1, min_top1=None, min_top5_overlap=None
    )
    table = {**precision_table.PRECISIONS, "fp32": replace(precision_table.PRECISIONS["fp32"], tolerance=impossible)}
    monkeypatch.setattr(precision_table, "PRECISIONS", MappingProxyType(table))
    rc = export_main(["--variant", "s", "--out", str(tmp_path), "--engine", "skip"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "disagrees" in err and f"this run's report: {tmp_path / 'mixnet_s.failed.json'}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mixnet_s.failed.json"]  # no model, no temporary file
    failed = json.loads((tmp_path / "mixnet_s.failed.json").read_text())
    assert failed["artifacts"][0]["metrics"]["max_abs"] > 0 and failed["files"] == []


def test_summary_prints_engines_from_engine_results(capsys):
    """The engine rows (only built on a GPU) read engine.EngineResult objects, as the pipeline returns them."""
    from types import SimpleNamespace

    from mixnet_deploy.cli import print_export_summary
    from mixnet_deploy.engine_build import EngineResult
    from mixnet_deploy.pipeline import Artifact

    metrics = dict(max_abs=1e-6, min_cosine=1.0, mean_cosine=1.0, top1=1.0, top5_overlap=1.0)
    onnx = Artifact(precision="fp32", path="out/mixnet_s.onnx", bytes=2_000_000, nodes=346, ops={}, metrics=metrics,
                    tolerance={}, seconds=0.5)  # fmt: skip
    engine = EngineResult(precision="fp32", onnx=onnx.path, path="out/mixnet_s.engine", manifest="m", bytes=3_500_000,
                          seconds=41.0, check={})  # fmt: skip
    report = SimpleNamespace(variant="s", img_size=224, weights={"source": "random"}, mdconv="split", mdconv_auto={},
                             artifacts=[onnx], engines=[engine], notes=[], timings_s={"total": 1.0},
                             previous_run={}, verification={"source": "8 built-in photos"})  # fmt: skip
    print_export_summary(report)
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("engine"))
    assert line.split()[1:3] == ["mixnet_s.engine", "3.50"] and "built in 41.0 s" in line


# ---------------------------------------------------------------- issue 20: stdout closed or full, strict JSON

BENCH = "from mixnet_deploy.cli import bench_main; raise SystemExit(bench_main())"


def test_closed_stdout_is_a_quiet_sigpipe_exit(tmp_path):
    """`mixnet-export ... | head -1` once head has gone (here: the pipe's read end closed before the run): exit
    141 (128 + SIGPIPE, what a shell reports for a tool SIGPIPE ended), no traceback, no error line, no
    temporary file; the artifacts (written before the summary) are complete and their JSON strict."""
    import os

    from mixnet_deploy.atomic import TMP_MARKER

    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "mixnet_deploy.cli", "--variant", "s", "--img-size", "64", "--engine", "skip",
             "--out", str(tmp_path)], stdout=write, stderr=subprocess.PIPE, text=True, timeout=300,
        )  # fmt: skip
    finally:
        os.close(write)
    assert proc.returncode == 141, proc.stderr
    assert "Traceback" not in proc.stderr and "error" not in proc.stderr, proc.stderr
    assert not [p for p in tmp_path.iterdir() if TMP_MARKER in p.name]
    for path in tmp_path.glob("*.json"):
        strict_json(path.read_text())
    assert read_report(tmp_path)["variant"] == "s"


def test_full_stdout_is_an_environment_failure_naming_stdout():
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-c", BENCH, "s", "--img-size", "32", "--iters", "1", "--warmup-s", "0", "--batch", "1",
             "--quiet"], stdout=full, stderr=subprocess.PIPE, text=True, timeout=300,
        )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "unstable" not in ln]
    assert lines == ["mixnet-bench: error: cannot write standard output: No space left on device"], proc.stderr


def strict_json(text: str):
    """json.loads that refuses NaN, Infinity and -Infinity (as JSON.parse, jq and RFC 8259 do)."""
    import json

    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_every_json_writer_is_strict(tmp_path):
    """atomic.json_text is the one encoder: non-finite floats become null at any depth, the result parses
    strictly; Python's default json.dumps would have written NaN."""
    import json
    import math

    import pytest

    from mixnet_deploy.atomic import json_text, write_json

    obj = {"max_abs": math.nan, "rows": [1.5, math.inf, (-math.inf, {"x": math.nan})], "ok": 0.25}
    with pytest.raises(ValueError):
        strict_json(json.dumps(obj))
    assert strict_json(json_text(obj)) == {"max_abs": None, "rows": [1.5, None, [None, {"x": None}]], "ok": 0.25}
    assert strict_json(write_json(tmp_path / "r.json", obj).read_text())["max_abs"] is None
