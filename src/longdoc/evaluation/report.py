"""``evaluate.py mode=lra_table``: our training runs as Long Range Arena's Table 1, beside the published rows.

Tay et al. 2021, "Long Range Arena: A Benchmark for Efficient Transformers" (ICLR 2021), Table 1: test
accuracy (%) of each model on ListOps, Text, Retrieval, Image, Pathfinder and Path-X; "FAIL" = no better than
chance; Avg = the mean over the five tasks other than Path-X. Our rows come from training run directories
(``train.py``'s output: ``config.yaml`` with ``data._target_`` and ``attention.name``; ``metrics.json`` with
``test/acc``): the data module names the task column, the attention type the row (``full`` -> "Transformer
(ours)", ``lsh`` -> "Reformer (ours)", ``local_global`` -> "Longformer (ours)", per-layer mixtures
``model.attention_layers`` -> "Mixed a+b (ours)"), a cell is the best test accuracy among the runs for it. A
self-pretraining run (``experiment=spt/<data>``: ``pretrain/`` and ``finetune/`` stages) is one run, read from its
``finetune`` stage and labelled ``... + SPT (ours)``.
Byte-level language-model runs (``Enwik8DataModule``, ``test/bpb``) are not an LRA task; they get a small
table of their own (bits per byte, lower is better; best = lowest).

Outputs (``cfg.paths.output_dir``): ``lra_table.md`` and ``lra_table.png`` (grouped bars per task: ours
solid, published hatched), and a rich table on the console.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .output import ATTENTION_FAMILIES, attention_label, markdown_table, print_tables

log = logging.getLogger("longdoc")

LRA_TASKS = ("ListOps", "Text", "Retrieval", "Image", "Pathfinder", "Path-X")

# Tay et al. 2021, Table 1 (test accuracy, %). None = FAIL (chance level). Avg: the paper's, over the five
# tasks other than Path-X. Verified against the paper's table as reproduced in the LRA repository README
# (google-research/long-range-arena) and in later papers' copies of it.
PUBLISHED_TABLE1: dict[str, Any] = {
    "source": "Tay et al. 2021, \"Long Range Arena: A Benchmark for Efficient Transformers\", ICLR 2021, Table 1",
    "rows": {
        "Transformer": (36.37, 64.27, 57.46, 42.44, 71.40, None),
        "Reformer": (37.27, 56.10, 53.40, 38.07, 68.50, None),
        "Longformer": (35.63, 62.85, 56.89, 42.22, 69.71, None),
    },
    "avg": {"Transformer": 54.39, "Reformer": 50.67, "Longformer": 53.46},
}

# Amos, Berant & Gupta 2024, "Never Train from Scratch: Fair Comparison of Long-Sequence Models Requires Data-Driven
# Priors", ICLR 2024: self-pretrained (SPT) rows. Only what the paper's text states is entered: section 3.2 gives the
# average over the LRA tasks (PathX-256 excluded) of "Transformers + Rotary + Masked SPT" (Table 2) as 86.2 ("even
# surpassing the average performance of a well-tuned S4 (86.2 vs 86.1)"); the per-task cells of its Tables 1 and 2
# are not in the copy of the paper we could read offline, so they are shown as "?" rather than guessed.
PUBLISHED_SPT: dict[str, Any] = {
    "cite": "Amos et al. 2024",
    "source": "Amos, Berant & Gupta 2024, \"Never Train from Scratch\", ICLR 2024, Table 2 (Avg as quoted in section 3.2)",
    "avg": {"Transformer + Rotary + Masked SPT": 86.2},
}

DATA_TASKS = {
    "ListOpsDataModule": "ListOps",
    "LRATextDataModule": "Text",
    "LRARetrievalDataModule": "Retrieval",
    "LRAImageDataModule": "Image",
    "LRAPathfinderDataModule": "Pathfinder",  # "Path-X" when data.resolution == 128
}
LM_DATA = {"Enwik8DataModule": "enwik8 / byte-level LM"}
LM_TASK = "LM"
_COLOURS = {"Transformer": "tab:blue", "Reformer": "tab:orange", "Longformer": "tab:green"}
# data keys worth showing next to a run (how it differs from LRA's setting)
_DATA_KEYS = ("min_length", "max_length", "num_train", "resolution", "difficulty", "seq_len", "source", "max_bytes")


class RunSkipped(ValueError):
    """A run directory cannot be used for the table; the message says why."""


@dataclass
class RunResult:
    """One usable training run.

    Attributes:
        run_dir: the directory. task: an entry of :data:`LRA_TASKS`, or ``"LM"``. attention: ``attention.name``
        (or ``"mixed"``). row: the table row label. metric: ``"test/acc"`` or ``"test/bpb"``. value: accuracy in
        % (``test/acc`` x 100) or bits per byte. data: the run's data settings that matter for comparison.
        baseline: the majority-class test accuracy in % (``majority_acc``) or None. wall_time_s: training wall
        time from ``metrics.json`` or None.
    """

    run_dir: Path
    task: str
    attention: str
    row: str
    metric: str
    value: float
    data: dict = field(default_factory=dict)
    baseline: float | None = None
    wall_time_s: float | None = None


#: What a self-pretrained run (experiment=spt/<data>: ``pretrain/`` + ``finetune/``) adds to its row label.
SPT_SUFFIX = " + SPT"
#: The stage sub-directories of a self-pretrained run directory (``longdoc.train.STAGE_ORDER``).
SPT_STAGES = ("pretrain", "finetune")


def _row_label(attn_name: str, layers: Sequence[str] | None, spt: bool = False) -> str:
    label = f"Mixed {'+'.join(str(x) for x in layers)} (ours)" if layers else attention_label(attn_name, "ours")
    return label.replace(" (ours)", f"{SPT_SUFFIX} (ours)") if spt else label


# our row labels of the single attention types, in table order (each from scratch, then self-pretrained), and the
# published family of each
_OUR_ROWS = {_row_label(a, None, spt): family for a, family in ATTENTION_FAMILIES.items() for spt in (False, True)}


def read_run(run_dir: str | os.PathLike) -> RunResult:
    """Read ``config.yaml`` and ``metrics.json`` of one training run. A two-stage self-pretraining run directory
    (``pretrain/`` and ``finetune/`` sub-directories, no ``config.yaml`` of its own) is read from its ``finetune``
    stage, its row labelled ``... + SPT (ours)`` and its wall time the sum of both stages.

    Raises:
        RunSkipped: missing / unreadable ``config.yaml`` or ``metrics.json``, a data module that is neither an
            LRA task nor a byte-level LM (``data._target_`` named), or no ``test/acc`` (``test/bpb`` for LM) in
            the metrics (e.g. a run with ``test=false``).
    """
    from omegaconf import OmegaConf

    d = Path(run_dir)
    spt = _is_spt_run(d)
    stage_dir = d / "finetune" if spt else d
    cfg_path, met_path = stage_dir / "config.yaml", stage_dir / "metrics.json"
    if spt and not cfg_path.is_file():
        raise RunSkipped(f"{d}: a self-pretraining run whose finetune stage has not started (no finetune/config.yaml)")
    if not cfg_path.is_file():
        raise RunSkipped(f"{d}: no config.yaml (not a train.py run directory)")
    if not met_path.is_file():
        raise RunSkipped(f"{d}: no metrics.json (training did not finish or was not tested)")
    try:
        cfg = OmegaConf.load(cfg_path)
        metrics = json.loads(met_path.read_text())
    except Exception as err:  # noqa: BLE001 -- any parse error makes the run unusable
        raise RunSkipped(f"{d}: cannot read config.yaml / metrics.json ({type(err).__name__}: {err})") from err
    target = str(OmegaConf.select(cfg, "data._target_", default="") or "")
    cls = target.rsplit(".", 1)[-1]
    attn = OmegaConf.select(cfg, "attention.name", default=None)
    if attn is None:
        raise RunSkipped(f"{d}: config.yaml has no attention.name")
    layers = OmegaConf.select(cfg, "model.attention_layers", default=None)
    layers = list(layers) if layers else None
    data = {k: OmegaConf.select(cfg, f"data.{k}", default=None) for k in _DATA_KEYS}
    data = {k: v for k, v in data.items() if v is not None}
    if OmegaConf.select(cfg, "data.path", default=None):
        data["path"] = str(OmegaConf.select(cfg, "data.path"))
    if cls in DATA_TASKS:
        task = DATA_TASKS[cls]
        if cls == "LRAPathfinderDataModule" and int(OmegaConf.select(cfg, "data.resolution", default=32) or 32) == 128:
            task = "Path-X"
        metric = "test/acc"
    elif cls in LM_DATA:
        task, metric = LM_TASK, "test/bpb"
    else:
        raise RunSkipped(f"{d}: data._target_={target or None!r} is not an LRA task or a byte-level LM "
                         f"(known: {sorted(DATA_TASKS) + sorted(LM_DATA)})")
    if metric not in metrics or metrics[metric] is None:
        raise RunSkipped(f"{d}: metrics.json has no {metric!r} (keys: {sorted(metrics)[:8]}); was it run with test=false?")
    value = float(metrics[metric])
    if math.isnan(value):
        raise RunSkipped(f"{d}: {metric} is NaN")
    if metric == "test/acc":
        value *= 100.0
    base = metrics.get("majority_acc")
    wall = metrics.get("wall_time_s")
    if spt and wall is not None and (d / "pretrain" / "metrics.json").is_file():
        wall = float(wall) + float(json.loads((d / "pretrain" / "metrics.json").read_text()).get("wall_time_s", 0.0))
    return RunResult(d, task, "mixed" if layers else str(attn), _row_label(str(attn), layers, spt), metric, value, data,
                     baseline=None if base is None or metric != "test/acc" else 100.0 * float(base),
                     wall_time_s=None if wall is None else float(wall))


def _is_spt_run(d: Path) -> bool:
    """``d`` is a self-pretraining run directory (``experiment=spt/<data>``): no ``config.yaml`` of its own, a
    stage sub-directory (:data:`SPT_STAGES`) with one."""
    return not (d / "config.yaml").is_file() and any((d / s / "config.yaml").is_file() for s in SPT_STAGES)


def _is_run_dir(d: Path) -> bool:
    """``d`` is a training run directory: ``config.yaml`` of its own, or a self-pretraining run."""
    return (d / "config.yaml").is_file() or _is_spt_run(d)


def _runs_below(d: Path) -> list[Path]:
    """The run directories one level below ``d``, else two levels below (``<sweep>/<n>_<overrides>``,
    ``<task>/runs/<run>``), sorted. Hidden directories (Hydra's ``.hydra``) are never runs and never searched; a
    run directory found stands for itself (a self-pretraining run's ``pretrain`` / ``finetune`` stages are not
    listed on their own)."""
    def children(p: Path) -> list[Path]:
        return sorted(c for c in p.iterdir() if c.is_dir() and not c.name.startswith("."))

    level1 = children(d)
    runs = [c for c in level1 if _is_run_dir(c)]
    if runs:
        return runs
    return sorted(g for c in level1 for g in children(c) if _is_run_dir(g))


def expand_run_dirs(patterns: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Run directories named by ``patterns`` (paths or glob patterns, relative to the working directory).

    A run directory is one with its own ``config.yaml``, or a self-pretraining run (``experiment=spt/<data>``:
    ``pretrain/`` and ``finetune/`` stages, no ``config.yaml`` of its own), which stands for itself (:func:`read_run`
    reads its ``finetune`` stage). Any other directory whose sub-directories (else sub-sub-directories) are run
    directories, such as a Hydra multirun folder, stands for those. Hidden directories such as Hydra's ``.hydra``
    are never runs. Returns ``(dirs, warnings)``: de-duplicated directories in pattern order (each pattern's
    sorted) and one message per pattern that matched nothing.
    """
    dirs: list[Path] = []
    warnings: list[str] = []
    for pat in patterns:
        pat = str(pat)
        matches = sorted(glob.glob(os.path.expanduser(pat))) if glob.has_magic(pat) else [os.path.expanduser(pat)]
        matches = [m for m in matches if Path(m).is_dir()]
        if not matches:
            warnings.append(f"runs entry {pat!r} matches no directory")
            continue
        for m in matches:
            p = Path(m)
            if not _is_run_dir(p):
                subs = _runs_below(p)
                if subs:
                    dirs.extend(subs)
                    continue
            dirs.append(p)
    seen: set[Path] = set()
    out = []
    for d in dirs:
        key = d.resolve()
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out, warnings


def collect_runs(run_dirs: Sequence[str | os.PathLike]) -> tuple[list[RunResult], list[str]]:
    """:func:`read_run` on every directory; returns ``(usable runs, one warning per skipped directory)``."""
    results, skipped = [], []
    for d in run_dirs:
        try:
            results.append(read_run(d))
        except RunSkipped as err:
            skipped.append(str(err))
    return results, skipped


def _row_order(label: str) -> tuple[int, str]:
    order = list(_OUR_ROWS)
    return (order.index(label) if label in order else len(order), label)


def best_cells(results: Sequence[RunResult]) -> dict[tuple[str, str], RunResult]:
    """(row, task) -> the best run: highest accuracy, or lowest bits per byte for LM."""
    best: dict[tuple[str, str], RunResult] = {}
    for r in results:
        key = (r.row, r.task)
        cur = best.get(key)
        if cur is None or (r.value < cur.value if r.task == LM_TASK else r.value > cur.value):
            best[key] = r
    return best


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _fmt(x: float | None, fail: str = "FAIL") -> str:
    return fail if x is None else f"{x:.2f}"


def lra_table(results: Sequence[RunResult]) -> tuple[list[str], list[list[str]], list[str]]:
    """The LRA Table 1 layout: ``(header, rows, notes)``.

    Columns: Model, the six tasks, ``Avg`` and ``Paper avg``. Our rows first (a cell: best test accuracy in %,
    ``-`` where we have no run), ``Avg`` = the mean over the tasks of that row; then the published rows
    (:data:`PUBLISHED_TABLE1`), their ``Avg`` over the tasks present in our rows (FAIL counted as 50, chance on
    a binary task, should Path-X be among them) so that the two can be compared, and the paper's average; then the
    self-pretrained published row (:data:`PUBLISHED_SPT`: its paper average only).
    """
    best = best_cells([r for r in results if r.task != LM_TASK])
    ours_rows = sorted({row for row, _ in best}, key=_row_order)
    present = [t for t in LRA_TASKS if any((row, t) in best for row in ours_rows)]
    header = ["Model", *LRA_TASKS, "Avg", "Paper avg"]
    rows = []
    for row in ours_rows:
        vals = [best[(row, t)].value if (row, t) in best else None for t in LRA_TASKS]
        avg = _mean([v for v in vals if v is not None])
        rows.append([row, *[_fmt(v, "-") for v in vals], _fmt(avg, "-"), "-"])
    for name, vals in PUBLISHED_TABLE1["rows"].items():
        sel = [(vals[LRA_TASKS.index(t)] if vals[LRA_TASKS.index(t)] is not None else 50.0) for t in present]
        rows.append([f"{name} (Tay et al. 2021)", *[_fmt(v) for v in vals], _fmt(_mean(sel), "-"),
                     f"{PUBLISHED_TABLE1['avg'][name]:.2f}"])
    for name, avg in PUBLISHED_SPT["avg"].items():
        rows.append([f"{name} ({PUBLISHED_SPT['cite']})", *["?"] * len(LRA_TASKS), "-", f"{avg:.2f}"])
    notes = [
        f"Published rows: {PUBLISHED_TABLE1['source']} (test accuracy %, FAIL = chance level; "
        "'Paper avg' over the five tasks other than Path-X).",
        f"Avg: ours over the tasks of that row; published over the tasks we ran ({', '.join(present) or 'none'}), "
        "so that the two can be compared.",
        f"Self-pretrained published row: {PUBLISHED_SPT['source']}; its model is larger than LRA's and uses rotary "
        "positions; '?' = a per-task value not entered (not in the copy of the paper available offline).",
    ]
    return header, rows, notes


def lm_table(results: Sequence[RunResult]) -> tuple[list[str], list[list[str]]]:
    """Byte-level LM runs: ``(header, rows)``, one row per attention type with the best (lowest) test bits per
    byte and the number of runs; empty rows when there are none."""
    lm = [r for r in results if r.task == LM_TASK]
    best = best_cells(lm)
    header = ["Model", "test bits per byte (lower is better)", "runs", "data"]
    rows = []
    for (row, _), r in sorted(best.items(), key=lambda kv: _row_order(kv[0][0])):
        n = sum(1 for x in lm if x.row == row)
        rows.append([row, f"{r.value:.3f}", str(n), _data_desc(r.data)])
    return header, rows


def _data_desc(data: Mapping) -> str:
    return ", ".join(f"{k}={v}" for k, v in data.items())


def lra_markdown(results: Sequence[RunResult], skipped: Sequence[str] = ()) -> str:
    """``lra_table.md``: the LRA table, the LM table (if any LM run), the runs used and the skipped ones."""
    header, rows, notes = lra_table(results)
    lines = ["# Long Range Arena: our runs beside the published results", "", markdown_table(header, rows), "",
             *[f"- {n}" for n in notes]]
    lra_runs = [r for r in results if r.task != LM_TASK]
    if lra_runs:
        lines.append("- Ours: the best test accuracy among the runs for each cell, from the runs listed below; our "
                     "model sizes, data sizes and training budgets differ from LRA's (see the data column), so "
                     "compare with care.")
    lm_header, lm_rows = lm_table(results)
    if lm_rows:
        lines += ["", "## Byte-level LM (bits per byte)", "", markdown_table(lm_header, lm_rows), "",
                  "- Not an LRA task: test bits per byte of the best run per attention type (lower is better)."]
    lines += ["", "## Runs used", "",
              markdown_table(["run", "task", "attention", "metric", "value", "majority class", "train wall time", "data"],
                        [[str(r.run_dir), r.task, r.row, r.metric, f"{r.value:.2f}" if r.metric == "test/acc"
                          else f"{r.value:.3f}", "-" if r.baseline is None else f"{r.baseline:.2f}",
                          "-" if r.wall_time_s is None else f"{r.wall_time_s / 60:.1f} min", _data_desc(r.data)]
                         for r in results])]
    if skipped:
        lines += ["", "## Skipped", "", *[f"- {s}" for s in skipped]]
    return "\n".join(lines) + "\n"


def plot_lra(results: Sequence[RunResult], path: str | os.PathLike) -> bool:
    """``lra_table.png``: per task, grouped bars of our best accuracy (solid) and the published one (hatched),
    one colour per attention family; a second panel with bits per byte when LM runs exist.
    Returns False when matplotlib is missing (nothing written)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib not installed: no lra_table.png")
        return False
    best = best_cells([r for r in results if r.task != LM_TASK])
    ours_rows = sorted({row for row, _ in best}, key=_row_order)
    tasks = [t for t in LRA_TASKS if t != "Path-X" or any(t == task for _, task in best)]
    # series ordered by family: ours next to the published row of the same attention type
    series: list[tuple[str, list[float | None], str, bool]] = []
    families = list(PUBLISHED_TABLE1["rows"])
    for fam in families + [None]:
        for row in ours_rows:
            if _OUR_ROWS.get(row) == fam:
                series.append((row, [best[(row, t)].value if (row, t) in best else None for t in tasks],
                               _COLOURS.get(fam, "tab:purple"), False))
        if fam is not None:
            vals = PUBLISHED_TABLE1["rows"][fam]
            series.append((f"{fam} (Tay et al. 2021)", [vals[LRA_TASKS.index(t)] for t in tasks], _COLOURS[fam], True))
    lm_header, lm_rows = lm_table(results)
    ncols = 2 if lm_rows else 1
    fig, axes = plt.subplots(1, ncols, figsize=(11 if ncols == 1 else 14, 4.8), squeeze=False,
                             gridspec_kw={"width_ratios": [4, 1]} if ncols == 2 else None)
    ax = axes[0][0]
    drawn: set[str] = set()
    for i, t in enumerate(tasks):
        # bars of this task: published always (FAIL is a labelled empty slot), ours where there is a run
        here = [(label, vals[i], colour, pub) for label, vals, colour, pub in series if pub or vals[i] is not None]
        for k, (label, v, colour, published) in enumerate(here):
            x = i + (k - (len(here) - 1) / 2) * (0.8 / max(1, len(here)))
            w = 0.8 / max(1, len(here)) * 0.95
            bar = ax.bar([x], [v if v is not None else 0.0], w, label=None if label in drawn else label, color=colour,
                         alpha=0.45 if published else 0.95, hatch="//" if published else None,
                         edgecolor=colour if published else "black", linewidth=0.6)[0]
            drawn.add(label)
            txt = "FAIL" if v is None else f"{v:.1f}"
            ax.text(bar.get_x() + bar.get_width() / 2, (v or 0.0) + 0.8, txt, ha="center", va="bottom", fontsize=7,
                    rotation=90)
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels(tasks)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Long Range Arena: ours (solid) vs Tay et al. 2021, Table 1 (hatched)")
    ax.grid(True, axis="y", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    order = [lbl for lbl, *_ in series]
    pairs = sorted(zip(handles, labels), key=lambda hl: order.index(hl[1]))
    ax.legend([h for h, _ in pairs], [lbl for _, lbl in pairs], fontsize=7, ncol=3, loc="upper left")
    if lm_rows:
        ax2 = axes[0][1]
        labels = [r[0] for r in lm_rows]
        vals = [float(r[1]) for r in lm_rows]
        colours = [_COLOURS.get(_OUR_ROWS.get(lab, ""), "tab:purple") for lab in labels]
        ax2.bar(range(len(vals)), vals, color=colours, edgecolor="black", linewidth=0.6)
        for i, v in enumerate(vals):
            ax2.text(i, v, f"{v:.3f}", ha="center", va="bottom", fontsize=7)
        ax2.set_xticks(range(len(vals)))
        ax2.set_xticklabels([lab.replace(" (ours)", "") for lab in labels], rotation=30, ha="right", fontsize=7)
        ax2.set_ylabel("test bits per byte (lower is better)")
        ax2.set_title("Byte-level LM")
        ax2.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def print_lra(results: Sequence[RunResult]) -> None:
    """Print the LRA table (and the LM table) with rich."""
    header, rows, _ = lra_table(results)
    tables = [("Long Range Arena test accuracy (%): ours vs Tay et al. 2021, Table 1", header, rows)]
    lm_header, lm_rows = lm_table(results)
    if lm_rows:
        tables.append(("Byte-level LM (bits per byte)", lm_header, lm_rows))
    print_tables(tables)


def write_lra_report(results: Sequence[RunResult], out_dir: str | os.PathLike,
                     skipped: Sequence[str] = ()) -> dict[str, Path]:
    """Write ``lra_table.md`` and ``lra_table.png`` into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"md": out / "lra_table.md", "png": out / "lra_table.png"}
    files["md"].write_text(lra_markdown(results, skipped))
    if not plot_lra(results, files["png"]):
        files.pop("png")
    return files


