"""ONE training step of the whole model (forward + backward + AdamW): longdoc vs HuggingFace / PyTorch references.

Run from the repository root::

    .venv/bin/python benchmarks/model.py                                   # N = 1K ... 32K, every implementation
    .venv/bin/python benchmarks/model.py --lengths 256 512 --repeats 2 --warmup 1 --out /tmp/model   # quick check
    .venv/bin/python benchmarks/model.py --compile off on                  # also longdoc with model.compile=true
    .venv/bin/python benchmarks/model.py --profile --impls longdoc-local_global --lengths 1024   # top operators
    .venv/bin/python benchmarks/model.py --profile --preset listops --batch 32 --lengths 300   # ListOps-sized step
    .venv/bin/python benchmarks/model.py --device cuda --dtype bf16 --lengths 4096 16384 65536

What one measurement is
-----------------------
A classifier on (B, N) token ids: embeddings -> encoder of ``--depth`` (4) layers, d_model 256, 4 heads of 64,
d_ff 1024, dropout 0 -> a head -> 2 logits; loss = cross-entropy against a fixed label. One *step* = forward,
``loss.backward()``, ``AdamW.step()``, ``zero_grad(set_to_none=True)``. Batch ``--batch`` (1). Under
``--dtype bf16`` every model's forward runs under ``torch.autocast(dtype=torch.bfloat16)`` (parameters and AdamW
stay float32). Each (implementation, N) runs in fresh processes (``_harness.run_measured``): on CPU a timing
process (``--warmup`` untimed steps, then ``--repeats`` timed steps; median) and a memory process (one warm-up
step, one measured step, one step under the torch profiler for the tensor-allocation cross-check); on CUDA one
process does both. ``peak_mem_mib`` = the exact bytes of the tensors alive between steps (parameters, AdamW
moments, the batch) + the peak growth during the step (CPU: peak RSS growth, the high-water mark reset before
the step; CUDA: ``max_memory_allocated`` growth), as in ``benchmarks/memory.py``; ``rss_peak_total_mib`` is the
whole process's peak RSS (interpreter, torch and -- for the HF rows -- transformers included).

Implementations (``--impls``):

``longdoc-local_global``  ``longdoc.models.SequenceClassifier(pooling='cls', attention={name: local_global,
                          attention_window: 128}, position=axial (l1 * l2 = N, dims 128 + 128))``, pre-norm, one
                          global token at position 0.
``hf-longformer``         ``transformers.LongformerForSequenceClassification(LongformerConfig(hidden_size=256,
                          num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024, hidden_act='gelu',
                          attention_window=256, max_position_embeddings=N + 2, dropout 0, num_labels=2))``: HF's
                          two-sided window 256 = our one-sided 128 (the same 257-key band); its own default global
                          token (position 0, set by the model when no ``global_attention_mask`` is given).
``longdoc-lsh``           ``SequenceClassifier(attention={name: lsh, bucket_size: 64, n_hashes: 2}, reversible=True,
                          position=axial)``.
``hf-reformer``           ``transformers.ReformerModel(ReformerConfig(attn_layers=['lsh'] * 4, hidden_size=256,
                          feed_forward_size=1024, hidden_act='gelu', num_attention_heads=4, attention_head_size=64,
                          axial_pos_embds=True, axial_pos_shape=(l1, l2), axial_pos_embds_dim=(128, 128),
                          lsh_attn_chunk_length=64, num_hashes=2, lsh_num_chunks_before=1, lsh_num_chunks_after=0,
                          num_buckets=longdoc's default, dropout 0, is_decoder=False))`` (always reversible) +
                          mean pooling + ``Linear(512, 2)`` (its output concatenates the two streams).
``longdoc-full``          ``SequenceClassifier(attention={name: full}, position=axial)``.
``torch-transformer``     ``nn.TransformerEncoder(nn.TransformerEncoderLayer(256, 4, 1024, dropout=0,
                          activation='gelu', batch_first=True, norm_first=True), 4, norm=LayerNorm)`` with a
                          token embedding, a learned (N, 256) position table and the same CLS head as longdoc's:
                          the same pre-norm model in plain PyTorch.
``flex-local_global``     (CUDA only) the same pre-norm model as longdoc-local_global with its attention written as a
                          bare ``flex_attention`` call (compiled) with a ``BlockMask`` of ``|i - j| <= 128 or i == 0 or
                          j == 0``: the floor for our local_global on GPU.

``--preset listops``: train.py's default ListOps model instead (d_model 128, 4 heads, d_ff 256, 2 layers, dropout
0.1, window / bucket 32; every row but the first ends in up to N / 10 padding tokens, passed as the padding mask /
``attention_mask`` / ``src_key_padding_mask``); with ``--batch 32 --lengths 300`` it is a ListOps training step.

``--compile off on`` adds ``<impl>+compile`` rows: the longdoc models with ``model.compile=true``
(:func:`longdoc.models.compile_model`: every block compiled with ``torch.compile``, the attention kernels run
eagerly between the compiled parts); the compile happens during the warm-up steps.

``--profile``: instead of the sweep, one step of each selected (implementation, N) under ``torch.profiler`` in a
fresh process after ``--warmup`` steps; prints the operators table (``--profile-rows`` rows, sorted by self CPU
time) and the step's wall time.

Statuses: ok, skipped (not applicable: HF Longformer needs N % 256 == 0, HF Reformer N % 64 == 0; full /
torch-transformer above ``--full-max-n``; flex-local_global off CUDA; a shorter N already failed), timeout,
oom, error (message in ``note``).

Outputs (``--out DIR``, default ``benchmarks/results/model_<device>_<dtype>``): ``model.csv``, ``model.md``
(machine header with the load average, time and memory per implementation and N, ratio rows), ``model.png``
(time and memory vs N), ``model.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import _harness as H

IMPLS = ("longdoc-local_global", "hf-longformer", "longdoc-lsh", "hf-reformer", "longdoc-full", "torch-transformer",
         "flex-local_global")
DEFAULT_LENGTHS = (1024, 2048, 4096, 8192, 16384, 32768)
PAIRS = (  # (ours, reference, label) for the ratio rows
    ("longdoc-local_global", "hf-longformer", "local_global / hf-longformer"),
    ("longdoc-lsh", "hf-reformer", "lsh / hf-reformer"),
    ("longdoc-full", "torch-transformer", "full / torch-transformer"),
    ("longdoc-local_global", "flex-local_global", "local_global / bare flex"),
)
LONGDOC = {"longdoc-local_global": "local_global", "longdoc-lsh": "lsh", "longdoc-full": "full"}
D_MODEL, N_HEADS, D_FF, DEPTH, VOCAB = 256, 4, 1024, 4, 32
LOCAL_WINDOW = 128          # one-sided (longdoc); HF attention_window = 2 * 128
LSH_BUCKET, LSH_HASHES = 64, 2
FIELDS = ("impl", "n", "batch", "time_s", "peak_mem_mib", "status", "state_mib", "step_peak_mib", "alloc_peak_mib",
          "rss_peak_total_mib", "time_median_s", "time_min_s", "n_params", "mem_method", "wall_s", "note")


def axial_shape(n: int) -> tuple[int, int]:
    """(l1, l2) with l1 * l2 == n exactly, l1 the largest divisor <= sqrt(n) (HF Reformer needs the exact product)."""
    l1 = int(n ** 0.5)
    while n % l1:
        l1 -= 1
    return l1, n // l1


def impl_name(impl: str, compiled: bool) -> str:
    return impl + ("+compile" if compiled else "")


# ----------------------------------------------------------------------------------------------
# worker: build one model and measure a training step
# ----------------------------------------------------------------------------------------------


PRESETS = {
    # the comparison of the issue / README: batch 1, N = 1K ... 32K
    "bench": {"d_model": D_MODEL, "heads": N_HEADS, "d_ff": D_FF, "depth": DEPTH, "dropout": 0.0,
              "window": LOCAL_WINDOW, "bucket": LSH_BUCKET, "padded": False},
    # train.py's default ListOps model (conf/model/encoder.yaml, conf/attention/*.yaml): use with --batch 32 and
    # --lengths 300 (ListOps lengths are 50-500); rows end in up to N / 10 padding tokens (length-bucketed batches)
    "listops": {"d_model": 128, "heads": 4, "d_ff": 256, "depth": 2, "dropout": 0.1, "window": 32, "bucket": 32,
                "padded": True},
}


def build(impl: str, n: int, s: dict, compiled: bool = False):
    """Return ``(model, forward)``: ``forward(ids (B, N) int64, padding_mask (B, N) bool or None) -> (B, 2)``
    logits. ``s``: the sizes (:data:`PRESETS`)."""
    import torch
    from torch import nn

    d_model, heads, d_ff, depth, p = s["d_model"], s["heads"], s["d_ff"], s["depth"], s["dropout"]
    if impl in LONGDOC:
        from longdoc.models import SequenceClassifier

        name = LONGDOC[impl]
        attention = {"name": name}
        if name == "local_global":
            attention["attention_window"] = s["window"]
        elif name == "lsh":
            attention.update(bucket_size=s["bucket"], n_hashes=LSH_HASHES)
        model = SequenceClassifier(num_classes=2, pooling="cls", vocab_size=VOCAB, d_model=d_model, n_heads=heads,
                                   depth=depth, d_ff=d_ff, attention=attention, max_seq_len=n, dropout=p,
                                   reversible=name == "lsh",
                                   position={"name": "axial", "axial_shape": list(axial_shape(n)),
                                             "axial_dims": [d_model // 2, d_model - d_model // 2]})
        if compiled:
            from longdoc.models import compile_model

            compile_model(model)

        def forward(ids, pm):
            glob = torch.zeros(ids.shape, dtype=torch.bool, device=ids.device)
            glob[:, 0] = True  # the CLS token (used by local_global, ignored by the others)
            return model(ids, pm, glob)
        return model, forward

    if impl == "hf-longformer":
        from transformers import LongformerConfig, LongformerForSequenceClassification

        cfg = LongformerConfig(vocab_size=VOCAB, hidden_size=d_model, num_hidden_layers=depth,
                               num_attention_heads=heads, intermediate_size=d_ff, hidden_act="gelu",
                               hidden_dropout_prob=p, attention_probs_dropout_prob=0.0,
                               attention_window=2 * s["window"], max_position_embeddings=n + 2, type_vocab_size=1,
                               pad_token_id=1, num_labels=2)
        model = LongformerForSequenceClassification(cfg)
        # global attention on position 0: HF's default for sequence classification
        return model, lambda ids, pm: model(input_ids=ids, attention_mask=None if pm is None else pm.long()).logits

    if impl == "hf-reformer":
        from transformers import ReformerConfig, ReformerModel

        from longdoc.attention import default_n_buckets

        cfg = ReformerConfig(
            attn_layers=["lsh"] * depth, hidden_size=d_model, feed_forward_size=d_ff, hidden_act="gelu",
            num_attention_heads=heads, attention_head_size=d_model // heads,
            axial_pos_embds=True, axial_pos_shape=axial_shape(n), axial_pos_embds_dim=(d_model // 2, d_model // 2),
            lsh_attn_chunk_length=s["bucket"], num_hashes=LSH_HASHES, lsh_num_chunks_before=1,
            lsh_num_chunks_after=0, num_buckets=default_n_buckets(n, s["bucket"]), chunk_size_feed_forward=0,
            hidden_dropout_prob=p, lsh_attention_probs_dropout_prob=0.0, max_position_embeddings=n,
            vocab_size=VOCAB, is_decoder=False)

        class HFReformer(nn.Module):
            def __init__(self):
                super().__init__()
                self.body, self.head = ReformerModel(cfg), nn.Linear(2 * d_model, 2)

            def forward(self, ids, pm):
                mask = None if pm is None else pm.long()
                return self.head(self.body(input_ids=ids, attention_mask=mask).last_hidden_state.mean(dim=1))
        model = HFReformer()
        return model, model

    if impl in ("torch-transformer", "flex-local_global"):
        from longdoc.models import SequenceClassificationHead

        flex = impl == "flex-local_global"

        class FlexAttention(nn.Module):
            """in_proj -> bare flex_attention with the window + global-token BlockMask -> out_proj."""

            def __init__(self):
                super().__init__()
                self.in_proj, self.out_proj = nn.Linear(d_model, 3 * d_model), nn.Linear(d_model, d_model)
                self.mask = None

            def forward(self, x):
                from torch.nn.attention.flex_attention import create_block_mask, flex_attention

                b, t, _ = x.shape
                if self.mask is None:
                    def mask_mod(b_, h_, q, k):
                        return ((q - k).abs() <= s["window"]) | (q == 0) | (k == 0)
                    self.mask = create_block_mask(mask_mod, None, None, t, t, device=x.device)
                    self.attend = torch.compile(flex_attention, dynamic=False)
                q, k, v = self.in_proj(x).view(b, t, 3, heads, d_model // heads).permute(2, 0, 3, 1, 4)
                o = self.attend(q, k, v, block_mask=self.mask)
                return self.out_proj(o.transpose(1, 2).reshape(b, t, d_model))

        class PreNormBlock(nn.Module):
            def __init__(self):
                super().__init__()
                self.n1, self.n2, self.attn = nn.LayerNorm(d_model), nn.LayerNorm(d_model), FlexAttention()
                self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(p), nn.Linear(d_ff, d_model))
                self.drop = nn.Dropout(p)

            def forward(self, x):
                x = x + self.drop(self.attn(self.n1(x)))
                return x + self.drop(self.ff(self.n2(x)))

        class Plain(nn.Module):
            def __init__(self):
                super().__init__()
                self.tok = nn.Embedding(VOCAB, d_model)
                self.pos = nn.Parameter(torch.randn(n, d_model) * 0.02)
                self.drop = nn.Dropout(p)
                if flex:
                    self.body = nn.Sequential(*[PreNormBlock() for _ in range(depth)], nn.LayerNorm(d_model))
                else:
                    layer = nn.TransformerEncoderLayer(d_model, heads, d_ff, dropout=p, activation="gelu",
                                                       batch_first=True, norm_first=True)
                    self.body = nn.TransformerEncoder(layer, depth, norm=nn.LayerNorm(d_model),
                                                      enable_nested_tensor=False)
                self.head = SequenceClassificationHead(d_model, 2, "cls", p)

            def forward(self, ids, pm):
                x = self.drop(self.tok(ids) + self.pos[: ids.shape[1]])
                x = self.body(x) if flex or pm is None else self.body(x, src_key_padding_mask=~pm)
                return self.head(x)
        model = Plain()
        return model, model

    raise ValueError(f"unknown impl {impl!r}; choose from {IMPLS}")


def make_step(cfg: dict):
    """(model, optimizer, batch, step): one training step closure that leaves only the persistent state behind."""
    import contextlib

    import torch
    import torch.nn.functional as F

    device, s = cfg["device"], PRESETS[cfg.get("preset", "bench")]
    s = {**s, "depth": cfg.get("depth") or s["depth"]}
    model, forward = build(cfg["impl"], cfg["n"], s, cfg.get("compile", False))
    model = model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(int(cfg.get("seed", 0)))
    b, n = cfg["batch"], cfg["n"]
    ids = torch.randint(2, VOCAB, (b, n), generator=gen)  # 0 / 1: pad ids
    pm = None
    if s["padded"]:
        lengths = n - torch.randint(0, n // 10 + 1, (b,), generator=gen)
        lengths[0] = n
        pm = torch.arange(n)[None, :] < lengths[:, None]
        ids[~pm] = 1 if cfg["impl"] == "hf-longformer" else 0
        pm = pm.to(device)
    ids = ids.to(device)
    labels = torch.zeros(b, dtype=torch.long, device=device)
    bf16 = cfg.get("dtype", "fp32") == "bf16"

    def autocast():
        if bf16:
            return torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step():
        with autocast():
            logits = forward(ids, pm)
        loss = F.cross_entropy(logits.float(), labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        del loss, logits

    return model, opt, (ids, labels), step


def profile_table(step, device: str, rows: int) -> tuple[str, float]:
    """One ``step`` under torch.profiler: (operators table sorted by self CPU time, wall seconds of the step)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=acts) as prof:
        t0 = time.perf_counter()
        step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    sort = "self_cuda_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=rows, max_name_column_width=48), wall


