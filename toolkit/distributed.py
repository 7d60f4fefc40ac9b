"""Thin helpers over :mod:`torch.distributed` for runs launched by ``torchrun``, and memory bounds.

Multi-process runs use PyTorch's own engine: ``torchrun --nproc_per_node=N -m toolkit train ...``
starts N processes and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; :func:`init_from_env` reads them and joins the process group (NCCL on CUDA, gloo on
the CPU). Every helper here also works in a plain single process, where it is the identity
(``rank() == 0``, ``world_size() == 1``, ``all_reduce_sum(t) is t``), so code written with them runs
unchanged in a notebook and under ``torchrun``.

Precision: AMP for training only, float32 (or float64) for analysis
------------------------------------------------------------------------
``fit(..., amp=True)`` trains in bfloat16 (float16 with loss scaling where bf16 is missing) because
SGD tolerates rounding noise: each step's error is of the order of the gradient noise of a
mini-batch anyway, and the weights themselves stay in float32. The analyses are different. They
compute *small differences of large numbers* and *spectra*: the NTK is a Gram matrix whose small
eigenvalues set the kernel-regression solution (bf16's 8-bit mantissa, relative error ~4e-3, swamps
eigenvalues below ~1e-3 of the largest one); a loss surface is ``L(w + a·d₁ + b·d₂) − L(w)``,
differences far below bf16's resolution near a minimum; Hessian eigenvalues from Lanczos lose
orthogonality quickly in low precision; neural-collapse metrics divide by within-class scatter that
shrinks towards zero in the terminal phase. So analyses run in float32, and accept float64 where a
closed form is compared to ~1e-10 (``model.double()`` and float64 inputs). They never autocast.

Memory
------
:func:`auto_chunk_size` turns "bytes per item" into a chunk size from a budget: a fraction of the
free CUDA memory on a GPU, a fixed 512 MiB on the CPU (toy presets must stay under Binder's 2 GB),
and :func:`oom_hint` turns a CUDA out-of-memory error into one that names the option to lower and
the value to try.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist

__all__ = [
    "CPU_BUDGET_BYTES",
    "GPU_BUDGET_FRACTION",
    "all_gather_cat",
    "all_reduce_sum",
    "auto_chunk_size",
    "barrier",
    "broadcast_object",
    "init_from_env",
    "is_distributed",
    "is_main",
    "launched_by_torchrun",
    "local_rank",
    "oom_hint",
    "rank",
    "shard_indices",
    "shard_range",
    "world_size",
]

CPU_BUDGET_BYTES = 512 * 2**20
GPU_BUDGET_FRACTION = 0.5


# ---------------------------------------------------------------------------------- process group


def is_distributed() -> bool:
    """True when a process group with more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def launched_by_torchrun() -> bool:
    """True when the environment says this process is one of several started by ``torchrun``."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes in the group (1 outside a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def local_rank() -> int:
    """This process's index on its machine (``LOCAL_RANK`` from torchrun; 0 otherwise)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """True on rank 0 (and in a single process): the rank that logs and writes files."""
    return rank() == 0


