"""Bidirectional Monte Carlo: a sandwich of log p(x) on simulated data (Grosse et al. 2015,
"Sandwiching the marginal likelihood using bidirectional Monte Carlo", sec. 3-4; Wu et al. 2017,
"On the quantitative analysis of decoder-based generative models", sec. 4).

Points are drawn from the fitted model: the globals G at the fit's point estimate, for each point
(x_i, c_i, z_i) ~ p(x, c, z | G), keeping the exact local latents. Then per point

* forward AIS from the proposal to p(c_i | x_i, G): E[log (1/C) sum_c w_c] <= log p(x_i | G), a
  stochastic lower bound (Jensen; Neal 2001);
* reverse AIS from the exact c_i (an exact posterior draw given x_i) back to the proposal: its
  weights w'_c estimate 1 / p(x_i | G), so -log (1/C) sum_c w'_c is a stochastic upper bound.

Both use the same schedule, transitions and discrete-latent sums as :func:`ppvae.log_marginal` with
``method="ais"``. The gap upper - lower bounds the error of forward AIS on points like these; it
closes as T grows, which is how a schedule is certified before trusting AIS on real data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyro
import torch
from pyro import poutine

from ppvae._util.validation import PPVAEError, check_int
from ppvae.data.loaders import Batch, Dataset
from ppvae.evaluate.estimate import _global_values, _prepare, _resolve, _run_data, _seeded
from ppvae.evaluate.local_ais import ais_log_marginal, check_ais_options, data_dim
from ppvae.model.structure import is_local

__all__ = ["BDMCResult", "bdmc", "simulate"]


@dataclass
class BDMCResult:
    """Per-T, per-point bounds (float64 tensors of shape (len(num_steps), num_points))."""

    num_steps: list
    lower: torch.Tensor
    upper: torch.Tensor
    accept_forward: torch.Tensor
    accept_reverse: torch.Tensor
    lower_mc_stderr: torch.Tensor  # (len(num_steps),): Monte Carlo standard error of the mean bound
    upper_mc_stderr: torch.Tensor
    num_chains: int
    proposal: str
    x: torch.Tensor = field(repr=False)
    settings: dict = field(default_factory=dict)
    y: torch.Tensor | None = field(default=None, repr=False)  # a regression's simulated response (x: covariates)

    @property
    def gap(self) -> torch.Tensor:
        return self.upper - self.lower

    @property
    def mean_lower(self) -> list[float]:
        return [float(v) for v in self.lower.mean(-1)]

    @property
    def mean_upper(self) -> list[float]:
        return [float(v) for v in self.upper.mean(-1)]

    @property
    def mean_gap(self) -> list[float]:
        return [float(v) for v in self.gap.mean(-1)]

    def to_dict(self) -> dict:
        """The ``bdmc`` object of metrics.json: per T the mean bounds, the mean and max gap, acceptance."""
        rows = [{"num_steps": t, "mean_lower": lo, "mean_upper": up, "mean_gap": g,
                 "max_gap": float(self.gap[i].max()), "accept_forward": float(self.accept_forward[i].nanmean()),
                 "accept_reverse": float(self.accept_reverse[i].nanmean())}
                for i, (t, lo, up, g) in enumerate(zip(self.num_steps, self.mean_lower, self.mean_upper,
                                                       self.mean_gap, strict=True))]
        return {"num_points": self.lower.shape[-1], "num_chains": self.num_chains, "proposal": self.proposal,
                "settings": self.settings, "rows": rows}

    def table(self) -> str:
        lines = [f"{'T':>7} {'lower':>12} {'upper':>12} {'gap':>9} {'max gap':>9} {'accept f/r':>11}"]
        for r in self.to_dict()["rows"]:
            lines.append(f"{r['num_steps']:>7} {r['mean_lower']:>12.4f} {r['mean_upper']:>12.4f} {r['mean_gap']:>9.4f} "
                         f"{r['max_gap']:>9.4f} {r['accept_forward']:>5.2f}/{r['accept_reverse']:.2f}")
        return "\n".join(lines)


def simulate(model, globals_: dict, template: torch.Tensor, num_points: int,
             y: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """``num_points`` draws (x_i, c_i, z_i) ~ p(x, c, z | G) from ``model`` with the globals fixed:
    returns x (num_points, *template.shape[1:]) and the local continuous latents, name -> (value,
    data dim). The model must observe the data point at one site of the data plate.

    A regression (``y``, a real-valued response, given): ``template`` holds the covariates of the
    ``num_points`` points, which stay fixed, ``y`` is shaped like the response, and the response
    y_i ~ p(y | x_i, G) is what is drawn and returned in place of x."""
    if y is None:
        x0 = template[:1].expand(num_points, *template.shape[1:]).clone()
        observed_like = x0
    else:
        if len(template) != num_points or len(y) != num_points:
            raise PPVAEError(f"y: expected the covariates and response of {num_points} points; got "
                             f"{len(template)} and {len(y)}")
        x0, observed_like = template, y
    batch = Batch(x0, y, torch.arange(num_points, device=x0.device), num_points)
    with pyro.validation_enabled(False):
        tr = poutine.trace(poutine.condition(poutine.uncondition(model), data=globals_)).get_trace(batch)
    observed = [n for n, s in tr.nodes.items() if s["type"] == "sample" and s["infer"].get("was_observed")
                and is_local(s)]
    if len(observed) != 1 or tr.nodes[observed[0]]["value"].numel() != observed_like.numel():
        held = "point" if y is None else "response y"
        raise PPVAEError(f"model: BDMC simulates each data point from the model, which needs exactly one observed "
                         f"site in pyro.plate('data') holding the {held}; got {', '.join(observed) or 'none'}")
    out = tr.nodes[observed[0]]["value"].reshape(observed_like.shape).to(observed_like.dtype)
    latents = {n: (s["value"].detach(), data_dim(s)) for n, s in tr.nodes.items()
               if s["type"] == "sample" and not s["is_observed"] and not s["infer"].get("was_observed")
               and is_local(s) and not s["fn"].support.is_discrete}
    return out, latents


def bdmc(fit_or_model_guide, data=None, *, num_points: int = 100, num_steps=(100, 200, 400), num_chains: int = 16,
         proposal="guide", schedule="sigmoid", num_leapfrog: int = 5, step_size: float = 0.1,
         target_accept: float = 0.65, chunk_size: int | None = None, seed: int = 0,
         progress: bool | None = None) -> BDMCResult:
    """Forward and reverse AIS on ``num_points`` points simulated from the fitted model, for each T in
    ``num_steps`` (an int or a list); see the module docstring. ``data``: the data the globals are
    read from and whose point shape is simulated (default: a Fit's own data set); for a regression
    (``Dataset(x, y)``, real-valued y) the points keep the data's covariates (rows in order, cycled when
    ``num_points`` exceeds them) and y is simulated given them. Other options as
    :func:`ppvae.log_marginal` with ``method="ais"``."""
    steps = [num_steps] if isinstance(num_steps, int) else list(num_steps)
    if not steps:
        raise PPVAEError("num_steps: expected an integer >= 1 or a non-empty list of them; got []")
    steps = [check_int("num_steps", t, low=1) for t in steps]
    num_points = check_int("num_points", num_points, low=1)
    seed = check_int("seed", seed)
    check_ais_options(steps[0], num_chains, schedule, num_leapfrog, step_size, target_accept)
    model, guide, fit = _resolve(fit_or_model_guide)
    if data is None:
        if fit is None:
            raise PPVAEError("data: pass a data set (its point shape and the globals) for a (model, guide) pair")
        data = _run_data(fit, None)
    template = _prepare(fit_or_model_guide, data, "prior", 1, None, 0)
    ds, names = template[6], template[11]
    with torch.no_grad(), _seeded(seed, ds.x.device):
        globals_ = {k: v.detach() for k, v in _global_values(fit, model, guide, ds, names, None).items()}
        if ds.has_response:  # a regression: the covariates of the data (in order, cycled), y drawn given them
            rows = torch.arange(num_points, device=ds.x.device) % len(ds)
            x, y = ds.x[rows], ds.y[rows]
            y, latents = simulate(model, globals_, x, num_points, y=y)
        else:
            x, latents = simulate(model, globals_, ds.x, num_points)
            y = None
    if not latents:
        raise PPVAEError("model: BDMC anneals local continuous latents; the model has none (its log p(x_i) "
                         "is exact by enumeration)")
    sim = Dataset(x, y, name="simulated")
    rows = {k: [] for k in ("lower", "upper", "acc_f", "acc_r", "se_f", "se_r")}
    for i, t in enumerate(steps):
        settings, betas = check_ais_options(t, num_chains, schedule, num_leapfrog, step_size, target_accept)
        for direction, b, start in (("f", betas, None), ("r", betas.flip(0), latents)):
            prepared = _prepare(fit_or_model_guide, sim, proposal, settings["num_chains"], chunk_size,
                                seed + 2 * i + (direction == "r") + 1)
            out, acc, _, _ = ais_log_marginal(prepared, settings, b, globals_, progress, start=start)
            rows["lower" if direction == "f" else "upper"].append(out["values"] if direction == "f" else -out["values"])
            rows["acc_" + direction].append(acc)
            rows["se_" + direction].append(out["mc_stderr"].pow(2).sum().sqrt() / num_points)
    qname = prepared[9]
    return BDMCResult(num_steps=steps, lower=torch.stack(rows["lower"]), upper=torch.stack(rows["upper"]),
                      accept_forward=torch.stack(rows["acc_f"]), accept_reverse=torch.stack(rows["acc_r"]),
                      lower_mc_stderr=torch.stack(rows["se_f"]), upper_mc_stderr=torch.stack(rows["se_r"]),
                      num_chains=settings["num_chains"], proposal=qname, x=x, y=y,
                      settings={k: v for k, v in settings.items() if k != "num_steps"})

