"""Emotion task on the embedded all-MiniLM-L6-v2 encoder: runs offline.

MiniLM is 6x smaller than roberta-base, so it takes a larger learning rate; packing cuts the
padding work on this short-text corpus (see README, Performance).
"""

from configs import default


def get_config():
    config = default.get_config()
    config.model.encoder = "minilm"
    config.optim.lr = 1e-4
    config.optim.accum_steps = 1
    config.batch_size = 16  # packed rows of 64 tokens: about 45 texts per update
    config.data.pack = True
    config.data.pack_len = 64
    return config
