"""Plug-in losses (`config.loss.fn`): the worked example, the checks before training, and a
plug-in traced into the real train step with its terms logged."""

from __future__ import annotations

import json
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import research_helpers as helpers
from ml_collections import ConfigDict

from cmhl_jax.config import ConfigError, override
from cmhl_jax.losses import resolve_loss_fn
from cmhl_jax.tasks import make_task
from cmhl_jax.tasks.emotion import BUILTIN_LOSSES
from cmhl_jax.tasks.emotion.affect import build_affect_tables, default_affect_config
from cmhl_jax.tasks.emotion.loss import cmhl, loss_tables

sys.path.insert(0, str(helpers.ROOT))
from examples import focal  # noqa: I001  (the repo root is put on sys.path just above)

TABLES = {
    k: jnp.asarray(v) for k, v in loss_tables(build_affect_tables(default_affect_config())).items()
}
LOGITS = {
    "emotion": jnp.array([[2.0, -1.0, 0.5, 0.0, 0.1, -0.3], [0.0, 3.0, 0.0, 2.5, 0.0, 0.0]]),
    "valence": jnp.array([[0.2, 0.1, -0.1], [1.0, 0.0, 0.0]]),
    "intensity": jnp.array([[0.3, -0.3], [0.0, 0.5]]),
}
LABELS = jnp.array([0, 1])
WEIGHTS = jnp.array([1.0, 1.0])


def _cfg(**extra):
    return ConfigDict({"alpha": 0.5, "beta": 0.5, "lam": 0.4, "variant": "sum", **extra})


def test_focal_example_by_hand_and_gamma_zero_is_the_builtin():
    total0, _ = focal.loss(LOGITS, LABELS, WEIGHTS, TABLES, 2.0, _cfg(gamma=0.0))
    builtin, _ = cmhl(LOGITS, LABELS, WEIGHTS, TABLES, 2.0, _cfg())
    assert float(total0) == pytest.approx(float(builtin), rel=1e-6)
    # Focal CE by hand, gamma = 2: -(1 - p_t)^2 log p_t averaged over the two texts.
    p = np.exp(LOGITS["emotion"]) / np.exp(LOGITS["emotion"]).sum(-1, keepdims=True)
    pt = p[np.arange(2), np.asarray(LABELS)]
    expected = np.mean(-((1 - pt) ** 2) * np.log(pt))
    _, terms = focal.loss(LOGITS, LABELS, WEIGHTS, TABLES, 2.0, _cfg(gamma=2.0))
    assert float(terms["focal_ce_emotion"]) == pytest.approx(expected, rel=1e-5)
    assert 0 < float(terms["focal_exclusivity"])


def _config(tmp_path, *overrides):
    return override(helpers.ROOT / "configs" / "default.py", list(overrides))


def test_bad_plugins_are_clear_errors_before_training(tmp_path, monkeypatch):
    (tmp_path / "bad_losses.py").write_text(
        "def two_args(logits, labels):\n    return 0.0, {}\n"
        "def vector(logits, labels, weights, tables, normalizer, cfg):\n"
        "    return weights, {'loss': weights.sum()}\n"
        "def no_loss_term(logits, labels, weights, tables, normalizer, cfg):\n"
        "    return weights.sum(), {'other': weights.sum()}\n"
    )
    monkeypatch.chdir(tmp_path)
    cases = {
        "bad_losses:two_args": "does not take the six arguments",
        "bad_losses:vector": "non-scalar",
        "bad_losses:no_loss_term": "no 'loss' entry",
        "bad_losses:missing": "has no function 'missing'",
        "nowhere_module:fn": "cannot import 'nowhere_module'",
        "not-a-spec": "MODULE:FUNCTION",
    }
    for spec, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            make_task(_config(tmp_path, f"loss.fn={spec}"))


def test_plugin_fields_only_with_a_plugin_and_not_near_misses(tmp_path):
    config = _config(tmp_path, "loss.fn=examples.focal:loss", "loss.gamma=3")
    assert config.loss.gamma == 3
    with pytest.raises(ConfigError, match="unknown config key 'loss.gamma'"):
        _config(tmp_path, "loss.gamma=3")  # the built-in loss has no gamma
    with pytest.raises(ConfigError, match="did you mean loss.lam"):
        _config(tmp_path, "loss.fn=examples.focal:loss", "loss.lamb=3")
    assert resolve_loss_fn("cmhl", BUILTIN_LOSSES) is cmhl


@pytest.mark.slow  # a tiny training run
def test_plugin_trains_in_the_jitted_step_and_its_terms_are_logged(tmp_path_factory, tmp_path):
    from cmhl_jax.loop import train_and_evaluate

    base = tmp_path_factory.getbasetemp()
    config = helpers.tiny_config(base, ["loss.fn=examples.focal:loss", "max_steps=2"])
    with config.unlocked():
        config.loss.gamma = 1.5
    train_and_evaluate(config, tmp_path / "run")
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "loss" in r]
    assert train and all("focal_exclusivity" in r and "focal_ce_emotion" in r for r in train)
    assert np.isfinite(train[-1]["loss"])
