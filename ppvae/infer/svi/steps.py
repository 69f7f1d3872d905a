"""The pieces of one SVI step that :class:`ppvae.Trainer` composes: the optimizer and its learning-rate
schedule, the beta / KL warm-up weight of the local latents, the non-finite guard, and the RNG states a
checkpoint records.

None of them holds state between steps except through the objects it returns (an optimizer, a
scheduler, a :class:`LocalLatentScale` whose factor is set from the step number), so a run is a
function of (seed, step) and resumes exactly.
"""

from __future__ import annotations

import math
import random
from typing import Callable

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from ppvae._util.validation import NonFiniteError
from ppvae.data.loaders import Batch
from ppvae.infer.svi.config import TrainConfig
from ppvae.model.structure import is_local

__all__ = ["LocalLatentScale", "adam", "fused_adam_step", "grads_finite", "make_scheduler", "nonfinite_error",
           "nonfinite_sites", "rng_state", "set_rng_state"]


def make_scheduler(optim: torch.optim.Optimizer, cfg: TrainConfig, total: int):
    """The lr schedule of ``cfg`` over ``total`` steps (None for a constant lr): exponential decay or
    cosine annealing (Loshchilov & Hutter 2017) to ``lr * lr_final_factor`` at the last step."""
    if cfg.lr_schedule == "exponential":
        gamma = cfg.lr_final_factor ** (1.0 / max(total, 1))
        return torch.optim.lr_scheduler.ExponentialLR(optim, gamma=gamma)
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=total, eta_min=cfg.lr * cfg.lr_final_factor)
    return None


def nonfinite_sites(model_fn: Callable, guide: Callable, batch: Batch, torch_state: torch.Tensor) -> list[str]:
    """Replay the failed step (same RNG state) and name the sites whose log-probability is not finite."""
    torch.set_rng_state(torch_state)
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


class LocalLatentScale(Messenger):
    """Scales the log-density of every continuous latent site inside the data plate by ``factor``,
    in model and guide alike, so the ELBO's KL(q(z_i|x_i) || p(z_i)) term (analytic or Monte Carlo)
    is weighted by ``factor``: the beta-VAE objective (Higgins et al. 2017, eq. 4) and KL warm-up
    (Bowman et al. 2016, sec. 3.1; Sonderby et al. 2016, sec. 2.4) with a linear ramp."""

    def __init__(self, beta: float, warmup_steps: int):
        super().__init__()
        self.beta, self.warmup_steps, self.factor = beta, warmup_steps, beta

    def at_step(self, step: int) -> "LocalLatentScale":
        ramp = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        self.factor = self.beta * ramp
        return self

    def _process_message(self, msg):
        if (msg["type"] == "sample" and not msg["is_observed"] and not site_is_subsample(msg)
                and is_local(msg)
                and not msg["fn"].support.is_discrete):
            msg["scale"] = msg["scale"] * self.factor


def adam(params: list, lr: float, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
    """Adam (Kingma & Ba 2015, Algorithm 1) over all parameters, in torch's fused kernel where the
    parameters allow it (floating point on CPU/CUDA): one kernel per tensor instead of ~10 tensor ops,
    ~0.6 ms less per step on the MNIST VAE (benchmarks/bench_vae_speed.py). Its updates equal the
    default implementation's to float rounding (~1 ulp) and are deterministic on CPU."""
    try:
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
    except (RuntimeError, ValueError):  # a dtype or device the fused kernel does not support
        return torch.optim.Adam(params, lr=lr, betas=betas)


def grads_finite(params) -> bool:
    """One cheap check per step: a sum over all gradient entries is finite iff none is NaN or inf
    (a per-tensor ``isfinite`` scan costs ~10x more on a small VAE)."""
    sums = [p.grad.sum() for p in params if p.grad is not None]
    return not sums or math.isfinite(torch.stack(sums).sum().item())


def nonfinite_error(trainer, value: float, batch: Batch, b: int, torch_state: torch.Tensor) -> NonFiniteError:
    """The error of a step whose loss or gradient is not finite: the step (and batch of its epoch), the
    sites whose log-probability is not finite on a replay, and any non-finite data points of the batch."""
    sites = nonfinite_sites(trainer.model_fn, trainer.guide, batch, torch_state)
    where = f"step {trainer.step}"
    if trainer.cfg.batch_size is not None:
        where += f" (batch {b} of epoch {trainer.step // trainer.steps_per_epoch})"
    what = "loss" if not math.isfinite(value) else "gradient"
    culprit = f"non-finite log-probability at sample site(s) {', '.join(sites)}" if sites else "no single site"
    rows = (~torch.isfinite(batch.x)).reshape(len(batch), -1).any(-1).nonzero().flatten()
    if len(rows):  # corrupted data that bypassed load-time validation (e.g. a memory-mapped file)
        points = rows if batch.index is None else batch.index[rows]
        culprit += f"; the batch holds non-finite data at point(s) {', '.join(map(str, points[:10].tolist()))}"
    return NonFiniteError(
        f"training: non-finite {what} ({value}) at {where}; {culprit}; "
        "parameters were left at their last finite values"
    )


# -- RNG states as plain tensors and lists (weights_only-loadable) ---------------------------------------
def rng_state() -> dict:
    """The torch (and CUDA, once initialized), numpy and Python RNG states as tensors, numbers and lists."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore the RNG states recorded by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(gauss)))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def fused_adam_step(optim: torch.optim.Adam, flat: torch.Tensor) -> None:
    """``optim.step()`` for an Adam over the one tensor ``flat`` as its own fused branch runs it
    (``torch.optim.adam._fused_adam``: the step count, then one ``_fused_adam_`` kernel), without the ~0.1 ms of Python
    around it; the first step and a non-fused optimizer go through ``optim.step()``, which creates the state."""
    group, state = optim.param_groups[0], optim.state.get(flat)
    if not state or not group.get("fused") or group["amsgrad"] or group["maximize"]:
        optim.step()
        return
    steps = [state["step"]]
    with torch.no_grad():
        torch._foreach_add_(steps, 1)
        torch._fused_adam_([flat], [flat.grad], [state["exp_avg"]], [state["exp_avg_sq"]], [], steps,
                           amsgrad=False, lr=group["lr"], beta1=group["betas"][0], beta2=group["betas"][1],
                           weight_decay=group["weight_decay"], eps=group["eps"], maximize=False, grad_scale=None,
                           found_inf=None)
