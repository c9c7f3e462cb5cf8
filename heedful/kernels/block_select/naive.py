"""Reference block selection: summaries, scores, top-k (PyTorch).

Two summaries of a block of keys (rows [start + i*bs, start + (i+1)*bs) of the buffer):
- "minmax" (Quest): elementwise min and max of the keys. q·k <= sum_d max(q_d min_d,
  q_d max_d) for every key of the block, an upper bound that a single sharp key (a needle,
  a fact the person cares about) cannot hide under. The default.
- "mean" (NSA's compressed keys without the learned MLP): q·mean(k), the block's average
  affinity; cheaper (one vector per block) but a lone strong key is diluted by its
  neighbours.
- "fla" (flash-linear-attention's naive NSA top-k, `naive_nsa_topk`): the same mean-pooled
  keys, but each query head's scores go through a softmax over the blocks (scaled like
  attention) and the probabilities are averaged over the group's heads; the pool's first
  block is always selected (`select_topk_blocks`; fla also forces the query's own block, which
  in heedful is the window, always attended).
Scores are summed over the query heads of each KV group (and over the queries of a chunk),
so all heads that share a KV head share its selection, as NSA does for GQA ("fla": averaged,
which ranks the same).
"""

from __future__ import annotations

import torch

MAX_BLOCKS = 4096  # the Triton top-k sorts all of a head's scores in one program; past it, the reference

def block_summaries_naive(k, block_size: int, kind: str = "minmax", start: int = 0, end: int | None = None):
    """k [B, Hkv, N, D] -> (lo, hi), each [B, Hkv, nb, D] fp32: the blocks' min and max
    ("minmax"), or their mean twice ("mean", "fla": one representation for every kind; the
    two are one tensor)."""
    end = k.shape[2] if end is None else end
    x = k[:, :, start:end].float()
    b, h, n, d = x.shape
    nb = -(-n // block_size)
    pad = nb * block_size - n
    if kind in ("mean", "fla"):
        xs = torch.nn.functional.pad(x, (0, 0, 0, pad)).reshape(b, h, nb, block_size, d).sum(3)
        counts = torch.full((nb,), block_size, dtype=torch.float32, device=k.device)
        if pad:
            counts[-1] = block_size - pad
        mean = xs / counts[:, None]
        return mean, mean
    if kind == "minmax":
        lo = torch.nn.functional.pad(x, (0, 0, 0, pad), value=float("inf")).reshape(b, h, nb, block_size, d).amin(3)
        hi = torch.nn.functional.pad(x, (0, 0, 0, pad), value=float("-inf")).reshape(b, h, nb, block_size, d).amax(3)
        return lo, hi
    raise ValueError(f"unknown summary {kind!r} (expected 'minmax', 'mean' or 'fla')")


def score_blocks_naive(q, summaries, kind: str = "minmax", scale: float | None = None):
    """q [B, Hq, L, D], summaries (lo, hi) -> [B, Hkv, nb] fp32, summed over the group's
    heads and the queries ("fla": each row's softmax over the blocks, averaged over the
    rows; `scale` defaults to D ** -0.5, attention's). The twin of score.score_blocks_triton."""
    lo, hi = summaries
    hkv = lo.shape[1]
    b, hq, length, d = q.shape
    qg = q.float().reshape(b, hkv, (hq // hkv) * length, d)
    if kind == "mean":
        return torch.einsum("bhrd,bhnd->bhn", qg, lo.float())
    if kind == "fla":
        logits = torch.einsum("bhrd,bhnd->bhrn", qg, lo.float()) * (d ** -0.5 if scale is None else scale)
        return logits.softmax(-1).mean(2)
    bound = torch.maximum(qg[:, :, :, None, :] * lo[:, :, None], qg[:, :, :, None, :] * hi[:, :, None])
    return bound.sum(-1).sum(2)


def topk_rows_naive(scores, start: int, end: int, block_size: int, topk: int):
    """scores [B, Hkv, nb] -> the rows of the top-k blocks [B, Hkv, topk * bs] int32 (sorted,
    -1 padded); ties go to the lowest blocks. The twin of topk.topk_rows_triton."""
    kk = min(topk, scores.shape[-1])
    # a stable descending sort: torch.topk's pick among equal scores is unspecified (a zero
    # query ties every block), the Triton kernel's is the lowest blocks
    blocks = scores.sort(dim=-1, descending=True, stable=True).indices[..., :kk]
    return blocks_to_rows(blocks, start, end, block_size, topk)


def blocks_to_rows(blocks, start: int, end: int, block_size: int, topk: int):
    """Chosen block numbers [B, Hkv, k] -> row indices [B, Hkv, topk * bs] int32, sorted,
    rows past `end` and missing blocks as -1 at the end. Sorting the k block numbers sorts
    the rows (blocks do not overlap), and only the last block of the range can be short, so
    its -1s already sit after every real row: no sort over k * bs rows."""
    b, h, kk = blocks.shape
    blocks = blocks.sort(-1).values
    offs = torch.arange(block_size, device=blocks.device)
    rows = start + blocks[..., None] * block_size + offs  # [B, Hkv, k, bs]
    rows = torch.where(rows < end, rows, -1).reshape(b, h, kk * block_size).to(torch.int32)
    if kk < topk:
        rows = torch.cat([rows, rows.new_full((b, h, (topk - kk) * block_size), -1)], dim=-1)
    return rows


def force_first_block(scores):
    """The "fla" rule: the pool's first block is always selected (its score set above any
    probability; the one-launch top-k breaks ties towards low blocks)."""
    scores = scores.clone()
    scores[..., 0] = float("inf")
    return scores
