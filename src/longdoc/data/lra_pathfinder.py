"""Long Range Arena "Pathfinder" and "Path-X" (Tay et al. 2021, section 3.5): are the two dots in
the image connected by a dashed path? Grayscale images as pixel sequences, 2 classes.

Released layout (``lra_release.gz``, https://storage.googleapis.com/long-range-arena/lra_release.gz,
folders ``lra_release/pathfinder{32,64,128,256}``), read as LRA's TFDS builders in
``lra_benchmarks/data/pathfinder.py`` (``Pathfinder32`` ... ``Pathfinder256``) do::

    <path>/<difficulty>/metadata/<k>.npy      # despite the name: text, one image per line
    <path>/<difficulty>/<subdir>/<file>.png   # e.g. imgs/0/sample_0.png

A metadata line is space-separated; column 0 is the image's subfolder, column 1 its file name and
column 3 the label (``int(m_example[3])``). Difficulties: ``easy`` = ``curv_baseline``,
``intermediate`` = ``curv_contour_length_9``, ``hard`` = ``curv_contour_length_14`` (LRA's
Pathfinder results use ``hard``; Path-X is ``pathfinder128``, 16384 tokens). Metadata files that
really are NumPy arrays (``np.save`` of a 2-D string array, rows as above) are read as well.

Pixels: LRA decodes the PNG as stored (``tf.image.decode_png``; the released images are 8-bit
grayscale), flattened row-major; other PNG modes are converted with PIL's ``convert("L")``.
Token ids: ``0`` pad, ``1`` CLS, pixel ``v`` -> ``v + 2``.

Splits: LRA takes ``<difficulty>[:80%]``, ``[80%:90%]``, ``[90%:]`` of the TFDS-built dataset (whose
example order is TFDS' hashed, deterministic shuffle) and then drops empty images
(``tf.strings.length(x['image']) > 0``; the release has some, e.g.
``pathfinder32/curv_baseline/imgs/0/sample_172.png``). We permute all metadata rows (metadata files
in numeric order) with ``numpy.random.default_rng(seed)``, cut at ``round(0.8 n)`` and
``round(0.9 n)`` (TFDS' percent slicing rounds to the closest index), then drop empty image files
in each split. The same proportions as LRA, not the same samples.

Decoded images can be cached (``cache_dir``) as one ``uint8`` ``.npy`` per (difficulty,
resolution, metadata contents), memory-mapped on later runs (Path-X: 200k x 16384 bytes = 3.3 GB).
"""

from __future__ import annotations

import io
import logging
import os
import re
from pathlib import Path

import numpy as np

from .base import (
    DataNotFoundError,
    PixelDataModule,
    TokenSequenceDataset,
    atomic_save_npy,
    atomic_write,
    sha256_hex,
)

logger = logging.getLogger("longdoc.data")

__all__ = [
    "PATHFINDER_DIFFICULTIES",
    "PATHFINDER_HINT",
    "LRAPathfinderDataModule",
    "decode_pathfinder_images",
    "pathfinder_splits",
    "read_pathfinder_metadata",
]

#: LRA's difficulty names -> released folder names (``lra_benchmarks/data/pathfinder.py``).
PATHFINDER_DIFFICULTIES = {
    "easy": "curv_baseline",
    "intermediate": "curv_contour_length_9",
    "hard": "curv_contour_length_14",
}
#: Where Pathfinder comes from (used in error messages).
PATHFINDER_HINT = (
    "LRA's released Pathfinder folder pathfinder<resolution> from lra_release.gz "
    "(https://storage.googleapis.com/long-range-arena/lra_release.gz), holding "
    "<difficulty>/metadata/*.npy and <difficulty>/imgs/<k>/*.png"
)
_CACHE_VERSION = 1

Row = tuple[str, str, int]


def _metadata_order(p: Path) -> tuple[int, int, str]:
    return (0, int(p.stem), p.name) if re.fullmatch(r"\d+", p.stem) else (1, 0, p.name)


def _metadata_rows(file: Path) -> list[list[str]]:
    raw = file.read_bytes()
    if raw.startswith(b"\x93NUMPY"):
        arr = np.load(io.BytesIO(raw), allow_pickle=False)
        return [[str(v) for v in np.atleast_1d(row)] for row in np.atleast_2d(arr)]
    return [line.split() for line in raw.decode("utf-8").split("\n") if line.strip()]


