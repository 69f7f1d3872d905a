"""Stochastic variational inference with natural gradients (Hoffman, Blei, Wang & Paisley 2013).

For a conditionally conjugate model with global variational parameter lambda (the natural parameter of
q(beta)) and local factors q(z_i), the natural gradient of the ELBO in lambda is (Hoffman et al. 2013,
eq. 26)

    g(lambda) = alpha + N E_i[ E_q[t(x_i, z_i)] ] - lambda  =  lambda_hat - lambda,

the batch CAVI update lambda_hat minus lambda. A minibatch B of M points drawn from the data plate gives
an unbiased estimate: lambda_hat_B = alpha + (N / M) sum_{i in B} E_q[t(x_i, z_i)] with each q(z_i) at its
optimum given lambda (the local step; for LDA the per-document CAVI inner loop, Hoffman, Blei & Bach 2010,
alg. 2). The update (Hoffman et al. 2013, eq. 32; alg. 1)

    lambda_{t+1} = (1 - rho_t) lambda_t + rho_t lambda_hat_B,   rho_t = (tau0 + t)^(-kappa),

with kappa in (0.5, 1] satisfies the Robbins-Monro conditions sum rho_t = inf, sum rho_t^2 < inf, so lambda
converges to a local optimum of the ELBO (Hoffman et al. 2013, sec. 2.5). tau0 >= 0 down-weights the early
iterations. With several global factors (the Normal-Gamma model's q(mu) and q(tau)) every lambda_hat is
computed from the current lambda, so each is linear in the minibatch's statistics and its expectation is the
full-data update: the fixed point is batch CAVI's.

Warm-up: a model may name a different local step for the first ``warmup`` steps (``ce_local_warmup``), on the
same schedule and minibatches; the later steps are the ones above, so the fixed point is unchanged. LDA's is
stochastic zero-order collapsed VB (SCVB0; Foulds, Boyles, DuBois, Smyth & Welling 2013), whose early steps do not
starve the still-flat topics as mean field's exp E[log beta] does (measured in docs/guide/cavi.md).

Minibatches: every epoch is a fresh random permutation of the data cut into batches of ``batch_size``
(sampling without replacement, as scikit-learn's online LDA and gensim do).
"""

from __future__ import annotations

import math
import time

import torch

from ppvae._util.validation import PPVAEError, check_float, check_int
from ppvae.infer.conjugate import ConjugateFit, natural_step, prepare
from ppvae.model.capabilities import ConjugateExponential
from ppvae.runs import directory as runs

__all__ = ["fit_svi_natural", "step_size"]


def step_size(t: int, tau0: float, kappa: float) -> float:
    """rho_t = (tau0 + t)^(-kappa), t = 0, 1, ... (Hoffman et al. 2013, eq. 33); capped at 1."""
    return min(1.0, (tau0 + t) ** -kappa) if tau0 + t > 0 else 1.0


CHECKPOINT = "natural_svi_checkpoint.pt"


