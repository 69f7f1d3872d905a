"""The SVI trainer: one call fits a model with a guide and an ELBO chosen by name.

``fit`` runs stochastic variational inference (Hoffman et al. 2013; Ranganath et al. 2014): at each
step it draws a minibatch, computes the differentiable ELBO estimate of the chosen objective
(``objective.differentiable_loss(model, guide, batch)``, likelihood scaled by N/M through the data
plate) and steps ONE torch optimizer over every parameter of model and guide. Pyro's own
``SVI.step`` keeps one optimizer per parameter and re-validates every distribution at every step;
ppvae validates on the first step and then runs with validation off, steps torch's fused Adam kernel
and, with ``jit=True``, replays the objective traced once per batch shape (:mod:`ppvae._jit`).
On the MNIST VAE (benchmarks/bench_vae_speed.py) Pyro's tutorial loop takes about 2.1x the time of a
plain-PyTorch loop; against a plain loop with the same fused Adam, ppvae takes 1.27x eager and 1.11x
with ``jit=True``.

The loop is deterministic on CPU for a given seed: Pyro's RNGs are seeded once and the minibatch
order of epoch e is a permutation drawn from its own generator seeded by (seed, e).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import pyro
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from ._jit import CompiledObjective
from ._validation import NonFiniteError, PPVAEError, check_choice, check_float, check_int, one_line
from .data import Batch, Dataset
from .guides import guide_spec_name, make_guide
from .model import DATA_PLATE, Model
from .objectives import make_elbo
from .runs import data_info

__all__ = ["fit", "TrainConfig", "resolve_device"]


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
    checkpoint_dir: str | None = None  # write checkpoints here (ppvae.checkpoint) ...
    checkpoint_every: int | None = None  # ... every this many steps, and at the end
    jit: bool = False  # trace the objective once per batch shape (ppvae._jit) and replay it

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


def batch_at(data: Dataset, cfg: TrainConfig, step: int) -> tuple[Batch, int]:
    """The minibatch of optimizer step ``step`` and its index within the epoch."""
    n = len(data)
    if cfg.batch_size is None:
        return data.batch(None), 0
    per_epoch = cfg.steps_per_epoch(n)
    epoch, b = divmod(step, per_epoch)
    order = epoch_order(n, cfg.seed, epoch)
    index = order[b * cfg.batch_size : (b + 1) * cfg.batch_size].to(data.x.device)
    return data.batch(index), b


def binarize_batch(batch: Batch, seed: int, step: int) -> Batch:
    """Dynamic binarization (Salakhutdinov & Murray 2008): pixels x in [0, 1] of step ``step`` redrawn
    as Bernoulli(x) from a generator seeded by (seed, step), so a resumed run draws the same pixels."""
    gen = torch.Generator(device=batch.x.device).manual_seed(seed * 1_000_003 + step + 1)
    return dataclasses.replace(batch, x=torch.bernoulli(batch.x, generator=gen))


def _make_scheduler(optim: torch.optim.Optimizer, cfg: TrainConfig, total: int):
    if cfg.lr_schedule == "exponential":
        gamma = cfg.lr_final_factor ** (1.0 / max(total, 1))
        return torch.optim.lr_scheduler.ExponentialLR(optim, gamma=gamma)
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=total, eta_min=cfg.lr * cfg.lr_final_factor)
    return None


def _nonfinite_sites(model_fn: Callable, guide: Callable, batch: Batch, rng_state: torch.Tensor) -> list[str]:
    """Replay the failed step (same RNG state) and name the sites whose log-probability is not finite."""
    torch.set_rng_state(rng_state)
    bad = []
    with torch.no_grad(), pyro.validation_enabled(False), poutine.block():
        try:
            guide_tr = poutine.trace(guide).get_trace(batch)
            model_tr = poutine.trace(poutine.replay(model_fn, trace=guide_tr)).get_trace(batch)
        except Exception as exc:  # a distribution rejecting a NaN parameter names itself here
            return [f"(tracing failed: {exc})"]
        for label, tr in (("guide", guide_tr), ("model", model_tr)):
            for name, site in tr.nodes.items():
                if site["type"] != "sample":
                    continue
                try:
                    lp = site["fn"].log_prob(site["value"])
                except Exception:  # a shape error, not a non-finite value: the caller reports it as it is
                    continue
                if not torch.isfinite(lp).all() or not torch.isfinite(site["value"]).all():
                    bad.append(f"{label}:{name}")
    return bad


class _LocalLatentScale(Messenger):
    """Scales the log-density of every continuous latent site inside the data plate by ``factor``,
    in model and guide alike, so the ELBO's KL(q(z_i|x_i) || p(z_i)) term (analytic or Monte Carlo)
    is weighted by ``factor``: the beta-VAE objective (Higgins et al. 2017, eq. 4) and KL warm-up
    (Bowman et al. 2016, sec. 3.1; Sonderby et al. 2016, sec. 2.4) with a linear ramp."""

    def __init__(self, beta: float, warmup_steps: int):
        super().__init__()
        self.beta, self.warmup_steps, self.factor = beta, warmup_steps, beta

    def at_step(self, step: int) -> "_LocalLatentScale":
        ramp = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        self.factor = self.beta * ramp
        return self

    def _process_message(self, msg):
        if (msg["type"] == "sample" and not msg["is_observed"] and not site_is_subsample(msg)
                and any(f.name == DATA_PLATE for f in msg["cond_indep_stack"])
                and not msg["fn"].support.is_discrete):
            msg["scale"] = msg["scale"] * self.factor


def _adam(params: list, lr: float, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
    """Adam (Kingma & Ba 2015, Algorithm 1) over all parameters, in torch's fused kernel where the
    parameters allow it (floating point on CPU/CUDA): one kernel per tensor instead of ~10 tensor ops,
    ~0.6 ms less per step on the MNIST VAE (benchmarks/bench_vae_speed.py). Its updates equal the
    default implementation's to float rounding (~1 ulp) and are deterministic on CPU."""
    try:
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
    except (RuntimeError, ValueError):  # a dtype or device the fused kernel does not support
        return torch.optim.Adam(params, lr=lr, betas=betas)


