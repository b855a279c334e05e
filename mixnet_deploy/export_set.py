"""The set of files one export run owns in its output folder: surveyed before, staged during, swapped in after.

A run of model M writes its whole set (precision ONNX files, engines and their manifests, ``M.trtexec.sh``, a
new calibration cache, ``M.report.json``) into a hidden stage folder ``DIR/.M.stage.tmp-<pid>`` (same file
system: renames are atomic), and swaps it in only when the run has succeeded (:meth:`Stage.commit`). Until
then nothing under DIR is touched: a bad input found late, a failed verification, Ctrl-C, SIGTERM or SIGKILL
leave the previous export byte-identical (a killed run's stage folder is removed by the next run:
``atomic.remove_stale_temps``).

Ownership (:func:`survey`): the run replaces or removes only files it can show mixnet-export wrote for M:
the names M's report lists, or M's own file names (``M.onnx``, ``M.fp16.engine``, ...) carrying our ONNX
metadata, our engine manifest (with the engine's SHA-256), our script header or our report layout. A file
we would write whose existing namesake is not ours is refused before any work (exit 2); files named like
M's that we cannot show we wrote (``M.timm.onnx``, an engine trtexec built by hand) are left alone and
named in the report. Calibration caches are never removed (they are keyed by content).

The swap is a series of renames with SIGINT/SIGTERM held back until it is done (milliseconds); only a
SIGKILL or power loss inside that window can leave a mix of the two sets.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import precision_table
from .atomic import TMP_MARKER, environment_errors
from .contract import FAILED_SUFFIX, MANIFEST_SUFFIX, META_MODEL, ONNX_SUFFIX, REPORT_SUFFIX
from .engine_build import MANIFEST_SCHEMA, manifest_path_for, sha256_file
from .errors import InputError
from .export_reports import INDEX_NAME, adopt_legacy_report, described_files, is_index, write_index
from .trtexec import SCRIPT_MARK, SCRIPT_SUFFIX

log = logging.getLogger("mixnet_deploy")

STAGE_TAG = ".stage"


def stage_name(model: str) -> str:
    return f".{model}{STAGE_TAG}{TMP_MARKER}{os.getpid()}"


def failed_name(model: str) -> str:
    """``M.failed.json``: the report of M's latest run that failed verification (the export it left is older)."""
    return f"{model}{FAILED_SUFFIX}"


def own_names(model: str) -> tuple[str, ...]:
    """Every name a run of M may write in DIR, but calibration caches (named by their key)."""
    return tuple(planned_names(model, precision_table.names(), engines=True, script=True))


# ---------------------------------------------------------------- what is ours


def _json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _is_report(data: object) -> bool:
    return isinstance(data, dict) and isinstance(data.get("artifacts"), list) and "variant" in data


def _onnx_is_ours(path: Path, model: str) -> bool:
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # onnx raises DecodeError and friends for a file that is not ONNX: not ours
        return False
    return {p.key: p.value for p in proto.metadata_props}.get(META_MODEL) == model


def _engine_is_ours(path: Path) -> bool:
    manifest = _json(manifest_path_for(path))
    return (isinstance(manifest, dict) and manifest.get("schema") == MANIFEST_SCHEMA
            and manifest.get("engine_sha256") == sha256_file(path))  # fmt: skip


def carries_our_mark(path: Path, model: str) -> bool:
    """Whether a file named like one of M's carries what mixnet-export puts into that kind of file."""
    name = path.name
    if name.endswith(ONNX_SUFFIX):
        return _onnx_is_ours(path, model)
    if name.endswith(".engine"):
        return _engine_is_ours(path)
    if name.endswith(SCRIPT_SUFFIX):
        with contextlib.suppress(OSError, UnicodeDecodeError):
            return SCRIPT_MARK in path.read_text()[:400]
        return False
    data = _json(path)
    if name.endswith(".engine" + MANIFEST_SUFFIX):
        return isinstance(data, dict) and data.get("schema") == MANIFEST_SCHEMA
    return _is_report(data)  # M.report.json, M.failed.json


def listed_by_report(out_dir: Path, model: str) -> set[str]:
    """M's file names that M's report (and its failure report) in ``out_dir`` list as written."""
    names: set[str] = set()
    for report_file in (model + REPORT_SUFFIX, failed_name(model)):
        report = _json(out_dir / report_file)
        if _is_report(report):
            names |= {report_file, *described_files(report), *report.get("files", [])}
    return {n for n in names if n.startswith(model + ".")}  # a report names M's files, never another model's


@dataclass(frozen=True)
class Survey:
    """M's files in an output folder before a run: ``owned`` (ours: replaceable), ``foreign`` (left alone)."""

    out_dir: Path
    model: str
    owned: frozenset[str]
    foreign: tuple[str, ...]  # present, named like M's, not shown to be ours

    def outcome(self, written: Iterable[str]) -> dict:
        """What swapping in ``written`` does to the folder: which of ours it replaces and removes, what it leaves."""
        written = set(written)
        present = {n for n in self.owned if (self.out_dir / n).is_file()}
        return {
            "replaced": sorted(present & written),
            "removed": sorted(n for n in present - written if n in own_names(self.model)),
            "left_alone": list(self.foreign),
        }


