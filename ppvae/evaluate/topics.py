"""Shared pieces of the topic models: the bag-of-words likelihood, input checks and topic metrics.

What is computed:

* :class:`WordCounts` -- the likelihood of a document's count vector ``c_d`` (length V, ``n_d`` words)
  given its word distribution ``p_d`` (a row of theta_d beta):
  ``log p(c_d | p_d) = log n_d! - sum_w log c_dw! + sum_w c_dw log p_dw``, a multinomial over counts
  with the multinomial coefficient INCLUDED (Blei, Ng & Jordan 2003 write the likelihood of the word
  sequence, which is this minus :func:`log_multinomial_coefficient`). Every ppvae topic model and
  every log p(w_d) it reports uses this convention; :func:`perplexity` removes the coefficient, so
  perplexity is the usual per-token one: ``exp(-sum_d [log p(c_d) - log C(c_d)] / sum_d n_d)``.
* :func:`npmi_coherence` -- NPMI coherence of each topic's top words (Bouma 2009; Lau, Newman &
  Baldwin 2014; Roeder, Both & Hinneburg 2015, "C_NPMI" with boolean-document co-occurrence):
  with D documents of the reference corpus, P(w) = D(w)/D and P(w_i, w_j) = D(w_i, w_j)/D,
  ``NPMI(w_i, w_j) = log[P(w_i, w_j) / (P(w_i) P(w_j))] / (-log P(w_i, w_j))``, averaged over the
  n(n-1)/2 pairs of a topic's top n words. Conventions: a pair that never co-occurs scores -1 (the
  limit of NPMI as P(w_i, w_j) -> 0); a pair present in every document (P = 1, 0/0) scores 1.
* :func:`topic_diversity` -- Dieng, Ruiz & Blei 2020 (sec. 5): the fraction of unique words among the
  top 25 words of all K topics (1 = no word shared, 1/K = all topics alike).
* :func:`heldout_log_likelihood` -- log p(c_d) of new documents by importance sampling over theta_d
  (:func:`ppvae.log_marginal`; proposal = the model's amortized posterior or a CAVI E step, word topics
  summed exactly) and its perplexity; :func:`document_completion` -- theta from half of each
  document's words, perplexity of the other half.

A topic model (:class:`TopicModel`) exposes ``topic_word(fit)`` (K x V, rows sum to 1),
``doc_topics(fit, counts)`` (D x K) and ``top_words(fit, n)``, and the CLI hook ``report``.
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import torch
from pyro.distributions import TorchDistribution, constraints

from ppvae._util.validation import PPVAEError, check_int, check_tensor, renamed, warn_at_caller
from ppvae.data.loaders import load_dataset
from ppvae.evaluate.marginal import log_marginal
from ppvae.model.capabilities import Reports
from ppvae.plots.figures import plot_top_words

__all__ = [
    "WordCounts", "check_counts", "check_num_topics", "log_multinomial_coefficient", "perplexity",
    "top_word_indices", "top_words", "npmi_coherence", "topic_diversity", "topic_summary", "TopicModel",
    "format_topics", "heldout_log_likelihood", "document_completion",
]


class WordCounts(TorchDistribution):
    """Multinomial over a count vector whose total is the document's own length (see module docstring).

    ``probs`` (..., V) are the word probabilities, or ``log_probs`` their logarithms (normalized, e.g. from
    ``log_softmax``: the log-likelihood is then sum_w c_dw log p_dw without taking a log of a softmax);
    ``total_count`` (...) the document lengths used for sampling (``log_prob`` reads the total from the
    value, so documents of any length share one distribution object). ``log_coefficient``: an optional
    pair (counts, log C(counts)) computed by the caller (e.g. from the nonzero counts only); ``log_prob``
    uses it when called with that very tensor, and computes :func:`log_multinomial_coefficient` otherwise.
    """

    arg_constraints = {"probs": constraints.simplex}
    support = constraints.independent(constraints.nonnegative_integer, 1)
    has_rsample = False

    def __init__(self, probs: torch.Tensor | None = None, total_count: torch.Tensor | None = None,
                 validate_args=None, *, log_probs: torch.Tensor | None = None, log_coefficient=None):
        if (probs is None) == (log_probs is None):
            raise ValueError("WordCounts: expected exactly one of probs and log_probs")
        self._probs, self.log_probs = probs, log_probs
        self.total_count = total_count
        self.log_coefficient = log_coefficient
        shape = (probs if probs is not None else log_probs).shape
        super().__init__(shape[:-1], shape[-1:], validate_args=validate_args)

    @property
    def probs(self) -> torch.Tensor:
        return self._probs if self._probs is not None else self.log_probs.exp()

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape)
        total = None if self.total_count is None else self.total_count.expand(shape)
        coefficient = self.log_coefficient if shape == self.batch_shape else None
        if self.log_probs is not None:
            return WordCounts(None, total, validate_args=False, log_coefficient=coefficient,
                              log_probs=self.log_probs.expand(shape + self.event_shape))
        return WordCounts(self.probs.expand(shape + self.event_shape), total, validate_args=False,
                          log_coefficient=coefficient)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        given = self.log_coefficient
        coef = given[1] if given is not None and given[0] is value else log_multinomial_coefficient(value)
        if self.log_probs is not None:
            return coef + (value * self.log_probs).sum(-1)
        return coef + torch.xlogy(value, self.probs).sum(-1)

    @torch.no_grad()
    def sample(self, sample_shape=()):
        if self.total_count is None:
            raise NotImplementedError("WordCounts.sample needs total_count (the document lengths)")
        shape = torch.Size(sample_shape) + self.batch_shape
        probs = self.probs.expand(shape + self.event_shape).reshape(-1, self.event_shape[0])
        totals = self.total_count.expand(shape).reshape(-1).long()
        out = torch.zeros_like(probs)
        longest = int(totals.max()) if len(totals) else 0
        if longest > 0:
            # documents of different lengths in one draw: `longest` words per document, keeping the
            # first n_d of each (i.i.d. categorical draws, so the kept ones are a multinomial sample)
            words = torch.multinomial(probs, longest, replacement=True)
            keep = torch.arange(longest, device=probs.device) < totals.unsqueeze(-1)
            out.scatter_add_(-1, words, keep.to(out.dtype))
        return out.reshape(shape + self.event_shape)


def log_multinomial_coefficient(counts: torch.Tensor) -> torch.Tensor:
    """log C(c_d) = log n_d! - sum_w log c_dw! per document (last dimension = words)."""
    return torch.lgamma(counts.sum(-1) + 1) - torch.lgamma(counts + 1).sum(-1)


def check_counts(name: str, counts, vocab: Sequence[str] | None = None, empty: str = "error") -> torch.Tensor:
    """A (D, V) float64 count matrix: finite, non-negative, whole numbers, and ``len(vocab) == V`` when
    a vocabulary is given. Empty documents (all-zero rows): ``empty="error"`` raises; ``"warn"`` warns
    once with their number (they carry no word, so they add nothing to a likelihood) unless every row
    is empty (a shape-only placeholder, as ``Fit.load`` builds)."""
    if hasattr(counts, "x") and hasattr(counts, "kind"):  # a Dataset
        counts = counts.x
    if hasattr(counts, "toarray") and hasattr(counts, "tocsr"):
        counts = counts.toarray()
    x = check_tensor(name, counts, ndim=2, dtype="float", low=0, integer=True).to(torch.float64)
    if vocab is not None and len(vocab) != x.shape[1]:
        raise PPVAEError(f"vocab: expected {x.shape[1]} words, one per column of {name}; got {len(vocab)}")
    n_empty = int((x.sum(1) == 0).sum())
    if n_empty and empty == "error":
        raise PPVAEError(f"{name}: expected every document to have at least one word; got {n_empty} empty "
                         "document(s) (corpus_from_counts drops them with a warning)")
    if n_empty and n_empty < len(x):
        warn_at_caller(f"{name}: {n_empty} empty document(s) (all-zero rows) of {len(x)}; they add nothing to "
                       "the likelihood (corpus_from_counts drops them)", UserWarning)
    return x


def check_num_topics(topics, vocab_size: int) -> int:
    """K as an int with 1 <= K <= V (more topics than words cannot be identified)."""
    k = check_int("topics", topics, low=1)
    if k > vocab_size:
        raise PPVAEError(f"topics: expected at most the vocabulary size {vocab_size}; got {k}")
    return k


def perplexity(log_p_docs: torch.Tensor, counts: torch.Tensor) -> float:
    """Per-token perplexity exp(-sum_d [log p(c_d) - log C(c_d)] / sum_d n_d) from per-document
    log p(c_d) in the :class:`WordCounts` convention (multinomial coefficient included)."""
    counts = torch.as_tensor(counts, dtype=torch.float64)
    log_p = torch.as_tensor(log_p_docs, dtype=torch.float64)
    if log_p.shape != counts.shape[:1]:
        raise PPVAEError(f"log_p_docs: expected one value per document ({counts.shape[0]}); "
                         f"got shape {tuple(log_p.shape)}")
    per_seq = log_p - log_multinomial_coefficient(counts)
    return math.exp(-per_seq.sum().item() / counts.sum().item())


# -- topics -----------------------------------------------------------------------------------------
def _topic_word(topic_word) -> torch.Tensor:
    tw = check_tensor("topic_word", topic_word, ndim=2, dtype="float")
    return tw


def top_word_indices(topic_word, n: int = 10) -> torch.Tensor:
    """(K, n) indices of each topic's n most probable words, most probable first (ties: lower index)."""
    tw = _topic_word(topic_word)
    n = check_int("n", n, low=1, high=tw.shape[1])
    order = torch.sort(-tw.double(), dim=1, stable=True).indices
    return order[:, :n]


