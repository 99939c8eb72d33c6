"""The tiny preset: a run that takes seconds on a CPU (tests, smoke runs, benchmark smoke tests).

`ENCODER` is the Hugging Face config of the tiny random BERT the tests build (seed 0, the
MiniLM tokenizer's vocabulary); `get_config()` is the emotion config of a tiny run on it. The
encoder directory and the data directory are made by the caller:

    python train.py --config configs/tiny.py --workdir runs/tiny \
        --config.model.encoder=TINY_BERT_DIR --config.data.local_dir=DATA_DIR

Tests add only the few overrides their check needs (see tests/conftest.py).
"""

# A random BERT: hidden 32, 2 layers, 4 heads; vocabulary of bert-base-uncased / MiniLM.
ENCODER = dict(
    model_type="bert",
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    vocab_size=30522,
    type_vocab_size=2,
    pad_token_id=0,
    max_position_embeddings=128,
)


def get_config():
    from configs import default  # imported here: `ENCODER` alone needs no jax/ml_collections

    config = default.get_config()
    config.model.encoder = ""  # the caller's tiny encoder dir (ENCODER, saved with a tokenizer)
    config.data.local_dir = ""  # the caller's `train.txt` / `val.txt`
    config.data.max_length = 32
    config.data.buckets = (32,)  # one train shape: one compilation
    config.data.pack_len = 32
    config.data.max_texts_per_row = 4
    config.batch_size = 8
    config.eval_batch_size = 16
    config.num_epochs = 1
    config.max_steps = 4
    config.optim.lr = 1e-3
    config.optim.accum_steps = 1
    config.parallel.mode = "single"
    config.log_every = 1
    return config
