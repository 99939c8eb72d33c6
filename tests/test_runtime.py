"""The fast CPU runtime: jemalloc re-exec, XLA flags, returning freed memory after compiling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cmhl_jax import runtime

ROOT = Path(__file__).resolve().parents[1]
needs_jemalloc = pytest.mark.skipif(
    runtime.find_jemalloc() is None, reason="libjemalloc2 not installed"
)


def _run(code: str, tmp_path: Path, **env) -> dict:
    """Runs `code` in a fresh interpreter (cwd = repo root); its last stdout line is JSON."""
    environ = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF")}
    environ.pop("CMHL_FAST_RUNTIME", None)
    environ.pop(runtime.REEXECUTED, None)
    environ["CMHL_COMPILATION_CACHE"] = str(tmp_path / "xla_cache")  # not the user's cache
    environ.update(env)
    script = tmp_path / "probe.py"
    script.write_text(textwrap.dedent(code))
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=environ, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_fast_runtime_env_adds_flags_once(monkeypatch):
    monkeypatch.setattr(runtime, "find_jemalloc", lambda: "/lib/libjemalloc.so.2")
    monkeypatch.setattr(runtime, "xla_cpu_flags", lambda: ("--xla_bar=2",))
    env = runtime.fast_runtime_env({"XLA_FLAGS": "--xla_foo=1"})
    assert env["XLA_FLAGS"] == "--xla_foo=1 --xla_bar=2"
    assert env["LD_PRELOAD"] == "/lib/libjemalloc.so.2"
    assert env["MALLOC_CONF"] == runtime.MALLOC_CONF
    assert runtime.fast_runtime_env(env) == env


def test_importing_does_no_work():
    """Importing the package and the runtime reads no /proc/cpuinfo and installs no logging
    filter (the commands do that when they start: `ensure_fast_runtime`, `cli.setup_logging`)."""
    code = """
    import json, logging
    import cmhl_jax.runtime
    print(json.dumps({
        "cpuinfo_reads": cmhl_jax.runtime.cpu_fields.cache_info().misses,
        "filters": len(logging.getLogger("transformers").filters),
    }))
    """
    script = textwrap.dedent(code)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout) == {"cpuinfo_reads": 0, "filters": 0}


def test_fast_runtime_env_falls_back_to_pip_mimalloc(monkeypatch, tmp_path):
    lib = tmp_path / "cmeel.prefix" / "lib" / "libmimalloc.so"
    lib.parent.mkdir(parents=True)
    lib.write_bytes(b"")
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    assert runtime.find_mimalloc() == str(lib)
    monkeypatch.setattr(runtime, "find_jemalloc", lambda: None)
    env = runtime.fast_runtime_env({})
    assert env["LD_PRELOAD"] == str(lib) and "MALLOC_CONF" not in env
    assert env["MIMALLOC_PURGE_DELAY"] == runtime.MIMALLOC_ENV["MIMALLOC_PURGE_DELAY"]
    assert runtime.fast_runtime_env(env) == env
    monkeypatch.setattr(runtime, "find_jemalloc", lambda: "/lib/libjemalloc.so.2")
    assert runtime.fast_runtime_env({})["LD_PRELOAD"] == "/lib/libjemalloc.so.2"  # jemalloc first


PROBE = """
import json, sys
sys.path.insert(0, "")
from cmhl_jax.runtime import ensure_fast_runtime, jemalloc_active, release_free_memory
ensure_fast_runtime()
import jax
import numpy as np

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024

blocks = [np.ones(2**20) for _ in range(40)]  # 40 x 8 MB through malloc
del blocks
before = rss_mb()
released = release_free_memory()
print(json.dumps({"active": jemalloc_active(), "released": released,
                  "async_dispatch": jax.config.values["jax_cpu_enable_async_dispatch"],
                  "before": before, "after": rss_mb()}))
"""


@pytest.mark.slow
@needs_jemalloc
def test_jemalloc_keeps_freed_memory_until_released(tmp_path):
    out = _run(PROBE, tmp_path)
    assert out["active"] and out["released"] and not out["async_dispatch"]
    assert out["before"] - out["after"] > 200, out  # ~320 MB freed but kept, then returned


@pytest.mark.slow
def test_pip_mimalloc_keeps_freed_memory_until_released(tmp_path):
    lib = runtime.find_mimalloc()
    if lib is None:
        pytest.skip("cmeel-mimalloc not installed")
    code = PROBE.replace("jemalloc_active", "mimalloc_active")
    out = _run(code, tmp_path, LD_PRELOAD=lib, **runtime.MIMALLOC_ENV)
    assert out["active"] and out["released"]
    assert out["before"] - out["after"] > 200, out


@pytest.mark.slow
def test_without_the_fast_runtime_release_trims_glibc(tmp_path):
    out = _run(PROBE, tmp_path, CMHL_FAST_RUNTIME="0")
    assert not out["active"] and out["async_dispatch"]
    assert out["released"] == (sys.platform == "linux")  # glibc's malloc_trim; none on macOS


@pytest.mark.slow
def test_runtime_without_jax_does_not_import_it(tmp_path):
    """PyTorch-only processes (the benchmarks' memory children) keep jax out of their RSS."""
    code = """
    import json, sys
    from cmhl_jax.runtime import ensure_fast_runtime, jemalloc_active
    ensure_fast_runtime(configure_jax=False)
    print(json.dumps({"jax": "jax" in sys.modules, "active": jemalloc_active()}))
    """
    out = _run(code, tmp_path)
    assert not out["jax"]
    assert out["active"] == (runtime.find_jemalloc() is not None)


CACHE_PROBE = """
import json, sys
sys.path.insert(0, "")
from cmhl_jax.runtime import ensure_fast_runtime
ensure_fast_runtime()
import jax, jax.numpy as jnp
events = []
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
jax.jit(lambda x: jnp.tanh(x @ x.T).sum())(jnp.ones((64, 64))).block_until_ready()
print(json.dumps({"dir": jax.config.values["jax_compilation_cache_dir"],
                  "hits": events.count("/jax/compilation_cache/cache_hits"),
                  "misses": events.count("/jax/compilation_cache/cache_misses")}))
"""


@pytest.mark.slow
def test_second_run_loads_its_executables_from_the_compilation_cache(tmp_path):
    cache = tmp_path / "cache"
    env = dict(CMHL_COMPILATION_CACHE=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    first = _run(CACHE_PROBE, tmp_path, **env)
    assert first["dir"] == str(cache) and first["hits"] == 0 and first["misses"] >= 1
    assert any(cache.iterdir())
    second = _run(CACHE_PROBE, tmp_path, **env)
    assert second["hits"] >= 1 and second["misses"] == 0
    off = _run(CACHE_PROBE, tmp_path, CMHL_COMPILATION_CACHE="off")
    assert off["dir"] is None and off["hits"] == 0


def test_default_compilation_cache_is_per_cpu_under_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("CMHL_COMPILATION_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = runtime.compilation_cache_dir()
    assert path.parent == tmp_path / "cmhl_jax" / "xla"
    assert path.name == runtime._cpu_slug() and path.name.count("-") >= 1
    monkeypatch.setenv("CMHL_COMPILATION_CACHE", "0")
    assert runtime.compilation_cache_dir() is None
