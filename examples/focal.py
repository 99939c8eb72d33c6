"""A plug-in loss: CMHL with a focal emotion loss (Lin et al., 2017) and a focal exclusivity term.

    python train.py --config configs/emotion_minilm.py --workdir runs/focal \
        --config.loss.fn=examples.focal:loss --config.loss.gamma=2

The signature every loss function has (see `cmhl_jax.tasks.emotion.loss.cmhl`):

    loss_fn(logits, labels, weights, tables, normalizer, cfg) -> (total, terms)

Here the emotion cross-entropy of a text is scaled by (1 - p_true)^gamma, so confidently
right texts count less, and each active exclusivity hinge by (p_i + p_j)^gamma, so the
penalty concentrates on pairs where both emotions are likely. `gamma = 0` gives back the
built-in sum-form CMHL loss. `cfg.gamma` is read with a default, so the plug-in also runs
without `--config.loss.gamma`.
"""

import jax
import jax.numpy as jnp

from cmhl_jax.losses import weighted_cross_entropy
from cmhl_jax.tasks.emotion.loss import balance_loss


def focal_cross_entropy(logits, labels, weights, normalizer, gamma):
    """Mean over real texts of -(1 - p_t)^gamma log p_t."""
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    log_pt = jnp.take_along_axis(log_p, labels[:, None], axis=-1)[:, 0]
    focal = -((1.0 - jnp.exp(log_pt)) ** gamma) * log_pt
    return jnp.sum(focal * weights) / normalizer


def focal_exclusivity(probs, pair_mask, tau, weights, normalizer, gamma):
    """Mean over texts and (positive, negative) pairs of
    (p_i + p_j)^gamma * max(0, p_i + p_j - tau_ij)."""
    pair_sum = probs[:, :, None] + probs[:, None, :]
    hinge = jax.nn.relu(pair_sum - tau) * pair_sum**gamma * pair_mask
    per_text = hinge.sum(axis=(-2, -1)) / pair_mask.sum()
    return jnp.sum(per_text * weights) / normalizer


def loss(logits, labels, weights, tables, normalizer, cfg):
    gamma = float(cfg.get("gamma", 2.0))
    ce_emotion = focal_cross_entropy(logits["emotion"], labels, weights, normalizer, gamma)
    ce_valence = weighted_cross_entropy(
        logits["valence"], tables["valence_label"][labels], weights, normalizer
    )
    ce_intensity = weighted_cross_entropy(
        logits["intensity"], tables["intensity_label"][labels], weights, normalizer
    )
    probs = jax.nn.softmax(logits["emotion"].astype(jnp.float32), axis=-1)
    excl = focal_exclusivity(probs, tables["pair_mask"], tables["tau"], weights, normalizer, gamma)
    total = balance_loss(ce_emotion, ce_valence, ce_intensity, cfg.alpha, cfg.beta) + cfg.lam * excl
    terms = {
        "loss": total,
        "focal_ce_emotion": ce_emotion,
        "ce_valence": ce_valence,
        "ce_intensity": ce_intensity,
        "focal_exclusivity": excl,
    }
    return total, terms


__all__ = ["focal_cross_entropy", "focal_exclusivity", "loss"]
