"""Multi-process runs and workdir ownership: `setup_distributed` and `WorkdirLock`.

A lost process. `setup_distributed` bounds how long the survivors of a multi-process run live
on after a process dies (SIGKILL, a lost host, a network partition) by
`parallel.failure_timeout_s` (T):

- `PeerWatchdog` (two daemon threads per process): every process writes a heartbeat key to
  the coordination service's key-value store about ten times per T and reads its peers'. A
  peer whose heartbeat has not changed for T seconds, or a coordinator that has not answered
  for T seconds, ends this process with one line on stderr (`cmhl_jax: lost process 1 of 2
  ...`) and exit code `PEER_LOST_EXIT_CODE` (75), whatever the main thread is doing: blocked
  in a gloo collective (which on a silent peer, e.g. a lost host, waits for gloo's own
  timeout of many minutes), in an Orbax barrier, or in the shutdown barrier after a
  collective failed with "Connection reset by peer" (a killed peer on a live host).
- Backstops in jax itself: the coordination service's heartbeat timeout and the shutdown
  barrier's timeout, both 2 T + 10 s, after which jax terminates every process of the run
  (with a fatal log instead of the message). Both are set well past T so that the watchdog,
  which acts at T plus one or two polling intervals, always speaks first; a shutdown timeout
  of T raced it and sometimes won on a loaded machine.

Nothing is saved on the way out: the last checkpoint written (Orbax renames a save into place
only when complete) stays the last good one, and the next run on the workdir removes a
half-written save. Restarting all processes resumes from it.
"""

from __future__ import annotations

import atexit
import datetime
import errno
import fcntl
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path

import jax
from jax._src import distributed as jax_distributed

from cmhl_jax.errors import UserError

log = logging.getLogger(__name__)

PEER_LOST_EXIT_CODE = 75  # EX_TEMPFAIL: a retry (restarting all processes) may succeed
LOCK_NAME = "train.lock"
_HEARTBEAT_DIR = "cmhl_jax/heartbeat/"
_EXITED = "exited"


# ------------------------------------------------------------------------------------------
# Multi-process set-up


def setup_distributed(parallel_cfg) -> PeerWatchdog | None:
    """`jax.distributed.initialize` for multi-process runs (CPU collectives through gloo), with
    a lost process detected within `parallel_cfg.failure_timeout_s` (see the module docstring).

    Returns the started watchdog (None for single-process runs or when the timeout is <= 0).
    """
    if not parallel_cfg.distributed:
        return None
    if parallel_cfg.get("cpu_collectives"):
        jax.config.update("jax_cpu_collectives_implementation", parallel_cfg.cpu_collectives)
    timeout = float(parallel_cfg.get("failure_timeout_s", 90) or 0)
    kwargs = {}
    if timeout > 0:
        # The watchdog acts after `timeout`; jax's own checks are the backstop (docstring).
        backstop = int(2 * timeout + 10)
        kwargs = dict(heartbeat_timeout_seconds=backstop, shutdown_timeout_seconds=backstop)
    jax.distributed.initialize(
        coordinator_address=parallel_cfg.coordinator_address or None,
        num_processes=parallel_cfg.num_processes,
        process_id=parallel_cfg.process_id,
        **kwargs,
    )
    if timeout <= 0 or jax.process_count() < 2:
        return None
    watchdog = PeerWatchdog(
        _coordination_client(), jax.process_index(), jax.process_count(), timeout
    )
    watchdog.start()
    return watchdog


def _coordination_client():
    """The coordination-service client that `jax.distributed.initialize` connected (jax keeps
    it in `jax._src.distributed.global_state`; Orbax and multihost_utils use it the same way)."""
    client = jax_distributed.global_state.client
    if client is None:
        raise RuntimeError("jax.distributed is not initialized")
    return client


def _default_on_lost(message: str) -> None:
    """Ends the process at once: the main thread may be blocked in a collective that nothing
    interrupts, so no exception could reach it. The kernel releases the workdir lock."""
    try:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
    finally:
        os._exit(PEER_LOST_EXIT_CODE)


