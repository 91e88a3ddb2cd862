"""logger=mlflow: MLflow tracking in a local SQLite database (no account, no server, no network), read back with
MLflow's own client. A preempted run (SIGTERM, then kill -9) continues the same MLflow run, with each (metric, step)
recorded once and the values of the CSV log; the full run config is logged as params."""

import os
import signal
import subprocess

import hydra
import pandas as pd
import pytest
from omegaconf import OmegaConf

from tests.lightning.runs import ROOT, TOTAL_STEPS, clean_env, rows, train_cmd, train_steps, wait_for

mlflow = pytest.importorskip("mlflow", reason="needs the `mlflow` extra (pip install -e '.[mlflow]')")
from mlflow.tracking import MlflowClient  # noqa: E402

ENV = {"MLFLOW_DISABLE_TELEMETRY": "true"}


def _only_run(db):
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return client, runs[0]


def _history(client, run_id, key):
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def _start(cmd, env):
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_preempted_run_continues_one_mlflow_run_with_each_step_once(tmp_path, data_dir):
    run_dir, root = tmp_path / "run", tmp_path / "outputs"
    env = clean_env(**ENV)
    cmd = train_cmd(run_dir, data_dir, "logger=csv_mlflow", f"paths.log_dir={root}", "test=false")

    # 1. SIGTERM mid-epoch: last.ckpt at the step after the last one logged
    proc = _start(cmd, env)
    wait_for(lambda: len(train_steps(run_dir)) >= 6, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    assert _only_run(root / "mlflow.db")[1].info.status == "FAILED"

    # 2. resumed, then killed (-9) in epoch 1 past a periodic checkpoint (every 4 steps; 12 steps an epoch): the
    #    next start replays the steps this process logged after last-step.ckpt (step 16), which MLflow has already
    proc = _start(cmd, env)
    wait_for(lambda: len(train_steps(run_dir)) >= 18, proc)
    proc.kill()
    proc.communicate(timeout=240)
    client, run = _only_run(root / "mlflow.db")
    replayed = {s for s, _ in _history(client, run_id, "train/loss_step")} - set(range(16))
    assert replayed, "the killed process logged no step after its last-step.ckpt (step 16): nothing to replay"

    # 3. resumed to the end
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-3000:]
    assert "last-step.ckpt (global step 16)" in log, log[-3000:]

    client, run = _only_run(root / "mlflow.db")
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    assert run.info.experiment_id == client.get_experiment_by_name("longdoc").experiment_id
    assert run.data.params["attention/name"] == "lsh" and run.data.params["model/d_model"] == "32"
    assert run.data.tags["mlflow.runName"] == "train-lsh"
    logged = _history(client, run_id, "train/loss_step")
    assert [s for s, _ in logged] == list(range(TOTAL_STEPS))  # each step exactly once (log_every_n_steps=1)
    csv_loss = {int(r["step"]): float(r["train/loss_step"]) for r in rows(run_dir) if r.get("train/loss_step")}
    assert train_steps(run_dir) == list(range(TOTAL_STEPS))
    for step, value in logged:
        assert value == pytest.approx(csv_loss[step], rel=1e-5, abs=1e-7), step
    for key in run.data.metrics:  # every metric: no step twice
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert len(steps) == len(set(steps)), (key, sorted(steps))
    assert {"val/acc", "train/loss_epoch"} <= set(run.data.metrics)


