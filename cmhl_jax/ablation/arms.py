"""The plan of an ablation: arms (a name plus config overrides), sweeps, and the runs
(arm x seed) with their configs."""

from __future__ import annotations

import dataclasses
import itertools
import re
import runpy
from pathlib import Path

from cmhl_jax.config import ConfigError, override
from cmhl_jax.errors import UserError
from cmhl_jax.tasks import ablation_arms

# Built-in arms come from the task (`ABLATION_ARMS` of each task module); these are the
# default task's, for callers that name none.
ARMS: dict[str, tuple[str, list[str]]] = ablation_arms("emotion")
REFERENCE = "ce_only"


class AblationError(UserError, RuntimeError):
    """A run was stopped or failed, or the output dir holds runs of another config."""


@dataclasses.dataclass(frozen=True)
class Arm:
    name: str  # e.g. "cmhl_sum" or "cmhl_sum[alpha=0.25,tau0=0.4]"
    description: str
    overrides: tuple[str, ...]

    @property
    def dirname(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", self.name.replace("[", "__").rstrip("]"))


@dataclasses.dataclass(frozen=True)
class Run:
    arm: Arm
    seed: int
    workdir: Path
    record: Path  # OUT/runs/<arm>_s<seed>.json

    @property
    def name(self) -> str:
        return f"{self.arm.name} seed {self.seed}"


def split_overrides(text: str) -> list[str]:
    """`a.b=1,c.d=(16,32)` -> ["a.b=1", "c.d=(16,32)"]: commas split only before a `key=`."""
    return [part for part in re.split(r",(?=[A-Za-z_][\w.]*=)", text) if part]


def parse_arm(text: str) -> tuple[str, list[str]]:
    """`NAME=KEY=VALUE,KEY=VALUE` -> (name, overrides)."""
    name, sep, rest = text.partition("=")
    overrides = split_overrides(rest)
    if not sep or not re.fullmatch(r"[A-Za-z0-9_.+-]+", name) or not overrides:
        raise ConfigError(f"--arm {text!r} must look like NAME=KEY=VALUE,KEY=VALUE")
    if any("=" not in item for item in overrides):
        raise ConfigError(f"--arm {text!r}: every override must be KEY=VALUE")
    return name, overrides


def load_arms_file(path: str) -> dict[str, list[str]]:
    """The arms of a Python file: `get_arms()` -> {name: [overrides] or "k=v,k=v"}."""
    if not Path(path).is_file():
        raise ConfigError(f"--arms_file {path} not found")
    arms = runpy.run_path(path).get("get_arms", lambda: None)()
    if not isinstance(arms, dict):
        raise ConfigError(f"{path}: get_arms() must return {{name: [overrides]}}")
    return {n: split_overrides(v) if isinstance(v, str) else list(v) for n, v in arms.items()}


def parse_sweep(text: str) -> tuple[str, list[str]]:
    key, sep, values = text.partition("=")
    items = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not key.strip() or not items:
        raise ConfigError(f"--sweep {text!r} must look like KEY=V1,V2,... e.g. loss.alpha=0.25,0.5")
    return key.strip().removeprefix("config."), items


def build_arms(
    arm_names: list[str], sweeps: list[tuple[str, list[str]]], custom=None, builtin=None
):
    """The arms to run: each named arm (`builtin`, the task's arms, default `ARMS`, or
    `custom` {name: overrides}), times the sweep grid; the reference arm first."""
    custom, builtin = dict(custom or {}), builtin or ARMS
    known = {**builtin, **{name: ("custom: " + ",".join(o), o) for name, o in custom.items()}}
    unknown = [a for a in arm_names if a not in known]
    if unknown:
        raise ConfigError(f"unknown arm(s) {unknown}; known: {', '.join(known)}")
    arms = []
    grid = list(itertools.product(*[[(k, v) for v in values] for k, values in sweeps]))
    for name in arm_names:
        description, overrides = known[name]
        if not sweeps or name == REFERENCE:
            arms.append(Arm(name, description, tuple(overrides)))
            continue
        for point in grid:
            label = ",".join(f"{k.split('.')[-1]}={v}" for k, v in point)
            extra = tuple(f"{k}={v}" for k, v in point)
            arms.append(Arm(f"{name}[{label}]", f"{description}, {label}", (*overrides, *extra)))
    if REFERENCE not in arm_names:
        description, overrides = builtin[REFERENCE]
        arms.insert(0, Arm(REFERENCE, description, tuple(overrides)))
    return sorted(arms, key=lambda a: a.name != REFERENCE)


def arm_names(names: list[str] | None, custom: dict, sweeps: list, builtin=None) -> list[str]:
    """The arms of a command: `names` (--arms), else every built-in arm (none when custom arms
    are given; with a sweep, `cmhl_sum` where the task has it, else its last built-in arm),
    then the custom arms not named."""
    builtin = list(builtin or ARMS)
    swept = ["cmhl_sum"] if "cmhl_sum" in builtin else builtin[-1:]
    names = names or ([] if custom else swept if sweeps else builtin)
    return [*names, *(name for name in custom if name not in names)]


def run_config(base_path: str, overrides: list[str], arm: Arm, seed: int, cache: Path):
    config = override(base_path, [*overrides, *arm.overrides, f"seed={seed}"])
    if not config.data.cache_dir:
        config.data.cache_dir = str(cache)  # tokenise once for all runs
    return config


def plan_runs(
    arms: list[Arm],
    seeds: int,
    *,
    config_path: str,
    overrides: list[str],
    out: Path,
    workdirs: Path | None = None,
) -> tuple[list[Run], dict]:
    """The runs (each arm x seeds 0..seeds-1) and each run's config: workdirs in `workdirs`
    (default OUT/workdirs), records in OUT/runs, the token cache next to the workdirs."""
    workdirs = workdirs or out / "workdirs"
    runs, configs = [], {}
    for arm in arms:
        for seed in range(seeds):
            name = f"{arm.dirname}_s{seed}"
            run = Run(arm, seed, workdirs / name, out / "runs" / f"{name}.json")
            configs[run] = run_config(config_path, overrides, arm, seed, workdirs.parent / "cache")
            runs.append(run)
    return runs, configs
