"""The amortized guide: an encoder network q_phi(z_i | x_i) for every per-datapoint continuous latent.

Amortized variational inference (Kingma & Welling 2013, sec. 2.2; Rezende et al. 2014) replaces the
N sets of local variational parameters of SVI by one network: for each local continuous site s of
the model (a sample site inside ``pyro.plate("data")``) the guide is

    q_phi(s_i | x_i) = T_s # Normal(mu_phi,s(x_i), diag sigma_phi,s(x_i)^2),

with T_s = ``biject_to(support of s)`` (identity for real sites, exp for positive ones, stick
breaking for simplices), mu and sigma = softplus(.) + ``min_scale`` read from one MLP over the
flattened x_i. Global latent sites (outside the data plate) get an ``AutoNormal`` (or ``AutoDelta``)
of their own, as in Pyro's ``AutoGuideList``; discrete latents stay hidden and are enumerated by the
objective. Sites and shapes are discovered from one trace of the model on the first batch, so any
model with per-datapoint continuous latents can use ``guide="amortized"``.

Options (``guide_options`` / ``make_guide(..., hidden=, depth=, ...)``): ``hidden`` (200), ``depth``
(2), ``activation`` (tanh), ``min_scale`` (1e-3), ``global_guide`` (auto_normal | auto_delta).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.infer import autoguide
from pyro.infer.autoguide.initialization import init_to_median
from torch import nn
from torch.distributions import biject_to

from ppvae._util.params import LocalParams
from ppvae._util.validation import PPVAEError, check_choice, check_float, check_int
from ppvae.model.base import Model
from ppvae.model.nn import ACTIVATIONS, mlp
from ppvae.model.structure import DATA_PLATE, data_plate, structure_of

__all__ = ["AmortizedGuide", "local_site_info", "amortized_guide"]

def is_real_support(support) -> bool:
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.real


def local_site_info(model, batch) -> tuple[dict, list[str], list[str]]:
    """From one trace of ``model`` on ``batch``: the local continuous sites ``name -> dict(dim=data
    plate dim, right=number of singleton batch dims right of it, event=unconstrained event shape,
    event_dim=, support=, transform=)``, the names of the global continuous sites and of the discrete ones."""
    structure = structure_of(model, batch)
    with poutine.block(), pyro.validation_enabled(False):
        trace = poutine.trace(model).get_trace(batch)
    discrete = list(structure.discrete_sites)
    globals_ = [n for n in structure.global_sites if n not in discrete]
    local = {}
    for name in structure.continuous_local_sites:
        site = trace.nodes[name]
        fn = site["fn"]
        frame = next(f for f in site["cond_indep_stack"] if f.name == DATA_PLATE)
        if frame.dim is None:
            raise PPVAEError(f"guide: amortized needs a vectorized data plate; site '{name}' is in a sequential one")
        transform = biject_to(fn.support)
        unconstrained = transform.inv(site["value"])
        event_dim = fn.event_dim
        batch_ndim = unconstrained.dim() - event_dim
        right = unconstrained.shape[batch_ndim + frame.dim + 1 : batch_ndim]
        if any(s != 1 for s in right):
            raise PPVAEError(f"guide: amortized supports local sites whose only plate of size > 1 is the data plate; "
                             f"site '{name}' has batch shape {tuple(unconstrained.shape[:batch_ndim])}")
        local[name] = {"dim": frame.dim, "right": len(right), "event": tuple(unconstrained.shape[batch_ndim:]),
                       "event_dim": event_dim, "support": fn.support, "transform": transform,
                       "real": is_real_support(fn.support)}
    return local, globals_, discrete


def site_distribution(info: dict, loc: torch.Tensor, scale: torch.Tensor) -> dist.Distribution:
    """T # Normal(loc, scale) with ``loc``/``scale`` of shape (M, *event) -> batch (M, 1...) per ``info``."""
    shape = loc.shape[:1] + (1,) * info["right"] + info["event"]
    base = dist.Normal(loc.reshape(shape), scale.reshape(shape)).to_event(len(info["event"]))
    if info["real"]:
        return base
    return dist.TransformedDistribution(base, [info["transform"]])


