"""Workdirs through `etils.epath`: a local path given as an `epath.Path` trains, resumes and
evaluates; URLs (`gs://...`) are passed through untouched; no pathlib-only call is left on a
workdir's path in the modules that write under it."""

from __future__ import annotations

import re

import pytest
import research_helpers as helpers
from etils import epath

from cmhl_jax.paths import is_local, workdir_path

WRITERS = ("loop.py", "checkpoint.py", "metrics_log.py", "evaluate.py", "export/__init__.py")
# pathlib-only calls that would break a gs:// workdir (a local-only call must be guarded).
PATHLIB_ONLY = re.compile(
    r"(?<!epath\.)Path\((workdir|out_dir|manager\.directory)|\.resolve\(\)|shutil\.rmtree"
    r"|os\.replace"
)


def test_urls_stay_urls_and_local_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert str(workdir_path("gs://bucket/run")) == "gs://bucket/run"
    assert not is_local("gs://bucket/run") and not is_local(epath.Path("gs://bucket/run"))
    assert workdir_path("runs/a") == epath.Path(tmp_path / "runs" / "a")
    assert isinstance(workdir_path(tmp_path), epath.Path) and is_local(tmp_path)


def test_no_pathlib_only_call_on_workdirs():
    for name in WRITERS:
        source = (helpers.ROOT / "cmhl_jax" / name).read_text()
        assert not PATHLIB_ONLY.findall(source), name
    loop = (helpers.ROOT / "cmhl_jax" / "loop.py").read_text()
    # the free-space check is for local paths only
    assert "if not is_local(workdir):" in loop.split("shutil.disk_usage")[0]


@pytest.mark.slow  # a tiny training run
def test_epath_workdir_trains_and_evaluates(tmp_path):
    from cmhl_jax.evaluate import load_trained
    from cmhl_jax.loop import train_and_evaluate

    workdir = epath.Path(tmp_path) / "run"
    summary = train_and_evaluate(helpers.tiny_config(tmp_path, ["max_steps=2"]), workdir)
    assert summary["step"] == 2
    for name in ("config.json", "metrics.jsonl", "summary.json"):
        assert (workdir / name).is_file()
    assert load_trained(workdir, "latest").step == 2