def _grads_finite(params) -> bool:
    """One cheap check per step: a sum over all gradient entries is finite iff none is NaN or inf
    (a per-tensor ``isfinite`` scan costs ~10x more on a small VAE)."""
    sums = [p.grad.sum() for p in params if p.grad is not None]
    return not sums or math.isfinite(torch.stack(sums).sum().item())


class _Trainer:
    """The state of one SVI run: model, guide, objective, optimizer, step and history."""

    def __init__(self, model: Model, data: Dataset, cfg: TrainConfig, guide_spec: Any):
        self.model, self.data, self.cfg = model, data, cfg
        probe = data.batch(torch.arange(min(len(data), cfg.batch_size or len(data)), device=data.x.device))
        model.check_observed(probe, minibatched=len(probe) < len(data))
        self.discrete_sites = model.discrete_latent_sites(probe)
        self.max_plate_nesting = model.max_plate_nesting(probe)
        self.model_fn = model.enumerated() if self.discrete_sites else model
        init = model.init_values(data, torch.Generator().manual_seed(cfg.seed))
        self.guide = make_guide(guide_spec, model, init_values=init, **cfg.guide_options)
        self.elbo_name, self.elbo = make_elbo(
            cfg.elbo,
            has_discrete=bool(self.discrete_sites),
            max_plate_nesting=self.max_plate_nesting,
            num_particles=cfg.num_particles,
            **cfg.elbo_options,
        )
        self.total = cfg.total_steps(len(data))
        self.step = 0
        self.losses: list[float] = []
        self.optim = None
        self.scheduler = None
        self.dynamic_binarization = bool(data.meta.get("dynamic_binarization"))
        scaled = cfg.beta != 1.0 or cfg.kl_warmup_steps > 0
        self.kl_scale = _LocalLatentScale(cfg.beta, cfg.kl_warmup_steps) if scaled else None
        self.compiled = CompiledObjective(self.elbo, self.model_fn, self.guide, model) if cfg.jit else None

    def _init_params(self, batch: Batch, rng_state: torch.Tensor) -> torch.Tensor:
        """First step: run with validation on, capture every parameter, build the one optimizer."""
        try:
            with poutine.trace(param_only=True) as capture, pyro.validation_enabled(True):
                loss = self.elbo.differentiable_loss(self.model_fn, self.guide, batch)
        except PPVAEError:
            raise
        except (ValueError, RuntimeError, IndexError) as exc:  # Pyro's validation or a shape error
            if _nonfinite_sites(self.model_fn, self.guide, batch, rng_state):
                self._raise_nonfinite(float("nan"), False, batch, 0, rng_state)
            first = one_line(exc)
            raise PPVAEError(f"model/guide: the first training step failed on the data: {first}") from exc
        values = [s["value"] for s in capture.trace.nodes.values()]  # a plain nn.Parameter has no unconstrained()
        params = {id(p): p for p in (v.unconstrained() if hasattr(v, "unconstrained") else v for v in values)}
        for module in (self.model, self.guide):
            if isinstance(module, torch.nn.Module):
                params.update({id(p): p for p in module.parameters()})
        self.params = [p for p in params.values() if p.requires_grad]
        if not self.params:
            raise PPVAEError("guide: the model and guide have no parameters to fit")
        self.optim = _adam(self.params, self.cfg.lr, tuple(self.cfg.betas))
        self.scheduler = _make_scheduler(self.optim, self.cfg, self.total)
        return loss

    def run_step(self) -> float:
        batch, b = batch_at(self.data, self.cfg, self.step)
        if self.dynamic_binarization:
            batch = binarize_batch(batch, self.cfg.seed, self.step)
        rng_state = torch.get_rng_state()
        scale = self.kl_scale.at_step(self.step) if self.kl_scale is not None else contextlib.nullcontext()
        with scale:
            if self.optim is None:
                loss = self._init_params(batch, rng_state)
            else:
                with pyro.validation_enabled(False):
                    loss = self._loss(batch)
        self.optim.zero_grad(set_to_none=True)
        if loss.requires_grad:
            loss.backward()
        value = loss.item()
        bad_grads = not _grads_finite(self.params)
        if not math.isfinite(value) or bad_grads:
            self._raise_nonfinite(value, bool(bad_grads), batch, b, rng_state)
        if self.cfg.optimizer == "clipped_adam":
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.clip_norm)
        self.optim.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.losses.append(value)
        self.step += 1
        return value

    def _loss(self, batch: Batch) -> torch.Tensor:
        # the compiled graph bakes in the KL weight, so it is used once the warm-up ramp is over
        if self.compiled is not None and self.step >= self.cfg.kl_warmup_steps:
            return self.compiled(batch, self.step)
        return self.elbo.differentiable_loss(self.model_fn, self.guide, batch)

    def _raise_nonfinite(self, value, bad_grads, batch, b, rng_state):
        sites = _nonfinite_sites(self.model_fn, self.guide, batch, rng_state)
        where = f"step {self.step}"
        if self.cfg.batch_size is not None:
            where += f" (batch {b} of epoch {self.step // self.cfg.steps_per_epoch(len(self.data))})"
        what = "loss" if not math.isfinite(value) else "gradient"
        culprit = f"non-finite log-probability at sample site(s) {', '.join(sites)}" if sites else "no single site"
        rows = (~torch.isfinite(batch.x)).reshape(len(batch), -1).any(-1).nonzero().flatten()
        if len(rows):  # corrupted data that bypassed load-time validation (e.g. a memory-mapped file)
            points = rows if batch.index is None else batch.index[rows]
            culprit += f"; the batch holds non-finite data at point(s) {', '.join(map(str, points[:10].tolist()))}"
        raise NonFiniteError(
            f"training: non-finite {what} ({value}) at {where}; {culprit}; "
            "parameters were left at their last finite values"
        )


