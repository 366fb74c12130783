"""Data-parallel training with PyTorch's own engine: ``torchrun`` + ``DistributedDataParallel``.

``torchrun --nproc-per-node=N -m darkknowledge train|run ...`` starts ``N`` processes and gives
each the environment variables ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT``. :func:`init_from_env` reads them and joins the process group with the backend
that fits the device -- **gloo** on CPUs, **NCCL** on CUDA GPUs. From then on:

* :func:`darkknowledge.train.fit` wraps the model in DDP, every rank draws the *same* shuffled
  permutation from the shared seed and takes its strided share of every global minibatch
  (``idx[rank::world_size]``), so the global batch is the single-process ``batch_size``;
* the teacher's soft targets are computed in row shards and all-gathered
  (:mod:`darkknowledge.soft_targets`), and written once by rank 0;
* metrics are summed over ranks with :func:`all_reduce_sum`;
* only rank 0 (:func:`is_main_process`) writes files and shows progress bars.

Without a process group every helper answers as for one process (rank 0 of 1), so the same
code runs unchanged on one process.

Reference: Li et al., *PyTorch Distributed: Experiences on Accelerating Data Parallel
Training*, VLDB 2020; https://pytorch.org/docs/stable/elastic/run.html (torchrun).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from darkknowledge._checks import check_one_of
from darkknowledge.errors import InputError, InputTypeError

__all__ = [
    "DEVICE_CHOICES",
    "DistributedContext",
    "all_gather_rows",
    "all_reduce_sum",
    "barrier",
    "destroy",
    "distributed_session",
    "env_world_size",
    "get_rank",
    "get_world_size",
    "init_from_env",
    "is_distributed",
    "is_main_process",
    "rank_share",
    "resolve_device",
    "shard_range",
]

#: The values ``--device`` / ``fit(device=...)`` accept by name (an explicit ``cuda:1`` works too).
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: its ``rank`` of ``world_size``, ``local_rank`` on its node,
    the ``backend`` (``"gloo"`` / ``"nccl"``, ``None`` for one process) and its ``device``."""

    rank: int
    world_size: int
    local_rank: int
    backend: str | None
    device: torch.device


def is_distributed() -> bool:
    """Whether a process group is initialised (``torch.distributed``)."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's rank, 0 without a process group."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """Number of processes in the group, 1 without a process group.

    >>> get_world_size(), get_rank(), is_main_process()
    (1, 0, True)
    """
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Whether this is rank 0 -- the one that writes files and prints."""
    return get_rank() == 0


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (set by ``torchrun``), 1 when unset.

    Raises:
        ValueError: ``WORLD_SIZE`` is set but is not an integer >= 1.
    """
    text = os.environ.get("WORLD_SIZE", "1")
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise InputError(f"the WORLD_SIZE environment variable must be an integer >= 1, got {text!r} instead.")
    return value


def resolve_device(device: str | torch.device = "auto", *, local_rank: int | None = None) -> torch.device:
    """The ``torch.device`` for ``"auto"``, ``"cpu"``, ``"cuda"`` (or ``"cuda:i"``, a ``torch.device``).

    ``"auto"`` is CUDA when a GPU is available, else the CPU. ``"cuda"`` without an index
    becomes ``cuda:<local_rank>`` (``LOCAL_RANK`` from the environment, 0 when unset), one GPU
    per process as ``torchrun`` expects.

    Raises:
        ValueError: an unknown device name, or ``cuda`` when no CUDA GPU is available.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, str):
        if device == "auto":
            dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        else:
            try:
                dev = torch.device(device)
            except RuntimeError:
                check_one_of("device", device, DEVICE_CHOICES)  # raises the uniform message
                raise
    else:
        raise InputTypeError(f"device must be a str or torch.device, got {type(device).__name__} instead.")
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"device must be one of {', '.join(DEVICE_CHOICES)} (or cuda:<index>), got {str(dev)!r} instead.")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(
                f"device must be 'cpu' or 'auto' on this machine: {str(dev)!r} was requested but "
                "torch.cuda.is_available() is False (no CUDA GPU or a CPU-only PyTorch build)."
            )
        if dev.index is None:
            index = int(os.environ.get("LOCAL_RANK", "0")) if local_rank is None else local_rank
            dev = torch.device("cuda", index % torch.cuda.device_count())
    return dev


