"""Rotary.rotate_range (cached tables, the cache's per-step path) against Rotary.rotate
(positions computed per call) and against the definition of a rotation."""

from __future__ import annotations

import pytest
import torch

from heedful.selector.rope import Rotary


def _rotary(half: int) -> Rotary:
    return Rotary(1.0 / (10000 ** (torch.arange(half, dtype=torch.float32) / half)))


@pytest.mark.parametrize("dim,half", [(16, 8), (16, 2)])  # full and partial (a quarter) rotary
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotate_range_equals_rotate(dim, half, dtype):
    rot = _rotary(half)
    x = torch.randn(1, 3, 40, dim).to(dtype)
    for start in (0, 7, 300, 1000):  # beyond the first table: it grows
        pos = torch.arange(start, start + 40)
        torch.testing.assert_close(rot.rotate_range(x, start), rot.rotate(x, pos), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(rot.rotate_range(x, start, inverse=True), rot.rotate(x, -pos),
                                   atol=1e-5, rtol=1e-5)
    assert rot.rotate_range(x, 0).dtype == dtype
    # the pass-through dims are untouched
    assert torch.equal(rot.rotate_range(x, 5)[..., 2 * half:], x[..., 2 * half:])


def test_inverse_undoes_and_rotations_compose():
    rot = _rotary(4)
    x = torch.randn(2, 2, 10, 8, dtype=torch.float64).float()
    torch.testing.assert_close(rot.rotate_range(rot.rotate_range(x, 50), 50, inverse=True), x,
                               atol=1e-5, rtol=1e-5)
    # a dot product depends on the distance only: q at p, k at p - 3, for any p
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    dots = [(rot.rotate_range(q, p) * rot.rotate_range(k, p - 3)).sum() for p in (3, 40, 700)]
    torch.testing.assert_close(torch.stack(dots), dots[0].expand(3), atol=1e-4, rtol=1e-4)
