"""Renders benchmark JSON results as Markdown; assembles docs/benchmarks.md.

    python benchmarks/report.py --results benchmarks/results --out docs/benchmarks.md

Every number in the output comes from the JSON files the benchmarks wrote
(`benchmarks/results/<vendor>-<family>-<model>/`, one file per benchmark). Only the block
between BEGIN and END of the output is rewritten; the hand-written rest of the page stays.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAMES = ("jax", "torch_eager", "torch_compile")


def _f(x, digits=1):
    if x is None:
        return "–"
    if isinstance(x, str):
        return x
    return f"{x:,.{digits}f}"


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _pause(meta: dict) -> str:
    """How a result's interleaved calls were spaced (``--settle-ms``; absent: back to back)."""
    ms = meta.get("settle_ms")
    if ms is None:
        return " (back to back: run before the pause between calls was added)"
    return f" ({ms:.0f} ms pause before each)" if ms else " (back to back)"


def throughput_md(r: dict, title: str | None = None) -> str:
    m = r["meta"]
    names = [n for n in NAMES if n in r]
    out = _throughput_intro(m, title) + [_throughput_table(r, names), ""]
    ratios = _throughput_ratios(r, names)
    if ratios:
        out += [ratios, ""]
    return "\n".join(out + _throughput_notes(r, names))


def _throughput_intro(m: dict, title: str | None) -> list[str]:
    """The heading, the machine and run line, and the command of a throughput result."""
    title = title or (
        f"Throughput: {m['model']}, B={m['batch']}, L={m['seq']}, {m['dtype']}, {m['device']}"
    )
    where = m.get("gpu") or f"{m['cpu']}, {m['cores']} cores"
    return [
        f"### {title}",
        "",
        f"{where}; {m['date']}; torch {m['torch_version']} ({m['torch_threads']} threads), "
        f"jax {m['jax_version']} ({m['jax_backend']}); allocator: {m['allocator']}; "
        f"{m['steps']} interleaved timed steps after {m['warmup']} warm-up steps"
        f"{_pause(m)}; load average "
        f"{m.get('loadavg_1m_at_start', 0):.1f} at start, {m.get('loadavg_1m_at_end', 0):.1f} "
        "at end.",
        "",
        f"`{m['command']}`",
        "",
    ]


def _train_step_memory(e: dict) -> str:
    """Peak memory while the train steps ran, and what they added to the memory after setup."""
    if e.get("train_step_peak_mb") is None:
        return "–"
    return f"{_f(e['train_step_peak_mb'], 0)} (+{_f(e.get('train_step_added_mb'), 0)})"


def _throughput_row(n: str, e: dict, step_memory: bool) -> list:
    tr = e["train_step_ms"]
    return (
        [
            n,
            f"{_f(e['train_samples_per_s'])} ({_f(e['train_samples_per_s_min'])}–"
            f"{_f(e['train_samples_per_s_max'])})",
            _f(e["train_tokens_per_s"], 0),
            f"{_f(tr['median'], 0)} ({_f(tr['min'], 0)}–{_f(tr['max'], 0)})",
            f"{_f(e['infer_samples_per_s'])} ({_f(e['infer_samples_per_s_min'])}–"
            f"{_f(e['infer_samples_per_s_max'])})",
            _f(e["first_step_s"]),
            _f(e.get("peak_memory_mb"), 0),
        ]
        + ([_train_step_memory(e)] if step_memory else [])
        + [
            _f(e["roof_gflops"], 0),
            _f(e["train_gflops"], 0),
            f"{100 * e['train_roof_share']:.0f}%",
        ]
        + ([f"{100 * e['mfu']:.1f}%"] if "mfu" in e else [])
    )