def init_from_env(*, device: str | torch.device = "auto", timeout_s: float = 300.0) -> DistributedContext:
    """Join the process group described by ``torchrun``'s environment variables.

    With ``WORLD_SIZE`` unset or 1 nothing is initialised and the context is rank 0 of 1.
    Otherwise ``init_process_group(init_method="env://")`` with the backend chosen from the
    device: ``nccl`` for CUDA, ``gloo`` for the CPU. Calling it again in a process whose group
    is already initialised returns the current context.

    Args:
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` (see :func:`resolve_device`).
        timeout_s: how long collective operations wait for the other ranks.

    Returns:
        A :class:`DistributedContext`.

    Example:
        >>> ctx = init_from_env(device="cpu")  # no torchrun: one process
        >>> ctx.rank, ctx.world_size, ctx.backend
        (0, 1, None)
    """
    import datetime

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank=local_rank)
    world = env_world_size()
    if not is_distributed() and world > 1:
        for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
            if name not in os.environ:
                raise InputError(
                    f"WORLD_SIZE={world} is set but {name} is not; start the processes with "
                    "torchrun (e.g. torchrun --nproc-per-node=2 -m darkknowledge train ...)."
                )
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend, init_method="env://",
                                timeout=datetime.timedelta(seconds=timeout_s))
    if is_distributed():
        return DistributedContext(get_rank(), get_world_size(), local_rank, dist.get_backend(), dev)
    return DistributedContext(0, 1, 0, None, dev)


def destroy() -> None:
    """Leave the process group (no-op without one)."""
    if is_distributed():
        dist.destroy_process_group()


@contextmanager
def distributed_session(*, device: str | torch.device = "auto") -> Iterator[DistributedContext]:
    """``with distributed_session() as ctx:`` -- :func:`init_from_env` then :func:`destroy` on exit
    (only a group this call created is destroyed)."""
    created = not is_distributed() and env_world_size() > 1
    ctx = init_from_env(device=device)
    try:
        yield ctx
    finally:
        if created:
            destroy()


def barrier() -> None:
    """Wait until every rank gets here (no-op for one process)."""
    if is_distributed():
        dist.barrier()


def _collective_device() -> torch.device:
    # NCCL moves CUDA tensors only; gloo works on CPU tensors
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Sum ``values`` element-wise over all ranks, in float64 (returned on the CPU).

    One collective for several metrics: e.g. ``[loss_sum, n_correct, n_seen]``. For one
    process it returns the values unchanged.

    >>> all_reduce_sum([1.5, 2.0]).tolist()
    [1.5, 2.0]
    """
    t = torch.as_tensor(values, dtype=torch.float64).detach().reshape(-1).clone()  # (K,)
    if is_distributed():
        t = t.to(_collective_device())
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t = t.cpu()
    return t


def shard_range(n: int, *, rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """The contiguous rows ``[start, stop)`` of ``n`` that ``rank`` handles (sizes differ by <= 1).

    >>> [shard_range(10, rank=r, world_size=3) for r in range(3)]
    [(0, 4), (4, 7), (7, 10)]
    """
    rank = get_rank() if rank is None else rank
    world = get_world_size() if world_size is None else world_size
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def rank_share(idx: torch.Tensor, *, rank: int | None = None, world_size: int | None = None) -> torch.Tensor:
    """This rank's strided share ``idx[rank::world_size]`` of a global minibatch ``idx (B,)``.

    The shares of all ranks partition the global batch; their sizes differ by at most one.

    >>> rank_share(torch.arange(5), rank=1, world_size=2).tolist()
    [1, 3]
    """
    rank = get_rank() if rank is None else rank
    world = get_world_size() if world_size is None else world_size
    return idx[rank::world]


def all_gather_rows(local: torch.Tensor, *, n_total: int) -> torch.Tensor:
    """Concatenate every rank's ``(n_r, *rest)`` block in rank order into ``(n_total, *rest)``.

    The blocks may differ in length (by :func:`shard_range`); they are padded to the longest
    for the collective and trimmed afterwards. For one process ``local`` is returned.
    """
    if not is_distributed():
        return local
    world = get_world_size()
    sizes = [shard_range(n_total, rank=r, world_size=world) for r in range(world)]
    longest = max(stop - start for start, stop in sizes)
    if local.shape[0] != sizes[get_rank()][1] - sizes[get_rank()][0]:
        raise InputError(
            f"local must hold this rank's {sizes[get_rank()][1] - sizes[get_rank()][0]} rows, "
            f"got {local.shape[0]} instead."
        )
    padded = local.new_zeros((longest, *local.shape[1:]), device=_collective_device())  # (longest, *rest)
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: stop - start] for p, (start, stop) in zip(parts, sizes)]).to(local.device)  # (n_total, *rest)
