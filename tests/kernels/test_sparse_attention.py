"""Triton sparse attention against its PyTorch reference (CPU: TRITON_INTERPRET=1; CUDA
too when present). fp32: close to the reference. bf16/fp16: flash-attention's rule, the
kernel's error against an fp32 reference is at most twice the error of the same-precision
PyTorch computation (plus a small absolute floor)."""

from __future__ import annotations

import os

import pytest
import torch

from heedful.kernels import sparse_attention, sparse_decode, sparse_prefill
from heedful.kernels.sparse_attention.decode import sparse_decode_triton
from heedful.kernels.sparse_attention.naive import sparse_attention_naive

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
needs_triton = pytest.mark.skipif(not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1",
                                  reason="Triton on CPU needs TRITON_INTERPRET=1 (./test.sh sets it)")


def _indices(b, hkv, k, n, gen, *, dup=False, pad=0.0):
    idx = torch.randint(0, n, (b, hkv, k), generator=gen, dtype=torch.int32) if n else \
        torch.full((b, hkv, k), -1, dtype=torch.int32)
    if dup and k > 1:
        idx[..., 1::3] = idx[..., ::3][..., : idx[..., 1::3].shape[-1]]
    if pad:
        idx[torch.rand(idx.shape, generator=gen) < pad] = -1
    return idx


def _case(device, dtype, b, hq, hkv, n, d, length, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, hq, length, d, generator=gen).to(device, dtype)
    k = torch.randn(b, hkv, n, d, generator=gen).to(device, dtype)
    v = torch.randn(b, hkv, n, d, generator=gen).to(device, dtype)
    return q, k, v, gen


