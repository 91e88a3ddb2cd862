"""Peak memory of ONE training step of the longdoc Encoder vs HuggingFace ReformerModel.

Run from the repository root::

    .venv/bin/python benchmarks/memory.py                       # N=8192, depths 2 6 12, every variant
    .venv/bin/python benchmarks/memory.py --n 1024 --depths 2   # quick check
    .venv/bin/python benchmarks/memory.py --max-length          # longest N that fits in 20 GiB

What one measurement is
-----------------------
A model = embeddings (token + axial positions) -> encoder of ``depth`` blocks -> mean pooling ->
``Linear(width, 2)``; loss = cross-entropy against a fixed label. One *training step* =
forward, ``loss.backward()``, ``AdamW.step()``, ``zero_grad(set_to_none=True)`` (so gradients are part
of the step's peak and nothing but the persistent state is alive between steps). Batch 1, d_model
256, d_ff 1024, 4 heads of 64, fp32, dropout 0. Each configuration is measured in fresh processes
(``_harness.run_measured``): on CPU a timing process (``--warmup`` steps, at least 1 so AdamW's state
exists, then ``--repeats`` timed steps, median) and a memory process (one warm-up step, one measured
step, one profiled step for the tensor-allocation cross-check); on CUDA one process does both.

``peak_mem_mib`` is *everything the model needs to train at this length*:
``state_mib`` (the exact bytes of the tensors alive between steps: parameters, buffers, AdamW
moments, the batch) + ``step_peak_mib`` (the peak growth during the step: activations, autograd
buffers, gradients, temporaries -- CPU: peak RSS growth with the high-water mark reset before the
step; CUDA: ``max_memory_allocated`` growth; see ``_harness``). It excludes the interpreter and
library runtime, which are the same for every configuration. ``alloc_peak_mib`` is the same sum with
the torch-profiler tensor peak instead of RSS (CPU cross-check). ``rss_peak_total_mib`` (CPU) is the
whole process's peak RSS during the step, interpreter and torch runtime included (about 0.3-0.5 GiB
more); the ``--max-length`` budget is checked against it.

Configurations (``--depths``, ``--attentions``, ``--reversible``, ``--ff-chunks``, ``--optimizer-in-backward``,
``--no-hf``):

* ``longdoc <attention> rev|std ff=<chunk>``: ``longdoc.models.Encoder(vocab_size=32, d_model=256,
  n_heads=4, depth, d_ff=1024, attention=..., position={name: axial, axial_shape, axial_dims:
  [128, 128]}, max_seq_len=N, dropout=0.0, chunk_size_feed_forward=chunk, reversible=rev)``;
  attention ``lsh`` = ``{bucket_size: 64, n_hashes: 2}``, ``local_global`` = ``{attention_window: 128}``
  with one global token at position 0. ``ff=0`` means no feed-forward chunking.
* ``hf-reformer lsh rev ff=<chunk>``: ``transformers.ReformerModel(ReformerConfig(attn_layers=['lsh'] *
  depth, hidden_size=256, feed_forward_size=1024, hidden_act='gelu', num_attention_heads=4,
  attention_head_size=64, axial_pos_embds=True, axial_pos_shape=(l1, l2) with l1 * l2 = N,
  axial_pos_embds_dim=(128, 128), lsh_attn_chunk_length=64, num_hashes=2, lsh_num_chunks_before=1,
  lsh_num_chunks_after=0, num_buckets=2 * N // 64, chunk_size_feed_forward=chunk, hidden_dropout_prob=0.0,
  lsh_attention_probs_dropout_prob=0.0, max_position_embeddings=N, vocab_size=32, is_decoder=False))``.
  HF Reformer is always reversible. Its output concatenates the two reversible streams (width 512),
  so its head is ``Linear(512, 2)``.
* ``... opt-in-bwd`` (reversible configurations, ours and HF's alike): the same AdamW, stepped per parameter
  from its post-accumulate-grad hook inside the backward pass, each gradient freed once used
  (``longdoc.optim.OptimizerInBackward``, train.py ``optimizer.in_backward=true``). The same updates;
  what it removes from the peak is the full set of gradients that ordinary training holds at the end of backward,
  the part of a reversible model's step that still grows with depth besides the persistent state.

Ratio rows: depth_max / depth_min for every reversible and every standard variant (activation memory of
a reversible stack should be nearly flat in depth; a standard stack grows linearly), and longdoc / HF
at each depth for reversible LSH with the same feed-forward chunking and the same optimizer placement.

``--max-length``: the longest power-of-two N (from ``--start-n``, default 8192, doubling) at which one
training step of a ``--max-length-depth`` (6) layer reversible LSH model with ``--max-length-ff-chunk``
(1024) feed-forward chunks fits in ``--budget-gib`` (20). Each attempt is a fresh process with the
per-configuration ``--timeout``; the search stops at the first failure. The budget is enforced without
cgroups or rlimits: on CPU the parent polls the worker's RSS and kills it once it exceeds the budget
(``RLIMIT_AS`` is not used: it limits *virtual* address space, which thread stacks and allocator
reservations inflate far beyond what is resident, so it rejects runs that would fit), and an attempt
whose whole-process peak RSS (``VmHWM``, interpreter included) exceeds the budget also fails; an
allocator ``MemoryError`` or a SIGKILL from the kernel OOM killer fails too. On CUDA the worker calls
``torch.cuda.set_per_process_memory_fraction(budget / total)`` and a CUDA OOM error fails the attempt.

Outputs (``--out DIR``): ``memory.csv``, ``memory.md``, ``memory.png`` (peak memory vs depth, one
line per configuration), ``memory.json``; with ``--max-length``: ``maxlen.csv``, ``maxlen.md``,
``maxlen.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import _harness as H

D_MODEL, N_HEADS, D_FF, VOCAB = 256, 4, 1024, 32
LSH_BUCKET, LSH_HASHES, LOCAL_WINDOW = 64, 2, 128
FIELDS = ("config", "depth", "n", "peak_mem_mib", "time_s", "status", "state_mib", "step_peak_mib", "grad_mib",
          "act_peak_mib",
          "alloc_peak_mib", "rss_peak_total_mib", "time_median_s", "time_min_s", "mem_step_s", "model", "attention", "reversible", "ff_chunk", "in_backward", "n_params", "mem_method", "wall_s", "note")


def axial_shape(n: int) -> tuple[int, int]:
    """(l1, l2) with l1 * l2 == n exactly and l1 the largest divisor <= sqrt(n) (HF needs the exact product)."""
    l1 = int(n ** 0.5)
    while n % l1:
        l1 -= 1
    return l1, n // l1


def config_name(model: str, attention: str, reversible: bool, ff_chunk: int, in_backward: bool = False) -> str:
    return f"{model} {attention} {'rev' if reversible else 'std'} ff={ff_chunk}" + (" opt-in-bwd" if in_backward else "")


# ----------------------------------------------------------------------------------------------
# worker
# ----------------------------------------------------------------------------------------------


def build_model(cfg: dict):
    """Return ``(model, forward)`` where ``forward(ids) -> (B, 2)`` logits."""
    import torch
    from torch import nn

    n, depth, chunk = cfg["n"], cfg["depth"], cfg["ff_chunk"]
    shape = axial_shape(n)
    if cfg["model"] == "longdoc":
        from longdoc.models import Encoder

        attention = ({"name": "lsh", "bucket_size": LSH_BUCKET, "n_hashes": LSH_HASHES}
                     if cfg["attention"] == "lsh" else {"name": "local_global", "attention_window": LOCAL_WINDOW})
        enc = Encoder(vocab_size=VOCAB, d_model=D_MODEL, n_heads=N_HEADS, depth=depth, d_ff=D_FF,
                      attention=attention, max_seq_len=n, dropout=0.0, chunk_size_feed_forward=chunk,
                      reversible=cfg["reversible"],
                      position={"name": "axial", "axial_shape": list(shape), "axial_dims": [128, 128]})
        glob = cfg["attention"] == "local_global"

        class Model(nn.Module):
            def __init__(self):
                super().__init__()
                self.encoder, self.head = enc, nn.Linear(D_MODEL, 2)

            def forward(self, ids):
                g = None
                if glob:
                    g = torch.zeros(ids.shape, dtype=torch.bool, device=ids.device)
                    g[:, 0] = True
                return self.head(self.encoder(ids, None, g).mean(dim=1))
        return Model()

    if cfg["model"] == "hf-reformer":
        from transformers import ReformerConfig, ReformerModel

        from longdoc.attention import default_n_buckets

        hf_cfg = ReformerConfig(
            attn_layers=["lsh"] * depth, hidden_size=D_MODEL, feed_forward_size=D_FF, hidden_act="gelu",
            num_attention_heads=N_HEADS, attention_head_size=D_MODEL // N_HEADS,
            axial_pos_embds=True, axial_pos_shape=shape, axial_pos_embds_dim=(128, 128),
            lsh_attn_chunk_length=LSH_BUCKET, num_hashes=LSH_HASHES, lsh_num_chunks_before=1,
            lsh_num_chunks_after=0, num_buckets=default_n_buckets(n, LSH_BUCKET),
            chunk_size_feed_forward=chunk, hidden_dropout_prob=0.0, lsh_attention_probs_dropout_prob=0.0,
            max_position_embeddings=n, vocab_size=VOCAB, is_decoder=False)
        body = ReformerModel(hf_cfg)

        class Model(nn.Module):
            def __init__(self):
                super().__init__()
                self.body, self.head = body, nn.Linear(2 * D_MODEL, 2)

            def forward(self, ids):
                return self.head(self.body(input_ids=ids).last_hidden_state.mean(dim=1))
        return Model()
    raise ValueError(f"unknown model {cfg['model']!r}")


def worker(cfg: dict) -> dict:
    """Worker process body: one training-step configuration."""
    import torch
    import torch.nn.functional as F

    H.worker_setup(cfg)
    device = cfg["device"]
    budget = cfg.get("cuda_budget_bytes")
    if budget and device.startswith("cuda"):
        total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, budget / total))
    model = build_model(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    if cfg.get("in_backward"):  # each parameter steps from its gradient hook; opt.step() below finds no gradients
        from longdoc.optim import OptimizerInBackward

        OptimizerInBackward(opt)
    gen = torch.Generator().manual_seed(int(cfg.get("seed", 0)))
    ids = torch.randint(1, VOCAB, (cfg["batch"], cfg["n"]), generator=gen).to(device)
    labels = torch.zeros(cfg["batch"], dtype=torch.long, device=device)

    def step():  # gradients are dropped at the end, so between steps only the persistent state is alive
        loss = F.cross_entropy(model(ids), labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        del loss

    step()  # fail fast; counts as the first warm-up step (creates AdamW state)
    res = H.measure(step, {**cfg, "warmup": max(cfg["warmup"] - 1, 0), "mem_warmup": 0})
    res["n_params"] = sum(p.numel() for p in model.parameters())
    if "peak_mem_mib" in res:
        # persistent state live before every step: parameters, buffers, AdamW moments, the batch
        state = H.tensor_bytes([list(model.parameters()), list(model.buffers()), opt.state, ids, labels])
        res["state_mib"] = state / H.MIB
        res["step_peak_mib"] = res["peak_mem_mib"]
        # every parameter's gradient is alive at the end of backward (with the step fused into backward, one
        # at a time: the largest): what remains of the step's peak is activations, autograd buffers and
        # temporaries (the part reversible layers keep flat in depth)
        sizes = [p.numel() * p.element_size() for p in model.parameters()]
        res["grad_mib"] = (max(sizes) if cfg.get("in_backward") else sum(sizes)) / H.MIB
        res["act_peak_mib"] = res["step_peak_mib"] - res["grad_mib"]
        res["peak_mem_mib"] += res["state_mib"]
        if res.get("alloc_peak_mib") is not None:
            res["alloc_peak_mib"] += res["state_mib"]
    return res


# ----------------------------------------------------------------------------------------------
# parent
# ----------------------------------------------------------------------------------------------


def plan(args) -> list[dict]:
    """All configurations of the depth sweep, grouped by configuration then depth."""
    out = []
    for attention in args.attentions:
        for rev in args.reversible:
            for ibwd in (args.optimizer_in_backward if rev else [False]):
                for chunk in args.ff_chunks:
                    out.append({"model": "longdoc", "attention": attention, "reversible": rev, "ff_chunk": chunk,
                                "in_backward": ibwd})
    if not args.no_hf:
        for ibwd in args.optimizer_in_backward:
            for chunk in args.ff_chunks:
                out.append({"model": "hf-reformer", "attention": "lsh", "reversible": True, "ff_chunk": chunk,
                            "in_backward": ibwd})
    return [{**c, "depth": d} for c in out for d in args.depths]


def worker_cfg(args, c: dict, n: int) -> dict:
    return {**c, "n": n, "batch": args.batch, "device": args.device, "repeats": args.repeats,
            "warmup": max(args.warmup, 1), "threads": args.threads, "seed": args.seed,
            "alloc_profile": not args.no_alloc_profile, "time_stat": args.time_stat, "cpu_allocator": args.cpu_allocator}


def log_row(row: dict) -> None:
    H.log(f"  {row['config']:34s} d={row['depth']:3d} N={row['n']:7d}  {row['status']:7s}  "
          f"peak {H.fmt_mib(H.value(row, 'peak_mem_mib')):>7s} MiB (alloc {H.fmt_mib(H.value(row, 'alloc_peak_mib'))}, "
          f"process {H.fmt_mib(H.value(row, 'rss_peak_total_mib'))})  time {H.fmt_time(H.value(row, 'time_s'))}  "
          f"wall {row.get('wall_s', 0):.1f}s  {row.get('note', '')}")


def report(rows: list[dict], args, info: dict) -> str:
    depths = sorted({r["depth"] for r in rows})
    configs = list(dict.fromkeys(r["config"] for r in rows))
    by = {(r["config"], r["depth"]): r for r in rows}
    table = [[r["config"], r["depth"], H.cell(r, "peak_mem_mib", H.fmt_mib), H.cell(r, "state_mib", H.fmt_mib),
              H.cell(r, "grad_mib", H.fmt_mib), H.cell(r, "act_peak_mib", H.fmt_mib), H.cell(r, "alloc_peak_mib", H.fmt_mib),
              H.cell(r, "time_s", H.fmt_time), r["status"]] for r in rows]
    lines = [f"# Peak memory of one training step (N={args.n}, {args.device})", "", H.machine_header(info), "",
             f"Batch {args.batch}, d_model {D_MODEL}, d_ff {D_FF}, {N_HEADS} heads, fp32, AdamW, allocator {args.cpu_allocator} (timing); "
             f"peak_mem_mib = state (parameters + AdamW moments + batch, exact) + peak growth during the step "
             f"({next((r['mem_method'] for r in rows if r.get('mem_method')), '?')}); alloc MiB = the same with the torch.profiler "
             f"tensor peak (CPU cross-check); grad MiB = the parameters' gradients (opt-in-bwd: AdamW steps each parameter "
             f"inside backward and frees its gradient, longdoc.optim.OptimizerInBackward; the largest one); "
             f"activation MiB = peak growth "
             f"during the step minus the gradients (activations, autograd buffers, temporaries); "
             f"time = {args.time_stat} of {args.repeats} step(s).", "",
             H.markdown_table(["config", "depth", "peak_mem_mib", "state MiB", "grad MiB", "activation MiB",
                               "alloc MiB", "time_s", "status"], table)]
    ratio_rows = []
    if len(depths) >= 2:
        lo, hi = depths[0], depths[-1]
        for rev in (True, False):
            for cname in configs:
                r_hi, r_lo = by.get((cname, hi)), by.get((cname, lo))
                if (r_hi or r_lo or {}).get("reversible") is not rev:
                    continue
                label = f"{'reversible' if rev else 'non-reversible'} depth{hi}/depth{lo}: {cname}"
                ratio_rows.append([label,
                                   H.fmt_ratio(H.ratio(H.value(r_hi, "peak_mem_mib"), H.value(r_lo, "peak_mem_mib"))),
                                   H.fmt_ratio(H.ratio(H.value(r_hi, "act_peak_mib"), H.value(r_lo, "act_peak_mib"))),
                                   H.fmt_ratio(H.ratio(H.value(r_hi, "time_s"), H.value(r_lo, "time_s")))])
    for ibwd in args.optimizer_in_backward:
        for chunk in args.ff_chunks:
            ours = config_name("longdoc", "lsh", True, chunk, ibwd)
            hf = config_name("hf-reformer", "lsh", True, chunk, ibwd)
            if ours not in configs or hf not in configs:
                continue
            for d in depths:
                r_ours, r_hf = by.get((ours, d)), by.get((hf, d))
                ratio_rows.append([f"ours/HF reversible lsh ff={chunk}{' opt-in-bwd' if ibwd else ''} depth {d}",
                                   *(H.fmt_ratio(H.ratio(H.value(r_ours, k), H.value(r_hf, k)))
                                     for k in ("peak_mem_mib", "act_peak_mib", "time_s"))])
    if ratio_rows:
        lines += ["", H.markdown_table(["ratio", "peak memory", "activation memory", "time"], ratio_rows)]
    notes = [f"- {r['config']} depth {r['depth']}: {r['status']} -- {r['note']}" for r in rows
             if r["status"] != "ok" and r.get("note")]
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines) + "\n"


def run_sweep(args, out: Path, info: dict, mem_limit: int | None) -> str:
    rows = []
    for c in plan(args):
        name = config_name(c["model"], c["attention"], c["reversible"], c["ff_chunk"], c["in_backward"])
        res = H.run_measured(__file__, worker_cfg(args, c, args.n), timeout=args.timeout, mem_limit_bytes=mem_limit)
        if res.get("device_name"):
            info["device_name"] = res["device_name"]
        row = {"config": name, **c, "n": args.n, **res}
        rows.append(row)
        log_row(row)
        H.write_csv(out / "memory.csv", rows, FIELDS)
    return write_sweep_outputs(rows, args, out, info)


def write_sweep_outputs(rows: list[dict], args, out: Path, info: dict) -> str:
    """memory.md, memory.json and memory.png from the measured rows; returns the markdown."""
    md = report(rows, args, info)
    out.mkdir(parents=True, exist_ok=True)
    (out / "memory.md").write_text(md)
    H.write_json(out / "memory.json", {"args": vars(args), "machine": info, "rows": rows})
    depths = sorted({r["depth"] for r in rows})
    chunk = args.ff_chunks[0]  # FF chunking does not move the peak at N=8192 (the table has both)

    def series(keep):
        names = dict.fromkeys(r["config"] for r in rows if keep(r))
        return {cn: [(r["depth"], H.value(r, "peak_mem_mib")) for r in rows if r["config"] == cn] for cn in names}
    panels = [{"title": f"peak memory of one training step, N={args.n}, ff={chunk}", "xlabel": "depth",
               "ylabel": "MiB", "series": series(lambda r: r["ff_chunk"] == chunk),
               "logx": False, "logy": False, "xticks": depths}]
    if any(r["reversible"] for r in rows):
        panels.append({"title": "reversible only (AdamW after backward / fused into it)", "xlabel": "depth",
                       "ylabel": "MiB", "series": series(lambda r: r["ff_chunk"] == chunk and r["reversible"]),
                       "logx": False, "logy": False, "xticks": depths})
    H.plot_panels(out / "memory.png", panels, title=H.machine_header(info))
    return md


def run_max_length(args, out: Path, info: dict) -> str:
    """Double N from --start-n until a training step no longer fits in --budget-gib (or --max-n)."""
    budget = int(args.budget_gib * H.GIB)
    c = {"model": args.max_length_model, "attention": "lsh", "reversible": True,
         "ff_chunk": args.max_length_ff_chunk, "depth": args.max_length_depth}
    name = config_name(c["model"], c["attention"], c["reversible"], c["ff_chunk"])
    cuda = args.device.startswith("cuda")
    if not cuda and H.mem_available_bytes() and budget > H.mem_available_bytes():
        H.log(f"warning: budget {args.budget_gib} GiB exceeds MemAvailable "
              f"{H.mem_available_bytes() / H.GIB:.1f} GiB: the kernel may kill attempts below the budget")
    rows, best, n = [], None, args.start_n
    while n <= args.max_n:
        cfg = {**worker_cfg(args, c, n), "alloc_profile": False}  # the profiler's own memory must not count
        if cuda:
            cfg["cuda_budget_bytes"] = budget
        # whether N fits is judged on the whole process's peak: with --cpu-allocator tuned under the heap reuse of
        # runtime.cpu_allocator=tuned (faster steps, larger peak), else under the sweep's exact-accounting settings
        # (every block of 64 KiB or more mapped and unmapped: the leanest, as low as glibc's defaults or lower)
        tuned = args.cpu_allocator == "tuned"
        res = H.run_measured(__file__, {**cfg, "tuned_memory_phase": tuned}, timeout=args.timeout,
                             mem_limit_bytes=None if cuda else budget, phases=["memory"],  # one measured step decides
                             memory_env=None if tuned else H.MEMORY_PHASE_ENV)
        if res.get("mem_step_s") is not None:
            res["time_s"] = res["mem_step_s"]
        if res.get("device_name"):
            info["device_name"] = res["device_name"]
        row = {"config": name, **c, "n": n, **res}
        if row["status"] == "ok":
            used = row.get("rss_peak_total_mib") if not cuda else row.get("peak_mem_mib")
            if used is not None and used * H.MIB > budget:
                row["status"], row["note"] = "oom", f"peak {used / 1024:.2f} GiB > budget {args.budget_gib} GiB"
        rows.append(row)
        log_row(row)
        H.write_csv(out / "maxlen.csv", rows, FIELDS)
        if row["status"] != "ok":
            break
        best = n
        n *= 2
    table = [[r["n"], H.cell(r, "peak_mem_mib", H.fmt_mib), H.cell(r, "rss_peak_total_mib", H.fmt_mib),
              H.cell(r, "time_s", H.fmt_time), r["status"], r.get("note", "")] for r in rows]
    verdict = (f"**Longest N that fits: {best}**" if best else
               f"**Even N={args.start_n} does not fit**")
    md = "\n".join([
        f"# Longest sequence for one training step within {args.budget_gib:g} GiB ({args.device})", "",
        H.machine_header(info), "",
        f"{name}, depth {c['depth']}, d_model {D_MODEL}, d_ff {D_FF}, {N_HEADS} heads, batch {args.batch}, fp32, AdamW; "
        f"budget checked against the whole process ({'CUDA allocator' if cuda else 'VmHWM incl. interpreter'}); "
        f"allocator: {'tuned (runtime.cpu_allocator=tuned)' if args.cpu_allocator == 'tuned' else 'glibc, mmap threshold 64 KiB (exact accounting)'}.", "",
        H.markdown_table(["N", "model peak MiB", "process peak MiB", "time_s", "status", "note"], table), "",
        verdict]) + "\n"
    (out / "maxlen.md").write_text(md)
    H.write_json(out / "maxlen.json", {"args": vars(args), "machine": info, "rows": rows, "longest_n": best})
    return md


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=8192, help="sequence length of the depth sweep")
    p.add_argument("--depths", type=int, nargs="+", default=[2, 6, 12])
    p.add_argument("--attentions", nargs="+", default=["lsh", "local_global"], choices=["lsh", "local_global"])
    p.add_argument("--reversible", type=lambda s: s.lower() in ("1", "true", "on", "yes"), nargs="+",
                   default=[True, False], help="on/off values to sweep, e.g. --reversible on")
    p.add_argument("--ff-chunks", type=int, nargs="+", default=[1024, 0],
                   help="chunk_size_feed_forward values (0 = off)")
    p.add_argument("--optimizer-in-backward", type=lambda s: s.lower() in ("1", "true", "on", "yes"), nargs="+",
                   default=[False, True], help="reversible configurations: AdamW after backward (off) and/or fused "
                   "into backward, each gradient freed once used (on; train.py optimizer.in_backward=true)")
    p.add_argument("--no-hf", action="store_true", help="skip the HuggingFace ReformerModel reference")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (at least 1)")
    p.add_argument("--time-stat", default="median", choices=["median", "min"],
                   help="statistic of the timed steps reported as time_s (min is robust on a shared machine)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--cpu-allocator", default="default", choices=["tuned", "default"],
                   help="timing processes (every implementation alike): default = glibc's own settings (train.py's "
                        "default); tuned = glibc reuses freed blocks (runtime.cpu_allocator=tuned)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--timeout", type=float, default=1200.0, help="seconds per configuration / attempt")
    p.add_argument("--mem-limit-gib", type=float, default=None,
                   help="sweep: kill a CPU worker over this RSS ('oom'); default 90%% of MemAvailable")
    p.add_argument("--no-alloc-profile", action="store_true", help="skip the torch.profiler cross-check step")
    p.add_argument("--max-length", action="store_true", help="find the longest N that fits in --budget-gib instead")
    p.add_argument("--budget-gib", type=float, default=20.0)
    p.add_argument("--start-n", type=int, default=8192)
    p.add_argument("--max-n", type=int, default=2 ** 21)
    p.add_argument("--max-length-depth", type=int, default=6)
    p.add_argument("--max-length-ff-chunk", type=int, default=1024)
    p.add_argument("--max-length-model", default="longdoc", choices=["longdoc", "hf-reformer"])
    p.add_argument("--out", default=None, help="output directory (default benchmarks/results/memory_<device>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--from-json", default=None, metavar="DIR",
                   help="re-render memory.md / memory.png from DIR/memory.json (an earlier sweep) into --out or DIR")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out or f"benchmarks/results/memory_{args.device.replace(':', '')}")
    info = H.machine_info(args.device, "fp32")
    H.log(H.machine_header(info))
    t0 = time.perf_counter()
    if args.from_json:  # re-render the report and plot of an earlier sweep without measuring again
        saved = json.loads((Path(args.from_json) / "memory.json").read_text())
        saved_args = argparse.Namespace(**saved["args"])
        md = write_sweep_outputs(saved["rows"], saved_args, Path(args.out or args.from_json), saved["machine"])
        print(md)
        return 0
    if args.max_length:
        md = run_max_length(args, out, info)
    else:
        mem_limit = (int(args.mem_limit_gib * H.GIB) if args.mem_limit_gib
                     else (H.default_mem_limit_bytes() if args.device == "cpu" else None))
        md = run_sweep(args, out, info, mem_limit)
    print(md)
    H.log(f"total {time.perf_counter() - t0:.0f} s; wrote {out}/")
    return 0


if __name__ == "__main__":
    if "--worker" in sys.argv:
        H.worker_main(worker)
    else:
        sys.exit(main())
