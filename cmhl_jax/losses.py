"""Loss pieces every task shares, and plug-in loss functions (`config.loss.fn`).

* `weighted_cross_entropy`: softmax CE as a weighted mean over texts: `weights` is 1 for a real
  text and 0 for a padding slot, and `normalizer` (the sum of weights by default) lets
  data-parallel callers divide by the global text count instead of the local one;
* the pairwise exclusivity hinge (CMHL_SPEC 1.3) of the emotion and GoEmotions tasks:
  `pair_scores`, `exclusivity_per_text`, `exclusivity_loss`;
* `resolve_loss_fn` / `check_loss_fn`: a task's built-in loss or a MODULE:FUNCTION plug-in.

Each task's own loss lives with the task (`cmhl_jax/tasks/<task>/`).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

from cmhl_jax.config import ConfigError

EXCLUSIVITY_VARIANTS = ("sum", "product", "min")
LOSS_FN_SIGNATURE = "loss_fn(logits, labels, weights, tables, normalizer, cfg) -> (total, terms)"


def weighted_cross_entropy(logits, labels, weights, normalizer) -> jax.Array:
    """Mean softmax cross-entropy over the texts with weight 1."""
    nll = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    return jnp.sum(nll * weights) / normalizer


def pair_scores(probs: jax.Array, variant: str) -> tuple[jax.Array, jax.Array]:
    """Scores of all label pairs [..., C, C] and the map from tau to the variant's scale.

    `sum` is the paper's p_i + p_j compared with tau_ij. The alternatives are matched to it at
    the point p_i = p_j = tau/2: `product` compares p_i * p_j with (tau/2)^2 and `min` compares
    min(p_i, p_j) with tau/2, so they fire only when BOTH labels are likely.
    """
    p_i, p_j = probs[..., :, None], probs[..., None, :]
    if variant == "sum":
        return p_i + p_j, lambda tau: tau
    if variant == "product":
        return p_i * p_j, lambda tau: (tau / 2) ** 2
    if variant == "min":
        return jnp.minimum(p_i, p_j), lambda tau: tau / 2
    raise ValueError(
        f"unknown exclusivity variant {variant!r}; choose one of {EXCLUSIVITY_VARIANTS}"
    )


def exclusivity_per_text(probs, pair_mask, tau, variant="sum") -> jax.Array:
    """Each text's mean over all (i in P, j in N) pairs of max(0, s(p_i, p_j) - tau_ij)
    (spec 1.3), computed for all pairs as one masked matrix: [..., K] -> [...]."""
    scores, scale_tau = pair_scores(probs.astype(jnp.float32), variant)
    hinge = jax.nn.relu(scores - scale_tau(tau)) * pair_mask
    return hinge.sum(axis=(-2, -1)) / pair_mask.sum()


def exclusivity_loss(probs, pair_mask, tau, weights, normalizer, variant="sum") -> jax.Array:
    """Adaptive exclusivity L_excl (spec 1.3): the weighted mean over texts of
    `exclusivity_per_text`."""
    per_text = exclusivity_per_text(probs, pair_mask, tau, variant)
    return jnp.sum(per_text * weights) / normalizer


def _import_plugin(spec: str, module_name: str):
    """`module_name` from sys.path (PYTHONPATH), else the file it names under the working
    directory (`a.b` -> ./a/b.py or ./a/b/__init__.py), loaded without editing sys.path."""
    try:
        return importlib.import_module(module_name)
    except ImportError as err:
        missing = getattr(err, "name", None) or ""
        if not missing or not (module_name + ".").startswith(missing + "."):
            raise LossFnError(f"loss.fn={spec!r}: cannot import {module_name!r}: {err}") from None
        not_found = err
    base = Path.cwd().joinpath(*module_name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            module_spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_name] = module
            try:
                module_spec.loader.exec_module(module)
            except Exception as err:
                del sys.modules[module_name]
                raise LossFnError(f"loss.fn={spec!r}: cannot import {path}: {err}") from None
            return module
    raise LossFnError(f"loss.fn={spec!r}: cannot import {module_name!r}: {not_found}") from None


def resolve_loss_fn(spec: str, builtins: Mapping[str, object]):
    """The loss function named by `loss.fn`: one of the task's `builtins` (`cmhl`) or
    `module:function`, with the module importable from PYTHONPATH or the working directory."""
    if spec in builtins:
        return builtins[spec]
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise LossFnError(
            f"loss.fn={spec!r}: expected a built-in ({', '.join(builtins)}) or "
            "MODULE:FUNCTION, e.g. my_losses:focal_exclusivity"
        )
    module = _import_plugin(spec, module_name)
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise LossFnError(f"loss.fn={spec!r}: {module_name} has no function {attr!r}")
    try:
        inspect.signature(fn).bind(*range(6))
    except TypeError:
        raise LossFnError(
            f"loss.fn={spec!r}: {attr}{inspect.signature(fn)} does not take the six arguments "
            f"of {LOSS_FN_SIGNATURE}"
        ) from None
    except ValueError:  # no signature (a builtin or C function): checked by tracing
        pass
    return fn


def check_loss_fn(fn, spec: str, example_args: tuple) -> None:
    """Traces `fn` once on example inputs (no compilation): it must return a scalar total
    and a dict of scalar terms with a "loss" entry."""
    try:
        *arrays, cfg = example_args
        out = jax.eval_shape(lambda *a: fn(*a, cfg), *arrays)
    except Exception as err:  # any failure inside the user's function, reported as one line
        raise LossFnError(f"loss.fn={spec!r} failed on an example batch: {err}") from None
    problem = None
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict)):
        problem = f"returned {jax.tree_util.tree_structure(out)}, not (total, terms)"
    elif out[0].shape != () or any(v.shape != () for v in out[1].values()):
        shapes = {"total": out[0].shape, **{k: v.shape for k, v in out[1].items()}}
        problem = f"returned non-scalar values {shapes}"
    elif "loss" not in out[1]:
        problem = f"terms {sorted(out[1])} have no 'loss' entry"
    if problem:
        raise LossFnError(f"loss.fn={spec!r} {problem}; expected {LOSS_FN_SIGNATURE}")


def resolved_loss_fn(spec: str, builtins: Mapping[str, object], example_args: tuple):
    """`loss.fn` (a built-in or a plug-in), resolved and checked on `example_args`."""
    loss_fn = resolve_loss_fn(spec, builtins)
    check_loss_fn(loss_fn, spec, example_args)
    return loss_fn


class LossFnError(ConfigError):
    """`loss.fn` names no usable loss function; the message says why."""
