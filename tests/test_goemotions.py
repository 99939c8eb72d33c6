"""The GoEmotions task: label maps, .tsv data, the multi-label CMHL loss by hand, the metrics
on hand-counted cases, records, the ablation table without CIs, and a tiny train + eval."""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_script

from cmhl_jax import data as data_lib
from cmhl_jax.metrics import multilabel_contradiction, multilabel_scores, tune_thresholds
from cmhl_jax.tasks import goemotions as ge
from cmhl_jax.tasks import make_task

ROOT = Path(__file__).resolve().parents[1]
E = {name: i for i, name in enumerate(ge.EMOTIONS)}
# A small training split: caring + grief co-occur most (r = 2 / min(4, 3)), gratitude +
# sadness less (r = 1 / min(2, 4)), joy and anger never together.
TRAIN_LABELS = (
    [["caring", "grief"]] * 2
    + [["caring"]] * 2
    + [["grief"]]
    + [["joy"]] * 3
    + [["anger"]] * 2
    + [["gratitude", "sadness"]]
    + [["sadness"]] * 3
    + [["gratitude"]]
)


def config_for(granularity="all", **loss):
    """The shipped GoEmotions config with the label co-occurrence of TRAIN_LABELS."""
    from configs import goemotions_minilm

    config = goemotions_minilm.get_config()
    config.goemotions.granularity = granularity
    counts = ge.cooccurrence_counts(multi_hot(*TRAIN_LABELS), granularity)
    config.goemotions.cooccurrence = counts.tolist()
    for key, value in loss.items():
        config.loss[key] = value
    return config


def multi_hot(*label_sets, size=28):
    out = np.zeros((len(label_sets), size), np.float32)
    for row, names in enumerate(label_sets):
        for name in names:
            out[row, E[name]] = 1.0
    return out


# --- label maps ---------------------------------------------------------------------------


def test_embedded_maps_partition_the_27_emotions():
    """The official maps (ekman_mapping.json, sentiment_dict.json) put each of the 27 emotions
    in exactly one group and leave neutral out; group sizes as in the official files."""
    emotions = set(ge.EMOTIONS) - {ge.NEUTRAL}
    assert len(ge.EMOTIONS) == 28 and ge.EMOTIONS[-1] == ge.NEUTRAL
    for mapping, sizes in (
        (ge.EKMAN_MAPPING, {"anger": 3, "disgust": 1, "fear": 2, "joy": 12, "sadness": 5,
                            "surprise": 4}),
        (ge.SENTIMENT_MAPPING, {"positive": 12, "negative": 11, "ambiguous": 4}),
    ):  # fmt: skip
        members = [e for group in mapping.values() for e in group]
        assert sorted(members) == sorted(emotions)
        assert {group: len(m) for group, m in mapping.items()} == sizes


def test_label_maps():
    ekman, sentiment = ge.label_map("ekman"), ge.label_map("sentiment")
    assert ekman.shape == (28, 7) and sentiment.shape == (28, 4)
    assert (ekman.sum(1) == 1).all() and (sentiment.sum(1) == 1).all()
    groups = ge.group_names("ekman")
    assert groups[int(ekman[E["gratitude"]].argmax())] == "joy"
    assert groups[int(ekman[E["nervousness"]].argmax())] == "fear"
    assert groups[int(ekman[E["neutral"]].argmax())] == "neutral"
    assert ge.VALENCE_NAMES[int(sentiment[E["curiosity"]].argmax())] == "ambiguous"
    # Ekman groups to sentiment: joy positive, surprise ambiguous, the other four negative.
    ekman_to_sentiment = ge.label_map("sentiment", groups).argmax(1)
    assert [ge.VALENCE_NAMES[i] for i in ekman_to_sentiment] == [
        "negative", "negative", "negative", "positive", "negative", "ambiguous", "neutral"
    ]  # fmt: skip
    assert list(ge.valence_of("ekman")) == list(ekman_to_sentiment)
    # Multi-hot rows map to the union of their groups.
    rows = multi_hot(["gratitude", "sadness", "grief"], ["neutral"])
    mapped = data_lib_free_map(rows, "ekman")
    assert [groups[i] for i in np.flatnonzero(mapped[0])] == ["joy", "sadness"]
    assert [groups[i] for i in np.flatnonzero(mapped[1])] == ["neutral"]


