"""Shared output folders and a full disk (issue 16), every story run as real mixnet-export processes.

- Two models in one folder: each keeps its files and its own report (``<model>.report.json``); the
  folder's ``report.json`` indexes both, and no model file is undescribed.
- Two exports at once into one folder: the second waits for the first (the folder's lock), or with
  ``--no-wait`` exits 2 naming the folder and the holder's process id; a lock left by a killed process
  does not block; a Triton repository is locked the same way.
- The machine refuses (full disk on a small tmpfs, a read-only file system, a per-file size limit):
  exit 3, one line naming the path, the operation and the bytes needed, and nothing partial left.
"""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest

from mixnet_deploy import atomic
from mixnet_deploy.atomic import TMP_MARKER
from mixnet_deploy.errors import EnvironmentFailure
from mixnet_deploy.export_reports import INDEX_NAME, read_report
from mixnet_deploy.folder_lock import LOCK_NAME, read_holder

FAST = ("--img-size", "64", "--engine", "skip")
MODEL_SUFFIXES = (".onnx", ".engine", ".plan")
TIMEOUT_S = 600
ENTRY = "import sys; from mixnet_deploy.cli import export_main; sys.exit(export_main(sys.argv[1:]))"
# mixnet-export whose run stops, while it holds the folder's lock, just before its last write (the index naming
# its own model) until the file GO exists: the test can then start a second run against a known-busy folder.
HOLD_AT_END = """
import os, sys, time
_replace = os.replace
def held_replace(src, dst):
    dst = os.fspath(dst)
    if os.path.basename(dst) == "report.json" and os.path.exists(os.path.join(os.path.dirname(dst), {own!r})):
        open({holding!r}, "w").close()
        deadline = time.monotonic() + 300
        while not os.path.exists({go!r}) and time.monotonic() < deadline:
            time.sleep(0.05)
    _replace(src, dst)
os.replace = held_replace
from mixnet_deploy.cli import export_main
raise SystemExit(export_main(sys.argv[1:]))
"""
HOLD_LOCK = """
import sys, time
from mixnet_deploy.folder_lock import folder_lock
with folder_lock(sys.argv[1]):
    open(sys.argv[2], "w").close()
    time.sleep(600)
"""


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def export(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", ENTRY, *args], capture_output=True, text=True, env=env(),
                          timeout=TIMEOUT_S, **kw)  # fmt: skip


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if "error:" in ln]


def wait_for(path: Path, proc: subprocess.Popen, what: str, timeout_s: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"{what}: the process ended first (exit {proc.returncode})")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{what}: not within {timeout_s} s")
        time.sleep(0.05)


def weights_sha(path: Path) -> str:
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return meta["mixnet.weights_sha256"]


def assert_folder_described(out: Path) -> dict:
    """Every model file in ``out`` is described by exactly one model's report (and comes from that run); the
    index lists every report; no temporary file. Returns the index."""
    index = json.loads((out / INDEX_NAME).read_text())
    assert not [p.name for p in out.iterdir() if TMP_MARKER in p.name]
    assert index["undescribed"] == [], index
    present = sorted(p.name for p in out.iterdir() if p.name.endswith(MODEL_SUFFIXES))
    listed = sorted(n for m in index["models"] for n in m["files"] if n.endswith(MODEL_SUFFIXES))
    assert listed == present, f"index lists {listed}, folder holds {present}"
    assert sorted(m["report"] for m in index["models"]) == sorted(p.name for p in out.glob("*.report.json"))
    for entry in index["models"]:
        report = read_report(out, entry["model"])
        assert sorted(Path(a["path"]).name for a in report["artifacts"]) == sorted(entry["files"])
        for name in entry["files"]:
            assert weights_sha(out / name) == report["weights"]["sha256"], f"{name} is not from {entry['report']}"
    return index


# ---------------------------------------------------------------- one folder, two models, two runs at once