def read_pathfinder_metadata(folder: str | os.PathLike) -> tuple[list[Row], bytes]:
    """Read ``<folder>/metadata/*.npy`` (numeric file order): ``([(subdir, file name, label)], raw bytes)``.

    The raw bytes (all metadata files concatenated) key the decoded-image cache.

    Raises:
        DataNotFoundError: no metadata files (the message names ``data.path`` / ``data.difficulty``).
        ValueError: a row with fewer than 4 fields or a label that is not 0 or 1 (``file:row``).
    """
    folder = Path(folder)
    files = sorted((folder / "metadata").glob("*.npy"), key=_metadata_order)
    if not files:
        raise DataNotFoundError(
            f"no metadata files {folder / 'metadata' / '*.npy'}; set data.path to {PATHFINDER_HINT} "
            f"and data.difficulty to one of {sorted(PATHFINDER_DIFFICULTIES)} (or a folder name)"
        )
    rows: list[Row] = []
    raw = []
    for f in files:
        raw.append(f.read_bytes())
        for k, fields in enumerate(_metadata_rows(f), start=1):
            if len(fields) < 4 or fields[3] not in ("0", "1"):
                raise ValueError(f"{f}:{k}: expected 'subdir file _ label(0/1) ...', got {' '.join(fields)[:80]!r}")
            rows.append((fields[0], fields[1], int(fields[3])))
    return rows, b"\n".join(raw)


def _decode_png(file: Path, resolution: int) -> np.ndarray:
    from PIL import Image

    with Image.open(file) as im:
        if im.mode != "L":
            im = im.convert("L")
        arr = np.asarray(im, dtype=np.uint8)
    if arr.shape != (resolution, resolution):
        raise ValueError(f"{file}: image is {arr.shape[1]}x{arr.shape[0]}, expected {resolution}x{resolution}; "
                         "set data.resolution to the images' size")
    return arr.reshape(-1)