def data_lib_free_map(rows, granularity):
    from cmhl_jax.metrics import map_multi_hot

    return map_multi_hot(rows, ge.label_map(granularity))


def test_training_labels_are_counted_into_the_config(tmp_path):
    """`count_training_labels` reads the training split named by the config and stores texts
    per label (diagonal) and per label pair at the granularity; an existing count is kept."""
    rows = [(f"text {i}", ",".join(str(E[n]) for n in names)) for i, names in
            enumerate(TRAIN_LABELS)]  # fmt: skip
    write_tsv(tmp_path / "train.tsv", rows)
    write_tsv(tmp_path / "dev.tsv", rows[:2])
    for granularity in ("all", "ekman"):
        config = config_for(granularity)
        config.goemotions.cooccurrence = []
        config.data.local_dir = str(tmp_path)
        ge.count_training_labels(config)
        counts = np.asarray(config.goemotions.cooccurrence)
        groups = ge.group_names(granularity)
        if granularity == "all":
            assert counts.shape == (28, 28)
            assert counts[E["caring"], E["caring"]] == 4 and counts[E["grief"], E["grief"]] == 3
            assert counts[E["caring"], E["grief"]] == counts[E["grief"], E["caring"]] == 2
            assert counts[E["joy"], E["anger"]] == 0 and counts.trace() == 18
        else:  # caring, gratitude, joy -> joy; grief, sadness -> sadness; anger -> anger
            assert counts.shape == (7, 7)
            joy, sadness = groups.index("joy"), groups.index("sadness")
            assert counts[joy, joy] == 9 and counts[sadness, sadness] == 7
            assert counts[joy, sadness] == counts[sadness, joy] == 3  # 2 condolences + 1
    kept = config_for()
    before = kept.goemotions.cooccurrence
    kept.data.local_dir = str(tmp_path / "missing")  # not read: the counts are there
    ge.count_training_labels(kept)
    assert kept.goemotions.cooccurrence == before


# --- data ---------------------------------------------------------------------------------


def write_tsv(path: Path, rows) -> Path:
    path.write_text("".join(f"{text}\t{ids}\tid{i}\n" for i, (text, ids) in enumerate(rows)))
    return path


def test_tsv_reader_multi_hot_and_quoting(tmp_path):
    path = write_tsv(tmp_path / "dev.tsv", [("so happy", "17"), ('"a ""quoted"" one"', "15,25")])
    examples = data_lib.read_examples(path, ge.EMOTIONS)
    assert examples.texts == ["so happy", 'a "quoted" one']
    np.testing.assert_array_equal(examples.labels, multi_hot(["joy"], ["gratitude", "sadness"]))
    assert examples.labels.dtype == np.float32
    assert data_lib.resolve_split(tmp_path, "dev") == path
    write_tsv(tmp_path / "bad.tsv", [("fine", "1"), ("unknown id", "1,99")])
    with pytest.raises(data_lib.DataError, match="line 2: unknown label '1,99'"):
        data_lib.read_examples(tmp_path / "bad.tsv", ge.EMOTIONS)
    skipped = data_lib.read_examples(tmp_path / "bad.tsv", ge.EMOTIONS, skip_bad_lines=True)
    assert len(skipped) == 1 and skipped.skipped == 1


