"""A user's model: crowd annotation (Dawid & Skene 1979) with the items' true classes enumerated.

    pi ~ Dirichlet(1_K),   theta_{a,k} ~ Dirichlet(1 + (diag - 1) [j = k])  (annotator a's confusion row k),
    c_i ~ Categorical(pi),   y_{i,a} ~ Categorical(theta_{a, c_i}),   items i = 1..I, annotators a = 1..A,

as in Pyro's and NumPyro's annotation examples (Passonneau & Carpenter 2014). Two plates of different sizes:
the items (the data plate, I rows) and the annotators (A columns of each row). The true class c_i is a
discrete local latent, summed out by enumeration (``TraceEnum_ELBO``, and in NUTS's potential).

Data: ``examples/data/annotation.csv`` (written by ``examples/make_example_data.py``: 40 items, each labelled by
the same 4 annotators, K = 3 classes).

    ppvae fit examples/annotation.py:DawidSkene --data examples/data/annotation.csv --steps 1500
"""

import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex

import ppvae


@ppvae.register_model("dawid_skene", "crowd annotation, Dawid-Skene, true classes enumerated (example)")
class DawidSkene(ppvae.Model):
    """Dawid-Skene (module docstring); x: (I, A) labels in 0..K-1, row i holds item i's A annotations."""

    data_kinds = ("real", "counts")

    def __init__(self, K: int = 3, diag: float = 4.0):
        super().__init__()
        self.K = ppvae.check_int("K", K, low=2)
        self.diag = ppvae.check_float("diag", diag, low=0.0, strict=True)

    def setup(self, data):
        super().setup(data)
        x = data.x
        if x.dim() != 2 or bool(((x != x.round()) | (x < 0) | (x >= self.K)).any()):
            raise ppvae.PPVAEError(f"data: dawid_skene expects (items, annotators) labels in 0..{self.K - 1}; "
                                   f"got x of shape {tuple(x.shape)}")

    def forward(self, batch):
        x = batch.x
        num_annotators, eye = x.shape[1], x.new_ones(self.K).diag()
        pi = pyro.sample("pi", dist.Dirichlet(x.new_ones(self.K)))
        conc = (1.0 + (self.diag - 1.0) * eye).expand(num_annotators, self.K, self.K)
        theta = pyro.sample("theta", dist.Dirichlet(conc).to_event(2))
        with self.data_plate(batch, dim=-2):
            c = pyro.sample("c", dist.Categorical(pi))
            with pyro.plate("annotators", num_annotators, dim=-1):
                a = torch.arange(num_annotators, device=x.device)
                pyro.sample("y", dist.Categorical(Vindex(theta)[..., a, c, :]), obs=x.long())
