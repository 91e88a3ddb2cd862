"""Self-pretraining vs training from scratch, same optimizer steps, same model, same seed (Amos, Berant & Gupta
2023, "Never Train from Scratch", section 3): a measurement, not a pass / fail.

For every data set ``d`` and attention ``a`` asked for, two runs, each in its own process and run directory:

* **scratch**: ``train.py experiment=spt/<d> stages=null attention=<a> trainer.max_steps=<2 S>``: the preset's
  data, model and trainer settings, the supervised task only, for as many steps as both stages together;
* **spt**: ``train.py experiment=spt/<d> attention=<a>``: ``S`` steps of the preset's pretraining objective
  (``task=mlm``) on the training inputs, then ``S`` steps of fine-tuning from that encoder.

``S`` is each preset's own (``stages.pretrain.trainer.max_steps``; the two stages have the same number); ``--steps``
overrides it for both arms. A run whose ``metrics.json`` exists is read, not run again, so an interrupted sweep
continues where it stopped (and each run resumes its own checkpoints: ``ckpt_path=auto``).

Writes ``<out>/spt.csv`` (one row per run), ``spt.md`` (the table: test accuracy of both arms, the difference in
points, the pretraining stage's masked-token accuracy and bits per token, wall time of each arm) and ``spt.png``.

    .venv/bin/python benchmarks/spt.py                       # listops + stdlib_packages, 3 attentions -> docs/
    .venv/bin/python benchmarks/spt.py --data listops --attentions local_global --out /tmp/spt
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ("listops", "stdlib_packages")
ATTENTIONS = ("full", "lsh", "local_global")
FIELDS = ("data", "attention", "arm", "variant", "steps", "test_acc", "val_acc_best", "majority_acc", "pretrain_mlm_acc",
          "pretrain_bpt", "wall_time_s", "command")


def preset_steps(data: str) -> int:
    """``S`` of ``experiment=spt/<data>``: its pretraining stage's ``trainer.max_steps`` (== the fine-tuning's).

    Raises:
        ValueError: the two stages of the preset have different step counts.
    """
    from hydra import compose, initialize_config_module

    with initialize_config_module("longdoc.conf", version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment=spt/{data}"])
    pre, fine = cfg.stages.pretrain.trainer.max_steps, cfg.stages.finetune.trainer.max_steps
    if pre != fine:
        raise ValueError(f"experiment=spt/{data}: pretrain has {pre} steps, finetune {fine}; the comparison needs "
                         "the same S in both (or pass --steps)")
    return int(pre)


def commands(data: str, attention: str, steps: int, run_dir: Path, overrides: list[str],
             spt_overrides: list[str] = (), tag: str = "") -> dict[str, list[str]]:
    """The train.py command line of each arm (``scratch``, ``spt``) for ``steps`` = S; ``spt_overrides`` go to the
    spt arm only (a pretraining variant, e.g. ``stages.pretrain.mlm.mask_rate=0.5``), whose run directory is then
    ``spt_<tag>`` (the scratch arm is shared by every variant)."""
    base = [sys.executable, str(ROOT / "train.py"), f"experiment=spt/{data}", f"attention={attention}",
            "trainer.enable_progress_bar=false", *overrides]
    return {
        "scratch": [*base, "stages=null", f"trainer.max_steps={2 * steps}", f"hydra.run.dir={run_dir / 'scratch'}"],
        "spt": [*base, f"stages.pretrain.trainer.max_steps={steps}", f"stages.finetune.trainer.max_steps={steps}",
                *spt_overrides, f"hydra.run.dir={run_dir / (f'spt_{tag}' if tag else 'spt')}"],
    }


def run_arm(cmd: list[str], run_dir: Path) -> dict:
    """Run one arm (unless its ``metrics.json`` exists) and return its metrics; the log goes to ``<run_dir>.log``.

    Raises:
        RuntimeError: train.py failed (its exit code and the log file named).
    """
    metrics = run_dir / "metrics.json"
    if not metrics.is_file():
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        log = run_dir.with_suffix(".log")
        print("$", " ".join(cmd[1:]), flush=True)
        with open(log, "a") as f:
            rc = subprocess.call(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
        if rc != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {rc}; see {log}")
    return json.loads(metrics.read_text())


def row(data: str, attention: str, arm: str, steps: int, m: dict, cmd: list[str], variant: str = "") -> dict:
    """One CSV row from an arm's ``metrics.json`` (the spt arm's keys carry ``pretrain/`` / ``finetune/``)."""
    p = "finetune/" if arm == "spt" else ""
    wall = m.get(f"{p}wall_time_s", 0.0) + (m.get("pretrain/wall_time_s", 0.0) if arm == "spt" else 0.0)
    return {"data": data, "attention": attention, "arm": arm, "variant": variant, "steps": 2 * steps,
            "test_acc": m[f"{p}test/acc"], "val_acc_best": m.get(f"{p}val/acc_best", float("nan")),
            "majority_acc": m.get(f"{p}majority_acc", float("nan")),
            "pretrain_mlm_acc": m.get("pretrain/test/mlm_acc", float("nan")),
            "pretrain_bpt": m.get("pretrain/test/bpt", float("nan")), "wall_time_s": wall,
            "command": "python train.py " + " ".join(a for a in cmd[2:] if not a.startswith(("hydra.run.dir",
                                                                                               "trainer.enable_")))}


def machine() -> str:
    """One line: machine, its load at the end of the sweep, torch version, threads."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.machine()} {os.cpu_count()} CPUs, load {load:.2f}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, Python {platform.python_version()}")