class PeerWatchdog:
    """Heartbeats through the coordination service's key-value store; calls `on_lost(message)`
    (default: print it and `os._exit(PEER_LOST_EXIT_CODE)`) when a peer or the coordinator
    has been silent for `timeout_s` seconds. A process that exits normally marks its
    heartbeat "exited" (atexit), so its peers do not count it as lost."""

    def __init__(
        self,
        client,
        process_id: int,
        num_processes: int,
        timeout_s: float,
        *,
        interval_s: float | None = None,
        on_lost=_default_on_lost,
    ):
        self.client = client
        self.process_id = process_id
        self.num_processes = num_processes
        self.timeout_s = float(timeout_s)
        self.interval_s = interval_s or min(max(self.timeout_s / 10, 0.2), 5.0)
        self.on_lost = on_lost
        now = time.monotonic()
        self.peers = [p for p in range(num_processes) if p != process_id]
        self._last_value = {p: None for p in self.peers}
        self._last_seen = dict.fromkeys(self.peers, now)  # grace of one timeout at start
        self._last_contact = now  # the last answered round trip to the coordinator
        self._exited: set[int] = set()
        self._stop = threading.Event()
        # Set by mark_exited; checked under `_writing` before each heartbeat write, so that no
        # beat count overwrites "exited" (a peer would then count this process as lost).
        self._marked_exited = threading.Event()
        self._writing = threading.Lock()
        self._beats = 0
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for target, name in ((self._beat_loop, "heartbeat"), (self._watch_loop, "watchdog")):
            thread = threading.Thread(target=target, name=f"cmhl-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        atexit.register(self.mark_exited)

    def stop(self) -> None:
        self._stop.set()

    def mark_exited(self) -> None:
        """Tells the peers that this process ends normally: its heartbeat reads "exited" from
        now on (the heartbeat thread writes no more beats). The heartbeat thread still reads
        the peers' heartbeats and the watchdog keeps running, so that a process stuck in the
        shutdown barrier of a run with a dead peer still exits within the timeout, with the
        message."""
        with self._writing:
            self._marked_exited.set()
            try:
                self.client.key_value_set(
                    f"{_HEARTBEAT_DIR}{self.process_id}", _EXITED, allow_overwrite=True
                )
            except Exception:  # noqa: BLE001, S110 - the coordinator may be gone already
                pass

    def _beat(self, key: str) -> None:
        """Writes the next beat count, unless mark_exited has run."""
        with self._writing:
            if not self._marked_exited.is_set():
                self._beats += 1
                self.client.key_value_set(key, str(self._beats), allow_overwrite=True)

    def _beat_loop(self) -> None:
        key = f"{_HEARTBEAT_DIR}{self.process_id}"
        while not self._stop.is_set():
            try:
                self._beat(key)
                entries = self.client.key_value_dir_get(_HEARTBEAT_DIR)
            except Exception:  # noqa: BLE001 - an unreachable coordinator: the watch loop acts
                self._stop.wait(self.interval_s)
                continue
            now = time.monotonic()
            self._last_contact = now
            for full_key, value in entries:
                try:
                    peer = int(full_key.rsplit("/", 1)[-1])
                except ValueError:
                    continue
                if peer not in self._last_seen:
                    continue
                if value == _EXITED:
                    self._exited.add(peer)
                if value != self._last_value[peer]:
                    self._last_value[peer] = value
                    self._last_seen[peer] = now
            self._stop.wait(self.interval_s)

    def lost(self) -> str | None:
        """The one-line message when a peer or the coordinator counts as lost, else None."""
        now = time.monotonic()
        silent = [
            p
            for p in self.peers
            if p not in self._exited and now - self._last_seen[p] > self.timeout_s
        ]
        where = f"process {self.process_id} of {self.num_processes}"
        tail = (
            f"; {where} stops (exit {PEER_LOST_EXIT_CODE}). The last checkpoint written is "
            "kept: restart all processes to resume."
        )
        if now - self._last_contact > self.timeout_s:
            return (
                f"cmhl_jax: lost the coordinator (process 0): no answer for "
                f"{now - self._last_contact:.0f} s (parallel.failure_timeout_s="
                f"{self.timeout_s:g})" + tail
            )
        if silent:
            names = ", ".join(str(p) for p in silent)
            return (
                f"cmhl_jax: lost process {names} of the {self.num_processes}-process run: no "
                f"heartbeat for {self.timeout_s:g} s (parallel.failure_timeout_s)" + tail
            )
        return None

    def _watch_loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            message = self.lost()
            if message:
                self._stop.set()
                self.on_lost(message)
                return


# ------------------------------------------------------------------------------------------
# One writer per workdir


class WorkdirBusyError(UserError, RuntimeError):
    """Another live process holds the workdir's lock; the message names it (one line)."""


def _is_local(workdir) -> bool:
    return "://" not in str(workdir)


class WorkdirLock:
    """An exclusive `fcntl.flock` on `<workdir>/train.lock`, held while the context is open.

    The file records the holder (host, pid, start time). A second acquirer, in this or another
    process, fails at once with `WorkdirBusyError` naming that holder. The kernel drops the
    lock when the holder's file is closed, which includes any death of the holder (SIGKILL,
    OOM): a relaunch never meets a stale lock; the file's old text is simply overwritten.
    Non-local workdirs (gs://..., any URL) are not locked (a warning is logged). Only the
    process that writes the workdir (jax.process_index() == 0) should take it; readers
    (eval.py, predict) never do.
    """

    def __init__(self, workdir):
        self.workdir = workdir
        self.path: Path | None = Path(str(workdir)) / LOCK_NAME if _is_local(workdir) else None
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> WorkdirLock:
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this WorkdirLock")
        if self.path is None:
            log.warning(
                "workdir %s is not a local path: not locked against a second run", self.workdir
            )
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # close-on-exec by default
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _read_holder(fd)
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise WorkdirBusyError(
                    f"workdir {self.workdir} is in use by another run ({holder}); wait for it "
                    f"to end or stop it, or use another --workdir"
                ) from None
            raise
        since = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        text = f"host={socket.gethostname()} pid={os.getpid()} since={since}\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # no holder; the file stays (deleting it would race)
        finally:
            os.close(fd)  # drops the flock

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text.splitlines()[0] if text else "holder unknown"
