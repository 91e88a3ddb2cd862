"""evaluate.py: one function per mode (longdoc.evaluate.MODES); each mode's settings in its own config group, at
the key paths the README uses."""

from longdoc.evaluate import MODES
from longdoc.evaluation.efficiency import efficiency_mode
from longdoc.evaluation.patterns import attention_pattern_mode


def test_modes_table():
    assert list(MODES) == ["metrics", "lra_table", "efficiency", "attention_pattern"]
    assert MODES["efficiency"] is efficiency_mode and MODES["attention_pattern"] is attention_pattern_mode


def test_mode_groups_keep_the_key_paths(compose_cfg):
    cfg = compose_cfg(config_name="evaluate")
    assert cfg.mode == "metrics" and cfg.split == "test" and list(cfg.runs) == []
    assert list(cfg.efficiency.lengths) == [1024, 2048, 4096] and cfg.pattern.layer == 0
    cfg = compose_cfg("mode=efficiency", "efficiency.lengths=[512,1024]", "pattern.layer=null", "pattern.sample_index=3",
                      config_name="evaluate")
    assert list(cfg.efficiency.lengths) == [512, 1024] and cfg.efficiency.repeats == 5
    assert cfg.pattern.layer is None and cfg.pattern.sample_index == 3 and cfg.pattern.head == 0
