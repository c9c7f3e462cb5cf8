"""heedful.kernels: sparse attention over selected KV rows and NSA-style block selection.

Each Triton kernel has its PyTorch reference beside it (naive.py). Triton is used on CUDA,
the reference elsewhere; HEEDFUL_KERNELS=reference forces the reference, backend="triton"
forces Triton (on CPU under TRITON_INTERPRET=1, which is how CI tests the kernels). This
package imports nothing else of heedful.
"""

from heedful.kernels._triton import HAS_TRITON
from heedful.kernels.block_select import BlockSummaries, block_summaries, score_blocks, select_topk_blocks
from heedful.kernels.sparse_attention import sparse_attention, sparse_decode, sparse_prefill

__all__ = ["HAS_TRITON", "BlockSummaries", "block_summaries", "score_blocks", "select_topk_blocks", "sparse_attention",
           "sparse_decode", "sparse_prefill"]
