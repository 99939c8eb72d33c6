"""Orbax checkpoints: exact round trip, best-k, corrupt fallback, layout refusal, modes."""

from __future__ import annotations

import dataclasses
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from cmhl_jax.checkpoint import CheckpointModelMismatchError, Checkpoints
from cmhl_jax.model import build_model
from cmhl_jax.parallel import Parallel
from cmhl_jax.step import init_train_state, make_optimizer
from cmhl_jax.tasks import make_task


@pytest.fixture(scope="module")
def setup(tiny_encoder_dir):
    """(model_def, fresh host state, host state after a few optimizer steps)."""
    config = tiny_config(tiny_encoder_dir, "", "optim.accum_steps=2")
    model_def, params, _ = build_model(config.model, make_task(config), seed=0)
    tx, _ = make_optimizer(config.optim, 10)  # accum_steps 2: MultiSteps state too
    fresh = jax.device_get(init_train_state(params, tx, seed=0))

    @jax.jit
    def micro_step(state):
        # A deterministic non-zero "gradient" per leaf (of the params before any update).
        grads = jax.tree_util.tree_map(lambda p: jnp.sin(p * 7.0) + 0.01, fresh.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        return state.replace(
            step=state.step + 1,
            params=jax.tree_util.tree_map(jnp.add, state.params, updates),
            opt_state=opt_state,
            rng=jax.random.fold_in(state.rng, 1),
        )

    # 5 micro-steps = 2 AdamW updates (the first one has lr 0: warmup starts at 0), the last
    # micro-step only accumulates.
    trained = fresh
    for _ in range(5):
        trained = micro_step(trained)
    trained = jax.device_get(trained)
    return model_def, fresh, trained


def leaves_equal(a, b) -> None:
    """Same tree structure, and every leaf has the same dtype, shape and bits."""
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


def meta_for(model_def, **extra):
    return {"model": model_def.fingerprint(), "position": {"epoch": 0, "batch": 0}, **extra}


def test_round_trip_is_exact(setup, tmp_path):
    model_def, fresh, trained = setup
    # The update changed params, Adam moments, counters and the rng.
    assert not np.array_equal(
        trained.params["heads"]["emotion"]["kernel"], fresh.params["heads"]["emotion"]["kernel"]
    )
    assert not np.array_equal(trained.rng, fresh.rng)
    assert int(trained.step) == 5
    checkpoints = Checkpoints(tmp_path, keep_best=2, metric="macro_f1")
    checkpoints.save(2, trained, meta_for(model_def, note="x"))
    restored, meta = checkpoints.restore("latest", fresh, fingerprint=model_def.fingerprint())
    leaves_equal(restored, trained)
    assert meta["note"] == "x" and meta["model"] == model_def.fingerprint()
    # A second Checkpoints object on the same workdir (a new process) sees the same.
    again, _ = Checkpoints(tmp_path, keep_best=2, metric="macro_f1").restore(2, fresh)
    leaves_equal(again, trained)


def test_best_k_keeps_the_top_k_and_latest_keeps_the_newest(setup, tmp_path):
    model_def, fresh, trained = setup
    checkpoints = Checkpoints(tmp_path, keep_best=2, metric="macro_f1")
    scores = {1: 0.30, 2: 0.70, 3: 0.50, 4: 0.60, 5: 0.10}
    states = {}
    for step, score in scores.items():
        state = trained.replace(step=np.asarray(step, np.int32))
        states[step] = state
        checkpoints.save(step, state, meta_for(model_def), val_metrics={"macro_f1": score})
    assert sorted(checkpoints.best.all_steps()) == [2, 4]
    assert checkpoints.best.best_step() == 2
    assert sorted(checkpoints.latest.all_steps()) == [4, 5]
    best, _ = checkpoints.restore("best", fresh, fingerprint=model_def.fingerprint())
    assert int(best.step) == 2
    latest, _ = checkpoints.restore("latest", fresh)
    assert int(latest.step) == 5
    # A step number finds the checkpoint in either manager.
    assert int(checkpoints.restore(4, fresh)[0].step) == 4
    with pytest.raises(FileNotFoundError, match="available"):
        checkpoints.restore(3, fresh)


def test_corrupt_latest_falls_back_to_the_previous_one(setup, tmp_path, caplog):
    model_def, fresh, trained = setup
    checkpoints = Checkpoints(tmp_path, keep_best=2, metric="macro_f1")
    older = trained.replace(step=np.asarray(10, np.int32))
    newer = trained.replace(step=np.asarray(20, np.int32))
    checkpoints.save(10, older, meta_for(model_def))
    checkpoints.save(20, newer, meta_for(model_def))
    state_dir = tmp_path / "checkpoints" / "latest" / "20" / "state"
    data_files = [p for p in state_dir.rglob("*") if p.is_file() and p.stat().st_size > 0]
    assert data_files, list(state_dir.rglob("*"))
    for path in data_files:  # truncate every file of the newest state item
        path.write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="cmhl_jax.checkpoint"):
        restored, _ = Checkpoints(tmp_path, keep_best=2, metric="macro_f1").restore(
            "latest", fresh, fingerprint=model_def.fingerprint()
        )
    assert int(restored.step) == 10
    leaves_equal(restored, older)
    assert "20" in caplog.text and "corrupt" in caplog.text


