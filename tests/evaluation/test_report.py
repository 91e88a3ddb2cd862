"""mode=lra_table: run dirs -> LRA Table 1 layout beside the published rows, LM table, warnings, errors."""

import json
import logging
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from longdoc.evaluate import evaluate
from longdoc.evaluation.report import PUBLISHED_TABLE1, RunSkipped, collect_runs, lra_table, read_run


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
