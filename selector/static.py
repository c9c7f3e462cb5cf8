"""The decode step with static shapes, and its capture as a CUDA graph (`--cuda-graph`).

A decode step of the plain engine has shapes that follow the session: attention reads the
occupied prefix of the slots (`hi`), the pins' re-rotation gathers as many rows as there are
pins, and the new row's slot is a Python int. A CUDA graph replays fixed launches over fixed
buffers, so here every one of them is padded to the cache's capacity and read from device
buffers written before the step:

- `index` [capacity] int32: the resident slots by rank, then the new row's slot, then -1
  (the sparse kernel's padding): the Triton path's index set, the query's own row included;
- `mask` [1, capacity] bool: the same slots, for the SDPA path over all capacity slots;
- `fixed` / `fixed_pos` [capacity]: the rows re-rotated at this step (the pins, gists...)
  and their new positions, padded with the new row's slot, whose key every layer writes
  after the re-rotation (so what the padding wrote there is overwritten before it is read);
  the step reads the first 16, 32, 64... of them (a power of two, one graph each: in steady
  state the same pins at every step, one graph);
- the new row's slot, its position id and token id, [1] each.

One host-to-device copy fills the integers, one the mask. The work that depends on Python
decisions stays outside the step: the cut (slots freed), the masters of rows re-rotated for
the first time (rare: after an eviction before them), the bookkeeping of slots. What is
captured is the rest: the re-rotation of the fixed rows from their masters, and the model's
forward over one token with the cache's full buffers. `--cuda-graph auto` captures it on
CUDA (once per cache bank and attention path; a resize re-captures); `static` runs the
same padded step eagerly (how the CPU tests check it gives the tokens of the unpadded one);
`off` (and CPU under auto) keeps the unpadded step. A chunk (prompt, recall, fold), auto
selection, collecting attention (the TUI's heat, H2O) and hybrid models with recurrent
layers always take the unpadded step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from heedful.errors import HeedfulError
from heedful.selector.cache import Step, cache_kwargs
from heedful.selector.config import SUM_ACROSS_RANKS

CHOICES = ("auto", "off", "static")  # --cuda-graph; HEEDFUL_CUDA_GRAPH sets the default (tests)


def mode_for(choice: str | None, device) -> str | None:
    """"graph" (capture and replay), "static" (the padded step, eagerly) or None (unpadded)."""
    choice = choice or os.environ.get("HEEDFUL_CUDA_GRAPH", "").strip().lower() or "auto"
    if choice not in CHOICES:
        raise HeedfulError(f"--cuda-graph {choice!r}: expected one of {', '.join(CHOICES)}")
    if choice == "auto":
        return "graph" if torch.device(device).type == "cuda" else None
    return None if choice == "off" else "static"


@dataclass
class Buffers:
    ints: torch.Tensor  # [3 * cap + 3] int64 on the device: index | fixed | fixed_pos | slot, position, token
    index: torch.Tensor  # [1, 1, cap] int32, what the kernel reads
    mask: torch.Tensor  # [1, cap] bool
    cos: torch.Tensor
    sin: torch.Tensor
    logits: torch.Tensor | None = None

    def views(self, cap: int):
        t = self.ints
        return (t[:cap], t[cap:2 * cap], t[2 * cap:3 * cap], t[3 * cap:3 * cap + 1],
                t[3 * cap + 1:3 * cap + 2].view(1, 1), t[3 * cap + 2:].view(1, 1))


class StaticDecode:
    """The padded decode step of one session's cache (see the module's docstring)."""

    def __init__(self, model, cache, mode: str):
        self.model, self.cache, self.mode = model, cache, mode
        self._key = None
        self.buffers: Buffers | None = None
        self.graphs: dict = {}  # bucket of re-rotated rows -> its captured step
        self.plan = None
        self.steps = self.replays = self.captures = 0
        self.failed: str | None = None  # why capture was given up (the step then runs eagerly)

    def usable(self, n: int, auto_topk: int, collect: bool) -> bool:
        c = self.cache
        return (n == 1 and not auto_topk and not collect and c.bank is not None and not c.has_recurrent_layers
                and len(c.slots) < c.capacity)

    # ------------------------------------------------------------------ buffers
    def _prepare(self, device, path) -> Buffers:
        c = self.cache
        bank = c.bank
        masters = bank.ensure_masters()
        key = (id(bank.keys), id(masters), c.capacity, id(path))
        if key != self._key:
            cap = c.capacity
            cos, sin = c.rotary.tables(c.slots.ceiling + 2, device)
            pinned = device.type == "cuda"
            self._host = torch.zeros(3 * cap + 3, dtype=torch.int64, pin_memory=pinned)
            self._host_mask = torch.zeros(1, cap, dtype=torch.bool, pin_memory=pinned)
            self._np, self._np_mask = self._host.numpy(), self._host_mask.numpy()[0]
            self.buffers = Buffers(torch.zeros(3 * cap + 3, dtype=torch.int64, device=device),
                                   torch.full((1, 1, cap), -1, dtype=torch.int32, device=device),
                                   torch.zeros(1, cap, dtype=torch.bool, device=device), cos, sin)
            from heedful.selector.attention import StepPlan

            self.plan = StepPlan(path=path, mask=self.buffers.mask, static=self.buffers)
            self.graphs, self._key = {}, key
        return self.buffers

    def _fill(self, new: int, fixed: list[int], positions: list[int], position: int, token: int) -> None:
        c, cap = self.cache, self.cache.capacity
        h, m = self._np, self._np_mask
        r = len(c.slots)
        h[:r] = c.slots.slots
        h[r] = new
        h[r + 1:cap] = -1
        k = len(fixed)
        h[cap:cap + k] = fixed
        h[cap + k:2 * cap] = new
        h[2 * cap:2 * cap + k] = positions
        h[2 * cap + k:3 * cap] = 0
        h[3 * cap:] = (new, position, token)
        m[:] = False
        m[h[:r + 1]] = True
        b = self.buffers
        b.ints.copy_(self._host, non_blocking=True)
        b.mask.copy_(self._host_mask, non_blocking=True)

    # ------------------------------------------------------------------ the step
    def _body(self, bucket: int) -> None:
        """What is captured: the fixed rows re-rotated (the first `bucket` entries of their
        buffer), one token's forward, the logits kept."""
        c, b, cap = self.cache, self.buffers, self.cache.capacity
        index, fixed, fixed_pos, slot, position, token = b.views(cap)
        fixed, fixed_pos = fixed[:bucket], fixed_pos[:bucket]
        b.index.copy_(index.view(1, 1, cap))
        bank = c.bank
        m = bank.masters.index_select(3, fixed).float()
        rotated = c.rotary.apply(m, b.cos.index_select(0, fixed_pos), b.sin.index_select(0, fixed_pos))
        bank.rot.index_copy_(3, fixed, rotated if rotated.dtype == bank.keys.dtype else rotated.to(bank.keys.dtype))
        out = self.model(input_ids=token, position_ids=position, **cache_kwargs(self.model, c), use_cache=True,
                         logits_to_keep=1, heedful_plan=self.plan)
        logits = out.logits[0, -1]
        if b.logits is None:
            b.logits = torch.empty_like(logits)
        b.logits.copy_(logits)

    def _capture(self, bucket: int):
        torch.cuda.synchronize()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up (compiles the kernels); the step is idempotent
                self._body(bucket)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: another thread's CUDA calls (a UI's) do not invalidate the capture
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            self._body(bucket)
        self.graphs[bucket] = graph
        self.captures += 1
        return graph

    @torch.inference_mode()
    def step(self, token: int, path) -> torch.Tensor:
        """One decode step of `token` after every resident row; returns the next-token logits
        (on the device). The new row's slot stays in `cache.step` until commit/abort."""
        c = self.cache
        device = c.bank.keys.device
        b = self._prepare(device, path)
        a = c.slots.align(1)
        c.master(a.ranks)  # eagerly: rows re-rotated for the first time get their masters
        fixed = [c.slots.slots[r] for r in a.ranks]
        new = c.slots.alloc(1)[0]
        _, _, _, slot, position, _ = b.views(c.capacity)
        c.step = Step([new], slot, a.new_positions, c.capacity, position, b.mask)  # abort() frees the slot
        self.plan.slots = c.step
        self._fill(new, fixed, a.positions, a.new_positions[0], token)
        # the rows re-rotated, padded to a power of two (16 at least): in steady state the
        # pins, one graph; a re-base (every row) captures another once
        bucket = min(c.capacity, max(16, 1 << max(0, len(fixed) - 1).bit_length()))
        c.slots.set_positions(a.ranks, a.positions)
        if a.ranks:
            c.rows_changed(min(a.ranks))
        c.forget_positions()
        self.steps += 1
        if self.mode == "graph" and self.failed is None:
            try:
                (self.graphs.get(bucket) or self._capture(bucket)).replay()
                self.replays += 1
                return b.logits  # the caller copies it to the CPU
            except Exception as e:  # noqa: BLE001 - not capturable here: the same step, eagerly
                self.failed = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}" if str(e) else type(e).__name__
                self.graphs = {}
                torch.cuda.synchronize()
        self._body(bucket)
        return b.logits if b.logits.device.type == "cuda" else b.logits.clone()  # the buffer is the next step's

    def stats(self) -> dict:
        return {"mode": self.mode, "steps": self.steps, "captures": self.captures, "replays": self.replays,
                "failed": self.failed}


def static_for(model, cache, choice: str | None = None) -> StaticDecode | None:
    """The padded step for this session, or None. A model spread over devices (accelerate's
    device map, offload) or ranks (tensor parallel: collectives in the forward) keeps the
    unpadded step under `auto`."""
    mode = mode_for(choice, next(model.parameters()).device)
    spread = getattr(model, SUM_ACROSS_RANKS, None) is not None or \
        len(set(map(str, (getattr(model, "hf_device_map", None) or {}).values()))) > 1
    if mode == "graph" and spread:
        return None
    return StaticDecode(model, cache, mode) if mode else None
