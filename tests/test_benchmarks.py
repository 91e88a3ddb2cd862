"""The benchmark scripts run end to end at toy sizes and write their tables (HuggingFace references are
left out: CI installs no `bench` extra). What they measure is checked by tests/evaluation/test_efficiency.py,
which drives the same measuring code (longdoc.evaluation.measure / runner / output)."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script, *args, out):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args, "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.slow
def test_attention_benchmark_writes_ratio_table(tmp_path):
    _run("attention.py", "--lengths", "256", "--impls", "longdoc-full", "sdpa", "--repeats", "1", "--warmup", "1",
         "--threads", "1", "--no-alloc-profile", out=tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "attention.csv")))
    assert {(r["impl"], r["status"]) for r in rows} == {("longdoc-full", "ok"), ("sdpa", "ok")}
    assert all(float(r["time_s"]) > 0 and float(r["peak_mem_mib"]) > 0 for r in rows)
    md = (tmp_path / "attention.md").read_text()
    assert "**full / sdpa time**" in md and "Machine:" in md


@pytest.mark.slow
def test_memory_benchmark_writes_depth_table(tmp_path):
    _run("memory.py", "--n", "256", "--depths", "1", "2", "--attentions", "lsh", "--reversible", "on",
         "--ff-chunks", "0", "--optimizer-in-backward", "off", "on", "--no-hf", "--threads", "1",
         "--no-alloc-profile", out=tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "memory.csv")))
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows), rows
    assert [r["in_backward"] for r in rows] == ["False", "False", "True", "True"]
    # the persistent state (parameters + AdamW moments) grows with depth
    state = {int(r["depth"]): float(r["state_mib"]) for r in rows}
    assert state[2] > state[1]
    for r in rows:  # peak = state + step growth; the growth splits into gradients + activations
        assert abs(float(r["peak_mem_mib"]) - float(r["state_mib"]) - float(r["step_peak_mib"])) < 1e-3  # CSV rounding
        assert abs(float(r["step_peak_mib"]) - float(r["grad_mib"]) - float(r["act_peak_mib"])) < 1e-3
        # fp32 gradients: 4 bytes per parameter, all of them at the end of backward, or (step fused into
        # backward) one at a time
        all_grads = int(r["n_params"]) * 4 / 2**20
        if r["in_backward"] == "True":
            assert 0 < float(r["grad_mib"]) < all_grads / 2
        else:
            assert abs(float(r["grad_mib"]) - all_grads) < 1e-3
    md = (tmp_path / "memory.md").read_text()
    assert "reversible depth2/depth1: longdoc lsh rev ff=0 opt-in-bwd" in md
    # the report re-rendered from the saved JSON is the same report
    _run("memory.py", "--from-json", str(tmp_path), out=tmp_path / "again")
    assert (tmp_path / "again" / "memory.md").read_text() == md and (tmp_path / "again" / "memory.png").stat().st_size


@pytest.mark.slow
def test_max_length_search_stops_at_the_budget(tmp_path):
    """Doubling N until a step no longer fits: a roomy budget fits both lengths tried, a budget below the
    interpreter's own footprint fits none (the worker is killed or its whole-process peak is over)."""
    common = ["--max-length", "--start-n", "512", "--max-n", "1024", "--max-length-depth", "1", "--threads", "1"]
    _run("memory.py", *common, "--budget-gib", "4", out=tmp_path / "roomy")
    rows = list(csv.DictReader(open(tmp_path / "roomy" / "maxlen.csv")))
    assert [(int(r["n"]), r["status"]) for r in rows] == [(512, "ok"), (1024, "ok")]
    assert "Longest N that fits: 1024" in (tmp_path / "roomy" / "maxlen.md").read_text()
    _run("memory.py", *common, "--budget-gib", "0.05", out=tmp_path / "tight")
    rows = list(csv.DictReader(open(tmp_path / "tight" / "maxlen.csv")))
    assert [(int(r["n"]), r["status"]) for r in rows] == [(512, "oom")]
    assert "Even N=512 does not fit" in (tmp_path / "tight" / "maxlen.md").read_text()


@pytest.mark.slow
def test_model_benchmark_writes_ratio_table_and_profile(tmp_path):
    _run("model.py", "--lengths", "256", "--impls", "longdoc-lsh", "longdoc-full", "torch-transformer", "--repeats", "1",
         "--warmup", "1", "--threads", "1", "--no-alloc-profile", out=tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "model.csv")))
    assert {(r["impl"], r["status"]) for r in rows} == {("longdoc-lsh", "ok"), ("longdoc-full", "ok"),
                                                        ("torch-transformer", "ok")}
    assert all(float(r["time_s"]) > 0 and float(r["peak_mem_mib"]) > float(r["state_mib"]) > 0 for r in rows)
    md = (tmp_path / "model.md").read_text()
    assert "**full / torch-transformer time**" in md and "Machine:" in md and (tmp_path / "model.png").stat().st_size
    out = _run("model.py", "--profile", "--lengths", "128", "--impls", "longdoc-local_global", "--warmup", "1",
               "--threads", "1", "--profile-rows", "5", out=tmp_path / "profile")
    assert "## longdoc-local_global, N=128" in out and "Self CPU time total" in out


def test_adamw_step_benchmark_times_both_implementations_of_the_built_optimizer():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "adamw_step.py"), "--repeats", "2", "--overrides",
                           "model.d_model=32", "model.depth=1", "model.d_ff=64", "model.n_heads=2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    import re

    m = re.search(r"model.d_model=32 .*: (\d+) parameters, opt.step\(\) fused ([\d.]+) ms, per-tensor loop ([\d.]+) ms",
                  proc.stdout)
    assert m and int(m.group(1)) > 0 and float(m.group(2)) > 0 and float(m.group(3)) > 0, proc.stdout
