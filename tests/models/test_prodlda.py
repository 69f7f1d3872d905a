"""ProdLDA: the Laplace-approximated Dirichlet prior (hand-computed), the likelihood of the product-of-experts
decoder, the exact held-out log p(c) by 1-D quadrature through ppvae.log_marginal, planted-topic recovery,
the CLI report (topics, coherence, held-out perplexity) and bad input. Seeded."""

import json
import math

import numpy as np
import pytest
import torch
from _helpers import planted_corpus
from scipy import integrate
from scipy.stats import multinomial, norm

import ppvae
from ppvae.cli.app import main
from ppvae.evaluate.topics import heldout_log_likelihood, top_word_indices
from ppvae.models import ProdLDA
from ppvae.models.prodlda import laplace_dirichlet_prior


def test_laplace_prior_hand_computed():
    # symmetric alpha = 1, K = 20: mu = 0, sigma^2 = (1 - 2/K) + K / K^2 = 1 - 1/K = 0.95
    mu, sigma = laplace_dirichlet_prior(torch.ones(20, dtype=torch.float64))
    assert torch.allclose(mu, torch.zeros(20, dtype=torch.float64))
    assert torch.allclose(sigma**2, torch.full((20,), 0.95, dtype=torch.float64))
    # alpha = (0.5, 1, 2): mean log alpha = 0; sum 1/alpha = 3.5; sigma_k^2 = (1/alpha_k)(1/3) + 3.5/9
    mu, sigma = laplace_dirichlet_prior(torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64))
    assert mu.tolist() == pytest.approx([math.log(0.5), 0.0, math.log(2.0)], abs=1e-12)
    assert (sigma**2).tolist() == pytest.approx([2 / 3 + 3.5 / 9, 1 / 3 + 3.5 / 9, 1 / 6 + 3.5 / 9], abs=1e-12)


DOCS = torch.tensor([[2.0, 1, 0], [0, 1, 3], [1, 1, 1], [4, 0, 0]])


def _tiny_model():
    ds = ppvae.Dataset(DOCS, kind="counts", meta={"vocab": ["a", "b", "c"]})
    model = ProdLDA(topics=2, alpha=1.0, hidden=8)
    model.setup(ds)
    with torch.no_grad():
        model.beta.weight.copy_(torch.tensor([[2.0, -1.0], [0.0, 0.5], [-1.5, 1.0]]))  # (V, K): beta^T
    return model.eval(), ds


def _word_probs(theta0: float) -> np.ndarray:
    """softmax(BN(theta beta)) in eval mode with fresh running statistics: BN(y) = y / sqrt(1 + 1e-5)."""
    beta = np.array([[2.0, 0.0, -1.5], [-1.0, 0.5, 1.0]])
    y = (theta0 * beta[0] + (1 - theta0) * beta[1]) / math.sqrt(1 + 1e-5)
    e = np.exp(y - y.max())
    return e / e.sum()


def test_likelihood_is_product_of_experts():
    model, ds = _tiny_model()
    h = torch.tensor([[0.3, -0.2], [1.0, 1.0], [-2.0, 0.5], [0.0, 3.0]])
    poutine = ppvae.model.base.poutine
    tr = poutine.trace(poutine.condition(model, {"logtheta": h})).get_trace(ds.batch())
    lp = tr.nodes["obs"]["fn"].log_prob(DOCS)
    theta = torch.softmax(h, -1)
    for d in range(4):
        ref = multinomial.logpmf(DOCS[d].int().numpy(), int(DOCS[d].sum()), _word_probs(theta[d, 0].item()))
        assert lp[d].item() == pytest.approx(ref, abs=1e-5)  # float32 model


def exact_log_p(counts) -> float:
    """log p(c) = log E[Mult(c | softmax(BN(theta beta)))] with theta = softmax(h), h ~ N(0, 0.5 I):
    theta_0 = sigmoid(h_0 - h_1), and h_0 - h_1 ~ N(0, 1) -- a 1-D integral by quadrature."""
    c = counts.numpy().astype(int)
    f = lambda t: norm.pdf(t) * multinomial.pmf(c, c.sum(), _word_probs(1 / (1 + math.exp(-t))))  # noqa: E731
    val, _ = integrate.quad(f, -12, 12, epsabs=0.0, epsrel=1e-10, limit=200)
    return math.log(val)


def test_heldout_log_likelihood_matches_quadrature():
    model, ds = _tiny_model()
    assert model.prior_scale.tolist() == pytest.approx([math.sqrt(0.5)] * 2)  # alpha = 1, K = 2: sigma^2 = 1/2
    exact = torch.tensor([exact_log_p(c) for c in DOCS], dtype=torch.float64)
    out = heldout_log_likelihood(model, None, ds, num_particles=20000, seed=0)
    err = (out["log_p_docs"] - exact).abs()
    # Monte Carlo error: within 4 standard errors (delta method) and below 0.02 nats
    assert (err < 4 * out["mc_stderr_docs"] + 1e-4).all() and (err < 0.02).all(), (out["log_p_docs"], exact)
    assert model.training is False  # restored to the mode it was in (eval, set by _tiny_model)


