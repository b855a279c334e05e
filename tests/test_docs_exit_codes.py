"""The exit codes the documentation states are the ones the code returns (issue 21 item 4: docs said
``--engine require`` without TensorRT exits 2, the code exits 3).

Read from the hand-written docs (README.md, docs/*.md but the generated errors.md, export/README.md): every
statement (a sentence, or a table cell) with an exit code about ``--engine require`` / ``engine = "require"``,
mixnet-serve's port in use and missing model, mixnet-bench's refused row, and trtexec.sh without trtexec or without
its banner; the README's exit-code table, and the error classes named with their codes. Each checked against
errors.py and a real run, so a doc that states another code fails here.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from mixnet_deploy import errors
from mixnet_deploy.gpu_stack import gpu_stack_status

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "export" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOCS = [p for p in DOCS if p.name != "errors.md"]  # generated from the catalogue, checked by test_reliability
EXIT = re.compile(r"exits? (?:code )?\(?\**(\d+)\**", re.IGNORECASE)
REQUIRE = re.compile(r"--engine require|engine = \"require\"|`require`")
PORT_IN_USE = re.compile(r"\bin use\b")
MISSING_MODEL = re.compile(r"missing or corrupt model")
REFUSED_ROW = re.compile(r"a row is refused")
NO_TRTEXEC = re.compile(r"how to set `TRTEXEC`")
NO_BANNER = re.compile(r"`\[TensorRT v\.\.\.\]` banner")
TABLE_ROW = re.compile(r"^\| \*\*(\d+)\*\* \| ([^|:]+)")
TABLE_MEANINGS = {"verification failed": errors.VerificationError, "bad input": errors.InputError,
                  "environment failure": errors.EnvironmentFailure}  # fmt: skip


def _paragraphs(path: Path) -> list[tuple[int, str]]:
    """(first line number, text) of each table row, heading and paragraph or list item (its lines joined: a
    sentence may wrap)."""
    found: list[tuple[int, str]] = []
    open_ = False  # whether the next line continues the last entry
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.strip()
        if open_ and text and not text.startswith(("|", "#", "```", "- ")):
            found[-1] = (found[-1][0], f"{found[-1][1]} {text}")
        elif text:
            found.append((number, text))
        open_ = bool(text) and not text.startswith(("|", "#", "```"))
    return found


def _segments(pattern: re.Pattern) -> list[tuple[str, int]]:
    """(where, documented code) for every table cell / sentence holding ``pattern`` and an exit code."""
    found = []
    for path in DOCS:
        for number, text in _paragraphs(path):
            for part in re.split(r"\. |; ", text):
                if pattern.search(part) and (m := EXIT.search(part)):
                    found.append((f"{path.relative_to(ROOT)}:{number}", int(m[1])))
    return found


def _wrong(stated: list[tuple[str, int]], code: int) -> dict[str, int]:
    return {where: c for where, c in stated if c != code}


def test_engine_require_without_tensorrt_exits_what_the_docs_say(tmp_path):
    from mixnet_deploy.cli import export_main

    if gpu_stack_status()[0]:
        pytest.skip("TensorRT and a CUDA device are present: --engine require builds")
    stated = _segments(REQUIRE)
    assert len(stated) >= 3, stated  # README, docs/engines.md, export/README.md each state it
    code = export_main(["--engine", "require", "--img-size", "64", "--out", str(tmp_path / "out")])
    assert code == errors.EnvironmentFailure.exit_code == 3
    assert _wrong(stated, code) == {}


def test_readme_exit_code_table_is_the_error_classes():
    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        if m := TABLE_ROW.match(line):
            rows[m[2].strip()] = int(m[1])
    for meaning, cls in TABLE_MEANINGS.items():
        assert rows.get(meaning) == cls.exit_code, (meaning, rows)


def test_error_classes_named_with_their_codes():
    text = "\n".join(p.read_text() for p in DOCS)
    named = re.findall(r"(InputError|VerificationError|EnvironmentFailure) \([^)]*?exit (\d+)\)", text)
    assert len(named) >= 3
    for cls, code in named:
        assert getattr(errors, cls).exit_code == int(code), (cls, code)


def test_serve_exit_codes_are_what_the_docs_say(tmp_path):
    """A port in use and a missing model: refused before anything starts (no [serve] needed)."""
    from test_serve import free_ports, port_args, run_serve

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    with busy:
        model = tmp_path / "m.onnx"
        model.write_bytes(b"")
        ports = ["--http-port", str(busy.getsockname()[1]), "--grpc-port", *map(str, free_ports(1)), "--metrics-port",
                 *map(str, free_ports(1))]  # fmt: skip
        in_use = run_serve(str(model), *ports)
    missing = run_serve(str(tmp_path / "nope.onnx"), *port_args())
    for pattern, proc, needle in ((PORT_IN_USE, in_use, "is in use"), (MISSING_MODEL, missing, "does not exist")):
        stated = _segments(pattern)
        assert len(stated) >= 2, stated  # README and docs/serving.md
        assert needle in proc.stderr, proc.stderr
        assert _wrong(stated, proc.returncode) == {}, proc.stderr


def test_bench_exit_code_of_a_refused_row_is_what_the_docs_say(tmp_path, capsys):
    """mixnet-bench --images with a row refused (an engine file with no manifest: nothing here can run it)."""
    from PIL import Image

    from mixnet_deploy.cli import bench_main

    stated = _segments(REFUSED_ROW)
    assert len(stated) >= 2, stated  # README and docs/parity_bench.md
    (tmp_path / "val").mkdir()
    Image.new("RGB", (80, 64), (120, 60, 30)).save(tmp_path / "val" / "a.png")
    (tmp_path / "m.engine").write_bytes(b"not an engine")
    code = bench_main([str(tmp_path / "m.engine"), "--images", str(tmp_path / "val"), "--batch", "1", "--iters", "1",
                       "--warmup-s", "0", "--quiet", "--json", str(tmp_path / "b.json")])  # fmt: skip
    (row,) = json.loads((tmp_path / "b.json").read_text())["artifacts"]
    assert row["status"] == "refused" and "manifest" in row["why"], capsys.readouterr().err
    assert _wrong(stated, code) == {}


def test_trtexec_recipe_exit_codes_are_what_the_docs_say(tmp_path):
    """trtexec.sh without trtexec (the machine lacks a tool) and with a trtexec that prints no banner."""
    from mixnet_deploy.engine_build import EngineOptions
    from mixnet_deploy.trtexec import write_trtexec_script

    script = write_trtexec_script(tmp_path, [SimpleNamespace(precision="fp32", path=str(tmp_path / "m.onnx"))],
                                  EngineOptions())  # fmt: skip
    bannerless = tmp_path / "trtexec"
    bannerless.write_text("#!/bin/sh\necho 'no version here'\n")
    bannerless.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "TRTEXEC"}
    cases = ((NO_TRTEXEC, {**env, "PATH": "/usr/bin:/bin"}), (NO_BANNER, {**env, "TRTEXEC": str(bannerless)}))
    for pattern, run_env in cases:
        stated = _segments(pattern)
        assert len(stated) >= 1, stated
        proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=run_env, timeout=60)
        assert proc.returncode in (2, 3) and not list(tmp_path.glob("*.engine*")), proc.stderr
        assert _wrong(stated, proc.returncode) == {}, proc.stderr
