"""Writers of tiny datasets in each official on-disk format, for the loader tests.

Every writer puts files under a folder it is given (a pytest ``tmp_path``) and returns what the
tests need to compute expectations by hand.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np

# ----------------------------------------------------------------------------------- IMDB (LRA text)
IMDB_REVIEWS = {
    "train": [
        ("A wonderful film.<br /><br />Loved it!", 1),
        ("Terrible plot, worse acting.", 0),
        ("Caf\u00e9 scenes were charming \u2014 9/10", 1),
        ("I fell asleep twice.", 0),
        ("Best movie of the year, no doubt.", 1),
        ("Boring and far too long; skip it.", 0),
        ("A masterpiece of quiet storytelling.", 1),
        ("The dialogue made me cringe.", 0),
        ("Great soundtrack and a clever script.", 1),
        ("Not worth the ticket price.", 0),
    ],
    "test": [
        ("An instant classic.", 1),
        ("Dull, dull, dull.", 0),
        ("Surprisingly moving.", 1),
        ("Awful.", 0),
    ],
}


def write_aclimdb(root: Path, reviews: dict = IMDB_REVIEWS) -> Path:
    """The ``aclImdb_v1.tar.gz`` layout: ``root/aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt``
    (plus an ignored ``train/unsup``). Returns ``root`` (the parent of ``aclImdb``)."""
    for split, rows in reviews.items():
        for i, (text, label) in enumerate(rows):
            folder = root / "aclImdb" / split / ("pos" if label else "neg")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i}_{8 if label else 2}.txt").write_bytes(text.encode("utf-8"))
    unsup = root / "aclImdb" / "train" / "unsup"
    unsup.mkdir(parents=True, exist_ok=True)
    (unsup / "0_0.txt").write_text("unlabelled review")
    return root


def write_imdb_tables(root: Path, fmt: str = "csv", reviews: dict = IMDB_REVIEWS, string_labels: bool = False) -> Path:
    """``root/train.<fmt>`` and ``root/test.<fmt>`` with columns text,label (``csv`` or ``jsonl``)."""
    import pandas as pd

    root.mkdir(parents=True, exist_ok=True)
    for split, rows in reviews.items():
        df = pd.DataFrame({"text": [t for t, _ in rows],
                           "label": [("pos" if y else "neg") if string_labels else y for _, y in rows]})
        if fmt == "csv":
            df.to_csv(root / f"{split}.csv", index=False)
        elif fmt == "jsonl":
            df.to_json(root / f"{split}.jsonl", orient="records", lines=True, force_ascii=False)
        else:
            raise ValueError(fmt)
    return root


# ----------------------------------------------------------------------------------- AAN (LRA retrieval)
def aan_rows(n: int, seed: int) -> list[tuple[str, str, str, bytes, bytes]]:
    """``n`` rows (label, id1, id2, text1, text2) with raw-byte texts of various lengths."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        t1 = (f"Paper {seed}-{i} abstract. " * int(rng.integers(1, 6))).encode()
        t2 = (f"Cited work {i}: caf\u00e9 results. " * int(rng.integers(1, 4))).encode()
        label = "1.0" if i % 3 else "0"  # LRA parses the label as a float
        rows.append((label, f"W{i:02d}-100{seed}", f"P{i:02d}-20{seed}", t1, t2))
    return rows


def write_aan(root: Path, sizes: dict | None = None, folder: str = "tsv_data") -> dict[str, list]:
    """LRA's ``new_aan_pairs.{train,eval,test}.tsv`` in ``root/<folder>``: no header, five
    tab-separated fields, texts written as Python bytes literals (``b'...'``) as in the release.
    Returns ``{"train", "val", "test"} -> rows`` (texts as the raw bytes before ``repr``)."""
    sizes = sizes or {"train": 12, "val": 4, "test": 5}
    out = {}
    d = root / folder
    d.mkdir(parents=True, exist_ok=True)
    for k, (split, suffix) in enumerate((("train", "train"), ("val", "eval"), ("test", "test"))):
        rows = aan_rows(sizes[split], seed=k)
        lines = [b"\t".join([lab.encode(), a.encode(), b.encode(), repr(t1).encode(), repr(t2).encode()])
                 for lab, a, b, t1, t2 in rows]
        (d / f"new_aan_pairs.{suffix}.tsv").write_bytes(b"\n".join(lines) + b"\n")
        out[split] = rows
    return out


# ----------------------------------------------------------------------------------- CIFAR-10 (LRA image)
def cifar_images(n: int, seed: int) -> np.ndarray:
    """(n, 32, 32, 3) uint8 random images with a few fixed pixels: image 0 has (0, 3, 0) at row 0,
    column 1 and (200, 100, 50) at row 2, column 5."""
    imgs = np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    imgs[0, 0, 1] = (0, 3, 0)
    imgs[0, 2, 5] = (200, 100, 50)
    return imgs


def write_cifar10(root: Path, per_batch: int = 4, n_test: int = 6) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``root/cifar-10-batches-py/{data_batch_1..5,test_batch}``: pickled dicts with ``b'data'``
    (N, 3072) uint8 (row = 1024 R, 1024 G, 1024 B, each row-major), ``b'labels'``, ``b'batch_label'``
    and ``b'filenames'``. Returns ``{"train", "test"} -> (images (N, 32, 32, 3), labels)``."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    train_x, train_y = [], []
    for b in range(1, 7):
        n = per_batch if b <= 5 else n_test
        x = cifar_images(n, seed=b)
        y = [(b * 7 + i) % 10 for i in range(n)]
        name = f"data_batch_{b}" if b <= 5 else "test_batch"
        payload = {b"batch_label": name.encode(), b"labels": y,
                   b"data": x.transpose(0, 3, 1, 2).reshape(n, 3072).copy(),
                   b"filenames": [f"img_{b}_{i}.png".encode() for i in range(n)]}
        with open(d / name, "wb") as fh:
            pickle.dump(payload, fh)
        if b <= 5:
            train_x.append(x)
            train_y += y
        else:
            test = (x, np.array(y))
    return {"train": (np.concatenate(train_x), np.array(train_y)), "test": test}


