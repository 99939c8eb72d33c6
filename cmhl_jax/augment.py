"""Text augmentation for the mental-health task (CMHL_SPEC section 2): synonym substitution and
random deletion, each word with p = 0.1 (paper).

Apply it to the TRAINING set only, drawn afresh each epoch (`augment_texts(texts, seed, epoch)`);
validation and test texts are never augmented. Synonyms come from WordNet through nltk
(`pip install nltk`, extra `augment`); see `load_wordnet` for where WordNet is looked up.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from cmhl_jax.errors import UserError

logger = logging.getLogger(__name__)

Synonyms = Callable[[str], Sequence[str]]

# Seeds the per-epoch generator together with (seed, epoch), apart from other seeded streams.
AUGMENT_STREAM = 0xA06

# Function words kept as they are: WordNet would turn "I" into "iodine" and "in" into "inch".
PROTECTED_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself
    yourselves""".split()
)

DEBIAN_WORDNET_DIR = Path("/usr/share/wordnet")
# The WordNet 3.0 files nltk's reader opens; Debian's wordnet-base and wordnet-sense-index ship
# all but `lexnames`.
WORDNET_FILES = (
    "cntlist.rev",
    "index.sense",
    "index.adj",
    "index.adv",
    "index.noun",
    "index.verb",
    "data.adj",
    "data.adv",
    "data.noun",
    "data.verb",
    "adj.exc",
    "adv.exc",
    "noun.exc",
    "verb.exc",
)
# WordNet 3.0 lexicographer files (lexnames(5WN)): number, name, syntactic category
# (1 noun, 2 verb, 3 adjective, 4 adverb).
LEXNAMES = (
    ("adj.all", 3),
    ("adj.pert", 3),
    ("adv.all", 4),
    ("noun.Tops", 1),
    ("noun.act", 1),
    ("noun.animal", 1),
    ("noun.artifact", 1),
    ("noun.attribute", 1),
    ("noun.body", 1),
    ("noun.cognition", 1),
    ("noun.communication", 1),
    ("noun.event", 1),
    ("noun.feeling", 1),
    ("noun.food", 1),
    ("noun.group", 1),
    ("noun.location", 1),
    ("noun.motive", 1),
    ("noun.object", 1),
    ("noun.person", 1),
    ("noun.phenomenon", 1),
    ("noun.plant", 1),
    ("noun.possession", 1),
    ("noun.process", 1),
    ("noun.quantity", 1),
    ("noun.relation", 1),
    ("noun.shape", 1),
    ("noun.state", 1),
    ("noun.substance", 1),
    ("noun.time", 1),
    ("verb.body", 2),
    ("verb.change", 2),
    ("verb.cognition", 2),
    ("verb.communication", 2),
    ("verb.competition", 2),
    ("verb.consumption", 2),
    ("verb.contact", 2),
    ("verb.creation", 2),
    ("verb.emotion", 2),
    ("verb.motion", 2),
    ("verb.perception", 2),
    ("verb.possession", 2),
    ("verb.social", 2),
    ("verb.stative", 2),
    ("verb.weather", 2),
    ("adj.ppl", 3),
)
_WORD = re.compile(r"^(\W*)(.*?)(\W*)$", re.DOTALL)


class WordNetMissingError(UserError, RuntimeError):
    """WordNet is not installed where nltk or this module can find it."""


# ---------------------------------------------------------------------------------------------
# Augmentation


