"""The paper's mental-health setting (CMHL_SPEC section 2): roberta-base on SWMH.

SWMH (Ji et al. 2021) is distributed by its authors on request, not on the Hugging Face Hub:
put its `train.csv` and `val.csv` (`text,label`, labels `self.<subreddit>`) in a directory and
pass it as --config.data.local_dir (or CMHL_DATA_DIR). ../shared/data/reddit_mh is an
SWMH-shaped public substitute with the same five subreddits (scores not comparable).
"""

import ml_collections

from configs import default


def get_config():
    config = default.get_config("mental_health")

    config.model.encoder = "roberta-base"
    config.model.head_dropout = 0.15  # paper: dropout 0.15
    config.model.hidden_dropout_prob = 0.15
    config.model.attention_probs_dropout_prob = 0.15

    config.data.local_dir = ""
    config.data.hf_dataset = "SWMH"  # placeholder: SWMH is on request only (see above)
    config.data.train_split = "train"
    config.data.val_split = "val"
    config.data.max_length = 256  # paper
    config.data.buckets = (64, 128, 256)
    config.data.truncation = "head"  # "head_tail" keeps the end of long posts too
    config.data.pack = False
    config.data.pack_len = 256

    config.optim.lr = 2e-5  # chosen
    config.optim.warmup_steps = 400  # paper; replaces warmup_frac when set
    config.optim.accum_steps = 1
    config.batch_size = 12  # paper
    config.num_epochs = 10  # paper; early stopping: config.mental_health.early_stopping

    config.checkpoint.metric = "selection_score"  # paper: 0.7 F1 + 0.3 mean confidence

    # Training set only, drawn afresh each epoch (cmhl_jax.augment). Paper: p = 0.1 each.
    config.augment = ml_collections.ConfigDict(
        {"synonym_p": 0.1, "delete_p": 0.1, "allow_missing_wordnet": False}
    )
    return config