def test_two_exports_at_once_into_one_folder(tmp_path):
    """S (FP32 + FP16) and M into one folder at the same time: M waits for S's lock (a message saying so), a
    --no-wait run is refused (exit 2, the folder and S's process id), and both models end up described."""
    out, holding, go = tmp_path / "out", tmp_path / "holding", tmp_path / "go"
    code = HOLD_AT_END.format(own="mixnet_s.report.json", holding=str(holding), go=str(go))
    first = subprocess.Popen([sys.executable, "-c", code, "--variant", "s", "--fp16", *FAST, "--out", str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())  # fmt: skip
    try:
        wait_for(holding, first, "the first export reaching its last write")
        refused = export("--variant", "m", *FAST, "--out", str(out), "--no-wait")
        assert refused.returncode == 2, refused.stderr
        (line,) = error_lines(refused.stderr)
        assert line.startswith(f"mixnet-export: error: --out '{out}' is busy: process {first.pid} "), line
        assert "Traceback" not in refused.stderr

        err_path = tmp_path / "second.err"
        with open(err_path, "w") as err:
            second = subprocess.Popen(
                [sys.executable, "-c", ENTRY, "--variant", "m", *FAST, "--out", str(out)],
                stdout=subprocess.DEVNULL, stderr=err, env=env(),
            )  # fmt: skip
            deadline = time.monotonic() + TIMEOUT_S
            while f"waiting for {out}" not in err_path.read_text():
                assert second.poll() is None, f"the second export did not wait:\n{err_path.read_text()}"
                assert time.monotonic() < deadline, "no waiting message"
                time.sleep(0.05)
            assert f"process {first.pid} " in err_path.read_text()
            assert not (out / "mixnet_m.onnx").exists()  # it waits before writing anything
            go.touch()
            assert second.wait(timeout=TIMEOUT_S) == 0, err_path.read_text()
        assert first.wait(timeout=TIMEOUT_S) == 0, first.stderr.read()
    finally:
        go.touch()
        first.kill()
        first.communicate()
    index = assert_folder_described(out)
    files = {m["model"]: m["files"] for m in index["models"]}
    assert files == {"mixnet_s": ["mixnet_s.onnx", "mixnet_s.fp16.onnx"], "mixnet_m": ["mixnet_m.onnx"]}

    # S again, FP32 only: S's FP16 file goes (it is no longer S's latest run), M's file and report stay untouched.
    m_files = (out / "mixnet_m.onnx", out / "mixnet_m.report.json")
    m_before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in m_files}
    again = export("--variant", "s", *FAST, "--out", str(out), "--no-wait")
    assert again.returncode == 0, again.stderr
    index = assert_folder_described(out)
    assert {m["model"]: m["files"] for m in index["models"]} == {"mixnet_s": ["mixnet_s.onnx"],
                                                                "mixnet_m": ["mixnet_m.onnx"]}  # fmt: skip
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in m_before} == m_before


def test_a_build_matrix_into_one_folder(tmp_path):
    """S and M started together into one folder, as a CI matrix or two terminals would: both exit 0, one after
    the other, and the folder describes both (before the lock, either could delete the other's files)."""
    out = tmp_path / "out"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", ENTRY, "--variant", v, *FAST, "--out", str(out), "--trtexec"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env(),
        )  # fmt: skip
        for v in "sm"
    ]
    results = [p.communicate(timeout=TIMEOUT_S) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in results]
    index = assert_folder_described(out)
    assert {m["model"]: m["files"] for m in index["models"]} == {"mixnet_s": ["mixnet_s.onnx"],
                                                                "mixnet_m": ["mixnet_m.onnx"]}  # fmt: skip
    for model in ("mixnet_s", "mixnet_m"):  # the trtexec recipe is per model too: neither run replaced the other's
        assert f"--onnx={model}.onnx" in (out / f"{model}.trtexec.sh").read_text()


def test_an_earlier_versions_report_is_kept_for_its_model(tmp_path):
    """A folder written before the index (report.json = one run's report of S): an export of M keeps S described."""
    out = tmp_path / "out"
    assert export("--variant", "s", *FAST, "--out", str(out)).returncode == 0
    (out / "mixnet_s.report.json").replace(out / INDEX_NAME)  # what an earlier version left
    assert read_report(out)["variant"] == "s"  # readers still find it
    done = export("--variant", "m", *FAST, "--out", str(out))
    assert done.returncode == 0, done.stderr
    index = assert_folder_described(out)
    assert sorted(m["model"] for m in index["models"]) == ["mixnet_m", "mixnet_s"]


# ---------------------------------------------------------------- the lock: stale, Triton