def test_recovers_planted_topics():
    ds, _ = planted_corpus(D=150, n=60)
    model = ProdLDA(topics=3, hidden=32, dropout=0.2)
    fit = ppvae.fit(model, ds, guide="model", elbo="meanfield", steps=300, lr=0.02, seed=0, progress=False)
    assert model.training  # training mode is left as the trainer had it
    tw = model.topic_word(fit)
    assert torch.allclose(tw.sum(1), torch.ones(3, dtype=torch.float64))
    tops = sorted(sorted(row) for row in top_word_indices(tw, 4).tolist())
    assert tops == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]  # each planted topic's four words
    theta = model.doc_topics(fit, ds.x[:5])
    assert theta.shape == (5, 3) and torch.allclose(theta.sum(1), torch.ones(5, dtype=torch.float64))
    assert model.training


@pytest.mark.slow
def test_cli_fit_reports_topics(tmp_path, capsys):
    out = tmp_path / "topics"
    code = main(["fit", "prodlda", "topics=5", "--data", "reuters:split=train", "--out", str(out),
                 "--steps", "3", "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "mean NPMI" in printed and "held-out (79 test documents" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["elbo"] == "meanfield" and metrics["num_data"] == 316
    assert metrics["config"]["train"]["betas"] == [0.99, 0.999] and metrics["config"]["train"]["jit"] is True
    assert len(metrics["top_words"]) == 5 and len(metrics["top_words"][0]) == 10
    assert -1.0 <= metrics["npmi_mean"] <= 1.0 and 0.0 < metrics["topic_diversity"] <= 1.0
    assert metrics["heldout_perplexity"] > 1.0 and (out / "topics.png").exists()
    again = ppvae.Fit.load(str(out))  # a saved ProdLDA run reloads with its decoder: same topics
    vocab = ppvae.load_dataset("reuters").meta["vocab"]
    assert again.model.top_words(again, 10, vocab=vocab) == metrics["top_words"]


def test_bad_input():
    with pytest.raises(ppvae.PPVAEError, match="dropout: expected a probability < 1"):
        ProdLDA(dropout=1.0)
    with pytest.raises(ppvae.PPVAEError, match="topics: expected an integer >= 2"):
        ProdLDA(topics=1)
    with pytest.raises(ppvae.PPVAEError, match="topics: expected at most the vocabulary size 3; got 4"):
        ProdLDA(topics=4).setup(ppvae.Dataset(DOCS, kind="counts"))
    with pytest.raises(ppvae.PPVAEError, match="not set up on a corpus"):
        ProdLDA(topics=2).topic_word()
    model, _ = _tiny_model()
    with pytest.raises(ppvae.PPVAEError, match="counts: expected 3 columns"):
        model.doc_topics(None, torch.ones(2, 4))
    with pytest.raises(ppvae.PPVAEError, match="values >= 0"):
        ppvae.fit(ProdLDA(topics=2), ppvae.Dataset(torch.tensor([[1.0, -1.0, 2.0]]), kind="counts"), steps=1)
    with pytest.raises(ppvae.PPVAEError, match="hyperparameter: model 'prodlda' takes"):
        ppvae.build_model("prodlda", K="3")


def test_sparse_input_layer_and_coefficient_equal_the_dense_ones():
    from torch import nn

    from ppvae.evaluate.topics import WordCounts, log_multinomial_coefficient
    from ppvae.models.prodlda import SparseLinear, nonzero_counts, sparse_log_multinomial_coefficient

    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(7, 40, generator=gen) < 0.1) * torch.randint(1, 6, (7, 40), generator=gen).double()
    x[2] = 0  # an empty document: an empty bag
    torch.manual_seed(1)
    dense = nn.Linear(40, 5).double()
    torch.manual_seed(1)
    sparse = SparseLinear(40, 5).double()
    assert torch.equal(sparse.weight_t, dense.weight.T) and torch.equal(sparse.bias, dense.bias)  # same init
    torch.testing.assert_close(sparse(x), dense(x), rtol=1e-12, atol=1e-12)
    (sparse(x) ** 2).sum().backward()
    (dense(x) ** 2).sum().backward()
    torch.testing.assert_close(sparse.weight_t.grad, dense.weight.grad.T, rtol=1e-12, atol=1e-12)
    loaded = SparseLinear(40, 5).double()
    loaded.load_state_dict(dense.state_dict())  # a run saved with the dense layer
    torch.testing.assert_close(loaded(x), dense(x), rtol=1e-12, atol=1e-12)
    coef = sparse_log_multinomial_coefficient(x, nonzero_counts(x))
    torch.testing.assert_close(coef, log_multinomial_coefficient(x), rtol=1e-12, atol=1e-12)
    log_p = torch.log_softmax(torch.randn(7, 40, generator=gen, dtype=torch.float64), -1)
    by_logs = WordCounts(None, log_probs=log_p, log_coefficient=(x, coef)).log_prob(x)
    torch.testing.assert_close(by_logs, WordCounts(log_p.exp()).log_prob(x), rtol=1e-12, atol=1e-10)
    other = x.clone()  # another tensor: its own coefficient, not the one given for x
    torch.testing.assert_close(WordCounts(None, log_probs=log_p, log_coefficient=(x, coef + 1)).log_prob(other),
                               WordCounts(log_p.exp()).log_prob(x), rtol=1e-12, atol=1e-10)
