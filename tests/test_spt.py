"""The two-stage self-pretraining recipe: experiment=spt/<data> pretrains, then fine-tunes from the pretrained
encoder, each stage in its own sub-directory of one run directory, with one metrics.json holding both."""

import json
from pathlib import Path

import pytest
import torch

from longdoc.config import ConfigError
from longdoc.train import train

TINY_STAGES = ["stages.pretrain.trainer.max_steps=3", "stages.finetune.trainer.max_steps=3",
               "trainer.val_check_interval=3", "trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0",
               "trainer.accelerator=cpu"]


@pytest.mark.parametrize("attention", ["lsh", "local_global"])
def test_spt_listops_runs_both_stages_into_one_metrics_json(compose_cfg, attention):
    cfg = compose_cfg("experiment=spt/listops", f"attention={attention}", *TINY_STAGES)
    results = train(cfg)
    out = Path(cfg.paths.output_dir)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == pytest.approx(results)
    assert "pretrain/val/bpt" in saved and "finetune/test/acc" in saved and 0 <= saved["finetune/test/acc"] <= 1
    pre = torch.load(out / "pretrain" / "checkpoints" / "last.ckpt", weights_only=True)
    assert pre["global_step"] == 3 and pre["hyper_parameters"]["task"] == "mlm"
    ft = torch.load(out / "finetune" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ft["global_step"] == 3 and ft["hyper_parameters"]["task"] == "classification"
    assert ft["hyper_parameters"]["model"]["init_from"] == str(out / "pretrain")
    from longdoc.evaluation.report import read_run

    row = read_run(out)  # evaluate.py mode=lra_table: a self-pretrained row beside the from-scratch ones
    assert row.row.endswith("+ SPT (ours)") and row.task == "ListOps" and row.value == pytest.approx(
        100 * saved["finetune/test/acc"])
    # a rerun (a requeued job) finds both stages finished and trains nothing
    again = train(compose_cfg("experiment=spt/listops", f"attention={attention}", *TINY_STAGES))
    assert again == pytest.approx(results)


def test_spt_presets_compose_and_a_bad_stage_fails_before_any_stage(compose_cfg):
    from longdoc.train import stage_config, validate_config

    for preset in ("spt/listops", "spt/stdlib_packages"):
        cfg = compose_cfg(f"experiment={preset}", tiny=False)
        pre = stage_config(cfg, "pretrain", "/tmp/x/pretrain", None)
        validate_config(pre)
        assert pre.task == "mlm" and pre.optimized_metric == "val/bpt"
        fin = stage_config(cfg, "finetune", "/tmp/x/finetune", "/tmp/x/pretrain")
        assert fin.task is None and fin.optimized_metric == "val/acc" and fin.model.init_from == "/tmp/x/pretrain"
    bad = compose_cfg("experiment=spt/listops", "+stages.finetune.optimizer.lr=-1", *TINY_STAGES)
    with pytest.raises(ConfigError, match="optimizer.lr must be > 0"):
        train(bad)
    assert not (Path(bad.paths.output_dir) / "pretrain").exists()  # nothing trained
    with pytest.raises(ConfigError, match="stage=finetune needs model.init_from"):
        train(compose_cfg("experiment=spt/listops", "stage=finetune", *TINY_STAGES))