def top_words(topic_word, vocab: Sequence[str], n: int = 10) -> list[list[str]]:
    """Each topic's n most probable words (strings)."""
    tw = _topic_word(topic_word)
    if len(vocab) != tw.shape[1]:
        raise PPVAEError(f"vocab: expected {tw.shape[1]} words, one per column of topic_word; got {len(vocab)}")
    return [[vocab[j] for j in row] for row in top_word_indices(tw, n).tolist()]


def npmi_coherence(topic_word, counts, n: int = 10) -> torch.Tensor:
    """Per-topic NPMI coherence (module docstring) of the top ``n`` words of ``topic_word`` (K, V),
    with document co-occurrence counted in the reference corpus ``counts`` (D, V)."""
    x = check_counts("counts", counts)
    tw = _topic_word(topic_word)
    if tw.shape[1] != x.shape[1]:
        raise PPVAEError(f"counts: expected {tw.shape[1]} columns (the topics' vocabulary); got {x.shape[1]}")
    idx = top_word_indices(tw, n)  # (K, n)
    present = (x > 0).double()  # (D, V) boolean documents
    sub = present[:, idx.reshape(-1)].reshape(len(x), *idx.shape)  # (D, K, n)
    d = float(len(x))
    p_joint = torch.einsum("dki,dkj->kij", sub, sub) / d  # (K, n, n)
    p_word = sub.mean(0)  # (K, n)
    denom = p_word.unsqueeze(2) * p_word.unsqueeze(1)
    with torch.no_grad():
        pmi = torch.log(p_joint) - torch.log(denom)
        npmi = pmi / (-torch.log(p_joint))
    npmi = torch.where(p_joint == 0, -1.0, npmi)
    npmi = torch.where(p_joint >= 1.0, 1.0, npmi)
    iu = torch.triu_indices(idx.shape[1], idx.shape[1], offset=1)
    pairs = npmi[:, iu[0], iu[1]]
    if pairs.shape[1] == 0:
        raise PPVAEError("n: expected at least 2 top words per topic to form pairs; got 1")
    return pairs.mean(1)