def _progress(total: int, enabled: bool | None):
    """The shared display (ppvae._progress): a bar on a terminal, a plain line every 30 s elsewhere."""
    from ._progress import Progress

    return None if enabled is False else Progress("fit", total, unit="step", enabled=enabled)


def fit(
    model: Model,
    data: Dataset | torch.Tensor,
    *,
    guide: Any = "auto",
    elbo: str = "auto",
    progress: bool | None = None,
    callbacks: list[Callable[["_Trainer"], None]] | None = None,
    resume: str | None = None,
    distributed: bool = False,
    **options,
):
    """Fit ``model`` to ``data`` by SVI and return a :class:`ppvae.Fit`.

    :param model: a :class:`ppvae.Model` instance.
    :param data: a :class:`ppvae.Dataset` (or a tensor, wrapped as one).
    :param guide: a registered guide name (``auto``, ``auto_delta``, ``auto_normal``, ...), or a guide
        callable of the user's (its name is then not saved; reload with the same object).
    :param elbo: ``auto``, ``trace``, ``meanfield``, ``enum`` or another registered objective.
    :param progress: None (default): a bar with the running loss on a terminal, a plain line (percent,
        rate, ETA, loss) every 30 s elsewhere; False: nothing.
    :param options: :class:`TrainConfig` fields: ``steps`` or ``epochs``, ``batch_size``, ``lr``,
        ``betas`` (Adam's, default (0.9, 0.999)), ``optimizer``, ``lr_schedule``, ``num_particles``, ``seed``,
        ``device``, ``patience``, ``tol``,
        ``guide_options``, ``elbo_options``, ``checkpoint_dir`` and ``checkpoint_every`` (write a
        checkpoint there every that many steps and at the end; see :mod:`ppvae.checkpoint`), ``jit``
        (trace the objective once per batch shape and replay it: ~12% less time per epoch on the MNIST
        VAE; for models whose operations do not depend on data values or random draws, see
        :mod:`ppvae._jit`).
    :param resume: a checkpoint file, checkpoint directory or run directory (with ``checkpoints/``):
        continue from its newest checkpoint; on CPU the result equals an uninterrupted run's exactly.
    :param distributed: data-parallel SVI over the initialized ``torch.distributed`` process group
        (or the torchrun environment); see :mod:`ppvae.distributed`.
    """
    from .results import Fit

    if not isinstance(model, Model):
        raise PPVAEError(f"model: expected a ppvae.Model instance; got {type(model).__name__}")
    if not isinstance(data, Dataset):
        data = Dataset(data)
    unknown = sorted(set(options) - set(TrainConfig.__dataclass_fields__) - {"guide", "elbo"})
    if unknown:
        raise PPVAEError(f"fit: unknown option(s) {', '.join(unknown)}; expected TrainConfig fields")
    if isinstance(guide, str) and guide == "auto":  # record the guide actually used, e.g. "svi:model"
        guide = "model" if model.has_own_guide else "auto_normal"
    cfg = TrainConfig(guide=guide_spec_name(guide), elbo=elbo, **options).validate(len(data))
    device = resolve_device(cfg.device)
    if cfg.jit and distributed:
        raise PPVAEError("jit: the compiled objective cannot hold the distributed all-reduce; use jit=False")

    pyro.clear_param_store()
    pyro.set_rng_seed(cfg.seed)
    model.setup(data)
    model.to(device)
    data = data.to(device)
    trainer = _Trainer(model, data, cfg, guide)
    run = None
    if resume is not None or distributed or cfg.checkpoint_dir is not None:  # ppvae/checkpoint.py
        from .checkpoint import prepare_run

        run = prepare_run(trainer, resume=resume, distributed=distributed)
        callbacks = [*(callbacks or []), run]
    start = time.perf_counter()
    stopped_early = _loop(trainer, progress, callbacks or [])
    elapsed = time.perf_counter() - start
    if run is not None:
        elapsed = run.finish(trainer, elapsed)
    history = {"loss": trainer.losses, "steps": trainer.step, "time_s": elapsed, "stopped_early": stopped_early}
    return Fit(model, trainer.guide, cfg, history, data_info=data_info(data), elbo_name=trainer.elbo_name)