def worker(cfg: dict) -> dict:
    """Worker process body: one (impl, n) configuration; phase 'profile' returns the operators table."""
    H.worker_setup(cfg)
    model, opt, batch, step = make_step(cfg)
    step()  # fail fast; counts as the first warm-up step (creates AdamW state; compiles)
    if cfg.get("phase") == "profile":
        for _ in range(max(cfg["warmup"] - 1, 0)):
            step()
        table, wall = profile_table(step, cfg["device"], int(cfg.get("profile_rows", 30)))
        return {"profile": table, "profile_step_s": wall, "device_name": H.device_description(cfg["device"])}
    res = H.measure(step, {**cfg, "warmup": max(cfg["warmup"] - 1, 0), "mem_warmup": 0})
    res["n_params"] = sum(p.numel() for p in model.parameters())
    if "peak_mem_mib" in res:  # + the persistent state live before every step (as benchmarks/memory.py)
        state = H.tensor_bytes([list(model.parameters()), list(model.buffers()), opt.state, *batch]) / H.MIB
        res["state_mib"], res["step_peak_mib"] = state, res["peak_mem_mib"]
        res["peak_mem_mib"] += state
        if res.get("alloc_peak_mib") is not None:
            res["alloc_peak_mib"] += state
    return res


# ----------------------------------------------------------------------------------------------
# parent: plan, run, report
# ----------------------------------------------------------------------------------------------


