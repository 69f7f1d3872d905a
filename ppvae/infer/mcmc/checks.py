"""Checks NUTS/HMC make on a model before sampling (shared by ppvae.infer.mcmc.sampler and ppvae.infer.mcmc.local)."""

from __future__ import annotations

from ppvae._util.validation import PPVAEError
from ppvae.model.base import Model
from ppvae.model.structure import is_local

__all__ = ["check_local_dimension", "MAX_LOCAL_DIMENSIONS"]

MAX_LOCAL_DIMENSIONS = 1000  # per-data-point continuous latent coordinates NUTS/HMC accept without allow_local


def check_local_dimension(potential, model: Model, allow_local: bool) -> None:
    """Refuse NUTS/HMC over more than :data:`MAX_LOCAL_DIMENSIONS` per-data-point continuous latent
    coordinates (a VAE's z on mnist5k: 4,000 x 50 = 200,000): the joint chain then mixes over every
    point's z and does not finish in useful time (no word for hours). ``local_posterior`` samples one
    point's p(z | x, theta-hat) instead; ``allow_local=True`` runs the joint chain anyway."""
    local = {n: s["value"].numel() for n, s in potential.sites.items() if is_local(s)}
    total = sum(local.values())
    if total > MAX_LOCAL_DIMENSIONS and not allow_local:
        shown = ", ".join(f"{n}: {tuple(potential.sites[n]['value'].shape)}" for n in local)
        raise PPVAEError(
            f"model: {type(model).__name__} has {total:,} dimensions of per-data-point continuous latents ({shown}); "
            f"NUTS/HMC over more than {MAX_LOCAL_DIMENSIONS:,} does not finish in useful time. Use "
            "ppvae.local_posterior(fit, x) for one point's p(z | x), or pass allow_local=True "
            "(--allow-local) to sample them jointly anyway")
