"""GoEmotions' label knowledge: the 28 official labels, the Ekman and sentiment maps, the
granularities and the label co-occurrence counts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cmhl_jax.metrics import map_multi_hot

# The official label files (google-research goemotions/data; copies in ../shared/data/goemotions).
EMOTIONS = (
    "admiration", "amusement", "anger", "annoyance", "approval", "caring", "confusion",
    "curiosity", "desire", "disappointment", "disapproval", "disgust", "embarrassment",
    "excitement", "fear", "gratitude", "grief", "joy", "love", "nervousness", "optimism",
    "pride", "realization", "relief", "remorse", "sadness", "surprise", "neutral",
)  # fmt: skip
EKMAN_MAPPING = {
    "anger": ("anger", "annoyance", "disapproval"),
    "disgust": ("disgust",),
    "fear": ("fear", "nervousness"),
    "joy": (
        "joy", "amusement", "approval", "excitement", "gratitude", "love", "optimism", "relief",
        "pride", "admiration", "desire", "caring",
    ),
    "sadness": ("sadness", "disappointment", "embarrassment", "grief", "remorse"),
    "surprise": ("surprise", "realization", "confusion", "curiosity"),
}  # fmt: skip
SENTIMENT_MAPPING = {
    "positive": (
        "amusement", "excitement", "joy", "love", "desire", "optimism", "caring", "pride",
        "admiration", "gratitude", "relief", "approval",
    ),
    "negative": (
        "fear", "nervousness", "remorse", "embarrassment", "disappointment", "sadness", "grief",
        "disgust", "anger", "annoyance", "disapproval",
    ),
    "ambiguous": ("realization", "surprise", "curiosity", "confusion"),
}  # fmt: skip
NEUTRAL = "neutral"
VALENCE_NAMES = ("positive", "negative", "ambiguous", NEUTRAL)
GRANULARITIES = ("all", "ekman", "sentiment")


def group_names(granularity: str) -> tuple[str, ...]:
    """The output labels of a granularity, in head order."""
    if granularity == "all":
        return EMOTIONS
    if granularity == "ekman":
        return (*EKMAN_MAPPING, NEUTRAL)
    if granularity == "sentiment":
        return VALENCE_NAMES
    raise ValueError(f"goemotions.granularity must be one of {GRANULARITIES}, got {granularity!r}")


def _group_of(granularity: str) -> dict[str, str]:
    """Each of the 28 labels to its group at `granularity` (neutral stays neutral)."""
    if granularity == "all":
        return {e: e for e in EMOTIONS}
    mapping = EKMAN_MAPPING if granularity == "ekman" else SENTIMENT_MAPPING
    group = {e: g for g, members in mapping.items() for e in members}
    return {e: group.get(e, NEUTRAL) for e in EMOTIONS}


def label_map(granularity: str, source: Sequence[str] = EMOTIONS) -> np.ndarray:
    """0/1 [len(source), K]: each `source` label (one of the 28, or a group of a coarser
    granularity) to its group at `granularity`."""
    groups = group_names(granularity)
    fine = _group_of(granularity)
    # A coarser source label (an Ekman group or a sentiment) maps through any of its members.
    members: dict[str, str] = {}
    for level in GRANULARITIES:
        for e, g in _group_of(level).items():
            members.setdefault(g, e)
    matrix = np.zeros((len(source), len(groups)), np.float32)
    for i, name in enumerate(source):
        matrix[i, groups.index(fine[members[name]])] = 1.0
    return matrix


def valence_of(granularity: str) -> np.ndarray:
    """Valence id (VALENCE_NAMES) of each output label at `granularity` [K]."""
    valence = _group_of("sentiment")
    example = {g: e for e, g in _group_of(granularity).items()}  # any member of each group
    return np.asarray(
        [VALENCE_NAMES.index(valence[example[g]]) for g in group_names(granularity)], np.int32
    )


def valence_ids(granularity: str) -> tuple[list[int], list[int]]:
    """The (positive, negative) label ids at the granularity (the official sentiment map)."""
    valence = valence_of(granularity)
    return tuple(
        [int(i) for i in np.flatnonzero(valence == VALENCE_NAMES.index(name))]
        for name in ("positive", "negative")
    )


def cooccurrence_counts(multi_hot: np.ndarray, granularity: str) -> np.ndarray:
    """Texts per label pair [K, K] at `granularity` from 28-label multi-hot rows; the diagonal
    holds the texts per label."""
    on = map_multi_hot(multi_hot, label_map(granularity)).astype(np.int64)
    return on.T @ on