def init_from_env(device: str | torch.device = "auto") -> torch.device:
    """Join the process group described by torchrun's environment; return this rank's device.

    Backend: NCCL when ``device`` resolves to CUDA (each rank takes ``cuda:LOCAL_RANK``), gloo
    on the CPU. Without torchrun's variables (a plain ``python`` run) nothing is initialised and the
    resolved device is returned, so callers need no special case. Calling it again is harmless.
    """
    from .utils import get_device

    device = get_device(device)
    if not launched_by_torchrun():
        return device
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this torch build; "
                           "run a single process.")
    if device.type == "cuda":
        n_gpus = torch.cuda.device_count()
        if local_rank() >= n_gpus:
            raise ValueError(f"LOCAL_RANK={local_rank()} but only {n_gpus} CUDA device(s) are "
                             f"visible; use torchrun --nproc_per_node={n_gpus} or fewer.")
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ValueError("Distributed runs support CUDA (NCCL) and CPU (gloo), not "
                         f"{device.type!r}; pass device='cpu' or 'cuda'.")
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, **kwargs)
    return device


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """``obj`` from rank ``src`` on every rank (picklable objects; identity in a single process)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


# -------------------------------------------------------------------------------------- sharding


def shard_range(n: int, rank_: int | None = None, world: int | None = None) -> range:
    """Contiguous block of ``range(n)`` owned by a rank: the first ``n % world`` ranks get one more.

    Concatenating the blocks of ranks 0, 1, … gives ``range(n)`` in order, so results gathered with
    :func:`all_gather_cat` come back in the single-process order.
    """
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}.")
    rank_ = rank() if rank_ is None else rank_
    world = world_size() if world is None else world
    if not 0 <= rank_ < world:
        raise ValueError(f"rank {rank_} is outside [0, {world}).")
    base, extra = divmod(n, world)
    start = rank_ * base + min(rank_, extra)
    return range(start, start + base + (rank_ < extra))


def shard_indices(n: int, rank_: int | None = None, world: int | None = None) -> torch.Tensor:
    """:func:`shard_range` as an int64 tensor (empty for the last ranks when ``n < world``)."""
    r = shard_range(n, rank_, world)
    return torch.arange(r.start, r.stop, dtype=torch.long)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks, in place, and return it (unchanged in a single process).

    With gloo on the CPU any dtype works; NCCL needs the tensor on this rank's GPU.
    """
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"all_reduce_sum needs a tensor, got {type(tensor).__name__}.")
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_cat(tensor: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Concatenate every rank's ``tensor`` along ``dim`` in rank order; shard sizes may differ.

    Only the size along ``dim`` may differ between ranks (other dimensions and the dtype must
    agree). Sizes are exchanged first, each shard is padded to the largest, gathered, and the
    padding is cut off again. Identity in a single process.
    """
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"all_gather_cat needs a tensor, got {type(tensor).__name__}.")
    if not is_distributed():
        return tensor
    dim = dim % max(tensor.ndim, 1)
    world = world_size()
    size = torch.tensor([tensor.shape[dim]], dtype=torch.long, device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    sizes = [int(s) for s in sizes]
    longest = max(sizes)
    pad_shape = list(tensor.shape)
    pad_shape[dim] = longest - tensor.shape[dim]
    padded = torch.cat([tensor, tensor.new_zeros(pad_shape)], dim=dim).contiguous()
    buckets = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(buckets, padded)
    return torch.cat([b.narrow(dim, 0, s) for b, s in zip(buckets, sizes)], dim=dim)


# ---------------------------------------------------------------------------------------- memory


def _budget(device: torch.device | None, budget_bytes: int | None) -> int:
    if budget_bytes is not None:
        if budget_bytes <= 0:
            raise ValueError(f"budget_bytes must be positive, got {budget_bytes}.")
        return int(budget_bytes)
    if device is not None and torch.device(device).type == "cuda":
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(GPU_BUDGET_FRACTION * free)
    return CPU_BUDGET_BYTES


def auto_chunk_size(bytes_per_item: float, budget_bytes: int | None = None, device=None, *,
                    minimum: int = 1, maximum: int | None = None) -> int:
    """How many items fit in a memory budget: ``floor(budget / bytes_per_item)``, clipped.

    The budget defaults to ``GPU_BUDGET_FRACTION`` (half) of the *free* CUDA memory on a GPU and
    ``CPU_BUDGET_BYTES`` (512 MiB) elsewhere. ``minimum`` (default 1) is returned even when one
    item exceeds the budget: the caller then runs one item at a time and may still run out of
    memory, which :func:`oom_hint` reports. ``maximum`` caps the result (e.g. the number of items).
    """
    if not bytes_per_item > 0:
        raise ValueError(f"bytes_per_item must be positive, got {bytes_per_item!r}.")
    if minimum < 1:
        raise ValueError(f"minimum must be at least 1, got {minimum}.")
    n = int(_budget(device, budget_bytes) // bytes_per_item)
    if maximum is not None:
        n = min(n, int(maximum))
    return max(n, minimum)


@contextlib.contextmanager
def oom_hint(option_name: str, suggested_value) -> Iterator[None]:
    """Re-raise an out-of-memory error with the option to lower and the value to try.

    ``with oom_hint("chunk_size", chunk // 2): ...`` turns ``torch.OutOfMemoryError`` (CUDA) and
    the CPU allocator's ``RuntimeError``/``MemoryError`` for a failed allocation into a
    ``torch.OutOfMemoryError`` (or ``MemoryError``) whose message ends with
    "lower `chunk_size` (try chunk_size=...)". Other errors pass through untouched.
    """
    hint = (f"Out of memory. Lower `{option_name}` (try {option_name}={suggested_value!r}), or "
            "pass a smaller memory budget.")
    try:
        yield
    except torch.OutOfMemoryError as err:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise torch.OutOfMemoryError(f"{hint}\n{err}") from err
    except MemoryError as err:
        raise MemoryError(f"{hint}\n{err}") from err
    except RuntimeError as err:
        if "can't allocate memory" in str(err) or "DefaultCPUAllocator" in str(err):
            raise MemoryError(f"{hint}\n{err}") from err
        raise
