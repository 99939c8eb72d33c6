"""GoEmotions, multi-label, on the embedded all-MiniLM-L6-v2 encoder: runs offline.

    python train.py --config configs/goemotions_minilm.py --workdir runs/goemotions \
        --config.data.local_dir=../shared/data/goemotions
    python eval.py --workdir runs/goemotions --data ../shared/data/goemotions/dev.tsv \
        --output runs/goemotions/dev.json

MiniLM takes a larger learning rate than roberta-base; packing cuts the padding work on these
short comments (several texts per row of 64 tokens).
"""

from configs import goemotions_roberta


def get_config():
    config = goemotions_roberta.get_config()
    config.model.encoder = "minilm"
    config.optim.lr = 1e-4
    config.batch_size = 16  # packed rows of 64 tokens
    config.data.pack = True
    config.data.pack_len = 64
    return config
