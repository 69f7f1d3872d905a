"""Classical expectation-maximization, the driver shared by every model with closed-form steps.

EM (Dempster, Laird & Rubin 1977) maximizes log p(X | theta) = sum_i log sum_z p(x_i, z | theta) by
alternating the E step, q(z_i) = p(z_i | x_i, theta_t), and the M step,
theta_{t+1} = argmax_theta sum_i E_q[log p(x_i, z_i | theta)]. Each iteration cannot decrease the
log-likelihood (Dempster et al. 1977, Theorem 1; Bishop 2006, sec. 9.4): log p(X | theta) = L(q, theta)
+ KL(q || p(z | X, theta)), the E step closes the KL gap and the M step raises L. The driver records
the log-likelihood at every iteration so this can be checked, stops when an iteration gains less than
``ll_tol`` nats per point, and keeps the best of several restarts.

A model takes part by declaring :class:`ppvae.ClosedFormEM` and implementing

* ``em_init(x, generator) -> params`` (a dict of tensors),
* ``em_step(x, params) -> (new_params, log_lik)`` where ``log_lik`` is the per-point
  log p(x_i | params) at the *incoming* parameters (the E step computes it for free), and
* ``em_to_sites(params) -> dict`` mapping EM parameters to the model's sample sites.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from ppvae._util.parallel import parallel_map
from ppvae._util.validation import (
    PPVAEError,
    check_choice,
    check_float,
    check_int,
    check_options,
    describe_value,
    one_line,
    renamed,
    warn_at_caller,
)
from ppvae.data.loaders import Dataset
from ppvae.model.base import ClosedFormEM, Model, require
from ppvae.results.base import Result, as_batch
from ppvae.results.kinds import register_kind
from ppvae.runs import directory as runs

__all__ = ["fit_em", "EMFit"]


@dataclass
class EMFit(Result):
    """The result of :func:`fit_em`: best parameters, their total log-likelihood and every restart's trace.

    Implements :class:`ppvae.Result` as a point estimate: ``global_values`` are ``model.em_to_sites(params)``,
    ``log_likelihood(data)`` is per point (closed form from ``em_step``), ``history`` is
    ``{"log_likelihood": the best restart's trace, "restarts": every restart's trace}``."""

    model: Model
    params: dict
    log_likelihood_total: float  # total over the data set at ``params``
    traces: list[list[float]]  # per restart: total log-likelihood before each iteration
    best_restart: int
    converged: bool
    time_s: float = 0.0
    config: dict = field(default_factory=dict)
    data_info: dict = field(default_factory=dict)  # what config.json records of the data (runs.directory.data_info)

    method = "em"
    point_estimate = True
    history_key = "log_likelihood"

    @property
    def history(self) -> dict:
        return {"log_likelihood": list(self.traces[self.best_restart]), "restarts": self.traces}

    def global_values(self, data=None) -> dict[str, torch.Tensor]:
        """The EM parameters as the model's site values (``model.em_to_sites``), in the default dtype."""
        return {k: v.to(torch.get_default_dtype()) for k, v in self.model.em_to_sites(self.params).items()}

    def latent_draws(self, data, num_draws: int | None = 1000, seed: int = 0) -> dict[str, torch.Tensor]:
        """The point estimate repeated ``num_draws`` times (discrete locals are drawn by ``predict``)."""
        S = check_int("num_draws", 1000 if num_draws is None else num_draws, low=1)
        return {k: v.expand((S,) + v.shape) for k, v in self.global_values().items()}

    def log_likelihood(self, data) -> torch.Tensor:
        """Per-point log p(x_i | fitted parameters) (float64, closed form from ``model.em_step``)."""
        x = as_batch(data).x.to(torch.float64)
        _, ll = self.model.em_step(x, self.params)
        return ll

    def __repr__(self) -> str:  # the restarts' traces are in ``history``; a repr shows the summary only
        hp = ", ".join(f"{k}={v!r}" for k, v in self.model.hparams.items())
        return (f"EMFit(model={self.model.name}({hp}), log_likelihood_total={self.log_likelihood_total:.4f}, "
                f"restarts={len(self.traces)}, best_restart={self.best_restart}, "
                f"iterations={self.num_iterations}, converged={self.converged}, time_s={self.time_s:.2f})")

    @property
    def num_iterations(self) -> int:
        return len(self.traces[self.best_restart])

    def save(self, path: str, overwrite: bool = False) -> None:
        """Write a run directory of kind ``em`` (:mod:`ppvae.runs.directory`): the parameters and the model's
        buffers in ``params.pt``, every restart's trace in ``history.json``, the rest in ``config.json``.
        Another ppvae run at ``path`` is replaced whole only with ``overwrite=True`` (``runs.save_run``)."""
        runs.save_run(self, path, self._write, overwrite)

    def _write(self, path: str) -> None:
        config = runs.make_config("em", self.model, self.data_info, em=self.config,
                                  log_likelihood=self.log_likelihood_total, best_restart=self.best_restart,
                                  converged=self.converged, time_s=self.time_s)
        runs.write_tensors(path, runs.PARAMS, {"params": self.params, "model": self.model.state_dict()})
        runs.write_json(path, runs.HISTORY, self.traces, indent=None)
        runs.write_config(path, config)

    @classmethod
    def load(cls, path: str) -> "EMFit":
        """Read a run directory written by :meth:`save` (tensors only, version checked; no code runs)."""
        config = runs.read_config(path, "em")
        state = runs.read_tensors(path, runs.PARAMS, ("params", "model"))
        traces = runs.read_json(path, runs.HISTORY)
        model = runs.run_model(config, path)
        try:
            model.setup(runs.stub_dataset(config["data"]))
            model.load_state_dict(state["model"])
            return cls(model, dict(state["params"]), float(config["log_likelihood"]), traces,
                       int(config["best_restart"]), bool(config["converged"]), float(config["time_s"]),
                       dict(config["em"]), data_info=config["data"])
        except (KeyError, TypeError, RuntimeError) as exc:
            raise PPVAEError(f"load: {path} is not a complete ppvae EM run ({exc})") from None