def test_all_checkpoints_corrupt_is_an_error(setup, tmp_path):
    model_def, fresh, trained = setup
    checkpoints = Checkpoints(tmp_path, keep_best=2, metric="macro_f1")
    checkpoints.save(1, trained, meta_for(model_def))
    for path in (tmp_path / "checkpoints" / "latest" / "1" / "state").rglob("*"):
        if path.is_file():
            path.unlink()
    with pytest.raises(FileNotFoundError, match="no usable checkpoint"):
        checkpoints.restore("latest", fresh)


def test_other_head_layout_is_refused(setup, tmp_path):
    model_def, fresh, trained = setup
    checkpoints = Checkpoints(tmp_path, keep_best=2, metric="macro_f1")
    checkpoints.save(1, trained, meta_for(model_def))
    other_task = dataclasses.replace(
        model_def.task,
        head_sizes=(("emotion", 7), ("intensity", 3), ("valence", 3)),
    )
    other = dataclasses.replace(model_def, task=other_task)
    with pytest.raises(CheckpointModelMismatchError) as info:
        checkpoints.restore("latest", fresh, fingerprint=other.fingerprint())
    message = str(info.value)
    assert "'emotion': 6" in message and "'emotion': 7" in message  # both layouts
    assert "'intensity': 2" in message and "'intensity': 3" in message
    assert "--workdir" in message


def test_pmap_state_restores_into_mesh_mode(setup, tmp_path):
    """Saved from a pmap (replicated, leading device axis) state via Parallel.get_state,
    restored into the host layout and placed with put in mesh mode.
    (The 8-device version, with a step after the restore, is in test_parallel.py.)"""
    model_def, fresh, trained = setup
    pmap = Parallel("pmap")
    device_state = pmap.put(trained)
    assert device_state.params["heads"]["emotion"]["kernel"].shape[0] == pmap.num_devices
    checkpoints = Checkpoints(tmp_path, keep_best=2, metric="macro_f1")
    checkpoints.save(2, pmap.get_state(device_state), meta_for(model_def))
    restored, _ = checkpoints.restore("latest", fresh, fingerprint=model_def.fingerprint())
    mesh = Parallel("mesh")
    mesh_state = mesh.put(restored)
    leaves_equal(mesh.get_state(mesh_state), trained)
    kernel = mesh_state.params["heads"]["emotion"]["kernel"]
    assert kernel.sharding.is_equivalent_to(mesh.replicated, kernel.ndim)
