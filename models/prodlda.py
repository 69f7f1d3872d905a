"""ProdLDA (Srivastava & Sutton 2017, "Autoencoding Variational Inference for Topic Models", ICLR).

Generative story on the count matrix C (D x V) with K topics and a free (unnormalized) topic matrix
beta (K x V, a parameter -- the product-of-experts decoder)::

    h_d ~ N(mu_0, diag(sigma_0^2))          site "logtheta" (data plate), theta_d = softmax(h_d)
    c_d | theta_d ~ WordCounts(softmax(BN(dropout(theta_d) beta)))          site "obs"

The logistic-normal prior is the Laplace approximation of Dirichlet(alpha 1_K) in the softmax basis
(their eq. 3, MacKay 1998): mu_0k = log alpha_k - (1/K) sum_i log alpha_i,
sigma_0k^2 = (1/alpha_k)(1 - 2/K) + (1/K^2) sum_i 1/alpha_i. The word distribution of a document is a
product of experts, softmax(theta_d beta) (their sec. 3.5), with batch normalization (no affine
parameters) on the logits and dropout on theta, as in the paper's code and Pyro's ProdLDA example.

Guide (the amortized encoder, their eq. 2 with sec. 3.4's batch normalization and dropout):
q(h_d) = N(mu(c_d), diag sigma^2(c_d)), mu and log sigma^2 from a 2-layer softplus MLP over c_d
with dropout and batch normalization on both outputs. Train with the ``meanfield`` ELBO (analytic
Gaussian KL) and Adam; the paper uses lr 0.002 with beta_1 = 0.99.

Topics: the topic-word matrix reported is softmax(beta_k) row by row, whose ranking is that of the
beta_k the paper reads its topics from. Batch normalization and dropout are active in training
mode; every evaluation here switches the model to ``eval()`` (running statistics, no dropout).
"""

from __future__ import annotations

import contextlib
import weakref

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ppvae import Model, PPVAEError, check_float, check_int, register_model
from ppvae.evaluate.topics import TopicModel, WordCounts, check_counts


def laplace_dirichlet_prior(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu_0, sigma_0) of the Laplace approximation of Dirichlet(alpha) in the softmax basis (eq. 3)."""
    k = alpha.shape[-1]
    mu = alpha.log() - alpha.log().mean(-1, keepdim=True)
    var = (1.0 / alpha) * (1 - 2.0 / k) + (1.0 / alpha).sum(-1, keepdim=True) / k**2
    return mu, var.sqrt()


def _batch_norm(bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm1d over the last dimension for inputs with any number of leading (batch) dimensions."""
    return bn(x.reshape(-1, x.shape[-1])).reshape(x.shape)