def _loop(trainer: _Trainer, progress: bool | None, callbacks: list) -> bool:
    cfg = trainer.cfg
    ema, best, since_best = None, math.inf, 0
    for value in trainer.losses:  # a resumed run replays its history into the early-stopping state
        ema, best, since_best = _plateau(cfg, ema, best, since_best, value)
    if cfg.patience is not None and since_best >= cfg.patience:
        return True
    bar = _progress(trainer.total, progress)
    try:
        while trainer.step < trainer.total:
            value = trainer.run_step()
            for cb in callbacks:
                cb(trainer)
            ema, best, since_best = _plateau(cfg, ema, best, since_best, value)
            if bar is not None:
                bar.update(1)
                if trainer.step % 10 == 0:
                    bar.set_postfix(loss=f"{ema:.4g}")
            if cfg.patience is not None and since_best >= cfg.patience:
                return True
    finally:
        if bar is not None:
            bar.close()
    return False


def _plateau(cfg: TrainConfig, ema, best: float, since_best: int, value: float):
    """Early-stopping state after one more loss: its exponential moving average, the best EMA and the
    number of steps since the EMA last improved by a relative ``tol``."""
    ema = value if ema is None else 0.95 * ema + 0.05 * value
    if cfg.patience is not None:
        if ema < best - cfg.tol * abs(best if math.isfinite(best) else ema):
            best, since_best = ema, 0
        else:
            since_best += 1
    return ema, best, since_best