def _run_once(model: Model, x: torch.Tensor, params: dict, max_iter: int, tol: float, m_step: str = "full"):
    n = x.shape[0]
    history: list[float] = []
    converged = False
    for it in range(max_iter):
        new_params, ll = model.em_step(x, params) if m_step == "full" else model.em_partial_step(x, params, it)
        total = ll.sum().item()
        if not math.isfinite(total):
            raise PPVAEError(f"em: the log-likelihood became {total} at iteration {len(history)}")
        history.append(total)
        if len(history) > 1 and history[-1] - history[-2] < tol * n:
            converged = True
            break
        params = new_params
    else:  # out of iterations: score the last M step's parameters too
        history.append(model.em_step(x, params)[1].sum().item())
    return params, history, converged


def _restart(task) -> tuple[dict, list[float], bool]:
    """One restart, ``task = (model, x, params, max_iter, tol)``: a module-level function so that
    :func:`ppvae._util.parallel.parallel_map` can send it to a worker process."""
    return _run_once(*task)


def _start_from(model: Model, x: torch.Tensor, init) -> dict:
    """``model.em_init(x, init=init)``, checked: the parameters of a drawn start, each with its shape."""
    if not isinstance(init, dict):
        raise PPVAEError(f"init: expected a dict of EM parameters; got {type(init).__name__}")
    reference = model.em_init(x, torch.Generator().manual_seed(0))
    check_options("init", init, reference)
    missing = sorted(set(reference) - set(init))
    if missing:
        raise PPVAEError(f"init: expected every EM parameter ({', '.join(reference)}); missing {', '.join(missing)}")
    try:
        start = model.em_init(x, torch.Generator().manual_seed(0), init=init)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise PPVAEError(f"init: {one_line(exc)}") from None
    for k, v in reference.items():
        got = start[k]
        if not isinstance(got, torch.Tensor) or got.shape != v.shape:
            raise PPVAEError(f"init['{k}']: expected shape {tuple(v.shape)}; got {describe_value(init[k])}")
        if not torch.isfinite(got).all():
            raise PPVAEError(f"init['{k}']: expected finite values")
    return start


