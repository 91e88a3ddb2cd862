"""Train a long-document encoder: `python train.py attention=lsh` (see README for more)."""

import hydra
from omegaconf import DictConfig

import longdoc  # noqa: F401  (registers the longdoc.* config resolvers)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from longdoc.train import optimized_value, train

    # for sweepers: the best validation value of cfg.optimized_metric, never a test metric
    return optimized_value(cfg, train(cfg))


if __name__ == "__main__":
    main()
