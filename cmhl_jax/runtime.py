"""The fast CPU runtime, applied automatically by the command-line entry points.

XLA:CPU allocates fresh buffers on every call; with glibc malloc the memory goes back to the
OS and is faulted in again each step (see README, Performance). `ensure_fast_runtime()`:

* preloads jemalloc (Debian/Ubuntu package `libjemalloc2`) with memory return disabled, by
  re-executing the current command once with LD_PRELOAD set; without a system jemalloc it
  preloads mimalloc from the PyPI wheel `cmeel-mimalloc` (a dependency on Linux), freed pages
  kept (MIMALLOC_PURGE_DELAY=1000000 ms);
* asks XLA:CPU for 512-bit vectors in elementwise code on AVX-512 CPUs;
* runs CPU computations synchronously (``jax_cpu_enable_async_dispatch=False``). With async
  dispatch a step could start before the previous step's temporaries were freed, so peak
  memory was sometimes one step's temporaries higher from run to run; synchronous it is the
  same every time, for a small share of step time (docs/benchmarks.md);
* turns on jax's persistent compilation cache (`enable_compilation_cache`), so that a
  second run of the same model and batch shapes loads its executables instead of compiling
  them again (compiles of at least jax's threshold, 1 s by default).

`release_free_memory()` returns the pages the allocator keeps, after a compilation or a save.

Every command calls `ensure_fast_runtime()` first thing in its `main()`. Importing jax before
that is fine: the re-execution replaces the process, and the XLA flags and the dispatch mode
are read when the CPU backend starts (the first computation), not at import. Set
CMHL_FAST_RUNTIME=0 to skip it.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import sys
from pathlib import Path

JEMALLOC_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
    "/usr/lib64/libjemalloc.so.2",
    "/usr/lib/libjemalloc.so.2",
    "/opt/homebrew/lib/libjemalloc.2.dylib",
)
MALLCTL_ARENAS_ALL = 4096  # jemalloc: "all arenas" in arena.<i>.* names
MALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
# mimalloc: keep freed pages for 1000 s (a delay of -1 would also make release_free_memory's
# forced collection a no-op)
MIMALLOC_ENV = {"MIMALLOC_PURGE_DELAY": "1000000"}
REEXECUTED = "CMHL_FAST_RUNTIME_REEXECUTED"  # set in the re-executed process


@functools.cache
def cpu_fields() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ("cpu family", "model", "flags", ...);
    empty where there is no /proc/cpuinfo."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip():
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def xla_cpu_flags() -> tuple[str, ...]:
    """The XLA flags for this CPU: elementwise code in 512-bit vectors where the CPU has
    AVX-512 (XLA's default is 256)."""
    if "avx512f" in cpu_fields().get("flags", "").split():
        return ("--xla_cpu_prefer_vector_width=512",)
    return ()


def find_jemalloc() -> str | None:
    for candidate in JEMALLOC_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    return None


def find_mimalloc() -> str | None:
    """libmimalloc.so of the `cmeel-mimalloc` wheel (installed under <site-packages>/
    cmeel.prefix/lib), if installed."""
    for base in sys.path:
        candidate = Path(base or ".") / "cmeel.prefix" / "lib" / "libmimalloc.so"
        if base and candidate.exists():
            return str(candidate)
    return None


def fast_runtime_env(env: dict[str, str]) -> dict[str, str]:
    """The environment with the fast-runtime settings added (unchanged if already there)."""
    env = dict(env)
    flags = env.get("XLA_FLAGS", "")
    for flag in xla_cpu_flags():
        if flag.split("=")[0] not in flags:
            flags = f"{flags} {flag}".strip()
    env["XLA_FLAGS"] = flags
    preload = env.get("LD_PRELOAD", "")
    if "jemalloc" in preload or "mimalloc" in preload:
        return env
    jemalloc = find_jemalloc()
    if jemalloc:
        env["LD_PRELOAD"] = f"{jemalloc} {preload}".strip()
        env.setdefault("MALLOC_CONF", MALLOC_CONF)
    elif mimalloc := find_mimalloc():
        env["LD_PRELOAD"] = f"{mimalloc} {preload}".strip()
        for key, value in MIMALLOC_ENV.items():
            env.setdefault(key, value)
    return env


def _jax_started() -> bool:
    """Whether jax has created its backends (after which XLA flags no longer apply)."""
    if "jax" not in sys.modules:
        return False
    from jax._src import xla_bridge

    return xla_bridge.backends_are_initialized()


def ensure_fast_runtime(*, configure_jax: bool = True) -> None:
    """Re-executes this process once with jemalloc preloaded (when installed), sets the XLA
    flags and (``configure_jax``, which imports jax) synchronous CPU dispatch. Call it first
    thing in a command's main(); it does nothing once jax has computed (e.g. a command's
    main() called in-process by a test)."""
    if os.environ.get("CMHL_FAST_RUNTIME", "1") == "0" or _jax_started():
        return
    env = fast_runtime_env(os.environ)
    if (
        env.get("LD_PRELOAD") != os.environ.get("LD_PRELOAD")
        and sys.argv
        and sys.argv[0]
        and REEXECUTED not in os.environ
    ):
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env | {REEXECUTED: "1"})
    os.environ.update(env)
    if configure_jax:
        import jax

        jax.config.update("jax_cpu_enable_async_dispatch", False)
        enable_compilation_cache()