def _warn_constant_columns(x: torch.Tensor) -> None:
    """A constant data column makes a Gaussian variance collapse to its floor: the log-likelihood is then
    unbounded (+88 nats for a GMM on such a column), a number that compares with nothing."""
    if x.dim() == 2 and len(x) > 1:
        constant = [j for j in range(x.shape[1]) if bool((x[:, j] == x[0, j]).all())]
        if constant:
            warn_at_caller(f"data: column(s) {constant} hold one value each; a Gaussian variance there collapses "
                           "to its floor and the log-likelihood is unbounded; drop the column(s)", UserWarning)


@renamed(tol="ll_tol")
def fit_em(model: Model, data: Dataset | torch.Tensor, *, restarts: int = 10, max_iter: int = 1000,
           ll_tol: float = 1e-10, seed: int = 0, init: dict | None = None, cores: int | None = 1,
           m_step: str = "full") -> EMFit:
    """Run EM from ``restarts`` random starts (or once from ``init``) and keep the best.

    Runs in float64. ``ll_tol`` is the gain in log-likelihood per point (nats) below which a run stops.
    ``cores``: processes for the restarts, this one and ``cores - 1`` workers
    (:func:`ppvae._util.parallel.parallel_map`, one thread each; None: every available core). Every start is
    drawn here, before any restart runs, and each restart is deterministic from its start, so the result is
    the same for every ``cores``. The default, 1, runs them in this process: starting workers costs about a
    second, more than the restarts of the GMMs here take.

    ``m_step``: ``"full"`` (EM) or ``"partial"``: generalized EM (Dempster et al. 1977, sec. 3; Neal & Hinton
    1998), the model's ``em_partial_step``, an E step followed by an M step that raises the expected complete-data
    log-likelihood Q without maximizing it (e.g. a conditional maximization over one block of parameters with
    the others held, ECM: Meng & Rubin 1993). The F-function view (Neal & Hinton 1998): EM maximizes
    F(q, theta) = E_q[log p(x, z | theta)] + H[q] alternately in q (the E step, which makes F = log p(x | theta))
    and theta; any theta-step that raises F keeps log p(x | theta) non-decreasing.

    Example (closed-form EM for a Gaussian mixture; the same maximum as scikit-learn's GaussianMixture):

    >>> import ppvae
    >>> from ppvae.models import GMM
    >>> data = ppvae.load_dataset("faithful", standardize=True)
    >>> em = ppvae.fit_em(GMM(K=2), data, restarts=2)
    >>> round(em.log_likelihood_total, 2)
    -384.46
    """
    require(model, ClosedFormEM, "fit_em")
    if not isinstance(data, Dataset):
        data = Dataset(data)
    restarts = check_int("restarts", restarts, low=1)
    max_iter = check_int("max_iter", max_iter, low=1)
    ll_tol = check_float("ll_tol", ll_tol, low=0.0)
    m_step = check_choice("m_step", m_step, ("full", "partial"))
    if m_step == "partial" and type(model).em_partial_step is ClosedFormEM.em_partial_step:  # the default: none
        raise PPVAEError(f"m_step: model '{model.name}' has no partial M step (it does not implement "
                         "em_partial_step(x, params, iteration)); use m_step='full'")
    seed = check_int("seed", seed, low=0)
    if cores is not None:
        check_int("cores", cores, low=1)
    model.setup(data)
    x = data.x.to(torch.float64)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    best = None
    histories = []
    _warn_constant_columns(x)
    if init is not None:
        starts = [_start_from(model, x, init)]
    else:
        starts = [model.em_init(x, gen) for _ in range(restarts)]
    results = parallel_map(_restart, [(model, x, params, max_iter, ll_tol, m_step) for params in starts], workers=cores,
                        desc="em restarts", part_name="restart")
    for r, (params, history, converged) in enumerate(results):
        histories.append(history)
        if best is None or history[-1] > best[1][-1]:
            best = (params, history, converged, r)
    params, history, converged, r = best
    return EMFit(model, params, history[-1], histories, r, converged, time.perf_counter() - start,
                 config={"restarts": len(starts), "max_iter": max_iter, "ll_tol": ll_tol, "seed": seed,
                         "m_step": m_step},
                 data_info=runs.data_info(data))


register_kind("em", EMFit.load, "maximum-likelihood parameters by classical EM (ppvae em)")
