"""The SLURM launcher config composes, takes its sizes from the trainer, and instantiates."""

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

CONF = str(Path(__file__).resolve().parents[1] / "src" / "longdoc" / "conf")


def test_slurm_launcher_composes_and_instantiates(tmp_path):
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=8",
                                          "trainer.num_nodes=2", "hydra.launcher.partition=gpu",
                                          f"paths.log_dir={tmp_path}"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes) == (8, 8, 2)
    assert launcher.partition == "gpu" and launcher.signal_delay_s > 0 and launcher.max_num_timeout >= 1
    params = {k: v for k, v in launcher.items() if k != "_target_"}
    SlurmLauncher(**params)  # the plugin accepts every key
