"""``evaluate.py mode=efficiency``: Long Range Arena's efficiency table for our attention types.

Tay et al. 2021, "Long Range Arena: A Benchmark for Efficient Transformers", section 3.4 and Table 2:
training steps per second and peak memory of each model at sequence lengths 1K-4K, relative to the
vanilla Transformer. Here: for every attention in ``efficiency.attentions`` and every length in
``efficiency.lengths`` the encoder of the training configuration (``conf/model/encoder.yaml`` with
``attention=<name>``, or the model saved in ``ckpt_path``) plus a pooled linear classifier runs training
steps -- forward, cross-entropy, backward, ``AdamW.step()``, ``zero_grad(set_to_none=True)`` -- on a
synthetic batch of ``efficiency.batch_size`` random byte sequences (every token real, token 0 global as
the data's ``<cls>``).

Measurement (:mod:`.measure` in the worker, :mod:`.runner` in the parent): every configuration runs in its own
fresh Python process
(``python -m longdoc.evaluation.efficiency --worker '<json>'``), so allocator caches and library buffers do
not leak between configurations; a process that runs past ``efficiency.timeout_s`` or above the memory
limit is killed and reported as ``timeout`` / ``oom``, as is an out-of-memory error inside it (the report
is still written). On CPU, time and memory are measured in two processes (the memory one with glibc
settings that make resident memory follow the live allocations, see :mod:`.measure`) unless
``efficiency.separate_memory_process=false``; on CUDA one process measures both.

* steps/s = 1 / (median, or ``efficiency.time_stat=min``, time of ``efficiency.repeats`` steps after
  ``efficiency.warmup`` untimed ones);
* peak memory (MiB) = the bytes alive between steps (parameters, AdamW moments, the batch; exact) + the
  peak growth during one step (CPU: peak resident-set growth; CUDA: ``max_memory_allocated`` growth);
* ratios: steps/s over full attention's steps/s at the same length (LRA's "relative speed", above 1 =
  faster) and peak memory over full attention's (below 1 = smaller).

Outputs (``cfg.paths.output_dir``): ``efficiency.md``, ``efficiency.csv``, ``efficiency.png`` (log-log steps/s
and peak memory vs length, one line per attention).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import measure, runner
from .output import (
    attention_label,
    cell,
    fmt_mib,
    fmt_time,
    machine_header,
    machine_info,
    markdown_table,
    plot_panels,
    print_tables,
    ratio,
    value,
    write_csv,
)

log = logging.getLogger("longdoc")

WORKER_CMD = ("-m", "longdoc.evaluation.efficiency")
FIELDS = ("attention", "n", "batch_size", "status", "steps_per_s", "speed_vs_full", "peak_mem_mib", "memory_vs_full",
          "time_s", "time_median_s", "time_min_s", "state_mib", "step_peak_mib", "alloc_peak_mib",
          "rss_peak_total_mib", "mem_method", "n_params", "device_name", "wall_s", "note")

# LRA Table 2 (Tay et al. 2021, section 3.4): training steps per second and peak memory per device (GB),
# batch size 32, byte-level text classification, 4x4 TPU v3, JAX/Flax. Sparse Transformer and Longformer
# were not benchmarked for speed there (mask-based implementations, Appendix B.2).
PUBLISHED_TABLE2: dict[str, Any] = {
    "source": "Tay et al. 2021, Long Range Arena, Table 2 (batch 32, 4x4 TPU v3)",
    "lengths": (1024, 2048, 3072, 4096),
    "rows": {
        "Transformer": {"steps_per_s": (8.1, 4.9, 2.3, 1.4), "peak_mem_gb": (0.85, 2.65, 5.51, 9.48)},
        "Reformer": {"steps_per_s": (4.4, 2.2, 1.5, 1.1), "peak_mem_gb": (0.48, 0.99, 1.53, 2.28)},
    },
    "note": "Longformer: not benchmarked for speed or memory in LRA (Appendix B.2)",
}


FULL_NOTE = ("Full attention is torch's `scaled_dot_product_attention`; without a padding mask (as here) its fused "
             "kernels -- on CPU as on CUDA -- do not store the N x N score matrix, so its memory grows about linearly "
             "with N, unlike the implementations measured in LRA's Table 2; its time still grows quadratically.")


@dataclass
class EfficiencySettings:
    """What to measure (``efficiency.*``: ``conf/efficiency/default.yaml``, composed into ``conf/evaluate.yaml``).

    Raises (``__post_init__``):
        ValueError: empty ``attentions`` / ``lengths``, a non-positive length / ``batch_size`` / ``repeats``,
            negative ``warmup``, ``time_stat`` not 'median' or 'min', ``device`` not 'cpu', 'cuda[:i]' or 'auto',
            ``cpu_allocator`` not 'tuned' or 'default';
            the message names the key (``efficiency.<key>``).
    """

    attentions: Sequence[str] = ("full", "lsh", "local_global")
    lengths: Sequence[int] = (1024, 2048, 4096)
    batch_size: int = 1
    repeats: int = 5
    warmup: int = 2
    time_stat: str = "median"
    device: str = "cpu"
    threads: int | None = None
    cpu_allocator: str = "default"
    timeout_s: float = 600.0
    mem_limit_gib: float | None = None
    separate_memory_process: bool = True
    alloc_profile: bool = False
    vocab_size: int = 256
    num_classes: int = 2
    seed: int = 0
    skip_after_failure: bool = True

    def __post_init__(self):
        self.attentions = [str(a) for a in self.attentions]
        self.lengths = [int(n) for n in self.lengths]
        if not self.attentions:
            raise ValueError("efficiency.attentions is empty: give e.g. efficiency.attentions=[full,lsh,local_global]")
        if not self.lengths or any(n <= 0 for n in self.lengths):
            raise ValueError(f"efficiency.lengths must be a non-empty list of positive sequence lengths, "
                             f"got {list(self.lengths)}; e.g. efficiency.lengths=[1024,2048,4096]")
        for key in ("batch_size", "repeats", "vocab_size", "num_classes"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"efficiency.{key} must be a positive integer, got {v!r}")
        if self.vocab_size < 3:
            raise ValueError(f"efficiency.vocab_size must be >= 3 (ids 0/1 are <pad>/<cls>), got {self.vocab_size}")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"efficiency.warmup must be an integer >= 0, got {self.warmup!r}")
        if self.time_stat not in ("median", "min"):
            raise ValueError(f"efficiency.time_stat must be 'median' or 'min', got {self.time_stat!r}")
        if not (self.device in ("cpu", "auto") or str(self.device).startswith("cuda")):
            raise ValueError(f"efficiency.device must be 'cpu', 'cuda', 'cuda:<i>' or 'auto', got {self.device!r}")
        if self.cpu_allocator not in ("tuned", "default"):
            raise ValueError(f"efficiency.cpu_allocator must be 'tuned' or 'default', got {self.cpu_allocator!r}")
        if self.timeout_s <= 0:
            raise ValueError(f"efficiency.timeout_s must be positive, got {self.timeout_s}")

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


# ----------------------------------------------------------------------------------------------
# worker side
# ----------------------------------------------------------------------------------------------


def build_step_model(model_cfg: Mapping, *, vocab_size: int, num_classes: int, max_seq_len: int):
    """Encoder of ``model_cfg`` + pooling (``model_cfg['pooling']``: 'cls' or 'mean') + ``Linear(d_model, C)``.

    ``forward(input_ids (B, N) int64, padding_mask (B, N) bool, global_attention_mask (B, N) bool) -> (B, C)``.
    """
    from torch import nn

    from ..models import Encoder
    from .train_config import encoder_kwargs

    kw = encoder_kwargs(model_cfg, vocab_size=vocab_size, max_seq_len=max_seq_len)
    pooling = model_cfg.get("pooling", "cls")
    if pooling not in ("cls", "mean"):
        raise ValueError(f"model.pooling must be 'cls' or 'mean', got {pooling!r}")

    class StepModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = Encoder(**kw)
            self.head = nn.Linear(kw["d_model"], num_classes)

        def forward(self, ids, padding_mask, global_attention_mask):
            hidden = self.encoder(ids, padding_mask, global_attention_mask)
            pooled = hidden[:, 0] if pooling == "cls" else hidden.mean(dim=1)
            return self.head(pooled)

    return StepModel()


def worker(cfg: dict) -> dict:
    """Worker process body: one (attention, length) configuration; returns the measurements of :func:`.measure.measure` plus
    ``n_params``, ``state_mib`` and ``step_peak_mib`` (``peak_mem_mib`` = state + step peak)."""
    import torch
    import torch.nn.functional as F

    measure.worker_setup(cfg)
    device, n, b = cfg["device"], int(cfg["n"]), int(cfg["batch_size"])
    model = build_step_model(cfg["model"], vocab_size=int(cfg["vocab_size"]), num_classes=int(cfg["num_classes"]),
                             max_seq_len=n).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(int(cfg.get("seed", 0)))
    ids = torch.randint(2, int(cfg["vocab_size"]), (b, n), generator=gen)
    ids[:, 0] = 1  # <cls>
    ids = ids.to(device)
    padding_mask = torch.ones(b, n, dtype=torch.bool, device=device)
    glob = torch.zeros(b, n, dtype=torch.bool, device=device)
    glob[:, 0] = True
    labels = torch.randint(0, int(cfg["num_classes"]), (b,), generator=gen).to(device)

    def step():  # gradients dropped at the end: between steps only the persistent state is alive
        loss = F.cross_entropy(model(ids, padding_mask, glob).float(), labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        del loss

    step()  # fail fast; also the first warm-up step (creates the AdamW state)
    res = measure.measure(step, {**cfg, "warmup": max(int(cfg["warmup"]) - 1, 0), "mem_warmup": 0})
    res["n_params"] = sum(p.numel() for p in model.parameters())
    if "peak_mem_mib" in res:
        state = measure.tensor_bytes([list(model.parameters()), list(model.buffers()), opt.state, ids, padding_mask,
                                glob, labels])
        res["state_mib"] = state / measure.MIB
        res["step_peak_mib"] = res["peak_mem_mib"]
        res["peak_mem_mib"] += res["state_mib"]
        if res.get("alloc_peak_mib") is not None:
            res["alloc_peak_mib"] += res["state_mib"]
    return res


# ----------------------------------------------------------------------------------------------
# parent side
# ----------------------------------------------------------------------------------------------


def run_efficiency(model_cfgs: Mapping[str, Mapping], settings: EfficiencySettings,
                   progress=None) -> list[dict]:
    """Measure every (attention, length); one fresh process (two on CPU) per configuration.

    Args:
        model_cfgs: attention name -> the ``model`` section (plain dict, as in ``conf/model/encoder.yaml``
            resolved, with that attention) to build; its ``attention.name`` must be the key.
        settings: lengths, batch size, repeats, device, limits.
        progress: optional ``callable(row)`` called after each configuration.

    Returns:
        one row per (attention, length) in the order of ``settings.attentions`` then ``settings.lengths``:
        ``attention``, ``n``, ``status`` ('ok' | 'timeout' | 'oom' | 'error' | 'skipped'), ``steps_per_s``,
        ``peak_mem_mib`` and the measured fields; ratios to full attention are added by :func:`add_ratios`.
        Failures are rows, never exceptions.

    Raises:
        ValueError: an attention of ``settings.attentions`` missing from ``model_cfgs``.
    """
    missing = [a for a in settings.attentions if a not in model_cfgs]
    if missing:
        raise ValueError(f"efficiency: no model config for attentions {missing}")
    device = settings.resolved_device()
    cuda = device.startswith("cuda")
    mem_limit = None
    if not cuda:
        mem_limit = int(settings.mem_limit_gib * measure.GIB) if settings.mem_limit_gib else runner.default_mem_limit_bytes()
    phases = None if (cuda or settings.separate_memory_process) else ["all"]
    rows: list[dict] = []
    for attn in settings.attentions:
        failed_at = None
        for n in sorted(settings.lengths):
            base = {"attention": attn, "n": n, "batch_size": settings.batch_size}
            if failed_at is not None and settings.skip_after_failure:
                row = {**base, "status": "skipped", "note": f"after {failed_at[1]} at N={failed_at[0]}", "wall_s": 0.0}
            else:
                wcfg = {"model": dict(model_cfgs[attn]), "n": n, "batch_size": settings.batch_size, "device": device,
                        "repeats": settings.repeats, "warmup": max(settings.warmup, 1), "threads": settings.threads,
                        "seed": settings.seed, "time_stat": settings.time_stat, "alloc_profile": settings.alloc_profile,
                        "cpu_allocator": settings.cpu_allocator,
                        "vocab_size": settings.vocab_size, "num_classes": settings.num_classes}
                res = runner.run_measured(WORKER_CMD, wcfg, timeout=settings.timeout_s, mem_limit_bytes=mem_limit,
                                     phases=phases)
                row = {**base, **res}
                if row["status"] == "ok" and row.get("time_s"):
                    row["steps_per_s"] = 1.0 / float(row["time_s"])
                elif row["status"] in ("timeout", "oom"):
                    failed_at = (n, row["status"])
            rows.append(row)
            if progress is not None:
                progress(row)
    add_ratios(rows)
    return rows


def add_ratios(rows: list[dict]) -> list[dict]:
    """Set ``speed_vs_full`` (steps/s over full attention's at the same N and batch size) and
    ``memory_vs_full`` (peak memory over full's) on every row where both are known; in place, returned."""
    full = {(r["n"], r.get("batch_size")): r for r in rows if r["attention"] == "full"}
    for r in rows:
        ref = full.get((r["n"], r.get("batch_size")))
        r["speed_vs_full"] = ratio(value(r, "steps_per_s"), value(ref, "steps_per_s"))
        r["memory_vs_full"] = ratio(value(r, "peak_mem_mib"), value(ref, "peak_mem_mib"))
    return rows


def _fmt_rate(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.3g}" if x < 100 else f"{x:.0f}"


def _cell(row: Mapping | None, key: str, ratio_key: str, fmt) -> str:
    if row is None:
        return "-"
    if row.get("status") != "ok":
        return str(row.get("status", "-"))
    rel = row.get(ratio_key)
    return fmt(row.get(key)) + ("" if rel is None else f" ({rel:.2f}x)")


def efficiency_tables(rows: Sequence[Mapping]) -> tuple[list[str], list[list[str]], list[list[str]]]:
    """``(header, speed_rows, memory_rows)``: header = ["Attention", "N=<n>", ...]; cells "steps/s (ratio)" and
    "MiB (ratio)" or the status of a failed configuration (LRA Table 2's layout)."""
    lengths = sorted({r["n"] for r in rows})
    attns = list(dict.fromkeys(r["attention"] for r in rows))
    by = {(r["attention"], r["n"]): r for r in rows}
    header = ["Attention"] + [f"N={n}" for n in lengths]
    speed = [[attention_label(a)] + [_cell(by.get((a, n)), "steps_per_s", "speed_vs_full", _fmt_rate)
                                             for n in lengths] for a in attns]
    mem = [[attention_label(a)] + [_cell(by.get((a, n)), "peak_mem_mib", "memory_vs_full", fmt_mib)
                                           for n in lengths] for a in attns]
    return header, speed, mem


def published_markdown() -> str:
    """LRA Table 2's Transformer and Reformer rows as a markdown table (steps/s; peak GB per device)."""
    lengths = PUBLISHED_TABLE2["lengths"]
    rows_in = PUBLISHED_TABLE2["rows"]
    ref = rows_in["Transformer"]
    head = ["Model"] + [f"steps/s {n // 1024}K" for n in lengths] + [f"GB {n // 1024}K" for n in lengths]
    rows = []
    for name, r in rows_in.items():
        rows.append([name] + [f"{s} ({s / s0:.1f}x)" for s, s0 in zip(r["steps_per_s"], ref["steps_per_s"])]
                    + [f"{m:.2f}" for m in r["peak_mem_gb"]])
    return markdown_table(head, rows)


def efficiency_markdown(rows: Sequence[Mapping], settings: EfficiencySettings, info: Mapping,
                        model_desc: str = "", load_end: float | None = None) -> str:
    """The ``efficiency.md`` report: machine, settings, steps/s and peak-memory tables with ratios to full
    attention (LRA Table 2 layout), LRA's published rows, per-configuration details and failures."""
    header, speed, mem = efficiency_tables(rows)
    method = next((r["mem_method"] for r in rows if r.get("mem_method")), "?")
    load_start = info.get("load_avg_1m")
    cores = info.get("usable_cores") or info.get("cores")
    load_note = ""
    if load_start is not None:
        load_note = (f"Load average (1 min) {load_start} at the start"
                     + (f", {load_end:.2f} at the end" if load_end is not None else "") + f", on {cores} usable cores"
                     + ("; **the machine was shared with other jobs, so the timings are indicative** "
                        "(memory figures are not affected by load)."
                        if max(load_start, load_end or 0) > 0.5 * (cores or 1) else "."))
    lines = [
        "# Training efficiency vs sequence length (LRA Table 2 layout)", "",
        machine_header(info), "",
        load_note, "",
        f"One training step = forward, cross-entropy, backward, AdamW step, on a synthetic batch of "
        f"{settings.batch_size} x N random tokens (all real, token 0 global). Model: {model_desc}. "
        f"Each configuration runs in a fresh process; steps/s = 1 / {settings.time_stat} step time over "
        f"{settings.repeats} step(s) after {settings.warmup} warm-up step(s); peak memory = parameters + AdamW "
        f"state + batch (exact) + peak growth during one step ({method}). In brackets: ratio to full "
        "attention at the same N (speed: above 1.00x is faster; memory: below 1.00x is smaller).", "",
        *([FULL_NOTE, ""] if any(r["attention"] == "full" for r in rows) else []),
        "## Steps per second", "", markdown_table(header, speed), "",
        "## Peak memory (MiB)", "", markdown_table(header, mem), "",
        f"## Published: {PUBLISHED_TABLE2['source']}", "",
        published_markdown(), "",
        f"{PUBLISHED_TABLE2['note']}. Absolute numbers are not comparable (TPU, JAX, batch 32, LRA's model sizes); "
        "compare the ratios and how they change with N.", "",
        "## Every configuration", "",
        markdown_table(["attention", "N", "status", "steps/s", "time", "peak MiB", "state MiB", "step peak MiB",
                          "params", "wall s"],
                         [[r["attention"], r["n"], r["status"], _fmt_rate(value(r, "steps_per_s")),
                           cell(r, "time_s", fmt_time), cell(r, "peak_mem_mib", fmt_mib),
                           cell(r, "state_mib", fmt_mib), cell(r, "step_peak_mib", fmt_mib),
                           r.get("n_params", "-") if r.get("status") == "ok" else "-",
                           f"{float(r.get('wall_s') or 0):.1f}"] for r in rows]),
    ]
    notes = [f"- {r['attention']} N={r['n']}: {r['status']} -- {r.get('note', '')}" for r in rows
             if r.get("status") != "ok"]
    if notes:
        lines += ["", "Configurations that did not finish:", "", *notes]
    return "\n".join(lines) + "\n"


def plot_efficiency(rows: Sequence[Mapping], path: str | os.PathLike, title: str = "") -> bool:
    """``efficiency.png``: steps/s vs N and peak memory vs N, log-log, one line per attention.
    Returns False when matplotlib is missing (nothing written)."""
    lengths = sorted({r["n"] for r in rows})
    attns = list(dict.fromkeys(r["attention"] for r in rows))
    speed = {attention_label(a): [(r["n"], value(r, "steps_per_s")) for r in rows if r["attention"] == a]
             for a in attns}
    mem = {attention_label(a): [(r["n"], value(r, "peak_mem_mib")) for r in rows if r["attention"] == a]
           for a in attns}
    return plot_panels(path, [
        {"title": "training steps per second (higher is better)", "xlabel": "sequence length N",
         "ylabel": "steps / s", "series": speed, "xticks": lengths},
        {"title": "peak memory of a training step (lower is better)", "xlabel": "sequence length N",
         "ylabel": "MiB", "series": mem, "xticks": lengths},
    ], title=title)


def write_efficiency_report(rows: Sequence[Mapping], settings: EfficiencySettings, out_dir: str | os.PathLike,
                            info: Mapping, model_desc: str = "", load_end: float | None = None) -> dict[str, Path]:
    """Write ``efficiency.md``, ``efficiency.csv`` and ``efficiency.png`` into ``out_dir``; return their paths
    (``png`` absent when matplotlib is missing)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "efficiency.md", "csv": out / "efficiency.csv", "png": out / "efficiency.png"}
    paths["md"].write_text(efficiency_markdown(rows, settings, info, model_desc, load_end))
    write_csv(paths["csv"], rows, FIELDS)
    title = f"{info.get('cpu', '')}; {info.get('device_name', info.get('device', ''))}; batch {settings.batch_size}"
    if not plot_efficiency(rows, paths["png"], title=title):
        paths.pop("png")
    return paths


def print_efficiency(rows: Sequence[Mapping]) -> None:
    """Print the steps/s and memory tables with rich."""
    header, speed, mem = efficiency_tables(rows)
    print_tables([("steps per second (vs full)", header, speed), ("peak memory MiB (vs full)", header, mem)])


def _model_desc(model_cfgs: Mapping[str, Mapping]) -> str:
    m = next(iter(model_cfgs.values()))
    parts = [f"d_model {m.get('d_model')}", f"depth {m.get('depth')}", f"{m.get('n_heads')} heads",
             f"d_ff {m.get('d_ff')}", f"dropout {m.get('dropout')}"]
    if m.get("reversible"):
        parts.append("reversible")
    if m.get("chunk_size_feed_forward"):
        parts.append(f"ff chunks {m.get('chunk_size_feed_forward')}")
    attn = "; ".join(f"{name}: " + (", ".join(f"{k}={v}" for k, v in cfg["attention"].items()
                                               if k not in ("name", "dropout", "causal", "backend") and v is not None)
                                     or "defaults")
                     for name, cfg in model_cfgs.items())
    pos = (m.get("position") or {}).get("name", "none")
    return ", ".join(parts) + f", position {pos}; fp32; attention settings -- {attn}"


def efficiency_mode(cfg) -> dict[str, Any]:
    """``evaluate.py mode=efficiency``: build the model configs, measure, write the report into
    ``cfg.paths.output_dir``; returns ``{"rows": [...], "files": {...}}``.

    Model: with ``ckpt_path`` the checkpoint's saved ``model`` (its attention settings for its attention type,
    ``conf/attention/<name>.yaml`` for the others); otherwise ``conf/train.yaml`` composed with
    ``attention=<name>`` and ``efficiency.model_overrides``.

    Raises:
        ValueError: bad ``efficiency.*`` values (key named). FileNotFoundError: missing checkpoint.
    """
    from omegaconf import OmegaConf

    from .checkpoint import read_checkpoint
    from .train_config import train_model_config

    eff = OmegaConf.to_container(cfg.efficiency, resolve=True)
    overrides = list(eff.pop("model_overrides", None) or [])
    known = set(EfficiencySettings.__dataclass_fields__)
    unknown = sorted(set(eff) - known)
    if unknown:
        raise ValueError(f"unknown efficiency keys {unknown}; known: {sorted(known | {'model_overrides'})}")
    settings = EfficiencySettings(**eff)
    model_cfgs: dict[str, dict] = {}
    ckpt = cfg.get("ckpt_path")
    if ckpt:
        hp = read_checkpoint(ckpt).hparams
        saved = dict(hp["model"])
        for name in settings.attentions:
            m = dict(saved)
            if saved["attention"].get("name") == name and not saved.get("attention_layers"):
                m["attention"] = dict(saved["attention"])
            else:
                m["attention"] = train_model_config(name)["attention"]
                m["attention_layers"] = None
            model_cfgs[name] = m
        if settings.vocab_size == EfficiencySettings.vocab_size and hp.get("vocab_size"):
            settings.vocab_size = max(3, int(hp["vocab_size"]))
    else:
        for name in settings.attentions:
            model_cfgs[name] = train_model_config(name, overrides)
    device = settings.resolved_device()
    info = machine_info(device, "fp32")
    out_dir = Path(cfg.paths.output_dir)

    def progress(row):
        log.info("efficiency %-13s N=%-6d %-8s steps/s %s  peak %s MiB  (%.1f s) %s", row["attention"], row["n"],
                 row["status"], _fmt_rate(value(row, "steps_per_s")), fmt_mib(value(row, "peak_mem_mib")),
                 float(row.get("wall_s") or 0.0), row.get("note", ""))

    log.info("efficiency: %d attention(s) x lengths %s, batch %d, device %s; each configuration in a fresh process",
             len(settings.attentions), sorted(settings.lengths), settings.batch_size, device)
    t0 = time.perf_counter()
    rows = run_efficiency(model_cfgs, settings, progress=progress)
    load_end = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    if rows and any(r.get("device_name") for r in rows):
        info = {**info, "device_name": next(r["device_name"] for r in rows if r.get("device_name"))}
    files = write_efficiency_report(rows, settings, out_dir, info, _model_desc(model_cfgs), load_end)
    print_efficiency(rows)
    log.info("efficiency: %.0f s; wrote %s", time.perf_counter() - t0, ", ".join(str(p) for p in files.values()))
    return {"rows": rows, "files": files, "settings": asdict(settings)}


if __name__ == "__main__":
    if "--worker" not in sys.argv:
        raise SystemExit("this module is run by evaluate.py mode=efficiency: python -m longdoc.evaluation.efficiency "
                         "--worker '<json config>'")
    measure.worker_main(worker)
