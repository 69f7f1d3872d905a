"""Latent Dirichlet allocation (Blei, Ng & Jordan 2003) as a Pyro model, with an amortized guide.

Generative story on the document x word count matrix C (D x V), K topics::

    beta_k  ~ Dirichlet(eta 1_V)              k = 1..K    site "topic_words" (plate "topics")
    theta_d ~ Dirichlet(alpha 1_K)            d = 1..D    site "doc_topics"  (data plate)
    c_d | theta_d, beta ~ WordCounts(theta_d beta)        site "obs"

The per-word topic assignments z_dn are summed out exactly: a word's probability is
sum_k theta_dk beta_kw, so log p(c_d | theta_d, beta) = log C(c_d) + sum_w c_dw log sum_k theta_dk beta_kw
(:class:`ppvae.evaluate.topics.WordCounts`, multinomial coefficient included).

Inference:

* SVI with any registered guide over (beta, theta) -- ``auto_normal`` etc. give one theta_d per
  training document -- or with the model's own guide (``guide="model"``): q(beta_k) = Dirichlet(lambda_k)
  with free lambda (mean field over topics; started by :func:`initial_lambda`) and an amortized
  q(theta_d) = Dirichlet(f(c_d)), f a softplus MLP over log(1 + c_d) (the "Dirichlet" amortized posterior
  of Srivastava & Sutton 2017, sec. 3.1, trained with implicit reparameterization gradients, Figurnov
  et al. 2018). Use the ``meanfield`` ELBO: both KL terms are then analytic (Dirichlet-Dirichlet).
* Classical coordinate-ascent mean-field VI: :func:`fit_cavi` in :mod:`models.lda_cavi`.
* Online LDA (Hoffman, Blei & Bach 2010, alg. 2): :func:`ppvae.fit_svi_natural` through the
  :class:`ppvae.ConjugateExponential` hooks below. The global parameter is lambda (K, V) of q(beta_k) = Dir(lambda_k);
  the local step is the per-document CAVI loop on (phi, gamma) with E[log beta] fixed, batched over the minibatch
  (:func:`models.lda_online.minibatch_e_step`, each document until the mean |change| of gamma_d is below 1e-3, at
  most 100 sweeps, as scikit-learn); its statistics are sum_d c_dw phi_dwk, and
  lambda_hat = eta + (D / M) sum_{d in batch} c_dw phi_dwk. Starts: :meth:`LDA.ce_init`; the first pass (default)
  takes stochastic CVB0's local step instead (:meth:`LDA.ce_local_warmup`, Foulds et al. 2013).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ppvae import (
    ConjugateExponential,
    CoordinateAscentVI,
    Model,
    PPVAEError,
    check_float,
    check_int,
    register_kind,
    register_model,
)
from ppvae.evaluate.topics import TopicModel, WordCounts, check_counts
from ppvae.infer.conjugate import expected_log_dirichlet
from ppvae.results import Pointwise, register_evaluator

from .lda_cavi import CAVIFit, _Sparse, cvb0_init, e_step, expected_log_beta, fit_cavi, lda_elbo
from .lda_online import minibatch_e_step


class DirichletEncoder(nn.Module):
    """c_d -> Dirichlet concentration: softplus MLP over log(1 + c_d), output softplus + ``floor``."""

    def __init__(self, vocab_size: int, hidden: int, topics: int, floor: float = 1e-2):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(vocab_size, hidden), nn.Softplus(), nn.Linear(hidden, hidden),
                                 nn.Softplus(), nn.Linear(hidden, topics))
        self.floor = floor

    def forward(self, counts: torch.Tensor) -> torch.Tensor:
        return nn.functional.softplus(self.net(torch.log1p(counts))) + self.floor


def initial_lambda(x: torch.Tensor, topics: int, alpha: float, eta: float, generator: torch.Generator) -> torch.Tensor:
    """The start of q(beta) = Dir(lambda): lambda_kw = eta + sum_d c_dw r_dk, r_d ~ Dirichlet(alpha 1_K) per
    document (theta_d drawn from its prior).

    This is the lambda update of mean-field LDA (Hoffman, Blei & Bach 2010, eq. 3, step size 1) with each
    word's topic responsibilities set to its document's drawn proportions, so lambda starts on the scale of
    the word counts, each topic leaning to a different set of documents. Adam moves log lambda by about lr
    per step, so from the near-flat Gamma(100, 1/100) start of natural-gradient SVI (whose first step makes
    this jump) it spends hundreds of steps only reaching that scale. Measured (training loss, mean of the
    last 20 steps): reuters, K = 20, batch 64, lr 0.01, seeds 0-2: 3.83-3.85e5 after 300 steps against
    4.81e5 from the flat start, 3.24-3.26e5 after 1,000 against 3.30-3.32e5; the planted 3-topic corpus of
    tests/test_lda.py, 200 steps at lr 0.05, 10 draws of the start: every topic recovered (matched L1 error
    < 0.15) in 10 runs against 5 of 10 from the flat start."""
    r = torch._standard_gamma(torch.full((x.shape[0], topics), alpha, dtype=torch.float64), generator=generator)
    r = r / r.sum(-1, keepdim=True)
    return eta + r.T @ x.double()


@register_model("lda", "latent Dirichlet allocation: K topics, word topics summed out, amortized Dirichlet guide")
class LDA(TopicModel, Model, CoordinateAscentVI, ConjugateExponential):
    """LDA on a count matrix (see module docstring). ``topics`` = K, ``alpha``/``eta`` the symmetric
    Dirichlet concentrations of theta_d and beta_k, ``hidden`` the encoder's width."""

    data_kinds = ("counts",)
    train_defaults = {"elbo": "meanfield", "lr": 0.01}  # CLI defaults (meanfield: analytic Dirichlet KLs)

    def __init__(self, topics: int = 20, alpha: float = 0.1, eta: float = 0.01, hidden: int = 100):
        super().__init__()
        self.topics = check_int("topics", topics, low=1)
        self.alpha = check_float("alpha", alpha, low=0.0, strict=True)
        self.eta = check_float("eta", eta, low=0.0, strict=True)
        self.hidden = check_int("hidden", hidden, low=1)
        self.vocab_size = None

    def setup(self, data) -> None:
        super().setup(data)
        if self.check_corpus(data):
            V = self.vocab_size
            gen = torch.Generator().manual_seed(0)
            with torch.random.fork_rng():
                torch.manual_seed(0)
                self.encoder = DirichletEncoder(V, self.hidden, self.topics)
            lam = initial_lambda(data.x, self.topics, self.alpha, self.eta, gen)
            self.log_lambda = nn.Parameter(lam.log().to(data.x.dtype))

    def forward(self, batch):
        x = batch.x
        V = x.shape[-1]
        with pyro.plate("topics", self.topics):
            beta = pyro.sample("topic_words", dist.Dirichlet(x.new_full((V,), self.eta)))
        with self.data_plate(batch):
            theta = pyro.sample("doc_topics", dist.Dirichlet(x.new_full((self.topics,), self.alpha)))
            pyro.sample("obs", WordCounts(theta @ beta, x.sum(-1)), obs=x)

    def guide(self, batch):
        """q(beta_k) = Dirichlet(lambda_k), q(theta_d) = Dirichlet(encoder(c_d))."""
        self._require_setup()
        with pyro.plate("topics", self.topics):
            pyro.sample("topic_words", dist.Dirichlet(self.log_lambda.exp()))
        with self.data_plate(batch):
            pyro.sample("doc_topics", dist.Dirichlet(self.encoder(batch.x)))

    def _require_setup(self):
        if self.vocab_size is None:
            raise PPVAEError("lda: the model is not set up on a corpus yet; call fit(model, data) or model.setup(data)")

    # -- the topic-model interface ------------------------------------------------------------------
    @torch.no_grad()
    def topic_word(self, fit_or_params) -> torch.Tensor:
        """(K, V) topic-word probabilities, rows summing to 1: the posterior mean E_q[beta_k] for the
        own guide or a CAVI fit, the guide's median of beta for an autoguide fit, or a given matrix
        (normalized)."""
        if isinstance(fit_or_params, torch.Tensor):
            tw = fit_or_params.double()
        elif hasattr(fit_or_params, "lam"):  # a CAVIFit
            tw = fit_or_params.lam
        elif getattr(fit_or_params, "guide", None) == self.guide:
            tw = self.log_lambda.exp().double()
        elif hasattr(fit_or_params, "global_values"):
            stub = torch.ones(1, self.vocab_size)
            tw = fit_or_params.global_values(stub)["topic_words"].double()
        else:
            raise PPVAEError("fit_or_params: expected a Fit, a CAVIFit or a (K, V) tensor; "
                             f"got {type(fit_or_params).__name__}")
        return tw / tw.sum(-1, keepdim=True)

    @torch.no_grad()
    def doc_topics(self, fit_or_params, counts, max_iter: int = 100) -> torch.Tensor:
        """(D, K) topic proportions of (new) documents: the encoder's posterior mean for the own
        guide; otherwise the mean of the variational Dirichlet from the CAVI E step with beta fixed
        (E log beta from a CAVI fit, log beta at the point estimate for other fits)."""
        x = check_counts("counts", counts)
        vocab_size = self.vocab_size if self.vocab_size is not None else self.topic_word(fit_or_params).shape[1]
        if x.shape[1] != vocab_size:
            raise PPVAEError(f"counts: expected {vocab_size} columns (the model's vocabulary); got {x.shape[1]}")
        if getattr(fit_or_params, "guide", None) == self.guide:
            conc = self.encoder(x.to(self.log_lambda.dtype)).double()
            return conc / conc.sum(-1, keepdim=True)
        if hasattr(fit_or_params, "lam"):
            elog_beta = expected_log_beta(fit_or_params.lam)
        else:
            elog_beta = self.topic_word(fit_or_params).clamp_min(1e-300).log()
        gamma = e_step(x, elog_beta, self.alpha, max_iter=max_iter)
        return gamma / gamma.sum(-1, keepdim=True)

    def importance_pair(self, fit_or_params):
        """((model, proposal), global values) for :func:`ppvae.evaluate.topics.heldout_log_likelihood`: beta fixed
        at its posterior mean; proposal the amortized Dirichlet for the own guide, else
        q(theta_d) = Dir(gamma_d) from a CAVI E step on each document with beta fixed."""
        dtype = self.log_lambda.dtype if self.vocab_size is not None else torch.get_default_dtype()
        beta = self.topic_word(fit_or_params).to(dtype)
        if getattr(fit_or_params, "guide", None) == self.guide:
            return (self, self.guide), {"topic_words": beta}
        elog_beta = expected_log_beta(fit_or_params.lam) if hasattr(fit_or_params, "lam") else beta.double().log()
        alpha = getattr(fit_or_params, "alpha", self.alpha)  # a CAVI fit may have updated alpha

        def e_step_guide(batch):
            gamma = e_step(batch.x.double(), elog_beta, alpha, max_iter=200, tol=1e-6)
            with self.data_plate(batch):
                pyro.sample("doc_topics", dist.Dirichlet(gamma.to(batch.x.dtype)))

        return (self, e_step_guide), {"topic_words": beta}

    def fit_cavi(self, data, **options):
        """Coordinate-ascent mean-field VI (:func:`models.lda_cavi.fit_cavi`) with this model's K, alpha, eta."""
        if hasattr(data, "meta") and data.meta.get("vocab") is not None:
            self.vocab = list(data.meta["vocab"])
        return fit_cavi(self, data, **options)

    def load_cavi(self, path: str):
        """The :class:`models.lda_cavi.CAVIFit` saved in the run directory ``path`` (tensors only, version checked)."""
        return CAVIFit.load(path)

    # -- online LDA: the conjugate-exponential hooks (module docstring) -----------------------------------------------
    def ce_init(self, x, generator, init=None):
        """The start of online LDA. Default: lambda ~ Gamma(100, 1/100) entrywise (Hoffman et al. 2010; scikit-learn's
        start). ``init={"lambda": ...}``: that lambda. ``init={"cvb0": M}`` (optionally ``"sweeps": S``, default
        300): the CVB0 start of batch CAVI (:func:`models.lda_cavi.cvb0_init`, S sweeps) on M documents drawn
        without replacement, its expected counts scaled to the corpus as a minibatch's are,
        lambda = eta + (D / M) N_kw -- a start that reads M documents, not the corpus. On Reuters (K = 20, batch
        64, tau0 10, kappa 0.7, 300 steps) the final per-word ELBO is -3.614 from the Gamma start, -3.576 from
        CVB0 on 64 documents and -3.505 on 256, against -3.489 for batch CAVI from CVB0 on all 395: the gap of
        online LDA to CVB0-started CAVI is its start (the mean-field ELBO's local optima), not its steps. On the
        corpus replicated 10x, CVB0 on 256 of its 3,950 documents starts it lower than the Gamma draw does (-2.939
        against -2.845 after 400 steps, seed 0): a subsample's start is no general remedy; the default warm-up
        (:meth:`ce_local_warmup`) is the one that closes that gap."""
        K = check_int("topics", self.topics, low=1)
        if init is not None and "lambda" in init:
            return {"lambda": torch.as_tensor(init["lambda"], dtype=torch.float64)}
        if init is not None and "cvb0" in init:
            m = check_int("init['cvb0']", init["cvb0"], low=1, high=len(x))
            rows = torch.randperm(len(x), generator=generator)[:m]
            sweeps = check_int("init['sweeps']", init.get("sweeps", 300), low=1)
            _, lam = cvb0_init(_Sparse(x[rows]), K, self.alpha, self.eta, sweeps, generator)
            return {"lambda": self.eta + len(x) / m * (lam - self.eta)}
        shape = torch.full((K, x.shape[1]), 100.0, dtype=torch.float64)
        return {"lambda": torch._standard_gamma(shape, generator=generator) / 100.0}

    def ce_local(self, x, lam):
        """The E step on the documents ``x`` with E[log beta] from lambda, batched over them
        (:func:`models.lda_online.minibatch_e_step`), then S = sum_d c_dw phi_dwk (K, V)."""
        _, stats = minibatch_e_step(x, expected_log_dirichlet(lam["lambda"]), self.alpha)
        return {"word_topic": stats}

    def ce_local_warmup(self, x, lam):
        """Online LDA's warm-up local step (``fit_svi_natural(warmup=...)``, default one pass over the corpus, at most
        a quarter of the steps): stochastic CVB0 (Foulds, Boyles, DuBois, Smyth & Welling 2013;
        :mod:`models.lda_online`, ``zero_order``), phi_dwk ∝ E[beta_kw] gamma_dk. Why (docs/guide/cavi.md, Reuters
        x10, K = 20, batch 64, tau0 10, kappa 0.7, 400 steps, seed 0): from the Gamma start mean-field online LDA
        ends at per-word ELBO -2.845 and batch CAVI from the same start at -2.916, but online LDA from batch CAVI's
        CVB0 start stays at -2.764 (CAVI: -2.757): the start decides the optimum, not the algorithm. 50, 62 (one
        pass), 100 or 200 SCVB0 steps, then mean field, end at -2.762, -2.761, -2.759, -2.758
        (``benchmarks/online_lda_starts.py``). On the 1x corpus
        (395 documents, 300 steps) it does not help: -3.619 after one pass of SCVB0 (7 steps) against -3.614
        without, and longer warm-ups are worse (75 steps: -3.692; SCVB0 throughout: -3.830), its responsibilities
        keeping each token's own count (no leave-one-out) on a corpus where most words are rare."""
        lam_ = lam["lambda"]
        log_mean = (lam_ / lam_.sum(-1, keepdim=True)).log()
        _, stats = minibatch_e_step(x, log_mean, self.alpha, zero_order=True)
        return {"word_topic": stats}

    def ce_global(self, stats, lam):
        return {"lambda": self.eta + stats["word_topic"]}

    def ce_elbo(self, x, lam):
        """L(gamma, lambda) of :mod:`models.lda_cavi` with gamma from a full E step at lambda."""
        gamma, _ = minibatch_e_step(x, expected_log_dirichlet(lam["lambda"]), self.alpha)
        return lda_elbo(x, gamma, lam["lambda"], self.alpha, self.eta)

    def ce_values(self, lam):
        return {"topic_words": lam["lambda"] / lam["lambda"].sum(-1, keepdim=True)}

    def ce_draws(self, lam, num_draws):
        return {"topic_words": dist.Dirichlet(lam["lambda"]).sample((num_draws,))}

    def ce_result(self, fit, data):
        """A :class:`models.lda_cavi.CAVIFit` (topics, documents' q(theta) from an E step, save/load as ``cavi``)."""
        x = check_counts("data", data)
        gamma, _ = minibatch_e_step(x.double(), expected_log_dirichlet(fit.params["lambda"]), self.alpha)
        vocab = data.meta.get("vocab") if hasattr(data, "meta") else None
        result = CAVIFit(gamma, fit.params["lambda"], self.alpha, self.eta, fit.trace, fit.converged, fit.time_s,
                         vocab=list(vocab) if vocab is not None else getattr(self, "vocab", None),
                         config={"method": "svi_natural", "trace_steps": fit.trace_steps, **fit.config}, model=self,
                         data_info=fit.data_info)
        result.method = "svi_natural"
        result._train_x = x.double()
        return result