# ----------------------------------------------------------------------------------- Pathfinder
def write_pathfinder(root: Path, n: int = 30, resolution: int = 32, folder: str = "curv_contour_length_14",
                     per_meta: int = 8, empty: tuple[int, ...] = (5,), npy_metadata: bool = False):
    """LRA's released layout under ``root/<folder>``: grayscale PNGs ``imgs/<k>/sample_<i>.png`` and
    metadata files ``metadata/<k>.npy`` that hold text lines
    ``imgs/<k> sample_<i>.png <i> <label> <extra fields>`` (or, with ``npy_metadata``, a real
    ``np.save``d string array of the same rows). Images listed in ``empty`` are 0-byte files.
    Returns ``(images (n, res, res) uint8, labels (n,))`` in metadata order."""
    from PIL import Image

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(n, resolution, resolution), dtype=np.uint8)
    images[0, 3, 7] = 42
    labels = np.array([(i * 5) % 3 % 2 for i in range(n)])
    base = root / folder
    (base / "metadata").mkdir(parents=True, exist_ok=True)
    rows_by_file: dict[int, list[list[str]]] = {}
    for i in range(n):
        k = i // per_meta
        img_dir = base / "imgs" / str(k)
        img_dir.mkdir(parents=True, exist_ok=True)
        f = img_dir / f"sample_{i}.png"
        if i in empty:
            f.write_bytes(b"")
        else:
            Image.fromarray(images[i]).save(f)  # 2-D uint8 -> mode "L"
        rows_by_file.setdefault(k, []).append([f"imgs/{k}", f"sample_{i}.png", str(i), str(labels[i]), "2", "0.75"])
    for k, rows in rows_by_file.items():
        f = base / "metadata" / f"{k}.npy"
        if npy_metadata:
            with open(f, "wb") as fh:
                np.save(fh, np.array(rows))
        else:
            f.write_text("".join(" ".join(r) + "\n" for r in rows))
    return images, labels


# ----------------------------------------------------------------------------------- enwik8
def enwik8_bytes(n: int = 2000) -> bytes:
    """``n`` bytes of XML-like text (deterministic)."""
    unit = b"<page><title>Anarchism</title><text>[[Category:Test]] caf\xc3\xa9 &amp; more</text></page>\n"
    return (unit * (n // len(unit) + 1))[:n]


def write_enwik8(root: Path, n: int = 2000, zipped: bool = False) -> tuple[Path, bytes]:
    """An ``enwik8``-like file of ``n`` bytes (or ``enwik8.zip`` with member ``enwik8``)."""
    data = enwik8_bytes(n)
    root.mkdir(parents=True, exist_ok=True)
    if zipped:
        path = root / "enwik8.zip"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("enwik8", data)
    else:
        path = root / "enwik8"
        path.write_bytes(data)
    return path, data


# ----------------------------------------------------------------------------------- text classification
TOPIC_DOCS = [
    ("The striker scored twice in the final minutes of the match.", "sports"),
    ("Parliament passed the budget after a long debate.", "politics"),
    ("The new chip doubles battery life in laptops.", "tech"),
    ("The goalkeeper saved a penalty in extra time.", "sports"),
    ("The senator announced a campaign for re-election.", "politics"),
    ("A startup released an open-source database engine.", "tech"),
    ("The team won the championship for the third year.", "sports"),
    ("Voters head to the polls on Sunday.", "politics"),
    ("The update fixes a memory leak in the browser.", "tech"),
    ("Fans celebrated in the streets after the victory.", "sports"),
    ("The minister resigned after the scandal.", "politics"),
    ("Engineers unveiled a faster compiler.", "tech"),
]
TOPIC_TEST = [
    ("The coach praised the defence.", "sports"),
    ("The election results were contested.", "politics"),
    ("The phone ships with a larger screen.", "tech"),
]


def write_table(path: Path, rows: list[tuple[str, object]], text_key: str = "text", label_key: str = "label") -> Path:
    """Write (text, label) rows as ``.csv``, ``.tsv``, ``.jsonl`` or ``.parquet`` by the suffix of ``path``."""
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame({text_key: [t for t, _ in rows], label_key: [y for _, y in rows]})
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    elif path.suffix == ".tsv":
        df.to_csv(path, sep="\t", index=False)
    elif path.suffix == ".jsonl":
        with open(path, "w", encoding="utf-8") as fh:
            for t, y in rows:
                fh.write(json.dumps({text_key: t, label_key: y}) + "\n")
    elif path.suffix == ".parquet":
        df.to_parquet(path)
    else:
        raise ValueError(path)
    return path


# ----------------------------------------------------------------------------------- a pretrained tokenizer.json
#: Ids of :func:`save_word_tokenizer`: [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, then the words w4 ... w59.
VOCAB = 60
WORDS = [f"w{i}" for i in range(4, VOCAB)]


def save_word_tokenizer(file: Path) -> Path:
    """A HF ``tokenizers`` word-level tokenizer with BERT's template ``[CLS] $A [SEP]``, its own truncation (8) and
    padding stored in the file (as sentence-transformers store theirs), written to ``file``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, **{w: i + 4 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.enable_truncation(8)
    tok.enable_padding(pad_id=0, pad_token="[PAD]", length=8)
    tok.save(str(file))
    return file
