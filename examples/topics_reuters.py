"""Topic models on the Reuters sample: CAVI for LDA and ProdLDA by SVI, with coherence, diversity and
held-out perplexity -- the Python API behind ``ppvae cavi lda`` and ``ppvae fit prodlda``.

    python examples/topics_reuters.py            (about a minute on a free CPU core)
"""

import warnings

import torch

import ppvae
from ppvae.evaluate.topics import format_topics, heldout_log_likelihood, topic_summary
from ppvae.models import LDA, ProdLDA

torch.set_num_threads(1)
train, test = ppvae.load_dataset("reuters", split="train"), ppvae.load_dataset("reuters", split="test")
vocab = train.meta["vocab"]

# 1. LDA by classical coordinate-ascent VI: the ELBO never decreases (trace, one value per iteration)
lda = LDA(topics=20, alpha=0.1, eta=0.01)
cavi = lda.fit_cavi(train, max_iter=30, seed=0)
print(f"CAVI: {cavi.num_iterations} iterations, ELBO {cavi.trace[0]:.0f} -> {cavi.elbo:.0f}, {cavi.time_s:.1f} s")
print(format_topics(topic_summary(cavi.topic_word(), train.x, vocab)))

# 2. ProdLDA: logistic-normal topic proportions, product-of-experts decoder, amortized encoder
prod = ProdLDA(topics=20, alpha=0.1)
fit = ppvae.fit(prod, train, guide="model", elbo="meanfield", steps=300, batch_size=64, lr=0.002, seed=0)
print(format_topics(topic_summary(prod.topic_word(fit), train.x, vocab)))
print("first test story:", test.meta["titles"][0])
share, topic = prod.doc_topics(fit, test.x[:1])[0].topk(3)
print("  its top 3 topics:", [(int(k), round(float(p), 3)) for k, p in zip(topic, share, strict=True)])

# 3. held-out perplexity on the 79 test stories (importance sampling over theta_d, word topics summed)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Pareto k-hat warnings: see the log_marginal entry of each result
    for name, model, result in (("CAVI", lda, cavi), ("ProdLDA", prod, fit)):
        held = heldout_log_likelihood(model, result, test, num_particles=200)
        print(f"{name}: held-out perplexity {held['perplexity']:.1f} "
              f"(k-hat > 0.7 for {held['log_marginal']['num_khat_over_0_7']} of {held['num_documents']} documents)")
