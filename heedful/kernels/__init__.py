"""heedful.kernels: sparse attention over selected KV rows and NSA-style block selection.

Each Triton kernel has its PyTorch reference beside it (naive.py), with one signature (the
twins: sparse_attention.DECODE / PREFILL, block_select.SCORE / TOPK_ROWS). The public
functions pick a backend per call (`backend=`; Triton on CUDA, the reference elsewhere;
HEEDFUL_KERNELS=reference forces the reference; Triton on CPU runs under TRITON_INTERPRET=1,
which is how CI tests the kernels). An engine picks once, `backend_for(device)`, and calls
the `Kernels` it gets. This package imports nothing else of heedful.
"""

from __future__ import annotations

from dataclasses import dataclass

from heedful.kernels._triton import HAS_TRITON, pick_backend
from heedful.kernels.block_select import (BlockSummaries, block_summaries, score_blocks,
                                          select_rows, select_topk_blocks)
from heedful.kernels.sparse_attention import DECODE, PREFILL, sparse_attention, sparse_decode, sparse_prefill

__all__ = ["HAS_TRITON", "BlockSummaries", "Kernels", "backend_for", "block_summaries", "score_blocks",
           "select_topk_blocks", "sparse_attention", "sparse_decode", "sparse_prefill"]


@dataclass(frozen=True)
class Kernels:
    """The kernels of one backend ("triton" or "reference"), called without re-choosing and
    without the public functions' input checks (the engine's shapes are its own)."""

    name: str

    def sparse_decode(self, q, k, v, indices, scale: float, extra_row: int = -1):
        return DECODE[self.name](q, k, v, indices, scale, extra_row)[0]

    def sparse_prefill(self, q, k, v, indices, scale: float):
        return PREFILL[self.name](q, k, v, indices, scale)[0]

    def sparse_attention(self, q, k, v, indices, scale: float):
        """indices select past rows [0, N - L); the chunk's own rows are read causally."""
        if q.shape[2] == 1:
            return self.sparse_decode(q, k, v, indices, scale, k.shape[2] - 1)
        return self.sparse_prefill(q, k, v, indices, scale)

    def select_topk_blocks(self, q, k, start: int, end: int, block_size: int, topk: int, *, kind: str = "minmax",
                           summaries=None, scale: float | None = None):
        return select_rows(self.name, q, k, start, end, block_size, topk, kind, summaries, scale)


def backend_for(device, name: str | None = None) -> Kernels:
    """The kernels to use on `device`: `name` ("triton" or "reference"), or the default
    (pick_backend: Triton on CUDA where it imports, the reference elsewhere)."""
    return Kernels(pick_backend(device, name))
