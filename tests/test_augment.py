"""Training-set augmentation: synonym substitution and random deletion (CMHL_SPEC section 2)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmhl_jax import augment
from cmhl_jax.augment import (
    LEXNAMES,
    WORDNET_FILES,
    WordNetMissingError,
    augment_text,
    augment_texts,
    prepare_debian_wordnet,
    wordnet_synonyms,
)

TEXTS = [
    "I feel sad and alone tonight.\nNothing helps anymore, honestly.",
    "My anxiety gets worse every morning before work",
    "Bipolar meds finally working, feeling stable",
]


def fake_synonyms(word: str) -> tuple[str, ...]:
    return (f"{word}x",)


def test_deterministic_under_seed_and_fresh_each_epoch():
    kwargs = dict(p_synonym=0.3, p_delete=0.3, synonyms=fake_synonyms)
    first = augment_texts(TEXTS, seed=7, epoch=0, **kwargs)
    assert first == augment_texts(TEXTS, seed=7, epoch=0, **kwargs)
    assert first != augment_texts(TEXTS, seed=7, epoch=1, **kwargs)
    assert first != augment_texts(TEXTS, seed=8, epoch=0, **kwargs)


def test_deletion_only_keeps_word_order_and_spacing():
    text = "one two three four five six seven eight nine ten"
    out = augment_text(text, np.random.default_rng(0), p_synonym=0.0, p_delete=0.5)
    words = out.split()
    assert 0 < len(words) < 10
    assert words == [w for w in text.split() if w in words]
    assert out == " ".join(words)
    everything = augment_text(text, np.random.default_rng(0), p_synonym=0.0, p_delete=1.0)
    assert len(everything.split()) == 1


def test_synonym_only_replaces_words_and_keeps_case_and_punctuation():
    text = "Sad, LONELY and tired."
    out = augment_text(
        text, np.random.default_rng(0), p_delete=0.0, p_synonym=1.0, synonyms=fake_synonyms
    )
    assert out == "Sadx, LONELYX and tiredx."  # "and" is a protected function word
    no_synonyms = augment_text(text, np.random.default_rng(0), p_delete=0.0, p_synonym=1.0)
    assert no_synonyms == text


def test_no_change_at_zero_probabilities():
    text = "  keep\tevery   word\n"
    assert augment_text(text, np.random.default_rng(0), p_synonym=0, p_delete=0) == text


@pytest.mark.parametrize("blank", ["", "   ", "\n\t"])
def test_blank_text_is_returned_unchanged(blank):
    assert augment_text(blank, np.random.default_rng(0), p_delete=1.0) == blank


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(st.characters(codec="utf-8"), max_size=60) | st.from_regex(r"\A\w+\Z"),
    p_delete=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_never_empties_a_text(text, p_delete, seed):
    out = augment_text(
        text, np.random.default_rng(seed), p_synonym=0.5, p_delete=p_delete, synonyms=fake_synonyms
    )
    if text.strip():
        assert out.strip()
        assert len(out.split()) <= len(text.split())
    else:
        assert out == text


def test_prepare_debian_wordnet_layout(tmp_path):
    source = tmp_path / "debian"
    source.mkdir()
    for name in WORDNET_FILES[:-1]:
        (source / name).write_text(name)
    assert prepare_debian_wordnet(source, tmp_path / "data") is None  # verb.exc missing
    (source / WORDNET_FILES[-1]).write_text("last")
    assert prepare_debian_wordnet(source, tmp_path / "data") == tmp_path / "data"
    target = tmp_path / "data" / "corpora" / "wordnet"
    assert (target / "index.noun").read_text() == "index.noun"
    lines = (target / "lexnames").read_text().splitlines()
    assert len(lines) == len(LEXNAMES) == 45
    assert lines[0] == "00\tadj.all\t3"
    assert lines[3] == "03\tnoun.Tops\t1"
    assert lines[44] == "44\tadj.ppl\t3"
    assert [p.name for p in target.parent.iterdir()] == ["wordnet"]  # no staging dir left


def test_missing_wordnet_error_and_allow_missing(monkeypatch, tmp_path, caplog):
    pytest.importorskip("nltk")
    import nltk.corpus
    from nltk.corpus.reader import WordNetCorpusReader
    from nltk.corpus.util import LazyCorpusLoader

    absent = LazyCorpusLoader("cmhl_absent_wordnet", WordNetCorpusReader, None)
    monkeypatch.setattr(nltk.corpus, "wordnet", absent)
    monkeypatch.setattr(augment, "DEBIAN_WORDNET_DIR", tmp_path / "none")
    monkeypatch.setenv("CMHL_NLTK_DATA", str(tmp_path / "cache"))
    with pytest.raises(WordNetMissingError, match="nltk.downloader wordnet.*wordnet-base"):
        wordnet_synonyms.__wrapped__()
    assert wordnet_synonyms.__wrapped__(allow_missing=True) is None
    assert "synonym substitution is off" in caplog.text


@pytest.mark.slow  # loads the WordNet corpus (seconds)
def test_real_wordnet_lookup():
    pytest.importorskip("nltk", reason="nltk not installed (pip install 'cmhl-jax[augment]')")
    try:
        synonyms = wordnet_synonyms()
    except WordNetMissingError as error:
        pytest.skip(f"WordNet not installed: {error}")
    assert "glad" in synonyms("happy")
    assert "happy" not in synonyms("happy")
    assert synonyms("xqzvbnonword") == ()
    out = augment_text("happy", np.random.default_rng(0), p_synonym=1.0, synonyms=synonyms)
    assert out in synonyms("happy")
