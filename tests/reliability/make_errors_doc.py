"""Writes docs/errors.md: runs the whole catalogue and puts each case's observed error line in its row.

Run from the repository root: ``python -m tests.reliability.make_errors_doc``. tests/test_reliability.py
fails when the file is missing a case, has a row of no case, or is stale (header, input, command, exit code,
or a message that no longer holds the case's needles): rerun this then.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from .cases import CASES, PROG, Case
from .inputs import make_inputs
from .runner import ROOT, Outcome, run_cases

DOCS = ROOT / "docs" / "errors.md"
COMMAND = "python -m tests.reliability.make_errors_doc"
HEAD = f"""# Bad inputs: the error catalogue

Every row is a case of `tests/reliability/cases.py`, run as a subprocess by `tests/test_reliability.py`, which
checks: the exit code below (2 = bad input, 1 = verification failed, 3 = environment failure), exactly one
`<prog>: error:` line on stderr that names the value (the message column is what this version printed),
no traceback unless `--verbose`, no `.onnx`/`.engine`/`.plan`, no temporary file and no other file left
behind (at most an empty `--out` folder), and no pickled payload executed. Regenerate with `{COMMAND}`
(the test suite fails when a case is missing here or its row is stale).

Every export case also gets `--out CASE/out` and, unless it sets them or uses `--preset` (flags would
override the preset's bad value), `--img-size 64 --engine skip`; parity cases `--quiet --random 2`; bench
cases `--quiet --iters 2 --warmup-s 0 --batch 1`; predict cases `--quiet`. Input files (`s.safetensors` =
random mixnet_s weights, `trunc.pth`, `evil_*.pth` = pickles whose unpickling would run
`os.system`/`exec`, ...) are made by `tests/reliability/inputs.py`. Paths in messages are shortened:
`CASE` = the case's folder.

Interrupted, failed and repeated runs (`tests/test_interrupt.py`, `tests/test_export_set.py`): a run writes its
whole set (ONNX files, engines and manifests, `<model>.trtexec.sh`, a new calibration cache,
`<model>.report.json`) into a hidden stage folder `DIR/.<model>.stage.tmp-<pid>`, and a Triton version
folder and config under temporary names in the repository, and swaps them in only when it has succeeded.
A bad input found late, a failed verification (exit 1; that run's report is `<model>.failed.json`), Ctrl-C
or `kill` (SIGTERM, exit 130) leave the previous export byte-identical: models, engines, manifests, its
report, the folder's `report.json`, the script and the Triton repository. A re-run replaces or removes only
files the model's report lists, or the model's own file names carrying mixnet-export's ONNX metadata,
engine manifest, script header or report layout; everything else is left alone (the report's
`previous_run` names what was replaced, removed and left alone), and a file the run would write whose
existing namesake it cannot show it wrote is refused before any work (exit 2). `kill -9` allows no
cleanup: the stage folder stays, hidden, and the next run deletes it. Calibration caches are kept (keyed
by content). Outputs (`--out`, `--triton-repo`, `--timing-cache`, `--json`, `--predictions`, `--markdown`,
`--plot`) that are an input, are another output, or lie inside `--images`/`--calib` named like an image (they
would be read back as one) exit 2 naming both paths.

Shared folders and the machine (`tests/test_folders.py`): one run at a time writes an output folder or a
Triton repository (a lock released when the process ends, even by `kill -9`); a second run waits, saying
for whom, or with `--no-wait` exits 2 naming the folder and the holder's process id. A full disk, a quota,
`ulimit -f`, a read-only file system, a permission refused while writing and `--engine require` without
the GPU stack exit 3 with one line naming the path (or component), the operation and, for a full disk,
the bytes needed and free; the run's files are removed as after any failure.

Standard output (`tests/test_cli.py`): a reader that is gone (`mixnet-export ... | head -1`) ends the run
quietly with exit 141 (128 + SIGPIPE, as a shell reports a tool that SIGPIPE ended; 0 when the output fit the
pipe before the reader left), no traceback, no temporary file; a full one (`> /dev/full`) exits 3 naming
standard output. Every JSON file written (reports, manifests, caches, `--json`, `--predictions`) is strict
JSON: a non-finite number is written as `null`, never `NaN` or `Infinity`.

| case | input | command | message | exit |
|---|---|---|---|---|
"""
ROW = re.compile(r"^\| `([^`]+)` \| (.*) \| `(.*)` \| (.*) \| (\d) \|$", flags=re.M)


def row_fields(case: Case, message: str) -> tuple[str, str, str, str, str]:
    """(id, input, command, message, exit) as the table shows them (``|`` escaped)."""
    shown = (a.replace("{in}/", "") if a else "''" for a in case.args)
    cmd = " ".join((PROG[case.command], *shown))
    return case.id, _md(case.input), cmd, _md(message), str(case.code)


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def documented_rows(text: str) -> dict[str, tuple[str, str, str, str, str]]:
    """{case id: (id, input, command, message, exit)} of the table in docs/errors.md."""
    return {m.group(1): m.groups() for m in ROW.finditer(text)}


def message_of(outcome: Outcome, inputs: Path) -> str:
    """The error line with this run's temporary paths shortened (``CASE``, ``CASES``, input names)."""
    lines = outcome.error_lines()
    text = lines[0] if lines else "(no message)"
    text = text.replace(str(outcome.case_dir), "CASE").replace(str(inputs) + "/", "").replace(str(inputs), "IN")
    return text.replace(str(outcome.case_dir.parent), "CASES")


def render_docs(outcomes: dict[str, Outcome], inputs: Path) -> str:
    rows = ["| `{}` | {} | `{}` | {} | {} |".format(*row_fields(c, message_of(outcomes[c.id], inputs))) for c in CASES]
    return HEAD + "\n".join(rows) + "\n"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        inputs = make_inputs(Path(tmp) / "in")
        results = run_cases(CASES, inputs, Path(tmp) / "cases")
        DOCS.parent.mkdir(exist_ok=True)
        DOCS.write_text(render_docs(results, inputs))
        bad = [i for i, o in results.items() if o.code != o.case.code or len(o.error_lines()) != 1]
        print(f"wrote {DOCS.relative_to(ROOT)} ({len(CASES)} cases); unexpected: {bad or 'none'}")


if __name__ == "__main__":
    main()