def skip_reason(impl: str, n: int, args) -> str | None:
    """Why (impl, n) is not run, or None."""
    cuda = args.device.startswith("cuda")
    if impl == "flex-local_global" and not cuda:
        return "bare flex_attention has no CPU backward in this torch (CUDA only)"
    full_max = args.full_max_n if args.full_max_n is not None else (None if cuda else 4096)
    if impl in ("longdoc-full", "torch-transformer") and full_max is not None and n > full_max:
        return f"exact attention above --full-max-n {full_max} (O(N^2) time)"
    sizes = PRESETS[args.preset]
    if impl == "hf-longformer" and n % (2 * sizes["window"]):
        return f"HF Longformer pads N to a multiple of {2 * sizes['window']}"
    if impl == "hf-reformer" and n % sizes["bucket"]:
        return f"HF Reformer needs N % {sizes['bucket']} == 0"
    return None


def report(rows: list[dict], lengths: list[int], names: list[str], info: dict, args) -> str:
    """Markdown: per-implementation time and memory, the ratio rows (ours / reference, compiled / eager)."""
    sizes = PRESETS[args.preset]
    depth = args.depth or sizes["depth"]
    by = {(r["impl"], r["n"]): r for r in rows}
    header = ["", *[str(n) for n in lengths]]
    body = [[f"time {nm}", *[H.cell(by.get((nm, n)), "time_s", H.fmt_time) for n in lengths]] for nm in names]
    body += [[f"peak MiB {nm}", *[H.cell(by.get((nm, n)), "peak_mem_mib", H.fmt_mib) for n in lengths]]
             for nm in names]
    ratios = []
    pairs = [(o, r, lbl) for o, r, lbl in PAIRS]
    pairs += [(impl_name(o, True), r, lbl.replace(" /", "+compile /", 1)) for o, r, lbl in PAIRS]
    for ours, ref, label in pairs:
        if ours in names and ref in names:
            for key, what in (("time_s", "time"), ("peak_mem_mib", "memory")):
                ratios.append([f"**{label} {what}**", *[
                    H.fmt_ratio(H.ratio(H.value(by.get((ours, n)), key), H.value(by.get((ref, n)), key)))
                    for n in lengths]])
    for impl in LONGDOC:
        if impl in names and impl_name(impl, True) in names:
            ratios.append([f"**{impl} compiled / eager time**", *[
                H.fmt_ratio(H.ratio(H.value(by.get((impl_name(impl, True), n)), "time_s"),
                                    H.value(by.get((impl, n)), "time_s"))) for n in lengths]])
    lines = [f"# Training step of the whole model ({args.device}, {args.dtype})", "", H.machine_header(info), "",
             f"Preset {args.preset}: batch {args.batch}, depth {depth}, d_model {sizes['d_model']}, {sizes['heads']} heads, "
             f"d_ff {sizes['d_ff']}, dropout {sizes['dropout']}, window {sizes['window']}, bucket {sizes['bucket']}"
             f"{', padded rows' if sizes['padded'] else ''}, "
             f"AdamW; one step = forward + backward + AdamW.step(); {args.time_stat} of {args.repeats} steps after "
             f"{args.warmup} warm-up; peak memory = persistent state + peak growth during one step "
             f"({next((r['mem_method'] for r in rows if r.get('mem_method')), '?')}); ratios < 1 mean longdoc is "
             "faster / smaller.", "", H.markdown_table(header, body)]
    if ratios:
        lines += ["", H.markdown_table(["ratio", *header[1:]], ratios)]
    notes = [f"- {r['impl']} N={r['n']}: {r['status']} -- {r['note']}" for r in rows
             if r["status"] != "ok" and r.get("note")]
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], lengths: list[int], names: list[str], info: dict, path: Path) -> None:
    def series(key):
        return {nm: [(r["n"], H.value(r, key)) for r in rows if r["impl"] == nm] for nm in names}
    H.plot_panels(path, [
        {"title": "training step time (forward + backward + AdamW)", "xlabel": "sequence length N",
         "ylabel": "seconds", "series": series("time_s"), "xticks": lengths},
        {"title": "peak memory of the step (state + growth)", "xlabel": "sequence length N", "ylabel": "MiB",
         "series": series("peak_mem_mib"), "xticks": lengths},
    ], title=H.machine_header(info))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=list(DEFAULT_LENGTHS))
    p.add_argument("--impls", nargs="+", default=[i for i in IMPLS if i != "flex-local_global"], choices=IMPLS,
                   help="default: all but flex-local_global (add it on CUDA)")
    p.add_argument("--compile", type=lambda s: s.lower() in ("1", "true", "on", "yes"), nargs="+", default=[False],
                   help="off and/or on: longdoc models with model.compile=true as extra '+compile' rows")
    p.add_argument("--preset", default="bench", choices=sorted(PRESETS),
                   help="model sizes: bench (d_model 256, 4 layers, dropout 0) or listops (train.py's default ListOps "
                        "model: d_model 128, 2 layers, dropout 0.1, window / bucket 32, padded rows)")
    p.add_argument("--depth", type=int, default=None, help="layers (default: the preset's)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5, help="timed steps; the median is reported")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (>= 1; compiled models compile here)")
    p.add_argument("--time-stat", default="median", choices=["median", "min"])
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:<i>")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="bf16: autocast (parameters stay fp32)")
    p.add_argument("--cpu-allocator", default="default", choices=["tuned", "default"],
                   help="timing processes, every implementation alike (see benchmarks/README.md)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in workers (default: torch's)")
    p.add_argument("--timeout", type=float, default=1200.0, help="seconds per configuration (then 'timeout')")
    p.add_argument("--full-max-n", type=int, default=None,
                   help="longest N for longdoc-full / torch-transformer (default 4096 on CPU, no limit on CUDA)")
    p.add_argument("--mem-limit-gib", type=float, default=None,
                   help="kill a CPU worker whose RSS exceeds this ('oom'); default 90%% of MemAvailable at start")
    p.add_argument("--no-alloc-profile", action="store_true", help="skip the torch.profiler cross-check step (CPU)")
    p.add_argument("--keep-going", action="store_true", help="run longer N after an implementation timed out / oom")
    p.add_argument("--max-wall-s", type=float, default=None,
                   help="start no configuration after this many seconds of the sweep (the rest: 'skipped')")
    p.add_argument("--profile", action="store_true",
                   help="print torch.profiler's top operators of one step per (impl, N) instead of the sweep")
    p.add_argument("--profile-rows", type=int, default=30)
    p.add_argument("--out", default=None, help="output directory (default benchmarks/results/model_<device>_<dtype>)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def worker_cfg(args, impl: str, n: int, compiled: bool) -> dict:
    return {"impl": impl, "n": n, "preset": args.preset, "depth": args.depth, "batch": args.batch, "device": args.device,
            "dtype": args.dtype, "compile": compiled, "repeats": args.repeats, "warmup": max(args.warmup, 1),
            "threads": args.threads, "seed": args.seed, "alloc_profile": not args.no_alloc_profile,
            "time_stat": args.time_stat, "cpu_allocator": args.cpu_allocator, "profile_rows": args.profile_rows}


def plan(args, lengths: list[int]) -> list[tuple[str, int, bool]]:
    impls = [i for i in IMPLS if i in args.impls]
    out = []
    for n in lengths:
        for impl in impls:
            for compiled in dict.fromkeys(args.compile if impl in LONGDOC else [False]):
                out.append((impl, n, compiled))
    return out


def run_profile(args, lengths: list[int]) -> int:
    for impl, n, compiled in plan(args, lengths):
        name = impl_name(impl, compiled)
        reason = skip_reason(impl, n, args)
        if reason:
            H.log(f"{name} N={n}: skipped ({reason})")
            continue
        res = H.run_config(__file__, {**worker_cfg(args, impl, n, compiled), "phase": "profile"},
                           timeout=args.timeout)
        print(f"\n## {name}, N={n}, batch {args.batch}, {args.device} {args.dtype}: {res['status']}"
              + (f", profiled step {res['profile_step_s']:.3f} s" if res.get("profile_step_s") else "")
              + (f" -- {res.get('note')}" if res.get("note") else ""))
        if res.get("profile"):
            print(res["profile"])
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    lengths = sorted(set(args.lengths))
    if args.profile:
        return run_profile(args, lengths)
    out = Path(args.out or f"benchmarks/results/model_{args.device.replace(':', '')}_{args.dtype}")
    mem_limit = (int(args.mem_limit_gib * H.GIB) if args.mem_limit_gib
                 else (H.default_mem_limit_bytes() if args.device == "cpu" else None))
    info = H.machine_info(args.device, args.dtype)
    H.log(H.machine_header(info))
    todo = plan(args, lengths)
    names = list(dict.fromkeys(impl_name(i, c) for i, _, c in todo))
    H.log(f"{len(names)} implementations x {len(lengths)} lengths -> {out}/"
          + (f"; worker RSS limit {mem_limit / H.GIB:.1f} GiB" if mem_limit else ""))
    rows: list[dict] = []
    failed: dict[str, str] = {}
    t_start = time.perf_counter()
    for impl, n, compiled in todo:
        name = impl_name(impl, compiled)
        reason = skip_reason(impl, n, args)
        if reason is None and name in failed and not args.keep_going:
            reason = f"a shorter N already ended in {failed[name]}"
        if reason is None and args.max_wall_s is not None and time.perf_counter() - t_start > args.max_wall_s:
            reason = f"--max-wall-s {args.max_wall_s:g} reached"
        if reason:
            res = {"status": "skipped", "note": reason}
        else:
            res = H.run_measured(__file__, worker_cfg(args, impl, n, compiled), timeout=args.timeout,
                                 mem_limit_bytes=mem_limit)
            if res["status"] in ("timeout", "oom"):
                failed[name] = res["status"]
            if res.get("device_name"):
                info["device_name"] = res["device_name"]
        row = {"impl": name, "n": n, "batch": args.batch, **res}
        rows.append(row)
        H.log_row(name, n, row)
        H.write_csv(out / "model.csv", rows, FIELDS)  # keep partial results if interrupted
    H.write_report(out, "model", report(rows, lengths, names, info, args),
                   {"args": vars(args), "machine": info, "rows": rows}, t_start,
                   lambda path: plot(rows, lengths, names, info, path))
    return 0


if __name__ == "__main__":
    if "--worker" in sys.argv:
        H.worker_main(worker)
    else:
        sys.exit(main())
