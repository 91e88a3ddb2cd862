"""The command line (longdoc.cli): unknown group options end before Hydra creates anything, a configuration error
prints its message only and takes its empty run directory with it, every run gets its own run directory, and
evaluate.py takes a run directory as ckpt_path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.lightning.runs import clean_env

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "src" / "longdoc" / "conf"
TINY = ["data.num_train=32", "data.num_val=16", "data.num_test=16", "data.min_length=10", "data.max_length=20",
        "model.d_model=32", "model.n_heads=2", "model.d_ff=64", "model.depth=1", "trainer.enable_progress_bar=false",
        "callbacks.progress_bar=null", "callbacks.model_summary=null", "trainer.accelerator=cpu"]
N_HEADS_MSG = "model.n_heads=3 does not divide model.d_model=128"
LR_MSG = "optimizer.lr must be > 0, got 0"


def start(script: str, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, script, *args], cwd=ROOT, env=clean_env(**env), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def files_below(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


# 1. group=option checked before Hydra composes -------------------------------------------------------------------


def yaml_options(group: str) -> list[str]:
    """The options of a config group as the file tree has them: every *.yaml below the folder, without .yaml."""
    return sorted(str(p.relative_to(CONF / group).with_suffix("")) for p in (CONF / group).rglob("*.yaml"))


def test_unknown_group_option_lists_nested_options_and_creates_nothing(tmp_path):
    procs = {args[0]: start("train.py", *args, f"paths.log_dir={tmp_path / 'logs'}") for args in (
        ["experiment=listops"], ["-m", "attention=full,lsh2"], ["hydra/launcher=nope"])}
    evaluate = start("evaluate.py", "+experiment=nope", f"paths.log_dir={tmp_path / 'logs'}")
    results = {k: finish(p, 120) for k, p in procs.items()} | {"evaluate": finish(evaluate, 120)}

    code, _, err = results["experiment=listops"]
    assert code == 2 and "Traceback" not in err
    assert "experiment=listops: the config group experiment has no option 'listops'" in err
    similar = err.split("did you mean ", 1)[1].split("?", 1)[0].split(" or ")
    assert {"lra/listops", "spt/listops"} <= set(similar)
    listed = err.split("): ", 1)[1].strip().split(", ")
    assert listed == yaml_options("experiment") and "lra/listops" in listed and "lm/stdlib" in listed
    code, _, err = results["-m"]
    assert code == 2
    assert "attention=full,lsh2: the config group attention has no option 'lsh2'; did you mean lsh?" in err
    assert err.strip().endswith("full, local_global, lsh")
    # a nested group: the package's option and Hydra's plugins' (basic is Hydra's own launcher)
    code, _, err = results["hydra/launcher=nope"]
    assert code == 2 and "the config group hydra/launcher has no option 'nope'" in err
    assert {"slurm", "basic", "submitit_local"} <= set(err.split("): ", 1)[1].strip().split(", "))
    code, _, err = results["evaluate"]
    assert code == 2 and "+experiment=nope: the config group experiment has no option 'nope'" in err
    assert not (tmp_path / "logs").exists()  # nothing created, not even paths.log_dir


def test_group_check_leaves_valid_and_uncheckable_overrides_to_hydra(tmp_path):
    from longdoc.cli import check_group_choices

    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text("# @package _global_\nseed: 1\n")
    assert check_group_choices([f"hydra.searchpath=[file://{tmp_path}]", "experiment=mine"], "train") is None
    assert "has no option 'mine'" in check_group_choices(["experiment=mine"], "train")

    for argv in (["experiment=lra/listops", "attention=lsh"], ["-m", "attention=full,lsh", "position=axial"],
                 ["hydra/launcher=submitit_local"], ["hydra/launcher=basic"], ["attention@attention_options.x=lsh"],
                 ["experiment=null"], ["~experiment"], ["attention=${oc.env:NOPE}"], ["attention=glob(*)"],
                 ["model.n_heads=3"], ["--cfg", "job", "data=lra_text"], ["not a valid override ("],
                 ["--config-dir", "/elsewhere", "experiment=mine"]):
        assert check_group_choices(argv, "train") is None, argv
    for argv, bad in ((["attention=choice(full,nope)"], "nope"), (["+attention@attention_options.x=lhs"], "lhs"),
                      (["experiment=[lra/listops,lra/nope]"], "lra/nope"), (["experiment/lra=listop"], "listop"),
                      (["--cfg", "job", "data=listop"], "listop")):
        message = check_group_choices(argv, "train")
        assert message is not None and f"has no option {bad!r}" in message, argv
    assert check_group_choices(["experiment/lra=listop"], "train").endswith(
        ": " + ", ".join(yaml_options("experiment/lra")))


# 2. a ConfigError: its message, exit code 2, no run directory left behind ------------------------------------------


def test_config_error_prints_its_message_and_removes_only_its_own_run_dir(tmp_path, data_dir):
    existing = tmp_path / "resumed"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine\n")
    data = f"paths.data_dir={data_dir}"
    procs = {  # at once: each pays for importing torch
        "default_dir": start("train.py", "model.n_heads=3", f"paths.log_dir={tmp_path / 'logs'}", data),
        "new_dir": start("train.py", "optimizer.lr=0", f"hydra.run.dir={tmp_path / 'new' / 'run'}", data),
        "existing_dir": start("train.py", "model.n_heads=3", f"hydra.run.dir={existing}", data, HYDRA_FULL_ERROR="1"),
    }
    results = {name: finish(proc) for name, proc in procs.items()}
    for name, message in (("default_dir", N_HEADS_MSG), ("new_dir", LR_MSG)):
        code, _, err = results[name]
        assert code == 2, (name, err[-2000:])
        assert f"Error: {message}" in err and "Traceback" not in err and "HYDRA_FULL_ERROR" not in err, name
    runs = tmp_path / "logs" / "train" / "runs"
    assert runs.is_dir() and not list(runs.iterdir())
    assert (tmp_path / "new").is_dir() and not (tmp_path / "new" / "run").exists()
    # HYDRA_FULL_ERROR=1: the whole traceback, as Hydra prints it; a directory that existed before is never removed:
    # the file stays, and Hydra's own files with it
    code, _, err = results["existing_dir"]
    assert code == 2 and "Traceback (most recent call last)" in err and f"ConfigError: {N_HEADS_MSG}" in err
    assert 'File "' in err and "in check_config" in err
    assert (existing / "notes.txt").read_text() == "mine\n"
    assert {"notes.txt", ".hydra", "train.log"} <= set(os.listdir(existing))


def test_config_error_in_a_multirun_fails_the_sweep_after_its_jobs(tmp_path, data_dir):
    code, out, err = finish(start("train.py", "-m", "model.n_heads=3,5", f"paths.log_dir={tmp_path}",
                                  f"paths.data_dir={data_dir}"))
    assert code == 2 and "Traceback" not in err
    assert f"Error: {N_HEADS_MSG}" in err  # the sweep's error: its first failed job's
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name[:2] for p in jobs] == ["0_", "1_"]  # both jobs ran; each keeps its log with its error
    for job, heads in zip(jobs, (3, 5)):
        log = (job / "train.log").read_text()
        assert f"configuration error in job #{job.name[0]}" in log
        assert f"model.n_heads={heads} does not divide model.d_model=128" in log


# 3. one run directory per run ----------------------------------------------------------------------------------


def test_run_id_creates_its_directory_exclusively(tmp_path, monkeypatch):
    from longdoc.resolvers import created_run_dirs, run_id

    for var in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    parent = tmp_path / "runs"
    now = datetime.now()
    taken = [(now + timedelta(seconds=s)).strftime("%Y-%m-%d_%H-%M-%S") for s in range(-1, 30)]
    for name in taken:  # another run holds every name of this minute: the suffix _1 is next
        (parent / name).mkdir(parents=True)
    name = run_id(str(parent))
    assert name[-2:] == "_1" and name[:-2] in taken
    assert (parent / name).is_dir() and not list((parent / name).iterdir())
    assert run_id(str(parent)) == name  # once per process
    assert str(parent / name) in created_run_dirs() and not any(str(parent / t) in created_run_dirs() for t in taken)
    other = run_id(str(tmp_path / "other"))  # another parent: its own directory
    assert (tmp_path / "other" / other).is_dir() and not (tmp_path / "other" / f"{other}_1").exists()
    (tmp_path / "a_file").write_text("")  # a parent that cannot be made: the time, nothing created (Hydra reports it)
    assert run_id(str(tmp_path / "a_file" / "runs"))[:2] == "20" and (tmp_path / "a_file").is_file()
    monkeypatch.setenv("SLURM_JOB_ID", "77")  # a requeued SLURM job keeps its directory: nothing is created
    assert run_id(str(tmp_path / "slurm")) == "slurm-77" and not (tmp_path / "slurm").exists()


@pytest.mark.slow
def test_runs_started_together_get_one_run_directory_each(tmp_path):
    runs = tmp_path / "train" / "runs"
    now = datetime.now()
    # runs exist for every second of the next three minutes, so each new run collides with one of them (the same
    # as two runs started in the same second) and with the other runs started here
    taken = {(now + timedelta(seconds=s)).strftime("%Y-%m-%d_%H-%M-%S") for s in range(-1, 180)}
    for name in taken:
        (runs / name).mkdir(parents=True)
        (runs / name / "other.txt").write_text(name)
    procs = [start("train.py", "trainer.fast_dev_run=true", *TINY, f"seed={seed}", f"paths.log_dir={tmp_path}",
                   f"paths.data_dir={tmp_path / f'data{seed}'}") for seed in range(4)]
    results = [finish(p) for p in procs]
    assert all(code == 0 for code, _, _ in results), [err[-2000:] for _, _, err in results]
    assert time.time() - now.timestamp() < 180, "the runs took too long for this test's premise"
    for name in taken:  # the existing runs are untouched
        assert files_below(runs / name) == ["other.txt"]
    new = sorted(p for p in runs.iterdir() if p.name not in taken)
    assert len(new) == 4 and all(p.name.rsplit("_", 1)[0] in taken for p in new)
    seeds = []
    for run in new:
        assert {"config.yaml", "train.log", "metrics.json", ".hydra"} <= set(os.listdir(run))
        overrides = (run / ".hydra" / "overrides.yaml").read_text()
        seeds += [s for s in range(4) if f"seed={s}\n" in overrides]
        assert f"seed: {seeds[-1]}\n" in (run / "config.yaml").read_text()
        assert f"outputs in {run}" in (run / "train.log").read_text()
    assert sorted(seeds) == [0, 1, 2, 3]


@pytest.mark.slow
def test_ddp_processes_share_rank_zero_run_directory(tmp_path, data_dir):
    code, _, err = finish(start("train.py", "trainer=ddp_cpu", *TINY, "trainer.max_epochs=1",
                                "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
                                "trainer.num_sanity_val_steps=0", "test=false", f"paths.log_dir={tmp_path}",
                                f"paths.data_dir={data_dir}"))
    assert code == 0, err[-3000:]
    (run,) = (tmp_path / "train" / "runs").iterdir()
    assert {"train.log", "train_ddp_process_1.log", "metrics.json", "checkpoints"} <= set(os.listdir(run))


# 4. evaluate.py ckpt_path=<run directory> ----------------------------------------------------------------------


def test_evaluate_takes_a_run_directory(compose_cfg, tmp_path):
    from longdoc.evaluate import evaluate
    from longdoc.evaluation.checkpoint import read_checkpoint
    from longdoc.train import train

    cfg = compose_cfg("trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
                      "trainer.num_sanity_val_steps=0", "trainer.accelerator=cpu", "test=false")
    train(cfg)
    run = Path(cfg.paths.output_dir)
    best = run / "checkpoints" / "best.ckpt"
    assert read_checkpoint(run).path == best

    def score(ckpt_path: Path, name: str) -> dict:
        return evaluate(compose_cfg(f"ckpt_path={ckpt_path}", f"paths.output_dir={tmp_path / name}",
                                    "trainer.accelerator=cpu", config_name="evaluate"))

    assert score(run, "by_dir") == score(best, "by_file")
    # a self-pretraining run: <run>/pretrain and <run>/finetune, the fine-tuned model evaluated
    spt = tmp_path / "spt"
    for stage in ("pretrain", "finetune"):
        (spt / stage / "checkpoints").mkdir(parents=True)
        shutil.copy(best, spt / stage / "checkpoints" / "best.ckpt")
    assert read_checkpoint(spt).path == spt / "finetune" / "checkpoints" / "best.ckpt"
    # a run stopped before its first validation: what it holds, and what to pass
    partial = tmp_path / "partial"
    (partial / "checkpoints").mkdir(parents=True)
    shutil.copy(run / "checkpoints" / "last.ckpt", partial / "checkpoints" / "last.ckpt")
    (partial / "train.log").write_text("")
    with pytest.raises(FileNotFoundError) as info:
        read_checkpoint(partial)
    message = str(info.value)
    assert f"ckpt_path='{partial}' is a directory without checkpoints/best.ckpt or finetune/checkpoints/best.ckpt" \
        in message
    assert "it holds: checkpoints/, train.log" in message
    assert f"pass one of them, e.g. ckpt_path={partial / 'checkpoints' / 'last.ckpt'}" in message
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"it holds: nothing; no \*.ckpt file below it\); pass a checkpoint"):
        read_checkpoint(tmp_path / "empty")
