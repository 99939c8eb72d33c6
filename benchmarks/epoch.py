"""One training epoch of dair-ai/emotion with MiniLM: cmhl_jax pipeline vs a PyTorch loop.

    python benchmarks/epoch.py --json benchmarks/results/epoch_minilm.json [--limit 2000]

* JAX: `cmhl_jax.data.EpochPlan` (length buckets; packing as in configs/emotion_minilm.py:
  texts of <= pack_len tokens packed into rows of pack_len, block-diagonal attention) and the
  project's jitted train step with state donation. With packing, a batch has
  round(batch_texts / mean texts per row) rows, so both loops see the same number of texts per
  update on average; without packing, a batch has batch_texts rows.
* PyTorch: `benchmarks/torch_cmhl.py`, shuffled texts, batches of batch_texts texts padded to
  the longest text of each batch (`transformers.DataCollatorWithPadding`), AdamW.
Both: the same token ids (tokenised once, untimed), lr schedule (linear warmup 10%, then linear
decay over the epoch), lr and weight decay of configs/emotion_minilm.py, dropout on, fp32.

The two loops run interleaved, one update each in turn, so load changes on the machine hit
both alike; each framework's epoch time is the sum of its own update times (the JAX one
includes its compilations). Afterwards both predict val.txt and report accuracy, macro-F1 and
weighted-F1.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import common
import numpy as np

from cmhl_jax.runtime import ensure_fast_runtime

DATA = Path(os.environ.get("CMHL_DATA_DIR", common.ROOT.parent / "shared" / "data" / "emotion"))


def jax_loop(args, config, train_ids, train_labels, pad_id, stats):
    """Generator: one update per `next()`; fills `stats`; finally yields the predict fn."""
    import jax

    from cmhl_jax import data as data_lib

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
    shapes = set()
    texts = 0
    for batch in plan.batches(pad_id=pad_id):
        shapes.add(batch["input_ids"].shape)
        texts += int(batch["text_mask"].sum())
        state, metrics = step(
            state, jax.device_put({k: v for k, v in batch.items() if k != "example_index"})
        )
        jax.block_until_ready(metrics)
        stats["last_loss"] = float(metrics["loss"])
        yield
    stats.update(updates=n_batches, texts=texts, compiled_shapes=sorted(shapes))
    stats["_predict"] = (predict, state.params)


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


def torch_loop(args, config, path, tokenizer, train_ids, train_labels, stats):
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
    order = np.random.default_rng([config.seed, 0]).permutation(len(train_ids))
    batches = [order[i : i + args.batch] for i in range(0, len(order), args.batch)]
    total = len(batches)
    warmup = max(1, round(config.optim.warmup_frac * total))

    def lr_at(step):
        if step < warmup:
            return step / warmup
        return max(0.0, (total - step) / max(total - warmup, 1))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    step_fn = torch_cmhl.make_train_step(model, optimizer, tables)
    padded = 0
    for members in batches:
        features = [{"input_ids": train_ids[i].tolist()} for i in members]
        batch = collate(features)
        padded += batch["input_ids"].numel()
        labels = torch.as_tensor(train_labels[members], dtype=torch.long)
        loss = step_fn(batch["input_ids"], batch["attention_mask"], labels)
        scheduler.step()
        stats["last_loss"] = float(loss)
        yield
    stats.update(updates=total, texts=len(order), computed_tokens=padded)
    stats["_predict"] = (model, collate)


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


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch", type=int, default=32, help="texts per update")
    p.add_argument("--limit", type=int, default=0, help="use the first N training texts")
    p.add_argument("--val-limit", type=int, default=0)
    p.add_argument("--no-pack", action="store_true", help="JAX: buckets only")
    p.add_argument("--frameworks", default="jax,torch")
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    ensure_fast_runtime()

    import torch

    from cmhl_jax import data as data_lib
    from cmhl_jax.affect import EMOTIONS
    from cmhl_jax.metrics import classification_scores

    torch.set_num_threads(os.cpu_count() or 1)
    config = common.preset("emotion_minilm")
    config.optim.accum_steps = 1
    config.data.pack = not args.no_pack
    path = common.model_dir("minilm")
    config.model.encoder = str(path)
    from cmhl_jax.encoder.hub import load_tokenizer

    tokenizer = load_tokenizer(path)
    train = data_lib.read_examples(DATA / "train.txt", EMOTIONS)
    val = data_lib.read_examples(DATA / "val.txt", EMOTIONS)
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
    tokenize_s = time.perf_counter() - t
    pad_id = int(tokenizer.pad_token_id)
    lengths = np.array([len(x) for x in train_ids])

    packing = None
    if config.data.pack:
        packing = data_lib.packing_stats(
            train_ids, options=data_lib.BatchOptions.from_config(config.data), seed=config.seed
        )
        config.batch_size = max(1, round(args.batch / packing.texts_per_row))
    else:
        config.batch_size = args.batch

    names = [n for n in args.frameworks.split(",") if n]
    stats = {n: {} for n in names}
    loops = {}
    if "jax" in names:
        loops["jax"] = jax_loop(args, config, train_ids, train.labels, pad_id, stats["jax"])
    if "torch" in names:
        loops["torch"] = torch_loop(
            args, config, path, tokenizer, train_ids, train.labels, stats["torch"]
        )
    elapsed = {n: 0.0 for n in names}
    active = list(loops)
    while active:
        for n in list(active):
            t = time.perf_counter()
            try:
                next(loops[n])
            except StopIteration:
                active.remove(n)
            elapsed[n] += time.perf_counter() - t

    result = {
        "meta": {
            **common.machine_info(),
            "command": " ".join(["python", *sys.argv]),
            "train_texts": len(train_ids),
            "val_texts": len(val_ids),
            "batch_texts": args.batch,
            "mean_tokens": float(lengths.mean()),
            "max_tokens": int(lengths.max()),
            "tokenize_s": tokenize_s,
            "lr": config.optim.lr,
            "loadavg_1m_at_end": os.getloadavg()[0],
        }
    }
    for n in names:
        s = stats[n]
        t = time.perf_counter()
        if n == "jax":
            preds = jax_predict(config, s.pop("_predict"), val_ids, val.labels, pad_id)
        else:
            preds = torch_predict(s.pop("_predict"), val_ids, config.eval_batch_size)
        predict_s = time.perf_counter() - t
        scores = classification_scores(val.labels, preds, EMOTIONS)
        result[n] = {
            **s,
            "epoch_s": elapsed[n],
            "samples_per_s": len(train_ids) / elapsed[n],
            "val_predict_s": predict_s,
            "val_accuracy": scores["accuracy"],
            "val_macro_f1": scores["macro_f1"],
            "val_weighted_f1": scores["weighted_f1"],
        }
    if "jax" in result:
        r = result["jax"]
        r["rows_per_batch"] = config.batch_size
        r["pack"] = bool(config.data.pack)
        r["pack_len"] = config.data.pack_len
        if packing is not None:
            r["packing_fill_ratio"] = packing.fill_ratio
            r["texts_per_row"] = packing.texts_per_row
    if "jax" in result and "torch" in result:
        result["ratios"] = {
            "epoch_time_jax_over_torch": result["jax"]["epoch_s"] / result["torch"]["epoch_s"],
            "macro_f1_jax_minus_torch": result["jax"]["val_macro_f1"]
            - result["torch"]["val_macro_f1"],
            "weighted_f1_jax_minus_torch": result["jax"]["val_weighted_f1"]
            - result["torch"]["val_weighted_f1"],
        }
    common.emit_json(result, args.json)


if __name__ == "__main__":
    main()
