"""The training configuration and the batch order: what step t of an SVI run sees.

:class:`TrainConfig` holds everything the trainer needs besides model, guide and data (it JSON
round-trips via ``dataclasses.asdict`` and is saved with every run and checkpoint). The minibatch of
optimizer step t is a function of (seed, t) alone: epoch e's order is a permutation drawn from its own
generator seeded by (seed, e) (:func:`epoch_order`), and dynamically binarized pixels are drawn from a
generator seeded by (seed, t) (:func:`binarize_batch`). So a resumed or data-parallel run sees exactly
the batches of an uninterrupted single-process one.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field

import torch

from ppvae._util.validation import PPVAEError, check_choice, check_float, check_int
from ppvae.data.loaders import Batch, Dataset

__all__ = ["TrainConfig", "resolve_device", "epoch_order", "batch_index", "batch_at", "binarize_batch"]


@dataclass
class TrainConfig:
    """Everything the trainer needs besides model, guide and data; JSON round-trips via ``asdict``."""

    guide: str = "auto"
    elbo: str = "auto"
    steps: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)  # Adam's moment decay rates (beta_1, beta_2)
    optimizer: str = "adam"  # adam | clipped_adam
    clip_norm: float = 10.0
    lr_schedule: str = "constant"  # constant | exponential | cosine
    lr_final_factor: float = 0.1  # lr at the last step / lr, for exponential and cosine
    num_particles: int = 1
    seed: int = 0
    device: str = "cpu"
    patience: int | None = None  # early stopping: steps without relative improvement
    tol: float = 1e-4
    guide_options: dict = field(default_factory=dict)
    elbo_options: dict = field(default_factory=dict)
    beta: float = 1.0  # weight of the local latents' log-densities (beta-VAE); see _LocalLatentScale
    kl_warmup_steps: int = 0  # ramp that weight linearly from beta/kl_warmup_steps to beta over these steps
    checkpoint_dir: str | None = None  # write checkpoints here (ppvae.runs.checkpoint) ...
    checkpoint_every: int | None = None  # ... every this many steps, and at the end
    jit: bool = False  # trace the objective once per batch shape (ppvae.infer.svi.jit) and replay it
    compile: bool | str = "auto"  # the potential path's step compiled by inductor: True, False, "auto" (long runs)

    def validate(self, num_data: int) -> "TrainConfig":
        if self.steps is not None and self.epochs is not None:
            raise PPVAEError(f"steps/epochs: expected one of them; got steps={self.steps} and epochs={self.epochs}")
        if self.steps is None and self.epochs is None:
            self.steps = 1000
        if self.steps is not None:
            self.steps = check_int("steps", self.steps, low=1)
        if self.epochs is not None:
            self.epochs = check_int("epochs", self.epochs, low=1)
        if self.batch_size is not None:
            self.batch_size = check_int("batch_size", self.batch_size, low=1, high=num_data)
        self.lr = check_float("lr", self.lr, low=0.0, strict=True)
        if not isinstance(self.betas, (tuple, list)) or len(self.betas) != 2:
            raise PPVAEError(f"betas: expected two decay rates (beta_1, beta_2) in [0, 1); got {self.betas!r:.60}")
        self.betas = tuple(check_float(f"betas[{i}]", b, low=0.0, high=1.0) for i, b in enumerate(self.betas))
        if max(self.betas) >= 1:
            raise PPVAEError(f"betas: expected decay rates below 1; got {self.betas}")
        check_choice("optimizer", self.optimizer, ("adam", "clipped_adam"))
        check_choice("lr_schedule", self.lr_schedule, ("constant", "exponential", "cosine"))
        self.clip_norm = check_float("clip_norm", self.clip_norm, low=0.0, strict=True)
        self.lr_final_factor = check_float("lr_final_factor", self.lr_final_factor, low=0.0, high=1.0, strict=True)
        self.num_particles = check_int("num_particles", self.num_particles, low=1)
        self.seed = check_int("seed", self.seed, low=0, high=2**32 - 1)  # numpy seeds are 32-bit
        if self.patience is not None:
            self.patience = check_int("patience", self.patience, low=1)
        self.tol = check_float("tol", self.tol, low=0.0)
        self.beta = check_float("beta", self.beta, low=0.0)
        self.kl_warmup_steps = check_int("kl_warmup_steps", self.kl_warmup_steps, low=0)
        if not isinstance(self.jit, bool):
            raise PPVAEError(f"jit: expected True or False; got {self.jit!r:.60}")
        if self.compile not in (True, False, "auto") or not isinstance(self.compile, (bool, str)):
            raise PPVAEError(f"compile: expected True, False or 'auto'; got {self.compile!r:.60}")
        for name in ("guide_options", "elbo_options"):
            if not isinstance(getattr(self, name), dict):
                raise PPVAEError(f"{name}: expected a dict of keyword options; got {getattr(self, name)!r:.60}")
        if self.checkpoint_every is not None:
            self.checkpoint_every = check_int("checkpoint_every", self.checkpoint_every, low=1)
            if self.checkpoint_dir is None:
                raise PPVAEError("checkpoint_every: expected a checkpoint_dir to write to; got none")
        return self

    def steps_per_epoch(self, num_data: int) -> int:
        return 1 if self.batch_size is None else math.ceil(num_data / self.batch_size)

    def total_steps(self, num_data: int) -> int:
        return self.steps if self.steps is not None else self.epochs * self.steps_per_epoch(num_data)


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without a GPU is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise PPVAEError(f"device: expected cpu, cuda, cuda:N or auto; got '{device}'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PPVAEError(f"device: '{device}' was asked for but torch sees no CUDA device; use cpu or auto")
    return dev


@functools.lru_cache(maxsize=4)  # drawn once per epoch, not once per step (read-only; callers slice it)
def epoch_order(num_data: int, seed: int, epoch: int) -> torch.Tensor:
    """The minibatch order of ``epoch``: a permutation seeded by (seed, epoch), so a resumed run
    sees the same batches as an uninterrupted one."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_data, generator=gen)


def batch_index(data: Dataset, cfg: TrainConfig, step: int) -> tuple[torch.Tensor | None, int]:
    """The data indices of optimizer step ``step``'s minibatch (None: all points, full-batch training)
    and the batch's position within its epoch."""
    if cfg.batch_size is None:
        return None, 0
    n = len(data)
    epoch, b = divmod(step, cfg.steps_per_epoch(n))
    order = epoch_order(n, cfg.seed, epoch)
    return order[b * cfg.batch_size : (b + 1) * cfg.batch_size].to(data.x.device), b


def batch_at(data: Dataset, cfg: TrainConfig, step: int) -> tuple[Batch, int]:
    """The minibatch of optimizer step ``step`` and its index within the epoch."""
    index, b = batch_index(data, cfg, step)
    return data.batch(index), b


def binarize_batch(batch: Batch, seed: int, step: int) -> Batch:
    """Dynamic binarization (Salakhutdinov & Murray 2008): pixels x in [0, 1] of step ``step`` redrawn
    as Bernoulli(x) from a generator seeded by (seed, step), so a resumed run draws the same pixels."""
    gen = torch.Generator(device=batch.x.device).manual_seed(seed * 1_000_003 + step + 1)
    return dataclasses.replace(batch, x=torch.bernoulli(batch.x, generator=gen))
