"""Cluster reliability: one writer per workdir (WorkdirLock), a failed save keeps the previous
checkpoint (CheckpointSaveError), and a lost process ends the survivors within
`parallel.failure_timeout_s` (PeerWatchdog; the two-process gloo run of test_multihost)."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_multihost import free_port, launch

from cmhl_jax.checkpoint import TMP_SUFFIX, Checkpoints, CheckpointSaveError
from cmhl_jax.cluster import LOCK_NAME, PeerWatchdog, WorkdirBusyError, WorkdirLock

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------
# WorkdirLock


def test_second_lock_fails_naming_the_holder_and_is_released_on_exception(tmp_path):
    with WorkdirLock(tmp_path) as lock:
        assert lock.held
        with pytest.raises(WorkdirBusyError) as info:
            WorkdirLock(str(tmp_path)).acquire()
        message = str(info.value)
        assert "\n" not in message
        assert f"pid={os.getpid()}" in message and f"host={socket.gethostname()}" in message
        assert "since=" in message
    with pytest.raises(KeyError):
        with WorkdirLock(tmp_path):
            raise KeyError("boom")
    WorkdirLock(tmp_path).acquire().release()  # the exception released it


def test_non_local_workdir_is_not_locked(caplog):
    with caplog.at_level(logging.WARNING):
        with WorkdirLock("gs://bucket/run") as lock:
            assert not lock.held
    assert "not a local path" in caplog.text


@pytest.mark.slow
def test_lock_of_a_sigkilled_holder_is_not_stale(tmp_path):
    code = (
        "import sys, time; from cmhl_jax.cluster import WorkdirLock\n"
        f"WorkdirLock({str(tmp_path)!r}).acquire(); print('locked', flush=True); time.sleep(600)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(WorkdirBusyError, match=f"pid={holder.pid} "):
            WorkdirLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert f"pid={holder.pid}" in (tmp_path / LOCK_NAME).read_text()  # the dead holder's text
    with WorkdirLock(tmp_path):
        assert f"pid={os.getpid()}" in (tmp_path / LOCK_NAME).read_text()


# ------------------------------------------------------------------------------------------
# A save that fails on a full disk


def _state(seed: int, size: int = 1000) -> dict:
    rng = np.random.default_rng(seed)
    return {"w": rng.standard_normal(size).astype(np.float32), "step": np.array(seed, np.int32)}


def _check_failed_save(workdir: Path, ckpt: Checkpoints, info, first: dict) -> None:
    message = str(info.value)
    assert "\n" not in message
    assert "step 2" in message and str(workdir) in message and "No space left" in message
    assert not list((workdir / "checkpoints").rglob(f"*{TMP_SUFFIX}*"))  # partial save removed
    fresh = Checkpoints(workdir, keep_best=1, metric="macro_f1")
    assert fresh.latest.all_steps() == [1]
    restored, meta = fresh.restore("latest", _state(0, first["w"].size))
    assert meta == {"n": 1}
    np.testing.assert_array_equal(restored["w"], first["w"])  # bitwise
    assert int(restored["step"]) == int(first["step"])


def test_disk_full_during_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    from orbax.checkpoint._src.handlers import json_checkpoint_handler

    ckpt = Checkpoints(tmp_path, keep_best=1, metric="macro_f1")
    first = _state(1)
    ckpt.save(1, first, {"n": 1})

    def full(self, x, directory):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))

    monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", full)
    with pytest.raises(CheckpointSaveError) as info:
        ckpt.save(2, _state(2), {"n": 2})
    monkeypatch.undo()
    _check_failed_save(tmp_path, ckpt, info, first)


def _mount_tmpfs(path: Path, size: str) -> bool:
    if os.geteuid() != 0 or sys.platform != "linux":
        return False
    path.mkdir()
    result = subprocess.run(
        [
            shutil.which("mount") or "/bin/mount",
            "-t",
            "tmpfs",
            "-o",
            f"size={size}",
            "tmpfs",
            str(path),
        ],
        capture_output=True,
    )
    return result.returncode == 0


def test_disk_full_on_a_tiny_filesystem_keeps_the_previous_checkpoint(tmp_path):
    """The same on a real full disk: a 600 KiB tmpfs (root only) holds one 400 KB state."""
    mount = tmp_path / "tiny"
    if not _mount_tmpfs(mount, "600k"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        ckpt = Checkpoints(mount, keep_best=1, metric="macro_f1")
        first = _state(1, 100_000)
        ckpt.save(1, first, {"n": 1})
        with pytest.raises(CheckpointSaveError) as info:
            ckpt.save(2, _state(2, 100_000), {"n": 2})
        _check_failed_save(mount, ckpt, info, first)
    finally:
        subprocess.run([shutil.which("umount") or "/bin/umount", "-l", str(mount)], check=False)


# ------------------------------------------------------------------------------------------
# PeerWatchdog (in process, a fake key-value store)


class FakeKV:
    def __init__(self):
        self.data, self.lock, self.down = {}, threading.Lock(), False

    def key_value_set(self, key, value, allow_overwrite=False):
        if self.down:
            raise RuntimeError("UNAVAILABLE: coordinator gone")
        with self.lock:
            self.data[key] = value

    def key_value_dir_get(self, prefix):
        if self.down:
            raise RuntimeError("UNAVAILABLE: coordinator gone")
        with self.lock:
            return [(k, v) for k, v in self.data.items() if k.startswith(prefix)]


def _watch(kv, process_id, lost):
    dog = PeerWatchdog(kv, process_id, 2, 1.0, interval_s=0.05, on_lost=lost.append)
    dog.start()
    return dog


@pytest.mark.slow  # waits out real timeouts (about 6 s)
def test_watchdog_reports_a_silent_peer_within_the_timeout_and_not_an_exited_one():
    kv, lost0, lost1 = FakeKV(), [], []
    dog0, dog1 = _watch(kv, 0, lost0), _watch(kv, 1, lost1)
    time.sleep(1.5)
    assert not lost0 and not lost1  # both alive
    dog1.stop()  # process 1 goes silent
    start = time.monotonic()
    while not lost0 and time.monotonic() - start < 5:
        time.sleep(0.02)
    assert lost0 and 0.9 < time.monotonic() - start < 1.6
    assert lost0[0].startswith("cmhl_jax: lost process 1 of the 2-process run")
    assert "\n" not in lost0[0] and "restart all processes" in lost0[0]

    kv, lost0, lost1 = FakeKV(), [], []
    dog0, dog1 = _watch(kv, 0, lost0), _watch(kv, 1, lost1)
    time.sleep(0.3)
    dog1.mark_exited()  # a normal exit: not lost
    dog1.stop()
    time.sleep(1.6)
    assert not lost0
    kv.down = True  # the coordinator dies: process 0 notices
    time.sleep(1.6)
    assert lost0 and "lost the coordinator" in lost0[0]
    dog0.stop()


# ------------------------------------------------------------------------------------------
# A lost process in a two-process (gloo) training run


FAILURE_TIMEOUT = 10
MARGIN = 30  # a loaded 2-core machine


def _two_process_args(workdir, encoder, data, port, process_id):
    from conftest import tiny_train_args

    return tiny_train_args(
        workdir,
        encoder,
        data,
        "parallel.mode=mesh",
        "num_epochs=1000",
        "max_steps=400",
        "checkpoint.every_steps=5",
        "log_every=5",
        "parallel.distributed=true",
        f"parallel.coordinator_address=127.0.0.1:{port}",
        "parallel.num_processes=2",
        f"parallel.process_id={process_id}",
        "parallel.cpu_collectives=gloo",
        f"parallel.failure_timeout_s={FAILURE_TIMEOUT}",
    )


def _start_pair(base, workdir, encoder, data, tag):
    port = free_port()
    return [
        launch(_two_process_args(workdir, encoder, data, port, i), 2, base / f"{tag}{i}.log")
        for i in range(2)
    ]


@pytest.mark.slow
def test_lost_process_stops_the_survivor_in_bounded_time_and_a_restart_resumes(
    tiny_encoder_dir, tiny_emotion_data, tmp_path
):
    workdir = tmp_path / "run"
    procs = _start_pair(tmp_path, workdir, tiny_encoder_dir, tiny_emotion_data, "first")
    try:
        deadline = time.monotonic() + 300
        latest = workdir / "checkpoints" / "latest"
        while time.monotonic() < deadline and not (
            latest.is_dir() and any(p.name.isdigit() for p in latest.iterdir())
        ):
            assert all(p.poll() is None for p in procs), (tmp_path / "first0.log").read_text()
            time.sleep(0.5)
        time.sleep(2)  # mid-run, past a checkpoint
        procs[1].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        code = procs[0].wait(timeout=FAILURE_TIMEOUT + MARGIN + 60)
        waited = time.monotonic() - killed
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    output = (tmp_path / "first0.log").read_text()
    assert code != 0, output[-3000:]
    assert waited < FAILURE_TIMEOUT + MARGIN, f"survivor took {waited:.0f} s"
    assert "cmhl_jax: lost process 1 of the 2-process run" in output, output[-3000:]
    ckpt = Checkpoints(workdir, keep_best=1, metric="macro_f1")
    killed_at, _ = ckpt.read_arrays("latest")  # the last checkpoint restores
    assert 0 < killed_at < 400

    procs = _start_pair(tmp_path, workdir, tiny_encoder_dir, tiny_emotion_data, "second")
    try:
        codes = [p.wait(timeout=600) for p in procs]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    output = (tmp_path / "second0.log").read_text()
    assert codes == [0, 0], output[-3000:]
    assert f"resumed from step {killed_at}" in output
    step, _ = Checkpoints(workdir, keep_best=1, metric="macro_f1").read_arrays("latest")
    assert step == 400