def _throughput_table(r: dict, names: list[str]) -> str:
    """One row per framework; the train-step memory column only where a result has it (files
    written before it was measured keep their table)."""
    step_memory = any("train_step_peak_mb" in r[n] for n in names)
    rows = [_throughput_row(n, r[n], step_memory) for n in names]
    header = (
        [
            "framework",
            "train samples/s (min–max)",
            "train tokens/s",
            "step ms (min–max)",
            "infer samples/s (min–max)",
            "first step s",
            "peak MB",
        ]
        + (["train step peak MB (+ over setup)"] if step_memory else [])
        + ["matmul roof GFLOP/s", "train GFLOP/s", "share of roof"]
        + (["MFU"] if any("mfu" in r[n] for n in names) else [])
    )
    return _table(header, rows)


def _throughput_ratios(r: dict, names: list[str]) -> str:
    """The JAX / other framework ratios table ("" when JAX was not timed first)."""
    ratio_rows = []
    for n in names[1:] if names and names[0] == "jax" else []:
        q = r["ratios"]
        pr = q.get(f"train_jax_over_{n}_per_round", {})
        ratio_rows.append(
            [
                f"jax / {n}",
                f"{q[f'train_jax_over_{n}']:.2f}x",
                f"{pr.get('median', 0):.2f}x ({pr.get('min', 0):.2f}–{pr.get('max', 0):.2f})",
                f"{q[f'infer_jax_over_{n}']:.2f}x",
                f"{q[f'memory_jax_over_{n}']:.2f}x" if f"memory_jax_over_{n}" in q else "–",
            ]
        )
    if not ratio_rows:
        return ""
    header = [
        "ratio",
        "train samples/s",
        "train, per round (min–max)",
        "inference samples/s",
        "peak memory",
    ]
    return _table(header, ratio_rows)


def _throughput_notes(r: dict, names: list[str]) -> list[str]:
    """The lines under the tables: executed FLOPs, the matmul roofs' gap, load, memory."""
    m, out = r["meta"], []
    j = r.get("jax", {})
    if "executed_gflop_per_step" in j:
        out.append(
            f"Model FLOPs per train step {m['model_train_gflop_per_step']:.1f} GFLOP (6 N T + "
            f"12 n B L² H, credited to every framework); JAX executes "
            f"{j['executed_gflop_per_step']:.1f} GFLOP (XLA cost analysis; the last layer "
            f"computes only the first-token row) = {j['executed_gflops']:.0f} GFLOP/s executed."
        )
    if "jax" in r and any(n.startswith("torch") for n in names):
        out += _roof_notes(r, names)
    mem = {n: r[n].get("memory") for n in names if r[n].get("memory", {}).get("peak_rss_mb")}
    if mem:
        parts = [
            f"{n} {v['rss_after_imports_mb']:.0f} MB after imports, "
            f"{v['rss_after_setup_mb']:.0f} MB after setup"
            for n, v in mem.items()
        ]
        out.append(f"Peak memory: {m['memory_method']} ({'; '.join(parts)}).")
    return out


def _roof_notes(r: dict, names: list[str]) -> list[str]:
    m = r["meta"]
    t = next(r[n] for n in names if n.startswith("torch"))
    rel = t["roof_gflops"] / r["jax"]["roof_gflops"]
    load = m.get("loadavg_1m_at_start", 0)
    out = [
        f"Matmul roofs: PyTorch's {m['dtype']} {m.get('roof_n', 2048)}³ matmul ran at "
        f"{100 * rel:.0f}% of JAX's in this run (PyTorch BLAS: "
        f"{m.get('torch_blas', 'unknown')}). Part of the train and inference ratios is "
        "that kernel gap, not the frameworks' overheads: on a CPU where PyTorch's BLAS "
        "reaches XLA's matmul speed the ratios will be smaller."
    ]
    if load > 1.5 * m["cores"]:
        out.append(
            f"**Caveat:** load average {load:.1f} on {m['cores']} cores from other jobs "
            "during this run; PyTorch's OpenMP pool (barrier synchronisation) loses more "
            "than XLA's task pool when cores are oversubscribed, so these ratios overstate "
            "JAX's advantage on a quiet machine."
        )
    return out