def compilation_cache_dir() -> Path | None:
    """Where compiled programs are kept: ``$CMHL_COMPILATION_CACHE`` ("0" or "off": nowhere),
    else ``$XDG_CACHE_HOME/cmhl_jax/xla/<cpu>`` (``~/.cache`` without XDG_CACHE_HOME).

    ``<cpu>`` names the CPU model and a digest of its feature flags: an executable compiled
    for one instruction set must not be loaded on a machine without it (a home directory
    shared by different machines).
    """
    chosen = os.environ.get("CMHL_COMPILATION_CACHE", "")
    if chosen.lower() in ("0", "off", "false", "no"):
        return None
    if chosen:
        return Path(chosen).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "cmhl_jax" / "xla" / _cpu_slug()


def _cpu_slug() -> str:
    """e.g. "x86_64-6-207-1a2b3c4d": machine, CPU family and model, digest of the flags."""
    fields = cpu_fields()
    digest = hashlib.sha256(fields.get("flags", platform.processor()).encode()).hexdigest()[:8]
    parts = (platform.machine(), fields.get("cpu family"), fields.get("model"), digest)
    return "-".join(p for p in parts if p)


def enable_compilation_cache() -> None:
    """Points jax's persistent compilation cache at `compilation_cache_dir()`, unless the
    user set jax's own ``JAX_COMPILATION_CACHE_DIR`` (kept as it is)."""
    import jax

    path = compilation_cache_dir()
    if path is not None and not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        jax.config.update("jax_compilation_cache_dir", str(path))


def jemalloc_active() -> bool:
    return "jemalloc" in os.environ.get("LD_PRELOAD", "")


def mimalloc_active() -> bool:
    return "mimalloc" in os.environ.get("LD_PRELOAD", "")


def release_free_memory() -> bool:
    """Hands the pages the allocator holds unused back to the OS: jemalloc's arenas purged,
    mimalloc collected, or glibc's `malloc_trim`. False when none of them is there (macOS).

    The fast runtime keeps freed memory for reuse (no decay), which also keeps the XLA
    compiler's working memory after a compilation, and each checkpoint save's host copy of
    the train state: a 110M model's training grew by about 1.3 GB a save, to 24 GB. glibc
    keeps them too, fragmented, once its dynamic mmap threshold has grown past their size.
    Called after each compilation and each save.
    """
    if mimalloc_active() and not jemalloc_active():
        collect = getattr(ctypes.CDLL(None), "mi_collect", None)
        if collect is None:
            return False
        collect(ctypes.c_bool(True))
        return True
    if jemalloc_active():
        mallctl = getattr(ctypes.CDLL(None), "mallctl", None)
        if mallctl is None:
            return False
        return mallctl(f"arena.{MALLCTL_ARENAS_ALL}.purge".encode(), None, None, None, 0) == 0
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc
    if trim is None:
        return False
    trim(0)
    return True
