"""Declared model capabilities: the optional hooks of a :class:`ppvae.Model`, as named abstract mixins.

A model says what it can do beyond its generative story by listing capability classes among its bases,
``class GMM(ppvae.Model, ppvae.ClosedFormEM, ppvae.Mixture)``, and implementing their abstract methods
(Python's :mod:`abc` refuses to build an instance that leaves one out). The engine and the command line
ask ``isinstance(model, ppvae.ClosedFormEM)``, never whether a method of some name exists, and
:func:`require` turns a missing capability into one :class:`~ppvae.PPVAEError` line naming the model, the
capability and the methods to implement.

The hook names are reserved: a :class:`ppvae.Model` subclass that defines one of them without declaring
its capability is refused when the class is created (:func:`check_declared`, a ``TypeError`` naming the
capability to add), so a hook is never half-seen (found by one caller and missed by another).

Each capability's ``hooks`` lists every method it reserves (the abstract ones and the ones with a default).
"""

from __future__ import annotations

import abc
import inspect
from typing import Any, Callable, ClassVar

import torch

from ppvae._util.validation import PPVAEError

__all__ = ["Capability", "ClosedFormEM", "ClosedFormPotential", "ExactPosterior", "Mixture", "CoordinateAscentVI",
           "ConjugateExponential", "Reports", "ConditionsOnSubset", "CAPABILITIES", "require", "capabilities_of",
           "check_declared", "observed_part", "check_mask_support"]


class Capability(abc.ABC):  # noqa: B024 (a base for isinstance; its subclasses hold the abstract methods)
    """Base of the declared model capabilities. ``purpose`` says in a few words what a model declaring it
    offers (used in error messages); ``hooks`` names every method it reserves."""

    purpose: ClassVar[str] = ""
    hooks: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def required(cls) -> list[str]:
        """The methods a model declaring this capability must implement (the abstract ones), as signatures."""
        names = [h for h in cls.hooks if h in getattr(cls, "__abstractmethods__", ())] or list(cls.hooks)
        return [_signature(cls, h) for h in names]


def _signature(cls, name: str) -> str:
    member = inspect.getattr_static(cls, name)
    if not callable(member):
        return name
    params = list(inspect.signature(member).parameters.values())[1:]  # without self
    return f"{name}({', '.join(str(p.replace(annotation=p.empty)) for p in params)})"


class ClosedFormEM(Capability):
    """Expectation-maximization in closed form (what :func:`ppvae.fit_em` and ``ppvae em`` need).

    EM (Dempster, Laird & Rubin 1977) maximizes log p(X | theta) = sum_i log sum_z p(x_i, z | theta): the
    E step computes q(z_i) = p(z_i | x_i, theta_t), the M step theta_{t+1} = argmax_theta
    sum_i E_q[log p(x_i, z_i | theta)]; no iteration decreases the log-likelihood (Bishop 2006, sec. 9.4).
    The driver works in float64 and keeps the best of several restarts.
    """

    purpose = "closed-form EM"
    hooks = ("em_init", "em_step", "em_to_sites", "em_responsibilities", "em_partial_step")

    @abc.abstractmethod
    def em_init(self, x: torch.Tensor, generator: torch.Generator, init: dict | None = None) -> dict:
        """Starting parameters (a dict of float64 tensors) drawn with ``generator``, or built from ``init``
        (site values, e.g. another fit's) when given."""

    @abc.abstractmethod
    def em_step(self, x: torch.Tensor, params: dict) -> tuple[dict, torch.Tensor]:
        """One E and M step: ``(new_params, log_lik)``, with ``log_lik`` the per-point log p(x_i | params) at
        the *incoming* parameters, shape (N,) (the E step computes it for free)."""

    @abc.abstractmethod
    def em_to_sites(self, params: dict) -> dict[str, torch.Tensor]:
        """The EM parameters as values of the model's sample sites (what ``EMFit.global_values`` returns and
        ``run_mcmc(init=em_fit)`` starts from)."""

    def em_responsibilities(self, x: torch.Tensor, params: dict) -> torch.Tensor | None:
        """p(z_i = k | x_i, params), shape (N, K), for the mixture figure of ``ppvae em``; None (the
        default): no figure."""
        return None

    def em_partial_step(self, x: torch.Tensor, params: dict, iteration: int):
        """A generalized-EM iteration (``fit_em(m_step="partial")``): the E step, then an M step that raises Q
        without maximizing it (e.g. one conditional maximization), as ``em_step`` returns. A model that does not
        override it has none (``fit_em`` refuses ``m_step="partial"``)."""
        raise NotImplementedError("em_partial_step")


