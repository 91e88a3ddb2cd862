"""Forward + backward of ONE attention layer: longdoc vs HuggingFace / bare SDPA references.

Run from the repository root::

    .venv/bin/python benchmarks/attention.py                                   # defaults below
    .venv/bin/python benchmarks/attention.py --lengths 1024 2048 --repeats 3 --out benchmarks/results/small
    .venv/bin/python benchmarks/attention.py --device cuda --dtype bf16 --impls longdoc-lsh hf-reformer-lsh

What one measurement is
-----------------------
A module on (B, N, D) hidden states (B=1, D=256, 4 heads of 64, fp32 by default); the input
requires grad. One *step* = clear parameter / input grads, ``out = module(x)``,
``out.backward(g)`` with a fixed random ``g``, then the gradients are dropped (so every step starts
from the same state). Each (implementation, N) is measured in fresh Python processes
(``_harness.run_measured``): on CPU a *timing* process (``--warmup`` untimed steps, ``--repeats``
timed steps, median reported) and a *memory* process (one warm-up step, one measured step, one
step under the torch profiler for the tensor-allocation cross-check ``alloc_peak_mib``); on CUDA
one process does both. Peak memory is the *growth during the step* (activations, autograd
buffers, gradients), not the parameters or the input; the method is in ``_harness`` and README.md.

Implementations (all include their input and output projections, so each is one full attention layer):

``longdoc-local_global``  ``longdoc.attention.LocalGlobalAttention(256, 4, attention_window=128)``
                          (one-sided window 128) with one global token at position 0.
``hf-longformer``         ``transformers`` ``LongformerSelfAttention(LongformerConfig(hidden_size=256,
                          num_attention_heads=4, attention_window=[256], attention_probs_dropout_prob=0.0),
                          layer_id=0)`` + ``nn.Linear(256, 256)`` output projection. HF's window is
                          two-sided (256 = 2 x 128), i.e. the same 257-key band. Same global token:
                          layer-level ``attention_mask`` (B, N) float with 0 = local, +10000 = global
                          (what ``LongformerModel`` passes down), ``is_index_masked = mask < 0``,
                          ``is_index_global_attn = mask > 0``, ``is_global_attn = True``. HF requires N to
                          be a multiple of 256 (other N are 'skipped'). Note HF projects *all* tokens
                          with separate ``key_global`` / ``value_global`` matrices too (6 input
                          projections vs our 3) -- part of HF's design, so part of the comparison.
``longdoc-lsh``           ``longdoc.attention.LSHAttention(256, 4, n_hashes=2, bucket_size=64)``;
                          buckets default to 2 * ceil(N / 64).
``hf-reformer-lsh``       ``LSHSelfAttention(ReformerConfig(attn_layers=['lsh'], hidden_size=256,
                          num_attention_heads=4, attention_head_size=64, lsh_attn_chunk_length=64,
                          num_hashes=2, lsh_num_chunks_before=1, lsh_num_chunks_after=0,
                          num_buckets=2 * N // 64, is_decoder=False, lsh_attention_probs_dropout_prob=0.0,
                          hidden_dropout_prob=0.0, max_position_embeddings=N))`` + HF's own
                          ``ReformerSelfOutput`` (bias-free ``Linear(256, 256)``). ``num_buckets`` is
                          set to longdoc's count so both hash into the same number of buckets with an
                          unfactorised rotation (HF's automatic choice -- ``num_buckets=None`` -- would pick
                          the same count but factorise it for N >= 8192 at max_position_embeddings=N,
                          which makes hashing cheaper). HF requires N to be a multiple of 64.
``longdoc-full``          ``longdoc.attention.FullAttention(256, 4)`` (torch SDPA inside).
``sdpa``                  ``Linear(256, 768)`` -> split heads -> ``F.scaled_dot_product_attention`` ->
                          ``Linear(256, 256)``, written inline: the floor for exact attention.
                          Full and sdpa are 'skipped' where one (B, H, N, N) fp32 score matrix would
                          exceed ``--full-cap-gib`` (default 8 GiB: N = 32768 is skipped).

Statuses: ok, skipped (not applicable / over cap / a shorter N already failed for this
implementation), timeout (``--timeout`` per configuration), oom (allocator error, kernel OOM kill, or
RSS over ``--mem-limit-gib``), error (anything else; message in ``note``).

Outputs (``--out DIR``): ``attention.csv`` (impl, n, time_s, peak_mem_mib, status, ...),
``attention.md`` (machine header, per-implementation time and memory, ratio rows, growth rows),
``attention.png`` (time and memory vs N, log-log), ``attention.json`` (everything, with the config).
The markdown table is printed at the end.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import _harness as H

IMPLS = ("longdoc-local_global", "hf-longformer", "longdoc-lsh", "hf-reformer-lsh", "longdoc-full", "sdpa")
DEFAULT_LENGTHS = (1024, 2048, 4096, 8192, 16384, 32768)
PAIRS = (  # (ours, reference, label) for the ratio rows
    ("longdoc-local_global", "hf-longformer", "local_global / hf-longformer"),
    ("longdoc-lsh", "hf-reformer-lsh", "lsh / hf-reformer"),
    ("longdoc-full", "sdpa", "full / sdpa"),
)
D_MODEL, N_HEADS = 256, 4
LOCAL_WINDOW = 128          # one-sided (longdoc); HF attention_window = 2 * 128
LSH_BUCKET, LSH_HASHES = 64, 2
FIELDS = ("impl", "n", "time_s", "peak_mem_mib", "status", "alloc_peak_mib", "time_median_s", "time_min_s", "mem_method",
          "wall_s", "note")


# ----------------------------------------------------------------------------------------------
# worker: build one implementation and measure it
# ----------------------------------------------------------------------------------------------


def build(impl: str, n: int):
    """Return ``(module, call)`` where ``call(module, x)`` runs the layer on (B, N, D) ``x`` -> (B, N, D)."""
    import torch
    from torch import nn

    if impl == "longdoc-local_global":
        from longdoc.attention import LocalGlobalAttention

        mod = LocalGlobalAttention(D_MODEL, N_HEADS, attention_window=LOCAL_WINDOW)

        def call(m, x):
            g = torch.zeros(x.shape[0], x.shape[1], dtype=torch.bool, device=x.device)
            g[:, 0] = True
            return m(x, None, g)
        return mod, call

    if impl == "longdoc-lsh":
        from longdoc.attention import LSHAttention

        return LSHAttention(D_MODEL, N_HEADS, n_hashes=LSH_HASHES, bucket_size=LSH_BUCKET), lambda m, x: m(x)

    if impl == "longdoc-full":
        from longdoc.attention import FullAttention

        return FullAttention(D_MODEL, N_HEADS), lambda m, x: m(x)

    if impl == "sdpa":
        class SDPA(nn.Module):
            def __init__(self):
                super().__init__()
                self.qkv = nn.Linear(D_MODEL, 3 * D_MODEL)
                self.out = nn.Linear(D_MODEL, D_MODEL)

            def forward(self, x):
                b, t, _ = x.shape
                q, k, v = self.qkv(x).view(b, t, 3, N_HEADS, D_MODEL // N_HEADS).permute(2, 0, 3, 1, 4)
                o = torch.nn.functional.scaled_dot_product_attention(q, k, v)
                return self.out(o.transpose(1, 2).reshape(b, t, D_MODEL))
        return SDPA(), lambda m, x: m(x)

    if impl == "hf-longformer":
        from transformers import LongformerConfig
        from transformers.models.longformer.modeling_longformer import LongformerSelfAttention

        cfg = LongformerConfig(hidden_size=D_MODEL, num_attention_heads=N_HEADS,
                               attention_window=[2 * LOCAL_WINDOW], attention_probs_dropout_prob=0.0)

        class HFLongformer(nn.Module):
            def __init__(self):
                super().__init__()
                self.attn = LongformerSelfAttention(cfg, layer_id=0)
                self.out = nn.Linear(D_MODEL, D_MODEL)

            def forward(self, x):
                mask = torch.zeros(x.shape[0], x.shape[1], dtype=x.dtype, device=x.device)
                mask[:, 0] = 10000.0  # > 0: global, 0: local, < 0: padding (LongformerModel's convention)
                h = self.attn(x, attention_mask=mask, is_index_masked=mask < 0,
                              is_index_global_attn=mask > 0, is_global_attn=True)[0]
                return self.out(h)
        return HFLongformer(), lambda m, x: m(x)

    if impl == "hf-reformer-lsh":
        from transformers import ReformerConfig
        from transformers.models.reformer.modeling_reformer import LSHSelfAttention, ReformerSelfOutput

        from longdoc.attention import default_n_buckets

        cfg = ReformerConfig(attn_layers=["lsh"], hidden_size=D_MODEL, num_attention_heads=N_HEADS,
                             attention_head_size=D_MODEL // N_HEADS, lsh_attn_chunk_length=LSH_BUCKET,
                             num_hashes=LSH_HASHES, lsh_num_chunks_before=1, lsh_num_chunks_after=0,
                             num_buckets=default_n_buckets(n, LSH_BUCKET), is_decoder=False,
                             lsh_attention_probs_dropout_prob=0.0, hidden_dropout_prob=0.0,
                             max_position_embeddings=n)

        class HFReformerLSH(nn.Module):
            def __init__(self):
                super().__init__()
                self.attn = LSHSelfAttention(cfg, layer_idx=0)
                self.out = ReformerSelfOutput(cfg)

            def forward(self, x):
                return self.out(self.attn(x).hidden_states)
        return HFReformerLSH(), lambda m, x: m(x)

    raise ValueError(f"unknown impl {impl!r}; choose from {IMPLS}")


def worker(cfg: dict) -> dict:
    """Worker process body: one (impl, n) configuration."""
    import torch

    H.worker_setup(cfg)
    device, dtype = cfg["device"], H.torch_dtype(cfg["dtype"])
    mod, call = build(cfg["impl"], cfg["n"])
    mod = mod.to(device=device, dtype=dtype).train()
    x = torch.randn(cfg["batch"], cfg["n"], D_MODEL, device=device, dtype=dtype, requires_grad=True)
    g = torch.randn(cfg["batch"], cfg["n"], D_MODEL, device=device, dtype=dtype)
    params = list(mod.parameters())

    def step():  # leaves nothing behind: gradients are dropped at the end, so every step starts equal
        out = call(mod, x)
        out.backward(g)
        del out
        x.grad = None
        for p in params:
            p.grad = None

    step()  # fail fast (shape errors) before measuring; counts as the first warm-up step
    return H.measure(step, {**cfg, "warmup": max(cfg["warmup"] - 1, 0), "mem_warmup": 0})


# ----------------------------------------------------------------------------------------------
# parent: plan, run, report
# ----------------------------------------------------------------------------------------------


def skip_reason(impl: str, n: int, batch: int, full_cap_gib: float) -> str | None:
    """Why (impl, n) is not run, or None."""
    if impl in ("longdoc-full", "sdpa"):
        need = batch * N_HEADS * n * n * 4
        if need > full_cap_gib * H.GIB:
            return f"one (B,H,N,N) fp32 score matrix = {need / H.GIB:.3g} GiB > --full-cap-gib {full_cap_gib:g}"
    if impl == "hf-longformer" and n % (2 * LOCAL_WINDOW):
        return f"HF Longformer needs N % {2 * LOCAL_WINDOW} == 0"
    if impl == "hf-reformer-lsh" and n % LSH_BUCKET:
        return f"HF Reformer LSH needs N % {LSH_BUCKET} == 0"
    return None


def growth_pair(lengths: list[int]) -> tuple[int, int] | None:
    """(small, large) lengths for the growth ratio: (8192, 32768) if both ran, else the largest L and L/4,
    else the two extreme lengths."""
    ls = sorted(set(lengths))
    if 8192 in ls and 32768 in ls:
        return 8192, 32768
    for big in reversed(ls):
        if big // 4 in ls:
            return big // 4, big
    return (ls[0], ls[-1]) if len(ls) >= 2 else None


def mem_method(rows: list[dict]) -> str:
    return next((r["mem_method"] for r in rows if r.get("mem_method")), "?")


def report(rows: list[dict], lengths: list[int], impls: list[str], info: dict, args) -> str:
    """The markdown report: per-implementation time and memory, ratio rows, growth rows."""
    by = {(r["impl"], r["n"]): r for r in rows}
    header = ["", *[str(n) for n in lengths]]
    body = []
    for impl in impls:
        body.append([f"time {impl}", *[H.cell(by.get((impl, n)), "time_s", H.fmt_time) for n in lengths]])
    for impl in impls:
        body.append([f"peak MiB {impl}", *[H.cell(by.get((impl, n)), "peak_mem_mib", H.fmt_mib) for n in lengths]])
    for ours, ref, label in PAIRS:
        if ours in impls and ref in impls:
            for key, what in (("time_s", "time"), ("peak_mem_mib", "memory")):
                body.append([f"**{label} {what}**", *[
                    H.fmt_ratio(H.ratio(H.value(by.get((ours, n)), key), H.value(by.get((ref, n)), key)))
                    for n in lengths]])
    lines = [f"# Attention layer forward + backward ({args.device}, {args.dtype})", "",
             H.machine_header(info), "",
             f"Batch {args.batch}, d_model {D_MODEL}, {N_HEADS} heads, allocator {args.cpu_allocator} (timing), "
             f"{args.time_stat} of {args.repeats} runs after "
             f"{args.warmup} warm-up; peak memory = growth during one step ({mem_method(rows)}); "
             f"ratios < 1 mean longdoc is faster / smaller.", "",
             H.markdown_table(header, body)]
    gp = growth_pair([r["n"] for r in rows if r["status"] == "ok"])
    if gp:
        small, big = gp
        grow = []
        for impl in impls:
            t = H.ratio(H.value(by.get((impl, big)), "time_s"), H.value(by.get((impl, small)), "time_s"))
            m = H.ratio(H.value(by.get((impl, big)), "peak_mem_mib"), H.value(by.get((impl, small)), "peak_mem_mib"))
            grow.append([impl, H.fmt_ratio(t), H.fmt_ratio(m)])
        lines += ["", f"Growth from N={small} to N={big} ({big // small}x longer; linear = {big // small}x, "
                      f"quadratic = {(big // small) ** 2}x):", "",
                  H.markdown_table(["impl", f"time({big})/time({small})", f"mem({big})/mem({small})"], grow)]
    notes = [f"- {r['impl']} N={r['n']}: {r['status']} -- {r['note']}" for r in rows
             if r["status"] != "ok" and r.get("note")]
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], lengths: list[int], impls: list[str], info: dict, path: Path) -> None:
    def series(key):
        return {impl: [(r["n"], H.value(r, key)) for r in rows if r["impl"] == impl] for impl in impls}
    H.plot_panels(path, [
        {"title": "forward + backward time", "xlabel": "sequence length N", "ylabel": "seconds",
         "series": series("time_s"), "xticks": lengths},
        {"title": "peak memory growth during the step", "xlabel": "sequence length N", "ylabel": "MiB",
         "series": series("peak_mem_mib"), "xticks": lengths},
    ], title=H.machine_header(info))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=list(DEFAULT_LENGTHS))
    p.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    p.add_argument("--repeats", type=int, default=5, help="timed runs; the median is reported")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs before timing (>= 1 effective)")
    p.add_argument("--time-stat", default="median", choices=["median", "min"],
                   help="statistic of the timed runs reported as time_s (min is robust on a shared machine)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:<i>")
    p.add_argument("--dtype", default="fp32", choices=sorted(H.DTYPES))
    p.add_argument("--cpu-allocator", default="default", choices=["tuned", "default"],
                   help="timing processes (every implementation alike): default = glibc's own settings (train.py's "
                        "default); tuned = glibc reuses freed blocks (runtime.cpu_allocator=tuned)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in workers (default: torch's)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per configuration (then 'timeout')")
    p.add_argument("--full-cap-gib", type=float, default=8.0,
                   help="skip full/sdpa where B*H*N*N*4 bytes exceeds this")
    p.add_argument("--mem-limit-gib", type=float, default=None,
                   help="kill a CPU worker whose RSS exceeds this ('oom'); default 90%% of MemAvailable at start")
    p.add_argument("--no-alloc-profile", action="store_true",
                   help="skip the torch.profiler tensor-allocation cross-check step (CPU)")
    p.add_argument("--keep-going", action="store_true",
                   help="also run longer N for an implementation after it timed out / ran out of memory")
    p.add_argument("--out", default=None, help="output directory (default benchmarks/results/attention_<device>_<dtype>)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    lengths = sorted(set(args.lengths))
    impls = [i for i in IMPLS if i in args.impls]
    out = Path(args.out or f"benchmarks/results/attention_{args.device.replace(':', '')}_{args.dtype}")
    mem_limit = (int(args.mem_limit_gib * H.GIB) if args.mem_limit_gib
                 else (H.default_mem_limit_bytes() if args.device == "cpu" else None))
    info = H.machine_info(args.device, args.dtype)
    H.log(H.machine_header(info))
    H.log(f"{len(impls)} implementations x {len(lengths)} lengths -> {out}/"
          + (f"; worker RSS limit {mem_limit / H.GIB:.1f} GiB" if mem_limit else ""))
    rows: list[dict] = []
    failed: dict[str, str] = {}
    t_start = time.perf_counter()
    for n in lengths:
        for impl in impls:
            base = {"impl": impl, "n": n}
            reason = skip_reason(impl, n, args.batch, args.full_cap_gib)
            if reason is None and impl in failed and not args.keep_going:
                reason = f"a shorter N already ended in {failed[impl]}"
            if reason:
                res = {"status": "skipped", "note": reason}
            else:
                cfg = {"impl": impl, "n": n, "batch": args.batch, "device": args.device, "dtype": args.dtype,
                       "repeats": args.repeats, "warmup": args.warmup, "threads": args.threads,
                       "seed": args.seed, "alloc_profile": not args.no_alloc_profile, "time_stat": args.time_stat,
                       "cpu_allocator": args.cpu_allocator}
                res = H.run_measured(__file__, cfg, timeout=args.timeout, mem_limit_bytes=mem_limit)
                if res["status"] in ("timeout", "oom"):
                    failed[impl] = res["status"]
                if res.get("device_name"):
                    info["device_name"] = res["device_name"]
            row = {**base, **res}
            rows.append(row)
            H.log_row(impl, n, row, f"(alloc {H.fmt_mib(H.value(row, 'alloc_peak_mib'))})  ")
            H.write_csv(out / "attention.csv", rows, FIELDS)  # keep partial results if interrupted
    H.write_report(out, "attention", report(rows, lengths, impls, info, args),
                   {"args": vars(args), "machine": info, "rows": rows}, t_start,
                   lambda path: plot(rows, lengths, impls, info, path))
    return 0


if __name__ == "__main__":
    if "--worker" in sys.argv:
        H.worker_main(worker)
    else:
        sys.exit(main())
