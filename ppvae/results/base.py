"""One interface for every kind of result: SVI fits, EM fits, CAVI fits, MCMC runs and exact posteriors.

Every result ``r`` has

* ``r.model`` and ``r.method`` (``"svi:auto_normal"``, ``"em"``, ``"cavi"``, ``"nuts"``, ``"exact"``, ...);
* ``r.global_values(data)``: a point estimate of the global latents (guide median, EM's maximum
  likelihood, MCMC posterior mean, the posterior mean of CAVI's q or of the exact posterior);
* ``r.history``: a dict; its list-valued entries are per-iteration traces keyed by the quantity
  (``"loss"`` for SVI, ``"log_likelihood"`` for EM, ``"elbo"`` for CAVI; empty for MCMC and exact), and
  ``r.objective_trace`` is the one the method optimizes;
* ``r.log_likelihood(data)``: the per-point log p(x_i | theta-hat) at the point estimate, shape (N,),
  with discrete local latents summed out exactly (one meaning for every kind);
* ``r.predict(data, num_draws=, seed=)``: S posterior draws of *all* latents (globals, per-point locals,
  deterministic sites) and posterior predictive draws of the observed sites, site -> (S, ...);
* ``r.sample_data(num_points)``: draws of new data from the fitted model;
* ``r.summary()``: a :class:`ppvae.results.summary.Summary` table (same columns whatever produced it).

How ``predict`` draws (Gelman et al. 2013, BDA3 sec. 6.3, the posterior predictive distribution): for
each of S draws theta_s of the latents the result holds (from the guide or exact posterior, MCMC's
chains, or the point estimate repeated), the model is conditioned on theta_s; the remaining discrete
local latents are drawn from their exact conditional p(z_i | x_i, theta_s) by
``pyro.infer.infer_discrete`` (forward-filter backward-sample, Pyro's tensor variable elimination), and
deterministic sites are recorded; then the observed sites are drawn afresh,
x_rep ~ p(x | z, theta_s) (``poutine.uncondition``). With covariates (a regression's ``Dataset(x, y)``)
the draws are for the covariates given, so new covariates give predictions at new points.
"""

from __future__ import annotations

import abc
import math
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.infer import config_enumerate, infer_discrete
from pyro.poutine.util import site_is_subsample

from ppvae._util.validation import PPVAEError, check_int
from ppvae.data.loaders import Batch, Dataset
from ppvae.model.capabilities import ConditionsOnSubset, check_mask_support, require
from ppvae.model.enumeration import enumerated_log_likelihood
from ppvae.model.structure import latent_sites, structure_of
from ppvae.results.summary import Summary, parameter_summary, summarize

__all__ = ["Result", "as_batch", "guide_site_draws"]

DRAWS_PLATE = "_ppvae_result_draws"


def as_batch(data, device: torch.device | None = None) -> Batch:
    """A :class:`Batch` of all of ``data`` (a Dataset, Batch or tensor of points)."""
    if isinstance(data, Batch):
        return data if device is None else data.to(device)
    if not isinstance(data, Dataset):
        data = Dataset(data)
    batch = data.batch()
    return batch if device is None else batch.to(device)


def _trace(fn, batch):
    with poutine.block(), pyro.validation_enabled(False):
        return poutine.trace(fn).get_trace(batch)


def _deterministic(site) -> bool:
    return bool(site["infer"].get("_deterministic"))


def guide_site_draws(model, guide, batch: Batch, num_draws: int) -> dict[str, torch.Tensor]:
    """S draws of every latent site of ``model`` that ``guide`` samples (globals and continuous locals),
    site -> (S, ...) shaped as the model's site. Vectorized under a plate over draws (what
    ``pyro.infer.Predictive(parallel=True)`` does); one guide call per draw for a guide that does not
    vectorize."""
    sites = latent_sites(_trace(model, batch))
    mpn = structure_of(model, batch).max_plate_nesting

    def vectorized(b):
        with pyro.plate(DRAWS_PLATE, num_draws, dim=-mpn - 1):
            return guide(b)

    def pick(tr):
        return {n: tr.nodes[n]["value"].detach() for n in sites if n in tr.nodes and tr.nodes[n]["type"] == "sample"}

    with torch.no_grad():
        try:
            out = pick(_trace(vectorized, batch))
            out = {n: v.reshape((num_draws,) + tuple(sites[n]["value"].shape)) for n, v in out.items()}
        except (RuntimeError, ValueError, IndexError, KeyError, NotImplementedError):
            draws = [pick(_trace(guide, batch)) for _ in range(num_draws)]
            out = {n: torch.stack([d[n] for d in draws]) for n in draws[0]}
    return out