def test_full_config_params_and_a_continued_run_in_the_sqlite_store(compose_cfg, tmp_path, monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    long_note = "ab" * 3500  # 7000 characters: over MLflow's 6000-character limit on param values
    cfg = compose_cfg("logger=csv_mlflow", f"+note={long_note}")
    lg = hydra.utils.instantiate(cfg.logger.mlflow)
    assert type(lg).__name__ == "ResumableMLFlowLogger"
    config = OmegaConf.to_container(cfg, resolve=True)
    lg.log_hyperparams(config)
    for step in range(6):
        lg.log_metrics({"train/loss_step": float(step)}, step=step)
    lg.finalize("failed")
    assert (tmp_path / "mlflow.db").is_file()  # paths.log_dir (tests/conftest.py: tmp_path)
    run_id = (tmp_path / "out" / "mlflow_run_id").read_text().strip()

    client, run = _only_run(tmp_path / "mlflow.db")
    assert run.info.run_id == run_id and run.info.status == "FAILED"
    assert run.info.artifact_uri.startswith(str(tmp_path / "mlflow_artifacts"))
    assert run.data.tags["output_dir"] == str(tmp_path / "out")
    expected = pd.json_normalize(config, sep="/").iloc[0].to_dict()
    assert expected["note"] == long_note and len(expected) > 100
    params = run.data.params
    assert params.pop("note") == long_note[:6000]
    assert {k: params.get(k) for k in expected if k != "note"} == {k: str(v) for k, v in expected.items() if k != "note"}
    assert params["attention/name"] == "local_global" and params["optimizer/betas"] == "[0.9, 0.98]"

    # the same run directory again (a resumed job) with one changed value: the same MLflow run, the first
    # values kept, the steps it has not logged again
    cfg2 = compose_cfg("logger=csv_mlflow", f"+note={long_note}", "optimizer.lr=0.5")
    lg2 = hydra.utils.instantiate(cfg2.logger.mlflow)
    assert lg2.truncate_after(3) == 0
    with pytest.warns(UserWarning, match=r"other values for \['optimizer/lr'\]"):
        lg2.log_hyperparams(OmegaConf.to_container(cfg2, resolve=True))
    for step in range(3, 9):
        lg2.log_metrics({"train/loss_step": 100.0 + step}, step=step)
    lg2.finalize("success")
    client, run = _only_run(tmp_path / "mlflow.db")
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    assert run.data.params["optimizer/lr"] == "0.001"
    assert _history(client, run_id, "train/loss_step") == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0),
                                                           (5, 5.0), (6, 106.0), (7, 107.0), (8, 108.0)]

    # a run id the store does not have: a clear error naming the file
    (tmp_path / "out" / "mlflow_run_id").write_text("0123456789abcdef0123456789abcdef\n")
    lg3 = hydra.utils.instantiate(cfg.logger.mlflow)
    with pytest.raises(ValueError, match=r"mlflow_run_id names the MLflow run 0123456789abcdef0123456789abcdef.*"
                                         r"delete .*mlflow_run_id to start a new MLflow run"):
        lg3.log_hyperparams({"a": 1})


def test_mlflow_logger_variants_compose(compose_cfg):
    for choice, loggers in [("mlflow", {"mlflow"}), ("csv_mlflow", {"csv", "mlflow"}),
                            ("many_mlflow", {"csv", "tensorboard", "mlflow"})]:
        cfg = compose_cfg(f"logger={choice}")
        assert set(cfg.logger) == loggers, choice
        assert cfg.logger.mlflow.tracking_uri == f"sqlite:///{cfg.paths.log_dir}/mlflow.db"
        assert cfg.logger.mlflow.run_id_file == f"{cfg.paths.output_dir}/mlflow_run_id"


def test_logger_mlflow_without_mlflow_installed_says_how_to_install(tmp_path, data_dir):
    """train.py in an interpreter where ``import mlflow`` fails (a sitecustomize puts None in sys.modules, Python's
    way of marking a module absent): the error names logger=mlflow and the pip command."""
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['mlflow'] = None\n")
    env = clean_env(PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])), **ENV)
    res = subprocess.run(train_cmd(tmp_path / "run", data_dir, "logger=mlflow", f"paths.log_dir={tmp_path}"),
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-3000:]
    assert "logger=mlflow" in out and "pip install -e '.[mlflow]'" in out, out[-3000:]
    assert not (tmp_path / "run" / "checkpoints").exists()  # stopped before training
