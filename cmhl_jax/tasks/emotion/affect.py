"""The emotion task's label knowledge (CMHL_SPEC section 1.1 and 1.3): names and affect tables.

Everything here is built from the config's `affect` block, so research users can change the
label maps, the valence-arousal coordinates, the P/N sets and the threshold without code edits.
"""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

# Hugging Face order of dair-ai/emotion label ids.
EMOTIONS = ("sadness", "joy", "love", "anger", "fear", "surprise")


def default_affect_config() -> ml_collections.ConfigDict:
    """The spec's defaults: paper valence map, chosen intensity map and NRC-VAD coordinates."""
    return ml_collections.ConfigDict(
        {
            "emotion_names": tuple(EMOTIONS),
            "valence_names": ("negative", "neutral", "positive"),
            "valence_of": {
                "sadness": "negative",
                "joy": "positive",
                "love": "positive",
                "anger": "negative",
                "fear": "negative",
                "surprise": "neutral",
            },
            "intensity_names": ("low", "high"),
            "intensity_of": {
                "sadness": "low",
                "joy": "high",
                "love": "low",
                "anger": "high",
                "fear": "high",
                "surprise": "high",
            },
            # NRC-VAD v1 (Mohammad 2018): (valence, arousal) on a 0..1 scale.
            "valence_arousal": {
                "sadness": [0.052, 0.288],
                "joy": [0.980, 0.824],
                "love": [1.000, 0.519],
                "anger": [0.167, 0.865],
                "fear": [0.073, 0.840],
                "surprise": [0.875, 0.875],
            },
            "positive_set": ("joy", "love"),
            "negative_set": ("sadness", "anger", "fear"),
            "tau0": 0.5,
            "gamma": 0.2,
        }
    )


@dataclasses.dataclass(frozen=True)
class AffectTables:
    """Arrays derived from the affect config, indexed by emotion id."""

    emotion_names: tuple[str, ...]
    valence_names: tuple[str, ...]
    intensity_names: tuple[str, ...]
    valence_label: np.ndarray  # [C] int32: valence class of each emotion
    intensity_label: np.ndarray  # [C] int32: intensity class of each emotion
    pair_mask: np.ndarray  # [C, C] float32: 1 where i in P and j in N
    tau: np.ndarray  # [C, C] float32: adaptive threshold tau_ij


def _lookup(mapping, names: list[str], what: str) -> None:
    missing = [n for n in names if n not in mapping]
    if missing:
        raise ValueError(f"affect.{what} has no entry for {missing}; it must cover {names}")


def threshold_matrix(coords: np.ndarray, tau0: float, gamma: float) -> np.ndarray:
    """Adaptive threshold tau_ij = tau0 - gamma * d_ij (spec 1.3).

    d_ij is the Euclidean valence-arousal distance of emotions i and j divided by the largest
    such distance over all emotion pairs, so d lies in [0, 1].
    """
    diff = coords[:, None, :] - coords[None, :, :]
    dist = np.sqrt((diff**2).sum(-1))
    return (tau0 - gamma * dist / dist.max()).astype(np.float32)


def build_affect_tables(affect: ml_collections.ConfigDict) -> AffectTables:
    """Validates the affect config and derives the label maps, pair mask and tau matrix."""
    names = list(affect.emotion_names)
    for what in ("valence_of", "intensity_of", "valence_arousal"):
        _lookup(affect[what], names, what)
    valence_names, intensity_names = list(affect.valence_names), list(affect.intensity_names)
    for what, classes in (("valence_of", valence_names), ("intensity_of", intensity_names)):
        bad = {e: affect[what][e] for e in names if affect[what][e] not in classes}
        if bad:
            raise ValueError(f"affect.{what} uses unknown classes {bad}; known: {classes}")
    for what in ("positive_set", "negative_set"):
        unknown = [e for e in affect[what] if e not in names]
        if unknown:
            raise ValueError(f"affect.{what} names unknown emotions {unknown}; known: {names}")
    if set(affect.positive_set) & set(affect.negative_set):
        raise ValueError("affect.positive_set and affect.negative_set must be disjoint")

    coords = np.array([affect.valence_arousal[e] for e in names], np.float64)
    positive = np.isin(names, list(affect.positive_set))
    negative = np.isin(names, list(affect.negative_set))
    return AffectTables(
        emotion_names=tuple(names),
        valence_names=tuple(valence_names),
        intensity_names=tuple(intensity_names),
        valence_label=np.array(
            [valence_names.index(affect.valence_of[e]) for e in names], np.int32
        ),
        intensity_label=np.array(
            [intensity_names.index(affect.intensity_of[e]) for e in names], np.int32
        ),
        pair_mask=(positive[:, None] & negative[None, :]).astype(np.float32),
        tau=threshold_matrix(coords, float(affect.tau0), float(affect.gamma)),
    )
