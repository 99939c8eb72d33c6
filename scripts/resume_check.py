"""Compares the final training state of two workdirs leaf by leaf, bit for bit.

    python scripts/resume_check.py --workdir-a runs/uninterrupted --workdir-b runs/resumed

Used to check exact resume: a run killed (even with SIGKILL) and restarted must end with the
same parameters, optimizer state, step and rng as an uninterrupted run with the same seed (on
CPU). Prints one line per differing leaf and a verdict; exits 0 when identical, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import numpy as np

from cmhl_jax.checkpoint import Checkpoints
from cmhl_jax.runtime import ensure_fast_runtime


def read_state(workdir: str | Path, which: str = "latest") -> tuple[int, dict]:
    """(step, {leaf path: numpy array}) of a workdir's checkpoint."""
    if not (Path(workdir) / "checkpoints").is_dir():
        raise FileNotFoundError(f"{workdir} has no checkpoints folder")
    step, state = Checkpoints(workdir, keep_best=1, metric="unused").read_arrays(which)
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    return step, {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in flat}


def compare(workdir_a, workdir_b, which: str = "latest") -> dict:
    """{"identical", "step_a", "step_b", "leaves", "param_leaves", "differing": [...]}."""
    step_a, a = read_state(workdir_a, which)
    step_b, b = read_state(workdir_b, which)
    differing = []
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b:
            differing.append(f"{key}: only in {'a' if key in a else 'b'}")
            continue
        x, y = a[key], b[key]
        if x.shape != y.shape or x.dtype != y.dtype:
            differing.append(f"{key}: {x.dtype}{list(x.shape)} vs {y.dtype}{list(y.shape)}")
        elif not np.array_equal(x, y):
            diff = np.abs(x.astype(np.float64) - y.astype(np.float64))
            differing.append(f"{key}: max |a-b| = {diff.max():.3e} ({int((diff > 0).sum())} elems)")
    return {
        "identical": step_a == step_b and not differing,
        "step_a": step_a,
        "step_b": step_b,
        "leaves": len(a),
        "param_leaves": sum(k.startswith("['params']") for k in a),
        "differing": differing,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir-a", required=True)
    parser.add_argument("--workdir-b", required=True)
    parser.add_argument("--checkpoint", default="latest", help="latest, best or a step number")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    ensure_fast_runtime()
    try:
        result = compare(args.workdir_a, args.workdir_b, args.checkpoint)
    except FileNotFoundError as err:
        parser.error(str(err))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for line in result["differing"]:
            print("DIFFERENT", line)
        verdict = "IDENTICAL" if result["identical"] else "DIFFERENT"
        print(
            f"{verdict}: step {result['step_a']} vs {result['step_b']}, {result['leaves']} leaves "
            f"({result['param_leaves']} parameter leaves), {len(result['differing'])} differ"
        )
    return 0 if result["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
