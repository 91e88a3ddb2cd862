"""mode=efficiency: per-process steps/s and peak memory per (attention, length), ratios to full attention."""

import csv

import pytest

from longdoc.evaluate import evaluate
from longdoc.evaluation import output, runner
from longdoc.evaluation.efficiency import EfficiencySettings, add_ratios, efficiency_markdown, efficiency_tables

TINY = '["model.d_model=32","model.n_heads=2","model.d_ff=64","model.depth=1"]'


def test_efficiency_mode_writes_md_csv_png(compose_cfg, tmp_path):
    out = tmp_path / "eff"
    cfg = compose_cfg("mode=efficiency", "efficiency.lengths=[64,128]", "efficiency.repeats=1",
                      "efficiency.warmup=0", "efficiency.separate_memory_process=false", "efficiency.threads=1",
                      f"efficiency.model_overrides={TINY}", f"paths.output_dir={out}", config_name="evaluate")
    res = evaluate(cfg)
    rows = res["rows"]
    assert [(r["attention"], r["n"]) for r in rows] == [(a, n) for a in ("full", "lsh", "local_global")
                                                        for n in (64, 128)]
    assert all(r["status"] == "ok" for r in rows), [r.get("note") for r in rows]
    assert all(r["steps_per_s"] > 0 and r["peak_mem_mib"] > 0 for r in rows)
    assert all(r["speed_vs_full"] == 1.0 and r["memory_vs_full"] == 1.0 for r in rows if r["attention"] == "full")
    md = (out / "efficiency.md").read_text()
    for label in ("Transformer (full)", "Reformer (lsh)", "Longformer (local_global)"):
        assert md.count(f"| {label} |") == 2  # steps/s and memory tables
    speed_full = next(line for line in md.splitlines() if line.startswith("| Transformer (full) |"))
    assert speed_full.count("(1.00x)") == 2
    assert "Machine:" in md and "torch" in md and "Tay et al. 2021" in md and "| Reformer | 4.4 (0.5x)" in md
    with open(out / "efficiency.csv") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 6 and {"attention", "n", "steps_per_s", "peak_mem_mib", "speed_vs_full"} <= set(table[0])
    assert (out / "efficiency.png").stat().st_size > 10_000


def test_failed_configurations_are_reported_not_raised():
    rows = [{"attention": "full", "n": 64, "status": "ok", "steps_per_s": 10.0, "peak_mem_mib": 100.0},
            {"attention": "full", "n": 128, "status": "timeout", "note": "killed after 5 s"},
            {"attention": "lsh", "n": 64, "status": "ok", "steps_per_s": 5.0, "peak_mem_mib": 50.0},
            {"attention": "lsh", "n": 128, "status": "oom", "note": "RSS above the limit"}]
    add_ratios(rows)
    assert rows[2]["speed_vs_full"] == 0.5 and rows[2]["memory_vs_full"] == 0.5 and rows[3]["speed_vs_full"] is None
    header, speed, mem = efficiency_tables(rows)
    assert header == ["Attention", "N=64", "N=128"]
    assert speed == [["Transformer (full)", "10 (1.00x)", "timeout"], ["Reformer (lsh)", "5 (0.50x)", "oom"]]
    assert mem[1] == ["Reformer (lsh)", "50 (0.50x)", "oom"]
    md = efficiency_markdown(rows, EfficiencySettings(lengths=[64, 128]), output.machine_info("cpu", "fp32"))
    assert "full N=128: timeout -- killed after 5 s" in md


def test_worker_timeout_is_a_status():
    res = runner.run_config(["-c", "import time; time.sleep(30)"], {}, timeout=0.5)
    assert res["status"] == "timeout" and res["wall_s"] < 10
    res = runner.run_config(["-c", "raise SystemExit(3)"], {}, timeout=30)
    assert res["status"] == "error" and "exit code 3" in res["note"]


@pytest.mark.parametrize("key,value,match", [
    ("lengths", [], "efficiency.lengths"), ("attentions", [], "efficiency.attentions"),
    ("repeats", 0, "efficiency.repeats"), ("time_stat", "mean", "efficiency.time_stat"),
    ("device", "tpu", "efficiency.device"),
])
def test_bad_settings_name_the_key(key, value, match):
    with pytest.raises(ValueError, match=match):
        EfficiencySettings(**{key: value})


def test_unknown_efficiency_key_is_an_error(compose_cfg):
    cfg = compose_cfg("mode=efficiency", "+efficiency.lenghts=[64]", config_name="evaluate")
    with pytest.raises(ValueError, match="unknown efficiency keys \\['lenghts'\\]"):
        evaluate(cfg)
