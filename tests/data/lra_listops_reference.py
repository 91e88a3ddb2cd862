"""A literal transcription of LRA's ListOps generator and evaluator (``lra_benchmarks/data/listops.py``:
``generate_tree``, ``to_string``, ``to_value``), the reference the production generator
(:func:`longdoc.data.listops.make_bounded_generator`) and tree functions are tested against.

Random numbers are drawn in LRA's order from the ``random.Random`` passed in; trees are LRA's
nested tuples (an operator node is ``((((op, v0), v1), ...), vk), "]")``, a leaf an ``int`` in 0..9).
"""

from __future__ import annotations

import numpy as np

REF_OPS = ["[MIN", "[MAX", "[MED", "[SM"]


def lra_generate_tree(rng, depth, max_depth, max_args):
    """LRA's ``generate_tree(depth, max_depth, max_args)`` drawing from ``rng``: ``(tree, length)``."""
    r = rng.random() if depth < max_depth else 1
    if r > 0.25:
        return rng.choice(range(10)), 1
    length = 2
    num_values = rng.randint(2, max_args)
    values = []
    for _ in range(num_values):
        sub_t, sub_l = lra_generate_tree(rng, depth + 1, max_depth, max_args)
        values.append(sub_t)
        length += sub_l
    op = rng.choice(REF_OPS)
    t = (op, values[0])
    for value in values[1:]:
        t = (t, value)
    t = (t, "]")
    return t, length


def lra_to_string(t):
    """LRA's ``to_string(t, parens=True)``: the fully parenthesised source string."""
    if isinstance(t, str):
        return t
    if isinstance(t, int):
        return str(t)
    return "( " + lra_to_string(t[0]) + " " + lra_to_string(t[1]) + " )"


def lra_to_value(t):
    """LRA's ``to_value(t)``: the label (``int`` in 0..9) of a complete tree."""
    if not isinstance(t, tuple):
        return t
    left = lra_to_value(t[0])
    right = lra_to_value(t[1])
    if left in REF_OPS:
        return (left, [right])
    elif right == "]":
        op, args = left
        return {
            "[MIN": lambda a: min(a),
            "[MAX": lambda a: max(a),
            "[MED": lambda a: int(np.median(a)),
            "[SM": lambda a: int(np.sum(a) % 10),
        }[op](args)
    elif isinstance(left, tuple):
        return (left[0], left[1] + [right])
