"""mode=lra_table: run dirs -> LRA Table 1 layout beside the published rows, LM table, warnings, errors."""

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from longdoc.evaluate import evaluate
from longdoc.evaluation.report import (PUBLISHED_TABLE1, RunSkipped, collect_runs, expand_run_dirs, lra_table,
                                       read_run)


def _run(root: Path, name: str, target: str, attention: str, metrics: dict | None, **data) -> Path:
    d = root / name
    d.mkdir(parents=True)
    cfg = {"data": {"_target_": f"longdoc.data.{target}", **data}, "attention": {"name": attention},
           "model": {"attention_layers": None}}
    OmegaConf.save(OmegaConf.create(cfg), d / "config.yaml")
    if metrics is not None:
        (d / "metrics.json").write_text(json.dumps(metrics))
    return d


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "train" / "runs"
    _run(root, "a_lsh", "ListOpsDataModule", "lsh", {"test/acc": 0.3712, "majority_acc": 0.15}, max_length=500)
    _run(root, "b_lsh", "ListOpsDataModule", "lsh", {"test/acc": 0.40}, max_length=500)  # the better one
    _run(root, "c_full", "LRATextDataModule", "full", {"test/acc": 0.6123})
    _run(root, "d_lg", "LRAPathfinderDataModule", "local_global", {"test/acc": 0.505}, resolution=128)
    _run(root, "e_lm", "Enwik8DataModule", "lsh", {"test/bpb": 2.345, "test/loss": 1.6})
    _run(root, "f_unfinished", "ListOpsDataModule", "full", None)
    _run(root, "g_other", "TextClassificationDataModule", "full", {"test/acc": 0.9})
    return root


def test_lra_table_mode_writes_table_png_and_warns(compose_cfg, runs, tmp_path, caplog):
    out = tmp_path / "eval"
    cfg = compose_cfg("mode=lra_table", f"runs=[{runs}/*]", f"paths.output_dir={out}", config_name="evaluate")
    with caplog.at_level(logging.WARNING, logger="longdoc"):
        res = evaluate(cfg)
    md = (out / "lra_table.md").read_text()
    assert (out / "lra_table.png").stat().st_size > 10_000
    # ours: best per cell, in %, Avg over the tasks of the row
    assert "| Reformer (ours) | 40.00 | - | - | - | - | - | 40.00 | - |" in md
    assert "| Transformer (ours) | - | 61.23 | - | - | - | - | 61.23 | - |" in md
    assert "| Longformer (ours) | - | - | - | - | - | 50.50 | 50.50 | - |" in md  # resolution 128 = Path-X
    # published rows (Tay et al. 2021, Table 1); their Avg over our tasks (Path-X FAIL = 50), then the paper's
    assert "| Transformer (Tay et al. 2021) | 36.37 | 64.27 | 57.46 | 42.44 | 71.40 | FAIL | 50.21 | 54.39 |" in md
    assert "| Reformer (Tay et al. 2021) | 37.27 | 56.10 | 53.40 | 38.07 | 68.50 | FAIL |" in md
    assert "| Longformer (Tay et al. 2021) | 35.63 | 62.85 | 56.89 | 42.22 | 69.71 | FAIL |" in md
    # Amos et al. 2024's self-pretrained Transformer: the average its section 3.2 quotes (86.2), cells not guessed
    assert "| Transformer + Rotary + Masked SPT (Amos et al. 2024) | ? | ? | ? | ? | ? | ? | - | 86.20 |" in md
    assert "Never Train from Scratch" in md
    assert "## Byte-level LM (bits per byte)" in md and "| Reformer (ours) | 2.345 | 1 |" in md
    skipped = " ".join(r.getMessage() for r in caplog.records)
    assert "f_unfinished" in skipped and "no metrics.json" in skipped
    assert "g_other" in skipped and "TextClassificationDataModule" in skipped
    assert len(res["results"]) == 5 and len(res["skipped"]) == 2


