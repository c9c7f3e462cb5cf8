"""Loading past one device: tensor parallelism under torchrun, and accelerate's device map.

- Tensor parallelism (`--tp auto`): transformers shards each layer's heads and MLP across
  the processes torchrun starts (`from_pretrained(distributed_config=DistributedConfig(
  tp_plan="auto"))`, the model's own `base_model_tp_plan`), with gloo on CPU and NCCL on
  CUDA. Each rank's attention sees its own query and key/value heads, so heedful's cache
  (sized from the keys it is given) holds that rank's share of every row; the logits are
  gathered, so sampling, the policy, pins and eviction come out the same on every rank.
- A device map (`--device-map auto`): accelerate places whole layers on one GPU and the
  rest in CPU memory (or on disk with an offload folder), moving each offloaded layer's
  weights to the GPU while it runs. One accelerator at most: layers spread over several
  GPUs would hand the engine keys on different devices (use tensor parallelism there).

Everything here is checked before weights are read, and a failure is one line naming the
option (ModelLoadError: CLI exit 2).
"""

from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass

import torch

from heedful.errors import ModelLoadError

TP_CHOICES = ("auto",)
DEVICE_MAP_CHOICES = ("auto", "balanced", "sequential")
# seconds a rank waits in one collective before giving up (a rank that hangs, not one that
# dies: a dead rank's connections close and the others fail at once)
TP_TIMEOUT_S = 600
SCALE_EXTRA = "pip install 'heedful[scale]'"


@dataclass(frozen=True)
class World:
    """This process's place in a torchrun launch."""

    rank: int
    size: int
    local_rank: int

    @property
    def main(self) -> bool:
        return self.rank == 0


def torchrun_world() -> World | None:
    """The launch torchrun describes in the environment, or None outside torchrun."""
    env = os.environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    try:
        rank, size = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", rank))
    except ValueError:
        raise ModelLoadError("--tp auto: RANK, WORLD_SIZE and LOCAL_RANK must be integers (torchrun sets them)") \
            from None
    if size < 1 or not 0 <= rank < size:
        raise ModelLoadError(f"--tp auto: RANK {rank} is not in a world of WORLD_SIZE {size}")
    return World(rank, size, local)


def check_options(tp=None, device=None, device_map=None, adapter=None, max_memory=None,
                  offload_folder=None) -> None:
    """Refuses placement options that do not go together (one line naming them)."""
    if tp is not None:
        for option, value in (("--device", device), ("--device-map", device_map), ("--adapter", adapter),
                              ("--max-memory", max_memory), ("--offload-folder", offload_folder)):
            if value:
                raise ModelLoadError(f"{option} {value}: not with --tp {tp} (each rank takes its own GPU, "
                                     "LOCAL_RANK, or the CPU)")
    elif device_map is not None:
        if adapter:
            raise ModelLoadError(f"--adapter {adapter}: not with --device-map (offloaded weights cannot take a merge)")
    elif max_memory or offload_folder:
        raise ModelLoadError(f"{'--max-memory' if max_memory else '--offload-folder'}: only with --device-map")


def require_torchrun(tp: str) -> World:
    if tp not in TP_CHOICES:
        raise ModelLoadError(f"--tp {tp}: expected one of {', '.join(TP_CHOICES)}")
    world = torchrun_world()
    if world is None:
        raise ModelLoadError(f"--tp {tp}: needs torchrun, which starts one process per rank "
                             f"(torchrun --nproc-per-node N -m heedful generate ... --tp {tp}); "
                             "RANK and WORLD_SIZE are not set")
    return world


def require_accelerate(option: str) -> None:
    try:
        import accelerate  # noqa: F401
    except ImportError:
        raise ModelLoadError(f"{option}: needs the accelerate package ({SCALE_EXTRA})") from None


def accelerator() -> str:
    """The device type torch.distributed and transformers' tensor parallelism use here."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def connect(world: World) -> None:
    """Joins the process group (idempotent): gloo on CPU, NCCL on CUDA, torchrun's rendezvous."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if accelerator() == "cuda":
        torch.cuda.set_device(world.local_rank)
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=TP_TIMEOUT_S))


def sum_across_ranks(t: torch.Tensor) -> torch.Tensor:
    """The elementwise sum of `t` over the ranks (every rank calls it at the same point)."""
    import torch.distributed as dist

    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t




# what a collective raises when a peer is gone (its connections closed, or it hangs)
_LOST = re.compile(r"connection (closed|reset) by peer|broken pipe|socket timeout|timed out|nccl (error|"
                   r"communicator)|aborted", re.IGNORECASE)


def is_lost_peer(e: BaseException) -> bool:
    """Whether an exception is a collective failing because another rank is gone."""
    import torch.distributed as dist

    if isinstance(e, getattr(dist, "DistError", ())):
        return True
    return isinstance(e, RuntimeError) and bool(_LOST.search(str(e)))