def test_batches_carry_multi_hot_labels():
    token_ids = [np.arange(1, n + 1, dtype=np.int32) for n in (5, 7, 3, 9, 4)]
    labels = multi_hot(["joy"], ["anger", "joy"], ["neutral"], ["grief"], ["love", "fear"])
    options = data_lib.BatchOptions(buckets=(16,), pack=True, pack_len=16, max_texts_per_row=2)
    plan = data_lib.EpochPlan.build(
        token_ids, labels, options=options, batch_size=4, seed=0, epoch=0
    )
    seen = 0
    for batch in plan.batches(pad_id=0):
        assert batch["labels"].shape == (4, 2, 28) and batch["labels"].dtype == np.float32
        index, mask = batch["example_index"], batch["text_mask"]
        np.testing.assert_array_equal(batch["labels"][index >= 0], labels[index[index >= 0]])
        assert not batch["labels"][mask == 0].any()  # empty slots are all zero
        seen += int(mask.sum())
    assert seen == 5
    # Single-label data keeps int32 [B, R].
    plan = data_lib.EpochPlan.build(
        token_ids, np.arange(5), options=options, batch_size=4, seed=0, epoch=0
    )
    batch = next(plan.batches(pad_id=0))
    assert batch["labels"].shape == (4, 2) and batch["labels"].dtype == np.int32


# --- loss ---------------------------------------------------------------------------------


def _bce(logit, target):
    return max(logit, 0) - logit * target + np.log1p(np.exp(-abs(logit)))


# tau of TRAIN_LABELS' pairs by hand (tau0 0.6, gain 0.5): r(caring, grief) = 2/3 is the top
# rate, r(gratitude, sadness) = 1/2; pairs never seen together keep tau0.
TAU = {("caring", "grief"): 0.6 + 0.5, ("gratitude", "sadness"): 0.6 + 0.5 * (1 / 2) / (2 / 3)}


def _tau(a, b):
    return TAU.get((a, b), 0.6)


def test_tau_is_raised_for_pairs_that_co_occur():
    tau = np.asarray(ge.loss_arrays(config_for().goemotions)["tau"])
    for (a, b), value in TAU.items():
        assert tau[E[a], E[b]] == pytest.approx(value)
    assert tau[E["joy"], E["anger"]] == pytest.approx(0.6)  # never together in train
    flat = config_for().goemotions
    flat.cooccurrence = []  # not counted: every pair at tau0
    assert np.allclose(np.asarray(ge.loss_arrays(flat)["tau"]), 0.6)