class AmortizedGuide(LocalParams, nn.Module):
    """Encoder network for the local continuous sites plus an autoguide for the global ones."""

    def __init__(self, model: Model, init_loc_fn=init_to_median, hidden: int = 200, depth: int = 2,
                 activation: str = "tanh", min_scale: float = 1e-3, global_guide: str = "auto_normal"):
        super().__init__()
        self.__dict__["model"] = model  # not a submodule: the model's weights are saved with the model
        self.hidden = check_int("hidden", hidden, low=1)
        self.depth = check_int("depth", depth, low=0)
        self.activation = check_choice("activation", activation, tuple(ACTIVATIONS))
        self.min_scale = check_float("min_scale", min_scale, low=0.0, strict=True)
        self.global_kind = check_choice("global_guide", global_guide, ("auto_normal", "auto_delta"))
        self.init_loc_fn = init_loc_fn
        self.sites: dict | None = None
        self.encoder: nn.Module | None = None
        self.global_guide: nn.Module | None = None

    def _setup(self, batch) -> None:
        local, globals_, discrete = local_site_info(self.model, batch)
        if not local:
            raise PPVAEError(f"guide: amortized needs local continuous latent sites inside pyro.plate('{DATA_PLATE}'); "
                             f"model '{self.model.name or type(self.model).__name__}' has none (use auto_normal)")
        dims = {info["dim"] for info in local.values()}
        if len(dims) > 1:
            raise PPVAEError(f"guide: amortized expects one data plate dimension for all local sites; "
                             f"got {sorted(dims)}")
        self.sites, self.data_dim = local, dims.pop()
        in_dim = int(math.prod(batch.x.shape[1:]))
        out = sum(2 * math.prod(info["event"]) for info in local.values())
        widths = [in_dim] + [self.hidden] * self.depth + [out]
        self.encoder = mlp(widths, ACTIVATIONS[self.activation]).to(batch.x.device)
        if globals_:
            hidden = set(local) | set(discrete)
            part = poutine.block(self.model, hide_fn=lambda m: m["type"] == "sample" and m["name"] in hidden)
            cls = autoguide.AutoNormal if self.global_kind == "auto_normal" else autoguide.AutoDelta
            self.global_guide = cls(part, init_loc_fn=self.init_loc_fn)

    def local_params(self, batch) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The encoder's output per local site: (loc, scale) of shape (M, *event), unconstrained space."""
        if self.sites is None:
            self._setup(batch)
        h = self.encoder(batch.x.reshape(len(batch), -1))
        out, start = {}, 0
        for name, info in self.sites.items():
            size = math.prod(info["event"])
            loc = h[:, start : start + size].reshape((len(batch),) + info["event"])
            raw = h[:, start + size : start + 2 * size].reshape((len(batch),) + info["event"])
            out[name] = (loc, nn.functional.softplus(raw) + self.min_scale)
            start += 2 * size
        return out

    def _plate(self, batch, dim):
        return data_plate(batch, dim)  # the model's own data plate, at the dim the model uses

    def forward(self, batch):
        params = self.local_params(batch)
        values = dict(self.global_guide(batch)) if self.global_guide is not None else {}
        with self._plate(batch, self.data_dim):
            for name, (loc, scale) in params.items():
                values[name] = pyro.sample(name, site_distribution(self.sites[name], loc, scale))
        return values

    @torch.no_grad()
    def median(self, batch) -> dict[str, torch.Tensor]:
        """Global medians from the autoguide; local sites at T(mu_phi(x))."""
        params = self.local_params(batch)
        values = dict(self.global_guide.median(batch)) if self.global_guide is not None else {}
        for name, (loc, _) in params.items():
            info = self.sites[name]
            loc = loc.reshape(loc.shape[:1] + (1,) * info["right"] + info["event"])
            values[name] = loc if info["real"] else info["transform"](loc)
        return values


def amortized_guide(model: Model, init_loc_fn=init_to_median, **options):
    """The factory registered as guide ``"amortized"`` (by :mod:`ppvae.infer.svi.guides`)."""
    return AmortizedGuide(model, init_loc_fn=init_loc_fn, **options)
