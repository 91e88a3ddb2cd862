"""Train a long-document encoder: `python train.py attention=lsh` (see README for more)."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from longdoc.train import train

    metrics = train(cfg)
    return metrics.get("test/acc", metrics.get("test/bpb"))  # for sweepers (bpb: lower is better)


if __name__ == "__main__":
    main()