def test_loss_by_hand():
    """(sum of emotion BCE + alpha * sum of valence BCE) / 28 + lam * L_excl, min form: a pair
    counts min(p_i, p_j) - tau_ij / 2 when positive."""
    task = make_task(config_for())
    lam = config_for().loss.lam
    logit = {p: float(np.log(p / (1 - p))) for p in (0.8, 0.5, 0.7, 0.65)}
    low = -8.0
    emotion = np.full((1, 3, 28), low, np.float32)
    # Text 0: caring 0.8 + grief 0.5 (gold caring, grief: a condolence). They co-occur in
    # train, tau / 2 = 0.55 > 0.5: no hinge.
    emotion[0, 0, E["caring"]], emotion[0, 0, E["grief"]] = logit[0.8], logit[0.5]
    # Text 1: joy 0.7 + anger 0.65 (gold joy): min 0.65 > tau(joy, anger) / 2 = 0.3: hinge.
    emotion[0, 1, E["joy"]], emotion[0, 1, E["anger"]] = logit[0.7], logit[0.65]
    # Slot 2 is padding with a large would-be hinge: must not count.
    emotion[0, 2, E["love"]] = emotion[0, 2, E["fear"]] = 5.0
    valence = np.zeros((1, 3, 4), np.float32)
    valence[0, :, 0] = 1.0  # positive logit 1, others 0
    labels = np.stack([multi_hot(["caring", "grief"], ["joy"], ["neutral"])])
    weights = np.array([[1.0, 1.0, 0.0]], np.float32)
    outputs = {"emotion": jnp.asarray(emotion), "valence": jnp.asarray(valence)}
    total, terms = task.loss(outputs, None, jnp.asarray(labels), jnp.asarray(weights), 2.0)

    # Each text's BCE summed over the 28 emotion / 4 valence outputs, then averaged over texts.
    bce = [
        sum(_bce(float(x), float(y)) for x, y in zip(emotion[0, t], labels[0, t], strict=True))
        for t in (0, 1)
    ]
    # Valence targets: caring + grief -> positive and negative; joy -> positive.
    valence_targets = [[1, 1, 0, 0], [1, 0, 0, 0]]
    bce_valence = [
        sum(_bce(float(x), y) for x, y in zip(valence[0, t], valence_targets[t], strict=True))
        for t in (0, 1)
    ]
    hinge_1 = 0.65 - _tau("joy", "anger") / 2
    assert hinge_1 > 0
    # Text 0: caring + grief under its raised tau; caring + every other negative (min = the
    # other's sigmoid(-8)) and grief + other positives stay below 0.3: no hinge. Text 1: only
    # (joy, anger).
    assert 0.5 < _tau("caring", "grief") / 2
    excl = (0.0 + hinge_1 / 132) / 2
    np.testing.assert_allclose(float(terms["bce_emotion"]), np.mean(bce) / 28, rtol=1e-5)
    np.testing.assert_allclose(float(terms["bce_valence"]), np.mean(bce_valence) / 28, rtol=1e-5)
    np.testing.assert_allclose(float(terms["exclusivity"]), excl, rtol=1e-4)
    assert float(terms["hinge_active"]) == 0.5  # text 1 of the two real texts
    alpha = config_for().loss.alpha  # the valence head's weight per text
    expected = (np.mean(bce) + alpha * np.mean(bce_valence)) / 28 + lam * excl
    np.testing.assert_allclose(float(total), expected, rtol=1e-5)
    assert lam > 0 and 0 < alpha < 1

    # The same pair under tau0 without the co-occurrence raise would fire.
    flat_cfg = config_for()
    flat_cfg.goemotions.cooccurrence_gain = 0.0
    flat = make_task(flat_cfg)
    _, flat_terms = flat.loss(outputs, None, jnp.asarray(labels), jnp.asarray(weights), 2.0)
    expected_flat = ((0.5 - 0.3) / 132 + hinge_1 / 132) / 2
    np.testing.assert_allclose(float(flat_terms["exclusivity"]), expected_flat, rtol=1e-4)
    assert float(flat_terms["hinge_active"]) == 1.0


@pytest.mark.parametrize("variant", ["product", "min"])
def test_other_variants_and_granularities(variant):
    for granularity, size in (("ekman", 7), ("sentiment", 4)):
        task = make_task(config_for(granularity, variant=variant))
        outputs = {"emotion": jnp.zeros((2, size)), "valence": jnp.zeros((2, 4))}
        labels = jnp.asarray(multi_hot(["joy", "anger"], ["neutral"]))
        total, terms = task.loss(outputs, None, labels, jnp.ones((2,)), 2.0)
        assert np.isfinite(float(total)) and set(terms) >= {"bce_emotion", "exclusivity"}