def check_tp_shapes(text_config, world: World, name: str) -> None:
    """Each rank takes an equal share of the query heads and of the key/value heads (the
    rows heedful's cache keeps); refuses a world size that does not divide them."""
    if world.size == 1:
        return
    heads = getattr(text_config, "num_attention_heads", None)
    kv = getattr(text_config, "num_key_value_heads", None) or heads
    for what, n in (("attention heads", heads), ("key/value heads", kv)):
        if n is None:
            raise ModelLoadError(f"--tp auto: --model {name}: its config does not say how many {what} it has")
        if n % world.size:
            raise ModelLoadError(f"--tp auto: --model {name} has {n} {what}, which {world.size} ranks cannot share "
                                 f"equally (--nproc-per-node must divide {n})")


def tp_kwargs(config, world: World, name: str) -> dict:
    """from_pretrained's arguments for tensor parallelism over the torchrun world."""
    from transformers.distributed import DistributedConfig

    plan = getattr(config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config,
                   "base_model_tp_plan", None)
    if not plan:
        raise ModelLoadError(f"--tp auto: --model {name}: transformers has no tensor-parallel plan for "
                             f"{getattr(config, 'model_type', '?')!r}")
    return {"distributed_config": DistributedConfig(tp_plan="auto", tp_size=world.size)}


_SIZE = re.compile(r"^\d+(\.\d+)?\s*([KMGT]i?B|B)?$", re.IGNORECASE)


def parse_max_memory(text: str | None) -> dict | None:
    """"0=20GiB,cpu=60GiB" -> {0: "20GiB", "cpu": "60GiB"} (accelerate's max_memory)."""
    if text is None:
        return None
    out: dict = {}
    for part in text.split(","):
        key, eq, value = part.strip().partition("=")
        key, value = key.strip().lower(), value.strip()
        if not eq or not key or not _SIZE.match(value):
            raise ModelLoadError(f"--max-memory {text}: expected DEVICE=SIZE pairs separated by commas, "
                                 "e.g. 0=20GiB,cpu=60GiB")
        if key.startswith("cuda:"):
            key = key[5:]
        if key.isdigit():
            out[int(key)] = value
        elif key in ("cpu", "disk"):
            out[key] = value
        else:
            raise ModelLoadError(f"--max-memory {text}: {key!r} is not a device (a GPU index, cpu or disk)")
    return out


def device_map_kwargs(device_map: str, device: str | None, max_memory: str | None,
                      offload_folder: str | None) -> dict:
    """from_pretrained's arguments for accelerate's placement on one GPU (the first, or
    --device cuda:N) and CPU memory, and on disk when an offload folder is given."""
    if device_map not in DEVICE_MAP_CHOICES:
        raise ModelLoadError(f"--device-map {device_map}: expected one of {', '.join(DEVICE_MAP_CHOICES)}")
    require_accelerate(f"--device-map {device_map}")
    memory = parse_max_memory(max_memory)
    gpus = sorted(k for k in (memory or {}) if isinstance(k, int))
    if len(gpus) > 1:
        raise ModelLoadError(f"--max-memory {max_memory}: names {len(gpus)} GPUs; --device-map uses one GPU and CPU "
                             "memory (several GPUs: tensor parallelism, torchrun ... --tp auto)")
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type not in ("cpu", "cuda"):
        raise ModelLoadError(f"--device {device}: --device-map places layers on a CUDA GPU and the CPU only")
    if memory is None:
        from accelerate.utils import get_max_memory

        gpu = dev.index or 0
        memory = {k: v for k, v in get_max_memory().items() if (dev.type == "cuda" and k == gpu) or k == "cpu"}
    elif dev.type == "cpu":
        memory = {k: v for k, v in memory.items() if not isinstance(k, int)}
    if "disk" in memory or offload_folder:
        if not offload_folder:
            raise ModelLoadError(f"--max-memory {max_memory}: disk offload needs --offload-folder DIR")
        os.makedirs(offload_folder, exist_ok=True)
    memory.pop("disk", None)
    kw = {"device_map": device_map, "max_memory": memory}
    if offload_folder:
        kw["offload_folder"] = offload_folder
    return kw


def check_placement(model, device_map: str) -> torch.device:
    """The device the engine feeds: where the embeddings sit. Refuses a placement the
    engine cannot drive (embeddings offloaded, or layers on more than one accelerator)."""
    where = getattr(model, "hf_device_map", None) or {}
    gpus = {f"cuda:{d}" if isinstance(d, int) else str(d) for d in where.values()} - {"cpu", "disk", "meta"}
    if len(gpus) > 1:
        raise ModelLoadError(f"--device-map {device_map}: layers landed on {len(gpus)} GPUs; heedful's cache needs "
                             "one (use tensor parallelism for several)")
    first = next(model.parameters()).device
    if first.type == "meta":
        raise ModelLoadError(f"--device-map {device_map}: the embeddings were offloaded; give the first device more "
                             "memory (--max-memory)")
    return first