def write_outputs(rows: list[dict], out: Path) -> None:
    """``spt.csv``, ``spt.md`` and ``spt.png`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "spt.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    by = {(r["data"], r["attention"], r["arm"] + (f":{r['variant']}" if r["variant"] else "")): r for r in rows}
    lines = ["# Self-pretraining (SPT) vs from scratch: test accuracy, same steps, same model, same seed", "",
             f"`benchmarks/spt.py`, {time.strftime('%Y-%m-%d')}; {machine()}.", "",
             "| data | attention | pretraining | steps (S + S) | scratch test acc | SPT test acc | SPT - scratch (points) | "
             "majority | pretrain masked-token acc | pretrain bits/token | wall scratch / SPT (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (d, a, arm), s in by.items():
        if not arm.startswith("spt") or (d, a, "scratch") not in by:
            continue
        r = by[(d, a, "scratch")]
        lines.append(f"| {d} | {a} | {s['variant'] or 'preset'} | {r['steps']} ({r['steps'] // 2} + {r['steps'] // 2}) | "
                     f"{r['test_acc']:.4f} | "
                     f"{s['test_acc']:.4f} | {100 * (s['test_acc'] - r['test_acc']):+.1f} | "
                     f"{r['majority_acc']:.4f} | {s['pretrain_mlm_acc']:.4f} | {s['pretrain_bpt']:.3f} | "
                     f"{r['wall_time_s']:.0f} / {s['wall_time_s']:.0f} |")
    lines += ["", "Commands (each arm in its own run directory):", ""]
    lines += [f"- {r['data']} / {r['attention']} / {r['arm']}{' ' + r['variant'] if r['variant'] else ''}: "
              f"`{r['command']}`" for r in rows]
    (out / "spt.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datas = list(dict.fromkeys(r["data"] for r in rows))
    fig, axes = plt.subplots(1, len(datas), figsize=(5 * len(datas), 3.6), squeeze=False)
    for ax, d in zip(axes[0], datas):
        atts = [a for a in ATTENTIONS if (d, a, "scratch") in by and (d, a, "spt") in by]
        xs = range(len(atts))
        for k, (arm, label) in enumerate((("scratch", "from scratch"), ("spt", "self-pretrained"))):
            ax.bar([x + (k - 0.5) * 0.38 for x in xs], [by[(d, a, arm)]["test_acc"] for a in atts], 0.38,
                   label=label)
        if atts:
            ax.axhline(by[(d, atts[0], "scratch")]["majority_acc"], color="grey", ls="--", lw=1, label="majority")
            ax.set_title(f"{d} ({by[(d, atts[0], 'scratch')]['steps']} steps)")
        ax.set_xticks(list(xs), atts)
        ax.set_ylabel("test accuracy")
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "spt.png", dpi=120)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", default=list(DATA), choices=DATA)
    ap.add_argument("--attentions", nargs="+", default=list(ATTENTIONS), choices=ATTENTIONS)
    ap.add_argument("--steps", type=int, default=None, help="S for both arms (default: each preset's own)")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "spt_sweep", help="run directories")
    ap.add_argument("--out", type=Path, default=ROOT / "docs", help="spt.csv / spt.md / spt.png")
    ap.add_argument("--spt-overrides", nargs="*", default=[], help="train.py overrides for the spt arm only")
    ap.add_argument("--tag", default="", help="names the spt variant (needed with --spt-overrides)")
    ap.add_argument("--csv-in", type=Path, default=None, help="rows measured before (kept, e.g. the preset arms)")
    ap.add_argument("overrides", nargs="*", help="extra train.py overrides for both arms (key=value)")
    args = ap.parse_args(argv)
    if args.spt_overrides and not args.tag:
        ap.error("--spt-overrides needs --tag (the variant's name and run directory)")
    rows = []
    if args.csv_in is not None:
        with open(args.csv_in) as f:
            rows = [{k: (float(v) if k in ("test_acc", "val_acc_best", "majority_acc", "pretrain_mlm_acc", "pretrain_bpt",
                                           "wall_time_s") else int(v) if k == "steps" else v) for k, v in r.items()}
                    for r in csv.DictReader(f)]
    for r in rows:
        r["variant"] = r.get("variant") or ""
    seen = {(r["data"], r["attention"], r["arm"], r["variant"]) for r in rows}
    for d in args.data:
        steps = args.steps or preset_steps(d)
        for a in args.attentions:
            arms = commands(d, a, steps, args.runs / f"{d}_{a}", args.overrides, args.spt_overrides, args.tag)
            for arm, cmd in arms.items():
                if (d, a, arm, args.tag if arm == "spt" else "") in seen:
                    continue
                m = run_arm(cmd, Path(cmd[-1].split("=", 1)[1]))
                rows.append(row(d, a, arm, steps, m, cmd, args.tag if arm == "spt" else ""))
                write_outputs(rows, args.out)


if __name__ == "__main__":
    main()
