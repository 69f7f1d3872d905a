"""Data-parallel SVI on ``torch.distributed``: one process per device, gradients all-reduced.

Every process runs the same trainer with the same seed (so model, guide and optimizer start
identical, as DistributedDataParallel's initial broadcast would make them) and draws the same global
minibatch B_t of M points at step t (:func:`ppvae._config.batch_at`). Process r evaluates the ELBO only
on its share B_t^r (``torch.tensor_split`` of the batch indices: M_r points, read from the data set
only then, so a memory-mapped data set is never loaded whole), with the likelihood scaled to the full
data set through the data plate (N / M_r, Hoffman et al. 2013, eq. 8). The per-process gradients
g_r = grad[-ELBO_r] are combined as

    g = sum_r (M_r / M) g_r = grad[global terms] + (N / M) sum_{i in B_t} grad[local term i],

which is exactly the single-process gradient on B_t (also for unequal shares), by one ``all_reduce``
of the flattened gradients after backward, before the optimizer step; the loss value is combined the
same way so every process records the single-process loss and early stopping agrees (the scheme of
PyTorch's DistributedDataParallel, Li et al. 2020, "PyTorch Distributed", VLDB, sec. 3). Global latent
draws use the same RNG stream on every rank, i.e. one draw per step as in a single process.

Launch one process per device with torchrun; ``gloo`` is used on CPU, ``nccl`` on CUDA::

    torchrun --standalone --nproc_per_node=2 -m ppvae.cli fit gmm K=3 --data faithful --out run --distributed

Only rank 0 writes the run directory and checkpoints; all ranks read a checkpoint on ``--resume``, so
the checkpoint directory must be on a file system every process sees.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from ._validation import PPVAEError
from .data import Batch, Dataset

__all__ = ["init_from_env", "attach", "DataShard", "is_main_process"]

_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def init_from_env(device: str = "cpu") -> tuple[int, int]:
    """Join the process group described by the torchrun environment (RANK, WORLD_SIZE, MASTER_ADDR,
    MASTER_PORT, LOCAL_RANK); ``gloo`` for CPU, ``nccl`` for CUDA (device ``cuda:LOCAL_RANK``).
    Returns (rank, world size); a no-op when the group is already initialized."""
    if not dist.is_available():
        raise PPVAEError("distributed: this torch build has no torch.distributed")
    if not dist.is_initialized():
        missing = [k for k in _ENV if k not in os.environ]
        if missing:
            raise PPVAEError(
                f"distributed: expected the torchrun environment ({', '.join(_ENV)}); missing {', '.join(missing)}. "
                "Launch with: torchrun --standalone --nproc_per_node=N -m ppvae.cli fit ... --distributed"
            )
        cuda = device != "cpu" and torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl" if cuda else "gloo", init_method="env://")
    return dist.get_rank(), dist.get_world_size()


def is_main_process() -> bool:
    """True outside data-parallel runs and on rank 0."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class DataShard(Dataset):
    """The full data set seen by rank ``rank`` of ``world_size``: ``batch(index)`` keeps only this
    rank's share of ``index`` (all points when ``index`` is None), with the full size N, and records
    ``weight`` = M_r / M, the share's weight in the global gradient."""

    @classmethod
    def of(cls, data: Dataset, rank: int, world_size: int) -> "DataShard":
        shard = object.__new__(cls)  # no second validation scan of (possibly memory-mapped) x
        shard.__dict__.update(vars(data))
        shard.rank, shard.world_size, shard.weight = rank, world_size, 1.0 / world_size
        return shard

    def batch(self, index: torch.Tensor | None = None) -> Batch:
        if index is None:
            index = torch.arange(len(self), device=self.x.device)
        if len(index) < self.world_size:
            raise PPVAEError(f"distributed: a minibatch of {len(index)} points cannot be shared by "
                             f"{self.world_size} processes; use a batch_size (and N mod batch_size) "
                             f">= {self.world_size}")
        local = torch.tensor_split(index, self.world_size)[self.rank]
        self.weight = len(local) / len(index)
        return Batch(self.x[local], None if self.y is None else self.y[local], local, len(self))


class _AllReducedLoss:
    """The trainer's objective on this rank's share, weighted by M_r / M, whose value is the sum over
    ranks (the single-process loss) and whose gradient is this rank's weighted gradient."""

    def __init__(self, elbo, shard: DataShard, trainer):
        self.elbo, self.shard, self.trainer = elbo, shard, trainer

    def __getattr__(self, name):
        return getattr(self.elbo, name)

    def differentiable_loss(self, model, guide, batch):
        local = self.elbo.differentiable_loss(model, guide, batch) * self.shard.weight
        params = getattr(self.trainer, "params", None)
        if params:  # every parameter gets a gradient on every rank, so the all-reduce always completes
            local = local + 0.0 * sum(p.sum() for p in params)
        total = local.detach().clone()
        dist.all_reduce(total)
        return total + (local - local.detach())


class _GradientAllReduce:
    """After backward, one all-reduce (sum) of all gradients flattened together, fired by the
    post-accumulate-grad hook of the last parameter to receive its gradient."""

    def __init__(self, params: list[torch.Tensor]):
        self.params, self.pending = params, len(params)
        self.handles = [p.register_post_accumulate_grad_hook(self._ready) for p in params]

    def _ready(self, _param) -> None:
        self.pending -= 1
        if self.pending:
            return
        self.pending = len(self.params)
        grads = [p.grad for p in self.params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        offset = 0
        for g in grads:
            g.copy_(flat[offset: offset + g.numel()].view_as(g))
            offset += g.numel()


def attach(trainer) -> int:
    """Make ``trainer`` data-parallel over the current process group (initialized from the torchrun
    environment if needed): share each minibatch, combine loss and gradients. Returns the rank."""
    rank, world = init_from_env(trainer.cfg.device)
    if world > 1:
        n = len(trainer.data)
        bs = trainer.cfg.batch_size or n
        if bs < world or 0 < n % bs < world:
            raise PPVAEError(f"distributed: every minibatch needs >= {world} points (one per process); got "
                             f"batch_size={bs} with N={n} (last batch {n % bs or bs})")
    trainer.data = DataShard.of(trainer.data, rank, world)
    trainer.elbo = _AllReducedLoss(trainer.elbo, trainer.data, trainer)
    trainer.initialize()
    trainer.grad_sync = _GradientAllReduce(trainer.params)
    return rank