class ClosedFormPotential(Capability):
    """A closed-form likelihood with the discrete locals summed out, and optionally NUTS's potential and its
    gradient without autograd (what :func:`ppvae.run_mcmc` uses in place of enumeration and autograd).

    NUTS/HMC sample u with potential U(u) = -[log p(theta) + sum_i log p(x_i | theta) + log \\|det J_T(u)\\|],
    theta = T(u) (Hoffman & Gelman 2014); log p(x_i | theta) = log sum_{z_i} p(x_i, z_i | theta) is the
    pointwise term below. A closed-form gradient is checked against autograd at the first chain's start and
    refused when it disagrees.
    """

    purpose = "closed-form likelihood for NUTS"
    hooks = ("pointwise_log_likelihood", "closed_form_potential")

    @abc.abstractmethod
    def pointwise_log_likelihood(self, values: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """log p(x_i | globals) per point, shape (N,), the discrete local latents summed in closed form
        (e.g. a GMM's log sum_k w_k N(x_i | mu_k, Sigma_k), Bishop 2006, eq. 9.7); ``values`` holds the
        global sites."""

    def closed_form_potential(self, x: torch.Tensor, order: tuple[str, int] | None = None) -> Callable | None:
        """A function of the unconstrained sites ``u`` (a dict) returning ``(U, {site: dU/du})`` for data
        ``x`` (and the location ordering ``order`` of ``run_mcmc``), e.g. the diagonal GMM's Fisher-identity
        gradient; None (the default): autograd differentiates U."""
        return None


class ExactPosterior(Capability):
    """The posterior in closed form (what :func:`ppvae.exact_posterior` and ``compare``'s ``exact`` use).

    With the exact posterior as an importance-sampling proposal every weight p(x, z) / q(z | x) equals p(x),
    so estimates of log p(x) have zero variance (a test of the estimators, and the reference of a comparison).
    """

    purpose = "closed-form posterior"
    hooks = ("posterior_guide",)

    @abc.abstractmethod
    def posterior_guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Callable:
        """A guide ``guide(batch)`` that samples the model's latent sites from their exact posterior given the
        data ``x`` and, for a regression, its response ``y`` (None otherwise) (conjugate updates, e.g.
        Normal-Gamma: Murphy 2007, eqs. 85-89; Bayesian linear regression: Bishop 2006, eqs. 3.53-3.54)."""


class Mixture(Capability):
    """Exchangeable mixture components, whose labels are aligned across draws (NUTS, ArviZ, ``compare``).

    A mixture's posterior is invariant to permuting its K components; draws are relabelled by ordering one
    location coordinate (Jasra, Holmes & Stephens 2005, sec. 4.1). A model that does not declare Mixture has
    no components and no alignment, whatever its attributes are called.
    """

    purpose = "mixture components"
    hooks = ("num_components", "component_sites", "location_site", "mixture_components")

    @abc.abstractmethod
    def num_components(self) -> int:
        """K, the number of exchangeable components."""

    def component_sites(self, values: dict[str, torch.Tensor]) -> dict[str, int]:
        """Sites indexed by component, name -> axis of the component dimension (of one draw's ``values``).
        Default: every site whose leading dimension has size K (none when K < 2)."""
        K = self.num_components()
        if not isinstance(K, int) or K < 2:
            return {}
        return {n: 0 for n, v in values.items() if v.dim() >= 1 and v.shape[0] == K}

    def location_site(self, components: dict[str, int], supports: dict[str, Any]) -> str | None:
        """The component site whose coordinates order the labels. Default: the first of ``components`` with
        real support (``supports``: site -> support constraint)."""
        for name in components:
            base = getattr(supports.get(name), "base_constraint", supports.get(name))
            if base is torch.distributions.constraints.real:
                return name
        return None

    def mixture_components(self, values: dict[str, torch.Tensor]) -> tuple | None:
        """(weights (K,), locations (K, D), covariances (K, D, D)) from site values, for the 2-D mixture
        figure; None (the default): no figure."""
        return None


class CoordinateAscentVI(Capability):
    """Classical coordinate-ascent mean-field VI (``ppvae cavi``; Blei, Kucukelbir & McAuliffe 2017, sec. 2.4).

    Each factor q_j is set to exp E_{-j}[log p(x, z)] in turn, so the ELBO never decreases.
    """

    purpose = "coordinate-ascent VI"
    hooks = ("fit_cavi", "load_cavi")

    @abc.abstractmethod
    def fit_cavi(self, data, **options):
        """Fit by CAVI; a result implementing :class:`ppvae.Result` with ``save(dir)``."""

    @abc.abstractmethod
    def load_cavi(self, path: str):
        """The CAVI result saved in the run directory ``path``."""


class ConjugateExponential(Capability):
    """Conjugate-exponential mean-field updates (what :func:`ppvae.fit_conjugate` and :func:`ppvae.fit_svi_natural`
    need; Hoffman, Blei, Wang & Paisley 2013, sec. 2).

    The global variational parameters ``lam`` (a dict of float64 tensors) are the natural parameters of q's
    global factors, or coordinates linear in them, so that (1 - rho) lam + rho lam_hat is a natural-gradient
    step. ``ce_local`` optimizes the local factors of the rows it gets and returns their expected sufficient
    statistics summed over the rows (a dict; the driver scales a minibatch's by N / M); ``ce_global`` returns
    the CAVI update of every global factor, each from ``lam`` (Hoffman et al. 2013, eq. 32).
    """

    purpose = "conjugate-exponential updates"
    hooks = ("ce_init", "ce_local", "ce_global", "ce_elbo", "ce_values", "ce_draws", "ce_blocks", "ce_result",
             "ce_local_given", "ce_local_warmup")

    #: groups of ``lam``'s keys, one per global factor: batch CAVI updates them in this order (Gauss-Seidel)
    ce_blocks: ClassVar[tuple[tuple[str, ...], ...] | None] = None

    @abc.abstractmethod
    def ce_init(self, x: torch.Tensor, generator: torch.Generator, init: dict | None = None) -> dict:
        """Starting global parameters ``lam`` for data ``x`` (float64)."""

    @abc.abstractmethod
    def ce_local(self, x: torch.Tensor, lam: dict) -> dict:
        """The expected sufficient statistics of the rows ``x``, local factors at their optimum given ``lam``."""

    @abc.abstractmethod
    def ce_global(self, stats: dict, lam: dict) -> dict:
        """lam_hat: every global factor's coordinate update given (scaled) ``stats`` and the other factors' ``lam``."""

    @abc.abstractmethod
    def ce_elbo(self, x: torch.Tensor, lam: dict) -> float:
        """The ELBO in nats with the local factors at their optimum given ``lam`` (float64)."""

    @abc.abstractmethod
    def ce_values(self, lam: dict) -> dict[str, torch.Tensor]:
        """The posterior mean under q of every global site, site -> tensor."""

    @abc.abstractmethod
    def ce_draws(self, lam: dict, num_draws: int) -> dict[str, torch.Tensor]:
        """``num_draws`` draws of every global site from q (torch's global random state), site -> (S, ...)."""

    def ce_local_given(self, x: torch.Tensor, values: dict) -> dict:
        """Structured SVI's local step (Hoffman & Blei 2015): the rows' expected sufficient statistics with each local
        factor set to the exact conditional p(z_i | x_i, globals = ``values``), one draw of the globals from q. A
        model that does not override it has none (``fit_svi_natural(structured=True)`` refuses it)."""
        raise NotImplementedError("ce_local_given")

    def ce_local_warmup(self, x: torch.Tensor, lam: dict) -> dict:
        """The local step of the first ``warmup`` steps of :func:`ppvae.fit_svi_natural`: statistics of the same form
        as ``ce_local``'s from another local objective that starts the globals better (LDA: stochastic CVB0, Foulds
        et al. 2013). A model that does not override it has no warm-up (``warmup`` must be 0)."""
        raise NotImplementedError("ce_local_warmup")

    def ce_result(self, fit, data):
        """The result to hand back for ``fit`` (a ``ppvae.conjugate.ConjugateFit``) on ``data``; default: ``fit``
        (LDA returns its own CAVI result, with the topic-model methods)."""
        return fit


class Reports(Capability):
    """The command line's defaults and figures for a model (``ppvae fit``, ``ppvae cavi``). Every member has a
    default, so a model overrides only what it has."""

    purpose = "command-line defaults or reports"
    hooks = ("train_defaults", "fit_callbacks", "report")

    train_defaults: ClassVar[dict] = {}
    """``fit`` options (``lr``, ``betas``, ``batch_size``, ``elbo``, ``steps``, ``jit``) the command line uses
    for flags left unset."""

    def fit_callbacks(self, data) -> list | None:
        """:class:`ppvae.Callback` objects ``ppvae fit`` passes to the trainer (e.g. a test-loss curve)."""
        return None

    def report(self, fit, data, out_dir: str) -> dict | None:
        """Model-specific figures written into ``out_dir`` after a fit; a dict returned joins metrics.json."""
        return None


class ConditionsOnSubset(Capability):
    """Conditioning on the observed entries of partly missing data (a :class:`ppvae.Dataset` with a ``mask``).

    The model's likelihood site :meth:`masked_site` counts only the observed entries: for a likelihood that
    factorizes over the entries of a point, log p(x_obs | z) = sum_{d observed} log p(x_d | z), so the model's
    marginal is p(x_obs) = integral p(x_obs | z) p(z) dz, the missing entries integrated out exactly. ``forward``
    wraps that site's distribution in :func:`observed_part` with ``batch.mask`` (None: every entry observed).
    Posterior predictive draws of the site (``Result.predict``) then fill the missing entries from
    p(x_mis | x_obs) = integral p(x_mis | z) p(z | x_obs) dz (``Result.impute``).
    """

    purpose = "conditioning on observed subsets (missing values)"
    hooks = ("masked_site",)

    @abc.abstractmethod
    def masked_site(self) -> str:
        """The name of the observed sample site that the data's missing-value mask applies to."""


CAPABILITIES: tuple[type[Capability], ...] = (ClosedFormEM, ClosedFormPotential, ExactPosterior, Mixture,
                                              CoordinateAscentVI, ConjugateExponential, Reports, ConditionsOnSubset)


def observed_part(fn, mask: torch.Tensor | None):
    """``fn`` (a distribution, optionally ``.to_event(k)``) with its log-density counting only the entries where
    ``mask`` is True: sum_{d: mask_d} log p(x_d). The mask applies to the base distribution's batch entries
    before the event sum (``poutine.mask`` would mask whole points); draws are unchanged (every entry)."""
    if mask is None:
        return fn
    if isinstance(fn, torch.distributions.Independent):
        return type(fn)(fn.base_dist.mask(mask), fn.reinterpreted_batch_ndims)
    return fn.mask(mask)


def check_mask_support(model, data) -> None:
    """A one-line error when ``data`` (a Dataset or Batch) has missing values and ``model`` does not declare
    :class:`ConditionsOnSubset`."""
    if getattr(data, "mask", None) is not None:
        require(model, ConditionsOnSubset, f"data '{getattr(data, 'name', 'batch')}' has missing values")


def _name(model) -> str:
    cls = model if isinstance(model, type) else type(model)
    return getattr(model, "name", "") or cls.__name__


def capabilities_of(model) -> list[type[Capability]]:
    """The capabilities a model (or model class) declares, in :data:`CAPABILITIES` order."""
    cls = model if isinstance(model, type) else type(model)
    return [c for c in CAPABILITIES if issubclass(cls, c)]


def require(model, capability: type[Capability], what: str, hint: str = "") -> None:
    """Raise a one-line :class:`~ppvae.PPVAEError` unless ``model`` declares ``capability``.

    ``what`` names what needs it (``"ppvae em"``, ``"methods: 'em'"``); the message names the model, the
    capability and the methods to implement, then ``hint`` (e.g. the registered models that have it)::

        ppvae em: model 'ppca' has no closed-form EM (it does not declare ppvae.ClosedFormEM; implement
        em_init(x, generator, init=None), em_step(x, params), em_to_sites(params)); models with it: gmm, three_coin
    """
    cls = model if isinstance(model, type) else type(model)
    if issubclass(cls, capability):
        return
    message = (f"{what}: model '{_name(model)}' has no {capability.purpose} (it does not declare "
               f"ppvae.{capability.__name__}; implement {', '.join(capability.required())})")
    raise PPVAEError(message + (f"; {hint}" if hint else ""))


def check_declared(cls: type, base_classes: tuple[type, ...] = ()) -> None:
    """Refuse a model class that defines a capability's hook without declaring the capability (a
    ``TypeError`` naming the capability to add to its bases). ``base_classes``: classes not searched
    (the Model base and what it derives from)."""
    for cap in CAPABILITIES:
        if cap in cls.__mro__:
            continue
        found = [h for h in cap.hooks
                 if any(h in vars(base) for base in cls.__mro__ if base not in base_classes and base is not object)]
        if found:
            raise TypeError(f"model class '{cls.__name__}' ({cls.__module__}) defines {', '.join(found)}, reserved for "
                            f"ppvae.{cap.__name__} ({cap.purpose}), without declaring it: write "
                            f"class {cls.__name__}(..., ppvae.{cap.__name__}) or rename the method")
