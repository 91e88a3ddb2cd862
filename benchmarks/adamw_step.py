"""``opt.step()`` of train.py's own optimizer: torch's fused AdamW (``optimizer.fused=null``, the default) vs its
per-tensor loop (``optimizer.fused=false``).

Run from the repository root::

    .venv/bin/python benchmarks/adamw_step.py                       # the default model, and the model.py bench sizes
    .venv/bin/python benchmarks/adamw_step.py --overrides model.d_model=512 model.depth=8

Each model is composed and built as train.py does (``longdoc.train.validate_config``), its optimizer by
``LongDocModule.configure_optimizers``; every parameter gets a random gradient, then 3 untimed and ``--repeats``
timed ``opt.step()`` calls; the median is printed in milliseconds. The update rule is the same in both (the tests
check the parameters agree to 1e-6), so only the time differs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from types import SimpleNamespace

import torch

from longdoc.evaluation.train_config import compose_train_config
from longdoc.train import validate_config

BENCH_SIZES = ["model.d_model=256", "model.depth=4", "model.d_ff=1024", "model.n_heads=4"]  # model.py's bench preset


def step_ms(overrides: list[str], fused: str, repeats: int, out: str) -> tuple[float, int]:
    """Median ``opt.step()`` time (ms) and the parameter count of the model composed with ``overrides``."""
    cfg = compose_train_config([f"optimizer.fused={fused}", f"paths.output_dir={out}", f"paths.log_dir={out}",
                                *overrides])
    _, module = validate_config(cfg)
    module._trainer = SimpleNamespace(world_size=1, estimated_stepping_batches=100)
    opt = module.configure_optimizers()["optimizer"]
    for p in module.parameters():
        p.grad = torch.randn_like(p)
    for _ in range(3):
        opt.step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2] * 1e3, sum(p.numel() for p in module.parameters())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--overrides", nargs="*", default=None, help="one model (default: train.py's, then bench sizes)")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    models = [args.overrides] if args.overrides is not None else [[], BENCH_SIZES]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as out:
        for overrides in models:
            fused, n = step_ms(overrides, "null", args.repeats, out)
            loop, _ = step_ms(overrides, "false", args.repeats, out)
            print(f"{' '.join(overrides) or 'train.py default model'}: {n} parameters, opt.step() fused {fused:.2f} ms, "
                  f"per-tensor loop {loop:.2f} ms ({loop / fused:.1f}x)")


if __name__ == "__main__":
    main()
