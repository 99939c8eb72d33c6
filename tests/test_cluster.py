"""Cluster reliability: one writer per workdir (WorkdirLock), a failed save keeps the previous
checkpoint (CheckpointSaveError), and a lost process ends the survivors within
`parallel.failure_timeout_s` (PeerWatchdog; the two-process gloo run of test_multihost)."""

from __future__ import annotations

import errno
import json
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
from conftest import reserved_port
from test_multihost import launch

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


class Seen:
    """One watchdog's view of a FakeKV, with the times (time.monotonic) of what it saw:
    `changed[peer]`, its answered reads that showed a new heartbeat value of `peer` (the key's
    last part, e.g. "1"); `answered`, its reads that the store answered. The watchdog takes its
    own clock after each read, so a read recorded here at t is one it holds as seen at t or
    later."""

    def __init__(self, kv: FakeKV):
        self.kv, self.values, self.changed, self.answered = kv, {}, {}, []

    def key_value_set(self, key, value, allow_overwrite=False):
        self.kv.key_value_set(key, value, allow_overwrite)

    def key_value_dir_get(self, prefix):
        now = time.monotonic()
        entries = self.kv.key_value_dir_get(prefix)  # raises when the store is down
        self.answered.append(now)
        for key, value in entries:
            peer = key.rsplit("/", 1)[-1]
            if self.values.get(peer) != value:
                self.values[peer] = value
                self.changed.setdefault(peer, []).append(now)
        return entries


WATCH_TIMEOUT = 2.0  # s; the watchdogs here beat and check every 0.05 s
LATE = 15.0  # s past the timeout that a report may take on a loaded machine


def _watch(kv, process_id):
    """A started watchdog of a 2-process run on `kv`: (watchdog, its view, its reports as
    (time, message), its checks as (time, result of lost()))."""
    seen, lost, checks = Seen(kv), [], []
    dog = PeerWatchdog(
        seen,
        process_id,
        2,
        WATCH_TIMEOUT,
        interval_s=0.05,
        on_lost=lambda message: lost.append((time.monotonic(), message)),
    )

    def checked():  # the watch loop's check, recorded (its result is taken as it is)
        result = PeerWatchdog.lost(dog)
        checks.append((time.monotonic(), result))
        return result

    dog.lost = checked
    dog.start()
    return dog, seen, lost, checks


