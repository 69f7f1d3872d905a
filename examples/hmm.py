"""A user's model: a two-state hidden Markov model of one sequence, its states summed by the forward algorithm.

    A_k ~ Dirichlet(1, 1) (row k of the transition matrix),   mu ~ N((-1, 1), 1),
    s_0 ~ (1/2, 1/2),   s_t | s_{t-1} ~ A_{s_{t-1}},   x_t | s_t ~ N(mu_{s_t}, sd^2),   t = 1..T,

with the emission sd known. The hidden states are summed out exactly by the forward algorithm
alpha_t(k) = p(x_t | s_t = k) sum_j alpha_{t-1}(j) A_{jk} (Rabiner 1989, eqs. 19-21; in logs, written out in
:func:`forward_algorithm`), and log p(x | A, mu) = log sum_k alpha_T(k) enters as ``pyro.factor("x", ...)``. The
recursion indexes the time and state dims from the right, so it broadcasts over draws of (A, mu). (Pyro's
``DiscreteHMM`` computes the same sum by a parallel scan; on this 60-step chain it measured several times slower
than the loop.) The prior means (-1, 1) name the states (low, high).

The data are ONE sequence, x = (x_1..x_T) one value per row (``examples/data/hmm.csv``, written by
``examples/make_example_data.py``: 60 steps). Its rows are not exchangeable, so the model declares
``data_structure = "sequence"``: ppvae traces it on the whole sequence only, ``compare`` does not split it, and
there is no leave-one-out over rows.

    ppvae mcmc examples/hmm.py:HMM --data examples/data/hmm.csv --chains 2 --num-draws 500
"""

import pyro
import pyro.distributions as dist
import torch

import ppvae


@ppvae.register_model("hmm_sequence", "two-state Gaussian HMM of one sequence, forward algorithm (example)")
class HMM(ppvae.Model):
    """Two-state Gaussian HMM over one sequence (module docstring); x: (T, 1), one observation per row."""

    data_structure = "sequence"

    def __init__(self, sd: float = 1.0):
        super().__init__()
        self.sd = ppvae.check_float("sd", sd, low=0.0, strict=True)

    def setup(self, data):
        super().setup(data)
        if data.x.dim() != 2 or data.x.shape[1] != 1:
            raise ppvae.PPVAEError(f"data: hmm_sequence expects one sequence, one value per row (T, 1); got "
                                   f"{tuple(data.x.shape)}")

    def emission_means(self, x: torch.Tensor) -> torch.Tensor:
        """The two states' emission means, mu ~ N((-1, 1), 1)."""
        return pyro.sample("mu", dist.Normal(x.new_tensor([-1.0, 1.0]), 1.0).to_event(1))

    def forward(self, batch):
        x = batch.x[:, 0]
        trans = pyro.sample("trans", dist.Dirichlet(x.new_ones(2, 2)).to_event(1))
        mu = self.emission_means(x)
        pyro.factor("x", forward_algorithm(trans, mu, x, self.sd))


def forward_algorithm(trans: torch.Tensor, mu: torch.Tensor, x: torch.Tensor, sd: float = 1.0) -> torch.Tensor:
    """log p(x | A, mu) by the forward recursion (Rabiner 1989, eqs. 19-21) in log space, s_0 uniform: ``trans``
    (..., 2, 2) and ``mu`` (..., 2) batched alike; returns shape (...)."""
    emit = dist.Normal(mu.unsqueeze(-2), sd).log_prob(x.reshape(-1, 1))  # (..., T, 2)
    alpha = torch.full_like(emit[..., 0, :], 0.5).log()  # s_0, before the first observation
    for t in range(x.numel()):
        alpha = torch.logsumexp(alpha.unsqueeze(-1) + trans.log(), -2) + emit[..., t, :]
    return torch.logsumexp(alpha, -1)