def decode_pathfinder_images(
    folder: str | os.PathLike, rows: list[Row], resolution: int, out: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Decode every row's PNG: ``(pixels (num_rows, resolution**2) uint8, present (num_rows,) bool)``.

    Empty files (0 bytes) give ``present=False`` and zero pixels, as LRA drops them.

    Args:
        folder: ``<path>/<difficulty>``. rows: from :func:`read_pathfinder_metadata`.
        resolution: image side. out: optional preallocated (e.g. memory-mapped) pixel array.

    Raises:
        DataNotFoundError: image files are missing (count and first path in the message).
        ValueError: an image of another size than ``resolution``.
    """
    folder = Path(folder)
    pixels = out if out is not None else np.zeros((len(rows), resolution * resolution), dtype=np.uint8)
    present = np.ones(len(rows), dtype=bool)
    missing = []
    for i, (subdir, name, _) in enumerate(rows):
        f = folder / subdir / name
        try:
            size = f.stat().st_size
        except FileNotFoundError:
            missing.append(f)
            continue
        if size == 0:
            present[i] = False
            pixels[i] = 0
            continue
        pixels[i] = _decode_png(f, resolution)
    if missing:
        raise DataNotFoundError(f"{len(missing)} image files listed in the metadata are missing, e.g. {missing[0]}; "
                                f"data.path must hold {PATHFINDER_HINT}")
    return pixels, present


def pathfinder_splits(num_rows: int, seed: int) -> dict[str, np.ndarray]:
    """Seeded 80/10/10 split of ``range(num_rows)``: ``{"train", "val", "test"} -> sorted indices``
    (permutation by ``default_rng(seed)``, cuts at ``round(0.8 n)`` and ``round(0.9 n)``)."""
    perm = np.random.default_rng(seed).permutation(num_rows)
    a, b = int(round(0.8 * num_rows)), int(round(0.9 * num_rows))
    return {"train": np.sort(perm[:a]), "val": np.sort(perm[a:b]), "test": np.sort(perm[b:])}


class LRAPathfinderDataModule(PixelDataModule):
    """LightningDataModule for LRA Pathfinder / Path-X (section 3.5; 2 classes).

    Batches: ``input_ids`` LongTensor (B, resolution**2 + add_cls) (``<cls>``, then pixel + 2,
    row-major), ``padding_mask`` (B, N) bool (all True), ``global_attention_mask`` (B, N) bool (True
    at 0 with ``add_cls``), ``labels`` LongTensor (B,) (1 = connected).

    Args:
        path: ``pathfinder<resolution>`` folder of LRA's release (see the module docstring).
        difficulty: ``easy`` / ``intermediate`` / ``hard`` or a folder name under ``path``.
        resolution: image side: 32 (Pathfinder, 1024 tokens), 64, 128 (Path-X, 16384 tokens), 256.
        cache_dir: folder for the decoded-image cache (``None``: decode on every ``setup``).
        seed: seed of the 80/10/10 split and of the batch shuffling.
        batch_size, max_tokens_per_batch, num_workers, bucket_by_length, add_cls: see
            :class:`~longdoc.data.base.LongDocDataModule`.

    Raises:
        ValueError: ``resolution <= 0``, invalid batching args; malformed metadata or wrong image
            size (``setup``).
        DataNotFoundError: (``prepare_data`` / ``setup``) missing ``path``, metadata or images.
    """

    display_name = "LRA pathfinder"

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        difficulty: str = "hard",
        resolution: int = 32,
        cache_dir: str | os.PathLike | None = None,
        seed: int = 0,
        batch_size: int = 32,
        max_tokens_per_batch: int | None = None,
        num_workers: int = 0,
        bucket_by_length: bool = True,
        add_cls: bool = True,
    ):
        super().__init__(batch_size=batch_size, max_tokens_per_batch=max_tokens_per_batch, num_workers=num_workers,
                         bucket_by_length=bucket_by_length, add_cls=add_cls, seed=seed)
        if resolution <= 0:
            raise ValueError(f"resolution must be a positive integer (32, 64, 128, 256), got {resolution}")
        self.save_hyperparameters(logger=False)
        self.path, self.difficulty, self.resolution, self.cache_dir = path, difficulty, resolution, cache_dir
        self.display_name = f"LRA pathfinder{resolution} ({difficulty})"

    @property
    def num_classes(self) -> int:
        """2 (not connected, connected)."""
        return 2

    @property
    def num_pixels(self) -> int:  # type: ignore[override]
        """``resolution ** 2``."""
        return self.resolution**2

    def _folder(self) -> Path:
        if self.path is None:
            raise DataNotFoundError(f"LRA pathfinder needs local files: set data.path to {PATHFINDER_HINT}")
        root = Path(self.path)
        if not root.is_dir():
            raise DataNotFoundError(f"data.path={str(self.path)!r} is not a folder; set it to {PATHFINDER_HINT}")
        name = PATHFINDER_DIFFICULTIES.get(self.difficulty, self.difficulty)
        folder = root / name
        if not folder.is_dir():
            raise DataNotFoundError(
                f"{folder} does not exist; data.difficulty={self.difficulty!r} must be one of "
                f"{sorted(PATHFINDER_DIFFICULTIES)} or a folder under data.path={str(self.path)!r} ({PATHFINDER_HINT})"
            )
        return folder

    def _cache_files(self, folder: Path, meta: bytes) -> tuple[Path, Path] | None:
        if self.cache_dir is None:
            return None
        key = sha256_hex(meta, f"{self.resolution}|{_CACHE_VERSION}".encode())[:16]
        base = Path(self.cache_dir) / f"pathfinder{self.resolution}-{folder.name}-{key}"
        return base.with_suffix(".pixels.npy"), base.with_suffix(".present.npy")

    def _load(self, write_cache: bool) -> tuple[list[Row], np.ndarray, np.ndarray]:
        folder = self._folder()
        rows, meta = read_pathfinder_metadata(folder)
        files = self._cache_files(folder, meta)
        if files is not None and files[0].is_file() and files[1].is_file():
            logger.info("%s: decoded images from cache %s", self.display_name, files[0])
            return rows, np.load(files[0], mmap_mode="r"), np.load(files[1])
        if files is None or not write_cache:
            pixels, present = decode_pathfinder_images(folder, rows, self.resolution)
            return rows, pixels, present
        with atomic_write(files[0]) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(rows), self.resolution**2))
            _, present = decode_pathfinder_images(folder, rows, self.resolution, out=out)
            out.flush()
            del out
            atomic_save_npy(files[1], present)  # written first: a reader checks for both files
        logger.info("%s: decoded %d images into cache %s", self.display_name, len(rows), files[0])
        return rows, np.load(files[0], mmap_mode="r"), present

    def prepare_data(self) -> None:
        """Check the files and fill the decoded-image cache (if ``cache_dir``).

        Raises:
            DataNotFoundError: missing metadata or images.
        """
        self._load(write_cache=True)

    def _build_datasets(self) -> dict[str, TokenSequenceDataset]:
        rows, pixels, present = self._load(write_cache=True)
        labels = np.array([r[2] for r in rows], dtype=np.int64)
        out = {}
        for split, idx in pathfinder_splits(len(rows), self.seed).items():
            keep = idx[present[idx]]
            if len(keep) < len(idx):
                logger.info("%s %s: dropped %d empty images (as LRA)", self.display_name, split, len(idx) - len(keep))
            out[split] = self.pixel_dataset(pixels, labels[keep], row_index=keep)
        return out