def test_published_averages_match_the_paper():
    for name, vals in PUBLISHED_TABLE1["rows"].items():
        five = [v for v in vals if v is not None]
        assert len(five) == 5
        assert round(sum(five) / 5, 2) == pytest.approx(PUBLISHED_TABLE1["avg"][name], abs=0.011)


def test_mixed_layers_and_best_cell(tmp_path):
    d = _run(tmp_path, "mix", "LRAImageDataModule", "local_global", {"test/acc": 0.42})
    cfg = OmegaConf.load(d / "config.yaml")
    cfg.model.attention_layers = ["local_global", "lsh"]
    OmegaConf.save(cfg, d / "config.yaml")
    r = read_run(d)
    assert r.row == "Mixed local_global+lsh (ours)" and r.task == "Image" and r.value == pytest.approx(42.0)
    header, rows, _ = lra_table([r])
    assert rows[0][0] == "Mixed local_global+lsh (ours)" and rows[0][header.index("Image")] == "42.00"


def test_unusable_runs_are_skipped_with_a_reason(tmp_path):
    _run(tmp_path, "no_test", "ListOpsDataModule", "lsh", {"val/acc": 0.3})
    results, skipped = collect_runs([tmp_path / "no_test", tmp_path / "missing"])
    assert results == [] and "test/acc" in skipped[0] and "no config.yaml" in skipped[1]
    with pytest.raises(RunSkipped, match="no config.yaml"):
        read_run(tmp_path)


def test_lra_table_errors_name_the_key(compose_cfg, tmp_path):
    with pytest.raises(ValueError, match=r"mode=lra_table needs runs=\[<run dir>,...\]"):
        evaluate(compose_cfg("mode=lra_table", config_name="evaluate"))
    _run(tmp_path, "only_unfinished", "ListOpsDataModule", "lsh", None)
    cfg = compose_cfg("mode=lra_table", f"runs=[{tmp_path}/only_unfinished,{tmp_path}/nothing_here*]",
                      config_name="evaluate")
    with pytest.raises(ValueError, match="no usable run.*metrics.json with 'test/acc'.*matches no directory.*no metrics.json"):
        evaluate(cfg)


def test_unknown_mode_and_metrics_without_checkpoint(compose_cfg):
    with pytest.raises(ValueError, match="mode='nope' is unknown"):
        evaluate(compose_cfg("mode=nope", config_name="evaluate"))
    with pytest.raises(ValueError, match="mode=metrics needs ckpt_path="):
        evaluate(compose_cfg(config_name="evaluate"))


# --- self-pretrained runs (experiment=spt/<data>) ---------------------------------------------------------------------
# train.py's layout of one such run (a run directory, or one job <n>_<overrides> of a multirun sweep):
#   .hydra/{config,hydra,overrides}.yaml   the composed config (with `stages`), no metrics.json
#   pretrain/{config.yaml,metrics.json}   task: mlm, metrics val/bpt, test/bpt, test/mlm_acc (no test/acc)
#   finetune/{config.yaml,metrics.json}   the classification stage: test/acc, majority_acc, wall_time_s
#   metrics.json                          both stages' metrics under pretrain/... and finetune/...
#   <task_name>.log
# and no config.yaml of its own.