class Result(abc.ABC):
    """The interface every ppvae result implements (see the module docstring).

    A subclass provides ``model``, ``method``, :meth:`global_values` and :meth:`latent_draws` (the
    draws of the latents it holds a posterior over); ``predict``, ``sample_data``, ``log_likelihood``
    and ``summary`` follow from them.
    """

    model: Any
    method: str
    #: whether the result is a point estimate (no posterior spread: EM, auto_delta)
    point_estimate: bool = False

    # -- what a subclass provides -----------------------------------------------------------------
    @abc.abstractmethod
    def global_values(self, data=None) -> dict[str, torch.Tensor]:
        """A point estimate of the global latents, site -> value."""

    @abc.abstractmethod
    def latent_draws(self, data, num_draws: int | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
        """Draws of the latents this result has a posterior over (globals; continuous locals for
        guides and exact posteriors), site -> (S, ...) for ``data``."""

    history_key: str | None = None  # the key of ``history`` the method optimizes

    @property
    def objective_trace(self) -> list[float]:
        """The optimized quantity per iteration (``history[history_key]``; empty for MCMC and exact)."""
        history = getattr(self, "history", None) or {}
        return list(history.get(self.history_key, [])) if self.history_key else []

    def _summary_draws(self, data, num_draws: int, seed: int) -> dict[str, torch.Tensor]:
        """Global draws for :meth:`summary`, site -> (chains, draws, ...)."""
        batch = self._data_batch(data)
        names = self._global_names(batch)
        draws = self.latent_draws(batch, num_draws, seed)
        return {k: v.unsqueeze(0) for k, v in draws.items() if k in names}

    def _data_batch(self, data) -> Batch:
        """``data`` as a batch; None: zero rows shaped as the training data (enough for the globals)."""
        if data is None:
            template = self._data_template()
            num = (getattr(self, "data_info", None) or {}).get("num_data") or 1
            return Batch(torch.zeros((num,) + tuple(template["shape"]), dtype=template["dtype"]))
        return as_batch(data)

    def _global_names(self, batch) -> list[str]:
        return list(structure_of(self.model, batch).global_sites)

    # -- what follows -----------------------------------------------------------------------------
    @torch.no_grad()
    def log_likelihood(self, data) -> torch.Tensor:
        """Per-point log p(x_i | theta-hat) at :meth:`global_values`, discrete local latents summed out
        exactly (``ppvae.model.enumeration``), shape (N,). A model with continuous local latents needs
        ``ppvae.log_marginal`` (importance sampling) and is refused."""
        batch = self._data_batch(data)
        cont = structure_of(self.model, batch).continuous_local_sites
        if cont:  # refused before the globals are computed
            raise PPVAEError(f"log_likelihood: the model has continuous local latents ({', '.join(cont)}); "
                             "estimate log p(x) with ppvae.log_marginal instead")
        return enumerated_log_likelihood(self.model, batch, self._likelihood_values(batch))

    def _likelihood_values(self, batch) -> dict[str, torch.Tensor]:
        """The globals :meth:`log_likelihood` evaluates at (:meth:`global_values`, in the data's dtype)."""
        return {k: v.to(batch.x.dtype) for k, v in self.global_values(batch).items()}

    @torch.no_grad()
    def predict(self, data, *, num_draws: int | None = None, seed: int = 0, sites: list[str] | None = None,
                observed: bool = True) -> dict[str, torch.Tensor]:
        """Posterior draws for ``data``: every latent site (globals, per-point locals), every
        deterministic site and, with ``observed``, posterior predictive draws of the observed sites;
        site -> tensor with a leading dimension of ``num_draws`` (None: every MCMC draw; 1,000 otherwise).
        Seeded by ``seed``; the caller's random state is left as it was.

        Example (every latent and the observations, 10 posterior draws first):

        >>> import ppvae
        >>> from ppvae.models import GMM
        >>> data = ppvae.load_dataset("faithful", standardize=True)
        >>> fit = ppvae.fit(GMM(K=2), data, guide="auto_normal", steps=100, lr=0.05, progress=False)
        >>> draws = fit.predict(data, num_draws=10, seed=0)
        >>> {site: tuple(value.shape) for site, value in draws.items() if site in ("weights", "z", "obs")}
        {'weights': (10, 2), 'z': (10, 272), 'obs': (10, 272, 2)}
        """
        batch = self._data_batch(data)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(check_int("seed", seed, low=0))
            draws = self.latent_draws(batch, num_draws, seed)
            return self._complete(batch, draws, observed, sites)

    def impute(self, data, *, num_draws: int = 1000, seed: int = 0) -> dict[str, torch.Tensor]:
        """The missing entries of ``data`` (a Dataset with a ``mask``; model declaring ``ConditionsOnSubset``) filled
        from the posterior predictive p(x_mis | x_obs) = E_{p(theta, z | x_obs)} p(x_mis | z, theta), with the
        result's posterior (guide draws of z_i | x_obs and of the globals; for a fit, q(theta) too) in place of the
        exact one: ``draws`` (S, N, ...) = :meth:`predict`'s draws of the masked site with the observed entries put
        back, ``mean`` (N, ...) = their average (a Monte Carlo estimate of E[x_mis | x_obs], standard error
        sd / sqrt(S) per entry), and ``mask``."""
        require(self.model, ConditionsOnSubset, "impute")
        mask = getattr(data, "mask", None)
        if mask is None:
            raise PPVAEError("impute: the data have no missing values (a Dataset with NaN entries or a mask=)")
        site = self.model.masked_site()
        batch = self._data_batch(data)
        draws = self.predict(batch, num_draws=num_draws, seed=seed, sites=[site])[site]
        x, mask = batch.x, batch.mask
        draws = torch.where(mask, x, draws.reshape((len(draws),) + tuple(x.shape)).to(x.dtype))
        return {"mean": draws.mean(0), "draws": draws, "mask": mask}

    def sample_data(self, num_points: int | None = None, *, like=None, num_draws: int = 1,
                    seed: int = 0) -> dict[str, torch.Tensor]:
        """Draws of new data from the fitted model: for each of ``num_draws`` posterior draws of the
        globals, ``num_points`` fresh points with their local latents drawn from the prior and the
        observed sites drawn from the likelihood; site -> (num_draws, num_points, ...).

        ``like``: a data set whose covariates (and anything else the model reads besides the observed
        values, e.g. a document's length) the new points take; else ``num_points`` zero rows shaped
        as the training data (:meth:`_data_template`)."""
        if like is None:
            num_points = check_int("num_points", num_points, low=1)
            template = self._data_template()
            batch = Batch(torch.zeros((num_points,) + tuple(template["shape"]), dtype=template["dtype"]))
        else:
            batch = as_batch(like)
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(check_int("seed", seed, low=0))
            draws = self.latent_draws(batch, check_int("num_draws", num_draws, low=1), seed)
            names = set(self._global_names(batch))
            fresh = {k: v for k, v in draws.items() if k in names}
            out = []
            for s in range(num_draws):
                fn = poutine.condition(poutine.uncondition(self.model), data={k: v[s] for k, v in fresh.items()})
                tr = _trace(fn, batch)
                out.append({n: site["value"].detach() for n, site in tr.nodes.items()
                            if site["type"] == "sample" and not site_is_subsample(site) and n not in fresh})
        return {n: torch.stack([o[n] for o in out]) for n in out[0]}

    def _data_template(self) -> dict:
        info = getattr(self, "data_info", None) or {}
        shape = info.get("x_shape")
        if shape is None:
            raise PPVAEError(f"data: {type(self).__name__} does not record the data's shape; pass the data set "
                             "(sample_data: like=)")
        return {"shape": tuple(shape[1:]), "dtype": torch.get_default_dtype()}

    def summary(self, data=None, *, num_draws: int = 1000, seed: int = 0, correlations: bool = False,
                prob: float = 0.9) -> Summary:
        """Posterior summary of the global latents: per scalar entry mean, sd, the (1 - prob)/2 and
        (1 + prob)/2 quantiles (5% and 95%), bulk ESS and split R-hat where they apply (MCMC), and on
        request the correlation matrix of the entries across draws. A point estimate has mean only."""
        if data is not None:
            check_mask_support(self.model, data)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            draws = self._summary_draws(data, 1 if self.point_estimate else num_draws, seed)
        if not draws:  # no global latent sites (PPCA): the model's fitted parameters instead
            return parameter_summary(self.model, self.method)
        mcmc = getattr(self, "num_chains", None) is not None and not self.point_estimate
        return summarize(draws, method=self.method, point=self.point_estimate, diagnostics=mcmc,
                         correlations=correlations, prob=prob, notes=self._summary_notes())

    def _summary_notes(self) -> list[str]:
        return []

    # -- the shared machinery of predict ----------------------------------------------------------
    def _complete(self, batch, draws: dict, observed: bool, sites) -> dict[str, torch.Tensor]:
        if not draws:
            raise PPVAEError(f"predict: {type(self).__name__} gave no latent draws")
        model, mpn = self.model, structure_of(self.model, batch).max_plate_nesting
        single = _trace(model, batch)
        shapes = {n: s["value"].shape for n, s in latent_sites(single).items()}
        for n, v in draws.items():
            if n in shapes and tuple(v.shape[1:]) != tuple(shapes[n]):
                raise PPVAEError(f"data: the result's draws of '{n}' have shape {tuple(v.shape[1:])}, the model on "
                                 f"this data needs {tuple(shapes[n])} (per-point latents of an MCMC run exist for "
                                 "its training data only)")
        draws = {k: v.to(batch.x.dtype) if v.is_floating_point() else v for k, v in draws.items()}
        S = len(next(iter(draws.values())))
        try:  # all draws at once under a plate over draws (as Predictive(parallel=True)); else one by one
            state = torch.random.get_rng_state()
            out = self._one_pass(batch, draws, observed, single, mpn, S, vectorized=True)
        except (RuntimeError, ValueError, IndexError, KeyError, NotImplementedError, AssertionError):
            torch.random.set_rng_state(state)
            rows = [self._one_pass(batch, {k: v[s] for k, v in draws.items()}, observed, single, mpn, 1,
                                   vectorized=False) for s in range(S)]
            out = {n: torch.stack([r[n] for r in rows]) for n in rows[0]}
        return {n: v for n, v in out.items() if sites is None or n in sites}

    def _one_pass(self, batch, values, observed, single, mpn, S, vectorized) -> dict[str, torch.Tensor]:
        """One trace of the model conditioned on ``values`` with the discrete locals drawn by
        ``infer_discrete`` and the observed sites redrawn; ``vectorized``: S draws under a plate at
        dim -mpn-1 (values reshaped to broadcast there), results shaped (S, *site shape)."""
        model, first = self.model, -mpn - 1
        if vectorized:
            values = {n: v.reshape((S,) + (1,) * (mpn - len(single.nodes[n]["fn"].batch_shape)) + tuple(v.shape[1:]))
                      for n, v in values.items()}

            def fn0(b):
                with pyro.plate(DRAWS_PLATE, S, dim=-mpn - 1):
                    return model(b)
            first -= 1
        else:
            fn0 = model
        fn = poutine.condition(fn0, data=values)
        if any(n not in values for n in latent_sites(single)):  # discrete locals from p(z | x, theta_s), exactly
            fn = infer_discrete(config_enumerate(fn, default="parallel"), first_available_dim=first, temperature=1)
        tr = _trace(fn, batch)
        row = {n: site["value"].detach() for n, site in tr.nodes.items()
               if site["type"] == "sample" and not site_is_subsample(site)
               and (not site["is_observed"] or _deterministic(site) or n in values)}
        if observed:  # deterministic sites conditioned too: unconditioned, Pyro redraws them from a Delta
            rep = _trace(poutine.condition(poutine.uncondition(fn0), data=dict(row)), batch)
            for n, site in tr.nodes.items():
                if site["type"] == "sample" and site["is_observed"] and not _deterministic(site) \
                        and n not in values and not site_is_subsample(site):
                    row[n] = rep.nodes[n]["value"].detach()
        if not vectorized:
            return row
        out = {}
        for n, v in row.items():
            shape = (S,) + tuple(single.nodes[n]["value"].shape)
            assert v.numel() == math.prod(shape), n  # a model that does not broadcast over draws: one by one
            out[n] = v.reshape(shape)
        return out