@needs_triton
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("group", [1, 2, 4, 8])
@pytest.mark.parametrize("k_frac", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("n", [1, 37, 130])
def test_decode_fp32_matches_reference(device, group, k_frac, n):
    q, k, v, gen = _case(device, torch.float32, 2, 2 * group, 2, n, 32, 1, seed=n + group)
    kk = int(k_frac * n)
    idx = _indices(2, 2, kk, n, gen, dup=True, pad=0.2).to(device)  # unsorted, duplicated, padded
    ref_o, ref_lse = sparse_attention_naive(q, k, v, idx, 0.3)
    o, lse = sparse_decode(q, k, v, idx, 0.3, return_lse=True, backend="triton")
    assert not torch.isnan(o).any()
    torch.testing.assert_close(o, ref_o, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(lse, ref_lse, atol=1e-5, rtol=1e-4)


@needs_triton
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("d", [64, 80, 96, 128, 256])
def test_decode_head_dims(device, d):
    q, k, v, gen = _case(device, torch.float32, 1, 4, 2, 70, d, 1, seed=d)
    idx = _indices(1, 2, 50, 70, gen, pad=0.1).to(device)
    torch.testing.assert_close(sparse_decode(q, k, v, idx, d ** -0.5, backend="triton"),
                               sparse_attention_naive(q, k, v, idx, d ** -0.5)[0], atol=1e-5, rtol=1e-4)


@needs_triton
@pytest.mark.parametrize("device", DEVICES)
def test_empty_selection_and_fully_masked_split_give_zeros_not_nan(device):
    q, k, v, gen = _case(device, torch.float32, 1, 4, 2, 300, 32, 1)
    empty = torch.full((1, 2, 40), -1, dtype=torch.int32, device=device)
    o, lse = sparse_decode(q, k, v, empty, 0.2, return_lse=True, backend="triton")
    assert torch.equal(o, torch.zeros_like(o)) and torch.isneginf(lse).all()
    # 4 splits of 150 rows: the first three are all padding, the last one is not
    idx = torch.full((1, 2, 600), -1, dtype=torch.int32, device=device)
    idx[..., 500:] = torch.arange(100, dtype=torch.int32, device=device)
    o, lse = sparse_decode_triton(q, k, v, idx, 0.2, num_splits=4)
    ref_o, ref_lse = sparse_attention_naive(q, k, v, idx, 0.2)
    assert not torch.isnan(o).any()
    torch.testing.assert_close(o, ref_o, atol=1e-5, rtol=1e-4)


@needs_triton
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("splits", [1, 3, 7])
def test_split_k_merge_is_exact(device, splits):
    q, k, v, gen = _case(device, torch.float32, 1, 8, 2, 500, 64, 1, seed=splits)
    idx = _indices(1, 2, 450, 500, gen, pad=0.3).to(device)
    o, lse = sparse_decode_triton(q, k, v, idx, 0.125, num_splits=splits)
    ref_o, ref_lse = sparse_attention_naive(q, k, v, idx, 0.125)
    torch.testing.assert_close(o, ref_o, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(lse, ref_lse, atol=1e-5, rtol=1e-4)


@needs_triton
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("group", [1, 2, 4, 8])
@pytest.mark.parametrize("length", [1, 5, 33])
@pytest.mark.parametrize("k_frac", [0.0, 0.5, 1.0])
def test_prefill_fp32_matches_reference(device, group, length, k_frac):
    n = 71 + length
    q, k, v, gen = _case(device, torch.float32, 2, 2 * group, 2, n, 32, length, seed=length * group)
    kk = int(k_frac * (n - length))
    idx = _indices(2, 2, kk, n - length, gen, dup=True, pad=0.2).to(device)
    ref_o, ref_lse = sparse_attention_naive(q, k, v, idx, 0.3, n_causal=length)
    o, lse = sparse_prefill(q, k, v, idx, 0.3, return_lse=True, backend="triton")
    torch.testing.assert_close(o, ref_o, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(lse, ref_lse, atol=1e-5, rtol=1e-4)


def _err(x, ref):
    return (x.float() - ref.float()).abs().max().item()


@needs_triton
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("length", [1, 9])
def test_half_precision_error_at_most_twice_pytorch(device, dtype, length):
    n = 150
    q, k, v, gen = _case(device, dtype, 1, 8, 2, n, 64, length, seed=3)
    idx = _indices(1, 2, 100, n - length, gen, pad=0.1).to(device)
    ref32 = sparse_attention_naive(q.float(), k.float(), v.float(), idx, 0.125, n_causal=length)[0]
    # the same computation in the low precision, in PyTorch: gather + matmuls in dtype
    g = 4
    kg = torch.gather(k, 2, idx.clamp(min=0).long()[..., None].expand(-1, -1, -1, 64))
    vg = torch.gather(v, 2, idx.clamp(min=0).long()[..., None].expand(-1, -1, -1, 64))
    kc, vc = k[:, :, n - length:], v[:, :, n - length:]
    kk = torch.cat([kg, kc], 2).repeat_interleave(g, 1)
    vv = torch.cat([vg, vc], 2).repeat_interleave(g, 1)
    mask = torch.cat([(idx >= 0)[:, :, None, :].expand(-1, -1, length, -1),
                      torch.ones(length, length, dtype=torch.bool, device=device).tril().expand(1, 2, -1, -1)], -1)
    s = (q @ kk.transpose(-1, -2)) * 0.125
    s = s.masked_fill(~mask.repeat_interleave(g, 1), float("-inf"))
    low = (s.float().softmax(-1).to(dtype) @ vv)
    out = sparse_attention(q, k, v, idx, 0.125, backend="triton") if length > 1 else \
        sparse_attention(q, k, v, idx[..., :], 0.125, backend="triton")
    assert _err(out, ref32) <= 2 * _err(low, ref32) + 1e-3


@needs_triton
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kk", [0, 1, 63, 64, 200])
def test_sparse_attention_decode_triton_matches_reference(device, kk):
    """L = 1 through the engine's entry: the own row is appended inside the kernel."""
    n = 230
    q, k, v, gen = _case(device, torch.float32, 1, 8, 2, n, 32, 1, seed=kk)
    idx = _indices(1, 2, kk, n - 1, gen, dup=True, pad=0.2).to(device)
    o, lse = sparse_attention(q, k, v, idx, 0.2, return_lse=True, backend="triton")
    ref_o, ref_lse = sparse_attention(q, k, v, idx, 0.2, return_lse=True, backend="reference")
    torch.testing.assert_close(o, ref_o, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(lse, ref_lse, atol=1e-5, rtol=1e-4)
    own = torch.full((1, 2, 1), n - 1, dtype=torch.int32, device=device)
    torch.testing.assert_close(o, sparse_attention_naive(q, k, v, torch.cat([idx, own], -1), 0.2)[0],
                               atol=1e-5, rtol=1e-4)


def test_sparse_attention_decode_reads_its_own_row():
    q, k, v, gen = _case("cpu", torch.float32, 1, 4, 2, 20, 16, 1)
    idx = torch.tensor([[[0, 3, -1], [5, -1, -1]]], dtype=torch.int32)
    o = sparse_attention(q, k, v, idx, 0.25, backend="reference")
    own = torch.full((1, 2, 1), 19, dtype=torch.int32)
    torch.testing.assert_close(o, sparse_attention_naive(q, k, v, torch.cat([idx, own], -1), 0.25)[0])


@pytest.mark.parametrize("bad,match", [
    (lambda i: i.to(torch.int64), "int32"),
    (lambda i: i[0], r"\[B, Hkv, K\]"),
    (lambda i: i + 100, "out of range"),
    (lambda i: i - 5, "out of range"),
])
def test_bad_indices_are_refused_before_launch(bad, match):
    q, k, v, gen = _case("cpu", torch.float32, 1, 4, 2, 20, 16, 1)
    idx = torch.zeros(1, 2, 3, dtype=torch.int32)
    with pytest.raises(ValueError, match=match):
        sparse_decode(q, k, v, bad(idx), 0.25)


def test_mismatched_shapes_and_dtypes_are_refused():
    q, k, v, gen = _case("cpu", torch.float32, 1, 4, 3, 20, 16, 1)
    idx = torch.zeros(1, 3, 3, dtype=torch.int32)
    with pytest.raises(ValueError, match="multiple of KV heads"):
        sparse_decode(q, k, v, idx, 0.25)
    q, k, v, gen = _case("cpu", torch.float32, 1, 4, 2, 20, 16, 1)
    with pytest.raises(ValueError, match="dtypes"):
        sparse_decode(q, k.half(), v, torch.zeros(1, 2, 3, dtype=torch.int32), 0.25)
