"""`heedful bench kernels`: sparse decode against dense and sparse alternatives, one run.

For B=1, Hq=32, Hkv=8, D=128, bf16 and each (n, k): heedful's Triton sparse decode over k
selected rows per KV head, dense SDPA over all n rows (flash backend), gather + SDPA over
the k rows, and FlexAttention with a block mask of k/128 blocks; µs, GB/s over the bytes
actually read, share of the GPU's peak memory bandwidth, and the NSA-style selection
(scoring maintained block summaries + top-k + rows) time relative to the decode.

Timing: triton.testing.do_bench, which flushes L2 (writes a 256 MB buffer) before every
call, so every figure is cold-L2. By default each function is captured once in a CUDA graph
and do_bench times the graph's replay: what is measured is the GPU work, not Python's launch
overhead (decode-sized kernels run in a few µs, well under the launch cost of an eager
call). `--eager` times plain calls instead, launch overhead included; the `eager µs` column
always shows heedful's decode called eagerly.
`--cpu-smoke` runs one tiny shape through the same code on CPU (reference and interpreted
Triton) to check the command itself; its timings mean nothing. `--sweep` times the decode
kernel's tile/warps/stages/splits choices at each (n, k) instead of the table.
"""

from __future__ import annotations

import itertools
import os
import time

import click
import torch

from heedful.errors import HeedfulError

PEAK_GBS = {"H100 SXM": 3350, "H100 80GB HBM3": 3350, "H100 PCIe": 2000, "H100 NVL": 3900, "H200": 4800,
            "A100-SXM4-80GB": 2039, "A100-SXM4-40GB": 1555, "A100-PCIE": 1935}


def _peak(name: str, override: float | None) -> float | None:
    if override:
        return override
    for key, gbs in PEAK_GBS.items():
        if key.lower() in name.lower():
            return gbs
    return None


def _graphed(fn):
    """fn captured in a CUDA graph (after one warm call that compiles); None if it cannot be."""
    try:
        fn()
        torch.cuda.synchronize()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn()  # warm-up on the capture stream, as torch's docs ask
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        torch.cuda.synchronize()
        return graph.replay
    except Exception:  # noqa: BLE001 - not capturable (host sync, dynamic shapes): time it eagerly
        torch.cuda.synchronize()
        return None


def _bench(fn, device, rep: int, graphs: bool = True):
    """µs per call, L2 flushed before each (do_bench); CPU: a plain wall-clock mean."""
    if device.type == "cuda":
        import triton.testing

        run = (_graphed(fn) if graphs else None) or fn
        return 1000 * triton.testing.do_bench(run, warmup=10, rep=rep)  # ms -> µs
    fn()
    t0 = time.perf_counter()
    for _ in range(3):
        fn()
    return 1e6 * (time.perf_counter() - t0) / 3