def topic_diversity(topic_word, n: int = 25) -> float:
    """Dieng et al. 2020: unique words among all topics' top ``n`` / (K n)."""
    idx = top_word_indices(topic_word, min(n, _topic_word(topic_word).shape[1]))
    return len(torch.unique(idx)) / idx.numel()


def topic_summary(topic_word, counts, vocab: Sequence[str], n_top: int = 10) -> dict:
    """The metrics.json entries of a topic model: ``npmi_mean``, ``npmi`` (per topic),
    ``topic_diversity`` (top 25) and ``top_words`` (top ``n_top``)."""
    npmi = npmi_coherence(topic_word, counts, n=n_top)
    return {
        "npmi_mean": float(npmi.mean()),
        "npmi": [round(float(v), 6) for v in npmi],
        "topic_diversity": topic_diversity(topic_word, 25),
        "top_words": top_words(topic_word, vocab, n_top),
    }


def format_topics(summary: dict) -> str:
    """Printable lines: one per topic with its NPMI and top words."""
    lines = [f"  topic {k:2d} (NPMI {c:+.3f}): {' '.join(words)}"
             for k, (c, words) in enumerate(zip(summary["npmi"], summary["top_words"], strict=True))]
    lines.append(f"  mean NPMI {summary['npmi_mean']:.4f}, topic diversity {summary['topic_diversity']:.3f}")
    return "\n".join(lines)


