"""Long Range Arena's ListOps task: generator, evaluator, tokeniser, TSV I/O, on-disk cache and its data module.

ListOps (Nangia & Bowman, 2018) is a classification task over nested list operations, e.g.
``[MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]`` evaluates to ``5``. The Long Range Arena benchmark
(Tay et al., 2021, "Long Range Arena: A Benchmark for Efficient Transformers", section 3.1)
uses a longer variant with sequences of up to 2K tokens, operators ``MIN``, ``MAX``, ``MED``
(median) and ``SM`` (sum modulo 10), ten classes (the values 0-9).

This module re-implements, in our own code, the generator of LRA's
``lra_benchmarks/data/listops.py`` (its ``generate_tree`` / ``to_string`` / ``to_value`` and the
rejection-sampling loop in ``main``: :func:`sample_listops`, :func:`generate_listops_splits`) and the
tokenisation of LRA's ``lra_benchmarks/listops/input_pipeline.py`` (``]`` is renamed to ``X``,
parentheses are deleted, then whitespace tokenisation). LRA's length of a sequence is the number of
tokens that remain after removing the parentheses, which is what the generator counts and what
:func:`tokenize_listops` produces.

Trees use LRA's nested-tuple representation: an operator node with operator ``op`` and children
``v0 .. vk`` is ``((((op, v0), v1), ...), vk), END)``; a leaf is a Python ``int`` in 0..9.

:class:`ListOpsDataModule` serves the three splits (LRA's released files or generated and cached
ones) as length-bucketed, dynamically padded batches. Unlike LRA (which pads every batch to a fixed
``max_length``), batches are padded only to their longest sample and samples of similar length are
batched together (length bucketing), which keeps padding small.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import logging
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Union

import numpy as np

from .base import CLS_ID, SPLITS, LongDocDataModule, TokenSequenceDataset, atomic_write

logger = logging.getLogger("longdoc.data")

__all__ = [
    "MIN",
    "MAX",
    "MED",
    "SUM_MOD",
    "END",
    "OPERATORS",
    "VALUES",
    "VALUE_P",
    "SPECIAL_TOKENS",
    "LISTOPS_TOKENS",
    "VOCAB",
    "TOKEN_TO_ID",
    "UNK_ID",
    "VOCAB_SIZE",
    "NUM_CLASSES",
    "LRA_RELEASE_HINT",
    "to_string",
    "to_value",
    "evaluate_source",
    "max_tree_length",
    "make_bounded_generator",
    "sample_listops",
    "generate_listops_splits",
    "tokenize_listops",
    "encode_listops",
    "read_listops_tsv",
    "write_listops_tsv",
    "listops_cache_path",
    "load_or_generate_listops",
    "load_listops_from_path",
    "ListOpsDataModule",
]

# --------------------------------------------------------------------------------------------
# Constants (LRA lra_benchmarks/data/listops.py)
# --------------------------------------------------------------------------------------------
MIN = "[MIN"
MAX = "[MAX"
MED = "[MED"
SUM_MOD = "[SM"
END = "]"
#: LRA's operator list (``FIRST``/``LAST`` exist in LRA's file but are commented out of the task).
OPERATORS: tuple[str, ...] = (MIN, MAX, MED, SUM_MOD)
#: Leaf values.
VALUES = range(10)
#: Probability that a node (above ``max_depth``) is an operator rather than a value leaf.
VALUE_P = 0.25

# --------------------------------------------------------------------------------------------
# Vocabulary (LRA lra_benchmarks/listops/input_pipeline.py tokenisation)
# --------------------------------------------------------------------------------------------
#: Special tokens; ``<pad>`` and ``<cls>`` have the shared ids :data:`~longdoc.data.base.PAD_ID` (0) and
#: :data:`~longdoc.data.base.CLS_ID` (1).
SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<cls>", "<unk>")
#: The 15 ListOps tokens after LRA's tokenisation (``]`` renamed to ``X``), in a fixed order.
LISTOPS_TOKENS: tuple[str, ...] = (MAX, MIN, MED, SUM_MOD, "X") + tuple(str(v) for v in VALUES)
VOCAB: tuple[str, ...] = SPECIAL_TOKENS + LISTOPS_TOKENS
TOKEN_TO_ID: dict[str, int] = {tok: i for i, tok in enumerate(VOCAB)}
UNK_ID: int = TOKEN_TO_ID["<unk>"]
VOCAB_SIZE: int = len(VOCAB)
NUM_CLASSES: int = 10

#: Where LRA's released ListOps files come from (used in error messages).
LRA_RELEASE_HINT = (
    "LRA's released ListOps files come from the LRA release archive lra_release.gz "
    "(https://storage.googleapis.com/long-range-arena/lra_release.gz), folder "
    "lra_release/listops-1000"
)

Tree = Union[int, tuple]
Row = tuple[str, int]

# Bump when the generator changes in a way that changes its output for a given seed, so that
# stale caches are not reused.
_GENERATOR_VERSION = 1


# --------------------------------------------------------------------------------------------
# Trees: rendering and evaluation (LRA lra_benchmarks/data/listops.py)
# --------------------------------------------------------------------------------------------
def to_string(t: Tree) -> str:
    """Render a tree as LRA's source string, e.g. ``( ( ( [MAX 2 ) 9 ) ] )``.

    Source: LRA ``lra_benchmarks/data/listops.py::to_string`` (with ``parens=True``): a tuple
    ``(a, b)`` becomes ``'( ' + to_string(a) + ' ' + to_string(b) + ' )'``; strings and ints are
    rendered with ``str``. The rendering is injective (fully parenthesised), so de-duplicating
    strings is equivalent to de-duplicating trees.

    Args:
        t: a tree (nested tuples of ``str`` operators / ``END`` and ``int`` leaves).

    Returns:
        The source string (``str``).

    Raises:
        TypeError: if ``t`` contains something other than tuples, ``str`` and ``int``.
    """
    if isinstance(t, str):
        return t
    if isinstance(t, int):
        return str(t)
    if isinstance(t, tuple) and len(t) == 2:
        unchained = _unchain(t)
        if unchained is not None:
            # Closed form of the recursion for a complete operator node with children c0..ck:
            # "( " * (k + 2) + op + " " + " ) ".join(c) + " ) ] )" (one call per node, not per tuple).
            op, children = unchained
            return "( " * (len(children) + 1) + op + " " + " ) ".join(map(to_string, children)) + " ) ] )"
        return "( " + to_string(t[0]) + " " + to_string(t[1]) + " )"
    raise TypeError(f"to_string: unexpected tree node {t!r}")


def _unchain(t: tuple) -> tuple[str, list] | None:
    """Split a complete operator node ``((((op, c0), c1), ...), END)`` into ``(op, [c0, c1, ...])``;
    ``None`` if ``t`` is not of that form."""
    if t[1] != END or not isinstance(t[0], tuple):
        return None
    chain = t[0]
    children = []
    while isinstance(chain, tuple) and len(chain) == 2:
        head, arg = chain
        children.append(arg)
        if isinstance(head, str):
            if head not in OPERATORS:
                return None
            children.reverse()
            return head, children
        chain = head
    return None


def _apply(op: str, args: list[int]) -> int:
    """Apply a ListOps operator to integer arguments (``MED`` = ``int(np.median(args))``)."""
    if op == MIN:
        return min(args)
    if op == MAX:
        return max(args)
    if op == MED:
        # int(np.median(args)) for non-negative ints: the middle element, or for an even count
        # the mean of the two middle elements truncated towards zero (== floor here).
        s = sorted(args)
        n = len(s)
        if n % 2:
            return s[n // 2]
        return (s[n // 2 - 1] + s[n // 2]) // 2
    if op == SUM_MOD:
        return sum(args) % 10
    raise ValueError(f"unknown ListOps operator {op!r}")


def to_value(t: Tree) -> int:
    """Evaluate a tree (LRA's label).

    Source: LRA ``lra_benchmarks/data/listops.py::to_value``: ``MIN``/``MAX`` as usual,
    ``MED`` = ``int(np.median(args))`` (so the median of an even count is the mean of the two middle
    values truncated, e.g. ``[1, 2, 3, 4] -> 2``), ``SM`` = ``sum(args) % 10``. Implemented without
    numpy (same results for the non-negative integers that occur here) and non-recursively along
    each operator's argument chain.

    Args:
        t: a leaf ``int`` or an operator node ``(chain, END)`` in LRA's nested-tuple form.

    Returns:
        The value, a Python ``int`` in 0..9.

    Raises:
        ValueError: if the tree is malformed or has an unknown operator.
    """
    if isinstance(t, int):
        return t
    if not isinstance(t, tuple) or len(t) != 2:
        raise ValueError(f"to_value: malformed ListOps node {t!r}")
    unchained = _unchain(t)
    if unchained is None:
        raise ValueError(f"to_value: malformed ListOps node or unknown operator in {t!r}")
    op, children = unchained
    return _apply(op, [c if isinstance(c, int) else to_value(c) for c in children])


def evaluate_source(source: str) -> int:
    """Evaluate a ListOps source string (LRA format, with or without parentheses) with a stack.

    An independent (token-level) evaluator, useful to check the labels of released files. Works on
    both raw LRA strings (``( ( [MAX 2 ) 9 ) ] )``) and tokenised ones (``[MAX 2 9 X``).

    Args:
        source: the source string.

    Returns:
        The value, an ``int`` in 0..9.

    Raises:
        ValueError: if the string is not a well-formed ListOps expression.
    """
    stack: list[list[Any]] = [[None, []]]
    for tok in tokenize_listops(source):
        if tok in OPERATORS:
            stack.append([tok, []])
        elif tok == "X":
            if len(stack) < 2:
                raise ValueError(f"evaluate_source: unbalanced ']' in {source!r}")
            op, args = stack.pop()
            if not args:
                raise ValueError(f"evaluate_source: operator {op} without arguments in {source!r}")
            stack[-1][1].append(_apply(op, args))
        elif tok.isdigit():
            stack[-1][1].append(int(tok))
        else:
            raise ValueError(f"evaluate_source: unknown token {tok!r} in {source!r}")
    if len(stack) != 1 or len(stack[0][1]) != 1:
        raise ValueError(f"evaluate_source: not a single well-formed expression: {source!r}")
    return stack[0][1][0]


def max_tree_length(max_depth: int, max_args: int) -> int:
    """Largest length (tokens) a tree from LRA's ``generate_tree`` (:func:`make_bounded_generator`) can
    have, starting at depth 1.

    ``M(max_depth) = 1``; ``M(d) = 2 + max_args * M(d + 1)`` for ``d < max_depth``.

    Args:
        max_depth: depth at which nodes are always leaves (LRA: 10).
        max_args: maximum number of operator arguments (LRA: 10).

    Returns:
        The maximum length, an ``int``.
    """
    m = 1
    for _ in range(max(max_depth - 1, 0)):
        m = 2 + max_args * m
    return m


# --------------------------------------------------------------------------------------------
# Fast sampler: LRA's generator with early rejection of over-long trees
# --------------------------------------------------------------------------------------------
class _TooLong(Exception):
    """Raised inside the bounded generator once a tree is certain to reach ``max_length``."""


def make_bounded_generator(
    rng: random.Random, max_depth: int, max_args: int, max_length: int
) -> Callable[[], tuple[str, int, int] | None]:
    """Return ``gen()`` drawing one tree like LRA's ``generate_tree(1, max_depth, max_args)`` from ``rng``.

    LRA's ``lra_benchmarks/data/listops.py::generate_tree`` (Tay et al. 2021, section 3.1): at
    ``depth < max_depth`` draw ``r = rng.random()``, otherwise ``r = 1``. If ``r > VALUE_P`` the node
    is a value leaf (``rng.choice(VALUES)``, length 1); otherwise it is an operator with
    ``num_values = rng.randint(2, max_args)`` children generated at ``depth + 1``, then its operator
    ``rng.choice(OPERATORS)``; its length is ``2 + sum(children lengths)`` (the operator token and
    the closing ``]``).

    ``gen()`` returns ``(to_string(tree), to_value(tree), length)`` (``str``, ``int`` in 0..9, ``int``)
    for the tree that LRA's ``generate_tree`` would draw from the same RNG state *whenever its length is
    < max_length*, and ``None`` (rejected) as soon as the tree is certain to have length
    >= ``max_length``, without generating the rest of it. The string and value are built bottom-up
    while generating (no tuple tree is materialised): a node with operator ``op`` and children
    ``c0..ck`` renders as ``"( " * (k + 2) + op + " " + " ) ".join(c) + " ) ] )"``, the closed form
    of :func:`to_string` on LRA's left-nested tuples.

    Random numbers are consumed in exactly LRA's order (per operator node: ``num_values``, the
    children depth-first, then the operator). ``rng.choice(seq)`` is ``seq[rng._randbelow(len(seq))]``
    and ``rng.randint(a, b)`` is ``a + rng._randbelow(b - a + 1)``; for ``random.Random``,
    ``_randbelow(n)`` draws ``getrandbits(n.bit_length())`` until the result is < n (CPython >= 3.2).
    That loop is inlined here: the same draws without the call overhead, and an exactly uniform draw
    for any generator with ``getrandbits``. tests/data/test_listops.py checks, seed by seed, equality
    with a literal transcription of LRA's code (tests/data/lra_listops_reference.py).

    Why early rejection does not change the distribution of accepted trees: during generation we
    keep a lower bound ``L`` on the final length: committed tokens plus one token reserved for each
    child that has been announced (``num_values`` drawn) but not yet generated; a child turning
    into an operator with ``k`` children increases ``L`` by ``1 + k``, a leaf leaves it unchanged, so
    ``L`` never decreases and equals the exact length once the tree is complete. If
    ``L >= max_length`` the complete tree would have length >= ``max_length`` and LRA's loop would
    reject it anyway. If the complete tree has length < ``max_length``, ``L`` never reaches the
    threshold, no abort happens and the same random draws produce the identical tree. Every attempt
    starts from fresh, independent random draws, so an abort is just an earlier rejection of an
    attempt that would have been rejected: accepted trees are i.i.d. draws from LRA's generator
    conditioned on ``min_length < length < max_length``, exactly as in LRA. (Only the RNG stream
    position after a rejected attempt differs, so the exact sequence for a given seed differs from
    running LRA's generator in a loop, not its distribution.)

    Args:
        rng: the random generator (``random.Random``, or anything with ``random`` and ``getrandbits``).
        max_depth: nodes at this depth are always leaves (>= 1; LRA: 10).
        max_args: maximum number of operator arguments (>= 2; LRA: 10).
        max_length: exclusive upper bound on the length of accepted trees.
    """
    rand = rng.random
    getrandbits = rng.getrandbits
    width = max_args - 1  # num_values = 2 + uniform{0, ..., width - 1}
    k_width = width.bit_length()
    ops = OPERATORS
    n_ops = len(ops)
    k_ops = n_ops.bit_length()
    n_values = len(VALUES)
    k_values = n_values.bit_length()
    leaf_strings = [str(v) for v in VALUES]
    leaf_values = list(VALUES)
    prefixes = ["( " * (k + 1) for k in range(max_args + 1)]
    value_p = VALUE_P
    apply = _apply
    bound = [0]

    def operator(depth: int) -> tuple[str, int]:
        # An operator node at `depth` whose r-draw has already been made (r <= VALUE_P).
        num_values = getrandbits(k_width)
        while num_values >= width:
            num_values = getrandbits(k_width)
        num_values += 2
        bound[0] += 1 + num_values
        if bound[0] >= max_length:
            raise _TooLong
        d1 = depth + 1
        inner = d1 < max_depth
        strs: list[str] = []
        vals: list[int] = []
        for _ in range(num_values):
            if inner and rand() <= value_p:
                s, v = operator(d1)
            else:
                i = getrandbits(k_values)
                while i >= n_values:
                    i = getrandbits(k_values)
                s, v = leaf_strings[i], leaf_values[i]
            strs.append(s)
            vals.append(v)
        o = getrandbits(k_ops)
        while o >= n_ops:
            o = getrandbits(k_ops)
        op = ops[o]
        return prefixes[num_values] + op + " " + " ) ".join(strs) + " ) ] )", apply(op, vals)

    def gen() -> tuple[str, int, int] | None:
        bound[0] = 1
        if bound[0] >= max_length:
            return None
        if max_depth > 1 and rand() <= value_p:
            try:
                s, v = operator(1)
            except _TooLong:
                return None
        else:
            i = getrandbits(k_values)
            while i >= n_values:
                i = getrandbits(k_values)
            s, v = leaf_strings[i], leaf_values[i]
        return s, v, bound[0]

    return gen


def _check_generation_args(
    num_samples: int, min_length: int, max_length: int, max_depth: int, max_args: int
) -> None:
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    if min_length >= max_length:
        raise ValueError(
            f"min_length ({min_length}) must be < max_length ({max_length}): LRA keeps trees with "
            "min_length < length < max_length; lower min_length or raise max_length"
        )
    if max_depth < 1:
        raise ValueError(f"max_depth must be >= 1, got {max_depth}")
    if max_args < 2:
        raise ValueError(f"max_args must be >= 2, got {max_args}")
    longest = max_tree_length(max_depth, max_args)
    if min_length >= longest:
        raise ValueError(
            f"min_length ({min_length}) >= the longest possible tree ({longest} tokens for "
            f"max_depth={max_depth}, max_args={max_args}); lower min_length or raise max_depth/max_args"
        )


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector, restoring its previous state on exit.

    Sampling allocates tens of millions of short-lived lists while accepted samples pile up; the
    collector would run thousands of times for nothing (no reference cycles are created)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def sample_listops(
    num_samples: int,
    *,
    min_length: int,
    max_length: int,
    max_depth: int = 10,
    max_args: int = 10,
    rng: random.Random | None = None,
    seed: int = 0,
    max_stall_attempts: int = 1_000_000,
) -> list[tuple[str, int, int]]:
    """Draw distinct ListOps samples with ``min_length < length < max_length``, as LRA's ``main``.

    Source: LRA ``lra_benchmarks/data/listops.py::main``: repeatedly ``generate_tree(1, max_depth,
    max_args)`` (:func:`make_bounded_generator`), keep trees with ``min_length < length < max_length``
    (both exclusive), de-duplicate (LRA: ``data.add(tree)`` into a ``set``) until ``num_samples``
    distinct trees are collected, then ``to_string`` / ``to_value`` them. De-duplication is on the source string, equivalent to
    de-duplicating trees because :func:`to_string` is injective. Unlike LRA, the order is insertion
    order (LRA iterates a ``set``, whose order depends on the hash seed), so results are
    reproducible for a given seed; since draws are i.i.d., splitting in insertion order is a
    uniformly random split, as LRA's. Over-long trees are rejected early (see
    :func:`make_bounded_generator` for why the accepted distribution is unchanged).

    Args:
        num_samples: number of distinct samples to return (>= 0).
        min_length: exclusive lower bound on the length (tokens, parentheses excluded).
        max_length: exclusive upper bound on the length.
        max_depth: LRA's ``max_depth`` (default 10).
        max_args: LRA's ``max_args`` (default 10).
        rng: random generator; if ``None``, ``random.Random(seed)``.
        seed: seed used when ``rng`` is ``None``.
        max_stall_attempts: give up after this many consecutive attempts without a new sample.

    Returns:
        A list of ``num_samples`` ``(source: str, label: int, length: int)`` in generation order.

    Raises:
        ValueError: inconsistent arguments (``min_length >= max_length``, impossible lengths, ...).
        RuntimeError: no new distinct sample in ``max_stall_attempts`` consecutive attempts (the
            length window admits too few distinct trees).
    """
    samples, _ = _sample(num_samples, min_length, max_length, max_depth, max_args, rng, seed, max_stall_attempts)
    return samples


def _sample(
    num_samples: int,
    min_length: int,
    max_length: int,
    max_depth: int,
    max_args: int,
    rng: random.Random | None,
    seed: int,
    max_stall_attempts: int,
) -> tuple[list[tuple[str, int, int]], int]:
    """Implementation of :func:`sample_listops`; also returns the number of attempts."""
    _check_generation_args(num_samples, min_length, max_length, max_depth, max_args)
    if rng is None:
        rng = random.Random(seed)
    gen = make_bounded_generator(rng, max_depth, max_args, max_length)
    data: dict[str, tuple[str, int, int]] = {}
    attempts = 0
    stall = 0
    with _gc_paused():
        while len(data) < num_samples:
            attempts += 1
            out = gen()
            if out is not None and out[2] > min_length and out[0] not in data:
                data[out[0]] = out
                stall = 0
                if len(data) % 10000 == 0:
                    logger.debug("ListOps: generated %d/%d samples (%d attempts)", len(data), num_samples, attempts)
                continue
            stall += 1
            if stall >= max_stall_attempts:
                raise RuntimeError(
                    f"ListOps generation stalled: no new distinct tree with {min_length} < length < "
                    f"{max_length} in {max_stall_attempts} attempts ({len(data)}/{num_samples} collected); "
                    "widen the length window or request fewer samples"
                )
    return list(data.values()), attempts


def generate_listops_splits(
    num_train: int,
    num_val: int,
    num_test: int,
    *,
    min_length: int,
    max_length: int,
    max_depth: int = 10,
    max_args: int = 10,
    seed: int = 0,
) -> dict[str, list[Row]]:
    """Generate LRA-style ListOps train/val/test splits in memory.

    Source: LRA ``lra_benchmarks/data/listops.py::main``: ``num_train + num_val + num_test``
    distinct trees are drawn (:func:`sample_listops` with ``random.Random(seed)``), rendered as
    :func:`to_string`, labelled as :func:`to_value`, and split in order train/val/test (so the
    splits are disjoint).

    Args:
        num_train, num_val, num_test: split sizes (>= 0).
        min_length, max_length: exclusive length bounds (tokens, parentheses excluded).
        max_depth, max_args: tree shape parameters (LRA: 10, 10).
        seed: seed of ``random.Random``.

    Returns:
        ``{"train": rows, "val": rows, "test": rows}`` with rows ``(source: str, label: int)``.

    Raises:
        ValueError, RuntimeError: see :func:`sample_listops`.
    """
    for name, n in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test)):
        if n < 0:
            raise ValueError(f"{name} must be >= 0, got {n}")
    total = num_train + num_val + num_test
    t0 = time.perf_counter()
    samples, attempts = _sample(total, min_length, max_length, max_depth, max_args, None, seed, 1_000_000)
    rows = [(s, v) for s, v, _ in samples]
    logger.info(
        "ListOps: generated %d samples in %.2f s (%d attempts, acceptance rate %.2f%%)",
        total,
        time.perf_counter() - t0,
        attempts,
        100.0 * total / max(attempts, 1),
    )
    return {
        "train": rows[:num_train],
        "val": rows[num_train : num_train + num_val],
        "test": rows[num_train + num_val :],
    }


# --------------------------------------------------------------------------------------------
# Tokenisation (LRA lra_benchmarks/listops/input_pipeline.py)
# --------------------------------------------------------------------------------------------
def tokenize_listops(source: str) -> list[str]:
    """Tokenise a ListOps source string exactly as LRA's input pipeline.

    Source: LRA ``lra_benchmarks/listops/input_pipeline.py::rename_close_brackets`` followed by
    ``tensorflow_text.WhitespaceTokenizer``: ``]`` is replaced by ``X``, ``(`` and ``)`` are
    deleted, then the string is split on whitespace.

    Args:
        source: an LRA source string, e.g. ``( ( [MAX 2 ) 9 ) ] )``.

    Returns:
        The list of token strings, e.g. ``['[MAX', '2', '9', 'X']``.
    """
    return source.replace("]", "X").replace("(", "").replace(")", "").split()


def encode_listops(source: str, add_cls: bool = True) -> list[int]:
    """Tokenise (:func:`tokenize_listops`) and map tokens to ids of :data:`VOCAB`.

    Unknown tokens map to :data:`UNK_ID`. With ``add_cls`` the id :data:`CLS_ID` is prepended, so
    the result has ``len(tokenize_listops(source)) + 1`` ids.

    Args:
        source: an LRA source string.
        add_cls: prepend ``<cls>``.

    Returns:
        A list of ``int`` token ids in ``[0, VOCAB_SIZE)``.
    """
    get = TOKEN_TO_ID.get
    ids = [get(tok, UNK_ID) for tok in tokenize_listops(source)]
    if add_cls:
        ids.insert(0, CLS_ID)
    return ids


# --------------------------------------------------------------------------------------------
# TSV I/O (LRA's released format) and caching
# --------------------------------------------------------------------------------------------
def read_listops_tsv(path: str | os.PathLike) -> list[Row]:
    """Read a ListOps TSV in LRA's released format (``basic_{train,val,test}.tsv``).

    Source: format written by LRA ``lra_benchmarks/data/listops.py::write_to_file`` (``csv.writer``
    with ``delimiter='\\t'``, a header row ``Source\\tTarget``) and read by
    ``lra_benchmarks/listops/input_pipeline.py::preprocess_dataset``.

    Args:
        path: the ``.tsv`` file.

    Returns:
        A list of ``(source: str, label: int)`` rows, in file order.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if the header is not ``Source``/``Target``, a row does not have two fields, or a
            label is not an integer in 0..9.
    """
    path = Path(path)
    rows: list[Row] = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != ["Source", "Target"]:
            raise ValueError(f"{path}: expected a header row 'Source\\tTarget' (LRA format), got {header!r}")
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != 2:
                raise ValueError(f"{path}:{lineno}: expected 2 tab-separated fields, got {len(row)}")
            source, target = row
            try:
                label = int(target)
            except ValueError:
                raise ValueError(f"{path}:{lineno}: label {target!r} is not an integer") from None
            if not 0 <= label < NUM_CLASSES:
                raise ValueError(f"{path}:{lineno}: label {label} outside 0..{NUM_CLASSES - 1}")
            rows.append((source, label))
    return rows


def write_listops_tsv(path: str | os.PathLike, rows: Iterable[Row]) -> None:
    """Write rows in LRA's TSV format (header ``Source\\tTarget``, ``\\r\\n`` line ends), atomically
    (:func:`~longdoc.data.base.atomic_write`: readers never see a partial file). Source: LRA
    ``lra_benchmarks/data/listops.py::write_to_file``.

    Args:
        path: destination ``.tsv`` file (its folder is created if needed).
        rows: ``(source, label)`` pairs.

    Raises:
        OSError: on I/O errors (the temporary file is removed).
    """
    with atomic_write(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(["Source", "Target"])
        writer.writerows(rows)


def listops_cache_path(
    cache_dir: str | os.PathLike,
    *,
    num_train: int,
    num_val: int,
    num_test: int,
    min_length: int,
    max_length: int,
    max_depth: int = 10,
    max_args: int = 10,
    seed: int = 0,
) -> Path:
    """The cache subfolder of ``cache_dir`` for a given generation config.

    The folder name encodes every generation parameter (and a generator version), e.g.
    ``listops_v1_n20000-1000-1000_len50-500_depth10_args10_seed0``.

    Returns:
        ``Path(cache_dir) / name`` (not created).
    """
    name = (
        f"listops_v{_GENERATOR_VERSION}_n{num_train}-{num_val}-{num_test}_len{min_length}-{max_length}"
        f"_depth{max_depth}_args{max_args}_seed{seed}"
    )
    return Path(cache_dir) / name


def _split_files(folder: Path) -> dict[str, Path]:
    return {split: folder / f"basic_{split}.tsv" for split in SPLITS}


def _read_cache(files: dict[str, Path], expected: dict[str, int]) -> dict[str, list[Row]] | None:
    """Read the cached split files; ``None`` (after a logged warning naming the file) when one is
    damaged: cut short (its last line does not end with a line break, a row is incomplete or
    malformed) or holding another number of rows than ``expected``."""
    splits: dict[str, list[Row]] = {}
    for split, p in files.items():
        with open(p, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(size - 1, 0))
            last = f.read(1)
        if last != b"\n":
            logger.warning("ListOps: cache file %s is cut short (no line break at its end); regenerating", p)
            return None
        try:
            splits[split] = read_listops_tsv(p)
        except (ValueError, csv.Error) as err:
            logger.warning("ListOps: cache file %s is malformed (%s); regenerating", p, err)
            return None
        if len(splits[split]) != expected[split]:
            logger.warning("ListOps: cache file %s has %d rows, expected %d; regenerating",
                           p, len(splits[split]), expected[split])
            return None
    return splits


def _log_loaded(what: str, folder: Path, splits: dict[str, list[Row]], seconds: float) -> None:
    logger.info(
        "ListOps: %s %s (train/val/test = %d/%d/%d) in %.2f s",
        what,
        folder,
        len(splits["train"]),
        len(splits["val"]),
        len(splits["test"]),
        seconds,
    )


def load_or_generate_listops(
    cache_dir: str | os.PathLike,
    *,
    num_train: int,
    num_val: int,
    num_test: int,
    min_length: int,
    max_length: int,
    max_depth: int = 10,
    max_args: int = 10,
    seed: int = 0,
) -> dict[str, list[Row]]:
    """Load generated ListOps splits from the cache, generating and caching them if needed.

    The files ``basic_train.tsv``, ``basic_val.tsv``, ``basic_test.tsv`` (LRA's released format)
    live in :func:`listops_cache_path` ``(cache_dir, ...)``. If all three exist and are intact they
    are read. If any is missing, or one is damaged (cut short: its last line lacks its line break or
    a row is incomplete; malformed; another number of rows than requested; a warning names the
    file), all are regenerated with :func:`generate_listops_splits` (LRA
    ``lra_benchmarks/data/listops.py``) and written atomically. Logs (logger ``longdoc.data``) what
    was loaded/generated and how long it took.

    Args:
        cache_dir: root cache directory (created if needed).
        num_train, num_val, num_test: split sizes (> 0 not required; >= 0).
        min_length, max_length: exclusive length bounds in tokens (parentheses excluded).
        max_depth, max_args: LRA tree parameters (default 10, 10).
        seed: generation seed.

    Returns:
        ``{"train": rows, "val": rows, "test": rows}`` with ``(source: str, label: int)`` rows.

    Raises:
        ValueError: invalid generation arguments.
        RuntimeError: see :func:`sample_listops`.
    """
    folder = listops_cache_path(
        cache_dir,
        num_train=num_train,
        num_val=num_val,
        num_test=num_test,
        min_length=min_length,
        max_length=max_length,
        max_depth=max_depth,
        max_args=max_args,
        seed=seed,
    )
    files = _split_files(folder)
    if all(p.is_file() for p in files.values()):
        t0 = time.perf_counter()
        splits = _read_cache(files, {"train": num_train, "val": num_val, "test": num_test})
        if splits is not None:
            _log_loaded("loaded cached", folder, splits, time.perf_counter() - t0)
            return splits

    logger.info(
        "ListOps: generating %d/%d/%d samples (%d < length < %d, max_depth=%d, max_args=%d, seed=%d)",
        num_train,
        num_val,
        num_test,
        min_length,
        max_length,
        max_depth,
        max_args,
        seed,
    )
    t0 = time.perf_counter()
    splits = generate_listops_splits(
        num_train,
        num_val,
        num_test,
        min_length=min_length,
        max_length=max_length,
        max_depth=max_depth,
        max_args=max_args,
        seed=seed,
    )
    gen_s = time.perf_counter() - t0
    folder.mkdir(parents=True, exist_ok=True)
    for split, p in files.items():
        write_listops_tsv(p, splits[split])
    logger.info(
        "ListOps: generated and cached %s (train/val/test = %d/%d/%d) in %.2f s (+ %.2f s writing)",
        folder,
        num_train,
        num_val,
        num_test,
        gen_s,
        time.perf_counter() - t0 - gen_s,
    )
    return splits


def load_listops_from_path(path: str | os.PathLike) -> dict[str, list[Row]]:
    """Load LRA's released ListOps files ``basic_{train,val,test}.tsv`` from a directory.

    Source: LRA release (``lra_release.gz``, folder ``lra_release/listops-1000``), read as in
    ``lra_benchmarks/listops/input_pipeline.py``.

    Args:
        path: directory holding ``basic_train.tsv``, ``basic_val.tsv`` and ``basic_test.tsv``.

    Returns:
        ``{"train": rows, "val": rows, "test": rows}`` with ``(source: str, label: int)`` rows.

    Raises:
        FileNotFoundError: if a file is missing; the message names the file, where it comes from
            and the config key (``data.path``) to set.
        ValueError: if a file is malformed (see :func:`read_listops_tsv`).
    """
    folder = Path(path).expanduser()
    files = _split_files(folder)
    for p in files.values():
        if not p.is_file():
            raise FileNotFoundError(
                f"ListOps file not found: {p}. {LRA_RELEASE_HINT}; extract the archive and set "
                "`data.path` to that listops-1000 folder, or set `data.path=null` to generate "
                "ListOps locally instead."
            )
    t0 = time.perf_counter()
    splits = {split: read_listops_tsv(p) for split, p in files.items()}
    _log_loaded("loaded LRA files from", folder, splits, time.perf_counter() - t0)
    return splits


# --------------------------------------------------------------------------------------------
# Lightning data module
# --------------------------------------------------------------------------------------------
class ListOpsDataModule(LongDocDataModule):
    """LightningDataModule for LRA ListOps (Tay et al. 2021, section 3.1; 10 classes).

    ``prepare_data()`` generates and caches the splits with LRA's generator
    (:func:`~longdoc.data.listops.load_or_generate_listops`, LRA ``lra_benchmarks/data/listops.py``)
    or checks that LRA's released files exist under ``path``. ``setup()`` loads the three splits and
    tokenises them as LRA's ``lra_benchmarks/listops/input_pipeline.py`` (optionally prepending
    ``<cls>``); token-id lists are stored unpadded (:class:`~longdoc.data.base.TokenSequenceDataset`)
    and padded per batch by :class:`~longdoc.data.base.PaddingCollator`.

    Batches (dicts), with ``N`` the longest sample in the batch (CLS included):
        ``input_ids`` LongTensor (B, N), ``padding_mask`` BoolTensor (B, N) (True = real token),
        ``global_attention_mask`` BoolTensor (B, N) (True at the CLS position 0; all False when
        ``add_cls=False``), ``labels`` LongTensor (B,) in 0..9.

    Args:
        path: directory with LRA's released ``basic_{train,val,test}.tsv`` (``lra_release.gz``,
            folder ``lra_release/listops-1000``); ``None`` generates the data instead.
        cache_dir: where generated splits are cached (relative paths are relative to the CWD).
        num_train, num_val, num_test: generated split sizes (> 0; ignored with ``path``).
        min_length, max_length: exclusive length bounds in tokens (LRA: 500, 2000; default 50, 500).
        max_depth, max_args: LRA tree parameters (10, 10).
        seed: generation seed, also the base seed of the batch shuffling.
        batch_size: maximum samples per batch (> 0).
        max_tokens_per_batch: optional cap on ``B * N`` per batch (>= the longest sample).
        num_workers: DataLoader workers.
        bucket_by_length: bucket training batches by length and sort evaluation batches by length;
            ``False`` gives random (train) / file-order (eval) batches.
        add_cls: prepend ``<cls>`` to every sample.

    Raises:
        ValueError: ``min_length >= max_length``; non-positive sizes, ``batch_size`` or
            ``max_tokens_per_batch``; negative ``num_workers``; at ``setup``, ``max_tokens_per_batch``
            smaller than the longest sample.
        FileNotFoundError: (``prepare_data``/``setup``) missing LRA files under ``path``.
    """

    display_name = "ListOps"

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike = "data/cache",
        num_train: int = 20000,
        num_val: int = 1000,
        num_test: int = 1000,
        min_length: int = 50,
        max_length: int = 500,
        max_depth: int = 10,
        max_args: int = 10,
        seed: int = 0,
        batch_size: int = 32,
        max_tokens_per_batch: int | None = None,
        num_workers: int = 0,
        bucket_by_length: bool = True,
        add_cls: bool = True,
    ):
        if min_length >= max_length:
            raise ValueError(
                f"min_length ({min_length}) must be < max_length ({max_length}) (lengths are kept when "
                "min_length < length < max_length); lower data.min_length or raise data.max_length"
            )
        for name, value in (
            ("num_train", num_train),
            ("num_val", num_val),
            ("num_test", num_test),
            ("max_depth", max_depth),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value}; set data.{name} > 0")
        if max_args < 2:
            raise ValueError(f"max_args must be >= 2 (an operator has at least 2 arguments), got {max_args}")
        super().__init__(batch_size=batch_size, max_tokens_per_batch=max_tokens_per_batch, num_workers=num_workers,
                         bucket_by_length=bucket_by_length, add_cls=add_cls, seed=seed)
        self.save_hyperparameters(logger=False)
        self.path, self.cache_dir = path, cache_dir
        self.num_train, self.num_val, self.num_test = num_train, num_val, num_test
        self.min_length, self.max_length, self.max_depth, self.max_args = min_length, max_length, max_depth, max_args

    # ----------------------------------------------------------------------------- properties
    @property
    def vocab_size(self) -> int:
        """Vocabulary size (18: ``<pad>``, ``<cls>``, ``<unk>`` + 15 ListOps tokens)."""
        return VOCAB_SIZE

    @property
    def num_classes(self) -> int:
        """Number of classes (10: the values 0-9)."""
        return NUM_CLASSES

    def _max_seq_len_bound(self) -> int:
        """``max_length + 1`` with ``add_cls`` (``max_length`` without): generated lengths are < ``max_length``."""
        return self.max_length + int(self.add_cls)

    # ----------------------------------------------------------------------------- data
    def _generation_kwargs(self) -> dict[str, Any]:
        """The generation settings (:func:`load_or_generate_listops`'s keyword arguments)."""
        keys = ("num_train", "num_val", "num_test", "min_length", "max_length", "max_depth", "max_args", "seed")
        return {k: getattr(self, k) for k in keys}

    def _load_rows(self) -> dict[str, list[Row]]:
        if self.path is not None:
            return load_listops_from_path(self.path)
        return load_or_generate_listops(self.cache_dir, **self._generation_kwargs())

    def prepare_data(self) -> None:
        """Generate and cache the splits (or check/read LRA's files under ``path``). Called by
        Lightning on one process per node.

        Raises:
            FileNotFoundError: missing LRA files under ``path``.
        """
        self._load_rows()

    def _build_datasets(self) -> dict[str, TokenSequenceDataset]:
        """Tokenise the three splits as LRA's ``lra_benchmarks/listops/input_pipeline.py``."""
        rows = self._load_rows()
        # One small uint8 array per sample keeps peak memory low (LRA size: ~10^8 tokens).
        return {split: TokenSequenceDataset([np.array(encode_listops(src, add_cls=self.add_cls), dtype=np.uint8)
                                             for src, _ in rows[split]], [y for _, y in rows[split]], dtype=np.uint8)
                for split in SPLITS}