def survey(out_dir: Path, model: str, planned: Iterable[str]) -> Survey:
    """M's files in ``out_dir``; InputError when a file the run would write exists and is not ours, or the
    folder's ``report.json`` is someone else's file (both before any work, nothing touched)."""
    out_dir = Path(out_dir)
    listed = listed_by_report(out_dir, model)
    owned, foreign = set(), []
    for path in sorted(out_dir.glob(f"{model}.*")):
        name = path.name
        if TMP_MARKER in name or ".calib-" in name:
            continue
        regular = path.is_file() and not path.is_symlink()  # we write regular files: a link or a folder is not ours
        if regular and (name in listed or (name in own_names(model) and carries_our_mark(path, model))):
            owned.add(name)
        else:
            foreign.append(name)
    taken = sorted(set(planned) & set(foreign))
    index = out_dir / INDEX_NAME
    if index.exists() and not (is_index(data := _json(index)) or _is_report(data)):
        taken.append(INDEX_NAME)
    if taken:
        raise InputError(
            f"expected a folder where mixnet-export may write {', '.join(taken)}: "
            "move that file away or choose another folder",
            field="out_dir",
            value=str(out_dir),
            problem=f"holds {', '.join(taken)}, which no report there lists and which carries no mixnet-export "
            "metadata: not replaced",
        )
    if foreign:
        log.info("%s: left alone (not shown to be written by mixnet-export): %s", out_dir, ", ".join(foreign))
    return Survey(out_dir, model, frozenset(owned), tuple(foreign))


def planned_names(model: str, precisions: Iterable[str], engines: bool, script: bool) -> list[str]:
    """The names a run may write: its precisions' ONNX files (+ engines, manifests), script, reports."""
    names = [model + REPORT_SUFFIX, failed_name(model)]
    for precision in precisions:
        onnx = precision_table.artifact_name(model, precision)
        names.append(onnx)
        if engines:
            engine = precision_table.engine_name(onnx, precision)
            names += [engine, engine + MANIFEST_SUFFIX]
    return names + ([model + SCRIPT_SUFFIX] if script else [])


# ---------------------------------------------------------------- staging and the swap


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT / SIGTERM arriving inside the block are logged and dropped once it is done: the block (a swap of
    renames) completes. Only in the main thread (where Python runs signal handlers); elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if caught:
            log.warning("signal %s arrived while the new export was being swapped in; the swap completed", caught[0])


@dataclass
class Stage:
    """The hidden folder a run writes its set into; ``pending`` are more swaps to do at commit (the Triton
    version folder), each with ``commit()`` and ``discard()``."""

    out_dir: Path
    model: str
    path: Path = field(init=False)
    pending: list = field(default_factory=list)

    def __post_init__(self):
        self.out_dir = Path(self.out_dir)
        self.path = self.out_dir / stage_name(self.model)
        shutil.rmtree(self.path, ignore_errors=True)  # our process id: left by a dead process that had it
        with environment_errors(self.path, "create directory"):
            self.path.mkdir()

    def written(self) -> list[str]:
        return sorted(p.name for p in self.path.iterdir() if TMP_MARKER not in p.name)

    def commit(self, survey: Survey) -> None:
        """Swap the staged set in: move each file to its final name (the report last), remove the previous
        run's files the new set does not have, commit the pending swaps, rewrite the folder's index."""
        outcome = survey.outcome(self.written())
        reports = {self.model + REPORT_SUFFIX}
        order = sorted(self.written(), key=lambda n: n in reports)
        with signals_held():
            for name in order:
                os.replace(self.path / name, self.out_dir / name)
            for name in outcome["removed"]:
                with contextlib.suppress(FileNotFoundError):
                    (self.out_dir / name).unlink()
            for swap in self.pending:
                swap.commit()
            self.pending.clear()
            adopt_legacy_report(self.out_dir)
            write_index(self.out_dir)
        for name in outcome["removed"]:
            log.info("removed %s (the previous run's; this run did not write it)", name)

    def discard(self) -> None:
        for swap in self.pending:
            swap.discard()
        self.pending.clear()
        shutil.rmtree(self.path, ignore_errors=True)


@contextlib.contextmanager
def staged(out_dir: Path, model: str) -> Iterator[Stage]:
    """A :class:`Stage` for the ``with`` body; whatever is still staged at its end (a failure, or the body
    never committed) is discarded."""
    stage = Stage(out_dir, model)
    try:
        yield stage
    finally:
        stage.discard()


def relocate(obj, old: str, new: str):
    """``obj`` (dataclasses, dicts, lists, strings) with every occurrence of ``old`` in its strings replaced by
    ``new``: the report of a staged run, its paths moved from the stage folder to the output folder."""
    if isinstance(obj, str):
        return obj.replace(old, new)
    if isinstance(obj, Path):
        return Path(str(obj).replace(old, new))
    if isinstance(obj, dict):
        return {k: relocate(v, old, new) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(relocate(v, old, new) for v in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = {f.name: relocate(getattr(obj, f.name), old, new) for f in dataclasses.fields(obj) if f.init}
        return dataclasses.replace(obj, **fields)
    return obj

