"""Defaults every config starts from: the generic blocks (model, data, optim, parallel,
checkpoint, eval, log), and the blocks of the task (`cmhl_jax.tasks.<task>.default_config_blocks`:
the emotion task's `affect` and `loss`, GoEmotions' `goemotions` and `loss`, ...).

`get_config()` is the emotion task (CMHL_SPEC section 1); `get_config(task)` any task. Every
value the spec marks "chosen" is a field. Override any field on the command line:
    python train.py --config configs/emotion_minilm.py --workdir runs/x --config.loss.lam=0
"""

import ml_collections

from cmhl_jax.metrics import ECE_BINS
from cmhl_jax.tasks import default_config_blocks


def get_config(task: str = "emotion") -> ml_collections.ConfigDict:
    """The generic defaults with task `task`'s blocks (a block the generic defaults also have,
    e.g. `eval`, gets the task's fields added)."""
    config = generic_config()
    config.task = task
    for name, block in default_config_blocks(task).items():
        if name in config:
            config[name].update(block)
        else:
            config[name] = block
    return config


def generic_config() -> ml_collections.ConfigDict:
    """The blocks every task reads."""
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.model = ml_collections.ConfigDict()
    config.model.encoder = "roberta-base"  # local dir, Hub id, or "minilm" (embedded)
    config.model.dtype = "float32"  # compute dtype: float32 or bfloat16 (params stay float32)
    # The encoder's matmul operands: float32, or bfloat16 with float32 accumulation and results
    # (fast on CPUs with AVX512_BF16 / AMX and on accelerators; needs model.dtype=float32).
    config.model.matmul_dtype = "float32"
    config.model.head_dropout = 0.1  # dropout on the first-token state h (chosen)
    # None keeps the encoder checkpoint's own dropout rates.
    config.model.hidden_dropout_prob = ml_collections.config_dict.placeholder(float)
    config.model.attention_probs_dropout_prob = ml_collections.config_dict.placeholder(float)

    config.data = ml_collections.ConfigDict()
    # Local files `<local_dir>/<split>.txt|.csv`; empty: the Hugging Face dataset below.
    # The environment variable CMHL_DATA_DIR is used when this is empty.
    config.data.local_dir = ""
    config.data.hf_dataset = "dair-ai/emotion"
    config.data.tfds_dataset = ""  # a TFDS name: read splits as tfds:NAME:SPLIT instead of hf
    config.data.train_split = "train"
    config.data.val_split = "validation"  # HF name; local files use "val" (see data.py)
    config.data.max_length = 128
    config.data.buckets = (16, 32, 64, 128)
    config.data.truncation = "head"  # or "head_tail"
    config.data.pack = False
    config.data.pack_len = 128
    config.data.max_texts_per_row = 8
    config.data.skip_bad_lines = False
    config.data.cache_dir = ""  # tokenised-data cache; empty: <workdir>/cache

    config.optim = ml_collections.ConfigDict()
    config.optim.lr = 2e-5
    config.optim.weight_decay = 0.01
    config.optim.warmup_frac = 0.1
    config.optim.b1 = 0.9
    config.optim.b2 = 0.999
    config.optim.eps = 1e-8
    config.optim.grad_clip = 0.0  # 0 disables
    config.optim.accum_steps = 2

    config.batch_size = 16  # global rows per micro-step (texts, or packed rows)
    config.eval_batch_size = 64
    config.num_epochs = 5
    config.skip_nonfinite = False  # True: skip and count NaN/inf steps instead of stopping
    config.max_steps = -1  # > 0 caps the run at this many micro-steps (smoke tests)

    config.parallel = ml_collections.ConfigDict()
    config.parallel.mode = "pmap"  # pmap (design), mesh (jit + NamedSharding), single
    config.parallel.distributed = False  # call jax.distributed.initialize
    config.parallel.coordinator_address = ""
    config.parallel.num_processes = 1
    config.parallel.process_id = 0
    config.parallel.cpu_collectives = "gloo"  # multi-process CPU runs (tests, no GPU)
    # Multi-process runs: a process silent this long (killed, lost host) counts as lost; the
    # others then exit (code 75) keeping the last checkpoint. <= 0: jax's defaults (100 s
    # heartbeat, 300 s shutdown). See cmhl_jax/cluster.py.
    config.parallel.failure_timeout_s = 60.0

    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.keep_best = 2
    config.checkpoint.metric = "macro_f1"  # validation metric that selects "best"
    config.checkpoint.every_steps = 0  # extra "latest" saves inside an epoch; 0: epoch ends

    config.eval = ml_collections.ConfigDict()
    config.eval.ece_bins = ECE_BINS

    config.log_every = 50
    config.log = ml_collections.ConfigDict()
    config.log.tensorboard = False  # also write TensorBoard events to <workdir>/tensorboard
    return config
