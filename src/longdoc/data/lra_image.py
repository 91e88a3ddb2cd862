"""Long Range Arena "Image": CIFAR-10 as a sequence of 1024 grayscale pixels
(Tay et al. 2021, section 3.4), 10 classes.

Each 32x32 RGB image is converted to grayscale and flattened row-major into 1024 tokens, one per
pixel value 0..255, as LRA's ``lra_benchmarks/image/input_pipeline.py`` (``get_cifar10_datasets``:
``tf.cast(tf.image.rgb_to_grayscale(x['image']), tf.int32)``). Token ids: ``0`` pad, ``1`` CLS,
pixel ``v`` -> ``v + 2`` (see :mod:`longdoc.data.base`).

Grayscale (``grayscale`` option):

* ``"tf"`` (default, LRA): TensorFlow's ``tf.image.rgb_to_grayscale`` on uint8 images, i.e.
  ``convert_image_dtype`` to float32 (``x / 255``), the weighted sum ``0.2989 R + 0.5870 G +
  0.1140 B`` and ``convert_image_dtype`` back to uint8, which multiplies by ``255.5`` and truncates
  (saturating). In integers: ``floor(255.5 * (0.2989 R + 0.5870 G + 0.1140 B) / 255)``, computed in
  float32 as TensorFlow does. Example: (0, 3, 0) -> 1 and (200, 100, 50) -> 124.
* ``"pil"``: PIL's ``Image.convert("L")`` (ITU-R 601-2 luma, ``(19595 R + 38470 G + 7471 B +
  0x8000) >> 16``, i.e. rounded ``0.299 R + 0.587 G + 0.114 B``). Example: (0, 3, 0) -> 2.

Sources: ``path`` = the python version of CIFAR-10 (``cifar-10-python.tar.gz`` from
https://www.cs.toronto.edu/~kriz/cifar.html, folder ``cifar-10-batches-py``: pickled
``data_batch_1`` .. ``data_batch_5`` and ``test_batch``, dicts with ``b'data'`` (N, 3072) uint8,
each row the 1024 red, then green, then blue values of a row-major 32x32 image, and ``b'labels'``),
or ``path=null``: the Hugging Face dataset ``hf_name`` (``cifar10``: columns ``img`` (PIL image) and
``label``).

Validation: LRA uses ``train[:90%]`` for training and ``train[90%:]`` for validation (tfds slicing:
the last 10% of the training set, not shuffled); we do the same with ``val_fraction`` (0.1). The
order of the training set is the order of ``data_batch_1..5`` (local) or of the HF split, which
may differ from tfds' order.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from .base import DataNotFoundError, PixelDataModule, SourceDataModule, TokenSequenceDataset, load_hf_dataset

logger = logging.getLogger("longdoc.data")

__all__ = ["CIFAR10_HINT", "CIFAR10_CLASSES", "LRAImageDataModule", "load_cifar10", "read_cifar10_batches",
           "rgb_to_grayscale"]

#: Where CIFAR-10 comes from (used in error messages).
CIFAR10_HINT = (
    "the python version of CIFAR-10 (https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, folder "
    "cifar-10-batches-py with data_batch_1..data_batch_5 and test_batch)"
)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))

Split = tuple[np.ndarray, np.ndarray]


def rgb_to_grayscale(rgb: np.ndarray, method: str = "tf") -> np.ndarray:
    """Convert uint8 RGB pixels ``(..., 3)`` to uint8 grayscale ``(...)``.

    Args:
        rgb: uint8 array whose last axis is (R, G, B).
        method: ``"tf"`` (LRA's ``tf.image.rgb_to_grayscale``) or ``"pil"`` (PIL ``convert("L")``);
            formulas in the module docstring.

    Raises:
        ValueError: unknown ``method`` or last axis not of size 3.
    """
    rgb = np.asarray(rgb)
    if rgb.shape[-1] != 3:
        raise ValueError(f"expected (..., 3) RGB values, got shape {rgb.shape}")
    if method == "tf":
        flt = rgb.astype(np.float32) * np.float32(1.0 / 255.0)
        w = np.array([0.2989, 0.5870, 0.1140], dtype=np.float32)
        gray = flt[..., 0] * w[0] + flt[..., 1] * w[1] + flt[..., 2] * w[2]
        return np.clip(gray * np.float32(255.5), 0, 255).astype(np.uint8)  # saturate, then truncate
    if method == "pil":
        c = rgb.astype(np.uint32)
        return ((c[..., 0] * 19595 + c[..., 1] * 38470 + c[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)
    raise ValueError(f"grayscale must be 'tf' (LRA) or 'pil', got {method!r}; set data.grayscale")


def _find_batches_dir(path: Path) -> Path:
    for candidate in (path, path / "cifar-10-batches-py"):
        if all((candidate / f).is_file() for f in (*_TRAIN_BATCHES, "test_batch")):
            return candidate
    raise DataNotFoundError(f"data.path={str(path)!r} does not hold data_batch_1..5 and test_batch; set data.path to {CIFAR10_HINT}")


def _read_batch(file: Path) -> tuple[np.ndarray, np.ndarray]:
    # The official files are Python pickles (trusted input: only load files you downloaded yourself).
    with open(file, "rb") as fh:
        d = pickle.load(fh, encoding="bytes")
    try:
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[b"labels"], dtype=np.int64)
    except KeyError as err:
        raise ValueError(f"{file}: not a CIFAR-10 batch (no {err.args[0]!r} entry)") from err
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise ValueError(f"{file}: b'data' must be (N, 3072) with N labels, got {data.shape} and {len(labels)}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def read_cifar10_batches(path: str | os.PathLike) -> dict[str, Split]:
    """Read the pickled CIFAR-10 batches: ``{"train", "test"} -> (images (N, 32, 32, 3) uint8, labels (N,) int64)``.

    ``path`` is the ``cifar-10-batches-py`` folder or its parent; training images are in the order
    of ``data_batch_1`` .. ``data_batch_5``.

    Raises:
        DataNotFoundError: a batch file is missing (the message names ``data.path``).
        ValueError: a file that is not a CIFAR-10 batch.
    """
    root = _find_batches_dir(Path(path))
    train = [_read_batch(root / f) for f in _TRAIN_BATCHES]
    return {
        "train": (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])),
        "test": _read_batch(root / "test_batch"),
    }


def _hf_images(split: Any) -> Split:
    col = "img" if "img" in split.column_names else "image"
    images = np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in split[col]])
    return images, np.asarray(split["label"], dtype=np.int64)


def load_cifar10(path: str | os.PathLike | None, hf_name: str = "cifar10", cache_dir: str | os.PathLike | None = None) -> dict[str, Split]:
    """CIFAR-10 RGB images from ``path`` (pickled batches) or, if ``None``, the HF dataset ``hf_name``.

    Returns:
        ``{"train", "test"} -> (images (N, 32, 32, 3) uint8, labels (N,) int64)``.

    Raises:
        DataNotFoundError: missing files or unreachable hub (names ``data.path``).
    """
    if path is not None:
        return read_cifar10_batches(path)
    ds = load_hf_dataset(hf_name, key="data.path", hint=CIFAR10_HINT, cache_dir=None if cache_dir is None else str(cache_dir))
    return {"train": _hf_images(ds["train"]), "test": _hf_images(ds["test"])}


class LRAImageDataModule(PixelDataModule, SourceDataModule):
    """LightningDataModule for LRA Image: grayscale CIFAR-10 pixels, 1024 tokens, 10 classes (section 3.4).

    Batches: ``input_ids`` LongTensor (B, 1024 + add_cls) (``<cls>``, then pixel + 2, row-major),
    ``padding_mask`` (B, N) bool (all True), ``global_attention_mask`` (B, N) bool (True at 0 with
    ``add_cls``), ``labels`` LongTensor (B,) in 0..9 (:data:`CIFAR10_CLASSES`).

    Args:
        path: CIFAR-10 python batches (see the module docstring); ``None``: HF dataset ``hf_name``.
        hf_name: Hugging Face dataset name (``cifar10``).
        cache_dir: Hugging Face cache folder (``None``: HF's default).
        grayscale: ``"tf"`` (LRA) or ``"pil"``.
        val_fraction: the last ``val_fraction`` of the training set is the validation set (LRA: 0.1).
        seed, batch_size, max_tokens_per_batch, num_workers, bucket_by_length, add_cls: see
            :class:`~longdoc.data.base.LongDocDataModule`.

    Raises:
        ValueError: unknown ``grayscale``, ``val_fraction`` outside (0, 1), invalid batching args.
        DataNotFoundError: (``prepare_data`` / ``setup``) missing data; names ``data.path``.
    """

    display_name = "LRA image (CIFAR-10)"
    num_pixels = 32 * 32

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        hf_name: str = "cifar10",
        cache_dir: str | os.PathLike | None = None,
        grayscale: str = "tf",
        val_fraction: float = 0.1,
        seed: int = 0,
        batch_size: int = 32,
        max_tokens_per_batch: int | None = None,
        num_workers: int = 0,
        bucket_by_length: bool = True,
        add_cls: bool = True,
    ):
        super().__init__(batch_size=batch_size, max_tokens_per_batch=max_tokens_per_batch, num_workers=num_workers,
                         bucket_by_length=bucket_by_length, add_cls=add_cls, seed=seed)
        if grayscale not in ("tf", "pil"):
            raise ValueError(f"grayscale must be 'tf' (LRA) or 'pil', got {grayscale!r}; set data.grayscale")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}; set data.val_fraction")
        self.save_hyperparameters(logger=False)
        self.path, self.hf_name, self.cache_dir = path, hf_name, cache_dir
        self.grayscale, self.val_fraction = grayscale, val_fraction

    @property
    def num_classes(self) -> int:
        """10 CIFAR-10 classes."""
        return 10

    def _read_source(self) -> dict[str, Split]:
        return load_cifar10(self.path, self.hf_name, self.cache_dir)

    def _build_datasets(self) -> dict[str, TokenSequenceDataset]:
        raw = self._load()
        gray = {s: rgb_to_grayscale(x, self.grayscale).reshape(len(x), -1) for s, (x, _) in raw.items()}
        n = len(gray["train"])
        n_train = int(round((1.0 - self.val_fraction) * n))
        parts = {
            "train": (gray["train"][:n_train], raw["train"][1][:n_train]),
            "val": (gray["train"][n_train:], raw["train"][1][n_train:]),
            "test": (gray["test"], raw["test"][1]),
        }
        self._raw = None
        return {s: self.pixel_dataset(x, y) for s, (x, y) in parts.items()}