def test_plugin_loss_gets_granularity_targets(tmp_path, monkeypatch):
    (tmp_path / "ge_plugin.py").write_text(
        "import jax.numpy as jnp\n"
        "def loss(logits, labels, weights, tables, normalizer, cfg):\n"
        "    total = jnp.sum(labels.sum(-1) * weights) / normalizer\n"
        "    return total, {'loss': total}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    task = make_task(config_for("ekman", fn="ge_plugin:loss"))
    labels = jnp.asarray(multi_hot(["gratitude", "love", "anger"], ["neutral"]))
    total, _ = task.loss(
        {"emotion": jnp.zeros((2, 7)), "valence": jnp.zeros((2, 4))},
        None,
        labels,
        jnp.ones((2,)),
        2.0,
    )
    assert float(total) == pytest.approx((2 + 1) / 2)  # joy + anger, then neutral


# --- metrics ------------------------------------------------------------------------------


def test_multilabel_scores_hand_counted():
    gold = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 0]])
    pred = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0], [0, 1, 0]])
    scores = multilabel_scores(gold, pred, ["a", "b", "c"])
    # a: tp 2 fp 0 fn 0 -> F1 1; b: tp 1 fp 1 fn 1 -> 0.5; c: tp 0 fn 1 -> 0.
    assert scores["macro_f1"] == pytest.approx(0.5)
    assert scores["per_class"]["b"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    # micro: tp 3, predicted 4, gold 5 -> P 0.75, R 0.6, F1 2/3.
    assert scores["micro_f1"] == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert scores["exact_match"] == 0.25


def test_contradiction_split_hand_counted():
    positive, negative = [0], [1]
    gold = np.array([[1, 1], [1, 0], [0, 1], [1, 1], [0, 0]])
    pred = np.array([[1, 1], [1, 1], [0, 1], [1, 0], [1, 1]])
    out = multilabel_contradiction(gold, pred, positive, negative)
    # Predicted contradictions: texts 0, 1, 4; gold mixes: texts 0, 3.
    assert out["contradiction_rate"] == pytest.approx(3 / 5)
    assert out["false_contradiction_rate"] == pytest.approx(2 / 5)  # texts 1 and 4
    assert out["mixed_recall"] == pytest.approx(1 / 2)  # text 0 of 0 and 3
    assert out["num_gold_mixed"] == 2


def test_report_keys_and_mapped_scores():
    task = make_task(config_for())
    labels = multi_hot(["gratitude", "sadness"], ["joy"], ["anger"], ["neutral"])
    probs = np.full((4, 28), 0.05, np.float32)
    probs[0, [E["gratitude"], E["sadness"]]] = 0.9  # a gold mix, both predicted
    probs[1, [E["love"], E["annoyance"]]] = 0.6  # joy missed; a false contradiction
    probs[2, E["anger"]] = 0.35
    probs[3, E["neutral"]] = 0.29  # just under 0.3: no label at all
    report = task.report({"emotion": probs, "valence": np.full((4, 4), 0.5)}, labels)
    for key in (
        "macro_f1",
        "micro_f1",
        "ekman_macro_f1",
        "sentiment_macro_f1",
        "ece",
        "contradiction_rate",
        "false_contradiction_rate",
        "mixed_recall",
        "per_class",
    ):
        assert key in report, key
    assert report["contradiction_rate"] == 0.5 and report["false_contradiction_rate"] == 0.25
    assert report["mixed_recall"] == 1.0
    # micro over 28 labels: tp gratitude, sadness, anger = 3; predicted 5; gold 5.
    assert report["micro_f1"] == pytest.approx(0.6)
    # Ekman: gold joy+sadness, joy, anger, neutral; pred joy+sadness, joy+anger, anger, -.
    # joy: tp 2 -> F1 1; sadness F1 1; anger tp 1 fp 1 -> 2/3; neutral 0; others 0 (7 groups).
    assert report["ekman_macro_f1"] == pytest.approx((1 + 1 + 2 / 3) / 7)
    # Sentiment: gold pos+neg, pos, neg, neutral; pred pos+neg, pos+neg, neg, none.
    # positive F1 1; negative tp 2 fp 1 -> 0.8; ambiguous 0; neutral 0.
    assert report["sentiment_macro_f1"] == pytest.approx((1 + 0.8) / 4)


def test_tuned_thresholds():
    probs = np.array([[0.9, 0.2], [0.4, 0.6], [0.1, 0.55]])
    gold = np.array([[1, 0], [1, 1], [0, 0]])
    tuned = tune_thresholds(probs, gold)
    assert tuned[0] == pytest.approx(0.15)  # lowest threshold keeping both positives, no fp
    assert tuned[1] == pytest.approx(0.6)


def test_records_list_every_label_above_threshold():
    task = make_task(config_for())
    probs = np.full((1, 28), 0.1, np.float32)
    probs[0, [E["joy"], E["gratitude"]]] = [0.35, 0.8]
    record = task.records({"emotion": probs, "valence": np.array([[0.9, 0.1, 0.1, 0.4]])})[0]
    assert record["labels"] == ["gratitude", "joy"] and record["top_emotion"] == "gratitude"
    assert record["valence_labels"] == ["positive", "neutral"]
    assert task.gold_record(multi_hot(["joy", "anger"])[0]) == ["anger", "joy"]


def _random_run(seed: int, n: int = 300):
    """Gold multi-hot rows (some mixing valence) and sigmoid-like probabilities near them."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, 28)) < 0.06).astype(np.int16)
    noise = 0.35 * rng.random((n, 28)) ** 4  # above the 0.3 threshold for ~4% of non-gold
    probs = np.clip(0.6 * labels + noise, 0, 1).astype(np.float32)
    return labels, probs


def test_multilabel_bootstrap_metrics_equal_the_report_at_unit_weights():
    from cmhl_jax import stats

    task = make_task(config_for())
    labels, probs = _random_run(0)
    report = task.report({"emotion": probs}, labels)
    run = task.bootstrap_inputs(probs, labels)
    scores = stats.multilabel_scores_from_weights(np.ones((1, len(labels))), run)
    assert report["num_gold_mixed"] > 10 and report["false_contradiction_rate"] > 0
    for metric in ge.TABLE_METRICS:
        assert scores[metric][0] == pytest.approx(report[metric], abs=1e-12), metric


def test_multilabel_paired_bootstrap_and_table():
    """A run that adds false contradictions differs from its reference with a CI above 0; a
    run compared with itself differs by exactly 0; the table shows the CIs."""
    from cmhl_jax import ablation, stats

    task = make_task(config_for())
    labels, probs = _random_run(1)
    noisy = probs.copy()
    noisy[::4, E["joy"]] = noisy[::4, E["anger"]] = 0.9  # joy and anger on every 4th text
    same, worse = (task.bootstrap_inputs(p, labels) for p in (probs, noisy))
    ci = stats.paired_bootstrap(labels, [worse], [same], 28, num_resamples=300)
    assert ci["false_contradiction_rate"]["low"] > 0 and ci["contradiction_rate"]["low"] > 0
    zero = stats.paired_bootstrap(labels, [same], [same], 28, num_resamples=50)
    assert all(v["low"] == v["high"] == v["diff"] == 0 for v in zero.values())
    assert set(ci) == set(ge.TABLE_METRICS)

    metrics = task.table_metrics
    arms = ablation.build_arms(["ce_only", "cmhl_sum"], [])
    report = {"ce_only": task.report({"emotion": probs}, labels)}
    report["cmhl_sum"] = task.report({"emotion": noisy}, labels)
    inputs = {"ce_only": same, "cmhl_sum": worse}
    results = {
        (arm.name, 0): {"labels": labels, **report[arm.name], **inputs[arm.name]} for arm in arms
    }
    rows = ablation.summarize(
        results, arms, num_classes=28, resamples=100, bootstrap_seed=0, metrics=metrics
    )
    assert rows[1]["false_contradiction_rate_low"] > 0
    table = ablation.markdown_table(rows, split="val", metrics=metrics)
    assert "mixed recall" in table and "reference" in table and " [+" in table


# --- end to end ---------------------------------------------------------------------------

_WORDS = {
    "joy": "happy glad cheerful",
    "anger": "angry furious mad",
    "gratitude": "thanks grateful thankful",
    "sadness": "sad gloomy miserable",
    "neutral": "table chair window",
}


def make_goemotions_data(path: Path, n_train: int = 64, n_dev: int = 24) -> Path:
    names = list(_WORDS)
    rows = []
    for i in range(n_train + n_dev):
        labels = [names[i % 5]] + ([names[(i // 5) % 4]] if i % 3 == 0 else [])
        labels = sorted(set(labels), key=E.get)
        words = " and ".join(_WORDS[n].split()[i % 3] for n in labels)
        rows.append((f"i am {words} number {i}", ",".join(str(E[n]) for n in labels)))
    path.mkdir(parents=True, exist_ok=True)
    write_tsv(path / "train.tsv", rows[:n_train])
    write_tsv(path / "dev.tsv", rows[n_train:])
    return path


@pytest.mark.slow  # a tiny training run
def test_tiny_train_and_eval(tmp_path, tiny_encoder_dir):

    from conftest import tiny_config

    from cmhl_jax.loop import train_and_evaluate

    data = make_goemotions_data(tmp_path / "data")
    config = tiny_config(tiny_encoder_dir, data, "data.pack=True", "max_steps=3")
    with config.unlocked():
        config.task = "goemotions"
        config.goemotions = ge.default_goemotions_config()
        config.goemotions.tune_thresholds = True
    config.data.val_split = "dev"
    workdir = tmp_path / "run"
    summary = train_and_evaluate(config, workdir)
    assert summary["step"] == 2  # 64 texts, 4 per packed row, 8 rows a batch
    eval_cli = load_script("eval.py")
    output = tmp_path / "dev.json"
    argv = ["--workdir", str(workdir), "--data", str(data / "dev.tsv"), "--output", str(output)]
    assert eval_cli.main(argv) == 0
    report = json.loads(output.read_text())
    for key in (
        "macro_f1",
        "micro_f1",
        "ekman_macro_f1",
        "contradiction_rate",
        "false_contradiction_rate",
        "mixed_recall",
        "tuned_thresholds",
    ):
        assert key in report, key
    assert report["num_examples"] == 24 and len(report["per_class"]) == 28
    lines = output.with_suffix(".predictions.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert isinstance(first["label"], list) and isinstance(first["labels"], list)


def test_exclusivity_activity_script_counts_texts_past_tau(tmp_path, capsys):
    """scripts/exclusivity_activity.py on a hand-made run: joy 0.9 + anger 0.8 is past its tau
    (1.7 > tau 1.0), joy 0.9 alone and caring 0.6 + grief 0.6 (tau 1.5) are not."""

    script = load_script("scripts/exclusivity_activity.py")
    probs = np.zeros((3, 28), np.float32)
    probs[0, [E["joy"], E["anger"]]] = 0.9, 0.8
    probs[1, E["joy"]] = 0.9
    probs[2, [E["caring"], E["grief"]]] = 0.6
    flat = {f"goemotions.{k}": v for k, v in config_for().goemotions.items()}
    flat["loss.variant"], flat["goemotions.tau0"] = "sum", 1.0  # caring + grief: tau 1.5
    flat["task"] = "goemotions"
    on, term = script.hinge_activity(probs, flat)
    assert on == pytest.approx(1 / 3)
    assert term == pytest.approx((1.7 - 1.0) / (12 * 11) / 3, rel=1e-5)
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "cmhl_sum_s0.json").write_text(
        json.dumps({"arm": "cmhl_sum", "seed": 0, "config": flat})
    )
    np.savez(runs / "cmhl_sum_s0.npz", val_probs=probs)
    work = tmp_path / "work" / "cmhl_sum_s0"
    work.mkdir(parents=True)
    logged = [{"loss": 1.0, "exclusivity": x, "epoch": e} for e, x in ((0, 0.2), (0, 0.4), (1, 0))]
    (work / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in logged))
    assert script.train_terms(work) == {
        0: {"loss": 1.0, "exclusivity": pytest.approx(0.3)},
        1: {"loss": 1.0, "exclusivity": 0.0},
    }
    script.main([str(tmp_path), "--workdirs", str(tmp_path / "work")])
    row = capsys.readouterr().out.splitlines()[-1]
    assert row.startswith("| `cmhl_sum` | 0 | 33.33 | ")
    assert row.endswith("| 3.0e-01, 0.0e+00 | 0.0000, 0.0000 | 0.0000, 0.0000 |")


def test_average_precision_equals_scikit_learn():
    """Per label, micro (all pairs) and with integer text weights (= repeated texts); ties
    (probabilities rounded to 0.05) are one threshold, as in scikit-learn."""
    from sklearn.metrics import average_precision_score

    from cmhl_jax.metrics import average_precision

    labels, probs = _random_run(2)
    probs = np.round(probs * 20) / 20
    ap = average_precision(probs, labels)
    present = labels.any(0)
    assert present.sum() > 20 and np.isnan(ap[~present]).all()
    for k in np.flatnonzero(present):
        assert ap[k] == pytest.approx(average_precision_score(labels[:, k], probs[:, k]))
    micro = average_precision(probs.reshape(-1, 1), labels.reshape(-1, 1))[0]
    assert micro == pytest.approx(average_precision_score(labels.ravel(), probs.ravel()))
    counts = np.random.default_rng(3).integers(0, 3, len(labels))
    weighted = average_precision(probs, labels, counts[None, :].astype(float))[0]
    repeated = np.repeat(np.arange(len(labels)), counts)
    for k in np.flatnonzero(labels[repeated].any(0)):
        expected = average_precision_score(labels[repeated, k], probs[repeated, k])
        assert weighted[k] == pytest.approx(expected)


def test_records_take_any_number_of_labels_per_text():
    """A trained model predicts 0, 1 or several labels per text: ragged lists in records."""
    task = make_task(config_for())
    probs = np.full((3, 28), 0.1, np.float32)
    probs[1, E["joy"]] = 0.9
    probs[2, [E["joy"], E["anger"], E["gratitude"]]] = 0.8
    records = task.records({"emotion": probs, "valence": np.full((3, 4), 0.2)})
    assert [r["labels"] for r in records] == [[], ["joy"], ["anger", "gratitude", "joy"]]
    assert [r["valence_labels"] for r in records] == [[], [], []]


def test_eval_applies_the_dev_tuned_thresholds_to_another_split():
    """With the selected checkpoint's dev report as reference, tuned F1 uses its thresholds."""
    task = make_task(config_for())
    labels, probs = _random_run(4, n=200)
    dev = task.report({"emotion": probs}, labels)
    assert dev["thresholds_tuned_on"] == "this split"
    other_labels, other_probs = _random_run(5, n=200)
    other = task.report({"emotion": other_probs}, other_labels, reference=dev)
    assert other["thresholds_tuned_on"] == "validation"
    assert other["tuned_thresholds"] == dev["tuned_thresholds"]
    gold = other_labels > 0
    expected = multilabel_scores(gold, other_probs >= np.asarray(dev["tuned_thresholds"]), E)
    assert other["tuned_macro_f1"] == pytest.approx(expected["macro_f1"])


def test_heads_start_at_the_initial_probability_and_the_valence_probe_is_detached():
    """Emotion biases at logit(initial_probability) (so the hinge is off at the start); with
    valence_stop_gradient the valence loss sends no gradient into the encoder's output, and
    the emotion logits are the same either way."""
    import jax

    config = config_for()
    task = make_task(config)
    params = task.init_heads(jax.random.key(0), 8)
    p0 = config.goemotions.initial_probability
    assert np.allclose(jax.nn.sigmoid(params["emotion"]["bias"]), p0)
    assert np.allclose(params["valence"]["bias"], 0.0)
    hidden = jax.random.normal(jax.random.key(1), (3, 8))

    def valence_grad(t):
        return jax.grad(lambda h: t.apply_heads(params, h)["valence"].sum())(hidden)

    config.goemotions.valence_stop_gradient = True
    probe = make_task(config)
    assert np.abs(valence_grad(task)).max() > 0 and np.abs(valence_grad(probe)).max() == 0
    np.testing.assert_array_equal(
        task.apply_heads(params, hidden)["emotion"], probe.apply_heads(params, hidden)["emotion"]
    )
