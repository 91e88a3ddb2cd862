"""Independent dense references: plain masked softmax attention written from the papers' formulas."""

import torch


def dense_attention(q, k, v, mask):
    """softmax(q k^T / sqrt(d) masked) v with a boolean (B, [H,] N, N) mask; rows with no target -> 0."""
    if mask.dim() == 3:
        mask = mask[:, None]
    s = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    s = s.masked_fill(~mask, float("-inf"))
    p = torch.softmax(s, dim=-1).nan_to_num(0.0)
    return p @ v, torch.logsumexp(s, dim=-1)


def longformer_mask(n, window, global_mask, padding_mask):
    """Query i attends key j iff key j real and (|i-j| <= window or i global or j global)."""
    i = torch.arange(n)
    band = (i[:, None] - i[None, :]).abs() <= window
    g = global_mask & padding_mask
    m = band[None] | g[:, :, None] | g[:, None, :]
    return m & padding_mask[:, None, :]


def self_masked(mask):
    """Reformer's rule: mask j == i unless i has no other target."""
    n = mask.shape[-1]
    eye = torch.eye(n, dtype=torch.bool)
    others = mask & ~eye
    has_other = others.any(dim=-1, keepdim=True)
    return others | (eye & ~has_other)


def lsh_round_masks(buckets, n, bucket_size, real, *, before=1, after=0, causal=False, across=True):
    """(R, B, H, n, n) bool: which keys each query attends in each LSH round, built in plain Python from the
    buckets (B, H, R, n_pad): sort by (bucket, position), cut chunks of ``bucket_size``, look ``before`` chunks back
    and ``after`` ahead in the same round; a query attends itself only when it has no other target (Kitaev et al.
    2020, section 2). ``real``: (B, n) nested lists / bool tensor of real keys."""
    b, h, r, n_pad = buckets.shape
    masks = torch.zeros(r, b, h, n, n, dtype=torch.bool)
    for ri in range(r):
        for bi in range(b):
            for hi in range(h):
                bk = buckets[bi, hi, ri].tolist()
                order = sorted(range(n_pad), key=lambda j: (bk[j], j))
                chunk = [0] * n_pad
                for slot, p in enumerate(order):
                    chunk[p] = slot // bucket_size
                for i in range(n):
                    keys = [j for j in range(n)
                            if j != i and real[bi][j] and -before <= chunk[j] - chunk[i] <= after
                            and (not causal or j < i) and (across or bk[j] == bk[i])]
                    for j in keys or [i]:  # itself only when there is no other target
                        masks[ri, bi, hi, i, j] = True
    return masks