def match_case(replacement: str, original: str) -> str:
    """`replacement` in the capitalisation of `original` (ALL CAPS, Capitalised or as is)."""
    if len(original) > 1 and original.isupper():
        return replacement.upper()
    if original[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


def substitute_synonym(word: str, rng: np.random.Generator, synonyms: Synonyms) -> str:
    """`word` with its letters replaced by a random synonym, punctuation around it kept; the
    word itself when it is protected, not alphabetic, or has no synonym."""
    prefix, core, suffix = _WORD.match(word).groups()
    if not core.isalpha() or core.lower() in PROTECTED_WORDS:
        return word
    candidates = synonyms(core.lower())
    if not candidates:
        return word
    choice = candidates[rng.integers(len(candidates))]
    return prefix + match_case(choice, core) + suffix


def augment_text(
    text: str,
    rng: np.random.Generator,
    *,
    p_synonym: float = 0.1,
    p_delete: float = 0.1,
    synonyms: Synonyms | None = None,
) -> str:
    """Random deletion (each word with p_delete) and synonym substitution (each kept word with
    p_synonym; skipped when `synonyms` is None). Words are whitespace-separated; the whitespace
    after a kept word is kept. At least one word always survives; a blank text is returned as is.
    """
    leading = text[: len(text) - len(text.lstrip())]
    words = re.findall(r"(\S+)(\s*)", text)
    if not words:
        return text
    deleted = rng.random(len(words)) < p_delete
    if deleted.all():
        deleted[rng.integers(len(words))] = False
    substituted = rng.random(len(words)) < p_synonym
    kept = []
    for (word, space), drop, swap in zip(words, deleted, substituted, strict=True):
        if drop:
            continue
        if swap and synonyms is not None:
            word = substitute_synonym(word, rng, synonyms)
        kept.append((word, space))
    kept[-1] = (kept[-1][0], words[-1][1])  # the text's own trailing whitespace
    return leading + "".join(word + space for word, space in kept)


def augment_texts(
    texts: Sequence[str],
    seed: int,
    epoch: int,
    *,
    p_synonym: float = 0.1,
    p_delete: float = 0.1,
    synonyms: Synonyms | None = None,
) -> list[str]:
    """One epoch's augmented copy of the training texts: a fresh draw per epoch, deterministic
    in (seed, epoch). Training set only."""
    rng = np.random.default_rng([seed, epoch, AUGMENT_STREAM])
    return [
        augment_text(text, rng, p_synonym=p_synonym, p_delete=p_delete, synonyms=synonyms)
        for text in texts
    ]


# ---------------------------------------------------------------------------------------------
# WordNet


def nltk_data_dir() -> Path:
    """Where a WordNet built from Debian's files goes: $CMHL_NLTK_DATA, else
    ~/.cache/cmhl_jax/nltk_data."""
    configured = os.environ.get("CMHL_NLTK_DATA")
    return Path(configured or Path.home() / ".cache" / "cmhl_jax" / "nltk_data").expanduser()


def prepare_debian_wordnet(source_dir: Path, data_dir: Path) -> Path | None:
    """Copies Debian's WordNet 3.0 files (packages wordnet-base, wordnet-sense-index) into
    `<data_dir>/corpora/wordnet` and adds the `lexnames` file Debian lacks, so nltk can read
    them (nltk refuses symlinks that leave its data root). Returns `data_dir`, or None when
    `source_dir` lacks a file. Safe to run concurrently: the copy is renamed into place."""
    target = data_dir / "corpora" / "wordnet"
    if (target / "lexnames").is_file():
        return data_dir
    if not all((source_dir / name).is_file() for name in WORDNET_FILES):
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=target.parent))
    for name in WORDNET_FILES:
        shutil.copyfile(source_dir / name, staging / name)
    lines = [f"{i:02d}\t{name}\t{category}\n" for i, (name, category) in enumerate(LEXNAMES)]
    (staging / "lexnames").write_text("".join(lines))
    try:
        staging.rename(target)
    except OSError:  # another process got there first
        shutil.rmtree(staging)
        if not (target / "lexnames").is_file():
            raise
    return data_dir


def load_wordnet(debian_dir: Path | None = None):
    """nltk's WordNet reader. Looked up on nltk's data path first (where
    `nltk.download("wordnet")` puts it), then built from a Debian install under
    /usr/share/wordnet (see `prepare_debian_wordnet`). Raises WordNetMissingError."""
    try:
        import nltk
        from nltk.corpus import wordnet
    except ImportError as error:
        raise WordNetMissingError(
            "synonym substitution needs nltk: pip install 'cmhl-jax[augment]' (or nltk)"
        ) from error
    try:
        wordnet.ensure_loaded()
        return wordnet
    except LookupError:
        pass
    data_dir = prepare_debian_wordnet(debian_dir or DEBIAN_WORDNET_DIR, nltk_data_dir())
    if data_dir is None:
        raise WordNetMissingError(
            "WordNet not found on nltk's data path nor in /usr/share/wordnet. Get it with "
            "`python -m nltk.downloader wordnet` (or nltk.download('wordnet')), or on Debian/"
            "Ubuntu `apt-get install wordnet-base wordnet-sense-index`; or set "
            "augment.allow_missing_wordnet=True to train without synonym substitution."
        )
    if str(data_dir) not in nltk.data.path:
        nltk.data.path.insert(0, str(data_dir))
    wordnet.ensure_loaded()
    return wordnet


@functools.cache
def wordnet_synonyms(allow_missing: bool = False) -> Synonyms | None:
    """A cached function word -> its WordNet synonyms (lemma names of all its synsets, the word
    itself excluded, underscores as spaces). Without WordNet: WordNetMissingError, or None
    (synonym substitution off, logged) when `allow_missing`."""
    try:
        wordnet = load_wordnet()
    except WordNetMissingError as error:
        if not allow_missing:
            raise
        logger.warning("synonym substitution is off: %s", error)
        return None

    @functools.lru_cache(maxsize=1 << 16)
    def synonyms(word: str) -> tuple[str, ...]:
        names = (
            lemma.replace("_", " ")
            for synset in wordnet.synsets(word)
            for lemma in synset.lemma_names()
        )
        return tuple(dict.fromkeys(n for n in names if n.lower() != word.lower()))

    return synonyms
