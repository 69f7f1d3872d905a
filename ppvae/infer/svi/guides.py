"""Guides by name: Pyro's autoguides wrapped so any ppvae model can swap them without changes.

``make_guide(spec, model)`` accepts a registered name, a guide object/callable of the user's, or
``"model"`` for the model's own ``guide`` method. Discrete latent sites are hidden from the
autoguide (``poutine.block``): the model enumerates them and ``TraceEnum_ELBO`` sums them out, so
the guide covers only the continuous latents.

Registered names (the families of Pyro's ``pyro/infer/autoguide/guides.py``):

* ``auto_delta`` -- MAP point estimates (:class:`~pyro.infer.autoguide.AutoDelta`);
* ``auto_normal`` -- mean-field normal in the unconstrained space (:class:`AutoNormal`);
* ``auto_lowrank_mvn`` -- low-rank plus diagonal multivariate normal (:class:`AutoLowRankMultivariateNormal`);
* ``auto_mvn`` -- full-rank multivariate normal (:class:`AutoMultivariateNormal`);
* ``auto_iaf`` -- a normalizing flow of inverse autoregressive transforms (:class:`AutoIAFNormal`,
  Kingma et al. 2016);
* ``model`` -- the model's own ``guide(batch)``.

Amortized encoders are registered by :func:`register_guide` the same way.
"""

from __future__ import annotations

from typing import Any, Callable

import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import autoguide
from pyro.infer.autoguide.initialization import init_to_median, init_to_sample, init_to_value
from torch.distributions import biject_to as constraints_biject
from torch.distributions import constraints

from ppvae._util.params import LocalParams, local_params
from ppvae._util.validation import PPVAEError
from ppvae.infer.svi.amortized import amortized_guide
from ppvae.model.base import Model
from ppvae.model.structure import DATA_PLATE

__all__ = ["make_guide", "register_guide", "list_guides", "guide_spec_name"]

GuideFactory = Callable[..., Callable]
_GUIDES: dict[str, tuple[GuideFactory, str]] = {}


def register_guide(name: str, description: str):
    """Decorator: register ``factory(model, init_loc_fn=..., **options) -> guide`` under ``name``."""

    def wrap(factory):
        _GUIDES[name] = (factory, description)
        return factory

    return wrap


def list_guides() -> dict[str, str]:
    """Names of the registered guides (``make_guide``'s spec), with one-line descriptions."""
    return {name: desc for name, (_, desc) in sorted(_GUIDES.items())}


def _continuous_part(model: Model) -> Callable:
    """The model with its discrete latent sites hidden, the part an autoguide approximates."""

    def is_discrete_latent(msg: dict) -> bool:
        return (
            msg["type"] == "sample"
            and not msg["is_observed"]
            and getattr(msg["fn"], "support", None) is not None
            and msg["fn"].support.is_discrete
        )

    return poutine.block(model, hide_fn=is_discrete_latent)


def _auto(cls, **fixed):
    def factory(model: Model, init_loc_fn=init_to_median, **options):
        return cls(_continuous_part(model), init_loc_fn=init_loc_fn, **fixed, **options)

    return factory


def _local(cls: type) -> type:
    """``cls`` whose calls run with module-local parameters (:mod:`ppvae._util.params`); same name, same base."""
    return type(cls.__name__, (LocalParams, cls), {"__module__": __name__, "__qualname__": f"_local_{cls.__name__}",
                                                    "__doc__": cls.__doc__})


_local_AutoDelta, _local_AutoNormal = _local(autoguide.AutoDelta), _local(autoguide.AutoNormal)
_local_AutoLowRankMultivariateNormal = _local(autoguide.AutoLowRankMultivariateNormal)
_local_AutoMultivariateNormal = _local(autoguide.AutoMultivariateNormal)

register_guide("auto_delta", "MAP point estimates of every continuous latent (AutoDelta)")(_auto(_local_AutoDelta))
register_guide("auto_normal", "mean-field normal over the unconstrained latents (AutoNormal)")(
    _auto(_local_AutoNormal)
)
register_guide("auto_lowrank_mvn", "low-rank + diagonal multivariate normal (AutoLowRankMultivariateNormal)")(
    _auto(_local_AutoLowRankMultivariateNormal)
)
register_guide("auto_mvn", "full-rank multivariate normal (AutoMultivariateNormal)")(
    _auto(_local_AutoMultivariateNormal)
)


class _AutoIAF(LocalParams, autoguide.AutoIAFNormal):
    """:class:`~pyro.infer.autoguide.AutoIAFNormal` whose flow output is shifted to the model's initial
    values: q(z) = law of T(eps) + z0, eps ~ N(0, I), T a stack of inverse autoregressive transforms
    (Kingma et al. 2016, eq. 10), z0 the unconstrained initial latent vector. Pyro's version starts
    at z0 = 0, which on data far from the origin starts the fit in a region of negligible mass."""

    def __init__(self, model, init_loc_fn, hidden_dim=None, num_transforms=2):
        super().__init__(model, hidden_dim=hidden_dim, num_transforms=num_transforms)
        # AutoIAFNormal ignores init_loc_fn; re-wrap the model so the prototype carries our initial values.
        autoguide.AutoContinuous.__init__(self, model, init_loc_fn=init_loc_fn)

    def get_posterior(self, *args, **kwargs):
        posterior = super().get_posterior(*args, **kwargs)
        if getattr(self, "_shift", None) is None:
            self.register_buffer("_shift", self._init_loc())
        shift = dist.transforms.AffineTransform(self._shift, 1.0, event_dim=1)
        return dist.TransformedDistribution(posterior.base_dist, list(posterior.transforms) + [shift])