class SparseLinear(nn.Module):
    """``nn.Linear`` computed from the nonzero entries of its input only: y_d = b + sum_{w: c_dw != 0} c_dw W_w.

    A bag-of-words row is mostly zeros (reuters: 96.4%), so the dense product spends almost all its
    multiplications on them, forward and for the weight gradient. Here each row's nonzero columns are the
    indices of :func:`torch.nn.functional.embedding_bag` over the transposed weight, with their values as
    per-sample weights (a weighted sum per row; its backward scatters only into the rows of W^T it read).
    The sums equal the dense layer's up to float rounding (summation order). The parameters are those of an
    ``nn.Linear(in_features, out_features)`` (same initialization from the same RNG state), kept transposed
    as ``weight_t`` (in_features, out_features) for the lookup."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        dense = nn.Linear(in_features, out_features)
        self.weight_t = nn.Parameter(dense.weight.detach().T.contiguous())
        self.bias = nn.Parameter(dense.bias.detach().clone())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a run saved with the dense layer (before sparse_input existed) loads as the same function
        dense = state_dict.pop(prefix + "weight", None)
        if dense is not None and prefix + "weight_t" not in state_dict:
            state_dict[prefix + "weight_t"] = dense.T.contiguous()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor, nonzero=None) -> torch.Tensor:
        """``nonzero``: :func:`nonzero_counts` of ``x`` where the caller has it already."""
        rows, cols, values = nonzero_counts(x) if nonzero is None else nonzero
        n = x.reshape(-1, x.shape[-1]).shape[0]
        per_row = torch.bincount(rows, minlength=n)
        offsets = torch.cumsum(per_row, 0) - per_row  # rows come sorted: each row's entries are one bag
        out = nn.functional.embedding_bag(cols, self.weight_t, offsets, mode="sum",
                                          per_sample_weights=values.to(self.weight_t.dtype))
        return (out + self.bias).reshape(*x.shape[:-1], -1)


def nonzero_counts(x: torch.Tensor):
    """(rows, columns, values) of the nonzero entries of ``x`` seen as a (-1, V) matrix, row-major."""
    flat = x.reshape(-1, x.shape[-1])
    rows, cols = flat.nonzero(as_tuple=True)
    return rows, cols, flat[rows, cols]


def sparse_log_multinomial_coefficient(x: torch.Tensor, nonzero) -> torch.Tensor:
    """log C(c_d) = log n_d! - sum_w log c_dw! with the sum over the nonzero counts only (log 0! = 0): the
    same value as :func:`ppvae.evaluate.topics.log_multinomial_coefficient` from ~4% of its lgamma evaluations."""
    rows, _, values = nonzero
    flat_total = x.reshape(-1, x.shape[-1]).sum(-1)
    per_doc = torch.zeros_like(flat_total).index_add(0, rows, torch.lgamma(values + 1))
    return (torch.lgamma(flat_total + 1) - per_doc).reshape(x.shape[:-1])


class ProdLDAEncoder(nn.Module):
    """c_d -> (mu, sigma) of q(h_d): softplus MLP, dropout, batch-normalized outputs."""

    def __init__(self, vocab_size: int, topics: int, hidden: int, dropout: float, sparse_input: bool = True):
        super().__init__()
        first = SparseLinear if sparse_input else nn.Linear
        self.fc1, self.fc2 = first(vocab_size, hidden), nn.Linear(hidden, hidden)
        self.drop = nn.Dropout(dropout)
        self.fc_mu, self.fc_logvar = nn.Linear(hidden, topics), nn.Linear(hidden, topics)
        self.bn_mu = nn.BatchNorm1d(topics, affine=False)
        self.bn_logvar = nn.BatchNorm1d(topics, affine=False)

    def forward(self, counts: torch.Tensor, nonzero=None):
        first = self.fc1(counts, nonzero) if isinstance(self.fc1, SparseLinear) else self.fc1(counts)
        h = self.drop(nn.functional.softplus(self.fc2(nn.functional.softplus(first))))
        mu = _batch_norm(self.bn_mu, self.fc_mu(h))
        logvar = _batch_norm(self.bn_logvar, self.fc_logvar(h))
        return mu, (0.5 * logvar).exp()


@register_model("prodlda", "ProdLDA: logistic-normal topics, product-of-experts decoder, amortized encoder")
class ProdLDA(TopicModel, Model):
    """ProdLDA (see module docstring). ``topics`` = K, ``alpha`` the symmetric Dirichlet whose Laplace
    approximation is the prior, ``hidden`` the encoder width, ``dropout`` the dropout probability,
    ``sparse_input`` whether the encoder's first layer reads only the nonzero counts (:class:`SparseLinear`;
    False: a dense ``nn.Linear``, the same sums up to rounding)."""

    data_kinds = ("counts",)
    # CLI defaults: the paper's optimizer and batch, Adam with lr 0.002 and beta_1 = 0.99 (a high moment weight and
    # learning rate keep topics from collapsing onto the prior, their "training and practical considerations"),
    # batch 200 (the authors' run.py). On reuters the training loss falls 35k nats from step 200 to 1,000 and 2.4k
    # more to 2,000, so 1,000 steps; batch 64 ended at a 16k nats higher loss after as many steps, with topics that
    # varied more from seed to seed. The objective traces (jit: ~1.6x faster per step)
    train_defaults = {"elbo": "meanfield", "lr": 0.002, "betas": (0.99, 0.999), "batch_size": 200, "steps": 1000,
                      "jit": True}

    def __init__(self, topics: int = 20, alpha: float = 1.0, hidden: int = 100, dropout: float = 0.2,
                 sparse_input: bool = True):
        super().__init__()
        if not isinstance(sparse_input, bool):
            raise PPVAEError(f"sparse_input: expected True or False; got {sparse_input!r:.60}")
        self.sparse_input = sparse_input
        self.topics = check_int("topics", topics, low=2)
        self.alpha = check_float("alpha", alpha, low=0.0, strict=True)
        self.hidden = check_int("hidden", hidden, low=1)
        self.dropout = check_float("dropout", dropout, low=0.0, high=1.0)
        if self.dropout >= 1.0:
            raise PPVAEError(f"dropout: expected a probability < 1; got {dropout}")
        self.vocab_size = None
        mu, sigma = laplace_dirichlet_prior(torch.full((self.topics,), self.alpha))
        self.register_buffer("prior_loc", mu)
        self.register_buffer("prior_scale", sigma)

    def setup(self, data) -> None:
        super().setup(data)
        if self.check_corpus(data):
            V = self.vocab_size
            with torch.random.fork_rng():
                torch.manual_seed(0)
                self.encoder = ProdLDAEncoder(V, self.topics, self.hidden, self.dropout, self.sparse_input)
                self.beta = nn.Linear(self.topics, V, bias=False)
            self.bn_words = nn.BatchNorm1d(V, affine=False)
            self.drop = nn.Dropout(self.dropout)
        # plain references beside the registered submodules, as in models/vae.py: looked up through
        # PyroModule.__getattr__ inside forward they would be re-registered by pyro.module every step
        self.__dict__["_nets"] = (self.encoder, self.beta, self.bn_words, self.drop)

    def word_log_probs(self, theta: torch.Tensor) -> torch.Tensor:
        """log softmax(BN(dropout(theta) beta)): each document's log word distribution (product of experts)."""
        _, beta, bn_words, drop = self._nets
        return nn.functional.log_softmax(_batch_norm(bn_words, beta(drop(theta))), -1)

    def word_probs(self, theta: torch.Tensor) -> torch.Tensor:
        """softmax(BN(dropout(theta) beta)): each document's word distribution (product of experts)."""
        return self.word_log_probs(theta).exp()

    def _nonzero(self, x: torch.Tensor):
        """:func:`nonzero_counts` of ``x``, found once per training step: the guide finds them for the
        sparse encoder, the model (which runs after it in every ELBO) reuses them for the multinomial
        coefficient and drops them. Matched by identity through a weak reference, so another tensor
        never gets them."""
        cached = self.__dict__.pop("_nonzero_cache", None)
        if cached is not None and cached[0]() is x:
            return cached[1]
        return nonzero_counts(x)

    def forward(self, batch):
        self._require_setup()
        x = batch.x
        nonzero = self._nonzero(x)  # consumes the guide's, if it ran on this very tensor
        coefficient = (x, sparse_log_multinomial_coefficient(x, nonzero))
        with self.data_plate(batch):
            h = pyro.sample("logtheta", dist.Normal(self.prior_loc, self.prior_scale).to_event(1))
            log_probs = self.word_log_probs(nn.functional.softmax(h, -1))
            pyro.sample("obs", WordCounts(None, x.sum(-1), log_probs=log_probs, log_coefficient=coefficient), obs=x)

    def guide(self, batch):
        """q(h_d) = N(mu(c_d), diag sigma(c_d)^2), the amortized encoder."""
        self._require_setup()
        with self.data_plate(batch):
            nonzero = None
            if self.sparse_input:
                nonzero = nonzero_counts(batch.x)
                self.__dict__["_nonzero_cache"] = (weakref.ref(batch.x), nonzero)
            mu, sigma = self._nets[0](batch.x, nonzero)
            pyro.sample("logtheta", dist.Normal(mu, sigma).to_event(1))

    def __getstate__(self):  # the step's nonzero counts (a weak reference) are not part of the model
        state = dict(super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__)
        state.pop("_nonzero_cache", None)
        return state

    def _require_setup(self):
        if self.vocab_size is None:
            raise PPVAEError("prodlda: the model is not set up on a corpus yet; call fit(model, data) or "
                             "model.setup(data)")

    @contextlib.contextmanager
    def evaluating(self):
        """Evaluation mode (batch-norm running statistics, no dropout) inside the block."""
        was = self.training
        self.eval()
        try:
            yield self
        finally:
            self.train(was)

    # -- the topic-model interface ------------------------------------------------------------------
    @torch.no_grad()
    def topic_word(self, fit_or_params=None) -> torch.Tensor:
        """(K, V): softmax of each row of beta (the decoder is a parameter of the model, so the fit is
        not needed; a (K, V) tensor given is normalized by softmax the same way)."""
        self._require_setup()
        beta = fit_or_params if isinstance(fit_or_params, torch.Tensor) else self._nets[1].weight.T
        return nn.functional.softmax(beta.double(), -1)

    @torch.no_grad()
    def doc_topics(self, fit_or_params, counts) -> torch.Tensor:
        """(D, K) topic proportions of (new) documents: softmax of the encoder mean (eval mode)."""
        x = check_counts("counts", counts)
        if x.shape[1] != self.vocab_size:
            raise PPVAEError(f"counts: expected {self.vocab_size} columns (the model's vocabulary); got {x.shape[1]}")
        with self.evaluating():
            mu, _ = self._nets[0](x.to(self.prior_loc.dtype))
        return nn.functional.softmax(mu.double(), -1)

    @torch.no_grad()
    def completion_word_probs(self, fit_or_params, theta: torch.Tensor) -> torch.Tensor:
        """(D, V) softmax(BN(theta beta)) in evaluation mode (the product-of-experts decoder)."""
        with self.evaluating():
            return self.word_probs(theta.to(self.prior_loc.dtype)).double()

    def report(self, fit, data, out_dir: str) -> dict:
        with self.evaluating():
            return super().report(fit, data, out_dir)


    def importance_pair(self, fit_or_params=None):
        """((model, encoder guide), no global values) for :func:`ppvae.evaluate.topics.heldout_log_likelihood`."""
        self._require_setup()
        return (self, self.guide), {}