class TopicModel(Reports):
    """Mixin of the ppvae topic models. A subclass implements ``topic_word(fit_or_params)`` -> (K, V)
    rows summing to 1 and ``doc_topics(fit_or_params, counts)`` -> (D, K); this class adds
    ``top_words`` and the CLI ``report`` hook (it declares :class:`ppvae.Reports`)."""

    vocab: list[str] | None = None
    vocab_size: int | None = None

    def check_corpus(self, data) -> bool:
        """Validate a corpus for this model (non-negative whole counts, a vocabulary of the matrix's
        width, K <= V), remember its vocabulary, and say whether the vocabulary size changed, i.e.
        whether the model's networks must be (re)built for V words."""
        check_counts(f"data '{data.name}'", data.x, data.meta.get("vocab"), empty="warn")
        V = data.x.shape[1]
        check_num_topics(self.topics, V)
        if data.meta.get("vocab") is not None:
            self.vocab = list(data.meta["vocab"])
        changed, self.vocab_size = self.vocab_size != V, V
        return changed

    def _vocab(self, vocab, size: int | None = None) -> list[str]:
        vocab = vocab if vocab is not None else self.vocab
        if vocab is None:  # a user's count matrix without words: the words are named by their column, w0, w1, ...
            return [f"w{v}" for v in range(self.vocab_size if self.vocab_size is not None else size)]
        return list(vocab)

    def top_words(self, fit_or_params, n: int = 10, vocab: Sequence[str] | None = None) -> list[list[str]]:
        """Each topic's ``n`` most probable words."""
        return top_words(self.topic_word(fit_or_params), self._vocab(vocab), n)

    def completion_word_probs(self, fit_or_params, theta: torch.Tensor) -> torch.Tensor:
        """(D, V) word distributions of documents with topic proportions ``theta``: theta beta."""
        return theta.double() @ self.topic_word(fit_or_params)

    def report(self, fit, data, out_dir: str) -> dict:
        """CLI hook: topic metrics on ``data`` (NPMI over ``data`` as reference corpus, diversity, top
        words), printed, and a figure ``topics.png`` of each topic's top words in ``out_dir``."""

        tw = self.topic_word(fit)
        vocab = self._vocab(data.meta.get("vocab"), data.x.shape[-1])
        summary = topic_summary(tw, data.x, vocab)
        print(format_topics(summary))
        idx = top_word_indices(tw, 10)
        weights = torch.gather(tw.double(), 1, idx)
        plot_top_words(summary["top_words"], weights.tolist(), summary["npmi"], os.path.join(out_dir, "topics.png"),
                       vocab_size=tw.shape[-1])
        return {**summary, **report_heldout(self, fit, data)}