def _until(condition, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        time.sleep(0.02)


def _checked_after(checks, when: float) -> bool:
    """Whether the watch loop has run a check that began after `when`."""
    return any(t > when for t, _ in checks)


class PausingKV(FakeKV):
    """A FakeKV whose next heartbeat write of `key` waits until `resume` is set, after
    `paused` is set: a heartbeat thread held in the middle of its loop."""

    def __init__(self, key):
        super().__init__()
        self.key, self.paused, self.resume = key, threading.Event(), threading.Event()

    def key_value_set(self, key, value, allow_overwrite=False):
        if key == self.key and value != "exited" and not self.resume.is_set():
            self.paused.set()
            self.resume.wait(10)
        super().key_value_set(key, value, allow_overwrite)


def test_no_heartbeat_overwrites_exited():
    """mark_exited while the heartbeat thread is about to write a beat: the beat is written
    first or not at all, never over "exited"; later loops write no beats but keep reading."""
    key = "cmhl_jax/heartbeat/1"
    kv = PausingKV(key)
    seen = Seen(kv)
    dog = PeerWatchdog(seen, 1, 2, 60.0, interval_s=0.01, on_lost=lambda message: None)
    dog.start()
    try:
        assert kv.paused.wait(10)  # the heartbeat thread is inside its write
        marking = threading.Thread(target=dog.mark_exited)
        marking.start()
        time.sleep(0.1)  # mark_exited waits for the write in progress
        kv.resume.set()
        marking.join(10)
        reads = len(seen.answered)
        _until(lambda: len(seen.answered) > reads + 5, "the heartbeat thread reads on")
        assert kv.data[key] == "exited"
    finally:
        kv.resume.set()
        dog.stop()


@pytest.mark.slow  # waits out real timeouts (about 10 s)
def test_watchdog_reports_a_silent_peer_within_the_timeout_and_not_an_exited_one():
    """Bounds on what each watchdog saw, not on wall-clock windows: a report comes more than
    the timeout after the last heartbeat change the survivor read (it cannot come earlier),
    and at most LATE seconds later; while heartbeats flow, and after a normal exit, checks
    past the timeout report nothing."""
    kv = FakeKV()
    (dog0, seen0, lost0, checks0), (dog1, seen1, lost1, checks1) = _watch(kv, 0), _watch(kv, 1)
    alive = time.monotonic()
    _until(lambda: _checked_after(checks0, alive + 1.5 * WATCH_TIMEOUT), "process 0 checked")
    _until(lambda: _checked_after(checks1, alive + 1.5 * WATCH_TIMEOUT), "process 1 checked")
    assert not lost0 and not lost1  # both alive past the timeout
    assert len(seen0.changed["1"]) > 10 and len(seen1.changed["0"]) > 10  # heartbeats flowed
    dog1.stop()  # process 1 goes silent
    stopped = time.monotonic()
    _until(lambda: lost0, "process 0 reports process 1", WATCH_TIMEOUT + LATE)
    reported, message = lost0[0]
    last_change = seen0.changed["1"][-1]
    assert reported > stopped  # in order: silent, then reported
    assert WATCH_TIMEOUT < reported - last_change < WATCH_TIMEOUT + LATE
    assert message.startswith("cmhl_jax: lost process 1 of the 2-process run")
    assert "\n" not in message and "restart all processes" in message
    assert not lost1  # the silent process's own watchdog stopped with it

    kv = FakeKV()
    (dog0, seen0, lost0, checks0), (dog1, *_) = _watch(kv, 0), _watch(kv, 1)
    _until(lambda: len(seen0.changed.get("1", ())) >= 3, "process 0 reads process 1's beats")
    dog1.mark_exited()  # a normal exit: not lost
    dog1.stop()
    _until(lambda: seen0.values.get("1") == "exited", "process 0 reads the exit")
    exit_seen = seen0.changed["1"][-1]
    _until(lambda: _checked_after(checks0, exit_seen + 1.5 * WATCH_TIMEOUT), "a later check")
    assert not lost0  # checked past the timeout since the exit: nothing reported
    kv.down = True  # the coordinator dies: process 0 notices
    down = time.monotonic()
    _until(lambda: lost0, "process 0 reports the coordinator", WATCH_TIMEOUT + LATE)
    reported, message = lost0[0]
    last_answer = seen0.answered[-1]
    assert last_answer < down < reported
    assert WATCH_TIMEOUT < reported - last_answer < WATCH_TIMEOUT + LATE
    assert "lost the coordinator" in message
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


def _start_pair(base, workdir, encoder, data, tag, port):
    return [
        launch(_two_process_args(workdir, encoder, data, port, i), 2, base / f"{tag}{i}.log")
        for i in range(2)
    ]


def _checkpoint_steps(workdir: Path) -> list[int]:
    latest = workdir / "checkpoints" / "latest"
    return sorted(int(p.name) for p in latest.glob("*") if p.name.isdigit()) or [0]


def _logged_steps(workdir: Path) -> list[int]:
    """Steps of the complete train records in metrics.jsonl (a line being written is left)."""
    path = workdir / "metrics.jsonl"
    text = path.read_text() if path.exists() else ""
    return [json.loads(line)["step"] for line in text.split("\n")[:-1] if '"loss"' in line]


@pytest.mark.slow
def test_lost_process_stops_the_survivor_in_bounded_time_and_a_restart_resumes(
    tiny_encoder_dir, tiny_emotion_data, tmp_path
):
    workdir = tmp_path / "run"
    with reserved_port() as port:  # held until both processes are gone
        procs = _start_pair(tmp_path, workdir, tiny_encoder_dir, tiny_emotion_data, "first", port)
        try:
            # Mid-run, past a checkpoint: a train record logged after the first checkpoint's
            # step (polled, however slow the machine).
            deadline = time.monotonic() + 300
            while not (max(_logged_steps(workdir), default=0) > _checkpoint_steps(workdir)[0] > 0):
                assert all(p.poll() is None for p in procs), (tmp_path / "first0.log").read_text()
                assert time.monotonic() < deadline, "no train record past a checkpoint in 300 s"
                time.sleep(0.2)
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

    with reserved_port() as port:
        procs = _start_pair(tmp_path, workdir, tiny_encoder_dir, tiny_emotion_data, "second", port)
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
