"""Workdir paths: local folders or URLs (`gs://bucket/run`, any filesystem `etils.epath` and
Orbax support). Everything written under a workdir (checkpoints, config.json, metrics,
summary, exports) goes through `epath.Path`; what needs a local disk (the free-space check,
the workdir lock, the token cache) is done for local paths only."""

from __future__ import annotations

import os

from etils import epath


def is_local(path: str | os.PathLike) -> bool:
    """True for a local path (no `scheme://` prefix)."""
    return "://" not in os.fspath(path) if not isinstance(path, str) else "://" not in path


def workdir_path(path: str | os.PathLike) -> epath.Path:
    """`path` as an `epath.Path`; a local one made absolute (Orbax wants absolute paths)."""
    text = path if isinstance(path, str) else os.fspath(path)
    return epath.Path(os.path.abspath(os.path.expanduser(text)) if is_local(text) else text)