def _spt_run(root: Path, name: str, attention: str, test_acc: float, pre_wall: float, ft_wall: float) -> Path:
    d = root / name
    data = {"_target_": "longdoc.data.ListOpsDataModule", "max_length": 60}
    common = {"task_name": "spt_listops", "data": data, "attention": {"name": attention},
              "model": {"attention_layers": None, "init_from": None}}
    stages = {"pretrain": {"task": "mlm", "trainer": {"max_steps": 3}}, "finetune": {"trainer": {"max_steps": 3}}}
    (d / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({**common, "task": None, "stages": stages}), d / ".hydra" / "config.yaml")
    (d / ".hydra" / "hydra.yaml").write_text("hydra:\n  mode: RUN\n")
    (d / ".hydra" / "overrides.yaml").write_text(f"- experiment=spt/listops\n- attention={attention}\n")
    pre = {"test/bpt": 5.19, "test/mlm_acc": 0.08, "val/bpt": 4.84, "val/bpt_best": 4.84, "wall_time_s": pre_wall}
    fin = {"majority_acc": 0.15, "test/acc": test_acc, "test/loss": 2.3, "val/acc": 0.3, "val/acc_best": 0.3,
           "wall_time_s": ft_wall}
    for stage, metrics, extra in (("pretrain", pre, {"task": "mlm"}),
                                  ("finetune", fin, {"task": None, "model": {**common["model"],
                                                                             "init_from": str(d / "pretrain")}})):
        (d / stage / "checkpoints").mkdir(parents=True)
        OmegaConf.save(OmegaConf.create({**common, **extra}), d / stage / "config.yaml")
        (d / stage / "metrics.json").write_text(json.dumps(metrics))
    both = {f"{s}/{k}": v for s, m in (("pretrain", pre), ("finetune", fin)) for k, v in m.items()}
    (d / "metrics.json").write_text(json.dumps({**both, "optimized_value": 0.3}))
    (d / "spt_listops.log").write_text("")
    return d