def hold_lock(folder: Path, tmp_path: Path) -> subprocess.Popen:
    ready = tmp_path / f"held-{folder.name}"
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder), str(ready)], env=env())
    wait_for(ready, proc, f"a process holding the lock of {folder}")
    return proc


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path):
    out = tmp_path / "out"
    holder = hold_lock(out, tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    assert (out / LOCK_NAME).exists() and read_holder(out)["pid"] == holder.pid  # the file stays, naming the dead
    done = export("--variant", "s", *FAST, "--out", str(out), "--no-wait")
    assert done.returncode == 0, done.stderr
    assert "waiting" not in done.stderr
    assert not (out / LOCK_NAME).exists()  # a run that ends normally removes its lock file
    assert_folder_described(out)


def test_a_busy_triton_repository_is_refused_before_any_work(tmp_path):
    out, repo = tmp_path / "out", tmp_path / "repo"
    holder = hold_lock(repo, tmp_path)
    try:
        t = time.perf_counter()
        refused = export("--variant", "s", *FAST, "--out", str(out), "--triton-repo", str(repo),
                         "--triton-kind", "cpu", "--no-wait")  # fmt: skip
        seconds = time.perf_counter() - t
    finally:
        holder.kill()
        holder.wait(timeout=60)
    assert refused.returncode == 2, refused.stderr
    (line,) = error_lines(refused.stderr)
    assert line.startswith(f"mixnet-export: error: --triton-repo '{repo}' is busy: process {holder.pid} "), line
    assert f"process {holder.pid} " in line, line
    assert not [p for p in out.rglob("*") if p.suffix in MODEL_SUFFIXES] and not list(repo.glob("mixnet_s"))
    assert seconds < 120  # refused at the lock, not after an export


# ---------------------------------------------------------------- the machine refuses: exit 3


def assert_nothing_partial(out: Path) -> None:
    """A failed first run into ``out`` leaves no file at all (no model, temporary file, report, index or lock)."""
    left = [p.name for p in out.rglob("*")]
    assert not left, f"left behind: {left}"


SIZES = re.compile(r"needed ([\d,]+) bytes, ([\d,]+) (free|allowed per file)")


def _set_fsize_limit(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_file_size_limit_is_an_environment_failure(tmp_path):
    """Runs anywhere (no privileges): ``ulimit -f`` 4 MiB makes the 16 MB FP32 file fail with EFBIG."""
    out, limit = tmp_path / "out", 4 * 2**20
    done = export("--variant", "s", *FAST, "--out", str(out), preexec_fn=_set_fsize_limit(limit))
    assert done.returncode == 3, done.stderr
    (line,) = error_lines(done.stderr)
    assert f"cannot write '{out / 'mixnet_s.onnx'}': File too large" in line, line
    needed, allowed, _ = SIZES.search(line).groups()
    assert int(allowed.replace(",", "")) == limit and int(needed.replace(",", "")) > limit
    assert "Traceback" not in done.stderr
    assert_nothing_partial(out)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 10 MiB tmpfs (too small for MixNet-S's 16 MB FP32 file); skipped where mounting is not permitted."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=10m", "tmpfs", str(mnt)], capture_output=True,
                              text=True, timeout=60)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot run mount here: {exc}")
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], timeout=60)


def test_a_full_disk_and_a_read_only_file_system(small_tmpfs):
    out = small_tmpfs / "out"
    done = export("--variant", "s", *FAST, "--out", str(out))
    assert done.returncode == 3, done.stderr
    (line,) = error_lines(done.stderr)
    assert f"cannot write '{out / 'mixnet_s.onnx'}': No space left on device" in line, line
    needed, free, _ = SIZES.search(line).groups()
    needed, free = int(needed.replace(",", "")), int(free.replace(",", ""))
    assert free <= 10 * 2**20 < needed, line
    assert "Traceback" not in done.stderr
    assert_nothing_partial(out)

    # The Triton repository on the full disk, --out elsewhere: the copy into the repository fails; neither the
    # repository nor --out keeps anything of the run.
    repo, elsewhere = small_tmpfs / "repo", small_tmpfs.parent / "out"
    done = export("--variant", "s", *FAST, "--out", str(elsewhere), "--triton-repo", str(repo), "--triton-kind", "cpu")
    assert done.returncode == 3, done.stderr
    (line,) = error_lines(done.stderr)
    assert f"cannot write '{repo / 'mixnet_s' / '1'}': No space left on device" in line, line
    repo_needed, repo_free = (int(n.replace(",", "")) for n in SIZES.search(line).groups()[:2])
    assert repo_needed == needed and repo_free <= free, line  # the same FP32 file; the repository's folders take a bit
    assert_nothing_partial(elsewhere)
    assert not [p for p in repo.rglob("*") if p.is_file() and p.name != LOCK_NAME], list(repo.rglob("*"))

    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True, timeout=60)
    for target in (out, small_tmpfs / "new"):
        done = export("--variant", "s", *FAST, "--out", str(target))
        assert done.returncode == 3, done.stderr
        (line,) = error_lines(done.stderr)
        assert str(target) in line and "Read-only file system" in line, line
    done = export("--variant", "s", *FAST, "--out", str(elsewhere), "--triton-repo", str(small_tmpfs / "repo2"))
    assert done.returncode == 3, done.stderr
    (line,) = error_lines(done.stderr)
    assert line.endswith(f"cannot write in '{small_tmpfs}': Read-only file system"), line


