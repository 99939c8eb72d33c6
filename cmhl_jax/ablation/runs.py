"""Training the runs of an ablation: in this process, or in worker processes pinned to devices
(`--parallel_runs`), skipping runs already trained and refusing workdirs of another config."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

from ml_collections import ConfigDict

from cmhl_jax.ablation.arms import AblationError, Run
from cmhl_jax.config import to_json
from cmhl_jax.loop import train_and_evaluate
from cmhl_jax.tasks import fitted_config_keys

log = logging.getLogger("cmhl_jax.ablation")

# Config keys that name places on one machine: a run's record is reused on another machine
# when everything else matches.
MACHINE_KEYS = ("data.local_dir", "data.cache_dir", "model.encoder")


def flat_config(config) -> dict:
    """A config (ConfigDict or nested dict) as {"a.b": value}."""

    def walk(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict):
                yield from walk(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    return dict(walk(json.loads(to_json(config)) if not isinstance(config, dict) else config))


def config_differences(stored: dict, config) -> list[str]:
    """Keys whose values differ between a run's stored config and `config` (keys only one of
    them has, e.g. fields added by a later version with their defaults, and machine paths do
    not count, nor do fields fitted from the training split: a workdir's config is stored
    before they are filled)."""
    new = flat_config(config)
    old = flat_config(stored)
    ignored = (*MACHINE_KEYS, *fitted_config_keys())
    return sorted(k for k in old.keys() & new.keys() if k not in ignored and old[k] != new[k])


def check_same_config(run: Run, config) -> None:
    """Refuses a record or workdir of another config (checked before anything trains)."""
    for path in (run.record, run.workdir / "run_config.json"):
        if not path.is_file():
            continue
        stored = json.loads(path.read_text())
        stored = stored.get("config", stored) if path == run.record else stored
        if diff := config_differences(stored, config):
            raise AblationError(
                f"{path} is a run of another config (differs in {', '.join(diff[:5])}); "
                "use a new --out, or the same config and overrides"
            )


def _store_config(run: Run, config) -> None:
    """Writes the run's config into its workdir just before it trains (a worker of
    --parallel_runs reads it; a later command compares with it)."""
    run.workdir.mkdir(parents=True, exist_ok=True)
    if not (run.workdir / "run_config.json").is_file():
        (run.workdir / "run_config.json").write_text(to_json(config))


def is_trained(workdir: Path) -> bool:
    summary = workdir / "summary.json"
    if not summary.is_file():
        return False
    try:
        return json.loads(summary.read_text()).get("stopped_by") in (None, "early_stopping")
    except json.JSONDecodeError:
        return False


def train_in_process(config, workdir: Path) -> None:
    summary = train_and_evaluate(config, workdir)
    if summary.get("stopped_by") not in (None, "early_stopping"):
        raise AblationError(
            f"{workdir}: stopped by {summary['stopped_by']}; rerun the command to resume"
        )


def train_stored_run(workdir: Path) -> None:
    """Trains the run whose config `_store_config` wrote into `workdir` (a worker's job)."""
    config = ConfigDict(json.loads((workdir / "run_config.json").read_text()))
    train_in_process(config, workdir)


def train_worker(workdir: Path, device: str | None) -> None:
    """Trains one run in a subprocess pinned to `device` (CUDA_VISIBLE_DEVICES)."""
    env = dict(os.environ)
    if device is not None:
        env["CUDA_VISIBLE_DEVICES"] = device
    command = [sys.executable, "-m", "cmhl_jax.ablation", "--train_run", str(workdir)]
    with (workdir / "train.log").open("a") as log_file:
        # Our own interpreter and module: no untrusted input.
        result = subprocess.run(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)  # noqa: S603
    if result.returncode != 0 or not is_trained(workdir):
        raise AblationError(
            f"{workdir}: worker exited with {result.returncode}; see {workdir / 'train.log'}"
        )


def train_runs(
    runs: list[Run], configs: dict, *, parallel_runs: int = 1, devices=None, scored=None
) -> None:
    """Trains the runs that need it (no complete record and no finished workdir); `scored(run)`
    is called as soon as each run is trained, so its record is written (and can be committed)
    while the next one trains."""
    pending = [r for r in runs if not is_trained(r.workdir)]
    scored = scored or (lambda run: None)
    for run in pending:
        _store_config(run, configs[run])
    if parallel_runs <= 1:
        for i, run in enumerate(pending):
            log.info("train %s (%d/%d) in %s", run.name, i + 1, len(pending), run.workdir)
            train_in_process(configs[run], run.workdir)
            scored(run)
        return
    _train_in_workers(pending, parallel_runs, devices, scored)


def _train_in_workers(pending: list[Run], parallel_runs: int, devices, scored) -> None:
    """`parallel_runs` worker processes at a time, each on one device slot (round robin over
    `devices`, default 0..parallel_runs-1); the runs are scored in this process, one at a
    time."""
    slots: queue.Queue = queue.Queue()
    scoring = threading.Lock()
    for k in range(parallel_runs):
        slots.put(devices[k % len(devices)] if devices else str(k))

    def work(run: Run) -> None:
        device = slots.get()
        try:
            log.info("train %s on device %s in %s", run.name, device, run.workdir)
            train_worker(run.workdir, device)
        finally:
            slots.put(device)
        with scoring:  # one evaluation at a time in this process
            scored(run)

    with concurrent.futures.ThreadPoolExecutor(parallel_runs) as pool:
        failures = [f.exception() for f in [pool.submit(work, r) for r in pending]]
    failures = [f for f in failures if f is not None]
    if failures:
        raise AblationError("; ".join(str(f) for f in failures))