def _used_runs(md: str) -> list[str]:
    """The first column of lra_table.md's "Runs used" table."""
    section = md.split("## Runs used", 1)[1].split("## Skipped", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")][2:]  # after the header and |---|
    return [line.split("|")[1].strip() for line in rows]


def test_lra_table_lists_a_self_pretrained_run_as_one_spt_row(compose_cfg, tmp_path):
    runs = tmp_path / "outputs" / "spt_listops" / "runs"
    spt = _spt_run(runs, "2026-01-02_03-04-05", "full", 0.41, pre_wall=60.0, ft_wall=120.0)
    scratch = _run(tmp_path / "outputs" / "train" / "runs", "scratch", "ListOpsDataModule", "full", {"test/acc": 0.37})
    for pattern, expected in (([str(spt)], [spt]), ([f"{runs}/*", str(scratch)], [spt, scratch])):
        out = tmp_path / f"eval{len(expected)}"
        cfg = compose_cfg("mode=lra_table", f"runs=[{','.join(pattern)}]", f"paths.output_dir={out}",
                          config_name="evaluate")
        res = evaluate(cfg)
        md = (out / "lra_table.md").read_text()
        assert "| Transformer + SPT (ours) | 41.00 | - | - | - | - | - | 41.00 | - |" in md
        assert ("| Transformer (ours) | 37.00 |" in md) == (scratch in expected)  # finetune/ is not a scratch row
        assert [r.run_dir for r in res["results"]] == expected and res["skipped"] == []
        assert _used_runs(md) == [str(p) for p in expected]  # no .hydra, pretrain or finetune rows
        # wall time: both stages, 60 s + 120 s
        assert f"| {spt} | ListOps | Transformer + SPT (ours) | test/acc | 41.00 | 15.00 | 3.0 min |" in md


def test_lra_table_reads_a_multirun_folder_of_self_pretrained_runs(compose_cfg, tmp_path):
    sweep = tmp_path / "outputs" / "spt_listops" / "multiruns" / "2026-01-02_03-04-05"
    full = _spt_run(sweep, "0_attention=full,experiment=spt_listops", "full", 0.41, 10.0, 20.0)
    lsh = _spt_run(sweep, "1_attention=lsh,experiment=spt_listops", "lsh", 0.385, 10.0, 20.0)
    (sweep / "multirun.yaml").write_text("hydra:\n  mode: MULTIRUN\n")
    out = tmp_path / "eval"
    res = evaluate(compose_cfg("mode=lra_table", f"runs=[{sweep}]", f"paths.output_dir={out}", config_name="evaluate"))
    md = (out / "lra_table.md").read_text()
    assert "| Transformer + SPT (ours) | 41.00 | - | - | - | - | - | 41.00 | - |" in md
    assert "| Reformer + SPT (ours) | 38.50 | - | - | - | - | - | 38.50 | - |" in md
    assert "| Transformer (ours) |" not in md and "| Reformer (ours) |" not in md
    assert [r.run_dir for r in res["results"]] == [full, lsh] and res["skipped"] == []
    assert _used_runs(md) == [str(full), str(lsh)]
    # the folder above the sweep (<task>/multiruns/<sweep>/<job>) is searched two levels down, still job by job
    res = evaluate(compose_cfg("mode=lra_table", f"runs=[{sweep.parent}]", f"paths.output_dir={out}",
                               config_name="evaluate"))
    assert [r.run_dir for r in res["results"]] == [full, lsh]


def test_an_unfinished_self_pretrained_run_is_skipped_as_one_run(tmp_path):
    d = _spt_run(tmp_path, "run", "lsh", 0.4, 1.0, 1.0)
    shutil.rmtree(d / "finetune")  # preempted during pretraining: only pretrain/ exists
    (d / "metrics.json").unlink()
    dirs, warnings = expand_run_dirs([str(d)])
    assert dirs == [d] and warnings == []
    results, skipped = collect_runs(dirs)
    assert results == [] and skipped == [f"{d}: a self-pretraining run whose finetune stage has not started "
                                         "(no finetune/config.yaml)"]


@pytest.mark.slow
def test_evaluate_cli_tabulates_a_train_py_multirun_of_self_pretrained_runs(tmp_path, data_dir):
    """The real layout: `train.py -m experiment=spt/listops attention=full,lsh`, then `evaluate.py mode=lra_table`
    on the sweep folder, both as subprocesses."""
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SUBMITIT_", "TORCHELASTIC_"))}
    sweep = tmp_path / "sweep"
    tiny = ["data.num_train=64", "data.num_val=16", "data.num_test=16", "data.min_length=10", "data.max_length=30",
            "data.batch_size=16", "model.d_model=16", "model.n_heads=2", "model.d_ff=32", "model.depth=1",
            "stages.pretrain.trainer.max_steps=2", "stages.finetune.trainer.max_steps=2",
            "trainer.val_check_interval=2", "trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0",
            "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", f"paths.data_dir={data_dir}"]
    train = subprocess.run([sys.executable, "train.py", "-m", "experiment=spt/listops", "attention=full,lsh", *tiny,
                            f"hydra.sweep.dir={sweep}"], cwd=root, env=env, capture_output=True, text=True,
                           timeout=600)
    assert train.returncode == 0, train.stdout[-2000:] + train.stderr[-2000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name.split("_")[0] for p in jobs] == ["0", "1"]
    assert all((j / ".hydra" / "config.yaml").is_file() and not (j / "config.yaml").exists() for j in jobs)
    acc = {j: 100 * json.loads((j / "finetune" / "metrics.json").read_text())["test/acc"] for j in jobs}
    out = tmp_path / "eval"
    ev = subprocess.run([sys.executable, "evaluate.py", "mode=lra_table", f"runs=[{sweep}]",
                         f"paths.output_dir={out}"], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert ev.returncode == 0, ev.stdout[-2000:] + ev.stderr[-2000:]
    md = (out / "lra_table.md").read_text()
    for job, label in zip(jobs, ("Transformer + SPT (ours)", "Reformer + SPT (ours)")):
        assert f"| {label} | {acc[job]:.2f} | - | - | - | - | - | {acc[job]:.2f} | - |" in md
    assert "| Transformer (ours) |" not in md and "| Reformer (ours) |" not in md
    assert _used_runs(md) == [str(j) for j in jobs] and "## Skipped" not in md