# ---------------------------------------------------------------- the writer's translation (in process)


@pytest.mark.parametrize("code,sizes", [(errno.ENOSPC, True), (errno.EDQUOT, True), (errno.EACCES, False),
                                        (errno.EROFS, False)])  # fmt: skip
def test_atomic_writer_turns_machine_refusals_into_environment_failures(tmp_path, monkeypatch, code, sizes):
    def half_then_fail(self, data):
        with open(self, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError(code, os.strerror(code), str(self))

    monkeypatch.setattr(Path, "write_bytes", half_then_fail)
    target = tmp_path / "model.onnx"
    with pytest.raises(EnvironmentFailure) as info:
        atomic.write_bytes(target, b"x" * 1000)
    failure = info.value
    assert failure.exit_code == 3 and failure.errno == code and failure.subject == target
    assert str(failure).startswith(f"cannot write '{target}': {os.strerror(code)}")
    assert (failure.needed, failure.free is not None) == ((1000, True) if sizes else (None, False))
    assert list(tmp_path.iterdir()) == []  # neither the target nor the half-written temporary file


def test_other_os_errors_stay_what_they_were(tmp_path):
    with pytest.raises(OSError) as info:
        atomic.write_bytes(tmp_path / ("x" * 300), b"data")  # ENAMETOOLONG: a bad name, not the machine
    assert info.value.errno == errno.ENAMETOOLONG and not isinstance(info.value, EnvironmentFailure)


# ---------------------------------------------------------------- the lock (in process: flock is per open file)


def test_lock_refuses_a_second_holder_and_frees_on_release(tmp_path):
    from mixnet_deploy.folder_lock import FolderBusy, folder_lock, folder_locks

    with folder_lock(tmp_path / "a"):
        assert read_holder(tmp_path / "a")["pid"] == os.getpid()
        with pytest.raises(FolderBusy) as info:
            with folder_lock(tmp_path / "a", wait=False, field="triton_repo"):
                pass
        assert info.value.exit_code == 2 and info.value.field == "triton_repo"
        assert str(info.value).startswith(f"--triton-repo '{tmp_path / 'a'}' is busy: process {os.getpid()} ")
        assert (tmp_path / "a" / LOCK_NAME).exists()  # the refused run did not remove the holder's lock file
    assert not (tmp_path / "a").exists()  # released: the lock file goes, and the folder the lock created
    with folder_lock(tmp_path / "a", wait=False):  # free again
        pass
    with folder_locks([("out_dir", tmp_path / "b"), ("triton_repo", tmp_path / "b" / "."), ("x", None)], wait=False):
        pass  # the same folder twice is locked once (a second flock of it here would wait for ourselves)


def test_a_file_system_without_locks_warns_and_goes_on(tmp_path, monkeypatch, caplog):
    from mixnet_deploy import folder_lock as FL

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(FL.fcntl, "flock", no_locks)
    with FL.folder_lock(tmp_path, wait=False):
        pass
    assert "offers no locks" in caplog.text


def test_a_waiting_run_locks_the_new_file_after_the_holder_removed_it(tmp_path):
    """The holder removes its lock file on release; a run that waited on the removed file must notice and lock
    the file now at the path, else a third run would create a new file and hold a second lock at once."""
    import threading

    from mixnet_deploy.folder_lock import FolderBusy, folder_lock

    holding, done = threading.Event(), threading.Event()

    def second_run():
        with folder_lock(tmp_path, wait=True):
            holding.set()
            done.wait(60)

    with folder_lock(tmp_path):
        thread = threading.Thread(target=second_run)
        thread.start()
        time.sleep(0.5)
        assert not holding.is_set()  # it waits
    assert holding.wait(60)
    try:
        with pytest.raises(FolderBusy):
            with folder_lock(tmp_path, wait=False):
                pass
    finally:
        done.set()
        thread.join(60)
    assert not (tmp_path / LOCK_NAME).exists()