@renamed(num_samples="num_particles")
def heldout_log_likelihood(model, fit_or_params, data, *, num_particles: int = 1000, seed: int = 0) -> dict:
    """Held-out log p(c_d) per document of ``data`` (the :class:`WordCounts` convention) by importance
    sampling over theta_d with the model's amortized proposal and the word topics summed exactly:
    :func:`ppvae.log_marginal` on ``model.importance_pair(fit_or_params)`` (the model in evaluation
    mode). Returns ``log_marginal`` (its ``to_dict()``), ``log_p_docs`` (per document, float64) with
    their Monte Carlo standard errors ``mc_stderr_docs``,
    ``log_p_per_doc`` (their mean) and the per-token ``perplexity``."""
    x = check_counts("data", data)
    (model_fn, guide_fn), global_values = model.importance_pair(fit_or_params)
    was = model.training
    model.eval()
    try:
        lm = log_marginal((model_fn, guide_fn), data, num_particles=num_particles, seed=seed,
                          global_values=global_values or None)
    finally:
        model.train(was)
    return {"log_marginal": lm.to_dict(), "log_p_docs": lm.values, "mc_stderr_docs": lm.mc_stderr,
            "log_p_per_doc": lm.mean,
            "perplexity": perplexity(lm.values, x),
            "num_documents": len(x), "num_words": int(x.sum())}


def report_heldout(model, fit, data, num_particles: int = 200) -> dict:
    """The held-out entries of the CLI report when ``data`` is the train split of a registered corpus
    with a test split (``meta["split"] == "train"``): perplexity on the test split."""
    if data.meta.get("split") != "train":
        return {}

    test = load_dataset(data.name, split="test")
    out = heldout_log_likelihood(model, fit, test, num_particles=num_particles)
    completion = document_completion(model, fit, test)
    print(f"  held-out ({len(test)} test documents, {num_particles} importance samples): "
          f"perplexity {out['perplexity']:.1f}, log p per document {out['log_p_per_doc']:.2f}; "
          f"document completion perplexity {completion['perplexity']:.1f}")
    return {"heldout_perplexity": out["perplexity"], "heldout_log_p_per_doc": out["log_p_per_doc"],
            "heldout_log_marginal": out["log_marginal"], "heldout_completion_perplexity": completion["perplexity"]}


def document_completion(model, fit_or_params, data, *, seed: int = 0) -> dict:
    """Document completion (Wallach et al. 2009, sec. 4.2; Rosen-Zvi et al. 2004): each document's
    words are split at random into two halves (each word token observed with probability 1/2,
    seeded), the topic proportions are estimated from the observed half
    (``model.doc_topics``: the posterior mean of theta_d given those words) and the other half is
    scored: ``perplexity = exp(-sum_d sum_w h_dw log p_dw / sum_d n_d^held)`` with p_d the word
    distribution at that point estimate (``model.completion_word_probs``). Documents with an empty
    half are left out (``num_documents`` counts those used)."""
    x = check_counts("data", data)
    gen = torch.Generator().manual_seed(check_int("seed", seed, low=0))
    observed = torch.binomial(x, torch.full_like(x, 0.5), generator=gen)
    held = x - observed
    used = (observed.sum(1) > 0) & (held.sum(1) > 0)
    if not used.any():
        raise PPVAEError("data: expected documents with at least two words for document completion; got none")
    observed, held = observed[used], held[used]
    with torch.no_grad():
        was = getattr(model, "training", False)
        if hasattr(model, "eval"):
            model.eval()
        try:
            probs = model.completion_word_probs(fit_or_params, model.doc_topics(fit_or_params, observed))
        finally:
            if hasattr(model, "train"):
                model.train(was)
    log_lik = torch.xlogy(held, probs.double()).sum()
    return {"perplexity": math.exp(-log_lik.item() / held.sum().item()), "log_lik": log_lik.item(),
            "num_documents": int(used.sum()), "num_heldout_words": int(held.sum())}
