"""Reports of an output folder shared by several models: one report per model, and an index.

``DIR/<model>.report.json`` is the full report of that model's latest run (the ``ExportReport``). It is
named like the model's files (``mixnet_s.onnx``, ``mixnet_s.fp16.onnx``, ...), so a run of model M
replaces exactly M's report with M's files and never touches S's.

``DIR/report.json`` is the folder's index, derived from the per-model reports present (it is
rewritten, never edited, by every run while it holds the folder's lock, folder_lock.py): for every
model, its report, the files that report describes that are in the folder, the ones it refused
(failed verification), and, at the top, model files that no report describes (left by an older
version, or copied in by hand). Readers: :func:`read_report` (one model's report, via the index).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from pathlib import Path

from .atomic import write_json
from .contract import ENGINE_SUFFIXES, MANIFEST_SUFFIX, MODEL_SUFFIXES, REPORT_SUFFIX, onnx_stem

log = logging.getLogger("mixnet_deploy")

INDEX_NAME = "report.json"
INDEX_KIND = "mixnet-deploy export folder index"
MODEL_FILE_SUFFIXES = (*MODEL_SUFFIXES, *(suffix + MANIFEST_SUFFIX for suffix in ENGINE_SUFFIXES))  # + manifests


def report_name(model_name: str) -> str:
    return f"{model_name}{REPORT_SUFFIX}"


def model_of(report: dict) -> str:
    """The model name of a report dict: its FP32 file's name without ``.onnx`` (``mixnet_s``)."""
    artifacts = report.get("artifacts") or []
    if artifacts:
        return onnx_stem(Path(artifacts[0]["path"]).name)
    from .arch import get_variant

    return get_variant(report["variant"]).model_name  # tf_s -> tf_mixnet_s


def described_files(report: dict) -> list[str]:
    """File names a report describes: its precision ONNX files, engines and engine manifests."""
    names = [Path(a["path"]).name for a in report.get("artifacts", [])]
    for engine in report.get("engines", []):
        names += [Path(engine["path"]).name, Path(engine["path"]).name + ".json"]
    return names


def is_index(data: object) -> bool:
    return isinstance(data, dict) and data.get("kind") == INDEX_KIND


def _load(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def adopt_legacy_report(out_dir: str | os.PathLike) -> Path | None:
    """A ``report.json`` of a version before the index (one run's full report) becomes ``<model>.report.json``
    (unless that exists), so the model it describes keeps a report when another model's run rewrites the index."""
    legacy = Path(out_dir) / INDEX_NAME
    data = _load(legacy) if legacy.is_file() else None
    if data is None or is_index(data) or "artifacts" not in data:
        return None
    target = legacy.with_name(report_name(model_of(data)))
    if target.exists():
        return None
    os.replace(legacy, target)
    log.info("%s: kept as %s (a report of an earlier version)", legacy, target.name)
    return target


def build_index(out_dir: str | os.PathLike) -> dict:
    """The index of ``out_dir``: every ``*.report.json``, what it describes, and model files none describes."""
    out_dir = Path(out_dir)
    models, described = [], set()
    for path in sorted(out_dir.glob(f"*{REPORT_SUFFIX}")):
        report = _load(path)
        if report is None:
            continue
        names = described_files(report)
        described.update(names)
        written = datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.timezone.utc)
        models.append({
            "model": path.name.removesuffix(REPORT_SUFFIX),
            "report": path.name,
            "variant": report.get("variant"),
            "img_size": report.get("img_size"),
            "weights_sha256": (report.get("weights") or {}).get("sha256"),
            "written": written.isoformat(timespec="seconds"),
            "files": [n for n in names if (out_dir / n).is_file()],
            "refused": [n for n in names if not (out_dir / n).is_file()],  # failed verification: not kept
        })  # fmt: skip
    others = sorted(p.name for p in out_dir.iterdir() if p.name.endswith(MODEL_FILE_SUFFIXES) and p.is_file())
    return {"kind": INDEX_KIND, "models": models, "undescribed": [n for n in others if n not in described]}


def write_index(out_dir: str | os.PathLike) -> Path:
    """Write the index of ``out_dir``; an index of nothing (no model, no undescribed file) is removed instead,
    so a first run that fails leaves no file."""
    path, index = Path(out_dir) / INDEX_NAME, build_index(out_dir)
    if not index["models"] and not index["undescribed"]:
        path.unlink(missing_ok=True)
        return path
    return write_json(path, index)


def read_report(out_dir: str | os.PathLike, model: str | None = None) -> dict:
    """The report of ``model`` (``mixnet_s``; None: the folder's only model) in ``out_dir``.

    Also reads a folder of an earlier version, whose ``report.json`` was one run's report.
    """
    out_dir = Path(out_dir)
    index = _load(out_dir / INDEX_NAME)
    if index is not None and not is_index(index):  # an earlier version's single report
        if model is None or model_of(index) == model:
            return index
    if model is None:
        names = [m["model"] for m in index["models"]] if index else []
        if len(names) != 1:
            raise LookupError(f"{out_dir}: {len(names)} models ({', '.join(names) or 'none'}); name the one wanted")
        model = names[0]
    report = _load(out_dir / report_name(model))
    if report is None:
        raise LookupError(f"{out_dir}: no readable {report_name(model)}")
    return report