def _load(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def _status(ok: bool | None) -> str:
    return "–" if ok is None else ("met" if ok else "**missed**")


EPOCH_TARGETS = (  # (framework, goal or None)
    ("torch_grouped", 0.75),
    ("hf_trainer", 0.75),
    ("torch_grouped_compile", None),
    ("torch", 0.6),
)
TARGET_ROWS = (
    ("train step vs torch eager", ">= 1.3x"),
    ("train step vs torch.compile", ">= 1.15x"),
    ("inference vs torch eager", ">= 1.5x"),
    ("train GFLOP/s share of JAX's matmul roof", ">= 70%"),
    ("JAX peak memory vs torch (worst)", "<= 1.5x"),
    ("epoch time vs torch_grouped (HF length-grouped order)", "<= 0.75x"),
    ("epoch time vs hf_trainer (Trainer, group_by_length)", "<= 0.75x"),
    ("epoch time vs torch_grouped_compile", "–"),
    ("epoch time vs torch (random order, reference)", "<= 0.6x"),
    ("JAX epoch share of the FLOP limit", ">= 70%"),
)
# The models the targets are kept for: name in the result files -> how the docs write it.
MODEL_TITLES = {"minilm": "MiniLM", "mpnet": "MPNet"}


def _epoch_cell(epochs: list[dict], fw: str) -> str | None:
    """The target cell of one epoch baseline: from the CPU's main epoch file, else from the
    first other epoch file of the model and precision that timed it; ``torch_grouped_compile``
    from the file where it ran fastest against JAX (its two shape modes are separate runs),
    naming the mode."""
    key = f"epoch_time_jax_over_{fw}"
    runs = [r for r in epochs if key in r.get("ratios", {})]
    if not runs:
        return None
    best = fw == "torch_grouped_compile"
    r = max(runs, key=lambda r: r["ratios"][key]) if best else runs[0]
    ratio, goal = r["ratios"][key], dict(EPOCH_TARGETS)[fw]
    mode = f", {r[fw]['compile_shapes']}" if best and "compile_shapes" in r[fw] else ""
    cell = f"{ratio:.2f}x (macro-F1 {r['ratios'][f'macro_f1_jax_minus_{fw}']:+.3f}{mode})"
    return cell + (f" ({_status(ratio <= goal)})" if goal else "")


def _step_cells(main: dict) -> dict:
    """The train-step targets of one throughput result."""
    cells, q, j = {}, main["ratios"], main["jax"]
    for key, label, goal in (
        ("train_jax_over_torch_eager", "train step vs torch eager", 1.3),
        ("train_jax_over_torch_compile", "train step vs torch.compile", 1.15),
        ("infer_jax_over_torch_eager", "inference vs torch eager", 1.5),
    ):
        if key in q:
            cells[label] = f"{q[key]:.2f}x ({_status(q[key] >= goal)})"
    cells["train GFLOP/s share of JAX's matmul roof"] = (
        f"{100 * j['train_roof_share']:.0f}% (executed FLOPs: "
        f"{100 * j.get('executed_gflops', 0) / j['roof_gflops']:.0f}%) "
        f"({_status(j['train_roof_share'] >= 0.7)})"
    )
    mems = [v for k, v in q.items() if k.startswith("memory_jax_over_")]
    if mems:
        cells["JAX peak memory vs torch (worst)"] = (
            f"{max(mems):.2f}x ({_status(max(mems) <= 1.5)})"
        )
    return cells


def target_cells(main: dict | None, epochs: list[dict]) -> dict:
    """label -> "measured (status)" for one CPU; ``main``: its throughput result of the
    targets' shape, ``epochs``: its full-epoch files of one model and precision, the main one
    (``epoch_<model>[_bf16].json``) first."""
    cells = _step_cells(main) if main else {}
    for label, _ in TARGET_ROWS:
        if label.startswith("epoch time vs "):
            cell = _epoch_cell(epochs, label.removeprefix("epoch time vs ").split(" ")[0])
            if cell:
                cells[label] = cell
    if epochs and "flop_limit_share" in epochs[0].get("jax", {}):
        share = epochs[0]["jax"]["flop_limit_share"]
        cells["JAX epoch share of the FLOP limit"] = f"{100 * share:.0f}% ({_status(share >= 0.7)})"
    return cells


BF16_ROWS = (  # targets measured again with bf16 matmuls on every side (--precision bf16)
    "train step vs torch eager",
    "train step vs torch.compile",
    "epoch time vs torch_grouped (HF length-grouped order)",
    "epoch time vs hf_trainer (Trainer, group_by_length)",
    "JAX epoch share of the FLOP limit",
)
BF16_SUFFIX = ", bf16 matmuls on both sides"


def targets_md(per_cpu: dict[str, tuple], per_cpu_bf16: dict[str, tuple]) -> str:
    """One row per target, one column per CPU (cells: measured (status); – = not measured);
    the fp32 rows, then the bf16 rows (JAX model.matmul_dtype=bfloat16 vs torch autocast)."""
    cpus = list(per_cpu)
    cells = {c: target_cells(*per_cpu[c]) for c in cpus}
    cells_bf16 = {c: target_cells(*per_cpu_bf16.get(c, (None, []))) for c in cpus}
    rows = []
    for label, goal in TARGET_ROWS:
        rows.append([label, goal] + [cells[c].get(label, "not measured") for c in cpus])
    for label, goal in TARGET_ROWS:
        if label in BF16_ROWS:
            row = [cells_bf16[c].get(label, "not measured") for c in cpus]
            rows.append([label + BF16_SUFFIX, goal] + row)
    return _table(["target", "goal", *[short_cpu(c) for c in cpus]], rows)


def short_cpu(cpu: str) -> str:
    """The column title of a CPU: its description without the model name's clutter."""
    return cpu.replace("(R)", "").replace("Processor ", "")


FRAMEWORKS_EPOCH = ("jax", "torch", "torch_grouped", "torch_grouped_compile", "hf_trainer")
EPOCH_HOW = {
    "torch": "random order, dynamic padding",
    "torch_grouped": "HF length-grouped order, dynamic padding",
    "torch_grouped_compile": "HF length-grouped order, torch.compile",
    "hf_trainer": "transformers.Trainer, group_by_length",
}


def epoch_md(r: dict) -> str:
    out = _epoch_intro(r["meta"])
    rows = [_epoch_row(n, r[n]) for n in FRAMEWORKS_EPOCH if n in r]
    header = [
        "loop",
        "batching",
        "updates",
        "epoch s",
        "samples/s",
        "computed tokens",
        "share of FLOP limit",
        "val acc",
        "val macro-F1",
        "val weighted-F1",
    ]
    out.append(_table(header, rows))
    return "\n".join(out + _epoch_tail(r))


def _epoch_intro(m: dict) -> list[str]:
    """Heading, machine and run line, the FLOP limit (where recorded) and the command."""
    model = MODEL_TITLES.get(m.get("model", "minilm"), m.get("model"))
    out = [
        f"### One epoch, {model}, {m['train_texts']} training texts, "
        f"{m['batch_texts']} texts/update, {m.get('precision', 'fp32')}",
        "",
        f"{m['cpu']}, {m['cores']} cores; {m['date']}; load average at end "
        f"{m['loadavg_1m_at_end']:.1f}. Mean {m['mean_tokens']:.1f} tokens/text, max "
        f"{m['max_tokens']}. Interleaved one update each{_pause(m)}; time = sum of a loop's "
        "own updates.",
        "",
    ]
    if "flop_limit_s" in m:
        out += [
            f"FLOP limit: {m['real_gflop']:,.0f} GFLOP of model FLOPs on the "
            f"{m['real_tokens']:,} real tokens / {m['roof_gflops']:.0f} GFLOP/s (best "
            f"{m.get('precision', 'fp32')} "
            f"{m['roof_n']}³ matmul of this run: "
            + ", ".join(f"{k} {v:.0f}" for k, v in m["roof_gflops_by_framework"].items())
            + f") = {m['flop_limit_s']:.1f} s.",
            "",
        ]
    return out + [f"`{m['command']}`", ""]


def _epoch_how(n: str, e: dict) -> str:
    """How a loop batched its texts."""
    if n == "jax" and e.get("pack"):
        return (
            f"packed rows of {e['pack_len']} ({e['rows_per_batch']} rows/update, "
            f"{e.get('texts_per_row', 0):.2f} texts/row, "
            f"fill {100 * e.get('packing_fill_ratio', 0):.0f}%),"
            f" shapes {e['compiled_shapes']}"
        )
    if n == "jax":
        return f"buckets, shapes {e['compiled_shapes']}"
    return EPOCH_HOW.get(n, n) + (f" ({e['compile_shapes']})" if "compile_shapes" in e else "")


def _epoch_row(n: str, e: dict) -> list:
    return [
        n,
        _epoch_how(n, e),
        e["updates"],
        _f(e["epoch_s"]),
        _f(e["samples_per_s"]),
        f"{e['computed_tokens']:,}" if "computed_tokens" in e else "–",
        f"{100 * e['flop_limit_share']:.0f}%" if "flop_limit_share" in e else "–",
        f"{e['val_accuracy']:.4f}",
        f"{e['val_macro_f1']:.4f}",
        f"{e['val_weighted_f1']:.4f}",
    ]


def _epoch_tail(r: dict) -> list[str]:
    """The epoch-time ratios and where the JAX epoch's time went."""
    out = []
    if "ratios" in r:
        parts = [
            f"{k.removeprefix('epoch_time_jax_over_')} {v:.2f}x"
            for k, v in r["ratios"].items()
            if k.startswith("epoch_time_jax_over_")
        ]
        out += ["", "Epoch time JAX / " + ", JAX / ".join(parts) + "."]
    split = r.get("jax", {}).get("time_split")
    if not split:
        return out
    shapes = "; ".join(
        f"{shape}: {s['updates']} updates, first {s['first_s']:.1f} s"
        + (f", then {s['step_ms_median']:.0f} ms median" if "step_ms_median" in s else "")
        for shape, s in split["by_shape"].items()
    )
    line = (
        f"Where the JAX epoch goes: setup (plan, model, optimizer state) "
        f"{split['setup_s']:.1f} s, first step of each shape (trace + compile + run) "
        f"{split['first_steps_s']:.1f} s, the other steps {split['steps_s']:.1f} s, host "
        f"(packing, device put) {split['host_s']:.1f} s ({shapes})."
    )
    cache = split.get("compilation_cache")
    if cache:
        line += (
            " Compilation cache: warm (executables of an earlier run loaded)."
            if cache["warm"]
            else " Compilation cache: cold (every shape compiled in the run)."
        )
    return out + ["", line]


MATMUL_COLUMNS = (  # (framework, dtype, column title) of matmul_probe.py's rows
    ("jax", "float32", "XLA fp32"),
    ("torch", "float32", "torch fp32"),
    ("jax", "bfloat16", "XLA bf16→f32"),
    ("torch", "bfloat16", "torch bf16"),
)


def matmul_md(r: dict) -> str:
    """`matmul_probe.py`'s GFLOP/s per shape and framework, and the train steps' matmul floors."""
    m = r["meta"]
    by = {(x["framework"], x["dtype"], x["shape"]): x["gflops"] for x in r["rows"]}
    shapes = list(dict.fromkeys(x["shape"] for x in r["rows"]))
    cols = [c for c in MATMUL_COLUMNS if any(k[:2] == c[:2] for k in by)]
    rows = [[s] + [_f(by.get((fw, dt, s)), 0) for fw, dt, _ in cols] for s in shapes]
    floors = [[k, _f(v, 1)] for k, v in sorted(r.get("matmul_floor_ms", {}).items())]
    out = [
        "### Matmul kernels and the train step's matmul floor",
        "",
        f"{m['cpu']}, {m['cores']} cores; {m['date']}; {m['rounds']} interleaved rounds"
        f"{_pause(m)}; load average {m.get('loadavg_1m_at_start', 0):.1f} at start, "
        f"{m.get('loadavg_1m_at_end', 0):.1f} at end.",
        "",
        f"`{m['command']}`",
        "",
        "GFLOP/s (median per call):",
        "",
        _table(["matmul (M x K x N)", *[c[2] for c in cols]], rows),
    ]
    if floors:
        out += [
            "",
            "`matmul_floor_ms`: the weight matmuls of one MiniLM train step (forward, input "
            "and weight gradient), each at its median, added up:",
            "",
            _table(["framework, dtype, tokens", "ms"], floors),
        ]
    return "\n".join(out)


INTRO = """# Benchmarks

Written by `python benchmarks/report.py` from the JSON files in `benchmarks/results/`
(every number below comes from those files; rerun the commands shown to refresh them).
"""
# report.py rewrites only what lies between these lines; the rest of docs/benchmarks.md
# (how to read and reproduce the numbers) is written by hand.
BEGIN = "<!-- begin: written by benchmarks/report.py from benchmarks/results -->"
END = "<!-- end: written by benchmarks/report.py -->"
HEADER = """PyTorch baseline: `benchmarks/torch_cmhl.py` (same encoder, heads, loss, AdamW
no-decay rule). All CPU runs: one process per benchmark under
`cmhl_jax.runtime.ensure_fast_runtime()` (jemalloc preloaded for both frameworks, XLA CPU
flags), train mode (dropout 0.1) for training, PyTorch with threads = cores,
`torch.inference_mode` for inference and `torch.compile` default mode. Each run records the
load average, and the frameworks are timed interleaved so load changes hit them alike.
"""


def cpu_key(meta: dict) -> str:
    """vendor-family-model of a result's CPU (older files only have the `cpu` line)."""
    import re

    if meta.get("cpu_vendor"):
        return f"{meta['cpu_vendor']}-{meta['cpu_family']}-{meta['cpu_model']}".lower()
    cpu = meta.get("cpu", "")
    vendor = "intel" if "Intel" in cpu else "amd" if "AMD" in cpu else "unknown"
    fam = re.search(r"family (\d+)", cpu)
    mod = re.search(r"model (\d+)", cpu)
    if fam and mod:
        return f"{vendor}-{fam.group(1)}-{mod.group(1)}"
    return cpu or "unknown"


def by_cpu(res: Path) -> dict[str, dict[str, dict]]:
    """cpu -> {file name: result} over results/<cpu>/*.json (and results/*.json)."""
    groups: dict[str, dict[str, dict]] = {}
    names: dict[str, str] = {}
    for path in sorted(res.glob("*.json")) + sorted(res.glob("*/*.json")):
        r = _load(path)
        meta = r.get("meta", {})
        key = cpu_key(meta)
        # the CPU's title is the most detailed description among its files
        groups.setdefault(key, {})[path.name] = r
        if "cpu_vendor" in meta or key not in names:
            names[key] = meta.get("cpu", "unknown CPU")
    return {names[k]: v for k, v in groups.items()}


def full_epochs(files: dict[str, dict], precision: str, model: str = "minilm") -> list[dict]:
    """One CPU's epoch results of one model and precision with ratios,
    ``epoch_<model>[_bf16].json`` first, the others only where they trained on as many texts."""
    main = f"epoch_{model}.json" if precision == "fp32" else f"epoch_{model}_{precision}.json"
    names = [main] + sorted(n for n in files if n.startswith("epoch_") and n != main)
    runs = [
        files[n]
        for n in names
        if n in files
        and files[n]["meta"].get("precision", "fp32") == precision
        and files[n]["meta"].get("model", "minilm") == model
        and "ratios" in files[n]
    ]
    texts = runs[0]["meta"]["train_texts"] if runs else None
    return [r for r in runs if r["meta"]["train_texts"] == texts]


def cpu_section(cpu: str, files: dict[str, dict]) -> list[str]:
    any_meta = next(iter(files.values()))["meta"]
    sections = [f"## {short_cpu(cpu)}"]
    m = files.get("throughput_minilm_b32_l64.json", {}).get("meta", any_meta)
    versions = (
        f"; Python {m['python']}, torch {m['torch_version']}, jax {m['jax_version']}"
        if "torch_version" in m
        else ""
    )
    isa = ", ".join(any_meta.get("cpu_isa", [])) or "not recorded"
    sections.append(f"Machine: {cpu}, {m['cores']} cores{versions}. ISA flags: {isa}.")
    cpu_tp = [
        n
        for n in sorted(files)
        if n.startswith("throughput_") and files[n]["meta"]["device"] == "cpu"
    ]
    if cpu_tp:
        sections.append("### Train step and inference (CPU)")
        sections += [_subsection(throughput_md(files[n]), n) for n in cpu_tp]
    epochs = [n for n in sorted(files) if n.startswith("epoch_")]
    if epochs:
        sections.append(
            "### Epoch (CPU)\n\n" + "\n\n".join(_subsection(epoch_md(files[n]), n) for n in epochs)
        )
    if "matmul_probe.json" in files:
        sections.append(_subsection(matmul_md(files["matmul_probe.json"]), "matmul_probe.json"))
    hidden = hidden_size_md(cpu, files)
    if hidden:
        sections.append(hidden)
    return sections


def _subsection(md: str, name: str) -> str:
    """One result file's section a level down, its heading naming the file."""
    heading, _, body = md.partition("\n")
    return f"#{heading} (`{name}`)\n{body}"


def model_targets(groups: dict, model: str, main_name: str) -> str | None:
    """The targets table of one model (its own throughput and epoch files per CPU), or None
    when no CPU has results for it."""
    main_name = main_name.replace("minilm", model)
    per_cpu = {
        cpu: (files.get(main_name), full_epochs(files, "fp32", model))
        for cpu, files in groups.items()
    }
    per_cpu_bf16 = {
        cpu: (
            files.get(main_name.replace(".json", "_bf16.json")),
            full_epochs(files, "bf16", model),
        )
        for cpu, files in groups.items()
    }
    measured = {c: v for c, v in per_cpu.items() if any(v) or any(per_cpu_bf16[c])}
    if not measured:
        return None
    title = "MiniLM" if model == "minilm" else f"{MODEL_TITLES.get(model, model)} (base size)"
    return f"## Targets (CPU, {title}, B=32, L=64 unless stated)\n\n" + targets_md(
        measured, per_cpu_bf16
    )


HIDDEN_SIZES = {"minilm": 384, "mpnet": 768}  # the models compared by hidden_size_md


def hidden_size_md(cpu: str, files: dict[str, dict]) -> str | None:
    """MiniLM (hidden 384) against MPNet (768) train steps at B=32, L=64 on one CPU, per dtype:
    JAX's and torch eager's model GFLOP/s, each one's share of its own 2048³ matmul roof and
    JAX's step ratios; only from the pairs measured in one session (the same date) on this
    CPU, else None."""
    rows = []
    for dtype, suffix in (("float32", ""), ("bfloat16", "_bf16")):
        pair = [files.get(f"throughput_{m}_b32_l64{suffix}.json") for m in HIDDEN_SIZES]
        if not all(pair) or pair[0]["meta"]["date"][:10] != pair[1]["meta"]["date"][:10]:
            continue
        for model, r in zip(HIDDEN_SIZES, pair, strict=True):
            jax, eager, q = r["jax"], r.get("torch_eager", {}), r["ratios"]
            share = {n: e.get("train_roof_share") for n, e in (("jax", jax), ("eager", eager))}
            ratio = {n: q.get(f"train_jax_over_torch_{n}") for n in ("eager", "compile")}
            rows.append(
                [
                    f"{MODEL_TITLES[model]} ({HIDDEN_SIZES[model]})",
                    dtype,
                    _f(jax["train_gflops"], 0),
                    _f(eager.get("train_gflops"), 0),
                    *("–" if v is None else f"{100 * v:.0f}%" for v in share.values()),
                    *("–" if v is None else f"{v:.2f}x" for v in ratio.values()),
                ]
            )
    if not rows:
        return None
    header = [
        "model (hidden)",
        "dtype",
        "JAX train GFLOP/s",
        "torch eager train GFLOP/s",
        "JAX share of its roof",
        "torch eager share of its roof",
        "train step JAX / torch eager",
        "JAX / torch.compile",
    ]
    return (
        f"### Hidden size 384 against 768: train step, B=32, L=64 ({short_cpu(cpu)})\n\n"
        "From the CPU's `throughput_minilm_b32_l64[_bf16].json` and "
        "`throughput_mpnet_b32_l64[_bf16].json` of one session (`bash benchmarks/run_all.sh "
        "mpnet`); the share of roof is the framework's model GFLOP/s over its own 2048³ matmul "
        "in the same file.\n\n" + _table(header, rows)
    )


def generated_sections(res: Path, main_name: str) -> list[str]:
    """What report.py writes: the targets of each model, each CPU's results, the GPU's."""
    groups = by_cpu(res)
    sections = [HEADER]
    sections.append(
        "Results are kept per CPU, one file per benchmark "
        "(`benchmarks/results/<vendor>-<family>-<model>/`): the ratios "
        "depend on the CPU, above all on how fast each framework's matmul kernel is there "
        "(XLA:CPU's YNNPACK/Eigen kernels; PyTorch's MKL, which is fast on Intel and slow on "
        "AMD). No one machine's ratio is the project's."
    )
    sections += [t for m in MODEL_TITLES if (t := model_targets(groups, m, main_name))]
    for cpu, files in groups.items():
        sections += cpu_section(cpu, files)
    gpu = [r for files in groups.values() for n, r in files.items()
           if n.startswith("throughput_") and r["meta"]["device"] == "gpu"]  # fmt: skip
    sections.append("## GPU (`bash benchmarks/gpu.sh`: roberta-base shape, B=64, L=128, bf16)")
    if gpu:
        sections += [throughput_md(r) for r in gpu]
    else:
        sections.append(
            "Not measured yet (no result file from a GPU machine). "
            "Rows: jax, torch_eager, torch_compile — not measured."
        )
    return sections


def write_doc(out: Path, generated: str) -> None:
    """Replaces the block between BEGIN and END in `out` (the hand-written rest stays); a
    file without the block gets INTRO and the block."""
    block = f"{BEGIN}\n\n{generated}\n\n{END}"
    text = out.read_text() if out.exists() else ""
    if BEGIN in text and END in text:
        head, _, rest = text.partition(BEGIN)
        text = head + block + rest.partition(END)[2]
    else:
        text = f"{INTRO}\n{block}\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--results", default=str(Path(__file__).parent / "results"))
    p.add_argument("--out", default=str(Path(__file__).parents[1] / "docs" / "benchmarks.md"))
    p.add_argument("--main", default="throughput_minilm_b32_l64.json", help="targets' source")
    args = p.parse_args(argv)
    sections = generated_sections(Path(args.results), args.main)
    write_doc(Path(args.out), "\n\n".join(sections))


if __name__ == "__main__":
    main()
