"""Bad-input catalogue (issue 8): every case of tests/reliability/cases.py runs the real command and must

- exit with the catalogue's code (2 = bad input; 1 stays "verification failed"; 3 = the machine lacks
  something asked for, e.g. TensorRT for ``--engine require``),
- print one line ``<prog>: error: ...`` on stderr that names the bad value (the case's needles),
- print no traceback (without ``--verbose``),
- leave no ``.onnx``/``.engine``/``.plan``, no temporary file (``atomic.TMP_MARKER``), no file at all behind,
- never run a pickled payload (the payload files would create ``PWNED-*`` markers).

The cases run concurrently (one worker per core, tests/reliability/forkserver.py) once in a session fixture;
each test reads its result. docs/errors.md is the same table: ``python -m tests.reliability.make_errors_doc``
rewrites it, ``test_docs_table_is_the_catalogue`` fails when it is missing a case or stale.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from reliability.cases import BY_ID, CASES, PROG
from reliability.inputs import FOREIGN_SYSTEM, make_inputs, payload_markers
from reliability.make_errors_doc import COMMAND, DOCS, HEAD, documented_rows, message_of, row_fields
from reliability.runner import case_env, run_cases, run_command

from mixnet_deploy.atomic import TMP_MARKER

MODEL_SUFFIXES = (".onnx", ".engine", ".plan")
# Also run with --verbose and through the installed console scripts (each a fresh interpreter: keep it short).
SAMPLE = ("export-img-not-32", "weights-trunc-pth", "pickle-payload-wrapped", "parity-garbage-onnx", "bench-batch-zero")


def snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): (p.stat().st_size if p.is_file() else -1) for p in folder.rglob("*")}


@pytest.fixture(scope="session")
def catalogue(tmp_path_factory):
    """Runs every case once, concurrently; returns (inputs, snapshot of inputs before, {id: Outcome})."""
    inputs = make_inputs(tmp_path_factory.mktemp("bad-inputs"))
    before = snapshot(inputs)
    return inputs, before, run_cases(CASES, inputs, tmp_path_factory.mktemp("cases"))


@pytest.mark.parametrize("case_id", list(BY_ID))
def test_bad_input_fails_cleanly(catalogue, case_id):
    o = catalogue[2][case_id]
    case, prog = o.case, PROG[o.case.command]
    detail = f"{prog} {' '.join(o.argv)}\nexit {o.code}\nstderr:\n{o.stderr}\nstdout:\n{o.stdout[-2000:]}"
    assert o.code == case.code, detail
    assert "Traceback" not in o.stderr, detail
    lines = o.error_lines()
    assert len(lines) == 1, f"expected one error line:\n{detail}"
    assert lines[0].startswith(f"{prog}: error: "), detail
    for needle in case.needles:
        assert needle in lines[0], f"{needle!r} not in the message:\n{detail}"
    models = [p for p in o.case_dir.rglob("*") if p.suffix in MODEL_SUFFIXES or TMP_MARKER in p.name]
    assert not models, f"left behind: {models}\n{detail}"
    # Nothing else either (a Triton repository, a report, a cache): at most the empty --out folder.
    kept = {"out", *case.folders}
    left = [p for p in o.case_dir.rglob("*") if not (p.is_dir() and not p.is_symlink() and p.name in kept)]
    assert not left, f"left behind: {left}\n{detail}"
    assert not payload_markers(o.case_dir), "a pickled payload ran"


def test_inputs_untouched_and_no_payload_ran(catalogue):
    inputs, before, outcomes = catalogue
    assert len(outcomes) == len(CASES)
    assert not payload_markers(inputs)
    assert snapshot(inputs) == before, "a failing command changed its inputs (temp files, partial writes?)"


def test_verbose_shows_the_traceback(catalogue, tmp_path):
    outcomes = run_cases([BY_ID[i] for i in SAMPLE], catalogue[0], tmp_path, extra=("--verbose",))
    for case_id, o in outcomes.items():
        assert o.code == o.case.code, f"{case_id}: {o.stderr}"
        assert "Traceback" in o.stderr and f"{PROG[o.case.command]}: error: " in o.stderr, case_id


@pytest.mark.parametrize("case_id", SAMPLE)
def test_console_scripts_agree_with_the_fork_server(catalogue, tmp_path, case_id):
    """The installed console script, started from nothing, fails as the forked entry point did."""
    inputs, _, outcomes = catalogue
    case, forked = BY_ID[case_id], outcomes[case_id]
    proc = run_command(case.command, case.argv(inputs, forked.case_dir), forked.case_dir,
                       {**os.environ, **case_env(tmp_path)})  # fmt: skip
    assert proc.returncode == forked.code == case.code
    assert "Traceback" not in proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == forked.error_lines()
    assert not payload_markers(forked.case_dir)


def test_pickle_payloads_would_run_if_unpickled_unsafely(catalogue, tmp_path):
    """The payload files are real: plain pickle.load runs them (in a throwaway process)."""
    code = "import pickle, sys; pickle.load(open(sys.argv[1], 'rb'))"
    subprocess.run([sys.executable, "-c", code, str(catalogue[0] / "evil_raw.pt")], cwd=tmp_path, timeout=60)
    assert [p.name for p in payload_markers(tmp_path)] == ["PWNED-raw"]


def test_engine_manifest_of_another_system_is_refused(catalogue):
    """Where TensorRT runs (GPU CI), foreign.engine fails on its manifest; the check itself runs here."""
    from mixnet_deploy.engine_build import verify_engine_file
    from mixnet_deploy.errors import InputError

    here = {**FOREIGN_SYSTEM, "tensorrt": "10.3.0", "gpu": "NVIDIA H100", "compute_capability": "9.0"}
    with pytest.raises(InputError) as info:
        verify_engine_file(catalogue[0] / "foreign.engine", system=here)
    text = str(info.value)
    assert "foreign.engine" in text and "8.6.1" in text and "10.3.0" in text and "Tesla K80" in text
    assert verify_engine_file(catalogue[0] / "foreign.engine", system=FOREIGN_SYSTEM)["precision"] == "fp16"


def test_docs_table_is_the_catalogue(catalogue):
    """docs/errors.md has one row per case, as the generator would write it now (messages: the needles)."""
    text = DOCS.read_text() if DOCS.is_file() else ""
    hint = f"docs/errors.md is stale: run {COMMAND}"
    assert text.startswith(HEAD), f"header differs; {hint}"
    rows = documented_rows(text)
    assert list(rows) == [c.id for c in CASES], f"cases missing, extra or out of order; {hint}"
    inputs, _, outcomes = catalogue
    for case in CASES:
        want = row_fields(case, message_of(outcomes[case.id], inputs))
        assert rows[case.id][:3] + rows[case.id][4:] == want[:3] + want[4:], f"{case.id}: row differs; {hint}"
        assert all(n.replace("|", "\\|") in rows[case.id][3] for n in case.needles), f"{case.id}: message; {hint}"
