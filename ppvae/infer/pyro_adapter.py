"""The one place where ppvae uses Pyro's private API, and why no public API does the job.

Everything else in ppvae uses Pyro's public API only (``tests/test_layers.py`` checks it). Each function
here names the private member it uses; a Pyro upgrade that moves one breaks this module alone, and
``tests/test_pyro_adapter.py`` exercises each function against the installed Pyro.

* :func:`chain_draws` steps one chain of an MCMC kernel in this process with a per-iteration callback
  (``pyro.infer.mcmc.api._gen_samples``). Pyro's public ``MCMC.run`` runs every chain itself -- in its own
  worker processes, seeded by its own scheme, with its own progress bar -- while ppvae runs each chain as one task
  of its own process pool (:func:`ppvae._util.parallel.parallel_map`, the main process sampling too), seeds chain c
  by ``chain_seed(seed, c)`` so the draws are identical for every number of cores, and reports progress
  through its own display. ``MCMC(num_chains=1).run`` in each task would do the sampling but not the progress
  callback per iteration, and would build a second kernel setup per chain.
* :func:`mcmc_from_draws` builds a ``pyro.infer.MCMC`` that holds draws made elsewhere (``MCMC._samples``,
  ``MCMC._diagnostics``): ``arviz.from_pyro`` reads a run's sample statistics (divergences, acceptance, step
  size) only from such an object, and Pyro has no public constructor from existing draws.
* :class:`AlignedMCMC` is what ``arviz.from_pyro`` reads from a ``pyro.infer.MCMC`` (``get_samples``,
  ``diagnostics``, ``num_chains``, ``kernel.model`` and the private ``_args``/``_kwargs``), serving ppvae's
  label-aligned draws in place of the sampler's own.
* :func:`unpack_latent` splits an ``AutoContinuous`` guide's flat latent vector into its sites
  (``AutoContinuous._unpack_latent``), the same split ``AutoContinuous.median`` does on its location; needed
  for guides without a closed-form median (normalizing flows), whose median is taken over draws.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch
from pyro.infer.mcmc import MCMC
from pyro.infer.mcmc.api import _gen_samples

__all__ = ["chain_draws", "mcmc_from_draws", "unpack_latent", "AlignedMCMC", "divergences"]


def chain_draws(kernel, warmup: int, num_draws: int, hook: Callable[[], None]) -> tuple[torch.Tensor, dict]:
    """Run one chain of ``kernel`` (``kernel.initial_params`` set): ``warmup`` adaptation steps, then
    ``num_draws`` kept draws of its single site, calling ``hook()`` after every iteration. Returns
    (draws stacked, shape (num_draws, ...); Pyro's per-chain diagnostics dict)."""
    samples: Iterator = _gen_samples(kernel, warmup, num_draws, lambda *_: hook(), None)
    next(samples)  # the structure of the sampled sites
    draws = [next(samples).clone() for _ in range(num_draws)]
    return torch.stack(draws), next(samples)


def mcmc_from_draws(kernel, draws: dict[str, torch.Tensor], diagnostics: list[dict], warmup: int) -> MCMC:
    """A ``pyro.infer.MCMC`` holding ``draws`` (site -> (chains, draws, ...)) and the chains' ``diagnostics``,
    as ``MCMC.run`` would have left them; it is never run."""
    first = next(iter(draws.values()))
    mcmc = MCMC(kernel, num_samples=first.shape[1], warmup_steps=warmup, num_chains=1,
                initial_params={k: v[0, 0] for k, v in draws.items()}, transforms={}, disable_progbar=True)
    mcmc.num_chains = first.shape[0]
    mcmc._samples = dict(draws)
    mcmc._diagnostics = list(diagnostics)
    return mcmc


def unpack_latent(guide, latent: torch.Tensor):
    """``(site, value)`` pairs of an ``AutoContinuous`` guide's flat unconstrained ``latent``."""
    return guide._unpack_latent(latent)


def divergences(mcmc: MCMC) -> int:
    """Divergent transitions over all chains, from the public ``MCMC.diagnostics()``."""
    return int(sum(len(v) for v in mcmc.diagnostics().get("divergences", {}).values()))


class AlignedMCMC:
    """What ``arviz.from_pyro`` reads from a Pyro ``MCMC``, with ppvae's (label-aligned) draws
    (site -> (chains, draws, ...)); sample statistics come from the sampler ``mcmc``."""

    def __init__(self, mcmc: MCMC, samples: dict):
        self.mcmc, self.draws = mcmc, {k: torch.as_tensor(v) for k, v in samples.items()}
        self.num_chains, self.num_samples = next(iter(self.draws.values())).shape[:2]
        self.kernel = type("_NoModel", (), {"model": None})()
        self._args, self._kwargs = (), {}  # read by arviz.from_pyro (Pyro's names for the model's arguments)

    def get_samples(self, num_samples=None, group_by_chain=False):
        if group_by_chain:
            return self.draws
        return {k: v.reshape((-1,) + v.shape[2:]) for k, v in self.draws.items()}

    def diagnostics(self):
        return self.mcmc.diagnostics()