@register_guide("auto_iaf", "normalizing flow: inverse autoregressive transforms (AutoIAFNormal)")
def _iaf(model: Model, init_loc_fn=init_to_median, hidden_dim: int | None = None, num_transforms: int = 2):
    return _AutoIAF(_continuous_part(model), init_loc_fn, hidden_dim=hidden_dim, num_transforms=num_transforms)


register_guide("amortized", "encoder network q(z_i | x_i) for local continuous latents (+ AutoNormal for globals)")(
    amortized_guide)


@register_guide("model", "the model's own guide(batch) method")
def _own(model: Model, init_loc_fn=None):
    if not model.has_own_guide:
        choices = ", ".join(sorted(_GUIDES))
        raise PPVAEError(f"guide: model '{model.name}' defines no guide of its own; choose one of {choices}")
    return model.guide


def guide_spec_name(spec: Any) -> str:
    """A printable name for a guide spec (registered name, or the object's class name)."""
    return spec if isinstance(spec, str) else type(spec).__name__


def init_off_saddle(site=None):
    """Pyro's ``init_to_median``, except that a value whose entries are all equal along a plate over components or
    a simplex (weights 1/K each: Pyro starts every Dirichlet at the uniform simplex, the median of a multivariate
    distribution being undefined) is replaced by a draw from the site's prior (``init_to_sample``). Exchangeable
    components started equal get equal gradients and stay equal, an exact saddle of a mixture's symmetric
    objective (issue 29: class proportions 0.25 each after a MAP fit). The start of ``auto_delta`` (a point
    estimate; Gaussian guides start at the median and their draws break ties). A model's own ``init_values`` are
    kept.
    Tied non-simplex values along a component plate (locations, slopes) move a tenth of the way (in unconstrained
    space) to a prior draw; tied simplexes along it (a confusion matrix's rows) are drawn from the prior.

    A simplex under a sparse Dirichlet prior (concentration < 1, e.g. LDA's Dirichlet(0.1) topics over words) outside
    a component plate is jittered rather than redrawn: its prior draw sits near a vertex, a start from which softmax
    gradients vanish; w_k proportional to (1/K) exp(0.3 e_k), e ~ N(0, I), is off the saddle and in the interior."""
    if site is None:
        return init_off_saddle
    value = init_to_median(site)
    v = value.detach()
    if v.dim() < 1 or v.shape[-1] < 2 or not bool((v == v[..., :1]).all()):
        return value
    components = any(f.size == v.shape[-1] and f.name != DATA_PLATE and f.dim == -1 for f in site["cond_indep_stack"])
    simplex = site["fn"].support is constraints.simplex
    if simplex and not components and _sparse_dirichlet(site["fn"]):
        jittered = v * torch.exp(0.3 * torch.randn_like(v))
        return jittered / jittered.sum(-1, keepdim=True)
    if components and not simplex:  # tied locations, slopes: a prior draw pulled 90% of the way back (below)
        return _toward(site, value, init_to_sample(site), 0.1)
    return init_to_sample(site) if simplex or components else value


def _toward(site, start: torch.Tensor, draw: torch.Tensor, share: float) -> torch.Tensor:
    """``start`` moved ``share`` of the way to ``draw`` in the unconstrained space of the site's support: ties broken
    at the data's scale (a full prior draw, e.g. N(0, 3^2) regression weights, starts far from it)."""
    transform = constraints_biject(site["fn"].support)
    u = transform.inv(start)
    return transform(u + share * (transform.inv(draw) - u)).detach()


def _sparse_dirichlet(fn) -> bool:
    """Whether ``fn`` is (a batch of) Dirichlet with a concentration below 1, whose draws sit near a vertex."""
    while not isinstance(fn, dist.Dirichlet) and hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return isinstance(fn, dist.Dirichlet) and bool((fn.concentration < 1).any())


def make_guide(spec: Any, model: Model, init_values: dict[str, torch.Tensor] | None = None, **options) -> Callable:
    """The guide for ``model`` named by ``spec`` (a registered name, ``"auto"``, or a callable).

    ``"auto"`` is the model's own guide if it has one, else ``auto_normal``. ``init_values`` (site
    name -> value) initialize the guide's locations, falling back to the prior median.
    """
    if spec == "auto":
        spec = "model" if model.has_own_guide else "auto_normal"
    if callable(spec) and not isinstance(spec, str):
        if options:
            raise PPVAEError(f"guide_options: apply only to a guide given by name; got {sorted(options)}")
        return spec
    if not isinstance(spec, str) or spec not in _GUIDES:
        raise PPVAEError(f"guide: expected one of {', '.join(sorted(_GUIDES))} or a guide callable; got {spec!r}")
    # a point estimate started at a symmetric saddle stays there; a Gaussian guide's draws break the tie themselves
    start = init_off_saddle if spec == "auto_delta" else init_to_median
    init = init_to_value(values=init_values, fallback=start) if init_values else start
    try:
        with local_params():  # built with module-local parameters; its calls are wrapped too (LocalParams)
            return _GUIDES[spec][0](model, init_loc_fn=init, **options)
    except TypeError as exc:
        raise PPVAEError(f"guide_options: guide '{spec}' does not accept {sorted(options)} ({exc})") from None
    except ValueError as exc:  # an option value the autoguide rejects, e.g. rank <= 0
        raise PPVAEError(f"guide_options: guide '{spec}' rejected {options} ({exc})") from None