def _unique_indices(b, hkv, n, k, device, pattern: str = "random"):
    """k distinct rows per KV head, sorted (what the engine's merge produces). "random":
    rows anywhere (the worst case for DRAM locality); "blocks": runs of 64 rows (what pins,
    the window and NSA blocks give)."""
    if pattern == "blocks" and k % 64 == 0 and n % 64 == 0:
        starts = [torch.randperm(n // 64, device=device)[: k // 64].sort().values * 64 for _ in range(b * hkv)]
        rows = torch.stack([(st[:, None] + torch.arange(64, device=device)).flatten() for st in starts])
    else:
        rows = torch.stack([torch.randperm(n, device=device)[:k].sort().values for _ in range(b * hkv)])
    return rows.reshape(b, hkv, k).to(torch.int32)


def _flex(q, k, v, sel_blocks, block):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    n = k.shape[2]
    allowed = torch.zeros(k.shape[1], n // block, dtype=torch.bool, device=q.device)
    allowed.scatter_(1, sel_blocks, True)
    group = q.shape[1] // k.shape[1]

    def mask_mod(b, h, q_idx, kv_idx):
        return allowed[h // group, kv_idx // block]

    bm = create_block_mask(mask_mod, B=None, H=q.shape[1], Q_LEN=1, KV_LEN=n, device=q.device, BLOCK_SIZE=block)
    fn = torch.compile(flex_attention)
    return lambda: fn(q, k, v, block_mask=bm, enable_gqa=True)


def _sweep(q, k, v, idx, scale, rep, graphs):
    from heedful.kernels.sparse_attention.decode import _num_splits, sparse_decode_triton

    auto = _num_splits(idx.shape[-1], k.shape[0] * k.shape[1], q.device)
    best = []
    for block_n, warps, stages, mult in itertools.product((32, 64, 128), (4, 8), (1, 2, 3), (1, 2)):
        splits = max(1, int(auto * mult))
        try:
            t = _bench(lambda: sparse_decode_triton(q, k, v, idx, scale, num_splits=splits, block_n=block_n,
                                                    num_warps=warps, num_stages=stages), q.device, rep, graphs)
        except Exception as e:  # noqa: BLE001 - an infeasible config (shared memory): skip it
            click.echo(f"    block_n={block_n} warps={warps} stages={stages} splits={splits}: {type(e).__name__}")
            continue
        best.append((t, block_n, warps, stages, splits))
    best.sort()
    for t, block_n, warps, stages, splits in best[:5]:
        click.echo(f"    {t:8.1f} µs  block_n={block_n} warps={warps} stages={stages} splits={splits}")
    default = _bench(lambda: sparse_decode_triton(q, k, v, idx, scale), q.device, rep, graphs)
    click.echo(f"    default {default:8.1f} µs (splits={auto})")


@click.command()
@click.option("--n", "ns", default="8192,32768,131072", show_default=True, help="Cache lengths, comma-separated.")
@click.option("--k", "ks", default="256,2048,16384", show_default=True, help="Selected rows, comma-separated.")
@click.option("--dtype", type=click.Choice(["bfloat16", "float16"]), default="bfloat16", show_default=True)
@click.option("--rep", type=int, default=100, show_default=True, help="do_bench repetition time, ms.")
@click.option("--warmup", type=int, default=10, show_default=True, help="do_bench warm-up time, ms.")
@click.option("--block-size", type=int, default=64, show_default=True, help="NSA selection block size (rows).")
@click.option("--peak-gbs", type=float, default=None, help="Peak memory bandwidth, GB/s (default: by GPU name).")
@click.option("--pattern", type=click.Choice(["random", "blocks"]), default="random", show_default=True,
              help="Selected rows: anywhere (worst case), or in runs of 64 rows (pins, window, NSA blocks).")
@click.option("--eager", is_flag=True, help="Time eager calls, not CUDA-graph replays (launch overhead included).")
@click.option("--sweep", is_flag=True, help="Time the decode kernel's launch choices instead of the table.")
@click.option("--cpu-smoke", is_flag=True, help="Tiny shapes on CPU to check the command (timings meaningless).")
@click.option("--skip-flex", is_flag=True, help="Leave FlexAttention out (its torch.compile takes a while).")
def kernels(ns, ks, dtype, rep, warmup, block_size, peak_gbs, pattern, eager, sweep, cpu_smoke, skip_flex=False):
    """Sparse decode µs, GB/s and % of peak bandwidth vs dense SDPA, gather+SDPA, FlexAttention."""
    from heedful.kernels import BlockSummaries, select_topk_blocks, sparse_decode

    if cpu_smoke:
        device, b, hq, hkv, d, dt = torch.device("cpu"), 1, 8, 2, 64, torch.float32
        ns_, ks_ = [512], [64, 256]
        backend = "triton" if os.environ.get("TRITON_INTERPRET") == "1" else "reference"
        name = f"CPU smoke test ({backend}); timings meaningless"
    else:
        if not torch.cuda.is_available():
            raise HeedfulError("bench kernels needs a CUDA GPU (use --cpu-smoke to check the command on CPU)")
        device, b, hq, hkv, d = torch.device("cuda"), 1, 32, 8, 128
        dt = getattr(torch, dtype)
        ns_ = [int(x) for x in ns.split(",")]
        ks_ = [int(x) for x in ks.split(",")]
        backend, name = "triton", torch.cuda.get_device_name()
    graphs = not eager

    def bench(fn):
        if device.type != "cuda":
            return _bench(fn, device, rep)
        import triton.testing

        run = (_graphed(fn) if graphs else None) or fn
        return 1000 * triton.testing.do_bench(run, warmup=warmup, rep=rep)

    peak = None if cpu_smoke else _peak(name, peak_gbs)
    click.echo(f"device: {name}; B={b} Hq={hq} Hkv={hkv} D={d} {str(dt).replace('torch.', '')}; "
               f"peak {peak or '?'} GB/s; rows {pattern}; " + ("timed eagerly" if cpu_smoke else
               f"timed {'eagerly' if eager else 'as CUDA-graph replays'}, L2 flushed before each call"))
    hdr = f"{'n':>7} {'k':>6} | {'sparse µs':>9} {'GB/s':>7} {'%peak':>6} {'eager µs':>9} | {'dense µs':>9} " \
          f"{'x':>6} | {'gather µs':>9} {'x':>6} | {'flex µs':>9} {'x':>6} | {'select µs':>9} {'%':>5} {'floor':>5}"
    if not sweep:
        click.echo(hdr)
    elem = torch.tensor([], dtype=dt).element_size()
    rows = []  # the table's figures, returned to a caller (heedful bench gpu)
    for n in ns_:
        torch.manual_seed(0)
        q = torch.randn(b, hq, 1, d, device=device, dtype=dt)
        k = torch.randn(b, hkv, n, d, device=device, dtype=dt)
        v = torch.randn(b, hkv, n, d, device=device, dtype=dt)
        scale = d ** -0.5
        for kk in ks_:
            if kk > n:
                continue
            idx = _unique_indices(b, hkv, n, kk, device, pattern)
            if sweep:
                click.echo(f"n={n} k={kk}")
                _sweep(q, k, v, idx, scale, rep, graphs)
                continue

            def sparse():
                return sparse_decode(q, k, v, idx, scale, backend=backend, check_range=False)

            t_sparse = bench(sparse)
            t_eager = _bench(sparse, device, rep, graphs=False) if device.type == "cuda" else t_sparse
            read = b * hkv * kk * d * 2 * elem + q.numel() * elem + idx.numel() * 4
            gbs = read / t_sparse / 1e3
            if device.type == "cuda":
                from torch.nn.attention import SDPBackend, sdpa_kernel

                def dense():
                    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                        return torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)
            else:
                def dense():
                    return torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)
            try:
                t_dense = bench(dense)
            except RuntimeError:  # flash unavailable for this shape: let SDPA choose
                t_dense = bench(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True))

            def gather():
                ii = idx.long()[..., None].expand(-1, -1, -1, d)
                return torch.nn.functional.scaled_dot_product_attention(
                    q, torch.gather(k, 2, ii), torch.gather(v, 2, ii), enable_gqa=True)

            t_gather = bench(gather)
            t_flex = None
            if device.type == "cuda" and n % 128 == 0 and kk >= 128 and not skip_flex:
                try:
                    blocks = torch.stack([torch.randperm(n // 128, device=device)[: kk // 128] for _ in range(hkv)])
                    t_flex = bench(_flex(q, k, v, blocks, 128))
                except Exception as e:  # noqa: BLE001 - report, do not abort the table
                    click.echo(f"  (flex attention unavailable: {type(e).__name__}: {str(e).splitlines()[0][:80]})")
            # the per-step selection: summaries are maintained as rows arrive (BlockSummaries),
            # so a step scores nb summaries, takes the top-k and expands them to rows
            summ = BlockSummaries(block_size, "minmax").update(k, 0, n)
            topk = max(1, kk // block_size)
            t_sel = bench(lambda: select_topk_blocks(q, k, 0, n, block_size, topk, backend=backend, summaries=summ))
            # what the scoring must read (min and max of every block) over what the decode reads
            floor = (2 * b * hkv * summ.num_blocks * d * elem + q.numel() * elem) / read
            rows.append({"n": n, "k": kk, "sparse_us": t_sparse, "gbs": gbs,
                         "peak_pct": 100 * gbs / peak if peak else None, "eager_us": t_eager, "dense_us": t_dense, "gather_us": t_gather, "flex_us": t_flex,
                         "select_us": t_sel, "select_pct": 100 * t_sel / t_sparse, "floor_pct": 100 * floor})
            flex_s = f"{t_flex:>9.1f} {t_flex / t_sparse:>5.1f}x" if t_flex else f"{'-':>9} {'-':>6}"
            pct = f"{100 * gbs / peak:>5.0f}%" if peak else f"{'-':>6}"
            click.echo(f"{n:>7} {kk:>6} | {t_sparse:>9.1f} {gbs:>7.0f} {pct} {t_eager:>9.1f} | {t_dense:>9.1f} "
                       f"{t_dense / t_sparse:>5.1f}x | {t_gather:>9.1f} {t_gather / t_sparse:>5.1f}x | {flex_s} | "
                       f"{t_sel:>9.1f} {100 * t_sel / t_sparse:>4.0f}% {100 * floor:>4.0f}%")
    if not sweep:
        click.echo("x = time of the alternative / time of heedful's sparse decode (higher: heedful faster); "
                   "select % = NSA-style selection (maintained minmax summaries, scoring, top-k, rows) "
                   "relative to the sparse decode; floor = the bytes the selection must read (min and max of "
                   "every block) relative to the bytes the decode reads: its share at equal bandwidth")
    return rows