def _batch(n: int, batch_size: int, seed: int, t: int) -> torch.Tensor:
    """The indices of minibatch ``t``: epoch e = t // B (B = ceil(n / batch_size) batches an epoch) is a
    permutation drawn from a generator seeded by (seed, e), cut into ``batch_size`` pieces (the last may be
    smaller). A function of t, so a resumed run draws the batches the uninterrupted one would have."""
    per_epoch = -(-n // batch_size)
    epoch, i = divmod(t, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return perm[i * batch_size:(i + 1) * batch_size]


def _save_checkpoint(directory: str, lam: dict, step: int, trace: list, steps: list, config: dict) -> None:
    settings = {k: torch.tensor(float(v), dtype=torch.float64) for k, v in config.items()}
    runs.write_tensors(directory, CHECKPOINT, {"lam": lam, "step": torch.tensor(step), "steps": torch.tensor(steps),
                                                "trace": torch.tensor(trace, dtype=torch.float64), "config": settings})


def _load_checkpoint(directory: str, config: dict) -> tuple[dict, int, list, list]:
    state = runs.read_tensors(directory, CHECKPOINT, ("lam", "step", "trace", "steps", "config"))
    saved = {k: float(v) for k, v in state["config"].items()}
    if saved != {k: float(v) for k, v in config.items()}:
        raise PPVAEError(f"resume: {directory} holds a run with settings {saved}; this call has {config}")
    return dict(state["lam"]), int(state["step"]), state["trace"].tolist(), state["steps"].tolist()


def _check_warmup(model, warmup, num_steps: int, steps_per_epoch: int, structured: bool) -> int:
    """The number of warm-up steps: None -> one pass over the data, at most num_steps // 4, if the model has a
    warm-up local step, else 0."""
    has = type(model).ce_local_warmup is not ConjugateExponential.ce_local_warmup
    if warmup is None:
        return min(steps_per_epoch, num_steps // 4) if has and not structured else 0
    warmup = check_int("warmup", warmup, low=0)
    if warmup and not has:
        raise PPVAEError(f"warmup: model '{model.name}' has no warm-up local step (it does not implement "
                         f"ce_local_warmup(x, lam)); got warmup={warmup}, use 0")
    if warmup and structured:
        raise PPVAEError(f"warmup: structured SVI has no warm-up; got warmup={warmup} with structured=True, use 0")
    return warmup


def _local_step(model, xb, lam, t: int, seed: int, structured: bool, warm: bool) -> dict:
    """The minibatch's statistics: structured (one draw of the globals, seeded by (seed, t)), warm-up or mean field."""
    if structured:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 1_000_003 + t)
            values = {k: v[0] for k, v in model.ce_draws(lam, 1).items()}
        return model.ce_local_given(xb, values)
    return model.ce_local_warmup(xb, lam) if warm else model.ce_local(xb, lam)


def fit_svi_natural(model, data, *, batch_size: int = 64, num_steps: int = 1000, tau0: float = 1.0,
                    kappa: float = 0.7, eval_every: int | None = None, init: dict | None = None, seed: int = 0,
                    callback=None, structured: bool = False, checkpoint: str | None = None,
                    checkpoint_every: int = 0, resume: bool = False, warmup: int | None = None) -> ConjugateFit:
    """Natural-gradient SVI (module docstring) for a model declaring :class:`ppvae.ConjugateExponential`.

    ``num_steps`` minibatch updates of ``batch_size`` rows (clipped to N); rho_t = (tau0 + t)^-kappa, defaults
    tau0 = 1, kappa = 0.7 (inside the range Hoffman et al. 2013 study, kappa in (0.5, 1], sec. 4; scikit-learn's
    online LDA defaults to tau0 = 10, kappa = 0.7). The ELBO on all of the data is recorded at the start, every
    ``eval_every`` steps (None: about 50 times in the run; 0: at the start and the end only) and at the end:
    ``history["elbo"]`` with the step of each entry in ``history["step"]``. ``callback(step, lam)``, if
    given, is called before the first step (step 0, after the first ELBO) and after every step (e.g. to time a
    run to a target ELBO). float64 throughout.

    ``structured``: structured SVI (Hoffman & Blei 2015, alg. 1): each step draws the globals beta ~ q(beta) and
    sets every local factor of the minibatch to its exact conditional given that draw, q(z_i | beta) =
    p(z_i | x_i, beta) (the model's ``ce_local_given``), instead of the mean-field optimum given E_q; the variational
    family is then q(beta) prod_i q(z_i | beta), which keeps the dependence of the locals on the globals that mean
    field drops. The step on lambda is the same. ``history["elbo"]`` still records ``ce_elbo``, the mean-field
    bound of q(beta); the structured family's own is the model's to compute (``BayesGMM.structured_bounds``).

    ``warmup``: the first ``warmup`` steps take the model's warm-up local step (module docstring); None: one pass
    over the data (ceil(N / batch_size) steps), at most a quarter of ``num_steps``, for a model that has one (LDA),
    else 0. Not with ``structured``.

    ``checkpoint``: a directory where the state (lam, step, trace) is written atomically every
    ``checkpoint_every`` steps and at the end; ``resume=True`` continues from it (the settings must match). Batches
    and structured draws are functions of (seed, step), so a resumed run equals the uninterrupted one exactly.

    ``converged`` is False: the run takes its ``num_steps`` whatever the ELBO does. Returns
    ``model.ce_result(fit, data)`` of a :class:`ppvae.infer.conjugate.ConjugateFit` with ``method`` "svi_natural" (the
    fit itself by default; LDA gives a :class:`models.lda_cavi.CAVIFit`)."""
    data, x = prepare(model, data, "fit_svi_natural")
    if structured and type(model).ce_local_given is ConjugateExponential.ce_local_given:
        raise PPVAEError(f"structured: model '{model.name}' has no structured local step (it does not implement "
                         "ce_local_given(x, values)); use structured=False")
    n = x.shape[0]
    batch_size = min(check_int("batch_size", batch_size, low=1), n)
    num_steps = check_int("num_steps", num_steps, low=1)
    tau0 = check_float("tau0", tau0, low=0.0)
    kappa = check_float("kappa", kappa, low=0.5, high=1.0)
    if kappa == 0.5:
        raise PPVAEError("kappa: expected a number in (0.5, 1] (Robbins-Monro: sum rho_t^2 must be finite); got 0.5")
    if eval_every is None:
        eval_every = max(1, num_steps // 50)
    eval_every = check_int("eval_every", eval_every, low=0)
    seed = check_int("seed", seed, low=0)
    checkpoint_every = check_int("checkpoint_every", checkpoint_every, low=0)
    warmup = _check_warmup(model, warmup, num_steps, -(-n // batch_size), structured)
    settings = {"n": n, "batch_size": batch_size, "tau0": tau0, "kappa": kappa, "seed": seed, "structured": structured,
                "warmup": warmup}
    start = time.perf_counter()
    if resume:
        if checkpoint is None:
            raise PPVAEError("resume: expected checkpoint= (the directory to resume from); got None")
        lam, first, trace, steps = _load_checkpoint(checkpoint, settings)
    else:
        lam = model.ce_init(x, torch.Generator().manual_seed(seed), init)
        first, trace, steps = 0, [model.ce_elbo(x, lam)], [0]
        if callback is not None:
            callback(0, lam)
    for t in range(first, num_steps):
        idx = _batch(n, batch_size, seed, t)
        scale = n / len(idx)
        local = _local_step(model, x[idx], lam, t, seed, structured, t < warmup)
        stats = {k: scale * v for k, v in local.items()}
        lam = natural_step(lam, model.ce_global(stats, lam), step_size(t, tau0, kappa))
        if callback is not None:
            callback(t + 1, lam)
        if (eval_every and (t + 1) % eval_every == 0) or t + 1 == num_steps:
            trace.append(model.ce_elbo(x, lam))
            steps.append(t + 1)
            if not math.isfinite(trace[-1]):
                raise PPVAEError(f"svi_natural: the ELBO became {trace[-1]} at step {t + 1}")
        if checkpoint is not None and ((checkpoint_every and (t + 1) % checkpoint_every == 0) or t + 1 == num_steps):
            _save_checkpoint(checkpoint, lam, t + 1, trace, steps, settings)
    fit = ConjugateFit(model, lam, trace, False, time.perf_counter() - start,
                       "svi_structured" if structured else "svi_natural",
                       {"batch_size": batch_size, "num_steps": num_steps, "tau0": tau0, "kappa": kappa,
                        "eval_every": eval_every, "seed": seed, "structured": bool(structured), "warmup": warmup},
                       runs.data_info(data), steps)
    return model.ce_result(fit, data)
