"""Data-parallel SVI on ``torch.distributed``: one process per device, gradients all-reduced.

Every process runs the same trainer with the same seed (so model, guide and optimizer start
identical, as DistributedDataParallel's initial broadcast would make them) and draws the same global
minibatch B_t of M points at step t (:func:`ppvae.infer.svi.config.batch_at`). Process r evaluates the ELBO only
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

The trainer calls a *strategy* at three points of every run (:class:`SingleProcess` is the default,
:class:`DataParallel` the one ``fit(distributed=True)`` uses):

* ``setup(trainer)`` once, after the trainer is built: join the group, create the parameters and hook
  the gradient all-reduce onto them;
* ``batch(data, index) -> (batch, weight)`` every step: this process's share of the global minibatch
  ``index`` and its weight M_r / M (returned, never stored, so nothing depends on call order);
* ``combine_loss(loss, weight, params)`` every step: the loss whose value is the single-process loss and
  whose gradient is this process's weighted share.

Launch one process per device with torchrun; ``gloo`` is used on CPU, ``nccl`` on CUDA::

    torchrun --standalone --nproc_per_node=2 -m ppvae.cli fit gmm K=3 --data faithful --out run --distributed

Only rank 0 writes the run directory and checkpoints; all ranks read a checkpoint on ``--resume``, so
the checkpoint directory must be on a file system every process sees.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from ppvae._util.validation import PPVAEError
from ppvae.data.loaders import Batch, Dataset

__all__ = ["DataParallel", "SingleProcess", "init_from_env", "local_share"]

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


def local_share(data: Dataset, index: torch.Tensor | None, rank: int, world_size: int) -> tuple[Batch, float]:
    """Rank ``rank``'s share of the minibatch ``index`` of ``data`` (all points when None): the points
    ``torch.tensor_split(index, world_size)[rank]`` as a batch of the full data set (size N), and the
    share's weight M_r / M in the global gradient. Only the share is read from ``data``."""
    if index is None:
        index = torch.arange(len(data), device=data.x.device)
    if len(index) < world_size:
        raise PPVAEError(f"distributed: a minibatch of {len(index)} points cannot be shared by "
                         f"{world_size} processes; use a batch_size (and N mod batch_size) >= {world_size}")
    local = torch.tensor_split(index, world_size)[rank]
    return data.batch(local), len(local) / len(index)


class SingleProcess:
    """The default strategy: this process trains on every minibatch whole."""

    rank, world_size = 0, 1
    is_main = True  # this process writes checkpoints

    def setup(self, trainer) -> None:
        """Nothing to join or hook."""

    def batch(self, data: Dataset, index: torch.Tensor | None) -> tuple[Batch, float]:
        return data.batch(index), 1.0

    def combine_loss(self, loss: torch.Tensor, weight: float, params) -> torch.Tensor:
        return loss


class DataParallel(SingleProcess):
    """Data-parallel SVI over the ``torch.distributed`` process group (joined from the torchrun
    environment if needed): each process evaluates the objective on its share of the global minibatch,
    the loss is summed over processes and the gradients are all-reduced before the optimizer step.
    Only rank 0 (``is_main``) writes checkpoints."""

    def __init__(self):
        self.rank, self.world_size, self.sync = 0, 1, None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def setup(self, trainer) -> None:
        """Join the group, check every minibatch can be shared, create the parameters (before the first
        step, so the gradient hooks exist on every rank) and hook the all-reduce onto them."""
        rank, world = init_from_env(trainer.cfg.device)
        if world > 1:
            n = len(trainer.data)
            bs = trainer.cfg.batch_size or n
            if bs < world or 0 < n % bs < world:
                raise PPVAEError(f"distributed: every minibatch needs >= {world} points (one per process); got "
                                 f"batch_size={bs} with N={n} (last batch {n % bs or bs})")
        self.rank, self.world_size = rank, world
        trainer.initialize()
        self.sync = _GradientAllReduce(trainer.params)

    def batch(self, data: Dataset, index: torch.Tensor | None) -> tuple[Batch, float]:
        return local_share(data, index, self.rank, self.world_size)

    def combine_loss(self, loss: torch.Tensor, weight: float, params) -> torch.Tensor:
        """``loss * weight`` with its value replaced by the sum over ranks (the single-process loss)."""
        local = loss * weight
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