def lra_table_mode(cfg) -> dict[str, Any]:
    """``evaluate.py mode=lra_table runs=[<run dir or glob>,...]``: read the runs, write ``lra_table.md`` /
    ``lra_table.png`` into ``cfg.paths.output_dir``, print the table. Returns ``{"results", "skipped", "files"}``.

    Raises:
        ValueError: ``runs`` missing or empty; no usable run among them (the message lists why each was skipped
            and what a usable run directory holds).
    """
    from omegaconf import OmegaConf

    runs = cfg.get("runs")
    if isinstance(runs, str):
        runs = [runs]
    elif runs is not None:
        runs = list(OmegaConf.to_container(runs, resolve=True)) if OmegaConf.is_config(runs) else list(runs)
    if not runs:
        raise ValueError("mode=lra_table needs runs=[<run dir>,...]: train.py run directories (config.yaml + "
                         "metrics.json), glob patterns allowed, e.g. 'runs=[outputs/train/runs/*]'")
    dirs, warnings = expand_run_dirs(runs)
    results, skipped = collect_runs(dirs)
    skipped = warnings + skipped
    for s in skipped:
        log.warning("lra_table: ignored -- %s", s)
    if not results:
        raise ValueError(
            "mode=lra_table found no usable run in runs=" + str(list(runs)) + ". Expected train.py run directories "
            "holding config.yaml (data._target_ one of " + ", ".join(sorted(DATA_TASKS) + sorted(LM_DATA))
            + "; attention.name) and metrics.json with 'test/acc' (or 'test/bpb' for Enwik8DataModule). Skipped: "
            + ("; ".join(skipped) or "nothing matched"))
    files = write_lra_report(results, cfg.paths.output_dir, skipped)
    print_lra(results)
    log.info("lra_table: %d run(s) used, %d skipped; wrote %s", len(results), len(skipped),
             ", ".join(str(p) for p in files.values()))
    return {"results": results, "skipped": skipped, "files": files}