def _evaluate_cavi(run_dir: str, ds, own_data: bool) -> Pointwise:
    """``ppvae evaluate`` on a CAVI run: the per-document ELBO bound B_d <= E_q(beta)[log p(x_d | beta)]
    (:meth:`CAVIFit.document_bound`); with ``kl_topics`` = KL(q(beta) || p(beta)), sum_d B_d - kl_topics is the
    ELBO, a lower bound on log p(X). On the training documents it uses the fitted q(theta); on other data an E
    step with q(beta) fixed."""
    fit = CAVIFit.load(run_dir)
    expected = tuple(fit.data_info["x_shape"][1:])
    if tuple(ds.x.shape[1:]) != expected:
        raise PPVAEError(f"data: the run was fitted on points of shape {expected}; "
                         f"got points of shape {tuple(ds.x.shape[1:])}")
    x = ds.x.to(torch.float64)
    if own_data:  # fit_cavi drops empty documents; the fitted q(theta) is of the others
        x = x[x.sum(1) > 0]
    gamma = fit.gamma if own_data and len(x) == len(fit.gamma) else None
    values = fit.document_bound(x, gamma)
    kl = fit.kl_topics()
    elbo = float(values.sum()) - kl if gamma is not None else None  # the ELBO: training documents only
    return Pointwise(fit.model.name, values, "per-document ELBO bound", elbo_per_point=True,
                     extra={"num_particles": None, "kl_topics": kl, "fitted_q_theta": gamma is not None, "elbo": elbo})


# CAVI runs are a kind of their own, registered here with the model family that has them (a plug-in of the engine)
register_kind("cavi", CAVIFit.load, "a mean-field posterior by coordinate-ascent VI (ppvae cavi, LDA)")
register_evaluator("cavi", _evaluate_cavi)
