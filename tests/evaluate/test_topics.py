"""ppvae.evaluate.topics: NPMI and diversity against hand-computed values, the bag-of-words likelihood, perplexity,
and bad input. Seeded and exact (tolerances 1e-6 unless stated)."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import multinomial

import ppvae
from ppvae.data.text import corpus_from_counts
from ppvae.evaluate.topics import (
    WordCounts,
    check_counts,
    check_num_topics,
    log_multinomial_coefficient,
    npmi_coherence,
    perplexity,
    top_word_indices,
    top_words,
    topic_diversity,
    topic_summary,
)

# four documents over four words; presence: d0 {0,1}, d1 {0,1,2}, d2 {2}, d3 {0,3}
COUNTS = torch.tensor([[2.0, 1, 0, 0], [1, 1, 3, 0], [0, 0, 1, 0], [1, 0, 0, 4]])


def _topics(*tops, v=4):
    """A (K, V) topic-word matrix whose top words are ``tops[k]`` in that order."""
    tw = torch.full((len(tops), v), 1e-3)
    for k, words in enumerate(tops):
        for rank, w in enumerate(words):
            tw[k, w] = 1.0 - 0.1 * rank
    return tw / tw.sum(1, keepdim=True)


def test_npmi_hand_computed_pairs():
    # P(w0)=3/4, P(w1)=1/2, P(w0,w1)=1/2: NPMI = log(0.5 / (0.75 * 0.5)) / -log(0.5) = log(4/3) / log 2
    # w2 and w3 never share a document: NPMI = -1 by convention
    npmi = npmi_coherence(_topics([0, 1], [2, 3]), COUNTS, n=2)
    assert npmi[0].item() == pytest.approx(math.log(4 / 3) / math.log(2), abs=1e-12)
    assert npmi[1].item() == -1.0


def test_npmi_three_words_is_pair_mean():
    # (w1,w2): P=1/4 = P(w1)P(w2) -> 0; (w1,w0): log(4/3)/log 2; (w2,w0): log((1/4)/(1/2*3/4)) / log 4
    expected = (0.0 + math.log(4 / 3) / math.log(2) + math.log(2 / 3) / math.log(4)) / 3
    npmi = npmi_coherence(_topics([1, 2, 0]), COUNTS, n=3)
    assert npmi.item() == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.0408521, abs=1e-6)


def test_npmi_pair_in_every_document_is_one():
    counts = torch.tensor([[1.0, 1, 0], [2, 1, 1]])
    assert npmi_coherence(_topics([0, 1], v=3), counts, n=2).item() == 1.0


def test_topic_diversity_hand_computed():
    tw = _topics([0, 1], [1, 2], [3, 1])
    assert top_word_indices(tw, 2).tolist() == [[0, 1], [1, 2], [3, 1]]
    assert topic_diversity(tw, n=2) == pytest.approx(4 / 6)  # unique {0,1,2,3} of 6 slots
    assert topic_diversity(_topics([0, 1], [0, 1]), n=2) == pytest.approx(0.5)


def test_top_words_and_summary():
    vocab = ["apple", "bank", "cat", "dog"]
    tw = _topics([3, 0], [2, 1])
    assert top_words(tw, vocab, 2) == [["dog", "apple"], ["cat", "bank"]]
    s = topic_summary(tw, COUNTS, vocab, n_top=2)
    assert s["top_words"] == [["dog", "apple"], ["cat", "bank"]]
    # (w3,w0): P=1/4 = ... log((1/4)/(1/4*3/4))/log 4; (w2,w1): P=1/4, log((1/4)/(1/2*1/2))=0
    assert s["npmi"][0] == pytest.approx(math.log(4 / 3) / math.log(4), abs=1e-6)
    assert s["npmi"][1] == pytest.approx(0.0, abs=1e-6)
    assert s["topic_diversity"] == 0.5  # top 25 capped at V = 4: both topics list all 4 words, 4 / 8


def test_word_counts_matches_scipy_multinomial():
    torch.manual_seed(0)
    probs = torch.distributions.Dirichlet(torch.ones(5)).sample((3,)).double()
    counts = torch.tensor([[3.0, 0, 1, 2, 0], [0, 0, 0, 1, 0], [5, 5, 0, 0, 1]], dtype=torch.float64)
    lp = WordCounts(probs).log_prob(counts)
    for d in range(3):
        ref = multinomial.logpmf(counts[d].numpy(), int(counts[d].sum()), probs[d].numpy())
        assert lp[d].item() == pytest.approx(ref, abs=1e-6)  # scipy renormalizes float32-made probs
    draws = WordCounts(probs, torch.tensor([7.0, 2.0, 11.0])).sample((4,))
    assert draws.shape == (4, 3, 5)
    assert draws.sum(-1).tolist() == [[7.0, 2.0, 11.0]] * 4


def test_word_counts_zero_probability_word():
    # a word with probability 0 and count 0 contributes nothing; with count > 0 the document is impossible
    p = torch.tensor([0.5, 0.5, 0.0])
    assert WordCounts(p).log_prob(torch.tensor([1.0, 1.0, 0.0])).item() == pytest.approx(math.log(0.5))
    assert WordCounts(p).log_prob(torch.tensor([1.0, 0.0, 1.0])).item() == -math.inf


def test_perplexity_removes_multinomial_coefficient():
    counts = torch.tensor([[2.0, 1.0], [0.0, 3.0]])
    p = torch.tensor([0.25, 0.75])
    log_p = WordCounts(p).log_prob(counts)  # coefficient included: log 3 + ..., log 1 + ...
    assert log_multinomial_coefficient(counts).tolist() == pytest.approx([math.log(3), 0.0])
    per_token = (2 * math.log(0.25) + math.log(0.75) + 3 * math.log(0.75)) / 6
    assert perplexity(log_p, counts) == pytest.approx(math.exp(-per_token), rel=1e-6)  # float32 log_p


def test_bad_input():
    with pytest.raises(ppvae.PPVAEError, match="counts: expected values >= 0"):
        check_counts("counts", torch.tensor([[1.0, -1.0]]))
    with pytest.raises(ppvae.PPVAEError, match="counts: expected whole numbers"):
        check_counts("counts", torch.tensor([[1.0, 0.5]]))
    with pytest.raises(ppvae.PPVAEError, match="vocab: expected 2 words"):
        check_counts("counts", torch.tensor([[1.0, 2.0]]), vocab=["a", "b", "c"])
    with pytest.raises(ppvae.PPVAEError, match="1 empty document"):
        check_counts("counts", torch.tensor([[1.0, 2.0], [0.0, 0.0]]))
    with pytest.warns(UserWarning, match="1 empty document"):
        check_counts("counts", np.array([[1, 2], [0, 0]]), empty="warn")
    with pytest.raises(ppvae.PPVAEError, match="topics: expected at most the vocabulary size 3; got 4"):
        check_num_topics(4, 3)
    with pytest.raises(ppvae.PPVAEError, match="n: expected an integer <= 4"):
        top_word_indices(_topics([0, 1]), 5)
    with pytest.raises(ppvae.PPVAEError, match="counts: expected 4 columns"):
        npmi_coherence(_topics([0, 1]), torch.ones(2, 3))
    with pytest.raises(ppvae.PPVAEError, match="log_p_docs: expected one value per document"):
        perplexity(torch.zeros(3), COUNTS)


def test_corpus_loader_counts_dropped_documents():
    with pytest.warns(UserWarning, match="dropped 2 empty document"):
        ds = corpus_from_counts(np.array([[1, 0], [0, 0], [0, 0], [2, 3]]), ["a", "b"])
    assert len(ds) == 2
    assert ds.meta["dropped_empty_documents"] == [1, 2]


def test_document_completion_with_identical_topics_is_exact():
    """With every topic equal to p, theta does not matter: perplexity = exp(-sum h_w log p_w / sum h_w)."""
    from ppvae.evaluate.topics import document_completion
    from ppvae.models import LDA

    p = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    counts = torch.tensor([[6.0, 2, 2], [1, 5, 4], [3, 3, 3], [1, 0, 0]])
    model = LDA(topics=2, alpha=0.5)
    model.setup(ppvae.Dataset(counts, kind="counts"))
    out = document_completion(model, torch.stack([p, p]), counts, seed=0)
    gen = torch.Generator().manual_seed(0)  # the same split, redrawn
    x = counts.double()
    held = x - torch.binomial(x, torch.full((4, 3), 0.5, dtype=torch.float64), generator=gen)
    used = (held.sum(1) > 0) & (held.sum(1) < counts.sum(1))
    held = held[used]
    assert out["num_documents"] == int(used.sum()) and out["num_heldout_words"] == int(held.sum())
    expected = math.exp(-(held * p.log()).sum().item() / held.sum().item())
    assert out["perplexity"] == pytest.approx(expected, rel=1e-12)


def test_word_counts_sample_has_multinomial_moments():
    """Documents of different lengths in one batched draw: E[c_dw] = n_d p_dw, and an empty document
    stays empty. 20,000 draws: the mean's standard error is at most sqrt(n p (1-p) / 20000) < 0.01."""
    gen_state = torch.get_rng_state()
    torch.manual_seed(0)
    p = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [0.2, 0.2, 0.6]], dtype=torch.float64)
    n = torch.tensor([7.0, 0.0, 3.0])
    draws = WordCounts(p, n).sample((20000,))
    torch.set_rng_state(gen_state)
    assert torch.equal(draws.sum(-1), n.double().expand(20000, 3))
    assert torch.allclose(draws.mean(0), n.double().unsqueeze(-1) * p, atol=0.04)  # > 4 standard errors
    assert draws[:, 1].abs().sum() == 0
